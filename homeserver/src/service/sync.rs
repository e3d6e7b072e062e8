//! `/sync`: what changed for a user since a token, long-polled on the store's commit notifier.
//!
//! A token is `s<stream position>`. Everything a client syncs (events, membership changes,
//! account data, receipts) carries a position from the one writer, so "what is new" is always
//! "rows with `since < pos <= upto`", and tokens stay valid across restarts. A long poll waits
//! on the store's `watch` channel, never on a timer polling the database.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::Server;
use super::rooms::load_state_events;
use crate::error::{Error, Result};
use crate::matrix::client_format::to_stripped_state;
use crate::matrix::filter::{Filter, RoomEventFilter};
use crate::matrix::visibility::Visible;
use crate::store::events::{self, StoredEvent};
use crate::store::{misc, state};
use crate::util::now_ms;

/// Timeline length when the filter sets none.
const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// Longest long-poll we honour.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(120);
/// State events shown to invitees (spec: "stripped state").
const INVITE_STATE_TYPES: [&str; 6] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
];

/// A parsed `/sync` request.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// The user syncing.
    pub user_id: String,
    /// Their device.
    pub device_id: String,
    /// Position from the `since` token.
    pub since: Option<i64>,
    /// Typing serial from the `since` token (0 when none).
    pub typing_since: u64,
    /// Where to-device delivery stopped when the previous sync cut it short (its token's
    /// third part); `None` means "at `since`".
    pub to_device_since: Option<i64>,
    /// Send full state for every room.
    pub full_state: bool,
    /// The filter in force.
    pub filter: Filter,
    /// Long-poll timeout.
    pub timeout: Duration,
    /// Send `state_after` (state up to the end of the timeline) instead of `state`.
    pub use_state_after: bool,
    /// Our server name (presence treats local and remote users differently).
    pub own_server: String,
    /// Users the syncing user ignores (`m.ignored_user_list`), filled in by [`sync`].
    pub ignored: Vec<String>,
}

/// Parses a sync token (`s<position>` or `s<position>_<typing serial>`) into its stream
/// position.
pub fn parse_token(token: &str) -> Result<i64> {
    parse_sync_token(token).map(|(pos, _)| pos)
}

/// Parses a sync token into its stream position and typing serial.
pub fn parse_sync_token(token: &str) -> Result<(i64, u64)> {
    parse_full_token(token).map(|(pos, typing, _)| (pos, typing))
}

/// Parses a sync token `s<position>[_<typing serial>[_<to-device position>]]`; the third part
/// is present only when a sync handed out fewer to-device messages than were waiting.
pub fn parse_full_token(token: &str) -> Result<(i64, u64, Option<i64>)> {
    let bad = || Error::invalid_param("Unknown sync token");
    let rest = token.strip_prefix('s').ok_or_else(bad)?;
    let mut parts = rest.splitn(3, '_');
    let position = |raw: &str| raw.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(bad);
    let pos = position(parts.next().unwrap_or_default())?;
    let typing = match parts.next() {
        Some(typing) => typing.parse::<u64>().map_err(|_| bad())?,
        None => 0,
    };
    let to_device = parts.next().map(position).transpose()?;
    Ok((pos, typing, to_device))
}

/// Runs a sync, waiting up to the timeout for something new.
pub async fn sync(server: &Server, mut req: SyncRequest) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + req.timeout.min(MAX_TIMEOUT);
    let mut positions = server.store.subscribe();
    let mut typing_changes = server.typing.subscribe();
    let mut shutdown = server.shutdown.clone();
    // m.ignored_user_list: nothing those users send reaches the timeline, and their invites
    // are not shown.
    let user = req.user_id.clone();
    let ignored = server
        .store
        .read(move |conn| ignored_users(conn, &user))
        .await?;
    req.filter
        .room
        .timeline
        .not_senders
        .extend(ignored.iter().cloned());
    req.ignored = ignored;
    if let Some(since) = req.since {
        // Syncing with a token acknowledges the to-device messages handed out before it.
        let acked = req.to_device_since.unwrap_or(since);
        super::e2ee::ack_to_device(server, &req.user_id, &req.device_id, acked).await?;
    }
    loop {
        let upto = *positions.borrow_and_update();
        let typing_now = *typing_changes.borrow_and_update();
        if let Some(since) = req.since
            && since > upto
        {
            // A token from a newer database (restored backup): treat as "now".
            req.since = Some(upto);
        }
        if req.typing_since > typing_now {
            // Typing serials restart with the server: show everyone typing now.
            req.typing_since = 0;
        }
        let typing = server.typing.changes_since(if req.since.is_some() {
            req.typing_since
        } else {
            0
        });
        let request = req.clone();
        let (mut response, empty, to_device_upto) = server
            .store
            .read(move |conn| compute(conn, &request, upto, &typing))
            .await?;
        response["next_batch"] = json!(match to_device_upto {
            Some(delivered) => format!("s{upto}_{typing_now}_{delivered}"),
            None => format!("s{upto}_{typing_now}"),
        });
        let done = !empty || req.since.is_none() || req.full_state || req.timeout.is_zero();
        if done {
            return Ok(response);
        }
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, positions.changed()) => match changed {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return Ok(response),
            },
            changed = typing_changes.changed() => if changed.is_err() { return Ok(response) },
            _ = crate::stopped(&mut shutdown) => return Ok(response),
        }
    }
}

