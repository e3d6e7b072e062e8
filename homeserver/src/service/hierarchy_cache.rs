//! The small in-memory cache of peers' space-hierarchy answers, shared by every client walk of
//! this unit (`service::federation::hierarchy` fills and reads it). It lives in the domain
//! layer because [`crate::service::Server`] holds it; it knows nothing of federation beyond the
//! shape of an answer.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a peer's answer is reused (spec: "Responses to this endpoint should be cached").
const ANSWER_TTL: Duration = Duration::from_secs(60);
/// How long a peer that could not be reached is not asked again.
const DOWN_TTL: Duration = Duration::from_secs(30);
/// Most answers kept; the oldest goes first.
const MAX_CACHED_ANSWERS: usize = 128;

/// A peer's checked answer to `hierarchy`.
#[derive(Clone)]
pub struct Answer {
    /// The peer that gave it (an answer is dropped once its peer leaves the allow-list).
    pub peer: String,
    /// The room's summary, checked.
    pub room: Value,
    /// Its children's summaries, checked.
    pub children: Vec<Value>,
    /// Children the peer cannot describe to us.
    pub inaccessible: Vec<String>,
}

/// Peers' recent `hierarchy` answers (a minute) and peers that just could not be reached (half
/// a minute), shared by every client walk of this unit. Small and in memory only.
#[derive(Default)]
pub struct Cache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    /// `(room ID, suggested_only)` → when fetched, and the answer.
    answers: HashMap<(String, bool), (Instant, Answer)>,
    /// Peer → when it last could not be reached.
    down: HashMap<String, Instant>,
}

impl Cache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // The map holds no invariant a panicking holder could break.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn answer(&self, room: &str, suggested_only: bool) -> Option<Answer> {
        let mut inner = self.lock();
        let key = (room.to_owned(), suggested_only);
        match inner.answers.get(&key) {
            Some((at, answer)) if at.elapsed() < ANSWER_TTL => Some(answer.clone()),
            Some(_) => {
                inner.answers.remove(&key);
                None
            }
            None => None,
        }
    }

    pub fn store(&self, room: &str, suggested_only: bool, answer: Answer) {
        let mut inner = self.lock();
        inner.answers.retain(|_, (at, _)| at.elapsed() < ANSWER_TTL);
        while inner.answers.len() >= MAX_CACHED_ANSWERS {
            let oldest = inner
                .answers
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(key, _)| key.clone());
            match oldest {
                Some(key) => inner.answers.remove(&key),
                None => break,
            };
        }
        inner
            .answers
            .insert((room.to_owned(), suggested_only), (Instant::now(), answer));
    }

    pub fn is_down(&self, peer: &str) -> bool {
        self.lock()
            .down
            .get(peer)
            .is_some_and(|at| at.elapsed() < DOWN_TTL)
    }

    pub fn mark_down(&self, peer: &str) {
        let mut inner = self.lock();
        inner.down.retain(|_, at| at.elapsed() < DOWN_TTL);
        inner.down.insert(peer.to_owned(), Instant::now());
    }
}
