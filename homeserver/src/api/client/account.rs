//! Accounts: register, login, logout, refresh, whoami, password change, deactivation.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{Auth, JsonBody, MaybeAuth, QueryParams};
use crate::error::{Error, ErrorCode, Result};
use crate::service::Server;
use crate::service::accounts::{self, DeviceRequest, Session};

/// The `auth` object of a UIA request.
#[derive(Debug, Default, Deserialize)]
pub struct AuthData {
    #[serde(rename = "type")]
    kind: Option<String>,
    session: Option<String>,
    token: Option<String>,
    password: Option<String>,
    identifier: Option<Identifier>,
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Identifier {
    #[serde(rename = "type")]
    kind: String,
    user: Option<String>,
}

fn session_json(session: Session) -> Value {
    let mut body = json!({
        "user_id": session.user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
    });
    if let Some(refresh) = session.refresh_token {
        body["refresh_token"] = json!(refresh);
        body["expires_in_ms"] = json!(session.expires_in_ms);
    }
    body
}

#[derive(Deserialize)]
pub struct RegisterQuery {
    kind: Option<String>,
}

#[derive(Deserialize)]
pub struct RegisterBody {
    username: Option<String>,
    password: Option<String>,
    auth: Option<AuthData>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
    #[serde(default)]
    refresh_token: bool,
}

/// # `POST /_matrix/client/v3/register`
/// Open registration with `m.login.dummy`, or token registration with
/// `m.login.registration_token` when tokens are configured.
pub async fn register(
    State(server): State<Arc<Server>>,
    QueryParams(query): QueryParams<RegisterQuery>,
    JsonBody(body): JsonBody<RegisterBody>,
) -> Result<Json<Value>> {
    if query.kind.as_deref() == Some("guest") {
        return Err(Error::new(
            ErrorCode::GuestAccessForbidden,
            "Guest access is disabled on this unit",
        ));
    }
    let registration = &server.config.registration;
    let with_tokens = !registration.tokens.is_empty();
    if !registration.enabled && !with_tokens {
        return Err(Error::forbidden(
            "Registration is disabled; ask the unit's admin for an account",
        ));
    }
    let stage = if with_tokens {
        "m.login.registration_token"
    } else {
        "m.login.dummy"
    };
    let localpart = match &body.username {
        Some(name) => name.to_lowercase(),
        None => crate::util::random_string(12).to_lowercase(),
    };
    let user_id = accounts::validate_localpart(&localpart, &server)?;
    if !accounts::is_available(&server, &user_id).await? {
        return Err(Error::new(ErrorCode::UserInUse, "User ID already taken"));
    }
    let Some(auth) = body.auth.filter(|a| a.kind.is_some()) else {
        return Err(server.uia.challenge(&[stage], json!({})));
    };
    if auth.kind.as_deref() != Some(stage) {
        return Err(server.uia.failed(
            &[stage],
            auth.session.as_deref(),
            "M_UNKNOWN",
            "Unsupported authentication stage",
        ));
    }
    let token = if with_tokens {
        let Some(token) = auth.token.clone() else {
            return Err(server.uia.failed(
                &[stage],
                auth.session.as_deref(),
                "M_MISSING_PARAM",
                "Missing token",
            ));
        };
        let check = token.clone();
        let valid = server
            .store
            .read(move |conn| {
                crate::store::accounts::registration_token_valid(
                    conn,
                    &check,
                    crate::util::now_ms(),
                )
            })
            .await?;
        if !valid {
            let session = auth.session.as_deref();
            let reason = "Registration token is not valid";
            return Err(server.uia.failed(&[stage], session, "M_FORBIDDEN", reason));
        }
        Some(token)
    } else {
        None
    };
    let device = DeviceRequest {
        device_id: body.device_id,
        display_name: body.initial_device_display_name,
        refresh_token: body.refresh_token,
    };
    let session = accounts::register(
        &server,
        user_id.clone(),
        body.password,
        device,
        body.inhibit_login,
        token,
    )
    .await?;
    server.uia.finish(auth.session.as_deref());
    Ok(Json(match session {
        Some(session) => session_json(session),
        None => json!({"user_id": user_id}),
    }))
}

#[derive(Deserialize)]
pub struct AvailableQuery {
    username: String,
}

/// # `GET /_matrix/client/v3/register/available`
pub async fn available(
    State(server): State<Arc<Server>>,
    QueryParams(q): QueryParams<AvailableQuery>,
) -> Result<Json<Value>> {
    let user_id = accounts::validate_localpart(&q.username.to_lowercase(), &server)?;
    if accounts::is_available(&server, &user_id).await? {
        Ok(Json(json!({"available": true})))
    } else {
        Err(Error::new(ErrorCode::UserInUse, "User ID already taken"))
    }
}

#[derive(Deserialize)]
pub struct ValidityQuery {
    token: String,
}

/// # `GET /_matrix/client/v1/register/m.login.registration_token/validity`
pub async fn token_validity(
    State(server): State<Arc<Server>>,
    QueryParams(q): QueryParams<ValidityQuery>,
) -> Result<Json<Value>> {
    let valid = server
        .store
        .read(move |conn| {
            crate::store::accounts::registration_token_valid(conn, &q.token, crate::util::now_ms())
        })
        .await?;
    Ok(Json(json!({"valid": valid})))
}

/// # `GET /_matrix/client/v3/login`
pub async fn login_flows() -> Json<Value> {
    Json(json!({"flows": [{"type": "m.login.password"}]}))
}

#[derive(Deserialize)]
pub struct LoginBody {
    #[serde(rename = "type")]
    kind: String,
    identifier: Option<Identifier>,
    user: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    refresh_token: bool,
}

/// Resolves a login identifier (`@user:server` or a bare localpart) to one of our users.
fn login_user(
    server: &Server,
    identifier: Option<&Identifier>,
    user: Option<&str>,
) -> Result<ruma::OwnedUserId> {
    let name = match identifier {
        Some(id) if id.kind == "m.id.user" => id.user.as_deref(),
        Some(_) => {
            return Err(Error::new(
                ErrorCode::Unknown,
                "Only m.id.user identifiers are supported",
            ));
        }
        None => user,
    }
    .ok_or_else(|| Error::new(ErrorCode::MissingParam, "Missing user identifier"))?;
    let full = if name.starts_with('@') {
        name.to_owned()
    } else {
        format!("@{}:{}", name.to_lowercase(), server.server_name())
    };
    let user_id = ruma::OwnedUserId::try_from(full)
        .map_err(|_| Error::forbidden("Invalid username or password"))?;
    if user_id.server_name() != server.server_name() {
        return Err(Error::forbidden("Invalid username or password"));
    }
    Ok(user_id)
}

/// # `POST /_matrix/client/v3/login`
pub async fn login(
    State(server): State<Arc<Server>>,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Json<Value>> {
    if body.kind != "m.login.password" {
        return Err(Error::new(ErrorCode::Unknown, "Unsupported login type"));
    }
    let user_id = login_user(&server, body.identifier.as_ref(), body.user.as_deref())?;
    let password = body
        .password
        .ok_or_else(|| Error::new(ErrorCode::MissingParam, "Missing password"))?;
    let device = DeviceRequest {
        device_id: body.device_id,
        display_name: body.initial_device_display_name,
        refresh_token: body.refresh_token,
    };
    let session = accounts::login(&server, user_id, password, device).await?;
    let mut response = session_json(session);
    response["home_server"] = json!(server.server_name());
    Ok(Json(response))
}

/// # `POST /_matrix/client/v3/logout`
pub async fn logout(State(server): State<Arc<Server>>, auth: Auth) -> Result<Json<Value>> {
    accounts::logout(&server, auth.user_id.as_str(), &auth.device_id).await?;
    Ok(Json(json!({})))
}

/// # `POST /_matrix/client/v3/logout/all`
pub async fn logout_all(State(server): State<Arc<Server>>, auth: Auth) -> Result<Json<Value>> {
    accounts::logout_all(&server, auth.user_id.as_str()).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct RefreshBody {
    refresh_token: String,
}

/// # `POST /_matrix/client/v3/refresh`
pub async fn refresh(
    State(server): State<Arc<Server>>,
    JsonBody(body): JsonBody<RefreshBody>,
) -> Result<Json<Value>> {
    let session = accounts::refresh(&server, &body.refresh_token).await?;
    Ok(Json(json!({
        "access_token": session.access_token,
        "refresh_token": session.refresh_token,
        "expires_in_ms": session.expires_in_ms,
    })))
}

/// # `GET /_matrix/client/v3/account/whoami`
pub async fn whoami(auth: Auth) -> Json<Value> {
    Json(json!({"user_id": auth.user_id, "device_id": auth.device_id, "is_guest": false}))
}

/// Runs the `m.login.password` UIA stage for an already-authenticated user.
pub(super) async fn password_stage(
    server: &Server,
    auth: &Auth,
    data: Option<AuthData>,
) -> Result<Option<String>> {
    const STAGE: &str = "m.login.password";
    let Some(data) = data.filter(|d| d.kind.is_some()) else {
        return Err(server.uia.challenge(&[STAGE], json!({})));
    };
    if data.kind.as_deref() != Some(STAGE) {
        return Err(server.uia.failed(
            &[STAGE],
            data.session.as_deref(),
            "M_UNKNOWN",
            "Unsupported authentication stage",
        ));
    }
    let claimed = login_user(
        server,
        data.identifier.as_ref(),
        data.user.as_deref().or(Some(auth.user_id.as_str())),
    )?;
    if claimed != auth.user_id {
        return Err(server.uia.failed(
            &[STAGE],
            data.session.as_deref(),
            "M_FORBIDDEN",
            "Identifier is not the logged-in user",
        ));
    }
    let password = data.password.unwrap_or_default();
    if accounts::check_password(server, &auth.user_id, password)
        .await
        .is_err()
    {
        return Err(server.uia.failed(
            &[STAGE],
            data.session.as_deref(),
            "M_FORBIDDEN",
            "Invalid password",
        ));
    }
    Ok(data.session)
}

#[derive(Deserialize)]
pub struct PasswordBody {
    new_password: String,
    #[serde(default = "default_true")]
    logout_devices: bool,
    auth: Option<AuthData>,
}

fn default_true() -> bool {
    true
}

/// # `POST /_matrix/client/v3/account/password`
pub async fn change_password(
    State(server): State<Arc<Server>>,
    MaybeAuth(auth): MaybeAuth,
    JsonBody(body): JsonBody<PasswordBody>,
) -> Result<Json<Value>> {
    let auth = auth.ok_or_else(|| {
        Error::new(
            ErrorCode::MissingToken,
            "Password reset without login needs email, which this unit does not offer",
        )
    })?;
    let session = password_stage(&server, &auth, body.auth).await?;
    if body.new_password.is_empty() {
        return Err(Error::new(
            ErrorCode::WeakPassword,
            "Password must not be empty",
        ));
    }
    accounts::change_password(
        &server,
        auth.user_id.as_str(),
        &auth.device_id,
        body.new_password,
        body.logout_devices,
    )
    .await?;
    server.uia.finish(session.as_deref());
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct DeactivateBody {
    auth: Option<AuthData>,
}

/// # `POST /_matrix/client/v3/account/deactivate`
pub async fn deactivate(
    State(server): State<Arc<Server>>,
    MaybeAuth(auth): MaybeAuth,
    JsonBody(body): JsonBody<DeactivateBody>,
) -> Result<Json<Value>> {
    let auth = auth.ok_or_else(|| Error::new(ErrorCode::MissingToken, "Missing access token"))?;
    let session = password_stage(&server, &auth, body.auth).await?;
    accounts::deactivate(&server, auth.user_id.clone()).await?;
    server.uia.finish(session.as_deref());
    Ok(Json(json!({"id_server_unbind_result": "no-support"})))
}

/// # `GET /_matrix/client/v3/account/3pid`
/// Closed deployments have no email or phone lookups: always empty.
pub async fn threepids(_auth: Auth) -> Json<Value> {
    Json(json!({"threepids": []}))
}

/// # `POST /_matrix/client/v3/{register,account/password,account/3pid}/{email,msisdn}/requestToken`
/// Closed deployments send no email or SMS and use no identity server: every validation
/// request is refused with the spec's `M_THREEPID_DENIED`.
pub async fn threepid_request_token() -> Error {
    Error::new(
        ErrorCode::ThreepidDenied,
        "This unit does not use email addresses or phone numbers",
    )
}

/// # `POST /_matrix/client/v3/account/3pid/add` and `/account/3pid/bind`
/// Nothing can be added or bound: no third-party identifiers on a closed unit.
pub async fn threepid_add(_auth: Auth) -> Error {
    Error::new(
        ErrorCode::ThreepidDenied,
        "This unit does not use email addresses or phone numbers",
    )
}

/// # `POST /_matrix/client/v3/account/3pid/delete` and `/account/3pid/unbind`
/// There is never anything to remove; the spec's answer when no identity server was involved.
pub async fn threepid_delete(_auth: Auth) -> Json<Value> {
    Json(json!({"id_server_unbind_result": "no-support"}))
}
