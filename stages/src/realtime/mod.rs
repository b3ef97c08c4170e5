//! The `realtime` stage: makes every report readable at once in Redis
//! (last-write-wins, timeline, record, trim, pause, first watch of the day,
//! dirty mark) before the HTTP answer, then forwards the batch.

mod config;

pub use config::RealtimeConfig;
