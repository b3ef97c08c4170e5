//! The `realtime` stage: makes every report readable at once (last write
//! wins, timeline, record, trim, pause, first watch of the day, dirty mark)
//! before the HTTP answer, then forwards what it recorded.
//!
//! - `config`: the stage's topology fields.
//! - `core`: grouping per user and the write rules (embedded store).
//! - `record.lua`: the same rules as one atomic Redis script per user.
//! - `store`: Redis or the embedded store; dirty marks.
//! - `broadcast`: the first-watch message.
//! - `stage`: the group-commit loop.

pub mod broadcast;
mod config;
pub mod core;
pub mod stage;
pub mod store;

pub use config::RealtimeConfig;
pub use stage::RealtimeStage;
pub use store::{EmbeddedStore, RealtimeStore, RedisStore};
