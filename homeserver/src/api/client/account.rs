//! Accounts: register, login, logout, refresh, whoami, password change, deactivation.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ruma::{DeviceId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::client::wire::{
    Available, Empty, IdServerUnbind, LoginFlow, LoginFlows, LoginResponse, RefreshResponse,
    ThreePids, TokenValidity, WhoAmI,
};
use crate::api::extract::{Auth, JsonBody, MaybeAuth, QueryParams, RawToken, appservice_of};
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::appservice::{NamespaceKind, Registration};
use crate::service::accounts::{self, DeviceRequest, Session};
use crate::service::uia::{self, Step};
use crate::service::{Server, oauth};

/// The `auth` object of a UIA request.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct AuthData {
    #[serde(rename = "type")]
    kind: Option<String>,
    session: Option<String>,
    token: Option<String>,
    password: Option<String>,
    identifier: Option<Identifier>,
    user: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Identifier {
    #[serde(rename = "type")]
    kind: String,
    user: Option<String>,
}

/// The answer of `POST /register` (spec: 200): the session, unless `inhibit_login`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The new account.
    pub user_id: OwnedUserId,
    /// Its first access token (absent with `inhibit_login`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Its first device (absent with `inhibit_login`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// A refresh token, when the client asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The access token's lifetime, when it is refreshable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<i64>,
}

impl RegisterResponse {
    /// The answer for `user_id`, with the session a login made (`None` with `inhibit_login`).
    fn new(user_id: OwnedUserId, session: Option<Session>) -> Self {
        match session {
            Some(session) => Self {
                user_id: session.user_id,
                access_token: Some(session.access_token),
                device_id: Some(session.device_id),
                expires_in_ms: session.refresh_token.as_ref().and(session.expires_in_ms),
                refresh_token: session.refresh_token,
            },
            None => Self {
                user_id,
                access_token: None,
                device_id: None,
                refresh_token: None,
                expires_in_ms: None,
            },
        }
    }
}

#[derive(Deserialize)]
pub struct RegisterQuery {
    kind: Option<String>,
}

/// The registration parameters, as remembered by the UIA session (see `service::uia`).
#[derive(Deserialize)]
struct RegisterParams {
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
    #[serde(default)]
    refresh_token: bool,
}

/// The `auth` object of a request, parsed from the raw body (bound by `service::uia`).
fn auth_of(body: &Value) -> Result<Option<AuthData>> {
    body.get("auth")
        .filter(|auth| !auth.is_null())
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|err| Error::bad_json(format!("auth: {err}")))
}

/// The login and registration type of application services.
const APPSERVICE_LOGIN: &str = "m.login.application_service";

/// 400 `M_EXCLUSIVE` unless an ordinary registration may take `user_id`: no appservice
/// claims it exclusively.
fn require_not_exclusive(server: &Server, user_id: &ruma::UserId) -> Result<()> {
    if let Some(owner) = server
        .appservices
        .exclusive_owner(NamespaceKind::Users, user_id.as_str())
    {
        return Err(Error::new(
            ErrorCode::Exclusive,
            format!(
                "{user_id} is reserved by the application service {:?}",
                owner.id
            ),
        ));
    }
    Ok(())
}

/// 400 `M_EXCLUSIVE` unless `registration` may take `user_id`: its sender or a user in its
/// namespaces that no other appservice claims exclusively.
fn require_in_namespace(
    server: &Server,
    registration: &Registration,
    user_id: &ruma::UserId,
) -> Result<()> {
    let own = server.server_name().to_string();
    let other_owner = server
        .appservices
        .exclusive_owner(NamespaceKind::Users, user_id.as_str())
        .filter(|owner| owner.id != registration.id);
    if !registration.may_masquerade_as(user_id.as_str(), &own) || other_owner.is_some() {
        return Err(Error::new(
            ErrorCode::Exclusive,
            format!("{user_id} is not in the application service's user namespace"),
        ));
    }
    Ok(())
}

