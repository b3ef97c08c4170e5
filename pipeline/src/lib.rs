//! histflow's engine: everything about a pipeline that is not a stage.
//!
//! A topology file is parsed ([`topology`]), interpolated ([`env`]) and
//! validated ([`validate`]) with every problem collected ([`problem`]); it
//! can be drawn ([`graph`]); a role's share of it is planned ([`plan`]) and
//! run ([`runtime`]) as one tokio task per stage joined by bounded edges
//! ([`edge`]) with optional rate limits ([`rate_limit`]) and metrics
//! ([`metrics`]). Stage kinds are supplied by the caller through
//! [`topology::StageSpec`] and [`runtime::Stage`].
//!
//! # Layout
//! - `topology`: the model of `topology.toml` and its parser.
//! - `env`: `${VAR:-default}` interpolation.
//! - `problem`: configuration problems that name where they are.
//! - `validate`: graph checks (names, edges, cycles, roles, sinks, limits).
//! - `graph`: DOT and Mermaid rendering.
//! - `health`: liveness and readiness of the process, flipped to draining
//!   on stop.
//! - `plan`: which nodes a role runs (their specs); bridges split into two
//!   halves.
//! - `edge`: bounded, event-counted edges with `block` or `reject`.
//! - `rate_limit`: governor limits on tokio's clock; they delay, never drop.
//! - `runtime`: spawning, wiring, draining shutdown with a deadline.
//! - `metrics`: per-stage and per-edge metric handles and names.
//! - `view`: the topology as the live page draws it, with each kind's
//!   figures (`figure`: what a kind shows, named by the kind).
//!
//! The engine reads one way: parse (`topology`) → plan → run (`runtime`,
//! `edge`); the view reads them, and none of them reads the view.

pub mod edge;
pub mod env;
pub mod figure;
pub mod graph;
pub mod health;
pub mod metrics;
pub mod plan;
pub mod problem;
pub mod rate_limit;
pub mod runtime;
pub mod topology;
pub mod validate;
pub mod view;

pub use edge::LiveRateLimit;
pub use edge::{Input, Message, Output, SendError};
pub use runtime::{
    stage_fn, Control, NodeSpec, Rewire, Rewired, RunError, RunnableNode, Running, Stage, StageContext, StageError, StageFuture,
};
pub use topology::{InputSpec, RateLimitSpec, Role, Shape, StageDef, StageSpec, Topology, WhenFull};
