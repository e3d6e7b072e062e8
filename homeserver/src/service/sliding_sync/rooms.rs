//! The room side of a sliding sync answer: the user's room list ordered by recency, the lists'
//! windows and filters, subscriptions, and each room's result (full the first time a
//! connection sees it or when its config grew, otherwise what changed since it was sent).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rusqlite::Connection;
use serde_json::{Value, json};

use super::connection::{ConnState, SentRoom};
use super::{
    Computed, Hero, ListFilters, ListResponse, RoomConfig, RoomResponse, SlidingSyncRequest,
    SlidingSyncResponse, TypingView, extensions,
};
use crate::error::Result;
use crate::matrix::filter::{Filter, RoomEventFilter};
use crate::matrix::visibility::Visible;
use crate::service::rooms::visibility;
use crate::service::sync::{self, HEROES, SyncRequest};
use crate::store::events::{self, StoredEvent};
use crate::store::misc;
use crate::store::sliding_sync::room_activity;
use crate::store::state::{self, StateMap};

/// A room of the user's list.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub room_id: String,
    pub membership: String,
    /// Stream position of the user's membership event.
    pub member_pos: i64,
    /// Ordering key: position of the newest activity the user may see.
    pub recency: i64,
    /// MSC4186 `bump_stamp`.
    pub bump: i64,
}

/// Which rooms matched the request, with their combined config and the lists naming them.
pub(super) struct Matched {
    pub rooms: BTreeMap<String, (RoomConfig, Vec<String>)>,
    /// Room IDs each list's windows selected.
    pub by_list: BTreeMap<String, Vec<String>>,
    /// Subscribed rooms the user may see.
    pub subscribed: Vec<String>,
    /// Each list's `count`: its rooms after filtering, before windowing.
    pub counts: HashMap<String, usize>,
}

/// What rooms were sent in this answer.
pub(super) struct Sent {
    /// Rooms sent with `initial: true`, with the IDs of their timeline events.
    pub initial: BTreeMap<String, BTreeSet<String>>,
}

/// Computes a whole answer for `(since, upto]` (`since` is `None` for a new connection).
pub(super) fn compute(
    conn: &Connection,
    req: &SlidingSyncRequest,
    ignored: &[String],
    base: &ConnState,
    since: Option<i64>,
    upto: i64,
    typing: &TypingView,
) -> Result<Computed> {
    let view = SyncRequest {
        user_id: req.user_id.clone(),
        device_id: req.device_id.clone(),
        since,
        typing_since: 0,
        to_device_since: None,
        full_state: false,
        filter: Filter::default(),
        timeout: std::time::Duration::ZERO,
        use_state_after: false,
        own_server: String::new(),
        ignored: ignored.to_vec(),
        related_rooms: None,
    };
    let dms = direct_rooms(conn, req.user_id.as_str())?;
    let candidates = room_list(conn, req, &view, base, upto)?;
    let mut lists = BTreeMap::new();
    let matched = match_rules(conn, req, &candidates, &dms, &mut lists)?;
    let by_id: HashMap<&str, &Candidate> =
        candidates.iter().map(|c| (c.room_id.as_str(), c)).collect();
    let list_counts = matched.counts.clone();
    let counts_changed = since.is_some()
        && list_counts
            .iter()
            .any(|(name, count)| base.list_counts.get(name) != Some(count));
    let mut state = ConnState {
        stream_pos: upto,
        typing: typing.serial,
        rooms: base.rooms.clone(),
        list_counts,
    };
    let mut out = BTreeMap::new();
    let mut sent = Sent {
        initial: BTreeMap::new(),
    };
    for (room_id, (config, list_names)) in &matched.rooms {
        let Some(candidate) = by_id.get(room_id.as_str()) else {
            continue;
        };
        let previous = base.rooms.get(room_id);
        let ctx = RoomCtx {
            conn,
            view: &view,
            candidate,
            config,
            lists: list_names,
            is_dm: dms.contains(room_id)
                || invited_as_direct(conn, candidate, req.user_id.as_str())?,
            since,
            upto,
        };
        let Some((result, timeline_ids, initial)) = room_result(&ctx, previous)? else {
            continue;
        };
        if initial {
            sent.initial.insert(room_id.clone(), timeline_ids);
        }
        out.insert(room_id.clone(), result);
        state.rooms.insert(
            room_id.clone(),
            SentRoom {
                upto: if candidate.membership == "join" {
                    upto
                } else {
                    candidate.member_pos
                },
                membership: candidate.membership.clone(),
                config: config.clone(),
            },
        );
    }
    let ext = extensions::compute(conn, req, &matched, &sent, since, upto, typing)?;
    let empty = out.is_empty() && ext.empty && !counts_changed;
    let response = SlidingSyncResponse {
        pos: String::new(),
        txn_id: None,
        lists,
        rooms: out,
        extensions: ext.response,
    };
    Ok(Computed {
        response,
        state,
        empty,
    })
}

