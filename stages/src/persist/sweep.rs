//! The HBase retention sweep (job role, beside `persist`): deletes the
//! cells of views older than their business's retention, as Bilibili's
//! history deleter does — only in configured off-peak UTC hours, in steps
//! of a few rows under a rate limit, under a lock so one instance sweeps at
//! a time, resuming a pass where a crash left it.
//!
//! A step scans `step_rows` rows after the saved cursor, deletes each cell
//! past its business's retention with a column delete *at the business's
//! cutoff* (the newest instant past retention: it hides exactly the
//! versions past retention, so a newer view of the item stays, and a
//! step's deletes share a timestamp per business, hence a Thrift call),
//! then saves the cursor. A crash between the deletes and the save repeats
//! the step, which deletes nothing new. Cells of businesses the topology does not name are never
//! deleted. Reads hide such views already (`model::past_retention`, the
//! same rule); the sweep frees the storage.

use std::time::Duration;

use backends::history_table::{self, HistoryTable, RowMutation, Wanted};
use backends::sweep_ledger::{SweepLedger, SweepProgress};
use pipeline::rate_limit::RateLimit;
use pipeline::RateLimitSpec;
use serde::Deserialize;

use crate::registry::LiveRegistry;

/// `retention_sweep = { ... }` of a persist stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// Sweep at all.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// `[from, to]`: the UTC hours it may run, from `from`:00 up to
    /// `to`:00 (`[22, 4]` wraps midnight; `[0, 24]`: always).
    #[serde(default = "default_hours")]
    pub hours: [u8; 2],
    /// Rows scanned per step.
    #[serde(default = "default_step_rows")]
    pub step_rows: usize,
    /// Rows scanned per second at most.
    #[serde(default = "default_rows_per_second")]
    pub rows_per_second: u32,
    /// The lock's lease: an instance that stops renewing it (killed,
    /// frozen) is replaced after this long.
    #[serde(default = "default_lock_ttl_s")]
    pub lock_ttl_s: u64,
    /// A new pass starts this many hours after the last one finished.
    #[serde(default = "default_every_hours")]
    pub every_hours: u64,
}

fn default_enabled() -> bool {
    true
}
fn default_hours() -> [u8; 2] {
    [2, 6]
}
fn default_step_rows() -> usize {
    200
}
fn default_rows_per_second() -> u32 {
    1_000
}
fn default_lock_ttl_s() -> u64 {
    30
}
fn default_every_hours() -> u64 {
    24
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            enabled: default_enabled(),
            hours: default_hours(),
            step_rows: default_step_rows(),
            rows_per_second: default_rows_per_second(),
            lock_ttl_s: default_lock_ttl_s(),
            every_hours: default_every_hours(),
        }
    }
}

impl SweepConfig {
    /// Problems, each naming its field under `retention_sweep`.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let [from, to] = self.hours;
        if from > 23 || to > 24 || from == to {
            problems.push(format!("`retention_sweep.hours` = [{from}, {to}] must be two different UTC hours, from 0..=23 and to 0..=24"));
        }
        if self.step_rows == 0 || self.step_rows > 10_000 {
            problems.push(format!("`retention_sweep.step_rows` = {} must be 1..=10000", self.step_rows));
        }
        if self.rows_per_second == 0 {
            problems.push("`retention_sweep.rows_per_second` must be at least 1".to_owned());
        }
        // A step waits step_rows / rows_per_second for the rate limit; it
        // must renew the lock well within the lease.
        let step_s = self.step_rows as f64 / f64::from(self.rows_per_second.max(1));
        if self.lock_ttl_s < 2 || step_s * 2.0 > self.lock_ttl_s as f64 {
            problems.push(format!(
                "`retention_sweep.lock_ttl_s` = {} must be at least 2 and twice a step's {step_s:.1} s (step_rows / rows_per_second)",
                self.lock_ttl_s
            ));
        }
        problems
    }

    /// Whether `now_ms` falls in the sweep's hours.
    fn open_at(&self, now_ms: i64) -> bool {
        let hour = (now_ms.div_euclid(3_600_000) % 24) as u8;
        let [from, to] = self.hours;
        if from < to {
            (from..to).contains(&hour)
        } else {
            hour >= from || hour < to
        }
    }
}

/// What one step did.
struct Step {
    examined: usize,
    deleted: usize,
}

/// A running sweep of one table.
pub struct RetentionSweep {
    config: SweepConfig,
    table: HistoryTable,
    ledger: SweepLedger,
    /// The business registry: each business's retention, read at each
    /// step.
    registry: LiveRegistry,
    /// This instance's name in the lock.
    owner: String,
    limit: RateLimit,
    stage: String,
}

/// `histflow_sweep_rows_examined_total`.
const EXAMINED: &str = "histflow_sweep_rows_examined_total";
/// `histflow_sweep_cells_deleted_total`.
const DELETED: &str = "histflow_sweep_cells_deleted_total";
/// `histflow_sweep_passes_total`.
const PASSES: &str = "histflow_sweep_passes_total";
/// `histflow_sweep_errors_total`.
const ERRORS: &str = "histflow_sweep_errors_total";
/// `histflow_sweep_active`: 1 while this instance holds the lock and sweeps.
const ACTIVE: &str = "histflow_sweep_active";

impl RetentionSweep {
    /// A sweep of `table` keeping its place in `ledger`.
    pub fn new(config: SweepConfig, table: HistoryTable, ledger: SweepLedger, registry: LiveRegistry, stage: &str) -> Self {
        for name in [EXAMINED, DELETED, PASSES, ERRORS] {
            metrics::counter!(name).increment(0);
        }
        metrics::gauge!(ACTIVE).set(0.0);
        let limit = RateLimit::new(&RateLimitSpec { per_second: config.rows_per_second, burst: Some(config.step_rows as u32) });
        let owner = format!("{}-{}-{}", hostname(), std::process::id(), model::now_ms());
        RetentionSweep { config, table, ledger, registry, owner, limit, stage: stage.to_owned() }
    }

