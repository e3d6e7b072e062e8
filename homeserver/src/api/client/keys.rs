//! End-to-end encryption keys and to-device messages: `/keys/*`, `/sendToDevice`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ruma::{DeviceId, OwnedDeviceId};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::account::{AuthData, oauth_or_password_stage};
use crate::api::client::wire::{DeviceIdResponse, Empty, KeyChanges};
use crate::api::extract::{Auth, JsonBody, PathParams, QueryParams};
use crate::error::{Error, Result};
use crate::service::e2ee::{
    DehydratedDevice, DehydratedDeviceBody, DehydratedEvents, KeyCounts, KeysClaimAnswer,
    KeysClaimBody, KeysQueryAnswer, KeysQueryBody, KeysUploadBody, SignaturesUploadAnswer,
    SignaturesUploadBody, SigningKeysUpload, typed_users,
};
use crate::service::tokens::stream_position;
use crate::service::{Server, e2ee};

/// The routes of this area.
pub fn routes() -> Router<Arc<Server>> {
    const V3: &str = "/_matrix/client/v3";
    let r = |path: &str| format!("{V3}{path}");
    Router::new()
        .route(&r("/keys/upload"), post(upload))
        .route(&r("/keys/query"), post(query))
        .route(&r("/keys/claim"), post(claim))
        .route(&r("/keys/changes"), get(changes))
        .route(
            &r("/keys/device_signing/upload"),
            post(device_signing_upload),
        )
        .route(&r("/keys/signatures/upload"), post(signatures_upload))
        // The unstable paths that clients of the cross-signing MSC generation still probe.
        .route(
            "/_matrix/client/unstable/keys/device_signing/upload",
            post(device_signing_upload),
        )
        .route(
            "/_matrix/client/unstable/keys/signatures/upload",
            post(signatures_upload),
        )
        .route(
            &r("/sendToDevice/{event_type}/{txn_id}"),
            put(send_to_device),
        )
        .route(
            &format!("{MSC3814}/dehydrated_device"),
            get(get_dehydrated)
                .put(put_dehydrated)
                .delete(delete_dehydrated),
        )
        .route(
            &format!("{MSC3814}/dehydrated_device/{{device_id}}/events"),
            get(dehydrated_events_get).post(dehydrated_events_post),
        )
}

/// Dehydrated devices live under MSC3814's unstable prefix until the MSC is merged.
const MSC3814: &str = "/_matrix/client/unstable/org.matrix.msc3814.v1";

/// # `POST /_matrix/client/v3/keys/upload`
pub async fn upload(
    State(server): State<Arc<Server>>,
    auth: Auth,
    JsonBody(body): JsonBody<KeysUploadBody>,
) -> Result<Json<KeyCounts>> {
    let counts = e2ee::upload_keys(&server, &auth.user_id, auth.device()?, body).await?;
    Ok(Json(counts))
}

fn timeout_of(ms: Option<u64>) -> Duration {
    Duration::from_millis(ms.unwrap_or(10_000))
}

/// # `POST /_matrix/client/v3/keys/query`
pub async fn query(
    State(server): State<Arc<Server>>,
    auth: Auth,
    JsonBody(body): JsonBody<KeysQueryBody>,
) -> Result<Json<KeysQueryAnswer>> {
    let users = typed_users(body.device_keys)?;
    let answer = e2ee::query_keys(&server, &auth.user_id, users, timeout_of(body.timeout)).await?;
    Ok(Json(answer))
}

/// # `POST /_matrix/client/v3/keys/claim`
pub async fn claim(
    State(server): State<Arc<Server>>,
    _auth: Auth,
    JsonBody(body): JsonBody<KeysClaimBody>,
) -> Result<Json<KeysClaimAnswer>> {
    let wanted = typed_users(body.one_time_keys)?;
    let answer = e2ee::claim_keys(&server, wanted, timeout_of(body.timeout)).await?;
    Ok(Json(answer))
}

#[derive(Deserialize)]
pub struct ChangesQuery {
    from: String,
    to: String,
}

/// # `GET /_matrix/client/v3/keys/changes`
pub async fn changes(
    State(server): State<Arc<Server>>,
    auth: Auth,
    QueryParams(q): QueryParams<ChangesQuery>,
) -> Result<Json<KeyChanges>> {
    let (from, to) = (stream_position(&q.from)?, stream_position(&q.to)?);
    let user = auth.user_id;
    let (changed, left) = server
        .store
        .read(move |conn| e2ee::device_list_delta(conn, &user, from, to.max(from)))
        .await?;
    Ok(Json(KeyChanges { changed, left }))
}

/// The body of `POST /keys/device_signing/upload`: the keys and the UIA `auth` part.
#[derive(Deserialize)]
pub struct DeviceSigningBody {
    /// The cross-signing keys.
    #[serde(flatten)]
    keys: SigningKeysUpload,
    /// The user-interactive authentication, when replacing keys.
    #[serde(default)]
    auth: Option<AuthData>,
}

