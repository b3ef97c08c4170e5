//! The one encoding of every stored or shipped value: protobuf messages of
//! `proto/histflow/v1/history.proto`, each carrying a `version`.

use prost::Message as _;
use serde::Deserialize;

use crate::op::Op;
use crate::proto;
use crate::record::Record;

/// The encoding revision this build writes.
pub const VERSION: u32 = 1;

/// A value that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a protobuf message of the expected type.
    #[error("not a valid {what}: {source}")]
    Protobuf {
        /// The message type expected.
        what: &'static str,
        /// prost's reason.
        source: prost::DecodeError,
    },
    /// Written by a newer revision this build does not know.
    #[error("{what} has encoding version {version}, this build reads up to {VERSION}")]
    Version {
        /// The message type.
        what: &'static str,
        /// The version found.
        version: u32,
    },
    /// A merge op with no operation set.
    #[error("a merge op carries no operation")]
    EmptyOp,
    /// A merge op no service would have sent: it can never be written.
    #[error("merge op {index} is not valid: {problem}")]
    InvalidOp {
        /// Its place in the message.
        index: usize,
        /// What is wrong.
        problem: String,
    },
}

/// The latest instant a merge op may carry (unix ms; 2^48 - 1, the year
/// 10889: what the aggregate's compact entries hold).
pub const MAX_MERGE_TIME_MS: i64 = (1 << 48) - 1;

/// What is wrong with a decoded merge op, if anything: a uid of 0, a time
/// outside 1..=[`MAX_MERGE_TIME_MS`], or an item that is not
/// `business:oid`. Such ops come only from a rogue or broken producer, and
/// HBase would take some of them (a negative cell timestamp) for good.
fn merge_op_problem(op: &Op) -> Option<String> {
    let (uid, item, at) = match op {
        Op::UpsertRef { uid, item, view_at } => (*uid, Some(item.as_str()), *view_at),
        Op::Upsert(record) => (record.uid, None, record.view_at),
        Op::Delete { uid, item, at } => (*uid, Some(item.as_str()), *at),
        Op::Clear { uid, at, .. } | Op::SetRecording { uid, at, .. } => (*uid, None, *at),
    };
    if uid == 0 {
        return Some("uid 0".to_owned());
    }
    if !(1..=MAX_MERGE_TIME_MS).contains(&at) {
        return Some(format!("time {at} is outside 1..={MAX_MERGE_TIME_MS}"));
    }
    if let Op::Upsert(record) = op {
        if record.business.is_empty() {
            return Some("a record without a business".to_owned());
        }
    }
    if let Op::Clear { business: Some(business), .. } = op {
        if business.contains(':') {
            return Some(format!("cleared business {business:?} is not a business name"));
        }
    }
    let well_formed = |item: &str| item.split_once(':').is_some_and(|(business, oid)| !business.is_empty() && oid.parse::<u64>().is_ok());
    item.filter(|item| !well_formed(item)).map(|item| format!("item {item:?} is not business:oid"))
}

/// What a merge-topic message carries for an upsert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// uid + item key + view_at; the job re-reads the record from Redis.
    #[default]
    Ids,
    /// The whole record; the job never reads Redis.
    Full,
    /// The aggregate holds uid + item key + view_at (as `ids`); the
    /// producer reads each record from Redis as it ships a window, so the
    /// message carries it whole (as `full`) and the job never reads Redis.
    Fetched,
}

fn to_proto(record: &Record) -> proto::Record {
    proto::Record {
        version: VERSION,
        uid: record.uid,
        business: record.business.clone(),
        oid: record.oid,
        sub_id: record.sub_id,
        progress: record.progress,
        duration: record.duration,
        device: record.device.clone(),
        view_at: record.view_at,
    }
}

fn from_proto(record: proto::Record) -> Result<Record, DecodeError> {
    if record.version > VERSION {
        return Err(DecodeError::Version { what: "Record", version: record.version });
    }
    Ok(Record {
        uid: record.uid,
        business: record.business,
        oid: record.oid,
        sub_id: record.sub_id,
        progress: record.progress,
        duration: record.duration,
        device: record.device,
        view_at: record.view_at,
    })
}