/// The rooms in the user's `m.direct` account data.
fn direct_rooms(conn: &Connection, user_id: &str) -> Result<BTreeSet<String>> {
    let Some(raw) = misc::get_account_data(conn, user_id, "", "m.direct")? else {
        return Ok(BTreeSet::new());
    };
    let content: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
    Ok(content
        .as_object()
        .into_iter()
        .flat_map(|by_user| by_user.values())
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect())
}

/// An invite whose member event says `is_direct` counts as a DM before the client files it.
fn invited_as_direct(conn: &Connection, candidate: &Candidate, user_id: &str) -> Result<bool> {
    if candidate.membership != "invite" {
        return Ok(false);
    }
    Ok(
        state_content(conn, &candidate.room_id, "m.room.member", user_id)?
            .is_some_and(|c| c.get("is_direct") == Some(&Value::Bool(true))),
    )
}

/// The server-side room list: joins, invites and knocks, plus rooms the user left or was
/// removed from while this connection knew the room (sent once with the leave), newest first.
fn room_list(
    conn: &Connection,
    req: &SlidingSyncRequest,
    view: &SyncRequest,
    base: &ConnState,
    upto: i64,
) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for state::MembershipRow {
        room_id,
        membership,
        stream_pos: member_pos,
    } in state::memberships_as_of(conn, req.user_id.as_str(), upto)?
    {
        let listed = match membership.as_str() {
            "join" | "knock" => true,
            "invite" => !invite_from_ignored(conn, &room_id, view)?,
            "leave" | "ban" => {
                base.rooms
                    .get(&room_id)
                    .is_some_and(|sent| sent.membership != membership)
                    && !state::is_forgotten(conn, req.user_id.as_str(), &room_id)?
            }
            _ => false,
        };
        if !listed {
            continue;
        }
        let (recency, bump) = if membership == "join" {
            let activity = room_activity(conn, &room_id, upto)?;
            (
                activity.latest.unwrap_or(member_pos).max(member_pos),
                // Backfilled history sits at negative positions; a stamp is never below 0.
                activity.bump.filter(|pos| *pos > 0).unwrap_or(member_pos),
            )
        } else {
            (member_pos, member_pos)
        };
        out.push(Candidate {
            room_id,
            membership,
            member_pos,
            recency,
            bump,
        });
    }
    out.sort_by(|a, b| {
        b.recency
            .cmp(&a.recency)
            .then_with(|| a.room_id.cmp(&b.room_id))
    });
    Ok(out)
}

fn invite_from_ignored(conn: &Connection, room_id: &str, view: &SyncRequest) -> Result<bool> {
    if view.ignored.is_empty() {
        return Ok(false);
    }
    let inviter = state::current_state_id(conn, room_id, "m.room.member", view.user_id.as_str())?
        .map(|id| events::get_event(conn, &id))
        .transpose()?
        .flatten()
        .map(|event| event.pdu.sender.to_string());
    Ok(inviter.is_some_and(|inviter| view.ignored.contains(&inviter)))
}

/// Applies the lists (filters, then windows) and subscriptions; fills each list's `count`.
fn match_rules(
    conn: &Connection,
    req: &SlidingSyncRequest,
    candidates: &[Candidate],
    dms: &BTreeSet<String>,
    lists: &mut BTreeMap<String, ListResponse>,
) -> Result<Matched> {
    let mut matched = Matched {
        rooms: BTreeMap::new(),
        by_list: BTreeMap::new(),
        subscribed: Vec::new(),
        counts: HashMap::new(),
    };
    for (name, list) in &req.lists {
        let mut filtered = Vec::new();
        for candidate in candidates {
            if passes(conn, req.user_id.as_str(), candidate, &list.filters, dms)? {
                filtered.push(candidate);
            }
        }
        lists.insert(
            name.clone(),
            ListResponse {
                count: filtered.len(),
            },
        );
        matched.counts.insert(name.clone(), filtered.len());
        let mut selected = Vec::new();
        for (index, candidate) in filtered.iter().enumerate() {
            let in_window = list.ranges.as_ref().is_none_or(|ranges| {
                ranges
                    .iter()
                    .any(|(start, end)| *start <= index && index <= *end)
            });
            if in_window {
                selected.push(candidate.room_id.clone());
                let entry = matched
                    .rooms
                    .entry(candidate.room_id.clone())
                    .or_insert_with(|| (RoomConfig::default(), Vec::new()));
                entry.0.merge(&list.room);
                entry.1.push(name.clone());
            }
        }
        matched.by_list.insert(name.clone(), selected);
    }
    for (room_id, config) in &req.subscriptions {
        if candidates.iter().any(|c| &c.room_id == room_id) {
            matched
                .rooms
                .entry(room_id.clone())
                .or_insert_with(|| (RoomConfig::default(), Vec::new()))
                .0
                .merge(config);
            matched.subscribed.push(room_id.clone());
        }
    }
    Ok(matched)
}

