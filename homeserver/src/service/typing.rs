//! Typing notifications: who is typing in which room, kept in memory (they are ephemeral and
//! meaningless after a restart), with a serial number that `/sync` tokens carry so clients
//! learn of changes, and a watch channel that wakes long polls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ruma::{RoomId, UserId};
use tokio::sync::watch;

/// Longest typing timeout we honour; clients renew while the user keeps typing.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Room {
    /// Serial of the last change in this room.
    changed: u64,
    /// Typing users and when their notice expires.
    users: HashMap<String, Instant>,
}

/// The typing state of every room.
pub struct Typing {
    rooms: Mutex<HashMap<String, Room>>,
    serial: watch::Sender<u64>,
}

impl Default for Typing {
    fn default() -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            serial: watch::channel(0).0,
        }
    }
}

impl Typing {
    /// The current serial (part of sync tokens).
    pub fn serial(&self) -> u64 {
        *self.serial.borrow()
    }

    /// A receiver that changes with every typing change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.serial.subscribe()
    }

    fn bump(&self, room: &mut Room) {
        let next = self.serial() + 1;
        room.changed = next;
        self.serial.send_replace(next);
    }

    /// Starts or stops `user` typing in `room`; returns whether anything changed.
    pub fn set(&self, room_id: &RoomId, user_id: &UserId, typing: bool, timeout: Duration) -> bool {
        let Ok(mut rooms) = self.rooms.lock() else {
            return false;
        };
        let room = rooms.entry(room_id.to_string()).or_default();
        let changed = if typing {
            room.users
                .insert(
                    user_id.to_string(),
                    Instant::now() + timeout.min(MAX_TIMEOUT),
                )
                .is_none()
        } else {
            room.users.remove(user_id.as_str()).is_some()
        };
        if changed {
            self.bump(room);
        }
        changed
    }

    /// Drops expired notices (called every second by a worker); returns the rooms that
    /// changed, each with who is still typing there.
    pub fn expire(&self) -> Vec<(String, Vec<String>)> {
        let now = Instant::now();
        let Ok(mut rooms) = self.rooms.lock() else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        for (id, room) in rooms.iter_mut() {
            let before = room.users.len();
            room.users.retain(|_, until| *until > now);
            if room.users.len() != before {
                let mut users: Vec<String> = room.users.keys().cloned().collect();
                users.sort();
                changed.push((id.clone(), users));
            }
        }
        for (id, _) in &changed {
            if let Some(room) = rooms.get_mut(id) {
                self.bump(room);
            }
        }
        rooms.retain(|_, room| !room.users.is_empty() || room.changed + 10_000 > self.serial());
        changed
    }

    /// Every room whose typing changed after `since`, with who is typing there now.
    pub fn changes_since(&self, since: u64) -> HashMap<String, Vec<String>> {
        let Ok(rooms) = self.rooms.lock() else {
            return HashMap::new();
        };
        rooms
            .iter()
            .filter(|(_, room)| room.changed > since)
            .map(|(id, room)| {
                let mut users: Vec<String> = room.users.keys().cloned().collect();
                users.sort();
                (id.clone(), users)
            })
            .collect()
    }

    /// The users typing in `room_id` if it changed after `since` (`None`: unchanged).
    pub fn changed_since(&self, room_id: &RoomId, since: u64) -> Option<Vec<String>> {
        let rooms = self.rooms.lock().ok()?;
        let room = rooms.get(room_id.as_str())?;
        (room.changed > since).then(|| {
            let mut users: Vec<String> = room.users.keys().cloned().collect();
            users.sort();
            users
        })
    }
}

/// Expires typing notices (the worker calls it every second) and tells the appservices that
/// receive ephemeral data who still types in each room that changed.
pub async fn expire(server: &super::Server) {
    let changed = server.typing.expire();
    if !changed.is_empty() {
        super::appservice::ephemeral::typing_changed(server, changed).await;
    }
}

/// Sets `user`'s typing state in `room` (they must be joined), telling the room's other units
/// when it changed.
pub async fn set_typing(
    server: &super::Server,
    room: &ruma::RoomId,
    user: &ruma::UserId,
    typing: bool,
    timeout: Duration,
) -> crate::error::Result<()> {
    use super::membership::{self, Membership};
    let (key, me) = (room.to_string(), user.to_string());
    let joined = server
        .store
        .read(move |conn| Ok(membership::current(conn, &key, &me)? == Some(Membership::Join)))
        .await?;
    if !joined {
        return Err(crate::error::Error::forbidden(
            "You are not joined to this room",
        ));
    }
    if server.typing.set(room, user, typing, timeout) {
        // Tell the room's other units (spec: the `m.typing` EDU), and the appservices that
        // receive ephemeral data (who types there now).
        let receivers = super::appservice::ephemeral::receivers(&server.appservices.all());
        let for_appservices = super::appservice::ephemeral::typing_event(
            room.as_str(),
            &server.typing.changed_since(room, 0).unwrap_or_default(),
        );
        let any_receiver = !receivers.is_empty();
        let own = server.server_name().to_string();
        let (room, edu) = (
            room.to_string(),
            serde_json::json!({
                "edu_type": "m.typing",
                "content": {"room_id": room, "user_id": user, "typing": typing},
            })
            .to_string(),
        );
        server
            .store
            .write(move |tx| {
                super::appservice::ephemeral::room_edu_in_tx(
                    tx,
                    &receivers,
                    &own,
                    &room,
                    &for_appservices,
                )?;
                crate::store::outbox::enqueue_edu_for_room(
                    tx,
                    &own,
                    &room,
                    &edu,
                    crate::util::now_ms(),
                )
            })
            .await?;
        if any_receiver {
            server.appservice_kicker.kick();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ruma::{room_id, user_id};

    use super::*;

    #[test]
    fn typing_changes_are_seen_once_per_serial() {
        let typing = Typing::default();
        assert!(typing.set(
            room_id!("!r:x"),
            user_id!("@a:x"),
            true,
            Duration::from_secs(30)
        ));
        assert!(
            !typing.set(
                room_id!("!r:x"),
                user_id!("@a:x"),
                true,
                Duration::from_secs(30)
            ),
            "renewal is not a change"
        );
        assert_eq!(
            typing.changed_since(room_id!("!r:x"), 0),
            Some(vec!["@a:x".to_owned()])
        );
        let seen = typing.serial();
        assert_eq!(typing.changed_since(room_id!("!r:x"), seen), None);
        typing.set(room_id!("!r:x"), user_id!("@a:x"), false, Duration::ZERO);
        assert_eq!(typing.changed_since(room_id!("!r:x"), seen), Some(vec![]));
    }

    #[test]
    fn expired_notices_disappear() {
        let typing = Typing::default();
        typing.set(room_id!("!r:x"), user_id!("@a:x"), true, Duration::ZERO);
        let seen = typing.serial();
        typing.expire();
        assert_eq!(typing.changed_since(room_id!("!r:x"), seen), Some(vec![]));
    }
}
