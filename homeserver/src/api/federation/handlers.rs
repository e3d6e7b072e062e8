//! Server-Server API handlers. Each takes a [`Signed`] request (origin already verified
//! against the allow-list), calls one service function, and shapes the spec response.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use ruma::room_version_rules::RoomVersionRules;
use serde_json::{Map, Value, json};

use super::Signed;
use crate::api::extract::{
    PathParams, QueryParams, TimestampQuery, event_id, room_id, timestamp_answer, user_id,
};
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::visibility::Visible;
use crate::service::directory::{self, DirectoryQuery};
use crate::service::federation as fed;
use crate::service::{Server, e2ee, rooms};
use crate::store::{events, federation, misc, state};
use crate::util::now_ms;

/// All values of a repeated query parameter (`?ver=10&ver=11`), decoded.
fn query_all(uri: &Uri, name: &str) -> Vec<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(uri.query().unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v)
        .collect()
}

fn query_one(uri: &Uri, name: &str) -> Option<String> {
    query_all(uri, name).into_iter().next()
}

fn pdu_json(event: &events::StoredEvent) -> Value {
    serde_json::from_str(&event.pdu.json).unwrap_or(Value::Null)
}

/// Whether `origin` has (or had) a member in the room, so it may read the room's events.
fn origin_in_room(conn: &rusqlite::Connection, room: &str, origin: &str) -> Result<bool> {
    let state = state::current_state(conn, room)?;
    Ok(state.keys().any(|(kind, key)| {
        kind == "m.room.member" && key.split_once(':').map(|(_, s)| s) == Some(origin)
    }))
}

fn require_in_room(conn: &rusqlite::Connection, room: &str, origin: &str) -> Result<()> {
    if origin_in_room(conn, room, origin)? {
        Ok(())
    } else {
        Err(Error::forbidden(format!("{origin} is not in room {room}")))
    }
}

/// What a server may see of a room, with the room's redaction rules: the events it may not
/// see are sent in their redacted form (see [`rooms::pdu_for_server`]).
struct ServerView {
    visible: Visible,
    rules: RoomVersionRules,
}

impl ServerView {
    fn of(conn: &rusqlite::Connection, room: &str, origin: &str) -> Result<Self> {
        let version = state::get_room(conn, room)?
            .ok_or_else(|| Error::not_found("Unknown room"))?
            .room_version;
        let (_, rules) = crate::federation::incoming::room_rules(&version)?;
        Ok(Self {
            visible: rooms::server_visibility(conn, room, origin)?,
            rules,
        })
    }

    fn pdu(&self, event: &events::StoredEvent) -> Result<Value> {
        rooms::pdu_for_server(event, &self.visible, &self.rules)
    }
}

/// # `GET /_matrix/key/v2/server`
/// Our signed verify keys. Peers pin keys from cards, but Synapse-style peers may read this.
pub async fn server_keys(State(server): State<Arc<Server>>) -> Result<Json<Value>> {
    let key = &server.signer.key;
    let old_verify_keys: serde_json::Map<String, Value> = key
        .old_verify_keys()
        .iter()
        .map(|old| {
            let entry = json!({"key": old.public_key, "expired_ts": old.expired_ts});
            (old.key_id.clone(), entry)
        })
        .collect();
    let mut object = match ruma::canonical_json::to_canonical_value(json!({
        "server_name": server.server_name(),
        "verify_keys": { key.key_id(): {"key": key.public_key_base64()} },
        "old_verify_keys": old_verify_keys,
        "valid_until_ts": now_ms() + 7 * 24 * 3600 * 1000,
    }))
    .map_err(|e| Error::internal(e.to_string()))?
    {
        ruma::CanonicalJsonValue::Object(object) => object,
        _ => return Err(Error::internal("key document is not an object")),
    };
    ruma::signatures::sign_json(server.server_name().as_str(), key.pair(), &mut object)
        .map_err(|e| Error::internal(e.to_string()))?;
    Ok(Json(
        serde_json::to_value(&object).map_err(|e| Error::internal(e.to_string()))?,
    ))
}

/// # `GET /_matrix/federation/v1/version`
pub async fn version() -> Json<Value> {
    Json(json!({"server": {"name": "Outpost", "version": env!("CARGO_PKG_VERSION")}}))
}

