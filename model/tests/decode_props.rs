//! Property tests of the decoders of outside bytes in `model`: a
//! merge-topic message and a stored record. Whatever the bytes, decoding
//! answers a value or an error, never a panic; what the service encodes
//! decodes back to the same ops.

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

use model::codec::{decode_merge_batch, decode_record, encode_merge_batch, encode_record, MAX_MERGE_TIME_MS};
use model::{Op, Record};
use proptest::prelude::*;

fn record() -> impl Strategy<Value = Record> {
    (1..u64::MAX, "[a-z]{1,8}", any::<u64>(), 1..=MAX_MERGE_TIME_MS, any::<i64>(), proptest::option::of("[ -~]{0,16}")).prop_map(
        |(uid, business, oid, view_at, progress, device)| Record {
            uid,
            business,
            oid,
            sub_id: None,
            progress,
            duration: None,
            device,
            view_at,
        },
    )
}

fn op() -> impl Strategy<Value = Op> {
    let item = ("[a-z]{1,8}", any::<u64>()).prop_map(|(business, oid)| format!("{business}:{oid}"));
    prop_oneof![
        record().prop_map(Op::Upsert),
        (1..u64::MAX, item.clone(), 1..=MAX_MERGE_TIME_MS).prop_map(|(uid, item, view_at)| Op::UpsertRef { uid, item, view_at }),
        (1..u64::MAX, item, 1..=MAX_MERGE_TIME_MS).prop_map(|(uid, item, at)| Op::Delete { uid, item, at }),
        (1..u64::MAX, proptest::option::of("[a-z]{1,8}"), 1..=MAX_MERGE_TIME_MS).prop_map(|(uid, business, at)| Op::Clear {
            uid,
            business,
            at
        }),
        (1..u64::MAX, any::<bool>(), 1..=MAX_MERGE_TIME_MS).prop_map(|(uid, paused, at)| Op::SetRecording { uid, paused, at }),
    ]
}

proptest! {
    #[test]
    fn any_bytes_decode_to_a_value_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_merge_batch(&bytes);
        let _ = decode_record(&bytes);
    }

    #[test]
    fn what_the_service_encodes_decodes_to_the_same_ops(shard in 0u32..64, ops in proptest::collection::vec(op(), 1..20)) {
        let messages = encode_merge_batch(shard, &ops, 1 << 20);
        prop_assert_eq!(messages.len(), 1);
        let (decoded_shard, decoded) = decode_merge_batch(&messages[0]).unwrap();
        prop_assert_eq!(decoded_shard, shard);
        prop_assert_eq!(format!("{decoded:?}"), format!("{ops:?}"));
    }

    #[test]
    fn a_damaged_message_decodes_to_a_value_or_an_error(
        ops in proptest::collection::vec(op(), 1..10),
        damage in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut message = encode_merge_batch(1, &ops, 1 << 20).remove(0);
        for (at, byte) in damage {
            let at = at.index(message.len());
            message[at] = byte;
        }
        let _ = decode_merge_batch(&message);
        let _ = decode_record(&message);
    }

    #[test]
    fn records_round_trip(record in record()) {
        let decoded = decode_record(&encode_record(&record)).unwrap();
        prop_assert_eq!(decoded, record);
    }
}