/// The users listed in the user's `m.ignored_user_list` account data.
pub fn ignored_users(conn: &Connection, user_id: &str) -> Result<Vec<String>> {
    let Some(raw) = misc::get_account_data(conn, user_id, "", "m.ignored_user_list")? else {
        return Ok(Vec::new());
    };
    let content: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
    Ok(content
        .get("ignored_users")
        .and_then(Value::as_object)
        .map(|users| users.keys().cloned().collect())
        .unwrap_or_default())
}

/// Computes the response for `(since, upto]`; returns it, whether it carries nothing new, and
/// where to-device delivery stopped if it was cut short.
fn compute(
    conn: &Connection,
    req: &SyncRequest,
    upto: i64,
    typing: &HashMap<String, Vec<String>>,
) -> Result<(Value, bool, Option<i64>)> {
    let since = req.since;
    let after = since.unwrap_or(0);
    let room_filter = &req.filter.room;
    let mut join = Map::new();
    let mut invite = Map::new();
    let mut leave = Map::new();
    let mut knock = Map::new();

    let account_data = misc::account_data_since(
        conn,
        &req.user_id,
        if since.is_some() { after } else { 0 },
        upto,
    )?;
    let mut room_account_data: HashMap<String, Vec<Value>> = HashMap::new();
    let mut global_account_data = Vec::new();
    for (room, kind, content) in account_data {
        let content: Value = serde_json::from_str(&content).unwrap_or(Value::Null);
        let event = json!({"type": kind, "content": content});
        if room.is_empty() {
            if req.filter.account_data.allows_type(&kind) {
                global_account_data.push(event);
            }
        } else if room_filter.account_data.allows_type(&kind) {
            room_account_data.entry(room).or_default().push(event);
        }
    }
    if req.filter.account_data.allows_type("m.push_rules")
        && let Some(event) = super::push::rules_account_data(conn, &req.user_id, since, upto)?
    {
        global_account_data.push(event);
    }

    for (room_id, membership, member_pos) in state::memberships_as_of(conn, &req.user_id, upto)? {
        if !room_filter.allows_room(&room_id) {
            continue;
        }
        match membership.as_str() {
            "join" => {
                let fresh = since.is_none() || member_pos > after;
                let section = joined_room(
                    conn,
                    req,
                    &room_id,
                    if fresh { None } else { Some(after) },
                    upto,
                    typing.get(&room_id),
                )?;
                let data = room_account_data.remove(&room_id).unwrap_or_default();
                if let Some(mut section) = section.or_else(|| (!data.is_empty()).then(empty_room)) {
                    section["account_data"] = json!({"events": data});
                    join.insert(room_id, section);
                }
            }
            "invite" if since.is_none() || member_pos > after => {
                let inviter =
                    state::current_state_id(conn, &room_id, "m.room.member", &req.user_id)?
                        .map(|id| events::get_event(conn, &id))
                        .transpose()?
                        .flatten()
                        .map(|event| event.pdu.sender.to_string());
                if !inviter.is_some_and(|inviter| req.ignored.contains(&inviter)) {
                    invite.insert(room_id.clone(), invited_room(conn, &room_id, &req.user_id)?);
                }
            }
            "knock" if since.is_none() || member_pos > after => {
                let stripped = invited_room(conn, &room_id, &req.user_id)?["invite_state"].clone();
                knock.insert(room_id.clone(), json!({"knock_state": stripped}));
            }
            "leave" | "ban" => {
                let show = match since {
                    Some(_) => member_pos > after,
                    None => room_filter.include_leave,
                } && !state::is_forgotten(conn, &req.user_id, &room_id)?;
                if show {
                    let from = since.filter(|_| !req.full_state);
                    if let Some(section) = left_room(conn, req, &room_id, from, member_pos)? {
                        leave.insert(room_id, section);
                    }
                }
            }
            _ => {}
        }
    }

    let presence: Vec<Value> = crate::store::presence::changed_for(
        conn,
        &req.user_id,
        if since.is_some() { after } else { 0 },
        upto,
    )?
    .iter()
    .filter(|_| req.filter.presence.allows_type("m.presence"))
    .map(|row| {
        json!({
            "type": "m.presence",
            "sender": row.user_id,
            "content": super::presence::content_at(&req.own_server, row, now_ms()),
        })
    })
    .collect();
    let keys = super::e2ee::sync_keys(
        conn,
        &req.user_id,
        &req.device_id,
        since,
        req.to_device_since,
        upto,
    )?;
    let empty = join.is_empty()
        && invite.is_empty()
        && knock.is_empty()
        && leave.is_empty()
        && global_account_data.is_empty()
        && presence.is_empty()
        && keys.to_device.is_empty()
        && keys.changed.is_empty()
        && keys.left.is_empty();
    let response = json!({
        "next_batch": format!("s{upto}"),
        "rooms": {"join": join, "invite": invite, "leave": leave, "knock": knock},
        "account_data": {"events": global_account_data},
        "presence": {"events": presence},
        "to_device": {"events": keys.to_device},
        "device_lists": {"changed": keys.changed, "left": keys.left},
        "device_one_time_keys_count": keys.one_time_key_counts,
        "device_unused_fallback_key_types": keys.unused_fallback_types,
    });
    Ok((response, empty, keys.to_device_upto))
}

