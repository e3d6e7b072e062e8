//! The membership state machine: join, knock, leave, forget, invite, kick, ban and unban, and
//! the member lists, for rooms this unit participates in (a local member event, built,
//! authorised and stored by `rooms::append_in_tx`). A room held only by other units is
//! `service::federation`'s: its `route` module asks [`participating`] and calls either this
//! module or the federation join / knock / invite / leave flows.
//!
//! Each local change checks its preconditions (kick never unbans, unban only from a ban,
//! invite only by a joined member and never to a joined user) inside the writer transaction
//! that writes the member event, so a concurrent change cannot slip between check and write.
//! An invite of another unit's user is checked with [`check_in_tx`] in the transaction that
//! builds the invite event.

use std::fmt;

use ruma::events::TimelineEventType;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, UserId};
use rusqlite::Connection;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::Server;
use super::rooms::{self, Access};
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::build::NewEvent;
use crate::matrix::client_format;
use crate::store::{WriteTx, events, state};

/// A user's membership of a room (`m.room.member` `membership`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// `join`.
    Join,
    /// `invite`.
    Invite,
    /// `leave` (also a kick, an unban, a rejected invite, a rescinded knock).
    Leave,
    /// `ban`.
    Ban,
    /// `knock`.
    Knock,
}

impl Membership {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Membership::Join => "join",
            Membership::Invite => "invite",
            Membership::Leave => "leave",
            Membership::Ban => "ban",
            Membership::Knock => "knock",
        }
    }

    /// The membership a wire string names; `None` for anything else.
    pub fn parse(raw: &str) -> Option<Membership> {
        Some(match raw {
            "join" => Membership::Join,
            "invite" => Membership::Invite,
            "leave" => Membership::Leave,
            "ban" => Membership::Ban,
            "knock" => Membership::Knock,
            _ => return None,
        })
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `user`'s current membership of `room` as this unit sees it (`None`: never a member, or an
/// unknown value from a peer, which no rule here acts on).
pub fn current(conn: &Connection, room: &str, user: &str) -> Result<Option<Membership>> {
    Ok(state::membership(conn, room, user)?
        .as_deref()
        .and_then(Membership::parse))
}

/// What a member asks to do to another user of the room; each has its own precondition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `/invite`.
    Invite,
    /// `/kick`: a leave, never over a ban (that would be an unban by the back door).
    Kick,
    /// `/ban`.
    Ban,
    /// `/unban`: a leave, only over a ban.
    Unban,
}

/// The rooms `user` is joined to.
pub async fn joined_rooms(server: &Server, user: &UserId) -> Result<Vec<String>> {
    let user = user.to_string();
    server
        .store
        .read(move |conn| state::rooms_with_membership(conn, &user, Membership::Join.as_str()))
        .await
}

/// Whether this unit participates in `room` (holds its state), rather than only knowing of it.
pub async fn participating(server: &Server, room: &OwnedRoomId) -> Result<bool> {
    let key = room.to_string();
    server
        .store
        .read(move |conn| crate::store::dag::participating(conn, &key))
        .await
}

/// Joins `room`, a room this unit participates in (a re-join by a joined user is a no-op).
pub async fn join(
    server: &Server,
    user: OwnedUserId,
    room: OwnedRoomId,
    reason: Option<String>,
) -> Result<()> {
    change(
        server,
        room,
        user.clone(),
        user,
        Membership::Join,
        reason,
        Map::new(),
        None,
    )
    .await?;
    Ok(())
}

/// Knocks on `room`, a room this unit participates in (join rule `knock` or
/// `knock_restricted`; the auth rules refuse a knock anywhere else).
pub async fn knock(
    server: &Server,
    user: OwnedUserId,
    room: OwnedRoomId,
    reason: Option<String>,
) -> Result<()> {
    change(
        server,
        room,
        user.clone(),
        user,
        Membership::Knock,
        reason,
        Map::new(),
        None,
    )
    .await?;
    Ok(())
}

/// Parses a room ID named by a client (`M_INVALID_PARAM` when it is not one).
pub fn parse_room(raw: &str) -> Result<OwnedRoomId> {
    OwnedRoomId::try_from(raw)
        .map_err(|_| Error::invalid_param(format!("{raw:?} is not a valid room ID")))
}

