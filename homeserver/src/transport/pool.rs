//! Idle HTTP/1.1 connections to peers, kept for reuse by the outbound federation client.
//!
//! A federation request on a fresh connection pays a TCP and a TLS handshake before its first
//! byte; over a slow closed link that is most of the latency of a small transaction. The pool
//! keeps a few idle connections per endpoint for a short while and hands them back out.
//!
//! A connection is reused only under the exact TLS configuration it was opened with (the same
//! `Arc`): when the allow-list is reloaded with a new card, connections authenticated against
//! the old CA or pin are never reused. Idle connections the peer has closed are dropped when
//! met; a request that fails on a reused connection before any answer is retried once on a
//! fresh one by the caller ([`Conn::reused`]). A [`Conn`] that is dropped instead of put back
//! (its answer was cut short, or the caller gave up) stops its connection task, so an
//! abandoned request never leaves a connection behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;

/// How long an idle connection is kept.
const IDLE_FOR: Duration = Duration::from_secs(30);
/// Most idle connections kept per endpoint (one transaction is in flight per peer, but
/// backfill, joins and media may run beside it).
const IDLE_PER_ENDPOINT: usize = 4;

/// The request sender of one HTTP/1.1 connection.
pub type Sender = SendRequest<Full<Bytes>>;

/// One open connection: its request sender and the task driving it.
pub struct Conn {
    /// Sends requests on the connection.
    pub sender: Sender,
    driver: tokio::task::AbortHandle,
    reused: bool,
}

impl Conn {
    /// A new connection driven by `driver`.
    pub fn new(sender: Sender, driver: tokio::task::AbortHandle) -> Self {
        Self {
            sender,
            driver,
            reused: false,
        }
    }

    /// Whether it came out of the pool: a failure on it before any answer may just mean the
    /// peer closed it while it was idle, and is worth one retry on a new connection.
    pub fn reused(&self) -> bool {
        self.reused
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

struct Idle {
    conn: Conn,
    tls: Arc<rustls::ClientConfig>,
    since: Instant,
}

/// Idle connections by endpoint (`host:port` as written on the card).
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<Idle>>>,
}

impl Pool {
    /// An idle connection to `endpoint` opened under `tls`, if one is still usable.
    pub fn take(&self, endpoint: &str, tls: &Arc<rustls::ClientConfig>) -> Option<Conn> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let list = idle.get_mut(endpoint)?;
        let now = Instant::now();
        list.retain(|c| {
            now.duration_since(c.since) < IDLE_FOR
                && !c.conn.sender.is_closed()
                && Arc::ptr_eq(&c.tls, tls)
        });
        // The most recently used first: the likeliest to still be open at the peer.
        let found = list.pop().map(|idle| {
            let mut conn = idle.conn;
            conn.reused = true;
            conn
        });
        if list.is_empty() {
            idle.remove(endpoint);
        }
        found
    }

    /// Returns a connection whose last answer was read to the end.
    pub fn put(&self, endpoint: &str, tls: &Arc<rustls::ClientConfig>, conn: Conn) {
        if conn.sender.is_closed() || !conn.sender.is_ready() {
            return;
        }
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Connections to endpoints no longer asked for (a peer removed, a card changed) go
        // when they expire, whichever endpoint is used next.
        let now = Instant::now();
        idle.retain(|_, list| {
            list.retain(|c| now.duration_since(c.since) < IDLE_FOR);
            !list.is_empty()
        });
        let list = idle.entry(endpoint.to_owned()).or_default();
        if list.len() >= IDLE_PER_ENDPOINT {
            list.remove(0);
        }
        list.push(Idle {
            conn,
            tls: Arc::clone(tls),
            since: Instant::now(),
        });
    }
}