/// # `GET /_matrix/federation/v1/openid/userinfo`
/// Not X-Matrix authenticated: the caller is a widget or call service, not a peer, and the
/// OpenID token it presents is the whole authorisation.
pub async fn openid_userinfo(
    State(server): State<Arc<Server>>,
    QueryParams(query): QueryParams<UserinfoQuery>,
) -> Result<Json<Value>> {
    let user = server.openid.user_of(&query.access_token).ok_or_else(|| {
        Error::new(
            ErrorCode::UnknownToken,
            "The OpenID token is not known or has expired",
        )
    })?;
    Ok(Json(json!({"sub": user})))
}

/// The query of `openid/userinfo`.
#[derive(serde::Deserialize)]
pub struct UserinfoQuery {
    access_token: String,
}

/// # `PUT /_matrix/federation/v1/send/{txnId}`
pub async fn send_transaction(
    State(server): State<Arc<Server>>,
    PathParams(txn_id): PathParams<String>,
    signed: Signed,
) -> Result<Json<Value>> {
    let body = signed
        .body
        .ok_or_else(|| Error::bad_json("missing transaction body"))?;
    Ok(Json(
        fed::receive_transaction(&server, &signed.origin, &txn_id, body).await?,
    ))
}

/// # `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`
pub async fn make_join(
    State(server): State<Arc<Server>>,
    PathParams((room, user)): PathParams<(String, String)>,
    uri: Uri,
    signed: Signed,
) -> Result<Json<Value>> {
    let versions = query_all(&uri, "ver");
    let versions = if versions.is_empty() {
        vec!["1".to_owned()]
    } else {
        versions
    };
    Ok(Json(
        fed::make_membership_template(
            &server,
            &signed.origin,
            room_id(&room)?,
            user_id(&user)?,
            "join",
            versions,
        )
        .await?,
    ))
}

/// # `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`
pub async fn send_join(
    State(server): State<Arc<Server>>,
    PathParams((room, _event)): PathParams<(String, String)>,
    signed: Signed,
) -> Result<Json<Value>> {
    let body = signed
        .body
        .ok_or_else(|| Error::bad_json("missing event"))?;
    Ok(Json(
        fed::receive_membership(&server, &signed.origin, room_id(&room)?, body, "join").await?,
    ))
}

/// # `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`
pub async fn make_leave(
    State(server): State<Arc<Server>>,
    PathParams((room, user)): PathParams<(String, String)>,
    signed: Signed,
) -> Result<Json<Value>> {
    Ok(Json(
        fed::make_membership_template(
            &server,
            &signed.origin,
            room_id(&room)?,
            user_id(&user)?,
            "leave",
            Vec::new(),
        )
        .await?,
    ))
}

/// # `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`
pub async fn send_leave(
    State(server): State<Arc<Server>>,
    PathParams((room, _event)): PathParams<(String, String)>,
    signed: Signed,
) -> Result<Json<Value>> {
    let body = signed
        .body
        .ok_or_else(|| Error::bad_json("missing event"))?;
    fed::receive_membership(&server, &signed.origin, room_id(&room)?, body, "leave").await?;
    Ok(Json(json!({})))
}

/// # `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`
pub async fn invite(
    State(server): State<Arc<Server>>,
    PathParams((room, event)): PathParams<(String, String)>,
    signed: Signed,
) -> Result<Json<Value>> {
    let body = signed
        .body
        .ok_or_else(|| Error::bad_json("missing invite"))?;
    Ok(Json(
        fed::receive_invite(&server, &signed.origin, room_id(&room)?, &event, body).await?,
    ))
}

/// # `GET /_matrix/federation/v1/event/{eventId}`
pub async fn event(
    State(server): State<Arc<Server>>,
    PathParams(id): PathParams<String>,
    signed: Signed,
) -> Result<Json<Value>> {
    let id = event_id(&id)?;
    let origin = signed.origin.clone();
    let pdu = server
        .store
        .read(move |conn| {
            let event = events::get_event(conn, id.as_str())?
                .ok_or_else(|| Error::not_found("Event not found"))?;
            let room = event.pdu.room_id.as_str();
            require_in_room(conn, room, &origin)?;
            ServerView::of(conn, room, &origin)?.pdu(&event)
        })
        .await?;
    Ok(Json(
        json!({"origin": server.server_name(), "origin_server_ts": now_ms(), "pdus": [pdu]}),
    ))
}

