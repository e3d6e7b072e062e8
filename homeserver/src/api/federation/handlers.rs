//! Server-Server API handlers. Each takes a [`Signed`] request (origin already verified
//! against the allow-list), calls one service function, and shapes the spec response.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::Signed;
use crate::api::extract::{
    PathParams, QueryParams, RawQuery, TimestampQuery, event_id, room_id, timestamp_answer, user_id,
};
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::wire::{
    DirectoryResponse, EventAuthResponse, InviteRequest, InviteResponse, KeysClaimRequest,
    KeysQueryRequest, MakeMembershipAnswer, MissingEventsRequest, MissingEventsResponse,
    PduTransaction, ProfileResponse, PublicRoomsResponse, SendJoinResponse, StateIdsResponse,
    StateResponse, Transaction, TransactionResult,
};
use crate::service::directory::{self, DirectoryQuery};
use crate::service::federation as fed;
use crate::service::federation::resident;
use crate::service::{Server, e2ee};
use crate::util::now_ms;

/// # `GET /_matrix/key/v2/server`
/// Our signed verify keys. Peers pin keys from cards, but Synapse-style peers may read this.
pub async fn server_keys(
    State(server): State<Arc<Server>>,
) -> Result<Json<ruma::CanonicalJsonObject>> {
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
    // A signed document is served as the canonical JSON that was signed.
    Ok(Json(object))
}

/// # `GET /_matrix/federation/v1/version`
pub async fn version() -> Json<FederationVersion> {
    Json(FederationVersion {
        server: ServerVersion {
            name: "Outpost",
            version: env!("CARGO_PKG_VERSION"),
        },
    })
}

/// The answer of `GET /version`.
#[derive(serde::Serialize)]
pub struct FederationVersion {
    /// The implementation.
    server: ServerVersion,
}

/// The implementation's name and version.
#[derive(serde::Serialize)]
pub struct ServerVersion {
    name: &'static str,
    version: &'static str,
}

/// The answer of `GET /openid/userinfo`.
#[derive(serde::Serialize)]
pub struct UserInfo {
    /// The user the token belongs to.
    sub: String,
}

/// `{}`: the answer of `send_leave` v2.
#[derive(serde::Serialize)]
pub struct Empty {}

/// # `GET /_matrix/federation/v1/openid/userinfo`
/// Not X-Matrix authenticated: the caller is a widget or call service, not a peer, and the
/// OpenID token it presents is the whole authorisation.
pub async fn openid_userinfo(
    State(server): State<Arc<Server>>,
    QueryParams(query): QueryParams<UserinfoQuery>,
) -> Result<Json<UserInfo>> {
    let user = server.openid.user_of(&query.access_token).ok_or_else(|| {
        Error::new(
            ErrorCode::UnknownToken,
            "The OpenID token is not known or has expired",
        )
    })?;
    Ok(Json(UserInfo { sub: user }))
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
    mut signed: Signed,
) -> Result<Json<TransactionResult>> {
    let body: Transaction = signed.body_as("transaction")?;
    Ok(Json(
        fed::receive_transaction(&server, &signed.origin, &txn_id, body).await?,
    ))
}

/// # `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`
pub async fn make_join(
    State(server): State<Arc<Server>>,
    PathParams((room, user)): PathParams<(String, String)>,
    query: RawQuery,
    signed: Signed,
) -> Result<Json<MakeMembershipAnswer>> {
    let versions = query.all("ver");
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
) -> Result<Json<SendJoinResponse>> {
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
) -> Result<Json<MakeMembershipAnswer>> {
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
) -> Result<Json<Empty>> {
    let body = signed
        .body
        .ok_or_else(|| Error::bad_json("missing event"))?;
    fed::receive_membership(&server, &signed.origin, room_id(&room)?, body, "leave").await?;
    Ok(Json(Empty {}))
}

