//! What outlives one build of a process's stages, so a reload that builds
//! some of them again reuses it: the bound listeners (an address stays
//! bound across a reload), the shared backends (the embedded stores above
//! all, whose data lives in them), each ingest stage's live API settings
//! and the business registry (a reload replaces both in place).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ingest_http::api::LiveApi;
use ingest_http::Listeners;

use super::backends::Backends;
use crate::registry::LiveRegistry;

/// Process-lived build state.
#[derive(Default)]
pub struct Resident {
    /// Every address the process's servers listen on.
    pub listeners: Listeners,
    /// The business registry every stage reads (a reload replaces it).
    pub registry: LiveRegistry,
    backends: Mutex<Option<Backends>>,
    ingest: Mutex<HashMap<String, Arc<LiveApi>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The backends, locked for a build.
pub(crate) struct BackendsGuard<'a>(MutexGuard<'a, Option<Backends>>);

impl std::ops::Deref for BackendsGuard<'_> {
    type Target = Backends;

    fn deref(&self) -> &Backends {
        self.0.as_ref().unwrap_or_else(|| unreachable!("made when locked"))
    }
}

impl std::ops::DerefMut for BackendsGuard<'_> {
    fn deref_mut(&mut self) -> &mut Backends {
        self.0.as_mut().unwrap_or_else(|| unreachable!("made when locked"))
    }
}

impl Resident {
    /// The shared backends (made on first use; `embedded` then chooses the
    /// in-process stand-ins).
    pub(crate) fn backends(&self, embedded: bool) -> BackendsGuard<'_> {
        let mut guard = lock(&self.backends);
        guard.get_or_insert_with(|| Backends::new(embedded));
        BackendsGuard(guard)
    }

    /// Records the live API settings of the ingest node `name`.
    pub(crate) fn set_ingest(&self, name: &str, live: Arc<LiveApi>) {
        lock(&self.ingest).insert(name.to_owned(), live);
    }

    /// The live API settings of the ingest node `name`, if it runs.
    pub(crate) fn ingest(&self, name: &str) -> Option<Arc<LiveApi>> {
        lock(&self.ingest).get(name).cloned()
    }

    /// Forgets ingest nodes not in `running`.
    pub(crate) fn keep_ingest(&self, running: &[String]) {
        lock(&self.ingest).retain(|name, _| running.contains(name));
    }
}
