//! The `persist` stage (job role): folds consumed batches in a window and
//! writes them to the history table (`backends::history_table`), durably,
//! before their offsets may be committed.
//!
//! - `config`: the stage's topology fields and their checks.
//! - `build`: how the stage is built, and the shared resources it uses.
//! - `window`: the pure fold of a window.
//! - `stage`: the window loop and the writes.
//! - `dead_letters`: where rows the table refuses go.
//! - `sweep`: the background deletion of views past their retention.
//! - `events`: what the stage reports.

mod build;
mod config;
pub mod dead_letters;
mod events;
pub mod stage;
pub mod sweep;
pub mod window;

pub(crate) use build::USES;
pub use config::PersistConfig;
pub use dead_letters::DeadLetters;
pub(crate) use events::figures;
pub use stage::PersistStage;
