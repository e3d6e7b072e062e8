//! `/sync`: what changed for a user since a token, long-polled on the store's commit notifier.
//!
//! A token is `s<stream position>`. Everything a client syncs (events, membership changes,
//! account data, receipts) carries a position from the one writer, so "what is new" is always
//! "rows with `since < pos <= upto`", and tokens stay valid across restarts. A long poll waits
//! on the store's `watch` channel, never on a timer polling the database.
//!
//! With lazy-loaded members (`lazy_load_members`) a room's `state` carries the member events
//! of the timeline's senders, of the room's heroes and of members who changed in a gap, minus
//! the ones the device already has: a sync records what it sent in `lazy_members_sent`, and a
//! later sync counts a record as delivered only when its `since` is at or after the response
//! that carried it (so a retried sync resends). `include_redundant_members` resends them all.
//!
//! The answer is a typed [`SyncResponse`] (`response.rs`), typed down to the event lists.

mod response;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use ruma::{OwnedDeviceId, OwnedUserId, UserId};
use rusqlite::Connection;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::Server;
use super::rooms::load_state_events;
use crate::error::Result;
use crate::matrix::client_format::to_stripped_state;
use crate::matrix::filter::{EventFormat, Filter, RoomEventFilter};
use crate::matrix::visibility::Visible;
use crate::store::events::{self, StoredEvent};
use crate::store::wake::Interest;
use crate::store::{misc, search, state};
pub use response::{
    DeviceLists, Events, InvitedRoom, JoinedRoom, KnockedRoom, LeftRoom, RoomState, RoomSummary,
    Rooms, SyncResponse, Timeline, UnreadNotifications,
};

/// Timeline length when the filter sets none.
const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// How many heroes a room summary names (spec: "the first 5 members").
pub(crate) const HEROES: usize = 5;
/// Longest long-poll we honour.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// A parsed `/sync` request.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// The user syncing.
    pub user_id: OwnedUserId,
    /// Their device (`None`: an application service's request without one).
    pub device_id: Option<OwnedDeviceId>,
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
    /// Rooms holding any relation, read once for a sync that visits every room (initial or
    /// `full_state`) so bundling skips the rest without a probe per room; `None` otherwise.
    pub related_rooms: Option<HashSet<String>>,
}

/// Runs a sync, waiting up to the timeout for something new.
pub async fn sync(server: &Server, mut req: SyncRequest) -> Result<SyncResponse> {
    let deadline = tokio::time::Instant::now() + req.timeout.min(MAX_TIMEOUT);
    let mut positions = server.store.subscribe();
    let mut typing_changes = server.typing.subscribe();
    let mut shutdown = server.shutdown.clone();
    // m.ignored_user_list: nothing those users send reaches the timeline, and their invites
    // are not shown.
    let user = req.user_id.clone();
    let ignored = server
        .store
        .read(move |conn| super::account_data::ignored_users(conn, user.as_str()))
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
        let device = req.device_id.as_deref();
        super::e2ee::ack_to_device(server, &req.user_id, device, acked).await?;
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
        // Presence ages and idle rules are judged against the server's clock.
        let now = server.clock.now_ms();
        let (
            Computed {
                mut response,
                empty,
                to_device_upto,
                lazy_sent,
            },
            interest,
        ) = server
            .store
            .read(move |conn| {
                let computed = compute(conn, &request, upto, &typing, now)?;
                Ok((computed, Interest::of(conn, request.user_id.as_str())?))
            })
            .await?;
        response.next_batch = super::tokens::SyncToken {
            pos: upto,
            typing: typing_now,
            to_device: to_device_upto,
        }
        .to_string();
        let done = !empty || req.since.is_none() || req.full_state || req.timeout.is_zero();
        if done {
            if !lazy_sent.is_empty() {
                let user = req.user_id.clone();
                let device = super::device_key(req.device_id.as_deref()).to_owned();
                server
                    .store
                    // Bookkeeping of what was sent: allowed below the free-space watermark,
                    // so /sync keeps working.
                    .write_bookkeeping(move |tx| {
                        misc::record_lazy_members_sent(tx, user.as_str(), &device, &lazy_sent, upto)
                    })
                    .await?;
            }
            return Ok(response);
        }
        let wake = Wake {
            positions: &mut positions,
            typing: &mut typing_changes,
            shutdown: &mut shutdown,
            deadline,
        };
        if !wake.concerning(server, &interest, upto, typing_now).await {
            return Ok(response);
        }
    }
}

