//! Storage of delayed events (MSC4140): what a user scheduled, when it is due, and how it ended.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// Where a delayed event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting for its time.
    Scheduled,
    /// Sent into the room (`event_id` set).
    Sent,
    /// Cancelled by its owner.
    Cancelled,
    /// Could not be sent at its time (`error` set); it will not be tried again.
    Failed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Sent => "sent",
            Status::Cancelled => "cancelled",
            Status::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Status {
        match text {
            "sent" => Status::Sent,
            "cancelled" => Status::Cancelled,
            "failed" => Status::Failed,
            _ => Status::Scheduled,
        }
    }
}

/// One delayed event as stored.
#[derive(Debug, Clone)]
pub struct DelayedEvent {
    /// The opaque ID handed to the client.
    pub delay_id: String,
    /// Who scheduled it (and on whose behalf it is sent).
    pub user_id: String,
    /// The room it goes into.
    pub room_id: String,
    /// Its event type.
    pub event_type: String,
    /// Its state key; `None` for a message-like event.
    pub state_key: Option<String>,
    /// Its content, JSON text, exactly as the client sent it.
    pub content: String,
    /// The delay the client asked for (ms).
    pub delay_ms: i64,
    /// When it was scheduled or last restarted (ms since the epoch).
    pub scheduled_at: i64,
    /// Where it stands.
    pub status: Status,
    /// The event ID, once sent.
    pub event_id: Option<String>,
    /// The standard error response (JSON text) of a send that failed.
    pub error: Option<String>,
    /// When it was sent, cancelled or failed (ms).
    pub finalised_ts: Option<i64>,
}

impl DelayedEvent {
    /// When it is due (ms since the epoch).
    pub fn due_at(&self) -> i64 {
        self.scheduled_at.saturating_add(self.delay_ms)
    }
}

const COLUMNS: &str = "delay_id, user_id, room_id, event_type, state_key, content, delay_ms, \
                       scheduled_at, status, event_id, error, finalised_ts";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DelayedEvent> {
    Ok(DelayedEvent {
        delay_id: r.get(0)?,
        user_id: r.get(1)?,
        room_id: r.get(2)?,
        event_type: r.get(3)?,
        state_key: r.get(4)?,
        content: r.get(5)?,
        delay_ms: r.get(6)?,
        scheduled_at: r.get(7)?,
        status: Status::parse(&r.get::<_, String>(8)?),
        event_id: r.get(9)?,
        error: r.get(10)?,
        finalised_ts: r.get(11)?,
    })
}

/// Stores a newly scheduled event; `txn_id` makes a retried request find the first one.
pub fn insert(
    conn: &Connection,
    event: &DelayedEvent,
    device_id: &str,
    txn_id: Option<&str>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO delayed_events (delay_id, user_id, device_id, txn_id, room_id, event_type,
         state_key, content, delay_ms, scheduled_at, status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'scheduled')",
    )?
    .execute(params![
        event.delay_id,
        event.user_id,
        device_id,
        txn_id,
        event.room_id,
        event.event_type,
        event.state_key,
        event.content,
        event.delay_ms,
        event.scheduled_at
    ])?;
    Ok(())
}

/// The delay ID an earlier request with the same transaction ID got.
pub fn for_txn(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
    txn_id: &str,
) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT delay_id FROM delayed_events
             WHERE user_id = ?1 AND device_id = ?2 AND txn_id = ?3",
        )?
        .query_row(params![user_id, device_id, txn_id], |r| r.get(0))
        .optional()?)
}

/// One delayed event by ID, whoever owns it.
pub fn get(conn: &Connection, delay_id: &str) -> Result<Option<DelayedEvent>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM delayed_events WHERE delay_id = ?1"
        ))?
        .query_row(params![delay_id], row)
        .optional()?)
}

/// A user's scheduled events, soonest due first.
pub fn scheduled_for_user(conn: &Connection, user_id: &str) -> Result<Vec<DelayedEvent>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM delayed_events WHERE user_id = ?1 AND status = 'scheduled'
         ORDER BY scheduled_at + delay_ms, delay_id"
    ))?;
    let rows = stmt.query_map(params![user_id], row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A user's scheduled events, counted.
#[derive(Debug, Clone, Copy)]
pub struct ScheduledCount {
    /// How many are scheduled.
    pub count: u64,
    /// When the soonest is due (ms since the epoch); `None` when there are none.
    pub soonest_due: Option<i64>,
}

/// How many events a user has scheduled, and when the soonest is due.
pub fn count_scheduled(conn: &Connection, user_id: &str) -> Result<ScheduledCount> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*), min(scheduled_at + delay_ms) FROM delayed_events
             WHERE user_id = ?1 AND status = 'scheduled'",
        )?
        .query_row(params![user_id], |r| {
            Ok(ScheduledCount {
                count: r.get(0)?,
                soonest_due: r.get(1)?,
            })
        })?)
}