/// A record as stored in Redis and HBase.
pub fn encode_record(record: &Record) -> Vec<u8> {
    to_proto(record).encode_to_vec()
}

/// A stored record.
pub fn decode_record(bytes: &[u8]) -> Result<Record, DecodeError> {
    let record = proto::Record::decode(bytes).map_err(|source| DecodeError::Protobuf { what: "Record", source })?;
    from_proto(record)
}

fn op_to_proto(op: &Op) -> proto::MergeOp {
    use proto::merge_op::Op as P;
    let op = match op {
        Op::Upsert(record) => P::Upsert(to_proto(record)),
        Op::UpsertRef { uid, item, view_at } => P::UpsertRef(proto::ItemRef { uid: *uid, item: item.clone(), view_at: *view_at }),
        Op::Delete { uid, item, at } => P::Delete(proto::ItemDelete { uid: *uid, item: item.clone(), at: *at }),
        Op::Clear { uid, business, at } => {
            P::Clear(proto::HistoryClear { uid: *uid, at: *at, business: business.clone().unwrap_or_default() })
        }
        Op::SetRecording { uid, paused, at } => P::Recording(proto::RecordingSwitch { uid: *uid, paused: *paused, at: *at }),
    };
    proto::MergeOp { op: Some(op) }
}

/// Encodes one shard flush as merge-topic messages of at most
/// `max_message_bytes` each (a single op larger than that still travels,
/// alone). Op order is kept across the split. `Upsert` travels whole and
/// `UpsertRef` as ids: the payload mode is the aggregate's choice.
pub fn encode_merge_batch(shard: u32, ops: &[Op], max_message_bytes: usize) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut current = proto::MergeBatch { version: VERSION, shard, ops: Vec::new() };
    let header = current.encoded_len();
    let mut size = header;
    for op in ops {
        let op = op_to_proto(op);
        let op_size = prost::length_delimiter_len(op.encoded_len()) + op.encoded_len() + 1;
        if !current.ops.is_empty() && size + op_size > max_message_bytes {
            messages.push(current.encode_to_vec());
            current.ops.clear();
            size = header;
        }
        size += op_size;
        current.ops.push(op);
    }
    if !current.ops.is_empty() {
        messages.push(current.encode_to_vec());
    }
    messages
}

/// A merge-topic message: its shard and ops. A message that does not
/// decode, or carries an op no service would send, is an error (the job
/// dead-letters it).
pub fn decode_merge_batch(bytes: &[u8]) -> Result<(u32, Vec<Op>), DecodeError> {
    use proto::merge_op::Op as P;
    let batch = proto::MergeBatch::decode(bytes).map_err(|source| DecodeError::Protobuf { what: "MergeBatch", source })?;
    if batch.version > VERSION {
        return Err(DecodeError::Version { what: "MergeBatch", version: batch.version });
    }
    let ops = batch
        .ops
        .into_iter()
        .map(|op| match op.op.ok_or(DecodeError::EmptyOp)? {
            P::UpsertRef(r) => Ok(Op::UpsertRef { uid: r.uid, item: r.item, view_at: r.view_at }),
            P::Upsert(record) => Ok(Op::Upsert(from_proto(record)?)),
            P::Delete(d) => Ok(Op::Delete { uid: d.uid, item: d.item, at: d.at }),
            P::Clear(c) => Ok(Op::Clear { uid: c.uid, at: c.at, business: (!c.business.is_empty()).then_some(c.business) }),
            P::Recording(r) => Ok(Op::SetRecording { uid: r.uid, paused: r.paused, at: r.at }),
        })
        .collect::<Result<Vec<Op>, DecodeError>>()?;
    if let Some((index, problem)) = ops.iter().enumerate().find_map(|(index, op)| merge_op_problem(op).map(|problem| (index, problem))) {
        return Err(DecodeError::InvalidOp { index, problem });
    }
    Ok((batch.shard, ops))
}

