//! Decoding and validating `POST /v1/events` bodies: one event object or
//! `{"events": [...]}`. Every bad event is reported with its index and
//! nothing of a request with a bad event is accepted.

use std::collections::{HashMap, HashSet};

use crate::text::{bounded, quoted, quoted_list};
use model::Record;
use serde::{Deserialize, Serialize};

/// How far ahead of the server clock a `view_at` may be.
pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;
/// Longest `device` string, in bytes.
pub const MAX_DEVICE_BYTES: usize = 32;

/// One event as a client sends it (JSON body or gRPC message), before
/// validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    /// User id, > 0.
    pub uid: u64,
    /// Registered business.
    pub business: String,
    /// Object id.
    pub oid: u64,
    /// Episode or part.
    #[serde(default)]
    pub sub_id: Option<u64>,
    /// Seconds watched; -1 finished.
    pub progress: i64,
    /// Length in seconds.
    #[serde(default)]
    pub duration: Option<i64>,
    /// Reporting device.
    #[serde(default)]
    pub device: Option<String>,
    /// Unix ms; server time when absent.
    #[serde(default)]
    pub view_at: Option<i64>,
}

/// One problem of a request body; `index` is the event's position (absent
/// when the problem is the body as a whole).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventError {
    /// Machine-readable reason.
    pub code: &'static str,
    /// What is wrong, naming the field.
    pub message: String,
    /// Position of the event in the request (0 for a single event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

impl EventError {
    /// A problem of the body as a whole.
    pub fn body(code: &'static str, message: impl Into<String>) -> Self {
        EventError { code, message: bounded(message.into()), index: None }
    }
    pub(crate) fn at(index: usize, code: &'static str, message: impl Into<String>) -> Self {
        EventError { code, message: bounded(message.into()), index: Some(index) }
    }
}

/// What the decoder checks against.
#[derive(Debug, Clone)]
pub struct EventRules {
    /// Businesses this endpoint accepts.
    pub businesses: HashSet<String>,
    /// Most events in one request.
    pub max_events: usize,
    /// How old a report of each business may be, in ms (its retention);
    /// an older one is refused (`view_at_too_old`): nothing would keep it.
    /// A business not named here has no limit.
    pub max_age_ms: HashMap<String, i64>,
}

/// Decodes and validates a body; `now_ms` is the server clock (unix ms),
/// which fills absent `view_at` and bounds future ones. Returns every
/// problem, or the records in request order.
pub fn decode_events(body: &[u8], rules: &EventRules, now_ms: i64) -> Result<Vec<Record>, Vec<EventError>> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|error| vec![EventError::body("malformed_json", format!("the body is not valid JSON: {error}"))])?;
    let serde_json::Value::Object(mut object) = value else {
        return Err(vec![EventError::body("invalid_body", "the body must be an event object or {\"events\": [...]}")]);
    };
    let items = if object.contains_key("events") {
        if object.len() != 1 {
            let extra: Vec<&String> = object.keys().filter(|key| *key != "events").collect();
            return Err(vec![EventError::body(
                "invalid_body",
                format!("a batch body has only `events`; unknown field(s) {}", quoted_list(&extra)),
            )]);
        }
        match object.remove("events") {
            Some(serde_json::Value::Array(items)) => items,
            _ => return Err(vec![EventError::body("invalid_body", "`events` must be an array of event objects")]),
        }
    } else {
        vec![serde_json::Value::Object(object)]
    };
    check_count(items.len(), rules)?;

    let mut records = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match serde_json::from_value::<EventInput>(item) {
            Ok(event) => match check(index, event, rules, now_ms) {
                Ok(record) => records.push(record),
                Err(mut problems) => errors.append(&mut problems),
            },
            Err(error) => errors.push(EventError::at(index, "invalid_event", error.to_string())),
        }
    }
    if errors.is_empty() {
        Ok(records)
    } else {
        Err(errors)
    }
}

fn check_count(count: usize, rules: &EventRules) -> Result<(), Vec<EventError>> {
    if count == 0 {
        return Err(vec![EventError::body("no_events", "`events` is empty")]);
    }
    if count > rules.max_events {
        return Err(vec![EventError::body(
            "too_many_events",
            format!("{count} events in one request; at most {} are accepted", rules.max_events),
        )]);
    }
    Ok(())
}