/// What the syncing user may see of a room's events.
fn visible_to(conn: &Connection, room_id: &str, user_id: &str) -> Result<Visible> {
    super::rooms::user_visibility(conn, room_id, user_id)
}

fn empty_room() -> Value {
    json!({
        "timeline": {"events": [], "limited": false},
        "state": {"events": []},
        "ephemeral": {"events": []},
        "account_data": {"events": []},
        "summary": {},
    })
}

/// The newest `limit` events of a room in `(after, upto]` that the user may see (`visible`,
/// from [`rooms::visibility`](crate::service::rooms::visibility)) and that pass the filter,
/// oldest first, and whether older such events were left out. Shared with sliding sync,
/// whose timelines follow the same rules. Stretches the user may not see are skipped without
/// being read.
pub(crate) fn timeline(
    conn: &Connection,
    room_id: &str,
    filter: &RoomEventFilter,
    visible: &Visible,
    after: i64,
    upto: i64,
) -> Result<(Vec<StoredEvent>, bool)> {
    let limit = filter
        .limit
        .map(|l| l as usize)
        .unwrap_or(DEFAULT_TIMELINE_LIMIT)
        .clamp(1, 1000);
    let mut picked = Vec::new();
    let mut cursor = upto;
    let mut limited = false;
    'scan: while let Some(top) = visible.last_at_or_before(cursor).filter(|top| *top > after) {
        let batch = events::room_events_desc(conn, room_id, after, top, 200)?;
        let Some(last) = batch.last() else { break };
        cursor = last.stream_pos - 1;
        let exhausted = batch.len() < 200;
        for event in batch {
            if visible.allows(event.stream_pos) && filter.allows(&event.pdu) {
                if picked.len() == limit {
                    limited = true;
                    break 'scan;
                }
                picked.push(event);
            }
        }
        if exhausted {
            break;
        }
    }
    picked.reverse();
    Ok((picked, limited))
}

/// Events in the client format as the syncing device sees them (its own transaction IDs,
/// bundled aggregations).
pub(crate) fn format_all(
    conn: &Connection,
    events: &[StoredEvent],
    req: &SyncRequest,
) -> Result<Vec<Value>> {
    let viewer = Some((req.user_id.as_str(), req.device_id.as_str()));
    super::aggregations::format_events(conn, events, viewer)
}