/// Whether a room passes a list's filters.
fn passes(
    conn: &Connection,
    user_id: &str,
    candidate: &Candidate,
    filters: &ListFilters,
    dms: &BTreeSet<String>,
) -> Result<bool> {
    let room_id = candidate.room_id.as_str();
    if let Some(want) = filters.is_invite
        && want != (candidate.membership == "invite")
    {
        return Ok(false);
    }
    if let Some(want) = filters.is_dm
        && want != (dms.contains(room_id) || invited_as_direct(conn, candidate, user_id)?)
    {
        return Ok(false);
    }
    if let Some(want) = filters.is_encrypted
        && want != state::current_state_id(conn, room_id, "m.room.encryption", "")?.is_some()
    {
        return Ok(false);
    }
    if filters.room_types.is_some() || !filters.not_room_types.is_empty() {
        let room_type = state_content(conn, room_id, "m.room.create", "")?
            .and_then(|c| c.get("type").and_then(Value::as_str).map(str::to_owned));
        if filters.not_room_types.contains(&room_type)
            || filters
                .room_types
                .as_ref()
                .is_some_and(|types| !types.contains(&room_type))
        {
            return Ok(false);
        }
    }
    if let Some(spaces) = &filters.spaces {
        let mut in_space = false;
        for space in spaces {
            if state::membership(conn, space, user_id)?.as_deref() == Some("join")
                && state_content(conn, space, "m.space.child", room_id)?.is_some_and(|c| {
                    c.get("via")
                        .and_then(Value::as_array)
                        .is_some_and(|v| !v.is_empty())
                })
            {
                in_space = true;
                break;
            }
        }
        if !in_space {
            return Ok(false);
        }
    }
    if filters.tags.is_some() || !filters.not_tags.is_empty() {
        let tags: BTreeSet<String> = misc::get_account_data(conn, user_id, room_id, "m.tag")?
            .and_then(|raw| serde_json::from_str::<Value>(&raw).ok())
            .and_then(|c| c.get("tags").and_then(Value::as_object).cloned())
            .map(|tags| tags.keys().cloned().collect())
            .unwrap_or_default();
        if filters.not_tags.iter().any(|t| tags.contains(t))
            || filters
                .tags
                .as_ref()
                .is_some_and(|wanted| !wanted.iter().any(|t| tags.contains(t)))
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The content of a room's current state event, if any.
fn state_content(
    conn: &Connection,
    room_id: &str,
    kind: &str,
    state_key: &str,
) -> Result<Option<Value>> {
    let Some(id) = state::current_state_id(conn, room_id, kind, state_key)? else {
        return Ok(None);
    };
    Ok(events::get_event(conn, &id)?.map(|e| e.pdu.content_value()))
}

/// Everything [`room_result`] needs about one room.
struct RoomCtx<'a> {
    conn: &'a Connection,
    view: &'a SyncRequest,
    candidate: &'a Candidate,
    config: &'a RoomConfig,
    lists: &'a [String],
    is_dm: bool,
    /// The connection's previous position (`None`: a new connection).
    since: Option<i64>,
    upto: i64,
}

/// One room's result, the IDs of its timeline events and whether it is `initial`; `None` when
/// the connection already has everything about it.
fn room_result(
    ctx: &RoomCtx<'_>,
    previous: Option<&SentRoom>,
) -> Result<Option<(RoomResponse, BTreeSet<String>, bool)>> {
    let c = ctx.candidate;
    let expanded = previous.is_some_and(|p| ctx.config.expands(&p.config));
    let membership_changed = previous.is_some_and(|p| p.membership != c.membership);
    let initial = previous.is_none()
        || expanded
        || (membership_changed && c.membership == "join")
        || (membership_changed && matches!(c.membership.as_str(), "invite" | "knock"));
    if !initial && !membership_changed && previous.is_some_and(|p| c.recency <= p.upto) {
        return Ok(None);
    }
    let mut room = RoomResponse {
        initial: initial.then_some(true),
        membership: c.membership.clone(),
        bump_stamp: c.bump,
        lists: ctx.lists.to_vec(),
        is_dm: (initial || ctx.is_dm).then_some(ctx.is_dm),
        ..RoomResponse::default()
    };
    if matches!(c.membership.as_str(), "invite" | "knock") {
        let stripped = sync::stripped_state(ctx.conn, &c.room_id, &ctx.view.user_id)?;
        if c.membership == "invite" {
            room.invite_state = Some(stripped.clone());
        }
        room.stripped_state = Some(stripped);
        return Ok(Some((room, BTreeSet::new(), initial)));
    }
    // Joined, or left/removed: history up to the leave, if the user was ever joined.
    let end = if c.membership == "join" {
        ctx.upto
    } else {
        c.member_pos
    };
    let history = visibility(ctx.conn, &c.room_id, ctx.view.user_id.as_str()).ok();
    let Some(visible) = history else {
        // A rejected invite or a withdrawn knock: only the user's own membership event.
        let own = own_member_event(ctx, end)?;
        room.required_state = Some(own.clone());
        room.timeline = Some(own);
        return Ok(Some((room, BTreeSet::new(), initial)));
    };
    let after = match previous {
        Some(p) if !initial => p.upto,
        _ => 0,
    };
    let (events, limited) = timeline(ctx, &visible, after, end)?;
    let live_after = ctx.since.unwrap_or(i64::MAX);
    let num_live = if initial && ctx.since.is_none() {
        0
    } else {
        events.iter().filter(|e| e.stream_pos > live_after).count()
    };
    if expanded && ctx.config.timeline_limit > previous.map_or(0, |p| p.config.timeline_limit) {
        room.expanded_timeline = Some(true);
        room.unstable_expanded_timeline = Some(true);
    }
    let state_after = state_at(ctx.conn, &c.room_id, end)?;
    let state_before = if initial {
        StateMap::new()
    } else {
        state_at(ctx.conn, &c.room_id, after)?
    };
    room.required_state = Some(required_state(ctx, &state_before, &state_after, &events)?);
    let timeline_ids = events.iter().map(|e| e.pdu.event_id.to_string()).collect();
    let prev_batch = match events.first() {
        Some(e) => crate::service::tokens::token_before(e),
        None => crate::service::tokens::topo_token(events::topo_key_after_stream(
            ctx.conn, &c.room_id, end,
        )?),
    };
    room.timeline = Some(sync::format_all(ctx.conn, &events, ctx.view)?);
    room.prev_batch = Some(prev_batch);
    room.limited = Some(limited);
    room.num_live = Some(num_live);
    describe(ctx, &state_after, &mut room)?;
    Ok(Some((room, timeline_ids, initial)))
}

/// The newest `timeline_limit` events in `(after, end]` (none for a limit of 0, which still
/// says `limited` when events were left out).
fn timeline(
    ctx: &RoomCtx<'_>,
    visible: &Visible,
    after: i64,
    end: i64,
) -> Result<(Vec<StoredEvent>, bool)> {
    let room_id = &ctx.candidate.room_id;
    if ctx.config.timeline_limit == 0 {
        let any = !events::room_events_desc(ctx.conn, room_id, after, end, 1)?.is_empty();
        return Ok((Vec::new(), any));
    }
    let filter = RoomEventFilter {
        limit: Some(ctx.config.timeline_limit as u64),
        not_senders: ctx.view.ignored.clone(),
        ..RoomEventFilter::default()
    };
    sync::timeline(ctx.conn, room_id, &filter, visible, after, end)
}

/// The room's state just after stream position `pos` (empty before its first event).
fn state_at(conn: &Connection, room_id: &str, pos: i64) -> Result<StateMap> {
    match state::state_group_before(conn, room_id, pos.saturating_add(1))? {
        Some(group) => state::state_at_group(conn, group),
        None => Ok(StateMap::new()),
    }
}

/// The user's own membership event as of `end`, in the client format.
fn own_member_event(ctx: &RoomCtx<'_>, end: i64) -> Result<Vec<Value>> {
    let map = state_at(ctx.conn, &ctx.candidate.room_id, end)?;
    let key = ("m.room.member".to_owned(), ctx.view.user_id.to_string());
    let id = map.get(&key).cloned().or(state::current_state_id(
        ctx.conn,
        &ctx.candidate.room_id,
        "m.room.member",
        ctx.view.user_id.as_str(),
    )?);
    let events: Vec<StoredEvent> = id
        .map(|id| events::get_event(ctx.conn, &id))
        .transpose()?
        .flatten()
        .into_iter()
        .collect();
    sync::format_all(ctx.conn, &events, ctx.view)
}

/// `required_state`: the wanted entries of `after` that differ from `before` (all of them
/// for an initial result), lazy members of the timeline, and stubs for wanted entries gone.
fn required_state(
    ctx: &RoomCtx<'_>,
    before: &StateMap,
    after: &StateMap,
    timeline: &[StoredEvent],
) -> Result<Vec<Value>> {
    let lazy: BTreeSet<String> = if ctx.config.lazy_members() {
        timeline
            .iter()
            .flat_map(|e| {
                let target = (e.pdu.kind.to_string() == "m.room.member")
                    .then(|| e.pdu.state_key.clone())
                    .flatten();
                std::iter::once(e.pdu.sender.to_string()).chain(target)
            })
            .collect()
    } else {
        BTreeSet::new()
    };
    let mut picked = StateMap::new();
    for ((kind, key), id) in after {
        let wanted = ctx.config.wants(kind, key);
        let lazy_member = kind == "m.room.member" && lazy.contains(key);
        if (wanted && before.get(&(kind.clone(), key.clone())) != Some(id)) || lazy_member {
            picked.insert((kind.clone(), key.clone()), id.clone());
        }
    }
    let loaded = crate::service::rooms::load_state_events(ctx.conn, &picked, |_, _| true)?;
    let mut out = sync::format_all(ctx.conn, &loaded, ctx.view)?;
    for (kind, key) in before.keys() {
        if !after.contains_key(&(kind.clone(), key.clone())) && ctx.config.wants(kind, key) {
            out.push(json!({"type": kind, "state_key": key}));
        }
    }
    Ok(out)
}

/// Name, avatar, heroes, member counts and unread counts.
fn describe(ctx: &RoomCtx<'_>, state: &StateMap, room: &mut RoomResponse) -> Result<()> {
    let conn = ctx.conn;
    let room_id = &ctx.candidate.room_id;
    let content = |kind: &str| -> Result<Option<Value>> {
        let Some(id) = state.get(&(kind.to_owned(), String::new())) else {
            return Ok(None);
        };
        Ok(events::get_event(conn, id)?.map(|e| e.pdu.content_value()))
    };
    let name = content("m.room.name")?
        .and_then(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
        .filter(|n| !n.is_empty());
    match name {
        Some(name) => room.name = Some(name),
        None => room.heroes = Some(heroes(ctx)?),
    }
    if let Some(avatar) = content("m.room.avatar")? {
        let url = avatar
            .get("url")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty());
        room.avatar = Some(url.map(str::to_owned));
    }
    let counts = state::member_counts(conn, room_id)?;
    room.joined_count = Some(counts.joined);
    room.invited_count = Some(counts.invited);
    if ctx.candidate.membership == "join" {
        let unread = crate::service::push::unread_counts(conn, room_id, &ctx.view.user_id)?;
        room.notification_count = Some(unread.notifications);
        room.highlight_count = Some(unread.highlights);
    }
    Ok(())
}

/// Up to [`HEROES`] other members with their names, picked as `/sync`'s `m.heroes` are
/// (joined or invited, in stream order; those who left when there are none).
fn heroes(ctx: &RoomCtx<'_>) -> Result<Vec<Hero>> {
    let conn = ctx.conn;
    let room_id = &ctx.candidate.room_id;
    let user = ctx.view.user_id.as_str();
    let mut picked =
        state::members_by_stream_order(conn, room_id, user, ("join", "invite"), HEROES)?;
    if picked.is_empty() {
        picked = state::members_by_stream_order(conn, room_id, user, ("leave", "ban"), HEROES)?;
    }
    let mut out = Vec::new();
    for user_id in picked {
        let content = state_content(conn, room_id, "m.room.member", &user_id)?;
        let field = |name: &str| {
            content
                .as_ref()
                .and_then(|c| c.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        out.push(Hero {
            displayname: field("displayname"),
            avatar_url: field("avatar_url"),
            user_id,
        });
    }
    Ok(out)
}
