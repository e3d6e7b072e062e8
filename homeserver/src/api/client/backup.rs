//! Server-side key backup: `/room_keys/version[/{version}]` and
//! `/room_keys/keys[/{roomId}[/{sessionId}]]` (spec: "Server-side key backups").
//!
//! Writes to a version that is not the current one answer 403 `M_WRONG_ROOM_KEYS_VERSION`
//! with a `current_version` field. The shared [`Error`] type has no room for extra fields, so
//! that one response is built here by [`BackupError`]'s `IntoResponse`; every other failure is
//! handed to [`Error`]'s mapping unchanged.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ruma::UInt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::api::client::wire::{BackupVersion, Empty};
use crate::api::extract::{Auth, JsonBody, PathParams, QueryParams, room_id};
use crate::error::{Error, ErrorCode, Result};
use crate::service::Server;
use crate::service::backup::{self, BackupError, Counts, KeysByRoom, Selector, SessionKey};

/// The routes of this area.
pub fn routes() -> Router<Arc<Server>> {
    const PREFIX: &str = "/_matrix/client/v3/room_keys";
    let r = |path: &str| format!("{PREFIX}{path}");
    Router::new()
        .route(&r("/version"), post(create_version).get(current_version))
        .route(
            &r("/version/{version}"),
            get(get_version).put(update_version).delete(delete_version),
        )
        .route(
            &r("/keys"),
            get(get_all_keys).put(put_all_keys).delete(delete_all_keys),
        )
        .route(
            &r("/keys/{room_id}"),
            get(get_room_keys)
                .put(put_room_keys)
                .delete(delete_room_keys),
        )
        .route(
            &r("/keys/{room_id}/{session_id}"),
            get(get_session_key)
                .put(put_session_key)
                .delete(delete_session_key),
        )
}

impl IntoResponse for BackupError {
    fn into_response(self) -> Response {
        match self {
            BackupError::Other(err) => err.into_response(),
            BackupError::WrongVersion { current } => (
                StatusCode::FORBIDDEN,
                Json(json!({
                    "errcode": "M_WRONG_ROOM_KEYS_VERSION",
                    "error": "Wrong backup version: keys can only be stored in the current one",
                    "current_version": current,
                })),
            )
                .into_response(),
        }
    }
}

/// Body of `POST /room_keys/version`.
#[derive(Deserialize)]
pub struct CreateBody {
    algorithm: String,
    auth_data: Map<String, Value>,
}

/// Body of `PUT /room_keys/version/{version}`.
#[derive(Deserialize)]
pub struct UpdateBody {
    algorithm: String,
    auth_data: Map<String, Value>,
    version: Option<String>,
}

/// `KeyBackupData`; `UInt` refuses negative and over-large indexes with `M_BAD_JSON`.
#[derive(Deserialize)]
pub struct KeyBody {
    first_message_index: UInt,
    forwarded_count: UInt,
    is_verified: bool,
    session_data: Map<String, Value>,
}

/// `RoomKeyBackup`: one room's sessions.
#[derive(Deserialize)]
pub struct RoomBody {
    sessions: BTreeMap<String, KeyBody>,
}

/// Body of `PUT /room_keys/keys`: every room's sessions.
#[derive(Deserialize)]
pub struct AllBody {
    rooms: BTreeMap<String, RoomBody>,
}

/// The `version` query parameter of the key endpoints (required; checked by the handler so
/// that its absence is `M_MISSING_PARAM`).
#[derive(Deserialize)]
pub struct VersionQuery {
    version: Option<String>,
}

fn required_version(query: VersionQuery) -> Result<String> {
    query.version.ok_or_else(|| {
        Error::new(
            ErrorCode::MissingParam,
            "The version query parameter is required",
        )
    })
}

fn checked_room(raw: &str) -> Result<String> {
    Ok(room_id(raw)?.to_string())
}

fn session_key(body: KeyBody) -> SessionKey {
    SessionKey {
        first_message_index: u64::from(body.first_message_index),
        forwarded_count: u64::from(body.forwarded_count),
        is_verified: body.is_verified,
        session_data: body.session_data,
    }
}

fn sessions_of(body: RoomBody) -> BTreeMap<String, SessionKey> {
    body.sessions
        .into_iter()
        .map(|(session, key)| (session, session_key(key)))
        .collect()
}

/// One room's keys in a backup (spec: `RoomKeyBackup`).
#[derive(Debug, Serialize)]
pub struct RoomKeyBackup {
    /// Keys by session ID.
    pub sessions: BTreeMap<String, SessionKey>,
}

/// All keys of a backup (`GET /room_keys/keys`).
#[derive(Debug, Serialize)]
pub struct KeyBackup {
    /// Keys by room ID.
    pub rooms: BTreeMap<String, RoomKeyBackup>,
}

