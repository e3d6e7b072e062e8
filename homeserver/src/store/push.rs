//! Storage of push rules, per-user notifications, pushers and the push outbox.
//!
//! A user's rules are rows in evaluation order; notifications are one shared outcome per event
//! for the members on the default rules (`room_notifications`, migration 0022) plus one row per
//! (user, event) for members evaluated on their own (their own rules, or named by the event),
//! and unread counts combine both at read time; the outbox is one row per (pusher, event)
//! waiting for the push gateway.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::Result;

/// One stored push rule, as the client API shows it but with JSON kept as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRow {
    /// `override`, `content`, `room`, `sender` or `underride`.
    pub kind: String,
    /// The rule ID.
    pub rule_id: String,
    /// Server-default rule.
    pub is_default: bool,
    /// Enabled.
    pub enabled: bool,
    /// JSON array of actions.
    pub actions: String,
    /// JSON array of conditions (override and underride).
    pub conditions: Option<String>,
    /// Glob (content).
    pub pattern: Option<String>,
}

fn rule_from_row(row: &Row<'_>) -> rusqlite::Result<RuleRow> {
    Ok(RuleRow {
        kind: row.get(0)?,
        rule_id: row.get(1)?,
        is_default: row.get(2)?,
        enabled: row.get(3)?,
        actions: row.get(4)?,
        conditions: row.get(5)?,
        pattern: row.get(6)?,
    })
}

/// A user's stored rules in evaluation order within each kind, or `None` if they never
/// changed anything (the server defaults apply).
pub fn rules(conn: &Connection, user_id: &str) -> Result<Option<Vec<RuleRow>>> {
    if rules_pos(conn, user_id)?.is_none() {
        return Ok(None);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT kind, rule_id, is_default, enabled, actions, conditions, pattern FROM push_rules
         WHERE user_id = ?1 ORDER BY kind, position",
    )?;
    let rows = stmt.query_map(params![user_id], rule_from_row)?;
    Ok(Some(rows.collect::<rusqlite::Result<_>>()?))
}

/// When a user's rules last changed (`None`: never, the defaults apply).
pub fn rules_pos(conn: &Connection, user_id: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT stream_pos FROM push_rulesets WHERE user_id = ?1")?
        .query_row(params![user_id], |r| r.get(0))
        .optional()?)
}

/// Replaces a user's whole rule set, recording the change at `pos`.
pub fn replace_rules(conn: &Connection, user_id: &str, rules: &[RuleRow], pos: i64) -> Result<()> {
    // `custom_since` is set by the first change only: from there on the user's events were
    // evaluated with their own rules, not the shared default outcome.
    conn.execute(
        "INSERT INTO push_rulesets (user_id, stream_pos, custom_since) VALUES (?1, ?2, ?2)
         ON CONFLICT (user_id) DO UPDATE SET stream_pos = excluded.stream_pos",
        params![user_id, pos],
    )?;
    conn.execute(
        "DELETE FROM push_rules WHERE user_id = ?1",
        params![user_id],
    )?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO push_rules (user_id, kind, rule_id, position, is_default, enabled, actions,
            conditions, pattern)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut position = 0i64;
    let mut last_kind = "";
    for rule in rules {
        if rule.kind != last_kind {
            position = 0;
            last_kind = &rule.kind;
        }
        insert.execute(params![
            user_id,
            rule.kind,
            rule.rule_id,
            position,
            rule.is_default,
            rule.enabled,
            rule.actions,
            rule.conditions,
            rule.pattern,
        ])?;
        position += 1;
    }
    Ok(())
}

/// A joined member of a room, as the evaluator needs it.
#[derive(Debug, Clone)]
pub struct Member {
    /// The user.
    pub user_id: String,
    /// Whether it is an active account of this server.
    pub local: bool,
    /// When their push rules last changed (`None`: defaults), for local users.
    pub rules_pos: Option<i64>,
    /// They have a pusher that notifications can be queued for.
    pub has_pushers: bool,
}

