//! The backends a process's stages share, made once each: one user-state
//! store per Redis URL (or the embedded one), one open embedded store per
//! data directory, one in-process queue per bridge under `--embedded`.

use std::collections::HashMap;
use std::sync::Arc;

use backends::history_table::{EmbeddedTable, HistoryTable, ThriftTable};
use backends::user_state::{CallShape, EmbeddedStore, RedisStore, UserStore};

use super::error::StageBuildError;
use crate::kafka_batch::embedded::{QueueConsumer, QueueProducer};
use crate::resources::{TableAt, UserStateAt};

/// Everything stages of one process share.
#[derive(Default)]
pub struct Backends {
    /// The in-process user-state store of `--embedded`; `None`: real Redis.
    embedded: Option<Arc<EmbeddedStore>>,
    /// Redis stores by URL and call shape (stages that group calls
    /// differently get a connection each).
    redis: HashMap<(String, CallShape), UserStore>,
    /// Embedded history stores by data directory (one open store each).
    tables: HashMap<String, Arc<hbase_compat::Store>>,
    /// Each embedded bridge's halves until its nodes take them.
    pub(crate) queues: HashMap<String, (Option<QueueProducer>, Option<QueueConsumer>)>,
}

impl Backends {
    /// Backends for a process; `embedded` uses in-process stand-ins.
    pub fn new(embedded: bool) -> Self {
        Backends { embedded: embedded.then(|| Arc::new(EmbeddedStore::default())), ..Backends::default() }
    }

    /// Whether the in-process stand-ins are used.
    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// The user-state store at `redis_url` (the embedded one, whatever the
    /// URL, under `--embedded`).
    pub fn user_store(&mut self, redis_url: &str, shape: CallShape) -> Result<UserStore, StageBuildError> {
        if let Some(store) = &self.embedded {
            return Ok(UserStore::Embedded(store.clone()));
        }
        let key = (redis_url.to_owned(), shape);
        if let Some(store) = self.redis.get(&key) {
            return Ok(store.clone());
        }
        let store =
            UserStore::Redis(RedisStore::connect_lazy(redis_url, shape).map_err(|error| StageBuildError::Backend(error.to_string()))?);
        self.redis.insert(key, store.clone());
        Ok(store)
    }

    /// The embedded user-state store, under `--embedded`.
    pub fn embedded_user_store(&self) -> Option<UserStore> {
        self.embedded.clone().map(UserStore::Embedded)
    }

    /// The store of a realtime stage, as [`crate::resources::Resource::UserState`]
    /// names it (the embedded one under `--embedded`).
    pub fn realtime_store(&mut self, at: &UserStateAt) -> Result<UserStore, StageBuildError> {
        match (&self.embedded, at) {
            (Some(store), _) => Ok(UserStore::Embedded(store.clone())),
            (None, UserStateAt::Redis { url, shape }) => self.user_store(url, *shape),
            (None, UserStateAt::Embedded) => {
                Err(StageBuildError::Backend("the in-process store is asked for outside --embedded".to_owned()))
            }
        }
    }

    /// A persist stage's history table: the embedded store under
    /// `--embedded` (opened once per directory), else the Thrift gateway.
    pub fn history_table(&mut self, at: &TableAt) -> Result<HistoryTable, StageBuildError> {
        let (Some(_), Some(data_dir)) = (&self.embedded, &at.embedded_data_dir) else {
            let gateway = at.hbase_thrift.as_deref().unwrap_or_default();
            return Ok(HistoryTable::Thrift(ThriftTable::new(gateway, &at.table)));
        };
        let store = match self.tables.get(data_dir) {
            Some(store) => store.clone(),
            None => {
                let store = hbase_compat::Store::open(std::path::Path::new(data_dir))
                    .map_err(|error| StageBuildError::Backend(format!("cannot open the embedded history store in {data_dir}: {error}")))?;
                let store = Arc::new(store);
                self.tables.insert(data_dir.clone(), store.clone());
                store
            }
        };
        Ok(HistoryTable::Embedded(EmbeddedTable::new(store, &at.table)))
    }
}
