//! The read side of the history API, one unit the HTTP and gRPC front ends
//! call: pages of a user's timeline (newest first, exact cursor), progress
//! look-ups and the recording switch, from the user-state store with
//! cache-aside to the history table.
//!
//! # Layout
//! - `cursor`: the exact page cursor, a page request and a page.
//! - `reader`: [`HistoryReader`], reading Redis (or the embedded store) and
//!   falling back to HBase when Redis runs short.
//! - `merge`: which HBase cells a page may show (pure).
//! - `events`: what reads count and log.

mod cursor;
mod events;
mod merge;
mod reader;

pub use cursor::{BadCursor, Cursor, Page, PageError, PageQuery, ReadError};
pub use events::register as register_metrics;
pub use reader::HistoryReader;
