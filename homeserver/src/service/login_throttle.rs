//! Password-guessing defence per account, independent of where the guesses come from.
//!
//! The per-IP rate limiter (`api/ratelimit.rs`) cannot stop guesses spread over many source
//! addresses. So each account (keyed by the user ID asked for, whether or not it exists, so a
//! 429 says nothing about which accounts exist) has:
//! - one password check at a time: a second concurrent attempt gets 429 instead of a hash;
//! - exponential back-off after failures: the first [`FREE_FAILURES`] are free, then each
//!   failure closes the account to password checks for [`BASE_DELAY`] doubled per further
//!   failure, up to [`MAX_DELAY`]. Every attempt in that window, right password or wrong, gets
//!   429 `M_LIMIT_EXCEEDED` with `retry_after_ms` and costs no hashing.
//!
//! Decision: the back-off follows *failed* attempts only. The real user is never locked out
//! for longer than [`MAX_DELAY`]: once the window has passed, the right password succeeds and
//! clears the account's failures. A guesser is held to one guess per window (at most one a
//! minute once the back-off is at its cap). Failures are forgotten [`FORGET_AFTER`] after the
//! last one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::error::Error;

/// Failed attempts allowed before the back-off starts (typos happen).
pub const FREE_FAILURES: u32 = 3;
/// The first back-off window.
pub const BASE_DELAY: Duration = Duration::from_secs(1);
/// The longest back-off window: the longest a real user can be kept out.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// Failures older than this (since the last one) no longer count.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Accounts tracked before stale entries are pruned.
const PRUNE_AT: usize = 10_000;
/// What a concurrent attempt on an account being checked is told to wait.
const BUSY_RETRY_MS: u64 = 200;

#[derive(Debug)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    closed_until: Option<Instant>,
    checking: bool,
}

/// Back-off state per account (in memory: a restart forgets it, which costs a guesser a
/// restart of the unit they cannot cause).
pub struct LoginThrottle {
    accounts: Mutex<HashMap<String, Entry>>,
    clock: Arc<dyn Clock>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(crate::clock::system())
    }
}

/// An admitted password check; report its outcome with [`Attempt::finish`]. Dropped without
/// an outcome (the request was cancelled), it counts as neither.
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    account: String,
    finished: bool,
}

impl LoginThrottle {
    /// An empty throttle reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            accounts: Mutex::default(),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.accounts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits one password check for `account`, or says how long to wait.
    pub fn begin(&self, account: &str) -> Result<Attempt<'_>, Error> {
        let now = self.clock.now();
        let mut accounts = self.lock();
        if accounts.len() >= PRUNE_AT {
            accounts.retain(|_, e| e.checking || now.duration_since(e.last_failure) < FORGET_AFTER);
        }
        let entry = accounts.entry(account.to_owned()).or_insert(Entry {
            failures: 0,
            last_failure: now,
            closed_until: None,
            checking: false,
        });
        if entry.failures > 0 && now.duration_since(entry.last_failure) >= FORGET_AFTER {
            entry.failures = 0;
            entry.closed_until = None;
        }
        if let Some(until) = entry.closed_until
            && until > now
        {
            let wait = until.duration_since(now).as_millis() as u64;
            return Err(Error::RateLimited {
                retry_after_ms: wait.max(1),
            });
        }
        if entry.checking {
            return Err(Error::RateLimited {
                retry_after_ms: BUSY_RETRY_MS,
            });
        }
        entry.checking = true;
        Ok(Attempt {
            throttle: self,
            account: account.to_owned(),
            finished: false,
        })
    }
}

