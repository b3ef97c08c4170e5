//! Capped exponential backoff with full jitter: the one way histflow waits
//! between attempts at a backend call that may succeed later (a table
//! write, a Redis read, a topic creation, a message delivery). The caller
//! keeps its work while it waits and reads nothing new, so a slow backend
//! pushes back on the pipeline instead of losing anything. Each pause is
//! drawn at random below a ceiling that doubles, so instances that lost a
//! backend together do not retry it in lockstep when it comes back.

use std::future::Future;
use std::time::Duration;

/// The ceiling of the first pause after a failure.
pub const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The highest ceiling of a pause between two attempts.
pub const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Pauses between attempts: each drawn uniformly from zero to a ceiling
/// that doubles from [`FIRST_PAUSE`] up to [`MAX_PAUSE`] ("full jitter").
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The ceiling of the pause after the next one.
    ceiling: Duration,
    /// The pause the next [`Backoff::wait`] takes.
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { ceiling: FIRST_PAUSE, next: jittered(FIRST_PAUSE) }
    }
}

/// A pause drawn uniformly from zero to `ceiling`, at millisecond steps.
fn jittered(ceiling: Duration) -> Duration {
    Duration::from_millis(fastrand::u64(0..=ceiling.as_millis() as u64))
}

impl Backoff {
    /// The pause the next [`Backoff::wait`] takes.
    pub fn next_pause(&self) -> Duration {
        self.next
    }

    /// The ceiling the next pause was drawn under.
    pub fn ceiling(&self) -> Duration {
        self.ceiling
    }

    /// Sleeps the next pause, then doubles the ceiling (up to
    /// [`MAX_PAUSE`]) and draws the pause after it.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.ceiling = (self.ceiling * 2).min(MAX_PAUSE);
        self.next = jittered(self.ceiling);
    }
}

/// Runs `attempt` until it succeeds. After each failure `on_retry` gets the
/// error and the pause about to be taken (to log and count it).
pub async fn until_ok<T, E, Fut>(mut attempt: impl FnMut() -> Fut, mut on_retry: impl FnMut(&E, Duration)) -> T
where
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::default();
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(error) => {
                on_retry(&error, backoff.next_pause());
                backoff.wait().await;
            }
        }
    }
}

/// As [`until_ok`], but an error for which `is_final` holds (one no retry
/// can mend, such as a write the store refuses) ends the attempts and is
/// returned.
pub async fn until_ok_or_final<T, E, Fut>(
    mut attempt: impl FnMut() -> Fut,
    is_final: impl Fn(&E) -> bool,
    on_retry: impl FnMut(&E, Duration),
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    let is_final = &is_final;
    until_ok(
        || {
            let outcome = attempt();
            async move {
                match outcome.await {
                    Ok(value) => Ok(Ok(value)),
                    Err(error) if is_final(&error) => Ok(Err(error)),
                    Err(error) => Err(error),
                }
            }
        },
        on_retry,
    )
    .await
}

/// As [`until_ok`], but at most `attempts` attempts (at least one): the
/// last one's error is returned. For calls that must answer within a
/// request, such as a read.
pub async fn at_most<T, E, Fut>(attempts: u32, mut attempt: impl FnMut() -> Fut, on_retry: impl FnMut(&E, Duration)) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    // Atomic rather than a Cell: the future stays Send (axum's handlers).
    let made = std::sync::atomic::AtomicU32::new(0);
    until_ok_or_final(
        || {
            made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            attempt()
        },
        |_| made.load(std::sync::atomic::Ordering::Relaxed) >= attempts,
        on_retry,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn at_most_stops_after_its_attempts() {
        let mut calls = 0;
        let mut retried = 0;
        let failing: Result<(), u32> = at_most(
            3,
            || {
                calls += 1;
                std::future::ready(Err(calls))
            },
            |_, _| retried += 1,
        )
        .await;
        assert_eq!((failing, calls, retried), (Err(3), 3, 2));
        let mut calls = 0;
        let served: Result<u32, u32> = at_most(
            3,
            || {
                calls += 1;
                std::future::ready(if calls < 3 { Err(calls) } else { Ok(7) })
            },
            |_, _| {},
        )
        .await;
        assert_eq!(served, Ok(7));
    }

    #[tokio::test(start_paused = true)]
    async fn ceilings_double_up_to_the_cap_and_each_pause_is_drawn_below_its_own() {
        let mut backoff = Backoff::default();
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            assert!(backoff.next_pause() <= backoff.ceiling(), "{:?} above {:?}", backoff.next_pause(), backoff.ceiling());
            ceilings.push(backoff.ceiling().as_millis());
            backoff.wait().await;
        }
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    /// Instances that fail together do not retry together: twenty
    /// backoffs at the cap draw many different pauses, spread over it.
    #[test]
    fn pauses_at_the_cap_are_spread_not_in_lockstep() {
        let pauses: Vec<u64> =
            (0..20).map(|_| Backoff { ceiling: MAX_PAUSE, next: jittered(MAX_PAUSE) }.next_pause().as_millis() as u64).collect();
        let distinct: std::collections::BTreeSet<u64> = pauses.iter().copied().collect();
        assert!(distinct.len() >= 15, "{pauses:?}");
        let (low, high) = (pauses.iter().min().copied().unwrap_or(0), pauses.iter().max().copied().unwrap_or(0));
        assert!(high - low >= 1_000, "pauses bunched within a second: {pauses:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_ok_and_stops_on_a_final_error() {
        let mut calls = 0;
        let mut seen = Vec::new();
        let value: u32 = until_ok(
            || {
                calls += 1;
                let outcome = if calls < 3 { Err(calls) } else { Ok(7) };
                async move { outcome }
            },
            |error: &u32, pause| seen.push((*error, pause.as_millis())),
        )
        .await;
        assert_eq!((value, seen.iter().map(|(error, _)| *error).collect::<Vec<_>>()), (7, vec![1, 2]));
        assert!(seen[0].1 <= 100 && seen[1].1 <= 200, "{seen:?}");

        let mut calls = 0;
        let outcome: Result<(), &str> = until_ok_or_final(
            || {
                calls += 1;
                let outcome = if calls < 2 { Err("transient") } else { Err("final") };
                async move { outcome }
            },
            |error| *error == "final",
            |_, _| {},
        )
        .await;
        assert_eq!((outcome, calls), (Err("final"), 2));
    }
}