/// The joined local members of a room who cannot simply take the shared default outcome: those
/// with their own rules or with a pusher. Driven from the (few) users with either, so a room
/// of 10,000 members on the defaults costs nothing here.
pub fn special_members(conn: &Connection, room_id: &str) -> Result<Vec<Member>> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.user_id, p.stream_pos,
            EXISTS (SELECT 1 FROM pushers WHERE user_id = s.user_id AND gateway IS NOT NULL)
         FROM (SELECT user_id FROM push_rulesets
               UNION SELECT user_id FROM pushers WHERE gateway IS NOT NULL) s
         JOIN current_state cs ON cs.room_id = ?1 AND cs.event_type = 'm.room.member'
            AND cs.state_key = s.user_id AND cs.membership = 'join'
         JOIN users u ON u.user_id = s.user_id AND u.deactivated = 0
         LEFT JOIN push_rulesets p ON p.user_id = s.user_id",
    )?;
    let rows = stmt.query_map(params![room_id], |r| {
        Ok(Member {
            user_id: r.get(0)?,
            local: true,
            rules_pos: r.get(1)?,
            has_pushers: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// How many members are joined to a room, counting at most `cap` (`None`: all). The default
/// rules only ask whether it is 2, so a cap of 3 answers them without reading a big room's
/// member list.
pub fn joined_count(conn: &Connection, room_id: &str, cap: Option<i64>) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*) FROM (SELECT 1 FROM current_state
             WHERE room_id = ?1 AND event_type = 'm.room.member' AND membership = 'join'
             LIMIT ?2)",
        )?
        .query_row(params![room_id, cap.unwrap_or(-1)], |r| r.get(0))?)
}

/// A local, active account with its rules' version; `None` if `user_id` is not one. With
/// `joined_to`, only if they are joined to that room.
pub fn local_member(
    conn: &Connection,
    user_id: &str,
    joined_to: Option<&str>,
) -> Result<Option<Member>> {
    Ok(conn
        .prepare_cached(
            "SELECT u.user_id, p.stream_pos,
                EXISTS (SELECT 1 FROM pushers WHERE user_id = u.user_id AND gateway IS NOT NULL)
             FROM users u
             LEFT JOIN push_rulesets p ON p.user_id = u.user_id
             WHERE u.user_id = ?1 AND u.deactivated = 0
             AND (?2 IS NULL OR EXISTS (SELECT 1 FROM current_state
                WHERE room_id = ?2 AND event_type = 'm.room.member' AND state_key = ?1
                AND membership = 'join'))",
        )?
        .query_row(params![user_id, joined_to], |r| {
            Ok(Member {
                user_id: r.get(0)?,
                local: true,
                rules_pos: r.get(1)?,
                has_pushers: r.get(2)?,
            })
        })
        .optional()?)
}

/// The stream position an event is stored at.
pub fn event_pos(conn: &Connection, event_id: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT stream_pos FROM events WHERE event_id = ?1")?
        .query_row(params![event_id], |r| r.get(0))
        .optional()?)
}

/// Records that `user_id` sent the event at `pos` in `room_id` (which marks the room read).
pub fn set_own_last_event(conn: &Connection, user_id: &str, room_id: &str, pos: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO own_last_event (user_id, room_id, stream_pos) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id, room_id) DO UPDATE SET stream_pos = max(stream_pos, excluded.stream_pos)",
    )?
    .execute(params![user_id, room_id, pos])?;
    Ok(())
}

/// How many stream positions the staged notifications may span before the writer folds them
/// into `notifications`: each member's leaf there is rewritten once per fold instead of once
/// per commit, and the staging table readers scan stays this short (times the members).
pub const FOLD_SPAN: i64 = 128;

/// Stores that the event at `pos` notified `user_id`, in the staging table (migration 0014).
pub fn insert_notification(
    conn: &Connection,
    user_id: &str,
    pos: i64,
    room_id: &str,
    highlight: bool,
    actions: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO notifications_recent (stream_pos, user_id, room_id, highlight, actions)
         VALUES (?2, ?1, ?3, ?4, ?5)",
    )?
    .execute(params![user_id, pos, room_id, highlight, actions])?;
    Ok(())
}