/// The first-watch broadcast of `record`'s user on UTC day `day`.
pub fn encode_first_watch(record: &Record, day: i64) -> Vec<u8> {
    proto::FirstWatch { version: VERSION, uid: record.uid, day, item: record.item_key(), view_at: record.view_at }.encode_to_vec()
}

/// A first-watch broadcast.
pub fn decode_first_watch(bytes: &[u8]) -> Result<proto::FirstWatch, DecodeError> {
    proto::FirstWatch::decode(bytes).map_err(|source| DecodeError::Protobuf { what: "FirstWatch", source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(uid: u64, oid: u64, view_at: i64) -> Record {
        Record {
            uid,
            business: "archive".into(),
            oid,
            sub_id: Some(3),
            progress: 120,
            duration: Some(600),
            device: Some("ios".into()),
            view_at,
        }
    }

    #[test]
    fn records_round_trip() {
        let original = record(7, 99, 1_700_000_000_000);
        assert_eq!(decode_record(&encode_record(&original)).unwrap(), original);
        let minimal = Record { sub_id: None, duration: None, device: None, progress: -1, ..original };
        assert_eq!(decode_record(&encode_record(&minimal)).unwrap(), minimal);
    }

    #[test]
    fn merge_ops_no_service_would_send_are_refused() {
        let valid = Op::UpsertRef { uid: 1, item: "archive:2".into(), view_at: 3 };
        let bad = [
            Op::UpsertRef { uid: 1, item: "archive:2".into(), view_at: -5 },
            Op::Delete { uid: 1, item: "archive:2".into(), at: 0 },
            Op::Clear { uid: 0, business: None, at: 9 },
            Op::Clear { uid: 1, business: Some("archive:2".into()), at: 9 },
            Op::SetRecording { uid: 1, paused: true, at: MAX_MERGE_TIME_MS + 1 },
            Op::UpsertRef { uid: 1, item: "archive".into(), view_at: 3 },
            Op::Delete { uid: 1, item: "archive:x".into(), at: 3 },
            Op::Upsert(record(1, 1, -1)),
        ];
        for op in bad {
            let messages = encode_merge_batch(2, &[valid.clone(), op.clone()], 1 << 20);
            let refused = decode_merge_batch(&messages[0]);
            assert!(matches!(refused, Err(DecodeError::InvalidOp { index: 1, .. })), "{op:?} passed: {refused:?}");
        }
        let messages = encode_merge_batch(2, std::slice::from_ref(&valid), 1 << 20);
        assert_eq!(decode_merge_batch(&messages[0]).unwrap().1.len(), 1);
    }

    #[test]
    fn newer_versions_and_garbage_are_refused() {
        let mut newer = to_proto(&record(1, 1, 1));
        newer.version = VERSION + 1;
        assert!(matches!(decode_record(&newer.encode_to_vec()), Err(DecodeError::Version { version: 2, .. })));
        assert!(decode_merge_batch(b"\xff\xff\xff").is_err());
    }

    #[test]
    fn merge_batches_split_by_size_and_keep_order() {
        let full: Vec<Op> = (0..1000).map(|i| Op::Upsert(record(i + 1, i, 1_700_000_000_000 + i as i64))).collect();
        let refs: Vec<Op> =
            (0..1000).map(|i| Op::UpsertRef { uid: i + 1, item: format!("archive:{i}"), view_at: 1_700_000_000_000 + i as i64 }).collect();
        for ops in [full, refs] {
            let messages = encode_merge_batch(5, &ops, 4096);
            assert!(messages.len() > 1);
            assert!(messages.iter().all(|m| m.len() <= 4096), "a message exceeds the limit");
            let decoded: Vec<Op> = messages
                .iter()
                .flat_map(|m| {
                    let (shard, ops) = decode_merge_batch(m).unwrap();
                    assert_eq!(shard, 5);
                    ops
                })
                .collect();
            assert_eq!(decoded, ops);
        }
    }
}