/// Validates events that arrived already typed (gRPC): the same rules and
/// errors as [`decode_events`].
pub fn check_events(events: Vec<EventInput>, rules: &EventRules, now_ms: i64) -> Result<Vec<Record>, Vec<EventError>> {
    check_count(events.len(), rules)?;
    let mut records = Vec::with_capacity(events.len());
    let mut errors = Vec::new();
    for outcome in check_each(events, rules, now_ms) {
        match outcome {
            Ok(record) => records.push(record),
            Err(mut problems) => errors.append(&mut problems),
        }
    }
    if errors.is_empty() {
        Ok(records)
    } else {
        Err(errors)
    }
}

/// Validates each event on its own (a report stream writes the good ones
/// of a request): per event, its record or its problems. The count is not
/// checked.
pub fn check_each(events: Vec<EventInput>, rules: &EventRules, now_ms: i64) -> Vec<Result<Record, Vec<EventError>>> {
    events.into_iter().enumerate().map(|(index, event)| check(index, event, rules, now_ms)).collect()
}

fn check(index: usize, event: EventInput, rules: &EventRules, now_ms: i64) -> Result<Record, Vec<EventError>> {
    let mut errors = Vec::new();
    if event.uid == 0 {
        errors.push(EventError::at(index, "invalid_uid", "`uid` must be greater than 0"));
    }
    if !rules.businesses.contains(&event.business) {
        errors.push(EventError::at(
            index,
            "unknown_business",
            format!("`business` {} is not registered on this endpoint", quoted(&event.business)),
        ));
    }
    if event.progress < -1 {
        errors.push(EventError::at(
            index,
            "invalid_progress",
            format!("`progress` is {}; it must be -1 (finished) or at least 0", event.progress),
        ));
    }
    if event.duration.is_some_and(|duration| duration < 0) {
        errors.push(EventError::at(index, "invalid_duration", "`duration` must not be negative"));
    }
    if event.device.as_ref().is_some_and(|device| device.len() > MAX_DEVICE_BYTES) {
        errors.push(EventError::at(index, "device_too_long", format!("`device` is longer than {MAX_DEVICE_BYTES} bytes")));
    }
    let view_at = event.view_at.unwrap_or(now_ms);
    if view_at < 0 {
        errors.push(EventError::at(index, "invalid_view_at", "`view_at` must be unix milliseconds, not negative"));
    } else if view_at > now_ms + MAX_FUTURE_MS {
        errors.push(EventError::at(
            index,
            "view_at_in_future",
            format!("`view_at` is {} ms ahead of the server clock; at most {MAX_FUTURE_MS} ms is accepted", view_at - now_ms),
        ));
    } else if let Some(max_age) = rules.max_age_ms.get(&event.business).filter(|max_age| now_ms - view_at > **max_age) {
        errors.push(EventError::at(
            index,
            "view_at_too_old",
            format!(
                "`view_at` is {} days old; business {:?} keeps {} days of history",
                (now_ms - view_at) / 86_400_000,
                event.business,
                max_age / 86_400_000
            ),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Record {
        uid: event.uid,
        business: event.business,
        oid: event.oid,
        sub_id: event.sub_id,
        progress: event.progress,
        duration: event.duration,
        device: event.device,
        view_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn rules() -> EventRules {
        // pgc keeps 30 days; archive has no limit here.
        let max_age_ms = [("pgc".to_owned(), 30 * 86_400_000)].into();
        EventRules { businesses: ["archive".to_owned(), "pgc".to_owned()].into(), max_events: 3, max_age_ms }
    }

    fn codes(body: &str) -> Vec<(Option<usize>, &'static str)> {
        match decode_events(body.as_bytes(), &rules(), NOW) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(|e| (e.index, e.code)).collect(),
        }
    }

    #[test]
    fn single_and_batch_bodies_decode_in_order() {
        let one = decode_events(br#"{"uid":1,"business":"archive","oid":9,"progress":30}"#, &rules(), NOW).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].view_at, NOW, "absent view_at takes the server time");
        let many = decode_events(
            br#"{"events":[{"uid":1,"business":"archive","oid":9,"progress":-1,"view_at":5},{"uid":2,"business":"pgc","oid":7,"sub_id":3,"progress":10,"duration":100,"device":"tv"}]}"#,
            &rules(),
            NOW,
        )
        .unwrap();
        assert_eq!((many[0].uid, many[0].view_at, many[1].sub_id, many[1].device.as_deref()), (1, 5, Some(3), Some("tv")));
    }

    #[test]
    fn every_bad_event_is_named_with_its_index() {
        let body = r#"{"events":[
            {"uid":0,"business":"comic","oid":1,"progress":-2},
            {"uid":1,"business":"archive","oid":1,"progress":1},
            {"uid":"x","business":"archive","oid":1,"progress":1},
            {"uid":1,"business":"archive","oid":1,"progress":1,"color":"red"}
        ]}"#;
        let rules = EventRules { max_events: 10, ..rules() };
        let errors = decode_events(body.as_bytes(), &rules, NOW).unwrap_err();
        let got: Vec<(Option<usize>, &str)> = errors.iter().map(|e| (e.index, e.code)).collect();
        assert_eq!(
            got,
            vec![
                (Some(0), "invalid_uid"),
                (Some(0), "unknown_business"),
                (Some(0), "invalid_progress"),
                (Some(2), "invalid_event"),
                (Some(3), "invalid_event")
            ]
        );
        assert!(errors[3].message.contains("invalid type"), "{}", errors[3].message);
        assert!(errors[4].message.contains("unknown field `color`"), "{}", errors[4].message);
    }

    #[test]
    fn body_level_problems() {
        assert_eq!(codes("{not json"), vec![(None, "malformed_json")]);
        assert_eq!(codes("[1,2]"), vec![(None, "invalid_body")]);
        assert_eq!(codes(r#"{"events":{}}"#), vec![(None, "invalid_body")]);
        assert_eq!(codes(r#"{"events":[],"x":1}"#), vec![(None, "invalid_body")]);
        assert_eq!(codes(r#"{"events":[]}"#), vec![(None, "no_events")]);
        let four = r#"{"uid":1,"business":"archive","oid":1,"progress":1}"#;
        assert_eq!(codes(&format!(r#"{{"events":[{four},{four},{four},{four}]}}"#)), vec![(None, "too_many_events")]);
        assert_eq!(codes(r#"{"uid":1,"business":"archive","progress":1}"#), vec![(Some(0), "invalid_event")]);
    }

    #[test]
    fn field_limits() {
        let event = |extra: &str| format!(r#"{{"uid":1,"business":"archive","oid":1,"progress":1{extra}}}"#);
        assert_eq!(codes(&event(&format!(r#","device":"{}""#, "d".repeat(33)))), vec![(Some(0), "device_too_long")]);
        assert_eq!(codes(&event(&format!(r#","device":"{}""#, "d".repeat(32)))), vec![]);
        assert_eq!(codes(&event(&format!(r#","view_at":{}"#, NOW + MAX_FUTURE_MS + 1))), vec![(Some(0), "view_at_in_future")]);
        assert_eq!(codes(&event(&format!(r#","view_at":{}"#, NOW + MAX_FUTURE_MS))), vec![]);
        assert_eq!(codes(&event(r#","view_at":-5"#)), vec![(Some(0), "invalid_view_at")]);
        // Older than the business keeps: refused, so `recorded:true` never
        // names a report that expires before it could be persisted.
        let pgc = |view_at: i64| format!(r#"{{"uid":1,"business":"pgc","oid":1,"progress":1,"view_at":{view_at}}}"#);
        assert_eq!(codes(&pgc(NOW - 30 * 86_400_000 - 1)), vec![(Some(0), "view_at_too_old")]);
        assert_eq!(codes(&pgc(NOW - 30 * 86_400_000)), vec![]);
        assert_eq!(codes(&event(r#","duration":-5"#)), vec![(Some(0), "invalid_duration")]);
        assert_eq!(codes(r#"{"uid":-1,"business":"archive","oid":1,"progress":1}"#), vec![(Some(0), "invalid_event")]);
    }
}