/// Stores what the default rules decided for the event at `pos` (when it notifies): the
/// outcome of every member on the defaults whom the event does not name (migration 0022),
/// with the room's running totals. `pos` is the newest position in the room.
pub fn insert_room_notification(
    conn: &Connection,
    room_id: &str,
    pos: i64,
    highlight: bool,
    actions: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO room_notifications (room_id, stream_pos, highlight, actions,
            notified, highlighted)
         SELECT ?1, ?2, ?3, ?4, coalesce(last.notified, 0) + 1, coalesce(last.highlighted, 0) + ?3
         FROM (SELECT 1) LEFT JOIN (SELECT notified, highlighted FROM room_notifications
            WHERE room_id = ?1 ORDER BY stream_pos DESC LIMIT 1) last",
    )?
    .execute(params![room_id, pos, highlight, actions])?;
    Ok(())
}

/// Moves the staged notifications into `notifications` once they span [`FOLD_SPAN`]
/// positions up to `pos` (the event just stored). Runs in the writer's transaction.
pub fn fold_notifications(conn: &Connection, pos: i64) -> Result<()> {
    let oldest: Option<i64> = conn
        .prepare_cached("SELECT min(stream_pos) FROM notifications_recent")?
        .query_row([], |r| r.get(0))?;
    if oldest.is_none_or(|oldest| pos - oldest < FOLD_SPAN) {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT OR IGNORE INTO notifications (user_id, room_id, stream_pos, highlight, actions)
         SELECT user_id, room_id, stream_pos, highlight, actions FROM notifications_recent
         ORDER BY user_id, room_id, stream_pos",
    )?
    .execute([])?;
    conn.prepare_cached("DELETE FROM notifications_recent")?
        .execute([])?;
    Ok(())
}

/// How far a user has read a room: the newer of their unthreaded public and private read
/// receipts, or the newest event they sent there.
pub fn read_pos(conn: &Connection, user_id: &str, room_id: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT max(
                (SELECT coalesce(max(e.stream_pos), 0) FROM receipts r JOIN events e USING (event_id)
                 WHERE r.room_id = ?2 AND r.user_id = ?1 AND r.thread_id = ''
                 AND r.receipt_type IN ('m.read', 'm.read.private')),
                (SELECT coalesce(max(stream_pos), 0) FROM own_last_event
                 WHERE user_id = ?1 AND room_id = ?2))",
        )?
        .query_row(params![user_id, room_id], |r| r.get(0))?)
}

/// When the user left the default rules (`None`: never): shared outcomes of events from there
/// on are not theirs.
pub fn custom_since(conn: &Connection, user_id: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT custom_since FROM push_rulesets WHERE user_id = ?1")?
        .query_row(params![user_id], |r| r.get(0))
        .optional()?)
}

/// A stretch of stream positions in which a user was joined to a room (and on the default
/// rules): the shared outcomes in it are theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinedRun {
    /// The run holds the positions after this one (exclusive)...
    pub after: i64,
    /// ... and before this one (exclusive).
    pub before: i64,
}

/// The runs in which the membership is `join`, from membership changes in stream order after
/// `after` (`joined_at_start`: the membership at `after`), each cut at `before`.
fn runs_from(
    joined_at_start: bool,
    after: i64,
    changes: impl IntoIterator<Item = (i64, String)>,
    before: i64,
) -> Vec<JoinedRun> {
    let mut runs = Vec::new();
    let mut start = joined_at_start.then_some(after);
    for (pos, membership) in changes {
        if membership == "join" {
            // A join is the member's own event; from it on they are joined.
            start.get_or_insert(pos - 1);
        } else if let Some(run_after) = start.take() {
            runs.push(JoinedRun {
                after: run_after,
                before: pos,
            });
        }
    }
    if let Some(run_after) = start {
        runs.push(JoinedRun {
            after: run_after,
            before: i64::MAX,
        });
    }
    runs.into_iter()
        .map(|run| JoinedRun {
            after: run.after,
            before: run.before.min(before),
        })
        .filter(|run| run.before > run.after + 1)
        .collect()
}