/// State events for the `state` section: the state before `first_pos` minus, for an
/// incremental sync, what the client had at `since`.
fn state_section(
    conn: &Connection,
    req: &SyncRequest,
    room_id: &str,
    boundary: i64,
    since: Option<i64>,
    timeline: &[StoredEvent],
) -> Result<Vec<Value>> {
    let state_filter = &req.filter.room.state;
    let group = match state::state_group_before(conn, room_id, boundary)? {
        Some(group) => Some(group),
        // A room joined through another unit holds no history before our join: the state
        // before the first event is the state the join was accepted with.
        None => timeline
            .first()
            .filter(|e| e.stream_pos == boundary)
            .and_then(|e| e.state_group),
    };
    let Some(group) = group else {
        return Ok(Vec::new());
    };
    let mut map = state::state_at_group(conn, group)?;
    if let Some(since) = since
        && let Some(old_group) = state::state_group_before(conn, room_id, since + 1)?
    {
        let old = state::state_at_group(conn, old_group)?;
        map.retain(|key, id| old.get(key) != Some(id));
    }
    let lazy_members: Option<BTreeSet<String>> = state_filter.lazy_load_members.then(|| {
        let mut senders: BTreeSet<String> =
            timeline.iter().map(|e| e.pdu.sender.to_string()).collect();
        senders.insert(req.user_id.clone());
        senders
    });
    // `state` (before the timeline) must not repeat timeline events; `state_after` includes
    // them, since clients then ignore state in the timeline.
    let in_timeline: BTreeSet<&str> = if req.use_state_after {
        BTreeSet::new()
    } else {
        timeline.iter().map(|e| e.pdu.event_id.as_str()).collect()
    };
    let events = load_state_events(conn, &map, |kind, key| {
        state_filter.allows_type(kind)
            && (kind != "m.room.member" || lazy_members.as_ref().is_none_or(|m| m.contains(key)))
    })?;
    let events: Vec<StoredEvent> = events
        .into_iter()
        .filter(|e| state_filter.allows(&e.pdu) && !in_timeline.contains(e.pdu.event_id.as_str()))
        .collect();
    format_all(conn, &events, req)
}

/// The room's `state` or (with `use_state_after`) `state_after` section, as `(key, events)`.
fn room_state(
    conn: &Connection,
    req: &SyncRequest,
    room_id: &str,
    since: Option<i64>,
    timeline: &[StoredEvent],
    limited: bool,
    end: i64,
) -> Result<(&'static str, Vec<Value>)> {
    let diff_from = since.filter(|_| !req.full_state);
    if req.use_state_after {
        let boundary = timeline.last().map(|e| e.stream_pos + 1).unwrap_or(end + 1);
        let events = state_section(conn, req, room_id, boundary, diff_from, timeline)?;
        return Ok(("state_after", events));
    }
    let events = if since.is_none() || limited || req.full_state {
        let first_pos = timeline.first().map(|e| e.stream_pos).unwrap_or(end + 1);
        state_section(conn, req, room_id, first_pos, diff_from, timeline)?
    } else {
        Vec::new()
    };
    Ok(("state", events))
}

fn joined_room(
    conn: &Connection,
    req: &SyncRequest,
    room_id: &str,
    since: Option<i64>,
    upto: i64,
    typing: Option<&Vec<String>>,
) -> Result<Option<Value>> {
    let after = since.unwrap_or(0);
    let visible = visible_to(conn, room_id, &req.user_id)?;
    let (events, limited) = timeline(
        conn,
        room_id,
        &req.filter.room.timeline,
        &visible,
        after,
        upto,
    )?;
    let typing = typing.filter(|_| req.filter.room.ephemeral.allows_type("m.typing"));
    let receipts = if req.filter.room.ephemeral.allows_type("m.receipt") {
        misc::receipts_since(conn, room_id, after, upto)?
    } else {
        Vec::new()
    };
    let receipts: Vec<_> = receipts
        .into_iter()
        .filter(|r| r.receipt_type != "m.read.private" || r.user_id == req.user_id)
        .collect();
    if since.is_some()
        && events.is_empty()
        && receipts.is_empty()
        && typing.is_none()
        && !req.full_state
    {
        return Ok(None);
    }
    let (state_key, state) = room_state(conn, req, room_id, since, &events, limited, upto)?;
    let prev_batch = match events.first() {
        Some(e) => format!("t{}_{}", e.pdu.depth, e.stream_pos),
        None => {
            let key = events::topo_key_after_stream(conn, room_id, upto)?;
            format!("t{}_{}", key.depth, key.stream_pos)
        }
    };
    let mut ephemeral = Vec::new();
    if let Some(users) = typing {
        ephemeral.push(json!({"type": "m.typing", "content": {"user_ids": users}}));
    }
    if let Some(event) = receipt_event(receipts) {
        ephemeral.push(event);
    }
    let (notifications, highlights) = super::push::unread_counts(conn, room_id, &req.user_id)?;
    let joined = state::members_with(conn, room_id, "join")?.len();
    let invited = state::members_with(conn, room_id, "invite")?.len();
    Ok(Some(json!({
        "timeline": {"events": format_all(conn, &events, req)?, "limited": limited, "prev_batch": prev_batch},
        state_key: {"events": state},
        "ephemeral": {"events": ephemeral},
        "account_data": {"events": []},
        "unread_notifications": {"notification_count": notifications, "highlight_count": highlights},
        "summary": {"m.joined_member_count": joined, "m.invited_member_count": invited},
    })))
}

