//! Why a role's nodes could not be built, each problem with its kind.

use pipeline::plan::RoleSelection;

/// One reason a role cannot run.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The role selected has nothing to run in this topology.
    #[error("the {role} role has no stages in this topology")]
    EmptyRole {
        /// The role asked for.
        role: RoleSelection,
    },
    /// One stage could not be built.
    #[error("stage `{stage}`: {problem}")]
    Stage {
        /// The stage's name.
        stage: String,
        /// What is wrong.
        problem: StageBuildError,
    },
}

/// Why one stage could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StageBuildError {
    /// `--embedded` with a role split: the in-process queue cannot reach
    /// another process.
    #[error("under --embedded the in-process queue stands in for Kafka and cannot cross processes; run with --role all")]
    EmbeddedQueueAcrossProcesses,
    /// `--embedded` with a bridge nothing reads.
    #[error("under --embedded nothing reads its in-process queue (no stage has it as an input), so its events would go nowhere")]
    EmbeddedQueueUnread,
    /// A bridge half was built twice: under `--embedded`, a reload that
    /// would rebuild a bridge (its in-process queue cannot be made again
    /// while it holds events).
    #[error("under --embedded the in-process queue of a bridge cannot be rebuilt while it runs; restart histflow to change this stage")]
    PlannedTwice,
    /// A backend client could not be made (a bad address or setting; no
    /// connection is attempted while building).
    #[error("{0}")]
    Backend(String),
    /// A setting contradicts another stage's (named in the message).
    #[error("{0}")]
    Setting(String),
    /// The stage's listening address could not be bound.
    #[error("{0}")]
    Listen(String),
    /// The kind asked for a resource it does not declare.
    #[error(transparent)]
    Undeclared(#[from] crate::resources::Undeclared),
}