/// The runs after `after` in which `user_id` was joined to `room_id`, cut where they left the
/// default rules.
pub fn joined_runs(
    conn: &Connection,
    user_id: &str,
    room_id: &str,
    after: i64,
) -> Result<Vec<JoinedRun>> {
    let at_start: Option<String> = conn
        .prepare_cached(
            "SELECT membership FROM membership_changes
             WHERE user_id = ?1 AND room_id = ?2 AND stream_pos <= ?3
             ORDER BY stream_pos DESC LIMIT 1",
        )?
        .query_row(params![user_id, room_id, after], |r| r.get(0))
        .optional()?;
    let mut stmt = conn.prepare_cached(
        "SELECT stream_pos, membership FROM membership_changes
         WHERE user_id = ?1 AND room_id = ?2 AND stream_pos > ?3 ORDER BY stream_pos",
    )?;
    let changes = stmt
        .query_map(params![user_id, room_id, after], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<Vec<(i64, String)>>>()?;
    let before = custom_since(conn, user_id)?.unwrap_or(i64::MAX);
    Ok(runs_from(
        at_start.as_deref() == Some("join"),
        after,
        changes,
        before,
    ))
}

/// The running totals `(notified, highlighted)` of a room's shared outcomes up to `pos`.
fn running_totals(conn: &Connection, room_id: &str, pos: i64) -> Result<(i64, i64)> {
    Ok(conn
        .prepare_cached(
            "SELECT notified, highlighted FROM room_notifications
             WHERE room_id = ?1 AND stream_pos <= ?2 ORDER BY stream_pos DESC LIMIT 1",
        )?
        .query_row(params![room_id, pos], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, 0)))
}

/// A room's unread counts for one user: `/sync`'s `unread_notifications`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnreadCounts {
    /// Notifying events after the read position (`notification_count`).
    pub notifications: i64,
    /// Those of them that highlight (`highlight_count`).
    pub highlights: i64,
}

