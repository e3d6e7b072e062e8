//! The admin API's handlers, one per route listed in [`super::wire`]. Each extracts its input,
//! makes one service call and answers JSON; errors leave through [`crate::error::Error`], the
//! same mapping as the client API.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::wire::{
    AppserviceList, AppservicePinged, AppservicesReloaded, BackupOutcome, BackupRequest,
    CreateUser, NoticesSent, OAuthClientList, OAuthRevoked, PeerList, PeersReloaded, ReportList,
    ResetPassword, SendNotice, ServerStatus, SetAdmin, TlsReload, TlsReloaded, UserList,
    UserSummary,
};
use crate::api::extract::{JsonBody, PathParams};
use crate::error::{Error, ErrorCode, Result};
use crate::service::{Server, admin, appservice};

/// When the admin API started serving, for the uptime in `/v1/status`.
#[derive(Clone, Copy)]
struct Started(Instant);

/// The admin routes over `server`.
pub fn router(server: Arc<Server>, started: Instant) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/users", get(list_users).post(create_user))
        .route("/v1/users/{user}/password", post(reset_password))
        .route("/v1/users/{user}/deactivate", post(deactivate))
        .route("/v1/users/{user}/admin", post(set_admin))
        .route("/v1/backup", post(backup))
        .route("/v1/peers", get(list_peers))
        .route("/v1/peers/reload", post(reload_peers))
        .route("/v1/tls/reload", post(reload_client_tls))
        .route("/v1/reports", get(list_reports))
        .route("/v1/notices", post(send_notices))
        .route("/v1/appservices", get(list_appservices))
        .route("/v1/appservices/reload", post(reload_appservices))
        .route("/v1/appservices/{id}/ping", post(ping_appservice))
        .route("/v1/oauth/clients", get(list_oauth_clients))
        .route("/v1/users/{user}/oauth/revoke", post(revoke_oauth))
        .fallback(unknown)
        .layer(Extension(Started(started)))
        .with_state(server)
}

/// # `POST /v1/tls/reload`
async fn reload_client_tls(
    State(server): State<Arc<Server>>,
    JsonBody(body): JsonBody<TlsReload>,
) -> Result<Json<TlsReloaded>> {
    admin::reload_client_tls(&server, body.mode).await.map(Json)
}

/// # `GET /v1/reports`
async fn list_reports(State(server): State<Arc<Server>>) -> Result<Json<ReportList>> {
    let reports = admin::reports(&server).await?;
    Ok(Json(ReportList { reports }))
}

/// # `POST /v1/notices`
async fn send_notices(
    State(server): State<Arc<Server>>,
    JsonBody(body): JsonBody<SendNotice>,
) -> Result<Json<NoticesSent>> {
    admin::send_notices(&server, body.user.as_deref(), body.body)
        .await
        .map(|sent| Json(NoticesSent { sent }))
}

/// # `GET /v1/oauth/clients`
async fn list_oauth_clients(State(server): State<Arc<Server>>) -> Result<Json<OAuthClientList>> {
    let clients = crate::service::oauth::clients::list(&server).await?;
    Ok(Json(OAuthClientList { clients }))
}

/// # `POST /v1/users/{user}/oauth/revoke`
async fn revoke_oauth(
    State(server): State<Arc<Server>>,
    PathParams(user): PathParams<String>,
) -> Result<Json<OAuthRevoked>> {
    let (user_id, devices) = admin::revoke_oauth(&server, &user).await?;
    Ok(Json(OAuthRevoked { user_id, devices }))
}

async fn unknown() -> Error {
    Error::new(ErrorCode::Unrecognized, "unknown admin API path")
}

/// # `GET /v1/status`
async fn status(
    State(server): State<Arc<Server>>,
    Extension(Started(started)): Extension<Started>,
) -> Result<Json<ServerStatus>> {
    admin::status(&server, started).await.map(Json)
}

/// # `GET /v1/users`
async fn list_users(State(server): State<Arc<Server>>) -> Result<Json<UserList>> {
    let users = admin::list_users_in_store(&server.store).await?;
    Ok(Json(UserList { users }))
}

/// # `POST /v1/users`
async fn create_user(
    State(server): State<Arc<Server>>,
    JsonBody(body): JsonBody<CreateUser>,
) -> Result<Json<UserSummary>> {
    admin::create_user_in_store(
        &server.store,
        server.server_name(),
        &body.user,
        body.password,
        body.admin,
    )
    .await
    .map(Json)
}

/// # `POST /v1/users/{user}/password`
async fn reset_password(
    State(server): State<Arc<Server>>,
    PathParams(user): PathParams<String>,
    JsonBody(body): JsonBody<ResetPassword>,
) -> Result<Json<UserSummary>> {
    admin::reset_password(&server, &user, body.password)
        .await
        .map(Json)
}

/// # `POST /v1/users/{user}/deactivate`
async fn deactivate(
    State(server): State<Arc<Server>>,
    PathParams(user): PathParams<String>,
) -> Result<Json<UserSummary>> {
    admin::deactivate(&server, &user).await.map(Json)
}

/// # `POST /v1/users/{user}/admin`
async fn set_admin(
    State(server): State<Arc<Server>>,
    PathParams(user): PathParams<String>,
    JsonBody(body): JsonBody<SetAdmin>,
) -> Result<Json<UserSummary>> {
    admin::set_admin_in_store(&server.store, server.server_name(), &user, body.admin)
        .await
        .map(Json)
}

/// # `POST /v1/backup`
async fn backup(
    State(server): State<Arc<Server>>,
    JsonBody(body): JsonBody<BackupRequest>,
) -> Result<Json<BackupOutcome>> {
    admin::backup(&server, body.path).await.map(Json)
}

/// # `GET /v1/peers`
async fn list_peers(State(server): State<Arc<Server>>) -> Result<Json<PeerList>> {
    let peers = admin::list_peers(&server).await?;
    Ok(Json(PeerList { peers }))
}

/// # `POST /v1/peers/reload`
async fn reload_peers(State(server): State<Arc<Server>>) -> Result<Json<PeersReloaded>> {
    let peers = admin::reload_peers(&server).await?;
    Ok(Json(PeersReloaded { peers }))
}

/// # `GET /v1/appservices`
async fn list_appservices(State(server): State<Arc<Server>>) -> Result<Json<AppserviceList>> {
    let appservices = appservice::push::links(&server).await?;
    Ok(Json(AppserviceList { appservices }))
}

/// # `POST /v1/appservices/reload`
async fn reload_appservices(State(server): State<Arc<Server>>) -> Json<AppservicesReloaded> {
    let appservices = appservice::push::reload(&server).await;
    Json(AppservicesReloaded { appservices })
}

/// # `POST /v1/appservices/{id}/ping`
async fn ping_appservice(
    State(server): State<Arc<Server>>,
    PathParams(id): PathParams<String>,
) -> Response {
    match appservice::ping::ping(&server, &id, None).await {
        Ok(duration_ms) => Json(AppservicePinged { duration_ms }).into_response(),
        Err(err) => err.into_response(),
    }
}