/// What a waiting long-poll (`/sync`, sliding sync) listens to.
pub(super) struct Wake<'a> {
    /// The newest stream position.
    pub positions: &'a mut watch::Receiver<i64>,
    /// The typing serial.
    pub typing: &'a mut watch::Receiver<u64>,
    /// The server's shutdown signal.
    pub shutdown: &'a mut watch::Receiver<bool>,
    /// When the long-poll answers anyway.
    pub deadline: tokio::time::Instant,
}

impl Wake<'_> {
    /// Waits until something after stream position `checked` or typing serial `typing_checked`
    /// concerns `interest` (true: compute again), or the deadline or shutdown (false: answer).
    /// Commits and typing changes elsewhere on the server leave the poller asleep: before,
    /// each of them cost every waiting poller a full computation that found nothing.
    pub async fn concerning(
        self,
        server: &Server,
        interest: &Interest,
        mut checked: i64,
        mut typing_checked: u64,
    ) -> bool {
        loop {
            tokio::select! {
                changed = tokio::time::timeout_at(self.deadline, self.positions.changed()) => {
                    match changed {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) | Err(_) => return false,
                    }
                    let upto = *self.positions.borrow();
                    if server.store.wakes().concerns(checked, upto, interest) {
                        return true;
                    }
                    checked = upto;
                }
                changed = self.typing.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                    let serial = *self.typing.borrow();
                    let rooms = server.typing.changes_since(typing_checked);
                    if rooms.keys().any(|room| interest.has_room(room)) {
                        return true;
                    }
                    typing_checked = serial;
                }
                _ = crate::util::stopped(self.shutdown) => return false,
            }
        }
    }
}

/// One computed response and what goes with it.
struct Computed {
    response: SyncResponse,
    /// Whether it carries nothing new.
    empty: bool,
    /// Where to-device delivery stopped if it was cut short.
    to_device_upto: Option<i64>,
    /// Member events sent under lazy loading that the device did not have:
    /// `(room, member, event_id)`.
    lazy_sent: Vec<(String, String, String)>,
}

