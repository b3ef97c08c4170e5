//! The `persist` stage (job role): folds consumed batches in a window and
//! writes them to the history table, durably, before their offsets may be
//! committed.
//!
//! - `config`: the stage's topology fields.
//! - `window`: the pure fold of a window.
//! - `table`: row mutations with per-cell timestamps.
//! - `thrift`: the table through an HBase Thrift1 gateway.
//! - `stage`: the window loop and the writes.

mod config;
pub mod stage;
pub mod table;
pub mod thrift;
pub mod window;

pub use config::PersistConfig;
pub use stage::{DeadLetters, HistoryTable, PersistStage, META_FAMILY, RECORDS_FAMILY};