impl Attempt<'_> {
    /// Records the check's outcome: success clears the account's failures, a wrong password
    /// extends its back-off.
    pub fn finish(mut self, password_ok: bool) {
        self.finished = true;
        let now = self.throttle.clock.now();
        let mut accounts = self.throttle.lock();
        if password_ok {
            accounts.remove(&self.account);
            return;
        }
        if let Some(entry) = accounts.get_mut(&self.account) {
            entry.checking = false;
            entry.failures = entry.failures.saturating_add(1);
            entry.last_failure = now;
            if entry.failures > FREE_FAILURES {
                let doublings = (entry.failures - FREE_FAILURES - 1).min(16);
                let delay = BASE_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY);
                entry.closed_until = Some(now + delay);
            }
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(entry) = self.throttle.lock().get_mut(&self.account) {
            entry.checking = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    fn retry(result: Result<Attempt<'_>, Error>) -> Option<u64> {
        match result {
            Err(Error::RateLimited { retry_after_ms }) => Some(retry_after_ms),
            Err(other) => panic!("unexpected {other:?}"),
            Ok(attempt) => {
                drop(attempt);
                None
            }
        }
    }

    #[test]
    fn backs_off_after_free_failures_and_success_clears() {
        let throttle = LoginThrottle::default();
        for _ in 0..FREE_FAILURES {
            throttle.begin("@a:x").expect("free failure").finish(false);
        }
        // One more failure closes the account for BASE_DELAY.
        throttle
            .begin("@a:x")
            .expect("fourth attempt")
            .finish(false);
        let wait = retry(throttle.begin("@a:x")).expect("closed");
        assert!(wait <= BASE_DELAY.as_millis() as u64, "{wait}");
        // Other accounts are unaffected.
        throttle
            .begin("@b:x")
            .expect("another account")
            .finish(true);
    }

    #[test]
    fn the_window_opens_exactly_at_its_end_and_doubles_up_to_the_cap() {
        let clock = FakeClock::at(0);
        let throttle = LoginThrottle::new(clock.clone());
        for _ in 0..=FREE_FAILURES {
            throttle.begin("@a:x").expect("open").finish(false);
        }
        assert_eq!(
            retry(throttle.begin("@a:x")),
            Some(BASE_DELAY.as_millis() as u64)
        );
        clock.advance(BASE_DELAY - Duration::from_millis(1));
        assert_eq!(
            retry(throttle.begin("@a:x")),
            Some(1),
            "1 ms before the end"
        );
        clock.advance(Duration::from_millis(1));
        throttle
            .begin("@a:x")
            .expect("open at the end")
            .finish(false);
        assert_eq!(
            retry(throttle.begin("@a:x")),
            Some(2 * BASE_DELAY.as_millis() as u64),
            "the next window is twice as long"
        );
        for _ in 0..20 {
            clock.advance(MAX_DELAY);
            throttle
                .begin("@a:x")
                .expect("open after the window")
                .finish(false);
        }
        assert_eq!(
            retry(throttle.begin("@a:x")),
            Some(MAX_DELAY.as_millis() as u64),
            "never longer than the cap"
        );
    }

    #[test]
    fn failures_are_forgotten_after_a_quiet_period() {
        let clock = FakeClock::at(0);
        let throttle = LoginThrottle::new(clock.clone());
        for _ in 0..=FREE_FAILURES {
            throttle.begin("@a:x").expect("open").finish(false);
        }
        clock.advance(FORGET_AFTER - Duration::from_millis(1));
        // Still remembered: one more failure closes the account again.
        throttle.begin("@a:x").expect("window over").finish(false);
        assert!(retry(throttle.begin("@a:x")).is_some());
        clock.advance(FORGET_AFTER);
        // Forgotten: the free failures are free again.
        for _ in 0..FREE_FAILURES {
            throttle.begin("@a:x").expect("free again").finish(false);
        }
        assert_eq!(retry(throttle.begin("@a:x")), None);
    }

    #[test]
    fn one_check_at_a_time() {
        let throttle = LoginThrottle::default();
        let first = throttle.begin("@a:x").expect("first");
        assert_eq!(retry(throttle.begin("@a:x")), Some(BUSY_RETRY_MS));
        first.finish(true);
        assert_eq!(retry(throttle.begin("@a:x")), None);
    }
}
