//! The `realtime` stage: makes every report readable at once (last write
//! wins, timeline, record, trim, pause, first watch of the day, and the
//! pending mark) before the HTTP answer, then forwards what it recorded,
//! and re-drives what some instance acknowledged and never handed on. The
//! rules themselves live with the user-state store (`backends::user_state`).
//!
//! - `config`: the stage's topology fields and their checks.
//! - `build`: how the stage is built, and the shared resources it uses.
//! - `group`: a commit's upserts grouped per user, in request order.
//! - `stage`: the group-commit loop.
//! - `redrive`: claiming stale marks and shipping them again.
//! - `broadcast`: the first-watch message.
//! - `events`: what the stage reports.

pub mod broadcast;
mod build;
mod config;
mod events;
pub mod group;
pub mod redrive;
pub mod stage;

pub(crate) use build::USES;
pub use config::RealtimeConfig;
pub(crate) use events::figures;
pub use stage::RealtimeStage;
