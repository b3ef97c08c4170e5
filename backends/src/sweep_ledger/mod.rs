//! Where a retention sweep keeps its lock and its place, so one instance
//! sweeps at a time and a pass resumes where a crash left it: two Redis
//! keys (`model::keys::sweep_lock`, `model::keys::sweep_progress`), or
//! process memory under `--embedded` (one process; a restart starts the
//! pass again, which is safe: a sweep step can be repeated). The lock's
//! scripts are `hold.lua`, `save.lua` and `release.lua`.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::user_state::link::{Link, Lua};
use crate::user_state::{StoreError, UserStore};

/// Where a sweep is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepProgress {
    /// The last row swept in the current pass (`None`: the pass starts
    /// from the first row).
    pub cursor: Option<String>,
    /// When the current pass started, unix ms (0: none yet).
    pub pass_started_ms: i64,
    /// When the last pass finished, unix ms (0: never).
    pub pass_done_ms: i64,
}

/// The lock and place of one table's sweep.
pub struct SweepLedger(Kept);

/// Where a ledger keeps them.
enum Kept {
    /// In Redis (`h:sweep:{table}:lock` and `h:sweep:{table}`: one hash
    /// slot), shared by every instance.
    Redis { connection: Link, lock: String, progress: String, scripts: Box<LedgerScripts> },
    /// In this process (`--embedded`).
    Memory(Mutex<SweepProgress>),
}

/// The ledger's scripts, hashed once.
struct LedgerScripts {
    hold: Lua,
    save: Lua,
    release: Lua,
}

fn ledger_error(error: redis::RedisError) -> StoreError {
    StoreError(format!("sweep ledger: {error}"))
}

impl SweepLedger {
    /// The lock and place of `table`'s retention sweep beside `store`: in
    /// its Redis, or in process memory for the embedded store.
    pub fn beside(store: &UserStore, table: &str) -> Self {
        match store {
            UserStore::Redis(redis) => Self::redis(redis.link(), table),
            UserStore::Embedded(_) => Self::memory(),
        }
    }

    /// The ledger of `table`'s sweep in the Redis behind `connection`.
    fn redis(connection: Link, table: &str) -> Self {
        let scripts = Box::new(LedgerScripts {
            hold: Lua::new(include_str!("hold.lua")),
            save: Lua::new(include_str!("save.lua")),
            release: Lua::new(include_str!("release.lua")),
        });
        SweepLedger(Kept::Redis { connection, lock: model::keys::sweep_lock(table), progress: model::keys::sweep_progress(table), scripts })
    }

    /// A ledger in process memory.
    pub fn memory() -> Self {
        SweepLedger(Kept::Memory(Mutex::default()))
    }

    /// Takes or renews the lock for `owner` for `lease`; whether `owner`
    /// holds it.
    pub async fn hold(&self, owner: &str, lease: Duration) -> Result<bool, StoreError> {
        match &self.0 {
            Kept::Redis { connection, lock, scripts, .. } => {
                let held: i64 = connection
                    .eval(&scripts.hold, &[lock], &[owner.to_owned(), lease.as_millis().to_string()])
                    .await
                    .map_err(ledger_error)?;
                Ok(held == 1)
            }
            Kept::Memory(_) => Ok(true),
        }
    }

    /// Lets another instance take the lock at once.
    pub async fn release(&self, owner: &str) -> Result<(), StoreError> {
        match &self.0 {
            Kept::Redis { connection, lock, scripts, .. } => {
                connection.eval::<i64>(&scripts.release, &[lock], &[owner.to_owned()]).await.map(drop).map_err(ledger_error)
            }
            Kept::Memory(_) => Ok(()),
        }
    }

    /// Where the sweep is.
    pub async fn progress(&self) -> Result<SweepProgress, StoreError> {
        match &self.0 {
            Kept::Redis { connection, progress, .. } => {
                let mut connection = connection.clone();
                let (cursor, started, done): (Option<String>, Option<i64>, Option<i64>) = redis::cmd("HMGET")
                    .arg(progress)
                    .arg(&["cursor", "pass_started", "pass_done"])
                    .query_async(&mut connection)
                    .await
                    .map_err(ledger_error)?;
                Ok(SweepProgress { cursor, pass_started_ms: started.unwrap_or(0), pass_done_ms: done.unwrap_or(0) })
            }
            Kept::Memory(progress) => Ok(progress.lock().unwrap_or_else(PoisonError::into_inner).clone()),
        }
    }

    /// Saves where the sweep is, if `owner` still holds the lock; whether
    /// it was saved.
    pub async fn save(&self, owner: &str, saved: &SweepProgress) -> Result<bool, StoreError> {
        match &self.0 {
            Kept::Redis { connection, lock, progress, scripts } => {
                let args = [
                    owner.to_owned(),
                    saved.cursor.clone().unwrap_or_default(),
                    saved.pass_started_ms.to_string(),
                    saved.pass_done_ms.to_string(),
                ];
                let done: i64 = connection.eval(&scripts.save, &[lock, progress], &args).await.map_err(ledger_error)?;
                Ok(done == 1)
            }
            Kept::Memory(progress) => {
                *progress.lock().unwrap_or_else(PoisonError::into_inner) = saved.clone();
                Ok(true)
            }
        }
    }
}
