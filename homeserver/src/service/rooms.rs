//! Rooms: creating them, appending local events (build → authorise → persist), memberships,
//! redactions, and reading room state and history with visibility checks.
//!
//! Every local event is built *inside* the writer's transaction, so concurrent sends to one
//! room are serialised by the single writer and always extend the room's one forward extremity
//! instead of forking the DAG.

use std::collections::HashMap;
use std::sync::Arc;

use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::{EventsReferenceFormatVersion, RoomVersionRules};
use ruma::state_res::{
    auth_types_for_event, check_state_dependent_auth_rules, check_state_independent_auth_rules,
};
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedDeviceId, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, RoomVersionId, UserId,
};
use serde_json::{Value, json};

use super::persist::{self, CurrentState};
use super::{Server, Signer};
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::build::{BuildError, NewEvent, Placement, build_event, new_legacy_room_id};
use crate::matrix::pdu::{Pdu, reference_hash_of};
use crate::matrix::rules_for;
use crate::matrix::visibility::{
    HistoryVisibility, Membership, Visible, visible_to_server, visible_to_user,
};
use crate::store::wake::Audience;
use crate::store::{WriteTx, events, misc, state};
use crate::util::now_ms;

/// Most prev_events a new local event references.
const MAX_PREV_EVENTS: usize = 20;

fn rules_of(version: &str) -> Result<(RoomVersionId, RoomVersionRules)> {
    let id = RoomVersionId::try_from(version)
        .map_err(|_| Error::internal(format!("stored room version {version:?} invalid")))?;
    let rules = rules_for(&id)
        .ok_or_else(|| Error::internal(format!("room version {version} unsupported")))?;
    Ok((id, rules))
}

fn map_build_error(err: BuildError) -> Error {
    match err {
        BuildError::NotCanonical(msg) => Error::bad_json(msg),
        err @ BuildError::FieldTooLong(_) => Error::bad_json(err.to_string()),
        BuildError::TooLarge => Error::new(ErrorCode::TooLarge, "Event is larger than 65536 bytes"),
        BuildError::Signing(msg) => Error::internal(msg),
    }
}

/// Loads a stored event as a PDU.
fn load_pdu(conn: &rusqlite::Connection, event_id: &str) -> Result<Option<Pdu>> {
    Ok(events::get_event(conn, event_id)?.map(|e| e.pdu))
}

/// Where a new event would go in a room right now: its DAG parents, depth and auth events.
pub struct Position {
    /// The room's version rules.
    pub rules: RoomVersionRules,
    /// The room's version.
    pub version: String,
    /// Current forward extremities.
    pub prev_events: Vec<OwnedEventId>,
    /// One more than the deepest prev event.
    pub depth: u64,
    /// Auth events selected from the current state.
    pub auth_events: Vec<OwnedEventId>,
    /// Those auth events (plus the create event), parsed.
    pub auth_pdus: HashMap<OwnedEventId, Pdu>,
    /// Room versions 1 and 2: `{"sha256": reference_hash}` of each prev and auth event.
    pub reference_hashes: HashMap<OwnedEventId, Value>,
    /// The room's current state group.
    pub current_group: Option<i64>,
}

/// Computes where `event` from `sender` would go on top of the room's current state.
pub fn position_in_tx(
    tx: &WriteTx<'_>,
    room_id: &RoomId,
    sender: &UserId,
    event: &NewEvent,
) -> Result<Position> {
    let room =
        state::get_room(tx, room_id.as_str())?.ok_or_else(|| Error::not_found("Unknown room"))?;
    let (_, rules) = rules_of(&room.room_version)?;
    let extremities = events::forward_extremities(tx, room_id.as_str())?;
    let depth = extremities.iter().map(|e| e.depth).max().unwrap_or(0) + 1;
    let prev_events: Vec<OwnedEventId> = extremities
        .into_iter()
        .rev()
        .take(MAX_PREV_EVENTS)
        .map(|e| e.event_id)
        .collect();

    let content_raw = serde_json::value::to_raw_value(&event.content)
        .map_err(|err| Error::bad_json(err.to_string()))?;
    let auth_types = auth_types_for_event(
        &event.kind,
        sender,
        event.state_key.as_deref(),
        &content_raw,
        &rules.authorization,
    )
    .map_err(Error::bad_json)?;
    let mut auth_events = Vec::new();
    let mut auth_pdus: HashMap<OwnedEventId, Pdu> = HashMap::new();
    for (kind, key) in auth_types {
        if let Some(id) = state::current_state_id(tx, room_id.as_str(), &kind.to_string(), &key)?
            && let Some(pdu) = tx.pdu(&id)?
        {
            auth_events.push(pdu.event_id.clone());
            auth_pdus.insert(pdu.event_id.clone(), pdu);
        }
    }
    // Before v12 the create event is always an auth event (auth_types includes it); from v12 it
    // is implied by the room ID but the auth rules still need to fetch it.
    if let Some(id) = state::current_state_id(tx, room_id.as_str(), "m.room.create", "")?
        && !auth_pdus
            .values()
            .any(|p| p.kind == TimelineEventType::RoomCreate)
        && let Some(pdu) = tx.pdu(&id)?
    {
        auth_pdus.insert(pdu.event_id.clone(), pdu);
    }
    let mut reference_hashes = HashMap::new();
    if rules.events_reference_format == EventsReferenceFormatVersion::V1 {
        for id in prev_events.iter().chain(&auth_events) {
            let pdu = tx
                .pdu(id.as_str())?
                .ok_or_else(|| Error::internal(format!("referenced event {id} not stored")))?;
            let hash = reference_hash_of(&pdu, &rules).map_err(|e| Error::internal(e.0))?;
            reference_hashes.insert(id.clone(), json!({ "sha256": hash }));
        }
    }
    Ok(Position {
        rules,
        version: room.room_version,
        prev_events,
        depth,
        auth_events,
        auth_pdus,
        reference_hashes,
        current_group: room.current_state_group,
    })
}

