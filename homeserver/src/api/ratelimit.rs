//! Request rate limiting: a token bucket per access token (so per user session), or per client
//! IP address for unauthenticated requests. Over the limit → 429 `M_LIMIT_EXCEEDED` with
//! `retry_after_ms`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::RateLimitConfig;
use crate::error::Error;

/// Buckets kept before idle full ones are pruned.
const PRUNE_AT: usize = 10_000;

/// Who a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// An access token (hashed, never kept in clear).
    Token(Vec<u8>),
    /// A client address.
    Ip(IpAddr),
}

/// The limiter shared by all requests.
pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: Mutex<HashMap<Key, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter with the configured rate.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket or says how long to wait.
    pub fn check(&self, key: Key) -> Result<(), Error> {
        if !self.config.enabled {
            return Ok(());
        }
        let burst = f64::from(self.config.burst.max(1));
        let rate = self.config.per_second;
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() > PRUNE_AT {
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(key).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / rate * 1000.0).ceil() as u64;
            Err(Error::RateLimited {
                retry_after_ms: wait.max(1),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_limited() {
        let limiter = RateLimiter::new(RateLimitConfig {
            enabled: true,
            per_second: 1.0,
            burst: 3,
        });
        let key = || Key::Ip(IpAddr::from([127, 0, 0, 1]));
        for _ in 0..3 {
            assert!(limiter.check(key()).is_ok());
        }
        match limiter.check(key()) {
            Err(Error::RateLimited { retry_after_ms }) => {
                assert!(retry_after_ms > 0 && retry_after_ms <= 1000)
            }
            other => panic!("expected rate limit, got {other:?}"),
        }
    }
}