/// The unread counts of a room for a user: notifications after the
/// read position. Their own rows count as they are; the event's shared outcomes count in the
/// runs they were joined and on the default rules, except where an own row stands for the
/// same event (a member the event names). Their own events are before the read position
/// (sending marks the room read), so they never count.
pub fn unread_counts(conn: &Connection, user_id: &str, room_id: &str) -> Result<UnreadCounts> {
    let after = read_pos(conn, user_id, room_id)?;
    let (mut count, mut highlight): (i64, i64) = conn
        .prepare_cached(
            "SELECT count(*), coalesce(sum(highlight), 0) FROM (
                SELECT highlight FROM notifications
                WHERE user_id = ?1 AND room_id = ?2 AND stream_pos > ?3
                UNION ALL
                SELECT highlight FROM notifications_recent
                WHERE user_id = ?1 AND room_id = ?2 AND stream_pos > ?3)",
        )?
        .query_row(params![user_id, room_id, after], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    for run in joined_runs(conn, user_id, room_id, after)? {
        let (upto, upto_highlight) = running_totals(conn, room_id, run.before - 1)?;
        let (from, from_highlight) = running_totals(conn, room_id, run.after)?;
        // Without `INDEXED BY` the planner walks the primary key over every unread row.
        let (redacted, redacted_highlight): (i64, i64) = conn
            .prepare_cached(
                "SELECT count(*), coalesce(sum(highlight), 0)
                 FROM room_notifications INDEXED BY room_notifications_redacted
                 WHERE room_id = ?1 AND stream_pos > ?2 AND stream_pos < ?3 AND redacted = 1",
            )?
            .query_row(params![room_id, run.after, run.before], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let shared = upto - from - redacted;
        let shared_highlight = upto_highlight - from_highlight - redacted_highlight;
        if shared == 0 {
            continue;
        }
        let (own, own_highlight): (i64, i64) = conn
            .prepare_cached(
                "SELECT count(*), coalesce(sum(s.highlight), 0) FROM (
                    SELECT stream_pos FROM notifications
                    WHERE user_id = ?1 AND room_id = ?2 AND stream_pos > ?3 AND stream_pos < ?4
                    UNION ALL
                    SELECT stream_pos FROM notifications_recent
                    WHERE stream_pos > ?3 AND stream_pos < ?4 AND user_id = ?1 AND room_id = ?2) n
                 JOIN room_notifications s ON s.room_id = ?2 AND s.stream_pos = n.stream_pos
                    AND s.redacted = 0",
            )?
            .query_row(params![user_id, room_id, run.after, run.before], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        count += shared - own;
        highlight += shared_highlight - own_highlight;
    }
    Ok(UnreadCounts {
        notifications: count,
        highlights: highlight,
    })
}

/// Unread notifications of a user across the rooms they are joined to (the push gateway's
/// `counts.unread`).
pub fn total_unread(conn: &Connection, user_id: &str) -> Result<i64> {
    let mut total = 0;
    for room in super::state::rooms_with_membership(conn, user_id, "join")? {
        total += unread_counts(conn, user_id, &room)?.notifications;
    }
    Ok(total)
}

/// One row of `GET /notifications`.
#[derive(Debug, Clone)]
pub struct Notification {
    /// The event's stream position (also the pagination key).
    pub stream_pos: i64,
    /// The event.
    pub event_id: String,
    /// Its room.
    pub room_id: String,
    /// JSON array of actions.
    pub actions: String,
}

/// A user's notifications older than `before`, newest first: their own rows and the shared
/// outcomes of the runs they were joined and on the default rules (not of their own events),
/// an own row winning over the shared outcome of the same event.
pub fn notifications(
    conn: &Connection,
    user_id: &str,
    before: i64,
    limit: usize,
    only_highlight: bool,
) -> Result<Vec<Notification>> {
    let mut stmt = conn.prepare_cached(
        "SELECT n.stream_pos, e.event_id, n.room_id, n.actions FROM (
            SELECT * FROM (
                SELECT stream_pos, room_id, actions FROM notifications_recent
                WHERE user_id = ?1 AND stream_pos < ?2 AND (?3 = 0 OR highlight = 1)
                ORDER BY stream_pos DESC LIMIT ?4)
            UNION ALL
            SELECT * FROM (
                SELECT stream_pos, room_id, actions FROM notifications
                WHERE user_id = ?1 AND stream_pos < ?2 AND (?3 = 0 OR highlight = 1)
                ORDER BY stream_pos DESC LIMIT ?4)) n
         JOIN events e ON e.stream_pos = n.stream_pos
         ORDER BY n.stream_pos DESC LIMIT ?4",
    )?;
    let row = |r: &Row<'_>| {
        Ok(Notification {
            stream_pos: r.get(0)?,
            event_id: r.get(1)?,
            room_id: r.get(2)?,
            actions: r.get(3)?,
        })
    };
    let mut out: Vec<Notification> = stmt
        .query_map(params![user_id, before, only_highlight, limit as i64], row)?
        .collect::<rusqlite::Result<_>>()?;
    // Each source gives up to `limit` rows, so the first `limit` of the merge are exact.
    let mut shared = conn.prepare_cached(
        "SELECT s.stream_pos, e.event_id, s.room_id, s.actions FROM room_notifications s
         JOIN events e ON e.stream_pos = s.stream_pos
         WHERE s.room_id = ?1 AND s.stream_pos > ?2 AND s.stream_pos < ?3
         AND (?4 = 0 OR s.highlight = 1) AND s.redacted = 0 AND e.sender != ?5
         ORDER BY s.stream_pos DESC LIMIT ?6",
    )?;
    let cut = before.min(custom_since(conn, user_id)?.unwrap_or(i64::MAX));
    for (room_id, run) in all_joined_runs(conn, user_id, cut)? {
        let rows = shared.query_map(
            params![
                room_id,
                run.after,
                run.before,
                only_highlight,
                user_id,
                limit as i64
            ],
            row,
        )?;
        for notification in rows {
            out.push(notification?);
        }
    }
    // An own row and the shared outcome of the same event: the own row (first) stands.
    out.sort_by_key(|n| std::cmp::Reverse(n.stream_pos));
    out.dedup_by_key(|n| n.stream_pos);
    out.truncate(limit);
    Ok(out)
}

/// Every run in which `user_id` was joined to a room, over their whole history, cut at
/// `before`.
fn all_joined_runs(
    conn: &Connection,
    user_id: &str,
    before: i64,
) -> Result<Vec<(String, JoinedRun)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT room_id, stream_pos, membership FROM membership_changes
         WHERE user_id = ?1 AND stream_pos < ?2 ORDER BY room_id, stream_pos",
    )?;
    let changes = stmt
        .query_map(params![user_id, before], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for room in changes.chunk_by(|a, b| a.0 == b.0) {
        let room_id = &room[0].0;
        let runs = runs_from(
            false,
            0,
            room.iter().map(|(_, pos, m)| (*pos, m.clone())),
            before,
        );
        out.extend(runs.into_iter().map(|run| (room_id.clone(), run)));
    }
    Ok(out)
}