/// Computes the response for `(since, upto]`; `now` (milliseconds since the epoch, from the
/// server's [`Clock`](crate::clock::Clock)) is when presence is judged.
fn compute(
    conn: &Connection,
    req: &SyncRequest,
    upto: i64,
    typing: &HashMap<String, Vec<String>>,
    now: i64,
) -> Result<Computed> {
    let since = req.since;
    let after = since.unwrap_or(0);
    let room_filter = &req.filter.room;
    let mut lazy_sent = Vec::new();
    // The user's membership at `since`, and the rooms whose membership went through something
    // other than a join in the gap: a room the user was joined to all along gets an
    // incremental section (a display-name change is one new event), any other a fresh one.
    let memberships = state::memberships_as_of(conn, req.user_id.as_str(), upto)?;
    let (at_since, interrupted, joined_in_gap) = match since {
        Some(since) => {
            let changes = state::membership_changes(conn, req.user_id.as_str(), since, upto)?;
            // Without a change in the gap, the memberships at `since` are those at `upto`.
            let at_since: HashMap<String, String> = if changes.is_empty() {
                memberships
                    .iter()
                    .map(|row| (row.room_id.clone(), row.membership.clone()))
                    .collect()
            } else {
                state::memberships_as_of(conn, req.user_id.as_str(), since)?
                    .into_iter()
                    .map(|row| (row.room_id, row.membership))
                    .collect()
            };
            let (joined, interrupted): (Vec<_>, Vec<_>) = changes
                .into_iter()
                .partition(|change| change.membership == "join");
            let interrupted: BTreeSet<String> = interrupted
                .into_iter()
                .map(|change| change.room_id)
                .collect();
            let joined: BTreeSet<String> =
                joined.into_iter().map(|change| change.room_id).collect();
            (at_since, interrupted, joined)
        }
        None => Default::default(),
    };
    let joined_at_since = |room: &str| at_since.get(room).is_some_and(|m| m == "join");
    // An incremental section of a room the user stayed in has news only from events, receipts
    // or typing in the gap (see `joined_room`'s early return); asking the stream once which
    // rooms have any keeps a sync with a quiet gap from visiting every room. Only rooms the
    // user is joined to now are asked about: the others never take an incremental section.
    let active: Option<BTreeSet<String>> = match since {
        Some(since) if !req.full_state => {
            let joined: Vec<&str> = memberships
                .iter()
                .filter(|row| row.membership == "join")
                .map(|row| row.room_id.as_str())
                .collect();
            let mut active: BTreeSet<String> =
                events::rooms_with_events_between(conn, &joined, since, upto)?
                    .into_iter()
                    .collect();
            active.extend(misc::rooms_with_receipts_between(conn, since, upto)?);
            active.extend(typing.keys().cloned());
            Some(active)
        }
        _ => None,
    };
    let quiet = |room: &str| active.as_ref().is_some_and(|active| !active.contains(room));
    let mut rooms = Rooms::default();

    let account_data = misc::account_data_since(
        conn,
        req.user_id.as_str(),
        if since.is_some() { after } else { 0 },
        upto,
    )?;
    let mut room_account_data: HashMap<String, Vec<Value>> = HashMap::new();
    let mut global_account_data = Vec::new();
    for row in account_data {
        if row.room_id.is_empty() {
            if req.filter.account_data.allows_type(&row.kind) {
                global_account_data.push(account_data_event(row.kind, &row.content));
            }
        } else if room_filter.account_data.allows_type(&row.kind) {
            room_account_data
                .entry(row.room_id)
                .or_default()
                .push(account_data_event(row.kind, &row.content));
        }
    }
    if req.filter.account_data.allows_type("m.push_rules")
        && let Some(event) = super::push::rules_account_data(conn, &req.user_id, since, upto)?
    {
        global_account_data.push(event);
    }

    // A sync visiting every room asks once which of them have relations at all.
    let with_related;
    let req = if active.is_none() {
        let joined: Vec<&str> = memberships
            .iter()
            .filter(|row| row.membership == "join" && room_filter.allows_room(&row.room_id))
            .map(|row| row.room_id.as_str())
            .collect();
        with_related = SyncRequest {
            related_rooms: Some(search::rooms_with_relations(conn, &joined)?),
            ..req.clone()
        };
        &with_related
    } else {
        req
    };
    for state::MembershipRow {
        room_id,
        membership,
        stream_pos: member_pos,
    } in memberships
    {
        if !room_filter.allows_room(&room_id) {
            continue;
        }
        match membership.as_str() {
            "join" => {
                let fresh = since.is_none()
                    || (member_pos > after
                        && (!joined_at_since(&room_id) || interrupted.contains(&room_id)));
                let section = if !fresh && quiet(&room_id) {
                    None
                } else {
                    joined_room(
                        conn,
                        req,
                        &room_id,
                        if fresh { None } else { Some(after) },
                        upto,
                        typing.get(&room_id),
                        &mut lazy_sent,
                    )?
                };
                let data = room_account_data.remove(&room_id).unwrap_or_default();
                let section = section.or_else(|| {
                    (!data.is_empty()).then(|| JoinedRoom::data_only(req.use_state_after))
                });
                if let Some(mut section) = section {
                    section.account_data = Events::of(data);
                    rooms.join.insert(room_id, section);
                }
            }
            "invite" if since.is_none() || member_pos > after => {
                let inviter =
                    state::current_state_id(conn, &room_id, "m.room.member", req.user_id.as_str())?
                        .map(|id| events::get_event(conn, &id))
                        .transpose()?
                        .flatten()
                        .map(|event| event.pdu.sender.to_string());
                if !inviter.is_some_and(|inviter| req.ignored.contains(&inviter)) {
                    let invite_state = Events::of(stripped_state(conn, &room_id, &req.user_id)?);
                    rooms.invite.insert(room_id, InvitedRoom { invite_state });
                }
            }
            "knock" if since.is_none() || member_pos > after => {
                let knock_state = Events::of(stripped_state(conn, &room_id, &req.user_id)?);
                rooms.knock.insert(room_id, KnockedRoom { knock_state });
            }
            "leave" | "ban" => {
                let show = match since {
                    Some(_) => member_pos > after,
                    None => room_filter.include_leave,
                } && !state::is_forgotten(conn, req.user_id.as_str(), &room_id)?;
                if show {
                    // A room joined and left within this batch comes as a fresh view, as a
                    // newly joined room would; one left after being joined at `since` comes
                    // as what changed since.
                    let fresh = !joined_at_since(&room_id) && joined_in_gap.contains(&room_id);
                    let from = since.filter(|_| !req.full_state && !fresh);
                    let section = left_room(conn, req, &room_id, from, member_pos, &mut lazy_sent)?;
                    rooms.leave.insert(room_id, section);
                }
            }
            _ => {}
        }
    }

    let mut presence_rows = crate::store::presence::changed_for(
        conn,
        req.user_id.as_str(),
        if since.is_some() { after } else { 0 },
        upto,
    )?;
    if let Some(since) = since {
        // Users the syncing user newly shares a room with: their presence, changed or not,
        // since the client never had it.
        for user in super::e2ee::newly_sharing(conn, &req.user_id, since, upto)? {
            if !presence_rows.iter().any(|row| row.user_id == user)
                && let Some(row) = crate::store::presence::get(conn, &user)?
            {
                presence_rows.push(row);
            }
        }
    }
    let presence: Vec<Value> = presence_rows
        .iter()
        .filter(|_| req.filter.presence.allows_type("m.presence"))
        .map(|row| {
            json!({
                "type": "m.presence",
                "sender": row.user_id,
                "content": super::presence::content_at(&req.own_server, row, now),
            })
        })
        .collect();
    let keys = super::e2ee::sync_keys(
        conn,
        &req.user_id,
        req.device_id.as_deref(),
        since,
        req.to_device_since,
        upto,
    )?;
    let response = SyncResponse {
        next_batch: super::tokens::stream_token(upto),
        rooms,
        account_data: Events::of(global_account_data),
        presence: Events::of(presence),
        to_device: Events::of(keys.to_device),
        device_lists: DeviceLists {
            changed: keys.changed,
            left: keys.left,
        },
        device_one_time_keys_count: keys.one_time_key_counts,
        device_unused_fallback_key_types: keys.unused_fallback_types,
    };
    let empty = response.is_empty();
    Ok(Computed {
        response,
        empty,
        to_device_upto: keys.to_device_upto,
        lazy_sent,
    })
}