/// An MSC4190 appservice makes its users' devices itself and gets no sessions from us: 400
/// `M_APPSERVICE_LOGIN_UNSUPPORTED` (the spec's code for refusing an appservice login).
fn refuse_msc4190_login(registration: &Registration) -> Result<()> {
    if registration.msc4190 {
        return Err(Error::new(
            ErrorCode::AppserviceLoginUnsupported,
            "This application service manages its devices itself (MSC4190): no login",
        ));
    }
    Ok(())
}

/// `POST /register` with `type: m.login.application_service`: no user-interactive auth,
/// a name inside the appservice's namespace, no password.
async fn register_for_appservice(
    server: &Server,
    token: Option<&str>,
    raw: Value,
) -> Result<Json<RegisterResponse>> {
    let registration = appservice_of(server, token)?;
    let params: RegisterParams = parse_params(raw)?;
    let name = params
        .username
        .ok_or_else(|| Error::new(ErrorCode::MissingParam, "username is required"))?;
    let user_id = accounts::validate_localpart(&name, server)?;
    require_in_namespace(server, &registration, &user_id)?;
    if !params.inhibit_login {
        refuse_msc4190_login(&registration)?;
    }
    let device = DeviceRequest {
        device_id: params.device_id,
        display_name: params.initial_device_display_name,
        refresh_token: params.refresh_token,
    };
    let login = accounts::register(
        server,
        user_id.clone(),
        None,
        device,
        params.inhibit_login,
        None,
    )
    .await?;
    Ok(Json(RegisterResponse::new(user_id, login)))
}

