//! Property tests of the decoders that take outside bytes at the API edge:
//! the JSON body of `POST /v1/events`, the gRPC `AddHistoriesRequest`, and
//! the page cursor. Whatever arrives, the answer is records or errors that
//! name what is wrong, never a panic.

// Tests may unwrap: a failure is the point.
#![allow(clippy::unwrap_used)]

use history_read::Cursor;
use ingest_http::event::{check_events, decode_events, EventInput, EventRules};
use ingest_http::grpc::proto;
use ingest_http::params;
use proptest::prelude::*;
use prost::Message;

fn rules() -> EventRules {
    EventRules {
        businesses: ["archive".to_owned(), "pgc".to_owned()].into(),
        max_events: 100,
        max_age_ms: [("archive".to_owned(), 90 * 86_400_000)].into(),
    }
}

const NOW_MS: i64 = 1_800_000_000_000;

/// JSON values shaped like event bodies, with wrong types, sizes and
/// missing fields mixed in.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        "[ -~]{0,12}".prop_map(serde_json::Value::from),
        prop_oneof![Just("archive"), Just("pgc"), Just("uid"), Just("view_at")].prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        let keys = prop_oneof![
            Just("uid".to_owned()),
            Just("business".to_owned()),
            Just("oid".to_owned()),
            Just("progress".to_owned()),
            Just("view_at".to_owned()),
            Just("events".to_owned()),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(keys, inner, 0..6).prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_bytes_as_an_event_body_decode_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode_events(&bytes, &rules(), NOW_MS);
    }

    #[test]
    fn any_json_as_an_event_body_decodes_or_is_refused_with_reasons(value in json_value()) {
        let body = serde_json::to_vec(&value).unwrap();
        if let Err(errors) = decode_events(&body, &rules(), NOW_MS) {
            prop_assert!(!errors.is_empty(), "a refusal names what is wrong");
        }
    }

    #[test]
    fn any_bytes_as_a_grpc_request_decode_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(request) = proto::AddHistoriesRequest::decode(bytes.as_slice()) {
            let events: Vec<EventInput> = request.events.into_iter().map(EventInput::from).collect();
            if let Err(errors) = check_events(events, &rules(), NOW_MS) {
                prop_assert!(!errors.is_empty());
            }
        }
    }

    #[test]
    fn any_bytes_as_any_grpc_request_decode_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        // Each request type decoded, then through the checks the API makes
        // of it before any work.
        let bytes = bytes.as_slice();
        let businesses = rules().businesses;
        if let Ok(request) = proto::AddHistoryRequest::decode(bytes) {
            let _ = check_events(request.event.into_iter().map(EventInput::from).collect(), &rules(), NOW_MS);
        }
        if let Ok(request) = proto::UserHistoriesRequest::decode(bytes) {
            let _ = params::uid_number(request.uid);
            let limit = (request.limit != 0).then(|| request.limit.to_string());
            if let Ok(filter) = params::grpc_business_filter(&request.business, &businesses) {
                let _ = params::page(filter, limit.as_deref(), Some(&request.cursor));
            }
        }
        if let Ok(request) = proto::ProgressRequest::decode(bytes) {
            let _ = params::items(request.items.iter().map(String::as_str), &businesses);
        }
        if let Ok(request) = proto::DeleteHistoriesRequest::decode(bytes) {
            let keys: Vec<String> = request.items.iter().map(|key| format!("{}:{}", key.business, key.oid)).collect();
            let _ = params::items(keys.iter().map(String::as_str), &businesses);
        }
        if let Ok(request) = proto::ClearHistoryRequest::decode(bytes) {
            let business = (!request.business.is_empty()).then_some(request.business.as_str());
            let _ = params::clear_scope(business, request.all, &businesses);
        }
        for uid in [proto::ClearHistoryRequest::decode(bytes).map(|r| r.uid), proto::SetRecordingRequest::decode(bytes).map(|r| r.uid), proto::GetRecordingRequest::decode(bytes).map(|r| r.uid)].into_iter().flatten() {
            let _ = params::uid_number(uid);
        }
    }

    #[test]
    fn any_text_as_a_cursor_reads_or_is_refused(text in "\\PC{0,60}") {
        let _ = Cursor::decode(&text);
    }

    #[test]
    fn cursors_round_trip(view_at in 0i64..i64::MAX, business in "[a-z]{1,8}", oid in any::<u64>()) {
        let cursor = Cursor { view_at, item: format!("{business}:{oid}") };
        prop_assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
    }
}