/// Builds, authorises and persists one local event on top of the room's current state, and
/// queues it for every peer in the room. Runs inside the writer transaction.
pub fn append_in_tx(
    tx: &mut WriteTx<'_>,
    signer: &Signer,
    room_id: &RoomId,
    sender: &UserId,
    event: NewEvent,
    txn: Option<(&str, &str)>,
) -> Result<Pdu> {
    let now = MilliSecondsSinceUnixEpoch::now();
    append_at_in_tx(tx, signer, room_id, sender, event, txn, now)
}

/// [`append_in_tx`] with a given `origin_server_ts` (an application service's `ts`
/// parameter); the event still goes at the tip of the room, as the spec says.
pub fn append_at_in_tx(
    tx: &mut WriteTx<'_>,
    signer: &Signer,
    room_id: &RoomId,
    sender: &UserId,
    event: NewEvent,
    txn: Option<(&str, &str)>,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
) -> Result<Pdu> {
    let (pdu, rules, current_group) =
        build_checked_on_top(tx, signer, room_id, sender, event, origin_server_ts)?;
    persist_in_tx(tx, &rules, &pdu, current_group, txn)?;
    enqueue_for_peers_in_tx(tx, signer, &pdu, None)?;
    Ok(pdu)
}

/// Builds, signs and authorises a local event against the current state without storing it
/// (for invites, which the invitee's server must countersign first).
pub fn build_checked_in_tx(
    tx: &mut WriteTx<'_>,
    signer: &Signer,
    room_id: &RoomId,
    sender: &UserId,
    event: NewEvent,
) -> Result<Pdu> {
    let now = MilliSecondsSinceUnixEpoch::now();
    build_checked_at_in_tx(tx, signer, room_id, sender, event, now)
}

/// [`build_checked_in_tx`] with a given `origin_server_ts`.
pub fn build_checked_at_in_tx(
    tx: &mut WriteTx<'_>,
    signer: &Signer,
    room_id: &RoomId,
    sender: &UserId,
    event: NewEvent,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
) -> Result<Pdu> {
    build_checked_on_top(tx, signer, room_id, sender, event, origin_server_ts).map(|(pdu, ..)| pdu)
}

/// [`build_checked_at_in_tx`], also returning the room's rules and the current state group the
/// event was built on, so appending it needs no second look at the room.
fn build_checked_on_top(
    tx: &mut WriteTx<'_>,
    signer: &Signer,
    room_id: &RoomId,
    sender: &UserId,
    event: NewEvent,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
) -> Result<(Pdu, RoomVersionRules, Option<i64>)> {
    let Position {
        rules,
        prev_events,
        depth,
        auth_events,
        auth_pdus,
        reference_hashes,
        current_group,
        ..
    } = position_in_tx(tx, room_id, sender, &event)?;
    let pdu = build_event(
        event,
        Placement {
            rules: &rules,
            room_id: Some(room_id),
            sender,
            prev_events,
            depth,
            auth_events,
            reference_hashes,
            origin_server_ts,
            server_name: &signer.server_name,
            key: &signer.key,
        },
    )
    .map_err(map_build_error)?;

    check_state_independent_auth_rules(&rules.authorization, &pdu, |id| auth_pdus.get(id).cloned())
        .map_err(Error::forbidden)?;
    let reader: &WriteTx<'_> = tx;
    check_state_dependent_auth_rules(
        &rules.authorization,
        &pdu,
        |kind: &StateEventType, key: &str| {
            let id = state::current_state_id(reader, room_id.as_str(), &kind.to_string(), key)
                .ok()??;
            reader.pdu(&id).ok()?
        },
    )
    .map_err(Error::forbidden)?;

    Ok((pdu, rules, current_group))
}

