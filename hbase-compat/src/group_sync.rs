//! Group commit of the store's journal sync: a write is acknowledged only
//! after an fsync that began after it was committed, but writes committed
//! while one sync runs share the next, so N concurrent writers cost about
//! one fsync, not N.

use std::sync::{Condvar, Mutex, PoisonError};

/// Commit tickets and how far the syncs have reached.
#[derive(Debug, Default)]
pub struct GroupSync {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Tickets handed out: one per committed write, in commit order.
    committed: u64,
    /// Every ticket up to this one is on disk.
    synced: u64,
    /// A sync is running.
    syncing: bool,
}

impl GroupSync {
    /// A ticket for a write just committed. Call it in commit order (under
    /// the lock that orders the commits).
    pub fn committed(&self) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.committed += 1;
        state.committed
    }

    /// Returns once `ticket` is on disk: joins the sync that starts next,
    /// or runs it (`sync` syncs everything committed before it starts). A
    /// failed sync is answered to the caller that ran it; the others wait
    /// for the next, which one of them runs.
    pub fn wait_durable<E>(&self, ticket: u64, sync: impl Fn() -> Result<(), E>) -> Result<(), E> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if state.synced >= ticket {
                return Ok(());
            }
            if state.syncing {
                state = self.done.wait(state).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Everything committed by now is covered by a sync starting now.
            let target = state.committed;
            state.syncing = true;
            drop(state);
            let outcome = sync();
            state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.syncing = false;
            if outcome.is_ok() {
                state.synced = state.synced.max(target);
            }
            self.done.notify_all();
            outcome?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_write_is_durable_only_after_a_sync_that_began_after_it_and_concurrent_writes_share_syncs() {
        let group = Arc::new(GroupSync::default());
        // What a sync makes durable: every write committed when it began.
        let written = Arc::new(AtomicU64::new(0));
        let on_disk = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let (group, written, on_disk, syncs) = (group.clone(), written.clone(), on_disk.clone(), syncs.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let ticket = {
                            written.fetch_add(1, Ordering::SeqCst);
                            group.committed()
                        };
                        group
                            .wait_durable(ticket, || {
                                let upto = written.load(Ordering::SeqCst);
                                syncs.fetch_add(1, Ordering::SeqCst);
                                std::thread::yield_now();
                                on_disk.fetch_max(upto, Ordering::SeqCst);
                                Ok::<(), ()>(())
                            })
                            .unwrap();
                        assert!(on_disk.load(Ordering::SeqCst) >= ticket, "acknowledged before it was on disk");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(on_disk.load(Ordering::SeqCst), 1600);
        assert!(syncs.load(Ordering::SeqCst) <= 1600, "never more syncs than writes");
    }

    #[test]
    fn a_failed_sync_fails_its_runner_and_a_later_one_serves_the_rest() {
        let group = GroupSync::default();
        let first = group.committed();
        assert_eq!(group.wait_durable(first, || Err("disk full")), Err("disk full"));
        let second = group.committed();
        assert_eq!(group.wait_durable(first, || Ok::<(), &str>(())), Ok(()));
        assert_eq!(group.wait_durable(second, || Err::<(), &str>("not called: already synced")), Ok(()));
    }
}