/// An account data event (`{"type", "content"}`) from a stored row; content that does not
/// parse (never written so) shows as `null`. Shared with sliding sync and `/initialSync`.
pub(crate) fn account_data_event(kind: String, content: &str) -> Value {
    let content: Value = serde_json::from_str(content).unwrap_or(Value::Null);
    let mut event = Map::with_capacity(2);
    event.insert("type".to_owned(), Value::String(kind));
    event.insert("content".to_owned(), content);
    Value::Object(event)
}

/// What the syncing user may see of a room's events.
fn visible_to(conn: &Connection, room_id: &str, user_id: &str) -> Result<Visible> {
    super::rooms::user_visibility(conn, room_id, user_id)
}

/// The newest `limit` events of a room in `(after, upto]` that the user may see (`visible`,
/// from [`rooms::visibility`](crate::service::rooms::visibility)) and that pass the filter,
/// oldest first, and whether older such events were left out. A limit of 0 gives no events
/// (`limited` when there were some). Shared with sliding sync,
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
        .min(1000);
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

/// Events as the syncing device sees them (its own transaction IDs, bundled aggregations),
/// in the filter's `event_format`.
pub(crate) fn format_all(
    conn: &Connection,
    events: &[StoredEvent],
    req: &SyncRequest,
) -> Result<Vec<Value>> {
    let viewer = Some((
        req.user_id.as_str(),
        super::device_key(req.device_id.as_deref()),
    ));
    let known = super::aggregations::Known {
        ignored: Some(&req.ignored),
        related_rooms: req.related_rooms.as_ref(),
    };
    let clients = super::aggregations::format_events_known(conn, events, viewer, known)?;
    Ok(match req.filter.event_format {
        EventFormat::Client => clients,
        EventFormat::Federation => events
            .iter()
            .zip(clients)
            .map(|(e, client)| federation_event(e, client))
            .collect(),
    })
}