    /// Sweeps for ever (the persist stage aborts it when it ends).
    pub async fn run(self) {
        let lease = Duration::from_secs(self.config.lock_ttl_s);
        let idle = Duration::from_secs(30).min(lease / 2);
        let mut resumed_logged = false;
        loop {
            let now = model::now_ms();
            if !self.config.open_at(now) {
                metrics::gauge!(ACTIVE).set(0.0);
                tokio::time::sleep(idle).await;
                continue;
            }
            match self.ledger.hold(&self.owner, lease).await {
                Ok(true) => {}
                Ok(false) => {
                    metrics::gauge!(ACTIVE).set(0.0);
                    tokio::time::sleep(idle).await;
                    continue;
                }
                Err(error) => {
                    self.failed("cannot take the sweep lock", &error, idle).await;
                    continue;
                }
            }
            let mut progress = match self.ledger.progress().await {
                Ok(progress) => progress,
                Err(error) => {
                    self.failed("cannot read the sweep's place", &error, idle).await;
                    continue;
                }
            };
            let due = progress.pass_done_ms == 0 || now - progress.pass_done_ms >= self.config.every_hours as i64 * 3_600_000;
            if progress.cursor.is_none() && !due {
                // Not due: let another instance's lease lapse to nobody.
                metrics::gauge!(ACTIVE).set(0.0);
                let _ = self.ledger.release(&self.owner).await;
                tokio::time::sleep(idle).await;
                continue;
            }
            metrics::gauge!(ACTIVE).set(1.0);
            match &progress.cursor {
                None => {
                    progress.pass_started_ms = now;
                    tracing::info!(stage = self.stage, "retention sweep: a pass starts");
                }
                Some(cursor) if !resumed_logged => tracing::info!(stage = self.stage, after = cursor, "retention sweep: resuming a pass"),
                Some(_) => {}
            }
            resumed_logged = true;
            let step = match self.step(&mut progress).await {
                Ok(step) => step,
                Err(error) => {
                    self.failed("sweep step failed; it is repeated", &error, idle).await;
                    continue;
                }
            };
            metrics::counter!(EXAMINED).increment(step.examined as u64);
            metrics::counter!(DELETED).increment(step.deleted as u64);
            match self.ledger.save(&self.owner, &progress).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(stage = self.stage, "retention sweep: lost the lock mid-step; another instance goes on"),
                Err(error) => self.failed("cannot save the sweep's place; the step is repeated", &error, idle).await,
            }
            if progress.cursor.is_none() {
                metrics::counter!(PASSES).increment(1);
                tracing::info!(
                    stage = self.stage,
                    took_ms = progress.pass_done_ms - progress.pass_started_ms,
                    "retention sweep: a pass finished"
                );
            }
        }
    }

    /// Scans the rows after the cursor and deletes their expired cells;
    /// moves the cursor on (to `None`, with the pass done, at the end).
    async fn step(&self, progress: &mut SweepProgress) -> Result<Step, backends::history_table::TableError> {
        self.limit.take(self.config.step_rows as u32).await;
        let rows = self.table.scan_rows(progress.cursor.clone(), self.config.step_rows, Wanted::Records.columns()).await?;
        let now = model::now_ms();
        let registry = self.registry.now();
        let mutations: Vec<RowMutation> =
            rows.iter().filter_map(|(row, cells)| history_table::expired_deletes(row, cells, &registry.retention_ms, now)).collect();
        let deleted = mutations.iter().map(|row| row.column_deletes.len()).sum();
        if !mutations.is_empty() {
            self.table.mutate_rows(mutations).await?;
        }
        if rows.len() < self.config.step_rows {
            progress.cursor = None;
            progress.pass_done_ms = now;
        } else {
            progress.cursor = rows.last().map(|(row, _)| row.clone());
        }
        Ok(Step { examined: rows.len(), deleted })
    }

    async fn failed(&self, what: &str, error: &(dyn std::fmt::Display + Sync), pause: Duration) {
        metrics::counter!(ERRORS).increment(1);
        tracing::warn!(stage = self.stage, %error, retry_in_ms = pause.as_millis() as u64, "retention sweep: {what}");
        tokio::time::sleep(pause).await;
    }
}

/// This host's name, for the lock's owner (empty if unknown).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|name| name.trim().to_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_may_wrap_midnight_and_be_always() {
        let at = |hour: i64| hour * 3_600_000 + 1;
        let config = |hours| SweepConfig { hours, ..SweepConfig::default() };
        assert!(config([2, 6]).open_at(at(2)) && !config([2, 6]).open_at(at(6)) && !config([2, 6]).open_at(at(1)));
        assert!(config([22, 4]).open_at(at(23)) && config([22, 4]).open_at(at(3)) && !config([22, 4]).open_at(at(12)));
        assert!((0..24).all(|hour| config([0, 24]).open_at(at(hour))));
    }

    #[test]
    fn bad_settings_are_named() {
        let problems = SweepConfig { hours: [5, 5], step_rows: 0, rows_per_second: 10, lock_ttl_s: 1, ..SweepConfig::default() }.check();
        for field in ["hours", "step_rows", "lock_ttl_s"] {
            assert!(problems.iter().any(|problem| problem.contains(field)), "{field}: {problems:?}");
        }
        assert!(SweepConfig::default().check().is_empty());
    }
}
