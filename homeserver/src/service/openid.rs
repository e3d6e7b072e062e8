//! OpenID tokens (spec: "OpenID"): a client asks for a short-lived token that a third party (a
//! widget, a call service) presents back to the federation API's `userinfo` to learn which user
//! it is talking to, without ever seeing the user's access token.
//!
//! Tokens live in memory for an hour and only their SHA-256 hashes are kept; a restart forgets
//! them, and the third party asks the client for a new one, as it does when one expires.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ruma::UserId;

use crate::service::accounts::token_hash;
use crate::util::random_string;

/// How long a token is good for (the spec leaves it to the server; Synapse uses an hour).
pub const LIFETIME: Duration = Duration::from_secs(3600);

/// The live OpenID tokens, by hash.
#[derive(Default)]
pub struct Tokens {
    live: Mutex<HashMap<Vec<u8>, (String, Instant)>>,
}

impl Tokens {
    /// Issues a token for `user_id`; returns it (the only copy) for the client.
    pub fn issue(&self, user_id: &UserId) -> String {
        let token = random_string(32);
        let now = Instant::now();
        let mut live = self.lock();
        live.retain(|_, (_, expires)| *expires > now);
        live.insert(token_hash(&token), (user_id.to_string(), now + LIFETIME));
        token
    }

    /// The user a live token was issued to.
    pub fn user_of(&self, token: &str) -> Option<String> {
        let live = self.lock();
        live.get(&token_hash(token))
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(user, _)| user.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, (String, Instant)>> {
        // A panic while holding the lock leaves only a map of tokens, still consistent.
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