/// A registered pusher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pusher {
    /// Owner.
    pub user_id: String,
    /// Application.
    pub app_id: String,
    /// Routing key at the gateway.
    pub pushkey: String,
    /// `http`.
    pub kind: String,
    /// Shown to the user.
    pub app_display_name: String,
    /// Shown to the user.
    pub device_display_name: String,
    /// Device-specific rule set tag.
    pub profile_tag: Option<String>,
    /// Preferred language.
    pub lang: String,
    /// JSON object (`url`, `format`, custom keys).
    pub data: String,
    /// `ip:port` to deliver to; `None` if the URL is not deliverable from a closed unit.
    pub gateway: Option<String>,
    /// Device whose token set it.
    pub device_id: String,
    /// When the pushkey was last set (ms).
    pub pushkey_ts: i64,
}

fn pusher_from_row(row: &Row<'_>) -> rusqlite::Result<Pusher> {
    Ok(Pusher {
        user_id: row.get(0)?,
        app_id: row.get(1)?,
        pushkey: row.get(2)?,
        kind: row.get(3)?,
        app_display_name: row.get(4)?,
        device_display_name: row.get(5)?,
        profile_tag: row.get(6)?,
        lang: row.get(7)?,
        data: row.get(8)?,
        gateway: row.get(9)?,
        device_id: row.get(10)?,
        pushkey_ts: row.get(11)?,
    })
}

/// A user's pushers.
pub fn pushers(conn: &Connection, user_id: &str) -> Result<Vec<Pusher>> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, app_id, pushkey, kind, app_display_name, device_display_name,
            profile_tag, lang, data, gateway, device_id, pushkey_ts
         FROM pushers WHERE user_id = ?1 ORDER BY app_id, pushkey",
    )?;
    let rows = stmt.query_map(params![user_id], pusher_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Creates or updates a pusher (its queue survives an update).
pub fn upsert_pusher(conn: &Connection, p: &Pusher) -> Result<()> {
    conn.execute(
        "INSERT INTO pushers (user_id, app_id, pushkey, kind, app_display_name,
            device_display_name, profile_tag, lang, data, gateway, device_id, pushkey_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = excluded.kind,
            app_display_name = excluded.app_display_name,
            device_display_name = excluded.device_display_name,
            profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data,
            gateway = excluded.gateway, device_id = excluded.device_id, pushkey_ts = excluded.pushkey_ts",
        params![
            p.user_id,
            p.app_id,
            p.pushkey,
            p.kind,
            p.app_display_name,
            p.device_display_name,
            p.profile_tag,
            p.lang,
            p.data,
            p.gateway,
            p.device_id,
            p.pushkey_ts,
        ],
    )?;
    Ok(())
}

/// Deletes a pusher (and its queue); `false` if there was none.
pub fn delete_pusher(
    conn: &Connection,
    user_id: &str,
    app_id: &str,
    pushkey: &str,
) -> Result<bool> {
    Ok(conn.execute(
        "DELETE FROM pushers WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3",
        params![user_id, app_id, pushkey],
    )? > 0)
}

/// Deletes the pushers with this app ID and pushkey that belong to other users.
pub fn delete_pushers_of_others(
    conn: &Connection,
    user_id: &str,
    app_id: &str,
    pushkey: &str,
) -> Result<()> {
    conn.execute(
        "DELETE FROM pushers WHERE app_id = ?2 AND pushkey = ?3 AND user_id != ?1",
        params![user_id, app_id, pushkey],
    )?;
    Ok(())
}

/// Queues the event at `pos` for every HTTP pusher of `user_id`; returns how many rows.
pub fn enqueue_push(conn: &Connection, user_id: &str, pos: i64, now: i64) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO push_outbox (user_id, app_id, pushkey, stream_pos, created_ts,
                next_attempt_ts)
             SELECT user_id, app_id, pushkey, ?2, ?3, ?3 FROM pushers
             WHERE user_id = ?1 AND kind = 'http' AND gateway IS NOT NULL",
        )?
        .execute(params![user_id, pos, now])?)
}