/// State before `event_id` and its auth chain, as event IDs.
fn state_at(
    conn: &rusqlite::Connection,
    room: &str,
    event: &str,
    origin: &str,
) -> Result<(Vec<String>, Vec<String>)> {
    let stored = events::get_room_event(conn, room, event)?
        .ok_or_else(|| Error::not_found("Event not found"))?;
    // The state at an event tells who was there and what the room was called: only for a
    // server that may see the event.
    if !rooms::server_visibility(conn, room, origin)?.allows(stored.stream_pos) {
        return Err(Error::forbidden(format!(
            "{origin} may not see {event} (history visibility)"
        )));
    }
    let group = state::state_group_before(conn, room, stored.stream_pos)?;
    let map = match group {
        Some(group) => state::state_at_group(conn, group)?,
        None => Default::default(),
    };
    let ids: Vec<String> = map.values().cloned().collect();
    let chain: Vec<String> = federation::auth_chain(conn, &ids)?.into_iter().collect();
    Ok((ids, chain))
}

/// The state before `?event_id=` in a room the origin takes part in, as event IDs, and its
/// auth chain (shared by `/state_ids` and `/state`).
async fn requested_state(
    server: &Server,
    room: &str,
    uri: &Uri,
    origin: String,
) -> Result<(Vec<String>, Vec<String>)> {
    let room = room_id(room)?;
    let event = query_one(uri, "event_id").ok_or_else(|| {
        Error::new(
            crate::error::ErrorCode::MissingParam,
            "event_id is required",
        )
    })?;
    server
        .store
        .read(move |conn| {
            require_in_room(conn, room.as_str(), &origin)?;
            state_at(conn, room.as_str(), &event, &origin)
        })
        .await
}

/// The stored PDU JSON of `ids` (those we hold).
fn pdus_json(conn: &rusqlite::Connection, ids: &[String]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for id in ids {
        if let Some(event) = events::get_event(conn, id)? {
            out.push(pdu_json(&event));
        }
    }
    Ok(out)
}

/// # `GET /_matrix/federation/v1/state_ids/{roomId}`
pub async fn state_ids(
    State(server): State<Arc<Server>>,
    PathParams(room): PathParams<String>,
    uri: Uri,
    signed: Signed,
) -> Result<Json<Value>> {
    let (ids, chain) = requested_state(&server, &room, &uri, signed.origin).await?;
    Ok(Json(json!({"pdu_ids": ids, "auth_chain_ids": chain})))
}

/// # `GET /_matrix/federation/v1/state/{roomId}`
pub async fn state(
    State(server): State<Arc<Server>>,
    PathParams(room): PathParams<String>,
    uri: Uri,
    signed: Signed,
) -> Result<Json<Value>> {
    let (ids, chain) = requested_state(&server, &room, &uri, signed.origin).await?;
    let body = server
        .store
        .read(move |conn| {
            Ok(json!({"pdus": pdus_json(conn, &ids)?, "auth_chain": pdus_json(conn, &chain)?}))
        })
        .await?;
    Ok(Json(body))
}

