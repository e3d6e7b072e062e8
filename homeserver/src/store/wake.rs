//! Who each commit concerns, so a waiting `/sync` wakes only for a commit it could show.
//!
//! Every stream position is allocated with an [`Audience`]: the room whose members may see it,
//! the one user it is for, or (presence, device lists) everyone sharing a room with a user. The
//! writer collects the audiences of a batch into one [`Touched`] and publishes it in the
//! [`WakeLog`] with the batch's newest position, before it announces that position. A waiting
//! long-poll holds its [`Interest`] (its user and the rooms it is in) and, when the position
//! moves, asks the log whether anything committed since it last looked concerns it; only then
//! does it compute a response again.
//!
//! Before, every commit recomputed every waiting `/sync` and sliding sync: with 1,000 users
//! long-polling, each message cost 1,000 read transactions that found nothing. The log only
//! ever over-approximates: a position allocated for an audience it cannot resolve, or a wait
//! that fell behind the log's window, wakes the poller as before.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use ruma::events::TimelineEventType;
use rusqlite::{Connection, params};

use crate::error::Result;
use crate::matrix::pdu::Pdu;

/// Batches the log remembers. A poller that last looked further back than this recomputes (as
/// every poller did before the log); at hundreds of commits per second that is seconds of
/// history, far more than a woken poller needs to look.
const LOG_BATCHES: usize = 4096;