/// When the soonest scheduled event of anyone is due.
pub fn next_due(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT min(scheduled_at + delay_ms) FROM delayed_events WHERE status = 'scheduled'",
        )?
        .query_row([], |r| r.get(0))?)
}

/// Scheduled events due at `now`, soonest first (the MSC's order after a restart).
pub fn due(conn: &Connection, now: i64, limit: i64) -> Result<Vec<DelayedEvent>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM delayed_events
         WHERE status = 'scheduled' AND scheduled_at + delay_ms <= ?1
         ORDER BY scheduled_at + delay_ms, delay_id LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![now, limit], row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Restarts a scheduled event's timer; `false` when it is not scheduled (any more).
pub fn restart(conn: &Connection, delay_id: &str, now: i64) -> Result<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE delayed_events SET scheduled_at = ?2
             WHERE delay_id = ?1 AND status = 'scheduled'",
        )?
        .execute(params![delay_id, now])?;
    Ok(changed == 1)
}

/// Finalises a scheduled event; `false` when it was not scheduled (any more), so two racing
/// finalisations (a cancel and the timer) cannot both win.
pub fn finalise(
    conn: &Connection,
    delay_id: &str,
    status: Status,
    event_id: Option<&str>,
    error: Option<&str>,
    now: i64,
) -> Result<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE delayed_events SET status = ?2, event_id = ?3, error = ?4, finalised_ts = ?5
             WHERE delay_id = ?1 AND status = 'scheduled'",
        )?
        .execute(params![delay_id, status.as_str(), event_id, error, now])?;
    Ok(changed == 1)
}

/// The delay ID an event was sent from, for its sender's `unsigned` block.
pub fn delay_id_of_event(conn: &Connection, event_id: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT delay_id FROM delayed_events WHERE event_id = ?1")?
        .query_row(params![event_id], |r| r.get(0))
        .optional()?)
}

/// Forgets finalised events older than `before` (ms).
pub fn prune_finalised(conn: &Connection, before: i64) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM delayed_events WHERE status != 'scheduled' AND finalised_ts < ?1",
        )?
        .execute(params![before])?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::{Clock, FakeClock};

    fn scheduled(delay_id: &str, scheduled_at: i64, delay_ms: i64) -> DelayedEvent {
        DelayedEvent {
            delay_id: delay_id.to_owned(),
            user_id: "@a:unit.test".to_owned(),
            room_id: "!r:unit.test".to_owned(),
            event_type: "m.room.message".to_owned(),
            state_key: None,
            content: "{}".to_owned(),
            delay_ms,
            scheduled_at,
            status: Status::Scheduled,
            event_id: None,
            error: None,
            finalised_ts: None,
        }
    }

    fn due_ids(conn: &Connection, clock: &FakeClock) -> Vec<String> {
        due(conn, clock.now_ms(), 10)
            .expect("due")
            .into_iter()
            .map(|event| event.delay_id)
            .collect()
    }

    #[test]
    fn an_event_falls_due_at_its_delay_and_a_restart_starts_the_delay_again() {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        crate::store::migrations::apply(&mut conn).expect("migrations");
        let clock = FakeClock::at(1_700_000_000_000);
        insert(&conn, &scheduled("d1", clock.now_ms(), 10_000), "DEV", None).expect("insert");
        insert(&conn, &scheduled("d2", clock.now_ms(), 15_000), "DEV", None).expect("insert");
        assert_eq!(
            next_due(&conn).expect("next"),
            Some(clock.now_ms() + 10_000)
        );

        clock.advance(Duration::from_millis(9_999));
        assert!(due_ids(&conn, &clock).is_empty(), "1 ms early");
        clock.advance(Duration::from_millis(1));
        assert_eq!(due_ids(&conn, &clock), ["d1"], "due exactly at its delay");

        // Restarted now: due a whole delay later, after d2.
        assert!(restart(&conn, "d1", clock.now_ms()).expect("restart"));
        assert!(due_ids(&conn, &clock).is_empty());
        clock.advance(Duration::from_millis(10_000));
        assert_eq!(due_ids(&conn, &clock), ["d2", "d1"], "soonest due first");
    }
}
