//! Sliding sync connections: what each `(user, device, conn_id)` has been sent, keyed by the
//! `pos` tokens handed out.
//!
//! The state lives in memory only and is bounded: each connection keeps the state of the `pos`
//! it was last resumed from (a client may retry that request) and of the newest response,
//! nothing older; a device keeps at most [`MAX_PER_DEVICE`] connections and the server at most
//! [`MAX_CONNECTIONS`], the least recently used going first. A `pos` carries a nonce drawn at
//! start-up, so after a restart (or an eviction) every old `pos` is unknown and the client gets
//! `M_UNKNOWN_POS`, which MSC4186 defines as "start the connection afresh".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ruma::OwnedDeviceId;

use super::RoomConfig;
use crate::error::{Error, ErrorCode, Result};

/// Connections one device may hold (Element X uses two or three).
const MAX_PER_DEVICE: usize = 8;
/// Connections the whole server holds.
const MAX_CONNECTIONS: usize = 2048;

/// Identifies a connection: MSC4186 scopes `conn_id` to the user and device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// The user.
    pub user_id: String,
    /// Their device (`None`: an application service's request without one).
    pub device_id: Option<OwnedDeviceId>,
    /// The client's connection name (`""` when it sent none).
    pub conn_id: String,
}

/// What a connection had been sent as of one `pos`.
#[derive(Debug, Clone, Default)]
pub struct ConnState {
    /// The stream position everything up to which was considered.
    pub stream_pos: i64,
    /// The typing serial seen.
    pub typing: u64,
    /// Rooms sent on this connection and as of when.
    pub rooms: HashMap<String, SentRoom>,
    /// Each list's `count` sent (a change is news even when no room in a window changed).
    pub list_counts: HashMap<String, usize>,
}

/// One room as the connection last received it.
#[derive(Debug, Clone)]
pub struct SentRoom {
    /// Stream position the room's data was sent up to.
    pub upto: i64,
    /// The user's membership sent.
    pub membership: String,
    /// The room config in force when it was sent (to notice expansions).
    pub config: RoomConfig,
}

struct Conn {
    /// `(id, state)`: the state resumed from and the newest, at most two.
    states: Vec<(u64, Arc<ConnState>)>,
    last_used: Instant,
}

struct Inner {
    next_id: u64,
    conns: HashMap<ConnKey, Conn>,
}

/// Every live sliding sync connection of this process.
pub struct Connections {
    /// Drawn at start-up; a `pos` from another process run does not carry it.
    nonce: u64,
    inner: Mutex<Inner>,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            nonce: rand::random(),
            inner: Mutex::new(Inner {
                next_id: 1,
                conns: HashMap::new(),
            }),
        }
    }
}

fn unknown_pos() -> Error {
    Error::new(
        ErrorCode::UnknownPos,
        "Unknown position; start a new connection",
    )
}

impl Connections {
    /// The state a request resumes from: `(None, empty)` without a `pos`; `M_UNKNOWN_POS` for a
    /// `pos` this process did not hand to this connection, or has since dropped.
    pub fn resume(
        &self,
        key: &ConnKey,
        pos: Option<&str>,
    ) -> Result<(Option<u64>, Arc<ConnState>)> {
        let Some(pos) = pos else {
            return Ok((None, Arc::new(ConnState::default())));
        };
        let (nonce, id) = pos.split_once('-').ok_or_else(unknown_pos)?;
        let nonce = u64::from_str_radix(nonce, 16).map_err(|_| unknown_pos())?;
        let id: u64 = id.parse().map_err(|_| unknown_pos())?;
        if nonce != self.nonce {
            return Err(unknown_pos());
        }
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| Error::internal("sliding sync connections poisoned"))?;
        let conn = inner.conns.get_mut(key).ok_or_else(unknown_pos)?;
        conn.last_used = Instant::now();
        let state = conn
            .states
            .iter()
            .find(|(known, _)| *known == id)
            .map(|(_, state)| Arc::clone(state))
            .ok_or_else(unknown_pos)?;
        Ok((Some(id), state))
    }

    /// Records the state after a response and returns its `pos`. The state resumed from
    /// (`base`) stays, so a retry of the same request works; anything older goes.
    pub fn record(&self, key: &ConnKey, base: Option<u64>, state: ConnState) -> Result<String> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| Error::internal("sliding sync connections poisoned"))?;
        let id = inner.next_id;
        inner.next_id += 1;
        let now = Instant::now();
        let conn = inner.conns.entry(key.clone()).or_insert_with(|| Conn {
            states: Vec::new(),
            last_used: now,
        });
        conn.states
            .retain(|(known, _)| base.is_some_and(|base| base == *known));
        conn.states.push((id, Arc::new(state)));
        conn.last_used = now;
        evict(&mut inner.conns, key);
        Ok(format!("{:x}-{id}", self.nonce))
    }
}

/// Drops the least recently used connections beyond the per-device and global bounds, never
/// the one just used.
fn evict(conns: &mut HashMap<ConnKey, Conn>, keep: &ConnKey) {
    let same_device = |k: &ConnKey| k.user_id == keep.user_id && k.device_id == keep.device_id;
    while conns.keys().filter(|k| same_device(k)).count() > MAX_PER_DEVICE {
        let oldest = conns
            .iter()
            .filter(|(k, _)| same_device(k) && *k != keep)
            .min_by_key(|(_, c)| c.last_used)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => conns.remove(&k),
            None => break,
        };
    }
    while conns.len() > MAX_CONNECTIONS {
        let oldest = conns
            .iter()
            .filter(|(k, _)| *k != keep)
            .min_by_key(|(_, c)| c.last_used)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => conns.remove(&k),
            None => break,
        };
    }
}