/// # `POST /_matrix/client/v3/keys/device_signing/upload`
///
/// The first upload needs no password (there is nothing to protect yet, and clients bootstrap
/// cross-signing right after login); replacing existing keys does: the password, or for a
/// device signed in through OAuth the `m.oauth` stage (spec v1.17, MSC4312).
pub async fn device_signing_upload(
    State(server): State<Arc<Server>>,
    auth: Auth,
    JsonBody(raw): JsonBody<Value>,
) -> Result<Json<Empty>> {
    // The raw body binds the UIA session to this request; the typed one is what is stored.
    let body: DeviceSigningBody =
        serde_json::from_value(raw.clone()).map_err(|err| Error::bad_json(err.to_string()))?;
    // Spec v1.17: an application service replaces its users' keys without UIA.
    let needs_auth =
        e2ee::upload_signing_keys(&server, &auth.user_id, &body.keys, auth.is_appservice()).await?;
    if needs_auth {
        let action = "POST /keys/device_signing/upload".to_owned();
        let session = oauth_or_password_stage(&server, &auth, action, raw, body.auth).await?;
        e2ee::upload_signing_keys(&server, &auth.user_id, &body.keys, true).await?;
        server.uia.finish(&session, None);
    }
    Ok(Json(Empty {}))
}

/// # `POST /_matrix/client/v3/keys/signatures/upload`
pub async fn signatures_upload(
    State(server): State<Arc<Server>>,
    auth: Auth,
    JsonBody(body): JsonBody<SignaturesUploadBody>,
) -> Result<Json<SignaturesUploadAnswer>> {
    let body = typed_users(body)?;
    Ok(Json(
        e2ee::upload_signatures(&server, &auth.user_id, body).await?,
    ))
}

#[derive(Deserialize)]
pub struct ToDeviceBody {
    messages: Map<String, Value>,
}

/// # `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`
pub async fn send_to_device(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((event_type, txn_id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<ToDeviceBody>,
) -> Result<Json<Empty>> {
    if body.messages.values().any(|v| !v.is_object()) {
        return Err(Error::bad_json(
            "messages must map user IDs to device IDs to contents",
        ));
    }
    for user in body.messages.keys() {
        crate::api::extract::user_id(user)?;
    }
    e2ee::send_to_device(
        &server,
        &auth.user_id,
        auth.device()?,
        &event_type,
        &txn_id,
        body.messages,
    )
    .await?;
    Ok(Json(Empty {}))
}

/// # `PUT /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device`
pub async fn put_dehydrated(
    State(server): State<Arc<Server>>,
    auth: Auth,
    JsonBody(body): JsonBody<DehydratedDeviceBody>,
) -> Result<Json<DeviceIdResponse>> {
    let device_id = e2ee::put_dehydrated_device(&server, &auth.user_id, body).await?;
    Ok(Json(DeviceIdResponse { device_id }))
}

/// # `GET /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device`
pub async fn get_dehydrated(
    State(server): State<Arc<Server>>,
    auth: Auth,
) -> Result<Json<DehydratedDevice>> {
    Ok(Json(
        e2ee::get_dehydrated_device(&server, &auth.user_id).await?,
    ))
}

/// # `DELETE /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device`
pub async fn delete_dehydrated(
    State(server): State<Arc<Server>>,
    auth: Auth,
) -> Result<Json<DeviceIdResponse>> {
    let device_id = e2ee::delete_dehydrated_device(&server, &auth.user_id).await?;
    Ok(Json(DeviceIdResponse { device_id }))
}

#[derive(Deserialize, Default)]
pub struct EventsQuery {
    from: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct EventsBody {
    next_batch: Option<String>,
}

async fn dehydrated_events(
    server: &Server,
    auth: &Auth,
    device_id: &DeviceId,
    from: Option<&str>,
) -> Result<Json<DehydratedEvents>> {
    Ok(Json(
        e2ee::dehydrated_events(server, &auth.user_id, device_id, from).await?,
    ))
}

/// # `GET /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/{deviceId}/events`
/// The MSC's form: the batch token in `?from=`.
pub async fn dehydrated_events_get(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(device_id): PathParams<OwnedDeviceId>,
    QueryParams(q): QueryParams<EventsQuery>,
) -> Result<Json<DehydratedEvents>> {
    dehydrated_events(&server, &auth, &device_id, q.from.as_deref()).await
}

/// # `POST /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/{deviceId}/events`
/// The form clients (matrix-rust-sdk) and Synapse use: the batch token as `next_batch` in the
/// body.
pub async fn dehydrated_events_post(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(device_id): PathParams<OwnedDeviceId>,
    JsonBody(body): JsonBody<EventsBody>,
) -> Result<Json<DehydratedEvents>> {
    dehydrated_events(&server, &auth, &device_id, body.next_batch.as_deref()).await
}
