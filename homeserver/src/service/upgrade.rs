//! Room upgrades (`/rooms/{roomId}/upgrade`): a new room of the requested version that
//! carries the old room's settings and points back at it (`predecessor`), a tombstone in the
//! old room that points forward (`replacement_room`), the old room muted, and local aliases
//! moved over — the spec's server behaviour for "Room Upgrades".

use ruma::{OwnedRoomId, OwnedUserId, RoomVersionId};
use serde_json::{Map, Value, json};

use super::Server;
use super::rooms::{CreateRoom, create_room, load_state_events, send};
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::build::NewEvent;
use crate::store::state;

/// State carried into the new room as it is (the spec's list, plus the canonical alias so
/// clients keep showing the room's address).
const CARRIED_STATE: [&str; 9] = [
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
    "m.room.canonical_alias",
];

/// What the old room gave the new one.
struct Carried {
    create: Map<String, Value>,
    state: Vec<(String, String, Value)>,
    power: Map<String, Value>,
    last_event: Option<String>,
}

/// Upgrades `room_id` to `version` on behalf of `user`, who must be joined and allowed to
/// send `m.room.tombstone`. Returns the new room's ID.
pub async fn upgrade_room(
    server: &Server,
    user: OwnedUserId,
    room_id: OwnedRoomId,
    version: RoomVersionId,
) -> Result<OwnedRoomId> {
    let rules = crate::matrix::rules_for(&version).ok_or_else(|| {
        Error::new(
            ErrorCode::UnsupportedRoomVersion,
            "This server does not support that room version",
        )
    })?;
    let (old, who) = (room_id.to_string(), user.to_string());
    let carried = server
        .store
        .read(move |conn| {
            if state::membership(conn, &old, &who)?.as_deref() != Some("join") {
                return Err(Error::forbidden("You are not joined to this room"));
            }
            let power = crate::store::state::power_levels(conn, &old)?;
            if power.user_level(&who) < power.state_level("m.room.tombstone") {
                return Err(Error::forbidden("You are not allowed to upgrade this room"));
            }
            let current = state::current_state(conn, &old)?;
            let events = load_state_events(conn, &current, |kind, key| {
                key.is_empty()
                    && (CARRIED_STATE.contains(&kind)
                        || kind == "m.room.create"
                        || kind == "m.room.power_levels")
            })?;
            let mut carried = Carried {
                create: Map::new(),
                state: Vec::new(),
                power: Map::new(),
                last_event: crate::store::events::latest_event_id(conn, &old)?,
            };
            for event in events {
                let content = event.pdu.content_value();
                match event.pdu.kind.to_string().as_str() {
                    "m.room.create" => {
                        if let Value::Object(content) = content {
                            carried.create = content;
                        }
                    }
                    "m.room.power_levels" => {
                        if let Value::Object(content) = content {
                            carried.power = content;
                        }
                    }
                    kind => carried
                        .state
                        .push((kind.to_owned(), String::new(), content)),
                }
            }
            Ok(carried)
        })
        .await?;

    let mut create = carried.create;
    for key in [
        "room_version",
        "creator",
        "predecessor",
        "additional_creators",
    ] {
        create.remove(key);
    }
    let mut predecessor = json!({"room_id": room_id});
    if let Some(event) = &carried.last_event {
        predecessor["event_id"] = json!(event);
    }
    create.insert("predecessor".to_owned(), predecessor);

    let mut power = carried.power;
    let mut users = power
        .entry("users".to_owned())
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    if rules.authorization.explicitly_privilege_room_creators {
        // The upgrader creates the new room and so holds creator power there; listing a
        // creator in `users` is refused by the auth rules of these versions.
        users.remove(user.as_str());
    } else {
        let level = users
            .get(user.as_str())
            .and_then(Value::as_i64)
            .unwrap_or(0);
        users.insert(user.to_string(), json!(level.max(100)));
    }
    power.insert("users".to_owned(), Value::Object(users));

    let new_room = create_room(
        server,
        user.clone(),
        CreateRoom {
            version: Some(version),
            creation_content: create,
            preset: Some("private_chat".to_owned()),
            name: None,
            topic: None,
            alias: None,
            invite: Vec::new(),
            initial_state: carried.state,
            power_level_override: Some(power),
            is_direct: false,
            public: false,
        },
    )
    .await?;

    // The old room points forward and is muted: only moderators may still speak there.
    send(
        server,
        room_id.clone(),
        user.clone(),
        NewEvent::state(
            ruma::events::TimelineEventType::RoomTombstone,
            "",
            json!({"body": "This room has been replaced", "replacement_room": new_room}),
        ),
        None,
    )
    .await?;
    let (old, new) = (room_id.to_string(), new_room.to_string());
    let muted = server
        .store
        .read(move |conn| {
            let current = state::current_state(conn, &old)?;
            Ok(load_state_events(conn, &current, |kind, key| {
                kind == "m.room.power_levels" && key.is_empty()
            })?
            .into_iter()
            .next()
            .map(|event| event.pdu.content_value()))
        })
        .await?;
    if let Some(Value::Object(mut power)) = muted {
        let users_default = power
            .get("users_default")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let restricted = json!(50.max(users_default + 1));
        power.insert("events_default".to_owned(), restricted.clone());
        power.insert("invite".to_owned(), restricted);
        if let Err(err) = send(
            server,
            room_id.clone(),
            user,
            NewEvent::state(
                ruma::events::TimelineEventType::RoomPowerLevels,
                "",
                Value::Object(power),
            ),
            None,
        )
        .await
        {
            tracing::warn!(room = %room_id, error = %err, "muting the upgraded room failed");
        }
    }
    let old = room_id.to_string();
    server
        .store
        .write(move |tx| crate::store::misc::move_aliases(tx, &old, &new))
        .await?;
    Ok(new_room)
}
