//! Liveness and readiness: a process is live while it runs, and ready once
//! its stages are started and until it begins to drain. Also what each
//! backend (Redis, the broker, HBase) answered last, for the live page.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
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
    /// Backends the process uses, by name: what they answered last, and
    /// whether readiness waits for them.
    dependencies: Mutex<Vec<Registered>>,
}

#[derive(Debug)]
struct Registered {
    name: &'static str,
    gates_readiness: bool,
    state: Arc<AtomicU8>,
}

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// A backend the process uses (e.g. Redis); its owner says whether it
/// answers.
#[derive(Debug, Clone)]
pub struct Dependency(Arc<AtomicU8>);

impl Dependency {
    /// Records whether the backend answered.
    pub fn set_up(&self, up: bool) {
        self.0.store(if up { UP } else { DOWN }, Ordering::Release);
    }
}

/// What a backend answered last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendState {
    /// Not used yet.
    Unknown,
    /// Its last call succeeded.
    Up,
    /// Its last call failed.
    Down,
}

/// One backend, as the live page shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackendHealth {
    /// Its name (`redis`, `broker`, `hbase`, ...).
    pub name: &'static str,
    /// What it answered last.
    pub state: BackendState,
    /// Whether `/readyz` waits for it.
    pub gates_readiness: bool,
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
        self.register(name, true)
    }

    /// Registers a backend whose state is shown but that readiness does
    /// not wait for (the broker and HBase: their stages wait and retry).
    /// Two registrations of one name share its state.
    pub fn backend(&self, name: &'static str) -> Dependency {
        self.register(name, false)
    }

    fn register(&self, name: &'static str, gates_readiness: bool) -> Dependency {
        let mut dependencies = self.inner.dependencies.lock().unwrap_or_else(PoisonError::into_inner);
        if !gates_readiness {
            if let Some(known) = dependencies.iter().find(|known| known.name == name && !known.gates_readiness) {
                return Dependency(known.state.clone());
            }
        }
        let state = Arc::new(AtomicU8::new(UNKNOWN));
        dependencies.push(Registered { name, gates_readiness, state: state.clone() });
        Dependency(state)
    }

    /// Every registered backend and what it answered last.
    pub fn backends(&self) -> Vec<BackendHealth> {
        let dependencies = self.inner.dependencies.lock().unwrap_or_else(PoisonError::into_inner);
        dependencies
            .iter()
            .map(|known| BackendHealth {
                name: known.name,
                gates_readiness: known.gates_readiness,
                state: match known.state.load(Ordering::Acquire) {
                    UP => BackendState::Up,
                    DOWN => BackendState::Down,
                    _ => BackendState::Unknown,
                },
            })
            .collect()
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
        } else if let Some(known) = self
            .inner
            .dependencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|known| known.gates_readiness && known.state.load(Ordering::Acquire) != UP)
        {
            Readiness::Waiting(known.name)
        } else {
            Readiness::Ready
        }
    }
}