/// Queues `pdu` for every other server with a joined member in its room (and, for a member
/// event about a remote user, that user's server), in the transaction that stored it.
pub fn enqueue_for_peers_in_tx(
    tx: &WriteTx<'_>,
    signer: &Signer,
    pdu: &Pdu,
    except: Option<&str>,
) -> Result<()> {
    let own = signer.server_name.as_str();
    let mut servers: std::collections::BTreeSet<String> =
        state::joined_servers(tx, pdu.room_id.as_str())?
            .into_iter()
            .collect();
    if pdu.kind == TimelineEventType::RoomMember
        && let Some(target) = pdu.state_key.as_deref().and_then(|k| k.split_once(':'))
    {
        servers.insert(target.1.to_owned());
    }
    let now = now_ms();
    for server in servers
        .iter()
        .filter(|s| s.as_str() != own && Some(s.as_str()) != except)
    {
        crate::store::outbox::enqueue(tx, server, "pdu", pdu.event_id.as_str(), now)?;
    }
    Ok(())
}

/// Stores an authorised local event, built on the room's current state, with its state group,
/// and applies it to the room ([`persist::apply_in_tx`]: extremities, redaction, current
/// state, push). Returns its stream position.
fn persist_in_tx(
    tx: &mut WriteTx<'_>,
    rules: &RoomVersionRules,
    pdu: &Pdu,
    current_group: Option<i64>,
    txn: Option<(&str, &str)>,
) -> Result<i64> {
    let pos = tx.next_stream_pos(Audience::of_event(pdu));
    let group = match &pdu.state_key {
        Some(key) => {
            let mut delta = state::StateMap::new();
            delta.insert(
                (pdu.kind.to_string(), key.clone()),
                pdu.event_id.to_string(),
            );
            Some(state::new_state_group(
                tx,
                pdu.room_id.as_str(),
                current_group,
                &delta,
            )?)
        }
        None => current_group,
    };
    events::insert_event(tx, pdu, pos, group, txn)?;
    persist::apply_in_tx(tx, rules, pdu, pos, CurrentState::OnTop(group))?;
    Ok(pos)
}

/// What `/createRoom` asked for, already validated by the handler.
#[derive(Debug, Default)]
pub struct CreateRoom {
    /// Room version (default when `None`).
    pub version: Option<RoomVersionId>,
    /// Extra create content.
    pub creation_content: serde_json::Map<String, Value>,
    /// `public_chat`, `private_chat` or `trusted_private_chat`.
    pub preset: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Topic.
    pub topic: Option<String>,
    /// Local alias to create (full alias).
    pub alias: Option<String>,
    /// Users to invite.
    pub invite: Vec<OwnedUserId>,
    /// Extra state events: (type, state_key, content).
    pub initial_state: Vec<(String, String, Value)>,
    /// Overrides merged into the power levels content.
    pub power_level_override: Option<serde_json::Map<String, Value>>,
    /// Whether this is a DM (sets `is_direct` on invites).
    pub is_direct: bool,
    /// Publish in the local directory.
    pub public: bool,
}

/// Creates a room with its whole initial event chain in one transaction. Only local users of
/// `req.invite` are invited here; users of other units are invited through their unit
/// (`service::federation::invites::create_room`, what `/createRoom` calls).
pub async fn create_room(
    server: &Server,
    creator: OwnedUserId,
    req: CreateRoom,
) -> Result<OwnedRoomId> {
    let signer = Arc::clone(&server.signer);
    let (displayname, avatar) = profile_of(server, &creator).await?;
    server
        .store
        .write(move |tx| create_room_in_tx(tx, &signer, &creator, req, displayname, avatar))
        .await
}