/// Leaves `room`, a room this unit participates in.
pub async fn leave(
    server: &Server,
    user: OwnedUserId,
    room: OwnedRoomId,
    reason: Option<String>,
) -> Result<()> {
    change(
        server,
        room,
        user.clone(),
        user,
        Membership::Leave,
        reason,
        Map::new(),
        None,
    )
    .await?;
    Ok(())
}

/// Forgets a room the user has left or was banned from (`M_BAD_JSON`-coded 400 while still
/// joined, invited or knocking; 404 when never a member).
pub async fn forget(server: &Server, user: &UserId, room: OwnedRoomId) -> Result<()> {
    let user = user.to_string();
    server
        .store
        .write(move |tx| {
            let raw = state::membership(tx, room.as_str(), &user)?;
            match raw.as_deref().map(Membership::parse) {
                Some(Some(Membership::Join | Membership::Invite | Membership::Knock)) => Err(
                    Error::bad_json("You must leave the room before forgetting it"),
                ),
                None => Err(Error::not_found("You are not a member of this room")),
                // Leave, ban, or a value this unit does not know: a past membership.
                Some(_) => state::set_forgotten(tx, &user, room.as_str(), true),
            }
        })
        .await
}

/// A member's invite, kick, ban or unban of `target` in a room this unit participates in: a
/// local member event whose precondition is checked in the transaction that writes it. (An
/// invite of another unit's user goes through that unit: `service::federation::route::act`.)
pub async fn act(
    server: &Server,
    sender: OwnedUserId,
    room: OwnedRoomId,
    target: OwnedUserId,
    reason: Option<String>,
    action: Action,
) -> Result<()> {
    super::require_allowed_user(server, &target)?;
    if action == Action::Invite && target.server_name() == server.server_name() {
        // An unknown local user in an appservice's namespace: the appservice may create it
        // before the invite is checked (spec: Application Service API, "Querying").
        let key = target.to_string();
        let known = server
            .store
            .read(move |conn| crate::store::accounts::get_user(conn, &key).map(|u| u.is_some()))
            .await?;
        if !known {
            super::appservice::query::user_exists(server, &target).await;
        }
    }
    let membership = match action {
        Action::Invite => Membership::Invite,
        Action::Ban => Membership::Ban,
        Action::Kick | Action::Unban => Membership::Leave,
    };
    change(
        server,
        room,
        sender,
        target,
        membership,
        reason,
        Map::new(),
        Some(action),
    )
    .await?;
    Ok(())
}

/// The precondition of `action` by `sender` on `target` against the room's current state, for
/// the writer transaction that writes (or, for a remote invite, builds) the member event.
pub fn check_in_tx(
    tx: &WriteTx<'_>,
    room: &str,
    sender: &str,
    target: &UserId,
    action: Action,
    local_target: bool,
) -> Result<()> {
    let theirs = state::membership(tx, room, target.as_str())?;
    let theirs = theirs.as_deref().map(|m| Membership::parse(m).ok_or(m));
    match action {
        Action::Invite => {
            if current(tx, room, sender)? != Some(Membership::Join) {
                return Err(Error::forbidden("You are not joined to this room"));
            }
            // Deviation: the spec documents no 404 for /invite, but an invite to a local user
            // who does not exist would be an event nobody can ever act on; M_NOT_FOUND says why.
            if local_target && crate::store::accounts::get_user(tx, target.as_str())?.is_none() {
                return Err(Error::not_found(format!(
                    "{target} does not exist on this unit"
                )));
            }
            if theirs == Some(Ok(Membership::Join)) {
                return Err(Error::forbidden(format!("{target} is already in the room")));
            }
        }
        Action::Kick => {
            if theirs == Some(Ok(Membership::Ban)) {
                return Err(Error::forbidden(format!(
                    "{target} is banned; unban them instead of kicking"
                )));
            }
            if matches!(theirs, None | Some(Ok(Membership::Leave))) {
                return Err(Error::forbidden(format!(
                    "{target} is not a member of this room"
                )));
            }
        }
        Action::Unban => {
            if theirs != Some(Ok(Membership::Ban)) {
                return Err(Error::forbidden(format!("{target} is not banned")));
            }
        }
        // The auth rules decide who may ban whom.
        Action::Ban => {}
    }
    Ok(())
}

