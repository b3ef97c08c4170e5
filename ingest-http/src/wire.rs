//! Records and results at the API's edge: every conversion between the
//! model ([`Record`], [`EventResult`]) and what a client sends or receives,
//! over JSON and over gRPC, in one place. (Stored and shipped values have
//! theirs in `model::codec`.)

use model::{EventResult, Record};
use serde::{Deserialize, Serialize};

use crate::event::EventInput;
use crate::grpc::proto;

/// A record as the read API answers it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, Clone)]
pub struct RecordBody {
    /// Registered business name.
    pub business: String,
    /// Object id inside the business.
    pub oid: u64,
    /// Episode or part.
    pub sub_id: Option<u64>,
    /// Seconds watched; -1 means finished.
    pub progress: i64,
    /// Length in seconds.
    pub duration: Option<i64>,
    /// Reporting device.
    pub device: Option<String>,
    /// When the user watched, unix ms.
    pub view_at: i64,
}

impl From<Record> for RecordBody {
    fn from(record: Record) -> Self {
        RecordBody {
            business: record.business,
            oid: record.oid,
            sub_id: record.sub_id,
            progress: record.progress,
            duration: record.duration,
            device: record.device,
            view_at: record.view_at,
        }
    }
}

/// The answer to an accepted request.
#[derive(Debug, Serialize)]
pub struct EventsAnswer {
    /// One result per event, in request order.
    pub results: Vec<EventResultBody>,
}

/// One event's result.
#[derive(Debug, Serialize)]
pub struct EventResultBody {
    /// The event changed the user's history.
    pub recorded: bool,
    /// The user's first recorded watch today.
    pub first_today: bool,
}

impl From<EventResult> for EventResultBody {
    fn from(result: EventResult) -> Self {
        EventResultBody { recorded: result.recorded, first_today: result.first_today }
    }
}

impl From<proto::Event> for EventInput {
    fn from(event: proto::Event) -> Self {
        EventInput {
            uid: event.uid,
            business: event.business,
            oid: event.oid,
            sub_id: event.sub_id,
            progress: event.progress,
            duration: event.duration,
            device: event.device,
            view_at: event.view_at,
        }
    }
}

impl From<Record> for proto::HistoryRecord {
    fn from(record: Record) -> Self {
        let RecordBody { business, oid, sub_id, progress, duration, device, view_at } = record.into();
        proto::HistoryRecord { business, oid, sub_id, progress, duration, device, view_at }
    }
}

impl From<EventResult> for proto::EventResult {
    fn from(result: EventResult) -> Self {
        proto::EventResult { recorded: result.recorded, first_today: result.first_today, error: None }
    }
}