fn create_room_in_tx(
    tx: &mut WriteTx<'_>,
    signer: &Signer,
    creator: &UserId,
    req: CreateRoom,
    displayname: Option<String>,
    avatar: Option<String>,
) -> Result<OwnedRoomId> {
    let version = req.version.unwrap_or(crate::matrix::DEFAULT_ROOM_VERSION);
    let rules = rules_for(&version).ok_or_else(|| {
        Error::new(
            ErrorCode::UnsupportedRoomVersion,
            "Unsupported room version",
        )
    })?;
    if let Some(alias) = &req.alias
        && misc::get_alias(tx, alias)?.is_some()
    {
        return Err(Error::new(ErrorCode::RoomInUse, "Room alias already taken"));
    }

    // 1. m.room.create
    let mut create_content = req.creation_content.clone();
    create_content.insert("room_version".to_owned(), json!(version.as_str()));
    if !rules.authorization.use_room_create_sender {
        create_content.insert("creator".to_owned(), json!(creator));
    }
    let legacy_room_id = (!rules.authorization.room_create_event_id_as_room_id)
        .then(|| new_legacy_room_id(&signer.server_name));
    let create = build_event(
        NewEvent::state(
            TimelineEventType::RoomCreate,
            "",
            Value::Object(create_content),
        ),
        Placement {
            rules: &rules,
            room_id: legacy_room_id.as_deref(),
            sender: creator,
            prev_events: vec![],
            depth: 1,
            auth_events: vec![],
            reference_hashes: HashMap::new(),
            origin_server_ts: MilliSecondsSinceUnixEpoch::now(),
            server_name: &signer.server_name,
            key: &signer.key,
        },
    )
    .map_err(map_build_error)?;
    check_state_independent_auth_rules(&rules.authorization, &create, |_| None::<Pdu>)
        .map_err(|err| Error::bad_json(format!("invalid create event: {err}")))?;
    let room_id = create.room_id.clone();
    state::create_room(
        tx,
        room_id.as_str(),
        version.as_str(),
        creator.as_str(),
        now_ms(),
    )?;
    persist_in_tx(tx, &rules, &create, None, None)?;

    let append = |tx: &mut WriteTx<'_>, event: NewEvent| {
        append_in_tx(tx, signer, &room_id, creator, event, None)
    };

    // 2. creator's join
    let mut member = json!({"membership": "join"});
    if let Some(name) = &displayname {
        member["displayname"] = json!(name);
    }
    if let Some(url) = &avatar {
        member["avatar_url"] = json!(url);
    }
    append(
        tx,
        NewEvent::state(TimelineEventType::RoomMember, creator.as_str(), member),
    )?;

    // 3. power levels
    let preset = req.preset.as_deref().unwrap_or(if req.public {
        "public_chat"
    } else {
        "private_chat"
    });
    let mut users = serde_json::Map::new();
    if !rules.authorization.explicitly_privilege_room_creators {
        users.insert(creator.to_string(), json!(100));
    }
    if preset == "trusted_private_chat" {
        for invitee in &req.invite {
            users.insert(invitee.to_string(), json!(100));
        }
    }
    let mut power = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
            "m.room.server_acl": 100, "m.room.encryption": 100,
        },
        "events_default": 0, "state_default": 50, "ban": 50, "kick": 50, "redact": 50,
        "invite": 0,
        "notifications": {"room": 50},
    });
    if let Some(overrides) = req.power_level_override {
        let object = power.as_object_mut().expect("literal object");
        for (key, value) in overrides {
            object.insert(key, value);
        }
    }
    append(
        tx,
        NewEvent::state(TimelineEventType::RoomPowerLevels, "", power),
    )?;

    // 4. alias
    if let Some(alias) = &req.alias {
        misc::create_alias(tx, alias, room_id.as_str(), creator.as_str())?;
        append(
            tx,
            NewEvent::state(
                TimelineEventType::RoomCanonicalAlias,
                "",
                json!({"alias": alias}),
            ),
        )?;
    }

    // 5. preset state
    let (join_rule, history, guest) = match preset {
        "public_chat" => ("public", "shared", "forbidden"),
        "trusted_private_chat" | "private_chat" => ("invite", "shared", "can_join"),
        other => return Err(Error::bad_json(format!("unknown preset {other:?}"))),
    };
    let overridden = |kind: &str| {
        req.initial_state
            .iter()
            .any(|(t, k, _)| t == kind && k.is_empty())
    };
    if !overridden("m.room.join_rules") {
        append(
            tx,
            NewEvent::state(
                TimelineEventType::RoomJoinRules,
                "",
                json!({"join_rule": join_rule}),
            ),
        )?;
    }
    if !overridden("m.room.history_visibility") {
        append(
            tx,
            NewEvent::state(
                TimelineEventType::RoomHistoryVisibility,
                "",
                json!({"history_visibility": history}),
            ),
        )?;
    }
    if !overridden("m.room.guest_access") {
        append(
            tx,
            NewEvent::state(
                TimelineEventType::RoomGuestAccess,
                "",
                json!({"guest_access": guest}),
            ),
        )?;
    }

    // 6. initial_state, then name and topic (which win over initial_state)
    for (kind, key, content) in req.initial_state {
        append(
            tx,
            NewEvent::state(TimelineEventType::from(kind), key, content),
        )?;
    }
    if let Some(name) = req.name {
        append(
            tx,
            NewEvent::state(TimelineEventType::RoomName, "", json!({"name": name})),
        )?;
    }
    if let Some(topic) = req.topic {
        append(
            tx,
            NewEvent::state(
                TimelineEventType::RoomTopic,
                "",
                json!({"topic": topic, "m.topic": {"m.text": [{"body": topic}]}}),
            ),
        )?;
    }

    // 7. invites of local users (users of other units are invited once the room exists)
    for invitee in req
        .invite
        .iter()
        .filter(|u| u.server_name() == signer.server_name)
    {
        let mut content = json!({"membership": "invite"});
        if req.is_direct {
            content["is_direct"] = json!(true);
        }
        append(
            tx,
            NewEvent::state(TimelineEventType::RoomMember, invitee.as_str(), content),
        )?;
    }
    if req.public {
        state::set_room_public(tx, room_id.as_str(), true)?;
    }
    Ok(room_id)
}

