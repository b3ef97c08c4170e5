//! Liveness and readiness: a process is live while it runs, and ready once
//! its stages are started and until it begins to drain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared health flags; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<Flags>,
}

#[derive(Debug, Default)]
struct Flags {
    /// Set once every stage of the process is running.
    started: AtomicBool,
    /// Set when a stop signal arrived: new work is refused.
    draining: AtomicBool,
}

/// What `/readyz` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Not all stages are running yet.
    Starting,
    /// Taking traffic.
    Ready,
    /// Stopping: finishing what was accepted, refusing anything new.
    Draining,
}

impl Health {
    /// Marks every stage as running.
    pub fn set_started(&self) {
        self.inner.started.store(true, Ordering::Release);
    }

    /// Marks the process as draining; it never becomes ready again.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    /// Whether a stop signal arrived.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// The current readiness.
    pub fn readiness(&self) -> Readiness {
        if self.is_draining() {
            Readiness::Draining
        } else if self.inner.started.load(Ordering::Acquire) {
            Readiness::Ready
        } else {
            Readiness::Starting
        }
    }
}