/// # `POST /_matrix/client/v3/register`
/// Open registration with `m.login.dummy`, or token registration with
/// `m.login.registration_token` when tokens are configured. The session remembers the first
/// request's parameters, and a completed session replayed answers with the same account.
/// An application service registers its users with `type: m.login.application_service`
/// and its `as_token`, whether or not registration is open.
pub async fn register(
    State(server): State<Arc<Server>>,
    QueryParams(query): QueryParams<RegisterQuery>,
    RawToken(token): RawToken,
    JsonBody(raw): JsonBody<Value>,
) -> Result<Json<RegisterResponse>> {
    if raw.get("type").and_then(Value::as_str) == Some(APPSERVICE_LOGIN) {
        return register_for_appservice(&server, token.as_deref(), raw).await;
    }
    if query.kind.as_deref() == Some("guest") {
        return Err(Error::new(
            ErrorCode::GuestAccessForbidden,
            "Guest access is disabled on this unit",
        ));
    }
    if !server.config.auth.legacy_login {
        return Err(Error::forbidden(
            "Registration through /register is off on this unit: create an account on its \
             sign-in page (OAuth 2.0 API, prompt=create)",
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
    let flows: uia::Flows<'_> = &[&[stage]];
    let auth = auth_of(&raw)?.unwrap_or_default();
    if auth.session.is_none() {
        // A first request learns at once that its name is unusable, before any stage.
        let first: RegisterParams = parse_params(raw.clone())?;
        if let Some(name) = &first.username {
            let user_id = accounts::validate_localpart(&name.to_lowercase(), &server)?;
            require_not_exclusive(&server, &user_id)?;
            if !accounts::is_available(&server, &user_id).await? {
                return Err(Error::new(ErrorCode::UserInUse, "User ID already taken"));
            }
        }
    }
    let op = uia::Operation::register(raw);
    let step = server
        .uia
        .step(&op, flows, auth.session.as_deref(), auth.kind.as_deref())?;
    let (session, params, token) = match step {
        Step::Replay(answer) => {
            // The answer this handler stored when the session completed.
            let answer = serde_json::from_value(answer)
                .map_err(|err| Error::internal(format!("stored register answer: {err}")))?;
            return Ok(Json(answer));
        }
        Step::Authorised {
            session,
            params,
            proof,
        } => (session, params, proof),
        Step::Attempt {
            session,
            stage: attempted,
            ..
        } => {
            if attempted != stage {
                let (code, why) = ("M_UNKNOWN", "Unsupported authentication stage");
                return Err(server.uia.failed(flows, &session, code, why));
            }
            let token = if with_tokens {
                let Some(token) = auth.token.clone() else {
                    return Err(server.uia.failed(
                        flows,
                        &session,
                        "M_MISSING_PARAM",
                        "Missing token",
                    ));
                };
                let valid =
                    crate::service::accounts::registration_token_valid(&server, token.clone())
                        .await?;
                if !valid {
                    let why = "Registration token is not valid";
                    return Err(server.uia.failed(flows, &session, "M_FORBIDDEN", why));
                }
                Some(token)
            } else {
                None
            };
            match server.uia.passed(flows, &session, stage, token)? {
                Step::Authorised {
                    session,
                    params,
                    proof,
                } => (session, params, proof),
                other => return Err(Error::Internal(format!("one-stage flow left {other:?}"))),
            }
        }
    };
    let params: RegisterParams = parse_params(params)?;
    let localpart = match &params.username {
        Some(name) => name.to_lowercase(),
        None => crate::util::random_string(12).to_lowercase(),
    };
    let user_id = accounts::validate_localpart(&localpart, &server)?;
    require_not_exclusive(&server, &user_id)?;
    if !accounts::is_available(&server, &user_id).await? {
        return Err(Error::new(ErrorCode::UserInUse, "User ID already taken"));
    }
    let device = DeviceRequest {
        device_id: params.device_id,
        display_name: params.initial_device_display_name,
        refresh_token: params.refresh_token,
    };
    let login = accounts::register(
        &server,
        user_id.clone(),
        params.password,
        device,
        params.inhibit_login,
        token,
    )
    .await?;
    let answer = RegisterResponse::new(user_id, login);
    let stored = serde_json::to_value(&answer).map_err(|err| Error::internal(err.to_string()))?;
    server.uia.finish(&session, Some(stored));
    Ok(Json(answer))
}

fn parse_params<T: serde::de::DeserializeOwned>(params: Value) -> Result<T> {
    serde_json::from_value(params).map_err(|err| Error::bad_json(err.to_string()))
}

#[derive(Deserialize)]
pub struct AvailableQuery {
    username: String,
}

/// # `GET /_matrix/client/v3/register/available`
pub async fn available(
    State(server): State<Arc<Server>>,
    QueryParams(q): QueryParams<AvailableQuery>,
) -> Result<Json<Available>> {
    let user_id = accounts::validate_localpart(&q.username.to_lowercase(), &server)?;
    require_not_exclusive(&server, &user_id)?;
    if accounts::is_available(&server, &user_id).await? {
        Ok(Json(Available { available: true }))
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
) -> Result<Json<TokenValidity>> {
    let valid = crate::service::accounts::registration_token_valid(&server, q.token).await?;
    Ok(Json(TokenValidity { valid }))
}

/// The answer of endpoints that would unbind third-party IDs from an identity server.
const NO_IDENTITY_SERVER: IdServerUnbind = IdServerUnbind {
    id_server_unbind_result: "no-support",
};

/// # `GET /_matrix/client/v3/login`
/// With `[auth] legacy_login = false` no password flow is offered: clients sign in through
/// the OAuth 2.0 API (`/auth_metadata`); application services keep their login type.
pub async fn login_flows(State(server): State<Arc<Server>>) -> Json<LoginFlows> {
    let mut flows = Vec::new();
    if server.config.auth.legacy_login {
        flows.push(LoginFlow {
            kind: "m.login.password",
        });
    }
    flows.push(LoginFlow {
        kind: APPSERVICE_LOGIN,
    });
    Json(LoginFlows { flows })
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
                ErrorCode::UnknownRequest,
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
/// With `m.login.application_service` the request carries the appservice's `as_token` and
/// names a registered user in its namespace (400 `M_EXCLUSIVE` outside it, 403 `M_FORBIDDEN`
/// for a user it has not registered).
pub async fn login(
    State(server): State<Arc<Server>>,
    RawToken(token): RawToken,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Json<LoginResponse>> {
    let appservice = match body.kind.as_str() {
        "m.login.password" if !server.config.auth.legacy_login => {
            return Err(Error::new(
                ErrorCode::UnknownRequest,
                "Password login is off on this unit: sign in through the OAuth 2.0 API \
                 (GET /_matrix/client/v1/auth_metadata)",
            ));
        }
        "m.login.password" => None,
        APPSERVICE_LOGIN => Some(appservice_of(&server, token.as_deref())?),
        _ => {
            return Err(Error::new(
                ErrorCode::UnknownRequest,
                "Unsupported login type",
            ));
        }
    };
    let user_id = login_user(&server, body.identifier.as_ref(), body.user.as_deref())?;
    let device = DeviceRequest {
        device_id: body.device_id,
        display_name: body.initial_device_display_name,
        refresh_token: body.refresh_token,
    };
    let session = match appservice {
        Some(registration) => {
            refuse_msc4190_login(&registration)?;
            require_in_namespace(&server, &registration, &user_id)?;
            accounts::login_for_appservice(&server, user_id, device).await?
        }
        None => {
            let password = body
                .password
                .ok_or_else(|| Error::new(ErrorCode::MissingParam, "Missing password"))?;
            accounts::login(&server, user_id, password, device).await?
        }
    };
    Ok(Json(LoginResponse {
        user_id: session.user_id,
        access_token: session.access_token,
        device_id: session.device_id,
        expires_in_ms: session.refresh_token.as_ref().and(session.expires_in_ms),
        refresh_token: session.refresh_token,
        home_server: server.server_name().to_string(),
    }))
}

/// # `POST /_matrix/client/v3/logout`
/// Ends the device's session. An application service's `as_token` is not a session (it lives
/// in the registration file): without `device_id` there is nothing to log out.
pub async fn logout(State(server): State<Arc<Server>>, auth: Auth) -> Result<Json<Empty>> {
    accounts::logout(&server, &auth.user_id, auth.device()?).await?;
    Ok(Json(Empty {}))
}

/// # `POST /_matrix/client/v3/logout/all`
pub async fn logout_all(State(server): State<Arc<Server>>, auth: Auth) -> Result<Json<Empty>> {
    accounts::logout_all(&server, &auth.user_id).await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
pub struct RefreshBody {
    refresh_token: String,
}

/// # `POST /_matrix/client/v3/refresh`
pub async fn refresh(
    State(server): State<Arc<Server>>,
    JsonBody(body): JsonBody<RefreshBody>,
) -> Result<Json<RefreshResponse>> {
    let session = accounts::refresh(&server, &body.refresh_token).await?;
    Ok(Json(RefreshResponse {
        access_token: session.access_token,
        refresh_token: session.refresh_token,
        expires_in_ms: session.expires_in_ms,
    }))
}

/// # `GET /_matrix/client/v3/account/whoami`
pub async fn whoami(auth: Auth) -> Json<WhoAmI> {
    Json(WhoAmI {
        device_id: auth.device().ok().map(DeviceId::to_string),
        user_id: auth.user_id,
        is_guest: false,
    })
}

/// Runs the `m.login.password` UIA stage of an already-authenticated user for `action` with
/// `body` (the request without `auth`), to which the session is bound. Returns the session to
/// finish once the operation succeeded.
pub(super) async fn password_stage(
    server: &Server,
    auth: &Auth,
    action: String,
    body: Value,
    data: Option<AuthData>,
) -> Result<String> {
    const STAGE: &str = "m.login.password";
    const FLOWS: uia::Flows<'static> = &[&[STAGE]];
    let op = uia::Operation::of_user(&auth.user_id, action, body);
    let data = data.unwrap_or_default();
    let step = server
        .uia
        .step(&op, FLOWS, data.session.as_deref(), data.kind.as_deref())?;
    let session = match step {
        Step::Authorised { session, .. } => return Ok(session),
        Step::Replay(_) => {
            return Err(Error::forbidden(
                "This UI authentication session already completed its operation",
            ));
        }
        Step::Attempt { session, stage, .. } => {
            if stage != STAGE {
                let (code, why) = ("M_UNKNOWN", "Unsupported authentication stage");
                return Err(server.uia.failed(FLOWS, &session, code, why));
            }
            session
        }
    };
    let claimed = login_user(
        server,
        data.identifier.as_ref(),
        data.user.as_deref().or(Some(auth.user_id.as_str())),
    );
    if claimed.ok().as_ref() != Some(&auth.user_id) {
        let why = "Identifier is not the logged-in user";
        return Err(server.uia.failed(FLOWS, &session, "M_FORBIDDEN", why));
    }
    let password = data.password.unwrap_or_default();
    if let Err(err) = accounts::check_password(server, &auth.user_id, password).await {
        let why = match &err {
            Error::Matrix { message, .. } if message.contains("deactivated") => message.as_str(),
            _ => "Invalid password",
        };
        return Err(server.uia.failed(FLOWS, &session, "M_FORBIDDEN", why));
    }
    match server.uia.passed(FLOWS, &session, STAGE, None)? {
        Step::Authorised { session, .. } => Ok(session),
        other => Err(Error::Internal(format!("one-stage flow left {other:?}"))),
    }
}

/// The UIA stage of a sensitive operation of `auth`'s device: `m.oauth` (approved on the
/// account page, see `service::oauth::account`) when the device was signed in through OAuth,
/// else [`password_stage`]. Never both: an OAuth client must not ask for the password (it
/// goes to the unit's pages only), and matrix-rust-sdk takes the `m.oauth` route whenever it
/// is offered, so a password client would be sent to a page it did not expect. Returns the
/// session to finish once the operation succeeded.
pub(super) async fn oauth_or_password_stage(
    server: &Server,
    auth: &Auth,
    action: String,
    body: Value,
    data: Option<AuthData>,
) -> Result<String> {
    let approval = match auth.device_id.as_deref() {
        Some(device) => oauth::account::approval_page(server, &auth.user_id, device).await?,
        // No device, no OAuth session: an OAuth grant always names a non-empty device.
        None => None,
    };
    let Some(approval) = approval else {
        return password_stage(server, auth, action, body, data).await;
    };
    let op = uia::Operation::of_user(&auth.user_id, action, body).approved_on(approval);
    let data = data.unwrap_or_default();
    let step = server.uia.step(
        &op,
        uia::OAUTH_FLOWS,
        data.session.as_deref(),
        data.kind.as_deref(),
    )?;
    match step {
        Step::Authorised { session, .. } => Ok(session),
        Step::Replay(_) => Err(Error::forbidden(
            "This UI authentication session already completed its operation",
        )),
        Step::Attempt { session, .. } => {
            let why = "Unsupported authentication stage: approve on the account page (m.oauth)";
            Err(server
                .uia
                .failed(uia::OAUTH_FLOWS, &session, "M_UNKNOWN", why))
        }
    }
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
) -> Result<Json<Empty>> {
    let auth = auth.ok_or_else(|| {
        Error::new(
            ErrorCode::MissingToken,
            "Password reset without login needs email, which this unit does not offer",
        )
    })?;
    if body.new_password.is_empty() {
        return Err(Error::new(
            ErrorCode::WeakPassword,
            "Password must not be empty",
        ));
    }
    let bound = json!({"new_password": body.new_password, "logout_devices": body.logout_devices});
    let action = "POST /account/password".to_owned();
    let session = password_stage(&server, &auth, action, bound, body.auth).await?;
    accounts::change_password(
        &server,
        &auth.user_id,
        auth.device().ok(),
        body.new_password,
        body.logout_devices,
    )
    .await?;
    server.uia.finish(&session, None);
    Ok(Json(Empty {}))
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
) -> Result<Json<IdServerUnbind>> {
    let auth = auth.ok_or_else(|| Error::new(ErrorCode::MissingToken, "Missing access token"))?;
    let action = "POST /account/deactivate".to_owned();
    let session = password_stage(&server, &auth, action, json!({}), body.auth).await?;
    accounts::deactivate(&server, auth.user_id.clone()).await?;
    server.uia.finish(&session, None);
    Ok(Json(NO_IDENTITY_SERVER))
}

/// # `GET /_matrix/client/v3/account/3pid`
/// Closed deployments have no email or phone lookups: always empty.
pub async fn threepids(_auth: Auth) -> Json<ThreePids> {
    Json(ThreePids {
        threepids: Vec::new(),
    })
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
pub async fn threepid_delete(_auth: Auth) -> Json<IdServerUnbind> {
    Json(NO_IDENTITY_SERVER)
}