/// A user's displayname and avatar, for member events.
pub async fn profile_of(
    server: &Server,
    user_id: &UserId,
) -> Result<(Option<String>, Option<String>)> {
    let user = user_id.to_string();
    server
        .store
        .read(move |conn| {
            // A user without a row has no profile fields (an appservice's ghost, say).
            let row = crate::store::accounts::get_profile(conn, &user)?.unwrap_or_default();
            Ok((row.displayname, row.avatar_url))
        })
        .await
}

/// Sends a message-like or state event on behalf of a local user, idempotent per `txn`: the
/// sending device (`None`: a request without one, scoped to the user) and its transaction ID.
pub async fn send(
    server: &Server,
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    event: NewEvent,
    txn: Option<(Option<OwnedDeviceId>, String)>,
) -> Result<OwnedEventId> {
    send_with(server, room_id, sender, event, txn, |_, _| Ok(())).await
}

/// [`send`] with the event's `origin_server_ts` set to `ts` when given (an application
/// service's timestamp massaging); ordering in the room is unchanged.
pub async fn send_at(
    server: &Server,
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    event: NewEvent,
    txn: Option<(Option<OwnedDeviceId>, String)>,
    ts: Option<MilliSecondsSinceUnixEpoch>,
) -> Result<OwnedEventId> {
    send_inner(server, room_id, sender, event, txn, ts, |_, _| Ok(())).await
}

/// [`send`], with `also` run in the same write transaction once the event is appended: its
/// error rolls the event back. Delayed events use it to record "sent" atomically with the
/// send, so a restart or a racing cancel can never send one twice.
pub async fn send_with(
    server: &Server,
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    event: NewEvent,
    txn: Option<(Option<OwnedDeviceId>, String)>,
    also: impl FnOnce(&rusqlite::Connection, &ruma::EventId) -> Result<()> + Send + 'static,
) -> Result<OwnedEventId> {
    send_inner(server, room_id, sender, event, txn, None, also).await
}

async fn send_inner(
    server: &Server,
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    event: NewEvent,
    txn: Option<(Option<OwnedDeviceId>, String)>,
    ts: Option<MilliSecondsSinceUnixEpoch>,
    also: impl FnOnce(&rusqlite::Connection, &ruma::EventId) -> Result<()> + Send + 'static,
) -> Result<OwnedEventId> {
    let signer = Arc::clone(&server.signer);
    server
        .store
        .write(move |tx| {
            let txn_ref = txn
                .as_ref()
                .map(|(d, t)| (super::device_key(d.as_deref()), t.as_str()));
            if let Some((device, txn_id)) = txn_ref
                && let Some(existing) = events::event_for_txn(tx, sender.as_str(), device, txn_id)?
            {
                return OwnedEventId::try_from(existing)
                    .map_err(|err| Error::internal(err.to_string()));
            }
            require_room(tx, &room_id)?;
            if event.kind == TimelineEventType::RoomRedaction
                && let Some(target) = &event.redacts
            {
                check_may_redact(tx, &room_id, &sender, target)?;
            }
            if event.kind == TimelineEventType::RoomEncryption {
                check_encryption_stays_on(tx, &room_id, &event)?;
            }
            let ts = ts.unwrap_or_else(MilliSecondsSinceUnixEpoch::now);
            let event_id = append_at_in_tx(tx, &signer, &room_id, &sender, event, txn_ref, ts)?
                .event_id
                .clone();
            also(tx, &event_id)?;
            Ok(event_id)
        })
        .await
}