/// # `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`
pub async fn invite(
    State(server): State<Arc<Server>>,
    PathParams((room, event)): PathParams<(String, String)>,
    mut signed: Signed,
) -> Result<Json<InviteResponse>> {
    let body: InviteRequest = signed.body_as("invite")?;
    Ok(Json(
        fed::receive_invite(&server, &signed.origin, room_id(&room)?, &event, body).await?,
    ))
}

/// # `GET /_matrix/federation/v1/event/{eventId}`
pub async fn event(
    State(server): State<Arc<Server>>,
    PathParams(id): PathParams<String>,
    signed: Signed,
) -> Result<Json<PduTransaction>> {
    let id = event_id(&id)?;
    let pdu = resident::event(&server, signed.origin, id).await?;
    Ok(Json(PduTransaction {
        origin: server.server_name().to_string(),
        origin_server_ts: now_ms(),
        pdus: vec![pdu],
    }))
}

/// The state before `?event_id=` in a room the origin takes part in, as event IDs, and its
/// auth chain (shared by `/state_ids` and `/state`).
async fn requested_state(
    server: &Server,
    room: &str,
    query: &RawQuery,
    origin: String,
) -> Result<(Vec<String>, Vec<String>)> {
    let room = room_id(room)?;
    let event = query.required("event_id")?;
    resident::state_ids(server, room, event, origin).await
}

/// # `GET /_matrix/federation/v1/state_ids/{roomId}`
pub async fn state_ids(
    State(server): State<Arc<Server>>,
    PathParams(room): PathParams<String>,
    query: RawQuery,
    signed: Signed,
) -> Result<Json<StateIdsResponse>> {
    let (pdu_ids, auth_chain_ids) = requested_state(&server, &room, &query, signed.origin).await?;
    Ok(Json(StateIdsResponse {
        pdu_ids,
        auth_chain_ids,
    }))
}

/// # `GET /_matrix/federation/v1/state/{roomId}`
pub async fn state(
    State(server): State<Arc<Server>>,
    PathParams(room): PathParams<String>,
    query: RawQuery,
    signed: Signed,
) -> Result<Json<StateResponse>> {
    let (ids, chain) = requested_state(&server, &room, &query, signed.origin).await?;
    let (pdus, auth_chain) = resident::state_pdus(&server, ids, chain).await?;
    Ok(Json(StateResponse { pdus, auth_chain }))
}

/// # `GET /_matrix/federation/v1/backfill/{roomId}`
pub async fn backfill(
    State(server): State<Arc<Server>>,
    PathParams(room): PathParams<String>,
    query: RawQuery,
    signed: Signed,
) -> Result<Json<PduTransaction>> {
    let room = room_id(&room)?;
    let from = query.all("v");
    let limit: usize = match query.first("limit") {
        Some(limit) => limit
            .parse()
            .map_err(|_| Error::invalid_param("limit must be a number"))?,
        None => 50,
    };
    let limit = limit.clamp(1, 100);
    let pdus = resident::backfill(&server, signed.origin, room, from, limit).await?;
    Ok(Json(PduTransaction {
        origin: server.server_name().to_string(),
        origin_server_ts: now_ms(),
        pdus,
    }))
}

/// # `POST /_matrix/federation/v1/get_missing_events/{roomId}`
pub async fn get_missing_events(
    State(server): State<Arc<Server>>,
    PathParams(room): PathParams<String>,
    mut signed: Signed,
) -> Result<Json<MissingEventsResponse>> {
    let room = room_id(&room)?;
    let body: MissingEventsRequest = signed.body_as("get_missing_events")?;
    let earliest: BTreeSet<String> = body.earliest_events.into_iter().collect();
    let limit = body.limit.clamp(1, 100) as usize;
    let events = resident::missing_events(
        &server,
        signed.origin,
        room,
        earliest,
        body.latest_events,
        limit,
        body.min_depth,
    )
    .await?;
    Ok(Json(MissingEventsResponse { events }))
}

