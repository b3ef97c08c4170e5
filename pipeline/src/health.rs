//! Liveness and readiness: a process is live while it runs, and ready once
//! its stages are started and until it begins to drain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

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
    /// Backends the process needs, by name, and whether they answer.
    dependencies: Mutex<Vec<(&'static str, Arc<AtomicBool>)>>,
}

/// A backend the process needs to be ready (e.g. Redis); its owner says
/// whether it answers.
#[derive(Debug, Clone)]
pub struct Dependency(Arc<AtomicBool>);

impl Dependency {
    /// Records whether the backend answered.
    pub fn set_up(&self, up: bool) {
        self.0.store(up, Ordering::Release);
    }
}

/// What `/readyz` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Not all stages are running yet.
    Starting,
    /// A backend does not answer (its name).
    Waiting(&'static str),
    /// Taking traffic.
    Ready,
    /// Stopping: finishing what was accepted, refusing anything new.
    Draining,
}

impl Health {
    /// Registers a backend that must answer for the process to be ready;
    /// it starts as not answering.
    pub fn dependency(&self, name: &'static str) -> Dependency {
        let flag = Arc::new(AtomicBool::new(false));
        self.inner.dependencies.lock().unwrap_or_else(PoisonError::into_inner).push((name, flag.clone()));
        Dependency(flag)
    }

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
        } else if !self.inner.started.load(Ordering::Acquire) {
            Readiness::Starting
        } else if let Some((name, _)) =
            self.inner.dependencies.lock().unwrap_or_else(PoisonError::into_inner).iter().find(|(_, up)| !up.load(Ordering::Acquire))
        {
            Readiness::Waiting(name)
        } else {
            Readiness::Ready
        }
    }
}