/// Writes a local member event for `target` in a room this unit participates in, with
/// `action`'s precondition checked in the same transaction. A re-join by a joined user returns
/// the existing event; a join adds the user's profile and, for a restricted room, the local
/// member who authorises it.
#[allow(clippy::too_many_arguments)]
pub async fn change(
    server: &Server,
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    target: OwnedUserId,
    membership: Membership,
    reason: Option<String>,
    extra: Map<String, Value>,
    action: Option<Action>,
) -> Result<OwnedEventId> {
    let (displayname, avatar) = if membership == Membership::Join {
        rooms::profile_of(server, &target).await?
    } else {
        (None, None)
    };
    let signer = std::sync::Arc::clone(&server.signer);
    let local_target = target.server_name() == server.server_name();
    server
        .store
        .write(move |tx| {
            if let Some(action) = action {
                check_in_tx(tx, room_id.as_str(), sender.as_str(), &target, action, local_target)?;
            }
            if state::get_room(tx, room_id.as_str())?.is_none() {
                return Err(Error::not_found(
                    "This room is not known on this unit (joining rooms on other units needs federation)",
                ));
            }
            let raw = state::membership(tx, room_id.as_str(), target.as_str())?;
            let now = raw.as_deref().and_then(Membership::parse);
            // Idempotent no-op keeps clients happy (re-join).
            if membership == Membership::Join
                && now == Some(Membership::Join)
                && sender == target
                && let Some(id) =
                    state::current_state_id(tx, room_id.as_str(), "m.room.member", target.as_str())?
            {
                return OwnedEventId::try_from(id).map_err(|err| Error::internal(err.to_string()));
            }
            if membership == Membership::Leave && sender == target && raw.is_none() {
                return Err(Error::forbidden("You are not a member of this room"));
            }
            let mut content = extra;
            content.insert("membership".to_owned(), json!(membership.as_str()));
            if let Some(reason) = reason {
                content.insert("reason".to_owned(), json!(reason));
            }
            if let Some(name) = displayname {
                content.entry("displayname").or_insert(json!(name));
            }
            if let Some(url) = avatar {
                content.entry("avatar_url").or_insert(json!(url));
            }
            if membership == Membership::Join
                && sender == target
                && !matches!(now, Some(Membership::Join | Membership::Invite))
                && let Some(authoriser) = rooms::restricted_join_authoriser(
                    tx,
                    room_id.as_str(),
                    target.as_str(),
                    signer.server_name.as_str(),
                )?
            {
                content.insert(
                    "join_authorised_via_users_server".to_owned(),
                    json!(authoriser),
                );
            }
            let event = NewEvent::state(
                TimelineEventType::RoomMember,
                target.as_str(),
                Value::Object(content),
            );
            Ok(rooms::append_in_tx(tx, &signer, &room_id, &sender, event, None)?
                .event_id
                .clone())
        })
        .await
}

/// Which member events `/members` returns.
#[derive(Debug, Clone, Default)]
pub struct MembersFilter {
    /// Only this membership.
    pub membership: Option<String>,
    /// Not this membership.
    pub not_membership: Option<String>,
    /// The stream position to read the member list at (from the `at` token).
    pub at: Option<i64>,
}

impl MembersFilter {
    /// Whether a member event with this `membership` passes `membership` and
    /// `not_membership`.
    fn admits(&self, membership: &str) -> bool {
        self.membership.as_deref().is_none_or(|m| m == membership)
            && self.not_membership.as_deref() != Some(membership)
    }
}

