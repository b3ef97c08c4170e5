//! Property tests of what the compat server reads from a peer: any bytes,
//! and calls of every method name with damaged or random arguments, go
//! through the server's own input chain (lenient, bounded, binary) and
//! processor over a real store. Each call is answered or refused, and the
//! connection ends; nothing panics.

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};

use hbase_compat::lenient::NullTolerantInputFactory;
use hbase_compat::server::CompatHandler;
use hbase_compat::Store;
use hbase_thrift::hbase::HbaseSyncProcessor;
use proptest::prelude::*;
use thrift::protocol::{TBinaryInputProtocolFactory, TBinaryOutputProtocol, TInputProtocolFactory};
use thrift::server::TProcessor;
use thrift::transport::TBufferChannel;
use thrift_bounded::BoundedInputFactory;

/// One processor over one store for every case.
fn processor() -> &'static HbaseSyncProcessor<CompatHandler> {
    static PROCESSOR: OnceLock<(tempfile::TempDir, HbaseSyncProcessor<CompatHandler>)> = OnceLock::new();
    &PROCESSOR
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            (dir, HbaseSyncProcessor::new(CompatHandler::new(Arc::new(store))))
        })
        .1
}

/// Feeds `bytes` to the processor as one connection would, until it fails
/// (at most 16 calls).
fn serve(bytes: &[u8]) {
    let mut channel = TBufferChannel::with_capacity(bytes.len(), 0);
    channel.set_readable_bytes(bytes);
    let mut input = NullTolerantInputFactory(BoundedInputFactory(TBinaryInputProtocolFactory::new())).create(Box::new(channel));
    let mut output = TBinaryOutputProtocol::new(Vec::new(), true);
    for _ in 0..16 {
        if processor().process(&mut *input, &mut output).is_err() {
            break;
        }
    }
}

const METHODS: &[&str] = &[
    "getTableNames",
    "createTable",
    "deleteTable",
    "getColumnDescriptors",
    "get",
    "getRow",
    "getRowWithColumns",
    "getRowsWithColumns",
    "mutateRow",
    "mutateRows",
    "mutateRowsTs",
    "deleteAll",
    "deleteAllTs",
    "deleteAllRow",
    "scannerOpen",
    "scannerOpenWithScan",
    "scannerGet",
    "scannerGetList",
    "scannerClose",
];

/// A call frame: a strict binary header, a known method's name, a
/// sequence number, then `arguments` as they come.
fn call(method: &str, arguments: &[u8]) -> Vec<u8> {
    let mut frame = 0x8001_0001u32.to_be_bytes().to_vec();
    frame.extend((method.len() as i32).to_be_bytes());
    frame.extend(method.as_bytes());
    frame.extend(1i32.to_be_bytes());
    frame.extend(arguments);
    frame
}

/// Argument bytes built from Thrift field headers and values, so the
/// reader gets deep into structures (lists, maps, strings with wrong
/// lengths) instead of stopping at the first byte.
fn arguments() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        // A field header: type and id.
        (prop_oneof![Just(2u8), Just(8), Just(10), Just(11), Just(12), Just(13), Just(15), any::<u8>()], any::<i16>()).prop_map(
            |(kind, id)| {
                let mut b = vec![kind];
                b.extend(id.to_be_bytes());
                b
            }
        ),
        // A length or count, often small, sometimes hostile.
        prop_oneof![0i32..8, Just(-1), Just(i32::MAX), Just(i32::MIN), any::<i32>()].prop_map(|n| n.to_be_bytes().to_vec()),
        // A list or map header.
        (any::<u8>(), any::<u8>(), -2i32..6).prop_map(|(a, b, n)| {
            let mut v = vec![a, b];
            v.extend(n.to_be_bytes());
            v
        }),
        proptest::collection::vec(any::<u8>(), 0..12),
        Just(vec![0u8]),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_are_answered_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        serve(&bytes);
    }

    #[test]
    fn calls_with_damaged_arguments_are_answered_or_refused(method in proptest::sample::select(METHODS), arguments in arguments()) {
        serve(&call(method, &arguments));
    }
}