fn require_room(conn: &rusqlite::Connection, room_id: &RoomId) -> Result<()> {
    state::get_room(conn, room_id.as_str())?
        .map(|_| ())
        .ok_or_else(|| Error::forbidden("You are not in this room (or it does not exist here)"))
}

fn check_may_redact(
    conn: &rusqlite::Connection,
    room_id: &RoomId,
    sender: &UserId,
    target: &ruma::EventId,
) -> Result<()> {
    let Some(event) = events::get_room_event(conn, room_id.as_str(), target.as_str())? else {
        return Err(Error::not_found("Event not found in this room"));
    };
    if event.pdu.kind == TimelineEventType::RoomEncryption {
        // Redacting it would strip the algorithm and silently turn encryption off.
        return Err(Error::forbidden(
            "The room's encryption settings cannot be redacted",
        ));
    }
    if event.pdu.sender != sender {
        let power = state::power_levels(conn, room_id.as_str())?;
        if power.user_level(sender.as_str()) < power.redact_level() {
            return Err(Error::forbidden("You may only redact your own events"));
        }
    }
    Ok(())
}

/// Once a room is encrypted it stays encrypted (spec: "once enabled, encryption cannot be
/// disabled"): a new `m.room.encryption` must name the algorithm already in force. Another
/// algorithm (`m.none`, anything unknown to clients) would be a silent downgrade: clients that
/// do not know it would send in clear, or not at all. Rotation settings may change.
fn check_encryption_stays_on(
    conn: &rusqlite::Connection,
    room_id: &RoomId,
    event: &NewEvent,
) -> Result<()> {
    let Some(current_id) =
        state::current_state_id(conn, room_id.as_str(), "m.room.encryption", "")?
    else {
        return Ok(());
    };
    let current = events::get_event(conn, &current_id)?
        .ok_or_else(|| Error::internal(format!("current state names missing {current_id}")))?;
    let algorithm = |content: &Value| {
        content
            .get("algorithm")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let in_force = algorithm(&current.pdu.content_value());
    let requested = algorithm(&event.content);
    if requested.as_deref().is_none_or(str::is_empty) {
        return Err(Error::forbidden(
            "Encryption cannot be turned off once enabled",
        ));
    }
    if in_force.is_some() && requested != in_force {
        return Err(Error::forbidden(format!(
            "This room is encrypted with {}; its algorithm cannot be changed",
            in_force.unwrap_or_default()
        )));
    }
    Ok(())
}

/// For a room whose join rule is `restricted` or `knock_restricted`: when `user` is joined to
/// one of the rooms the rule allows, a local member of the room who may invite, to name in
/// `join_authorised_via_users_server` (the auth rules then admit the join). `None` when the
/// rule is another one or the user qualifies through no allowed room (the auth rules then
/// refuse the join as they should).
pub fn restricted_join_authoriser(
    conn: &rusqlite::Connection,
    room_id: &str,
    user: &str,
    own_server: &str,
) -> Result<Option<String>> {
    Ok(match restricted_join(conn, room_id, user, own_server)? {
        RestrictedJoin::Authorised(authoriser) => Some(authoriser),
        _ => None,
    })
}

/// What this unit can say about a user's join to a room under a `restricted` or
/// `knock_restricted` join rule (spec: Server-Server API, "Restricted rooms").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestrictedJoin {
    /// The join rule is not a restricted one: the ordinary auth rules decide.
    NotRestricted,
    /// The user is joined to an allowed room; this local member may authorise the join.
    Authorised(String),
    /// The user qualifies, but no local member of the room may invite (`M_UNABLE_TO_GRANT_JOIN`).
    NoAuthoriser,
    /// This unit holds none of the allowed rooms, so it cannot check the conditions
    /// (`M_UNABLE_TO_AUTHORISE_JOIN`).
    CannotCheck,
    /// This unit holds an allowed room and the user is joined to none of them (`M_FORBIDDEN`).
    Fails,
}