/// An event in the federation format: the PDU as stored (as it travels between servers),
/// plus the `event_id` (not part of the PDU from room version 3, but clients need it to refer
/// to the event) and the `unsigned` data the client format would carry.
fn federation_event(event: &StoredEvent, client: Value) -> Value {
    let mut pdu: Value = serde_json::from_str(&event.pdu.json).unwrap_or(Value::Null);
    if let Some(object) = pdu.as_object_mut() {
        object.insert("event_id".into(), json!(event.pdu.event_id));
        match client.get("unsigned") {
            Some(unsigned) => object.insert("unsigned".into(), unsigned.clone()),
            None => object.remove("unsigned"),
        };
    }
    pdu
}

/// What lazy loading needs to know about one room for one response.
struct Lazy {
    /// Users whose member events the client should hold: the timeline's senders, the
    /// syncing user and the room's heroes.
    wanted: BTreeSet<String>,
    /// The member events the device was sent and has: member → event ID.
    sent: HashMap<String, String>,
    /// Send the wanted members even if the device has them (`include_redundant_members`,
    /// `full_state`).
    resend: bool,
}

impl Lazy {
    /// Lazy-loading facts for a room when the filter asks for lazy loading, else `None`.
    fn for_room(
        conn: &Connection,
        req: &SyncRequest,
        room_id: &str,
        timeline: &[StoredEvent],
        heroes: &[String],
    ) -> Result<Option<Lazy>> {
        let filter = &req.filter.room.state;
        if !filter.lazy_load_members {
            return Ok(None);
        }
        let mut wanted: BTreeSet<String> =
            timeline.iter().map(|e| e.pdu.sender.to_string()).collect();
        wanted.insert(req.user_id.to_string());
        wanted.extend(heroes.iter().cloned());
        let sent = match req.since {
            Some(since) => {
                let device = super::device_key(req.device_id.as_deref());
                misc::lazy_members_sent(conn, req.user_id.as_str(), device, room_id, since)?
                    .into_iter()
                    .map(|sent| (sent.member, sent.event_id))
                    .collect()
            }
            None => HashMap::new(),
        };
        Ok(Some(Lazy {
            wanted,
            sent,
            resend: filter.include_redundant_members || req.full_state,
        }))
    }

    /// Whether the device already holds this member event.
    fn has(&self, member: &str, event_id: &str) -> bool {
        self.sent.get(member).is_some_and(|id| id == event_id)
    }

    /// The member events of `state` and `timeline` the device did not hold, for
    /// `lazy_members_sent`: `(room, member, event_id)`, the latest per member.
    fn newly_sent(
        &self,
        room_id: &str,
        state: &[StoredEvent],
        timeline: &[StoredEvent],
        out: &mut Vec<(String, String, String)>,
    ) {
        let mut latest: BTreeMap<&str, &str> = BTreeMap::new();
        for event in state.iter().chain(timeline) {
            if event.pdu.kind.to_string() == "m.room.member"
                && let Some(member) = event.pdu.state_key.as_deref()
            {
                latest.insert(member, event.pdu.event_id.as_str());
            }
        }
        out.extend(
            latest
                .into_iter()
                .filter(|(member, id)| !self.has(member, id))
                .map(|(member, id)| (room_id.to_owned(), member.to_owned(), id.to_owned())),
        );
    }
}

