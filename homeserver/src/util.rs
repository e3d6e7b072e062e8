//! Small helpers with no better home: random identifiers and the wall clock.

use rand::Rng;
use rand::distributions::Alphanumeric;

/// A random alphanumeric string, for device IDs, room IDs, session IDs and tokens.
pub fn random_string(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
