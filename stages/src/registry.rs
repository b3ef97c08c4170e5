//! The business registry as running stages read it: one copy per process,
//! replaced when a reload is put in force and read at each use, so adding,
//! removing or changing a business (its id, its retention) rebuilds no
//! stage. What the stages take from it: the key expiry of the realtime
//! store (the longest retention) and each business's retention (the HBase
//! retention sweep). The ingest stage's checks take the registry through
//! its API settings, which a reload also replaces in place.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use pipeline::topology::Business;

/// Key expiry in Redis when no business names a retention, days.
const DEFAULT_RETENTION_DAYS: u64 = 90;

/// What stages read of one version of `[businesses]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// Each business's retention, ms.
    pub retention_ms: HashMap<String, i64>,
    /// How long a user's Redis keys live without activity: the longest
    /// retention, seconds.
    pub key_ttl_s: u64,
}

impl Registry {
    /// The registry of `businesses`.
    pub fn of(businesses: &BTreeMap<String, Business>) -> Self {
        let days = businesses.values().map(|business| u64::from(business.retention_days)).max();
        Registry { retention_ms: pipeline::topology::retention_ms(businesses), key_ttl_s: days.unwrap_or(DEFAULT_RETENTION_DAYS) * 86_400 }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::of(&BTreeMap::new())
    }
}

/// The process's registry, shared by every stage that reads it.
#[derive(Clone, Default)]
pub struct LiveRegistry(Arc<ArcSwap<Registry>>);

impl LiveRegistry {
    /// A registry fixed at `businesses` (until replaced).
    pub fn new(businesses: &BTreeMap<String, Business>) -> Self {
        LiveRegistry(Arc::new(ArcSwap::from_pointee(Registry::of(businesses))))
    }

    /// Puts `businesses` in force for every reader.
    pub fn replace(&self, businesses: &BTreeMap<String, Business>) {
        self.0.store(Arc::new(Registry::of(businesses)));
    }

    /// The registry now.
    pub fn now(&self) -> Arc<Registry> {
        self.0.load_full()
    }

    /// The key expiry now, seconds.
    pub fn key_ttl_s(&self) -> u64 {
        self.0.load().key_ttl_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_reaches_every_holder() {
        let mut businesses = BTreeMap::from([("archive".to_owned(), Business { id: 1, retention_days: 90 })]);
        let live = LiveRegistry::new(&businesses);
        let held = live.clone();
        assert_eq!(held.key_ttl_s(), 90 * 86_400);
        businesses.insert("music".to_owned(), Business { id: 9, retention_days: 400 });
        live.replace(&businesses);
        assert_eq!(held.key_ttl_s(), 400 * 86_400);
        assert_eq!(held.now().retention_ms.get("music"), Some(&(400 * 86_400_000)));
    }

    #[test]
    fn no_business_keeps_keys_the_default_days() {
        assert_eq!(LiveRegistry::default().key_ttl_s(), DEFAULT_RETENTION_DAYS * 86_400);
    }
}