/// State events for the `state` section: the state before `boundary` minus, for an
/// incremental sync, what the client had at `since`. With lazy loading, member events only
/// for the wanted members the device lacks and (incrementally) for members who changed;
/// with `gap` false (an incremental sync without a gap) only those wanted members.
#[allow(clippy::too_many_arguments)]
fn state_section(
    conn: &Connection,
    req: &SyncRequest,
    room_id: &str,
    boundary: i64,
    since: Option<i64>,
    timeline: &[StoredEvent],
    lazy: Option<&Lazy>,
    gap: bool,
) -> Result<Vec<StoredEvent>> {
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
    // Without a gap the section holds only wanted members, so only their entries are read;
    // with one, the whole state less what the client had at `since`.
    let (mut map, wanted_members) = if gap {
        let mut map = state::state_at_group(conn, group)?;
        let wanted = lazy.map_or_else(HashMap::new, |lazy| {
            lazy.wanted
                .iter()
                .filter_map(|member| {
                    let key = ("m.room.member".to_owned(), member.clone());
                    map.get(&key).map(|id| (member.clone(), id.clone()))
                })
                .collect()
        });
        if let Some(since) = since
            && let Some(old_group) = state::state_group_before(conn, room_id, since + 1)?
        {
            let old = state::state_at_group(conn, old_group)?;
            map.retain(|key, id| old.get(key) != Some(id));
        }
        (map, wanted)
    } else {
        let wanted = match lazy {
            Some(lazy) => state::member_entries_at_group(
                conn,
                room_id,
                group,
                lazy.wanted.iter().map(String::as_str),
            )?,
            None => HashMap::new(),
        };
        (state::StateMap::new(), wanted)
    };
    if let Some(lazy) = lazy {
        // Incrementally, the members who changed in the gap stay; the initial view keeps
        // only the wanted ones.
        if since.is_none() {
            map.retain(|(kind, key), _| kind != "m.room.member" || lazy.wanted.contains(key));
        }
        for (member, id) in wanted_members {
            if lazy.resend || !lazy.has(&member, &id) {
                map.insert(("m.room.member".to_owned(), member), id);
            }
        }
    }
    // `state` (before the timeline) must not repeat timeline events; `state_after` includes
    // them, since clients then ignore state in the timeline.
    let in_timeline: BTreeSet<&str> = if req.use_state_after {
        BTreeSet::new()
    } else {
        timeline.iter().map(|e| e.pdu.event_id.as_str()).collect()
    };
    // Events the section drops anyway are not loaded.
    map.retain(|_, id| !in_timeline.contains(id.as_str()));
    let events = load_state_events(conn, &map, |kind, _| state_filter.allows_type(kind))?;
    Ok(events
        .into_iter()
        .filter(|e| state_filter.allows(&e.pdu))
        .collect())
}

/// The events of the room's `state` or (with `use_state_after`) `state_after` section.
#[allow(clippy::too_many_arguments)]
fn room_state(
    conn: &Connection,
    req: &SyncRequest,
    room_id: &str,
    since: Option<i64>,
    timeline: &[StoredEvent],
    limited: bool,
    end: i64,
    lazy: Option<&Lazy>,
) -> Result<Vec<StoredEvent>> {
    let diff_from = since.filter(|_| !req.full_state);
    if req.use_state_after {
        let boundary = timeline.last().map(|e| e.stream_pos + 1).unwrap_or(end + 1);
        return state_section(
            conn, req, room_id, boundary, diff_from, timeline, lazy, true,
        );
    }
    let gap = since.is_none() || limited || req.full_state;
    if gap || lazy.is_some() {
        let first_pos = timeline.first().map(|e| e.stream_pos).unwrap_or(end + 1);
        state_section(
            conn, req, room_id, first_pos, diff_from, timeline, lazy, gap,
        )
    } else {
        Ok(Vec::new())
    }
}

/// The room summary's `m.heroes` for a room without a name or canonical alias (`None` for
/// one that has either, whose name the client takes from them): up to [`HEROES`] members
/// other than the user, joined or invited, in the stream order of their member events; the
/// members who left or were banned when there are none. Shared with sliding sync's `heroes`.
///
/// The spec says heroes are required when the name *or* the canonical alias is unset; we
/// send them when the client needs them to name the room (both unset, the spec's room-name
/// algorithm), as other servers do.
pub(crate) fn heroes(
    conn: &Connection,
    room_id: &str,
    user: &UserId,
) -> Result<Option<Vec<String>>> {
    let user_id = user.as_str();
    if state::has_name_or_alias(conn, room_id)? {
        return Ok(None);
    }
    let mut heroes =
        state::members_by_stream_order(conn, room_id, user_id, ("join", "invite"), HEROES)?;
    if heroes.is_empty() {
        heroes = state::members_by_stream_order(conn, room_id, user_id, ("leave", "ban"), HEROES)?;
    }
    Ok(Some(heroes))
}