/// # `GET /_matrix/federation/v1/backfill/{roomId}`
pub async fn backfill(
    State(server): State<Arc<Server>>,
    PathParams(room): PathParams<String>,
    uri: Uri,
    signed: Signed,
) -> Result<Json<Value>> {
    let room = room_id(&room)?;
    let from = query_all(&uri, "v");
    let limit: usize = query_one(&uri, "limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(50)
        .clamp(1, 100);
    let origin = signed.origin;
    let pdus = server
        .store
        .read(move |conn| {
            require_in_room(conn, room.as_str(), &origin)?;
            let mut ids: Vec<String> = from
                .iter()
                .filter(|id| federation::have_event(conn, id).unwrap_or(false))
                .cloned()
                .collect();
            ids.extend(federation::missing_between(
                conn,
                room.as_str(),
                &BTreeSet::new(),
                &from,
                limit,
            )?);
            ids.truncate(limit);
            let view = ServerView::of(conn, room.as_str(), &origin)?;
            let mut out = Vec::new();
            for id in ids {
                if let Some(e) = events::get_room_event(conn, room.as_str(), &id)? {
                    out.push(view.pdu(&e)?);
                }
            }
            Ok(out)
        })
        .await?;
    Ok(Json(
        json!({"origin": server.server_name(), "origin_server_ts": now_ms(), "pdus": pdus}),
    ))
}

/// # `POST /_matrix/federation/v1/get_missing_events/{roomId}`
pub async fn get_missing_events(
    State(server): State<Arc<Server>>,
    PathParams(room): PathParams<String>,
    signed: Signed,
) -> Result<Json<Value>> {
    let room = room_id(&room)?;
    let body = signed.body.unwrap_or(json!({}));
    let strings = |key: &str| -> Vec<String> {
        body.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let earliest: BTreeSet<String> = strings("earliest_events").into_iter().collect();
    let latest = strings("latest_events");
    let limit = body
        .get("limit")
        .and_then(Value::as_u64)
        .unwrap_or(10)
        .clamp(1, 100) as usize;
    let min_depth = body.get("min_depth").and_then(Value::as_u64).unwrap_or(0);
    let origin = signed.origin;
    let events = server
        .store
        .read(move |conn| {
            require_in_room(conn, room.as_str(), &origin)?;
            let ids = federation::missing_between(conn, room.as_str(), &earliest, &latest, limit)?;
            let mut found = Vec::new();
            for id in ids {
                if let Some(e) = events::get_room_event(conn, room.as_str(), &id)?
                    && e.pdu.depth >= min_depth
                {
                    found.push(e);
                }
            }
            found.sort_by_key(|e| (e.pdu.depth, e.stream_pos));
            let view = ServerView::of(conn, room.as_str(), &origin)?;
            found
                .iter()
                .map(|e| view.pdu(e))
                .collect::<Result<Vec<_>>>()
        })
        .await?;
    Ok(Json(json!({"events": events})))
}

/// # `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`
pub async fn event_auth(
    State(server): State<Arc<Server>>,
    PathParams((room, event)): PathParams<(String, String)>,
    signed: Signed,
) -> Result<Json<Value>> {
    let room = room_id(&room)?;
    let event = event_id(&event)?;
    let origin = signed.origin;
    let chain = server
        .store
        .read(move |conn| {
            require_in_room(conn, room.as_str(), &origin)?;
            let ids: Vec<String> = federation::auth_chain(conn, &[event.to_string()])?
                .into_iter()
                .collect();
            pdus_json(conn, &ids)
        })
        .await?;
    Ok(Json(json!({"auth_chain": chain})))
}

/// # `GET /_matrix/federation/v1/query/profile`
pub async fn query_profile(
    State(server): State<Arc<Server>>,
    uri: Uri,
    _signed: Signed,
) -> Result<Json<Value>> {
    let user = user_id(&query_one(&uri, "user_id").unwrap_or_default())?;
    if user.server_name() != server.server_name() {
        return Err(Error::not_found("Not a user of this unit"));
    }
    let key = user.to_string();
    let (name, avatar) = server
        .store
        .read(move |conn| crate::store::accounts::get_profile(conn, &key))
        .await?
        .ok_or_else(|| Error::not_found("Profile not found"))?;
    let mut body = json!({});
    match query_one(&uri, "field").as_deref() {
        Some("displayname") => body["displayname"] = json!(name),
        Some("avatar_url") => body["avatar_url"] = json!(avatar),
        _ => {
            body["displayname"] = json!(name);
            body["avatar_url"] = json!(avatar);
        }
    }
    Ok(Json(body))
}

/// # `GET /_matrix/federation/v1/query/directory`
pub async fn query_directory(
    State(server): State<Arc<Server>>,
    uri: Uri,
    _signed: Signed,
) -> Result<Json<Value>> {
    let alias = query_one(&uri, "room_alias").unwrap_or_default();
    let found = server
        .store
        .read(move |conn| misc::get_alias(conn, &alias))
        .await?;
    let (room, _) = found.ok_or_else(|| Error::not_found("Room alias not found"))?;
    Ok(Json(
        json!({"room_id": room, "servers": [server.server_name()]}),
    ))
}

/// # `GET /_matrix/federation/v1/user/devices/{userId}`
/// Device lists are part of end-to-end encryption support, which is not built yet: every
/// user has no devices to announce.
pub async fn user_devices(
    State(server): State<Arc<Server>>,
    PathParams(user): PathParams<String>,
    _signed: Signed,
) -> Result<Json<Value>> {
    let user = user_id(&user)?;
    if user.server_name() != server.server_name() {
        return Err(Error::invalid_param("user is not on this server"));
    }
    let user = user.to_string();
    Ok(Json(
        server
            .store
            .read(move |conn| e2ee::user_devices(conn, &user))
            .await?,
    ))
}

/// Keeps only this server's users in a `{user: …}` request map.
fn our_users(server: &Server, map: Option<&Value>) -> Map<String, Value> {
    let own = server.server_name().as_str();
    map.and_then(Value::as_object)
        .map(|users| {
            users
                .iter()
                .filter(|(user, _)| user.split_once(':').map(|(_, s)| s) == Some(own))
                .map(|(user, v)| (user.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// # `POST /_matrix/federation/v1/user/keys/query`
pub async fn user_keys_query(
    State(server): State<Arc<Server>>,
    signed: Signed,
) -> Result<Json<Value>> {
    let body = signed.body.unwrap_or(Value::Null);
    let users = our_users(&server, body.get("device_keys"));
    Ok(Json(
        server
            .store
            .read(move |conn| e2ee::local_keys(conn, None, &users))
            .await?,
    ))
}

/// # `POST /_matrix/federation/v1/user/keys/claim`
pub async fn user_keys_claim(
    State(server): State<Arc<Server>>,
    signed: Signed,
) -> Result<Json<Value>> {
    let body = signed.body.unwrap_or(Value::Null);
    let users = our_users(&server, body.get("one_time_keys"));
    Ok(Json(
        server
            .store
            .write(move |tx| e2ee::local_claim(tx, &users))
            .await?,
    ))
}

/// Query parameters of `GET /publicRooms` (the third-party network ones are accepted and
/// ignored: a unit bridges no networks).
#[derive(serde::Deserialize, Default)]
pub struct PublicRoomsQuery {
    limit: Option<usize>,
    since: Option<String>,
}

/// # `GET /_matrix/federation/v1/publicRooms`
pub async fn public_rooms(
    State(server): State<Arc<Server>>,
    QueryParams(q): QueryParams<PublicRoomsQuery>,
    _signed: Signed,
) -> Result<Json<Value>> {
    let query = DirectoryQuery {
        limit: q.limit,
        since: q.since,
        term: None,
    };
    Ok(Json(directory::local_public_rooms(&server, query).await?))
}

/// The body of `POST /publicRooms`.
#[derive(serde::Deserialize, Default)]
struct PublicRoomsBody {
    limit: Option<usize>,
    since: Option<String>,
    filter: Option<PublicRoomsFilter>,
}

#[derive(serde::Deserialize, Default)]
struct PublicRoomsFilter {
    generic_search_term: Option<String>,
}

/// # `POST /_matrix/federation/v1/publicRooms`
pub async fn public_rooms_post(
    State(server): State<Arc<Server>>,
    signed: Signed,
) -> Result<Json<Value>> {
    let body: PublicRoomsBody = match signed.body {
        Some(body) => serde_json::from_value(body)
            .map_err(|err| Error::bad_json(format!("Invalid publicRooms body: {err}")))?,
        None => PublicRoomsBody::default(),
    };
    let query = DirectoryQuery {
        limit: body.limit,
        since: body.since,
        term: body.filter.and_then(|f| f.generic_search_term),
    };
    Ok(Json(directory::local_public_rooms(&server, query).await?))
}

/// # `GET /_matrix/federation/v1/timestamp_to_event/{roomId}`
/// For a peer with members in the room, the event closest to `ts` that this unit holds.
pub async fn timestamp_to_event(
    State(server): State<Arc<Server>>,
    PathParams(room): PathParams<String>,
    QueryParams(q): QueryParams<TimestampQuery>,
    signed: Signed,
) -> Result<Json<Value>> {
    let room = room_id(&room)?.to_string();
    let forward = q.forward()?;
    let found = server
        .store
        .read(move |conn| {
            require_in_room(conn, &room, &signed.origin)?;
            events::closest_to_timestamp(conn, &room, q.ts, forward)
        })
        .await?;
    timestamp_answer(found)
}