/// The `m.receipt` event carrying `receipts` (`None` when there are none); shared with the
/// sliding sync receipts extension.
pub(crate) fn receipt_event(receipts: Vec<misc::Receipt>) -> Option<Value> {
    if receipts.is_empty() {
        return None;
    }
    let mut content = Map::new();
    for r in receipts {
        let mut entry = json!({"ts": r.ts});
        if !r.thread_id.is_empty() {
            entry["thread_id"] = json!(r.thread_id);
        }
        let by_type = content.entry(r.event_id).or_insert_with(|| json!({}));
        by_type
            .as_object_mut()
            .expect("receipt entries are objects")
            .entry(r.receipt_type)
            .or_insert_with(|| json!({}))[r.user_id] = entry;
    }
    Some(json!({"type": "m.receipt", "content": content}))
}

/// `{"invite_state": {"events": [...]}}` for a room the user is invited to (or knocked on):
/// the stripped state a remote inviter sent, or the local room's own.
pub(crate) fn invited_room(conn: &Connection, room_id: &str, user_id: &str) -> Result<Value> {
    if !crate::store::federation::participating(conn, room_id)?
        && let Some((event_id, invite_state)) =
            crate::store::federation::remote_invite(conn, room_id, user_id)?
    {
        // An invite from another unit: show the stripped state its server sent, plus the invite.
        let mut stripped: Vec<Value> = serde_json::from_str(&invite_state).unwrap_or_default();
        if let Some(event) = events::get_event(conn, &event_id)?
            && !stripped.iter().any(|e| {
                e.get("type") == Some(&json!("m.room.member"))
                    && e.get("state_key") == Some(&json!(user_id))
            })
        {
            stripped.push(to_stripped_state(&event.pdu));
        }
        return Ok(json!({"invite_state": {"events": stripped}}));
    }
    let mut stripped = Vec::new();
    for kind in INVITE_STATE_TYPES {
        if let Some(id) = state::current_state_id(conn, room_id, kind, "")?
            && let Some(event) = events::get_event(conn, &id)?
        {
            stripped.push(to_stripped_state(&event.pdu));
        }
    }
    if let Some(id) = state::current_state_id(conn, room_id, "m.room.member", user_id)?
        && let Some(event) = events::get_event(conn, &id)?
    {
        stripped.push(to_stripped_state(&event.pdu));
    }
    Ok(json!({"invite_state": {"events": stripped}}))
}

fn left_room(
    conn: &Connection,
    req: &SyncRequest,
    room_id: &str,
    since: Option<i64>,
    leave_pos: i64,
) -> Result<Option<Value>> {
    let after = since.unwrap_or(0);
    let visible = visible_to(conn, room_id, &req.user_id)?;
    let (events, limited) = timeline(
        conn,
        room_id,
        &req.filter.room.timeline,
        &visible,
        after,
        leave_pos,
    )?;
    let (state_key, state) = room_state(conn, req, room_id, since, &events, limited, leave_pos)?;
    let prev_batch = events
        .first()
        .map(|e| format!("t{}_{}", e.pdu.depth, e.stream_pos));
    Ok(Some(json!({
        "timeline": {"events": format_all(conn, &events, req)?, "limited": limited, "prev_batch": prev_batch},
        state_key: {"events": state},
        "account_data": {"events": []},
    })))
}