#[allow(clippy::too_many_arguments)]
fn joined_room(
    conn: &Connection,
    req: &SyncRequest,
    room_id: &str,
    since: Option<i64>,
    upto: i64,
    typing: Option<&Vec<String>>,
    lazy_sent: &mut Vec<(String, String, String)>,
) -> Result<Option<JoinedRoom>> {
    let after = since.unwrap_or(0);
    let visible = visible_to(conn, room_id, req.user_id.as_str())?;
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
    // A limited timeline with no events (`timeline.limit: 0`) still means news.
    if since.is_some()
        && events.is_empty()
        && !limited
        && receipts.is_empty()
        && typing.is_none()
        && !req.full_state
    {
        return Ok(None);
    }
    let heroes = heroes(conn, room_id, &req.user_id)?;
    let lazy = Lazy::for_room(
        conn,
        req,
        room_id,
        &events,
        heroes.as_deref().unwrap_or_default(),
    )?;
    let state = room_state(
        conn,
        req,
        room_id,
        since,
        &events,
        limited,
        upto,
        lazy.as_ref(),
    )?;
    if let Some(lazy) = &lazy {
        lazy.newly_sent(room_id, &state, &events, lazy_sent);
    }
    let prev_batch = match events.first() {
        Some(e) => super::tokens::token_before(e),
        None => super::tokens::topo_token(events::topo_key_after_stream(conn, room_id, upto)?),
    };
    let mut ephemeral = Vec::new();
    if let Some(users) = typing {
        ephemeral.push(typing_event(users));
    }
    if let Some(event) = receipt_event(receipts) {
        ephemeral.push(event);
    }
    let unread = super::push::unread_counts(conn, room_id, &req.user_id)?;
    let counts = state::member_counts(conn, room_id)?;
    Ok(Some(JoinedRoom {
        timeline: Timeline {
            events: format_all(conn, &events, req)?,
            limited,
            prev_batch: Some(prev_batch),
        },
        state: RoomState::new(req.use_state_after, format_all(conn, &state, req)?),
        ephemeral: Events::of(ephemeral),
        account_data: Events::default(),
        unread_notifications: Some(UnreadNotifications {
            notification_count: unread.notifications,
            highlight_count: unread.highlights,
        }),
        summary: RoomSummary {
            heroes,
            joined_member_count: Some(counts.joined),
            invited_member_count: Some(counts.invited),
        },
    }))
}

/// The `m.typing` event naming `users`; shared with the sliding sync typing extension.
pub(crate) fn typing_event(users: &[String]) -> Value {
    json!({"type": "m.typing", "content": {"user_ids": users}})
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

/// The stripped state of a room the user is invited to (or knocked on), with their own member
/// event: what a remote inviter sent, or the local room's own. Shared with sliding sync.
pub(crate) fn stripped_state(
    conn: &Connection,
    room_id: &str,
    user: &UserId,
) -> Result<Vec<Value>> {
    let user_id = user.as_str();
    if !crate::store::dag::participating(conn, room_id)?
        && let Some(crate::store::dag::RemoteInvite {
            event_id,
            invite_state,
        }) = crate::store::dag::remote_invite(conn, room_id, user_id)?
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
        return Ok(stripped);
    }
    let mut stripped = Vec::new();
    for kind in crate::matrix::client_format::STRIPPED_STATE_TYPES {
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
    Ok(stripped)
}

fn left_room(
    conn: &Connection,
    req: &SyncRequest,
    room_id: &str,
    since: Option<i64>,
    leave_pos: i64,
    lazy_sent: &mut Vec<(String, String, String)>,
) -> Result<LeftRoom> {
    let after = since.unwrap_or(0);
    let visible = visible_to(conn, room_id, req.user_id.as_str())?;
    let (events, limited) = timeline(
        conn,
        room_id,
        &req.filter.room.timeline,
        &visible,
        after,
        leave_pos,
    )?;
    let lazy = Lazy::for_room(conn, req, room_id, &events, &[])?;
    let state = room_state(
        conn,
        req,
        room_id,
        since,
        &events,
        limited,
        leave_pos,
        lazy.as_ref(),
    )?;
    if let Some(lazy) = &lazy {
        lazy.newly_sent(room_id, &state, &events, lazy_sent);
    }
    let prev_batch = events.first().map(super::tokens::token_before);
    Ok(LeftRoom {
        timeline: Timeline {
            events: format_all(conn, &events, req)?,
            limited,
            prev_batch,
        },
        state: RoomState::new(req.use_state_after, format_all(conn, &state, req)?),
        account_data: Events::default(),
    })
}
