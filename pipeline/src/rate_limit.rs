//! Rate limits that delay and never drop (governor's GCRA).
//!
//! The limiter reads time from tokio's clock, so `tokio::time::pause()`
//! drives it in tests, and it waits with `tokio::time::sleep` rather than
//! governor's own timer.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::topology::RateLimitSpec;

/// governor clock backed by `tokio::time::Instant`, which honours
/// `tokio::time::pause()`; instants are durations since the limiter's birth.
#[derive(Debug, Clone)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock { origin: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A direct (unkeyed) limiter of events per second with a burst.
#[derive(Debug)]
pub struct RateLimit {
    limiter: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>,
    clock: TokioClock,
    burst: NonZeroU32,
}

impl RateLimit {
    /// A limiter for `spec`; zero rates are refused by validation, and are
    /// treated as 1 here so this never panics.
    pub fn new(spec: &RateLimitSpec) -> Self {
        let per_second = NonZeroU32::new(spec.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(spec.burst_or_default()).unwrap_or(NonZeroU32::MIN);
        let clock = TokioClock::default();
        let quota = Quota::per_second(per_second).allow_burst(burst);
        RateLimit { limiter: RateLimiter::direct_with_clock(quota, clock.clone()), clock, burst }
    }

    /// The largest number of events one [`RateLimit::take`] may ask for.
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// Waits until `events` (at most [`RateLimit::burst`]; more is clamped)
    /// may pass, then charges them. Cancel-safe: nothing is charged unless
    /// it returns. Returns the time spent waiting.
    pub async fn take(&self, events: u32) -> Duration {
        let Some(cells) = NonZeroU32::new(events.min(self.burst.get())) else {
            return Duration::ZERO;
        };
        let started = tokio::time::Instant::now();
        loop {
            match self.limiter.check_n(cells) {
                Ok(Ok(())) => return started.elapsed(),
                Ok(Err(not_until)) => tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await,
                // Unreachable: `cells` is clamped to the burst.
                Err(_) => return started.elapsed(),
            }
        }
    }

    /// Charges `events` now if they may pass; otherwise charges nothing and
    /// says how long until they could (for `Retry-After`). `None` when
    /// `events` exceeds the burst and can never pass at once.
    pub fn try_take(&self, events: u32) -> Result<(), Option<Duration>> {
        let Some(cells) = NonZeroU32::new(events) else {
            return Ok(());
        };
        match self.limiter.check_n(cells) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Some(not_until.wait_time_from(self.clock.now()))),
            Err(_) => Err(None),
        }
    }

    /// Waits until `events` may pass, in chunks of at most the burst.
    /// Returns the time spent waiting.
    pub async fn take_all(&self, mut events: usize) -> Duration {
        let mut waited = Duration::ZERO;
        while events > 0 {
            let chunk = events.min(self.burst.get() as usize);
            waited += self.take(chunk as u32).await;
            events -= chunk;
        }
        waited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_passes_at_once_then_paces() {
        let limit = RateLimit::new(&RateLimitSpec { per_second: 100, burst: Some(10) });
        let start = tokio::time::Instant::now();
        assert_eq!(limit.take(10).await, Duration::ZERO);
        // 90 more events at 100/s: 0.9 s of virtual time.
        limit.take_all(90).await;
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(890) && elapsed <= Duration::from_millis(910), "{elapsed:?}");
    }
}