/// One queued push.
#[derive(Debug, Clone)]
pub struct QueuedPush {
    /// Queue row.
    pub id: i64,
    /// The pusher.
    pub pusher: Pusher,
    /// The event's stream position.
    pub stream_pos: i64,
    /// Attempts so far.
    pub attempts: i64,
    /// When it was queued (ms).
    pub created_ts: i64,
}

/// Up to `limit` queued pushes due at `now`, oldest first.
pub fn due_pushes(conn: &Connection, now: i64, limit: usize) -> Result<Vec<QueuedPush>> {
    let mut stmt = conn.prepare_cached(
        "SELECT p.user_id, p.app_id, p.pushkey, p.kind, p.app_display_name,
            p.device_display_name, p.profile_tag, p.lang, p.data, p.gateway, p.device_id, p.pushkey_ts,
            o.id, o.stream_pos, o.attempts, o.created_ts
         FROM push_outbox o JOIN pushers p USING (user_id, app_id, pushkey)
         WHERE o.next_attempt_ts <= ?1 ORDER BY o.id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now, limit as i64], |r| {
        Ok(QueuedPush {
            pusher: pusher_from_row(r)?,
            id: r.get(12)?,
            stream_pos: r.get(13)?,
            attempts: r.get(14)?,
            created_ts: r.get(15)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// When the next queued push falls due, if any is queued.
pub fn next_push_due(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT min(next_attempt_ts) FROM push_outbox")?
        .query_row([], |r| r.get(0))?)
}

/// Removes a delivered (or abandoned) push.
pub fn delete_push(conn: &Connection, id: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM push_outbox WHERE id = ?1")?
        .execute(params![id])?;
    Ok(())
}

/// Postpones every queued push of a pusher whose gateway failed.
pub fn postpone_pusher(
    conn: &Connection,
    user_id: &str,
    app_id: &str,
    pushkey: &str,
    next_attempt_ts: i64,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE push_outbox SET attempts = attempts + 1, next_attempt_ts = ?4
         WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3",
    )?
    .execute(params![user_id, app_id, pushkey, next_attempt_ts])?;
    Ok(())
}

/// The actions stored for a notification, if the event notified the user: their own row, else
/// the event's shared outcome (a push is queued only for a user the event notified, so the
/// shared outcome is theirs when they have no row).
pub fn notification_actions(
    conn: &Connection,
    user_id: &str,
    room_id: &str,
    pos: i64,
) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT actions FROM notifications
             WHERE user_id = ?1 AND room_id = ?2 AND stream_pos = ?3
             UNION ALL
             SELECT actions FROM notifications_recent
             WHERE stream_pos = ?3 AND user_id = ?1 AND room_id = ?2
             UNION ALL
             SELECT actions FROM room_notifications
             WHERE room_id = ?2 AND stream_pos = ?3 AND redacted = 0
             LIMIT 1",
        )?
        .query_row(params![user_id, room_id, pos], |r| r.get(0))
        .optional()?)
}

/// The ID of the event stored at `pos`.
pub fn event_at(conn: &Connection, pos: i64) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT event_id FROM events WHERE stream_pos = ?1")?
        .query_row(params![pos], |r| r.get(0))
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(list: &[(i64, &str)]) -> Vec<(i64, String)> {
        list.iter()
            .map(|(pos, m)| (*pos, (*m).to_owned()))
            .collect()
    }

    fn run(after: i64, before: i64) -> JoinedRun {
        JoinedRun { after, before }
    }

    #[test]
    fn runs_follow_joins_and_leaves() {
        // Joined at 10, left at 20, invited at 30, joined at 40 (and a profile change at 45).
        let history = changes(&[
            (10, "join"),
            (20, "leave"),
            (30, "invite"),
            (40, "join"),
            (45, "join"),
        ]);
        assert_eq!(
            runs_from(false, 0, history.clone(), i64::MAX),
            [run(9, 20), run(39, i64::MAX)]
        );
        // Cut where the user left the default rules.
        assert_eq!(runs_from(false, 0, history, 15), [run(9, 15)]);
        // Already joined at the read position.
        assert_eq!(
            runs_from(true, 50, changes(&[(60, "leave")]), i64::MAX),
            [run(50, 60)]
        );
        // Nothing left between a read position and a leave right after it.
        assert!(runs_from(true, 50, changes(&[(51, "leave")]), i64::MAX).is_empty());
    }
}