/// Decides a restricted join for `user` from this unit's view of the allowed rooms, picking the
/// local member with the highest power level at or above the invite level as authoriser.
pub fn restricted_join(
    conn: &rusqlite::Connection,
    room_id: &str,
    user: &str,
    own_server: &str,
) -> Result<RestrictedJoin> {
    let Some(id) = state::current_state_id(conn, room_id, "m.room.join_rules", "")? else {
        return Ok(RestrictedJoin::NotRestricted);
    };
    let Some(rules) = load_pdu(conn, &id)?.map(|p| p.content_value()) else {
        return Ok(RestrictedJoin::NotRestricted);
    };
    if !matches!(
        rules.get("join_rule").and_then(Value::as_str),
        Some("restricted" | "knock_restricted")
    ) {
        return Ok(RestrictedJoin::NotRestricted);
    }
    let allowed = crate::matrix::join_rules::restricted_allowed_rooms(&rules);
    let mut held_any = false;
    let mut qualifies = false;
    for room in &allowed {
        held_any |= crate::store::dag::participating(conn, room)?;
        qualifies |= state::membership(conn, room, user)?.as_deref() == Some("join");
    }
    if !qualifies {
        return Ok(if held_any {
            RestrictedJoin::Fails
        } else {
            RestrictedJoin::CannotCheck
        });
    }
    let power = state::power_levels(conn, room_id)?;
    let invite_level = power.invite_level();
    let mut members = state::members_with(conn, room_id, "join")?;
    members.retain(|m| m.rsplit_once(':').is_some_and(|(_, s)| s == own_server));
    members.sort_by_key(|m| std::cmp::Reverse(power.user_level(m)));
    Ok(members
        .into_iter()
        .find(|m| power.user_level(m) >= invite_level)
        .map_or(RestrictedJoin::NoAuthoriser, RestrictedJoin::Authorised))
}

/// How far a user may read a room's *state*: today's, or as it was when they left. (Which
/// *events* they may see is [`visibility`]'s decision.)
#[derive(Debug, Clone, Copy)]
pub enum Access {
    /// Currently joined: the current state.
    All,
    /// Left, kicked or banned after having joined: the state up to this stream position.
    UpTo(i64),
}

/// Whether a user may read a room's state and up to where; `M_FORBIDDEN` for users who never
/// joined it.
pub fn membership_access(
    conn: &rusqlite::Connection,
    room_id: &str,
    user_id: &str,
) -> Result<Access> {
    match state::membership(conn, room_id, user_id)?.as_deref() {
        Some("join") => Ok(Access::All),
        Some(_) => {
            let was_joined = state::membership_changes(conn, user_id, 0, i64::MAX)?
                .iter()
                .any(|m| m.room_id == room_id && m.membership == "join");
            match state::membership_pos_at(conn, user_id, room_id, i64::MAX)? {
                Some(latest) if was_joined => Ok(Access::UpTo(latest.stream_pos)),
                _ => Err(Error::forbidden("You are not allowed to view this room")),
            }
        }
        None => {
            if state::get_room(conn, room_id)?.is_none() {
                Err(Error::forbidden(
                    "You are not in this room (or it does not exist here)",
                ))
            } else {
                Err(Error::forbidden("You are not allowed to view this room"))
            }
        }
    }
}

/// The room's history-visibility changes in stream order, parsed.
fn history_changes(
    conn: &rusqlite::Connection,
    room_id: &str,
) -> Result<Vec<(i64, HistoryVisibility)>> {
    Ok(state::history_visibility_changes(conn, room_id)?
        .into_iter()
        .map(|c| (c.stream_pos, HistoryVisibility::parse(c.value.as_deref())))
        .collect())
}

/// Which of a room's events a user may see (spec: history visibility, decided per event by
/// `matrix::visibility`), read with two indexed queries: the room's history-visibility events
/// and the user's own member events. Every client path that returns events filters with it.
///
/// `M_FORBIDDEN` when the user may not read the room at all: they never joined it (or were
/// only invited) and none of its history was `world_readable`.
pub fn visibility(conn: &rusqlite::Connection, room_id: &str, user_id: &str) -> Result<Visible> {
    let visible = user_visibility(conn, room_id, user_id)?;
    match membership_access(conn, room_id, user_id) {
        Err(err) if visible.is_empty() => Err(err),
        _ => Ok(visible),
    }
}

/// [`visibility`] without the room-level check, for sync, which lists only rooms the user
/// has a membership in (an invite they rejected shows what the rule lets them see of it).
pub fn user_visibility(
    conn: &rusqlite::Connection,
    room_id: &str,
    user_id: &str,
) -> Result<Visible> {
    let history = history_changes(conn, room_id)?;
    user_visibility_with(conn, room_id, user_id, &history)
}

fn user_visibility_with(
    conn: &rusqlite::Connection,
    room_id: &str,
    user_id: &str,
    history: &[(i64, HistoryVisibility)],
) -> Result<Visible> {
    let memberships: Vec<(i64, Membership)> = state::member_events_of(conn, room_id, user_id)?
        .into_iter()
        .map(|e| (e.stream_pos, Membership::parse(&e.membership)))
        .collect();
    Ok(visible_to_user(history, &memberships))
}