/// # `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`
pub async fn event_auth(
    State(server): State<Arc<Server>>,
    PathParams((room, event)): PathParams<(String, String)>,
    signed: Signed,
) -> Result<Json<EventAuthResponse>> {
    let room = room_id(&room)?;
    let event = event_id(&event)?;
    let auth_chain = resident::event_auth(&server, signed.origin, room, event).await?;
    Ok(Json(EventAuthResponse { auth_chain }))
}

/// # `GET /_matrix/federation/v1/query/profile`
pub async fn query_profile(
    State(server): State<Arc<Server>>,
    query: RawQuery,
    _signed: Signed,
) -> Result<Json<ProfileResponse>> {
    let user = user_id(&query.required("user_id")?)?;
    if user.server_name() != server.server_name() {
        return Err(Error::not_found("Not a user of this unit"));
    }
    let (displayname, avatar_url) = resident::profile(&server, &user).await?;
    // An unset field is left out (the schema's fields are strings, never null).
    Ok(Json(match query.first("field").as_deref() {
        Some("displayname") => ProfileResponse {
            displayname,
            avatar_url: None,
        },
        Some("avatar_url") => ProfileResponse {
            displayname: None,
            avatar_url,
        },
        _ => ProfileResponse {
            displayname,
            avatar_url,
        },
    }))
}

/// # `GET /_matrix/federation/v1/query/directory`
pub async fn query_directory(
    State(server): State<Arc<Server>>,
    query: RawQuery,
    _signed: Signed,
) -> Result<Json<DirectoryResponse>> {
    let alias = query.required("room_alias")?;
    let room = resident::alias(&server, alias).await?;
    let room_id =
        room_id(&room).map_err(|_| Error::internal("stored alias names a bad room ID"))?;
    Ok(Json(DirectoryResponse {
        room_id,
        servers: vec![server.server_name().to_string()],
    }))
}

/// # `GET /_matrix/federation/v1/user/devices/{userId}`
/// A local user's devices with their keys, for a peer's device-list resync.
pub async fn user_devices(
    State(server): State<Arc<Server>>,
    PathParams(user): PathParams<String>,
    _signed: Signed,
) -> Result<Json<e2ee::UserDevicesAnswer>> {
    let user = user_id(&user)?;
    if user.server_name() != server.server_name() {
        return Err(Error::invalid_param("user is not on this server"));
    }
    Ok(Json(
        server
            .store
            .read(move |conn| e2ee::user_devices(conn, &user))
            .await?,
    ))
}

/// Keeps only this server's users of a `{user: …}` request map; a malformed user ID is
/// 400 `M_INVALID_PARAM` for the whole request.
fn our_users<T>(
    server: &Server,
    users: std::collections::BTreeMap<String, T>,
) -> Result<std::collections::BTreeMap<ruma::OwnedUserId, T>> {
    Ok(e2ee::typed_users(users)?
        .into_iter()
        .filter(|(user, _)| user.server_name() == server.server_name())
        .collect())
}

/// # `POST /_matrix/federation/v1/user/keys/query`
pub async fn user_keys_query(
    State(server): State<Arc<Server>>,
    mut signed: Signed,
) -> Result<Json<e2ee::KeysQueryAnswer>> {
    let body: KeysQueryRequest = signed.body_as("keys query")?;
    let users = our_users(&server, body.device_keys)?;
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
    mut signed: Signed,
) -> Result<Json<e2ee::KeysClaimAnswer>> {
    let body: KeysClaimRequest = signed.body_as("keys claim")?;
    let users = our_users(&server, body.one_time_keys)?;
    Ok(Json(e2ee::claim_local(&server, users).await?))
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
) -> Result<Json<PublicRoomsResponse>> {
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
) -> Result<Json<PublicRoomsResponse>> {
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
) -> Result<Json<crate::service::timeline::TimestampMatch>> {
    let room = room_id(&room)?;
    let forward = q.forward()?;
    let found = resident::closest_to_timestamp(&server, signed.origin, room, q.ts, forward).await?;
    timestamp_answer(found)
}
