//! The clock behind a trait, so time-based rules (presence idle, UIA session expiry, the login
//! back-off, delayed events falling due) are unit-tested with a [`FakeClock`] instead of by
//! sleeping.
//!
//! Production passes [`SystemClock`] everywhere (one `Arc<dyn Clock>` on the
//! [`Server`](crate::service::Server)); only unit tests make a [`FakeClock`]. Modules that keep
//! state in memory (UIA sessions, the login throttle) hold the clock they were built with;
//! service functions read `server.clock`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where "now" comes from.
pub trait Clock: Send + Sync {
    /// A monotonic instant, for in-memory expiries (it never goes back when the wall clock
    /// is stepped).
    fn now(&self) -> Instant;
    /// Wall-clock milliseconds since the Unix epoch, for what is stored or sent to clients.
    fn now_ms(&self) -> i64;
}

/// The real clocks: [`Instant::now`] and the system time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn now_ms(&self) -> i64 {
        crate::util::now_ms()
    }
}

/// The clock production code uses.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A clock that moves only when told to ([`FakeClock::advance`]), for unit tests.
#[derive(Debug)]
pub struct FakeClock {
    start: Instant,
    start_ms: i64,
    elapsed_ms: AtomicU64,
}

impl FakeClock {
    /// A clock standing at wall time `start_ms`.
    pub fn at(start_ms: i64) -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            start_ms,
            elapsed_ms: AtomicU64::new(0),
        })
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.elapsed_ms.fetch_add(ms, Ordering::SeqCst);
    }

    fn elapsed(&self) -> u64 {
        self.elapsed_ms.load(Ordering::SeqCst)
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.start + Duration::from_millis(self.elapsed())
    }

    fn now_ms(&self) -> i64 {
        self.start_ms
            .saturating_add(i64::try_from(self.elapsed()).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_both_clocks_together_and_only_when_told() {
        let clock = FakeClock::at(1_000);
        let (instant, ms) = (clock.now(), clock.now_ms());
        assert_eq!((clock.now(), clock.now_ms()), (instant, ms));
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now_ms(), 2_500);
        assert_eq!(clock.now() - instant, Duration::from_millis(1_500));
    }
}