/// Which of a room's events another server may see: what any of its users may (the spec's
/// user rule applied to each of the server's members). Federation answers `/backfill`,
/// `/event`, `/get_missing_events` and `/state` with it.
pub fn server_visibility(
    conn: &rusqlite::Connection,
    room_id: &str,
    server: &str,
) -> Result<Visible> {
    let history = history_changes(conn, room_id)?;
    let members: Vec<(i64, String, Membership)> =
        state::member_events_of_server(conn, room_id, server)?
            .into_iter()
            .map(|e| (e.stream_pos, e.user_id, Membership::parse(&e.membership)))
            .collect();
    Ok(visible_to_server(&history, &members))
}

/// An event's PDU JSON as sent to a server: whole when the server may see it, otherwise in its
/// redacted form (the room version's redaction algorithm), so the server keeps the room's DAG
/// connected without learning the content. The receiver's content-hash check then redacts it
/// too, as the spec's checks on received PDUs require.
pub fn pdu_for_server(
    event: &events::StoredEvent,
    visible: &Visible,
    rules: &RoomVersionRules,
) -> Result<Value> {
    let value: Value =
        serde_json::from_str(&event.pdu.json).map_err(|err| Error::internal(err.to_string()))?;
    if visible.allows(event.stream_pos) {
        return Ok(value);
    }
    let object: CanonicalJsonObject =
        serde_json::from_value(value).map_err(|err| Error::internal(err.to_string()))?;
    let redacted = ruma::canonical_json::redact(object, &rules.redaction, None)
        .map_err(|err| Error::internal(err.to_string()))?;
    serde_json::to_value(&redacted).map_err(|err| Error::internal(err.to_string()))
}

/// Formats a stored event for a client: `unsigned` with age, the viewer's own transaction ID,
/// `prev_content` for state events and `redacted_because`.
pub fn client_event(
    conn: &rusqlite::Connection,
    event: &events::StoredEvent,
    viewer: Option<(&str, &str)>,
) -> Result<Value> {
    client_event_with(conn, event, viewer, true)
}

/// [`client_event`], told whether the event may replace an earlier state event: a caller that
/// knows it cannot (the only stored event of its type and state key in the room, so no state
/// before it holds that key) passes `false` and skips the per-event walk of the state before it,
/// which is what made `/members` of a big room cost a delta-chain query per member.
pub fn client_event_with(
    conn: &rusqlite::Connection,
    event: &events::StoredEvent,
    viewer: Option<(&str, &str)>,
    may_replace: bool,
) -> Result<Value> {
    use crate::matrix::client_format::{Unsigned, to_client_event};
    let pdu = &event.pdu;
    let mut unsigned = Unsigned {
        age: Some(now_ms() - i64::from(pdu.origin_server_ts.get())),
        ..Default::default()
    };
    if let (Some(txn), Some((user, viewer_device))) = (&event.txn, viewer)
        && pdu.sender.as_str() == user
        && txn.device_id == viewer_device
    {
        unsigned.transaction_id = Some(txn.txn_id.clone());
    }
    if event.txn.is_none()
        && let Some((user, _)) = viewer
        && pdu.sender.as_str() == user
    {
        // Events sent from a delayed event carry no transaction ID; only those need the lookup.
        unsigned.delay_id =
            crate::store::delayed_events::delay_id_of_event(conn, pdu.event_id.as_str())?;
    }
    if may_replace
        && let Some(key) = &pdu.state_key
        && state::other_state_with_key(
            conn,
            pdu.room_id.as_str(),
            &pdu.kind.to_string(),
            key,
            pdu.event_id.as_str(),
        )?
        && let Some(group) =
            state::state_group_before(conn, pdu.room_id.as_str(), event.stream_pos)?
        && let Some(prev_id) = state::state_entry_at_group(conn, group, &pdu.kind.to_string(), key)?
        && let Some(prev) = load_pdu(conn, &prev_id)?
    {
        unsigned.prev_content = Some(prev.content_value());
        unsigned.replaces_state = Some(prev_id);
    }
    if let Some(by) = &event.redacted_by
        && let Some(redaction) = events::get_event(conn, by)?
    {
        unsigned.redacted_because = Some(to_client_event(&redaction.pdu, Unsigned::default()));
    }
    Ok(to_client_event(pdu, unsigned))
}

/// Loads the PDUs of a state map, skipping entries that fail `keep`.
pub fn load_state_events(
    conn: &rusqlite::Connection,
    state: &state::StateMap,
    keep: impl Fn(&str, &str) -> bool,
) -> Result<Vec<events::StoredEvent>> {
    let mut out = Vec::new();
    for ((kind, key), event_id) in state {
        if keep(kind, key)
            && let Some(event) = events::get_event(conn, event_id)?
        {
            out.push(event);
        }
    }
    Ok(out)
}