/// # `POST /_matrix/client/v3/room_keys/version`
pub async fn create_version(
    State(server): State<Arc<Server>>,
    auth: Auth,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Json<BackupVersion>> {
    let user = auth.user_id.clone();
    let version = backup::create_version(&server, user, body.algorithm, body.auth_data).await?;
    Ok(Json(BackupVersion { version }))
}

/// # `GET /_matrix/client/v3/room_keys/version`
pub async fn current_version(
    State(server): State<Arc<Server>>,
    auth: Auth,
) -> Result<Json<backup::VersionInfo>> {
    let info = backup::get_version(&server, auth.user_id.clone(), None).await?;
    Ok(Json(info))
}

/// # `GET /_matrix/client/v3/room_keys/version/{version}`
pub async fn get_version(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(version): PathParams<String>,
) -> Result<Json<backup::VersionInfo>> {
    let info = backup::get_version(&server, auth.user_id.clone(), Some(version)).await?;
    Ok(Json(info))
}

/// # `PUT /_matrix/client/v3/room_keys/version/{version}`
pub async fn update_version(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(version): PathParams<String>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> Result<Json<Empty>> {
    if body.version.as_ref().is_some_and(|v| *v != version) {
        return Err(Error::invalid_param(
            "The version in the body does not match the version in the path",
        ));
    }
    let user = auth.user_id.clone();
    backup::update_version(&server, user, version, body.algorithm, body.auth_data).await?;
    Ok(Json(Empty {}))
}

/// # `DELETE /_matrix/client/v3/room_keys/version/{version}`
pub async fn delete_version(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(version): PathParams<String>,
) -> Result<Json<Empty>> {
    backup::delete_version(&server, auth.user_id.clone(), version).await?;
    Ok(Json(Empty {}))
}

/// # `PUT /_matrix/client/v3/room_keys/keys`
pub async fn put_all_keys(
    State(server): State<Arc<Server>>,
    auth: Auth,
    QueryParams(query): QueryParams<VersionQuery>,
    JsonBody(body): JsonBody<AllBody>,
) -> Result<Json<Counts>, BackupError> {
    let version = required_version(query)?;
    let mut keys = KeysByRoom::new();
    for (room, sessions) in body.rooms {
        keys.insert(checked_room(&room)?, sessions_of(sessions));
    }
    let counts = backup::put_keys(&server, auth.user_id.clone(), version, keys).await?;
    Ok(Json(counts))
}

/// # `PUT /_matrix/client/v3/room_keys/keys/{roomId}`
pub async fn put_room_keys(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    QueryParams(query): QueryParams<VersionQuery>,
    JsonBody(body): JsonBody<RoomBody>,
) -> Result<Json<Counts>, BackupError> {
    let version = required_version(query)?;
    let keys = KeysByRoom::from([(checked_room(&room)?, sessions_of(body))]);
    let counts = backup::put_keys(&server, auth.user_id.clone(), version, keys).await?;
    Ok(Json(counts))
}

/// # `PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
pub async fn put_session_key(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, session)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<VersionQuery>,
    JsonBody(body): JsonBody<KeyBody>,
) -> Result<Json<Counts>, BackupError> {
    let version = required_version(query)?;
    let sessions = BTreeMap::from([(session, session_key(body))]);
    let keys = KeysByRoom::from([(checked_room(&room)?, sessions)]);
    let counts = backup::put_keys(&server, auth.user_id.clone(), version, keys).await?;
    Ok(Json(counts))
}

/// # `GET /_matrix/client/v3/room_keys/keys`
pub async fn get_all_keys(
    State(server): State<Arc<Server>>,
    auth: Auth,
    QueryParams(query): QueryParams<VersionQuery>,
) -> Result<Json<KeyBackup>> {
    let version = required_version(query)?;
    let user = auth.user_id.clone();
    let keys = backup::get_keys(&server, user, version, Selector::default()).await?;
    let rooms = keys
        .into_iter()
        .map(|(room, sessions)| (room, RoomKeyBackup { sessions }))
        .collect();
    Ok(Json(KeyBackup { rooms }))
}

/// # `GET /_matrix/client/v3/room_keys/keys/{roomId}`
pub async fn get_room_keys(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    QueryParams(query): QueryParams<VersionQuery>,
) -> Result<Json<RoomKeyBackup>> {
    let version = required_version(query)?;
    let room = checked_room(&room)?;
    let selector = Selector {
        room_id: Some(room.clone()),
        session_id: None,
    };
    let keys = backup::get_keys(&server, auth.user_id.clone(), version, selector).await?;
    // A room without keys in the backup has an empty `sessions` (spec: 200, not 404).
    let sessions = keys.get(&room).cloned().unwrap_or_default();
    Ok(Json(RoomKeyBackup { sessions }))
}

/// # `GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
pub async fn get_session_key(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, session)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<VersionQuery>,
) -> Result<Json<SessionKey>> {
    let version = required_version(query)?;
    let room = checked_room(&room)?;
    let selector = Selector {
        room_id: Some(room.clone()),
        session_id: Some(session.clone()),
    };
    let keys = backup::get_keys(&server, auth.user_id.clone(), version, selector).await?;
    let key = keys
        .get(&room)
        .and_then(|sessions| sessions.get(&session))
        .ok_or_else(|| Error::not_found("No key for this session in the backup"))?;
    Ok(Json(key.clone()))
}

/// # `DELETE /_matrix/client/v3/room_keys/keys`
pub async fn delete_all_keys(
    State(server): State<Arc<Server>>,
    auth: Auth,
    QueryParams(query): QueryParams<VersionQuery>,
) -> Result<Json<Counts>> {
    let version = required_version(query)?;
    let user = auth.user_id.clone();
    let counts = backup::delete_keys(&server, user, version, Selector::default()).await?;
    Ok(Json(counts))
}

/// # `DELETE /_matrix/client/v3/room_keys/keys/{roomId}`
pub async fn delete_room_keys(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    QueryParams(query): QueryParams<VersionQuery>,
) -> Result<Json<Counts>> {
    let version = required_version(query)?;
    let selector = Selector {
        room_id: Some(checked_room(&room)?),
        session_id: None,
    };
    let counts = backup::delete_keys(&server, auth.user_id.clone(), version, selector).await?;
    Ok(Json(counts))
}

/// # `DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
pub async fn delete_session_key(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((room, session)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<VersionQuery>,
) -> Result<Json<Counts>> {
    let version = required_version(query)?;
    let selector = Selector {
        room_id: Some(checked_room(&room)?),
        session_id: Some(session),
    };
    let counts = backup::delete_keys(&server, auth.user_id.clone(), version, selector).await?;
    Ok(Json(counts))
}
