//! The reads sliding sync needs beyond `/sync`'s: where each room's latest activity sits in the
//! stream, so the room list can be ordered by recency and each room given its `bump_stamp`.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// Where a room's activity stands at a stream position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// Stream position of the newest timeline event at or before the position.
    pub latest: Option<i64>,
    /// Stream position of the newest event of a type that "bumps" a room (MSC4186: create,
    /// message, encrypted, sticker, call invite, poll start, beacon info).
    pub bump: Option<i64>,
}

/// The room's [`Activity`] at or before `upto`. Both lookups walk the `(room_id, stream_pos)`
/// index backwards and stop at the first match.
pub fn room_activity(conn: &Connection, room_id: &str, upto: i64) -> Result<Activity> {
    let latest = conn
        .prepare_cached(
            "SELECT stream_pos FROM events WHERE room_id = ?1 AND stream_pos <= ?2
             AND rejected = 0 AND soft_failed = 0 AND outlier = 0
             ORDER BY stream_pos DESC LIMIT 1",
        )?
        .query_row(params![room_id, upto], |r| r.get(0))
        .optional()?;
    let bump = conn
        .prepare_cached(
            "SELECT stream_pos FROM events WHERE room_id = ?1 AND stream_pos <= ?2
             AND event_type IN ('m.room.create', 'm.room.message', 'm.room.encrypted',
                                'm.sticker', 'm.call.invite', 'm.poll.start',
                                'org.matrix.msc3381.poll.start', 'm.beacon_info',
                                'org.matrix.msc3672.beacon_info')
             AND rejected = 0 AND soft_failed = 0 AND outlier = 0
             ORDER BY stream_pos DESC LIMIT 1",
        )?
        .query_row(params![room_id, upto], |r| r.get(0))
        .optional()?;
    Ok(Activity { latest, bump })
}
