//! Profiles: a local user's displayname and avatar, and changing one's own, propagated into
//! the member events of the rooms one is joined to. Another unit's user's profile is asked of
//! their unit (`service::federation::route::profile`).

use ruma::events::TimelineEventType;
use ruma::{OwnedRoomId, UserId};
use serde_json::{Value, json};

use super::Server;
use super::membership::Membership;
use super::rooms;
use crate::error::{Error, Result};
use crate::matrix::build::NewEvent;
use crate::store::{accounts, events, state};

/// A profile field clients may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `displayname`.
    DisplayName,
    /// `avatar_url`.
    AvatarUrl,
}

impl Field {
    /// The field a key name means; `None` for one this unit does not keep.
    pub fn parse(raw: &str) -> Option<Field> {
        match raw {
            "displayname" => Some(Field::DisplayName),
            "avatar_url" => Some(Field::AvatarUrl),
            _ => None,
        }
    }
}

/// A local user's `(displayname, avatar_url)`; `M_NOT_FOUND` for one who does not exist. An
/// unknown user in an appservice's namespace is first asked of the appservice, which may
/// create it (spec: Application Service API, "Querying").
pub async fn load(server: &Server, user: &UserId) -> Result<(Option<String>, Option<String>)> {
    let lookup = |key: String| async move {
        server
            .store
            .read(move |conn| {
                let row = accounts::get_profile(conn, &key)?;
                Ok(row.map(|p| (p.displayname, p.avatar_url)))
            })
            .await
    };
    let mut found = lookup(user.to_string()).await?;
    if found.is_none() && super::appservice::query::user_exists(server, user).await {
        found = lookup(user.to_string()).await?;
    }
    found.ok_or_else(|| Error::not_found("Profile not found"))
}

/// Sets (or with `None` clears) one of the user's own profile fields, then sends a new member
/// event to each room they are joined to (a failure there is logged, not returned: the
/// profile itself is changed).
pub async fn set_field(
    server: &Server,
    user: &UserId,
    field: Field,
    value: Option<String>,
) -> Result<()> {
    let (mut name, mut avatar) = load(server, user).await?;
    match field {
        Field::DisplayName => name = value,
        Field::AvatarUrl => avatar = value,
    }
    let me = user.to_string();
    let (n, a) = (name.clone(), avatar.clone());
    let rooms = server
        .store
        .write(move |tx| {
            accounts::set_profile(tx, &me, n.as_deref(), a.as_deref())?;
            state::rooms_with_membership(tx, &me, Membership::Join.as_str())
        })
        .await?;
    for room in rooms {
        let room_id = OwnedRoomId::try_from(room.as_str())
            .map_err(|err| Error::internal(format!("stored room id: {err}")))?;
        let me = user.to_string();
        let key = room.clone();
        let current = server
            .store
            .read(move |conn| {
                Ok(
                    match state::current_state_id(conn, &key, "m.room.member", &me)? {
                        Some(id) => events::get_event(conn, &id)?.map(|e| e.pdu.content_value()),
                        None => None,
                    },
                )
            })
            .await?;
        let mut content = match current {
            Some(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        content.insert("membership".to_owned(), json!(Membership::Join.as_str()));
        for (key, val) in [("displayname", &name), ("avatar_url", &avatar)] {
            match val {
                Some(v) => content.insert(key.to_owned(), json!(v)),
                None => content.remove(key),
            };
        }
        let event = NewEvent::state(
            TimelineEventType::RoomMember,
            user.as_str(),
            Value::Object(content),
        );
        if let Err(err) = rooms::send(server, room_id, user.to_owned(), event, None).await {
            tracing::warn!(room = %room, error = %err, "profile propagation failed");
        }
    }
    Ok(())
}