/// Whom a newly allocated stream position concerns.
#[derive(Clone, Copy, Debug)]
pub enum Audience<'a> {
    /// The members of a room, and those invited or knocking: a room event, a receipt.
    Room(&'a str),
    /// One user: their account data, push rules, to-device messages.
    User(&'a str),
    /// A room and a user who may not be in it yet: a membership event, whose target sees
    /// an invite, a knock or a leave while outside the room.
    Member {
        /// The room.
        room: &'a str,
        /// The membership event's target (its state key).
        user: &'a str,
    },
    /// A user and everyone sharing a joined room with them: their presence, their device list
    /// and cross-signing keys.
    PeersOf(&'a str),
}

impl<'a> Audience<'a> {
    /// Who sees an event: its room, and for a membership event also its target.
    pub fn of_event(pdu: &'a Pdu) -> Self {
        match &pdu.state_key {
            Some(user) if pdu.kind == TimelineEventType::RoomMember => Audience::Member {
                room: pdu.room_id.as_str(),
                user,
            },
            _ => Audience::Room(pdu.room_id.as_str()),
        }
    }
}

/// What one write batch touched: the rooms and users whose pollers must look again.
#[derive(Debug, Default)]
pub struct Touched {
    rooms: HashSet<Box<str>>,
    users: HashSet<Box<str>>,
    /// A position whose audience could not be resolved: every poller looks again.
    everyone: bool,
}

impl Touched {
    /// Adds one position's audience; `conn` resolves [`Audience::PeersOf`] inside the writing
    /// transaction (the rooms the user is joined to as the batch writes).
    pub(super) fn add(&mut self, conn: &Connection, audience: Audience<'_>) {
        match audience {
            Audience::Room(room) => self.add_room(room),
            Audience::User(user) => self.add_user(user),
            Audience::Member { room, user } => {
                self.add_room(room);
                self.add_user(user);
            }
            Audience::PeersOf(user) => {
                self.add_user(user);
                match joined_rooms(conn, user) {
                    Ok(rooms) => self
                        .rooms
                        .extend(rooms.into_iter().map(String::into_boxed_str)),
                    Err(err) => {
                        tracing::warn!(error = %err, user, "could not read the rooms of a user; waking every /sync");
                        self.everyone = true;
                    }
                }
            }
        }
    }

    fn add_room(&mut self, room: &str) {
        if !self.rooms.contains(room) {
            self.rooms.insert(room.into());
        }
    }

    fn add_user(&mut self, user: &str) {
        if !self.users.contains(user) {
            self.users.insert(user.into());
        }
    }

    fn concerns(&self, interest: &Interest) -> bool {
        self.everyone
            || self.users.contains(interest.user.as_str())
            || self
                .rooms
                .iter()
                .any(|room| interest.rooms.contains(&**room))
    }
}

/// What a waiting poller can show: its user's own streams and the rooms it is in.
#[derive(Clone, Debug, Default)]
pub struct Interest {
    user: String,
    rooms: HashSet<String>,
}

impl Interest {
    /// Reads `user`'s interest: the rooms where they are joined, invited or knocking. A room
    /// they enter or leave later is announced to them as a [`Audience::Member`] position.
    pub fn of(conn: &Connection, user: &str) -> Result<Self> {
        let mut stmt = conn.prepare_cached(
            "SELECT room_id FROM current_state WHERE event_type = 'm.room.member'
             AND state_key = ?1 AND membership IN ('join', 'invite', 'knock')",
        )?;
        let rooms = stmt
            .query_map(params![user], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Self {
            user: user.to_owned(),
            rooms,
        })
    }

    /// Whether `room` is one of the rooms the poller is in (typing notices are per room).
    pub fn has_room(&self, room: &str) -> bool {
        self.rooms.contains(room)
    }
}

/// The rooms `user` is joined to.
fn joined_rooms(conn: &Connection, user: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT room_id FROM current_state WHERE event_type = 'm.room.member'
         AND state_key = ?1 AND membership = 'join'",
    )?;
    let rows = stmt.query_map(params![user], |r| r.get(0))?;
    rows.collect()
}

/// The recent batches' [`Touched`], by the newest position each committed.
#[derive(Debug, Default)]
pub struct WakeLog {
    batches: Mutex<VecDeque<(i64, Touched)>>,
}

impl WakeLog {
    /// Records a committed batch whose newest position is `upto`. Called by the writer before
    /// it announces `upto`, so a poller woken by the announcement finds the batch here.
    pub(super) fn publish(&self, upto: i64, touched: Touched) {
        let mut batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        if batches.len() == LOG_BATCHES {
            batches.pop_front();
        }
        batches.push_back((upto, touched));
    }

    /// Whether anything committed in `(after, upto]` may concern `interest`. True when the log
    /// no longer reaches back to `after`: a poller that cannot tell looks again.
    pub fn concerns(&self, after: i64, upto: i64, interest: &Interest) -> bool {
        if upto <= after {
            return false;
        }
        let batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        // Batch ends are the positions announced: the log can judge `(after, upto]` when it
        // holds the batch ending at `after` (or an older one) and the one ending at `upto`.
        match (batches.front(), batches.back()) {
            (Some(&(oldest, _)), Some(&(newest, _))) if oldest <= after && newest >= upto => {}
            _ => return true,
        }
        batches
            .iter()
            .rev()
            .skip_while(|(end, _)| *end > upto)
            .take_while(|(end, _)| *end > after)
            .any(|(_, touched)| touched.concerns(interest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touched(rooms: &[&str], users: &[&str]) -> Touched {
        Touched {
            rooms: rooms.iter().map(|r| (*r).into()).collect(),
            users: users.iter().map(|u| (*u).into()).collect(),
            everyone: false,
        }
    }

    fn interest(user: &str, rooms: &[&str]) -> Interest {
        Interest {
            user: user.to_owned(),
            rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn a_poller_wakes_for_its_rooms_and_itself_only() {
        let log = WakeLog::default();
        log.publish(10, Touched::default());
        log.publish(12, touched(&["!other"], &["@bob"]));
        log.publish(13, touched(&["!mine"], &[]));
        log.publish(15, touched(&[], &["@me"]));
        let me = interest("@me", &["!mine"]);
        assert!(!log.concerns(10, 12, &me), "another room and another user");
        assert!(log.concerns(10, 13, &me), "a room it is in");
        assert!(!log.concerns(13, 13, &me), "nothing new");
        assert!(log.concerns(13, 15, &me), "its own user");
    }

    #[test]
    fn a_poller_behind_the_log_or_ahead_of_it_looks_again() {
        let log = WakeLog::default();
        for end in 1..=(LOG_BATCHES as i64 + 10) {
            log.publish(end, Touched::default());
        }
        let me = interest("@me", &[]);
        assert!(log.concerns(3, 20, &me), "the batches after 3 are gone");
        assert!(!log.concerns(100, 200, &me));
        // A position announced but not (yet) in the log cannot be judged.
        assert!(log.concerns(LOG_BATCHES as i64 + 10, LOG_BATCHES as i64 + 11, &me));
    }

    #[test]
    fn an_unresolved_audience_wakes_everyone() {
        let log = WakeLog::default();
        log.publish(1, Touched::default());
        log.publish(
            2,
            Touched {
                everyone: true,
                ..Touched::default()
            },
        );
        assert!(log.concerns(1, 2, &interest("@anyone", &[])));
    }
}
