//! Profiles: displayname and avatar, propagated into the member events of joined rooms.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ruma::events::TimelineEventType;
use serde_json::{Map, Value, json};

use crate::api::extract::{Auth, JsonBody, PathParams, user_id};
use crate::error::{Error, Result};
use crate::matrix::build::NewEvent;
use crate::service::Server;
use crate::service::rooms;
use crate::store::{accounts, events, state};

async fn load(server: &Server, raw: &str) -> Result<(Option<String>, Option<String>)> {
    let user = user_id(raw)?;
    if user.server_name() != server.server_name() {
        return crate::service::federation::remote_profile(server, &user).await;
    }
    let key = user.to_string();
    server
        .store
        .read(move |conn| accounts::get_profile(conn, &key))
        .await?
        .ok_or_else(|| Error::not_found("Profile not found"))
}

/// # `GET /_matrix/client/v3/profile/{userId}`
pub async fn get_profile(
    State(server): State<Arc<Server>>,
    PathParams(user): PathParams<String>,
) -> Result<Json<Value>> {
    let (name, avatar) = load(&server, &user).await?;
    let mut body = Map::new();
    if let Some(name) = name {
        body.insert("displayname".to_owned(), json!(name));
    }
    if let Some(avatar) = avatar {
        body.insert("avatar_url".to_owned(), json!(avatar));
    }
    Ok(Json(Value::Object(body)))
}

/// # `GET /_matrix/client/v3/profile/{userId}/{keyName}`
pub async fn get_field(
    State(server): State<Arc<Server>>,
    PathParams((user, field)): PathParams<(String, String)>,
) -> Result<Json<Value>> {
    let (name, avatar) = load(&server, &user).await?;
    let value = match field.as_str() {
        "displayname" => name,
        "avatar_url" => avatar,
        _ => None,
    };
    let value = value.ok_or_else(|| Error::not_found("Profile field not set"))?;
    Ok(Json(json!({ field: value })))
}

/// # `PUT /_matrix/client/v3/profile/{userId}/{keyName}`
pub async fn set_field(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((user, field)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>> {
    if user_id(&user)? != auth.user_id {
        return Err(Error::forbidden("You may only change your own profile"));
    }
    if !matches!(field.as_str(), "displayname" | "avatar_url") {
        return Err(Error::bad_json(format!(
            "Profile field {field:?} is not supported"
        )));
    }
    let value = match body.get(&field) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(_) => return Err(Error::bad_json(format!("{field} must be a string"))),
    };
    let (mut name, mut avatar) = load(&server, &user).await?;
    if field == "displayname" {
        name = value.clone();
    } else {
        avatar = value.clone();
    }
    let me = auth.user_id.to_string();
    let (n, a) = (name.clone(), avatar.clone());
    let rooms = server
        .store
        .write(move |tx| {
            accounts::set_profile(tx, &me, n.as_deref(), a.as_deref())?;
            state::rooms_with_membership(tx, &me, "join")
        })
        .await?;
    for room in rooms {
        let room_id = crate::api::extract::room_id(&room)?;
        let me = auth.user_id.to_string();
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
        let mut content = current
            .and_then(|c| c.as_object().cloned())
            .unwrap_or_default();
        content.insert("membership".to_owned(), json!("join"));
        for (key, val) in [("displayname", &name), ("avatar_url", &avatar)] {
            match val {
                Some(v) => content.insert(key.to_owned(), json!(v)),
                None => content.remove(key),
            };
        }
        let event = NewEvent::state(
            TimelineEventType::RoomMember,
            auth.user_id.as_str(),
            Value::Object(content),
        );
        if let Err(err) = rooms::send(&server, room_id, auth.user_id.clone(), event, None).await {
            tracing::warn!(room = %room, error = %err, "profile propagation failed");
        }
    }
    Ok(Json(json!({})))
}