/// `/members`: the member events of `room` as `user` may see them (a former member sees the
/// list as it was when they left), filtered, in the client format.
pub async fn members(
    server: &Server,
    user: &UserId,
    room: OwnedRoomId,
    filter: MembersFilter,
) -> Result<Vec<Box<RawValue>>> {
    let user = user.to_string();
    server
        .store
        .read(move |conn| {
            let visible = rooms::membership_access(conn, room.as_str(), &user)?;
            let limit = match (visible, filter.at) {
                (Access::All, None) => None,
                (Access::All, Some(pos)) => Some(pos),
                (Access::UpTo(max), Some(pos)) => Some(pos.min(max)),
                (Access::UpTo(max), None) => Some(max),
            };
            let with_history = state::members_with_history(conn, room.as_str())?;
            match limit {
                None => current_members(conn, room.as_str(), &filter, &with_history),
                Some(pos) => {
                    let map = match state::state_group_before(conn, room.as_str(), pos + 1)? {
                        Some(group) => state::state_at_group(conn, group)?,
                        None => Default::default(),
                    };
                    let members =
                        rooms::load_state_events(conn, &map, |kind, _| kind == "m.room.member")?;
                    let mut out = Vec::new();
                    for event in members {
                        let content = event.pdu.content_value();
                        let membership = content
                            .get("membership")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        if !filter.admits(membership) {
                            continue;
                        }
                        let may_replace = event
                            .pdu
                            .state_key
                            .as_deref()
                            .is_none_or(|key| with_history.contains(key));
                        out.push(raw(rooms::client_event_with(
                            conn,
                            &event,
                            None,
                            may_replace,
                        )?)?);
                    }
                    Ok(out)
                }
            }
        })
        .await
}

/// `/members` of the room's current state: one query for every member event, each written
/// straight from its stored JSON unless it needs more than its age in `unsigned` (it was
/// redacted, or its user has an earlier member event it may replace), which takes the general
/// path. A room of 10,000 members parsed and rebuilt every event otherwise.
fn current_members(
    conn: &Connection,
    room: &str,
    filter: &MembersFilter,
    with_history: &std::collections::HashSet<String>,
) -> Result<Vec<Box<RawValue>>> {
    let now = crate::util::now_ms();
    let mut out = Vec::new();
    for row in events::current_state_rows(conn, room, "m.room.member")? {
        if !filter.admits(row.membership.as_deref().unwrap_or_default()) {
            continue;
        }
        let may_replace = with_history.contains(&row.state_key);
        if row.redacted_by.is_none()
            && !may_replace
            && let Some(event) = client_format::state_event_with_age(&row.event_id, &row.json, now)
        {
            out.push(event);
        } else if let Some(event) = events::get_event(conn, &row.event_id)? {
            out.push(raw(rooms::client_event_with(
                conn,
                &event,
                None,
                may_replace,
            )?)?);
        }
    }
    Ok(out)
}

/// A built client event as raw JSON, to sit in a list with the ones written directly.
fn raw(event: Value) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(&event)
        .map_err(|err| Error::internal(format!("serialising a client event: {err}")))
}

/// One entry of `/joined_members`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JoinedMember {
    /// From the member event's `displayname`.
    pub display_name: Option<Value>,
    /// From the member event's `avatar_url`.
    pub avatar_url: Option<Value>,
}

/// `/joined_members`: the joined members of a room `user` is joined to, with the display
/// name and avatar of their member events.
pub async fn joined_members(
    server: &Server,
    user: &UserId,
    room: OwnedRoomId,
) -> Result<std::collections::BTreeMap<String, JoinedMember>> {
    let user = user.to_string();
    server
        .store
        .read(move |conn| {
            if current(conn, room.as_str(), &user)? != Some(Membership::Join) {
                return Err(Error::forbidden("You are not joined to this room"));
            }
            let mut joined = std::collections::BTreeMap::new();
            for member in state::members_with(conn, room.as_str(), Membership::Join.as_str())? {
                let content =
                    match state::current_state_id(conn, room.as_str(), "m.room.member", &member)? {
                        Some(id) => events::get_event(conn, &id)?.map(|e| e.pdu.content_value()),
                        None => None,
                    };
                let field = |name: &str| content.as_ref().and_then(|c| c.get(name)).cloned();
                joined.insert(
                    member,
                    JoinedMember {
                        display_name: field("displayname"),
                        avatar_url: field("avatar_url"),
                    },
                );
            }
            Ok(joined)
        })
        .await
}

/// Refuses third-party invites (`id_server` / `medium` in the body): no identity server here.
pub fn refuse_third_party_invite(body: &Value) -> Result<()> {
    if body.get("id_server").is_some() || body.get("medium").is_some() {
        return Err(Error::new(
            ErrorCode::ThreepidDenied,
            "Third-party invites are not available on this unit",
        ));
    }
    Ok(())
}
