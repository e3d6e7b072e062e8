//! The OAuth 2.0 API (spec "OAuth 2.0 API"): server metadata, and the built-in
//! authorisation server's endpoints and pages under `/_outpost/oauth` (clients find them in
//! the metadata). Behaviour is `service::oauth`; this file shapes HTTP: form bodies, the
//! `outpost_session` cookie, HTML responses and their headers.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::api::client::wire::Empty;
use crate::api::extract::{FormBody, PathParams, QueryParams, RawBody};
use crate::error::Result;
use crate::service::Server;
use crate::service::oauth::account::{self, ACCOUNT_PATH, AccountAction};
use crate::service::oauth::web::{self, SESSION_COOKIE, SESSION_TTL_MS};
use crate::service::oauth::{self, AuthMetadata, PREFIX, WebAnswer, WebBody, clients, grants};

/// The OAuth routes.
pub fn routes() -> axum::Router<Arc<Server>> {
    let p = |path: &str| format!("{PREFIX}{path}");
    axum::Router::new()
        .route("/_matrix/client/v1/auth_metadata", get(auth_metadata))
        .route(
            "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
            get(auth_metadata),
        )
        .route(
            "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer",
            get(auth_issuer),
        )
        .route(&p("/register"), post(register))
        .route(&p("/authorize"), get(authorize))
        .route(&p("/token"), post(token))
        .route(&p("/revoke"), post(revoke))
        .route(&p("/device"), post(device_authorization))
        .route(&p("/login"), post(sign_in))
        .route(&p("/create"), get(show_create).post(create_account))
        .route(&p("/consent"), get(show_consent).post(consent))
        .route(&p("/link"), get(link_page).post(link_submit))
        .route(ACCOUNT_PATH, get(account_page))
        .route(&format!("{ACCOUNT_PATH}/{{action}}"), post(account_action))
}

/// # `GET /_matrix/client/v1/auth_metadata`
/// Also at MSC2965's unstable path, which clients of the 1.14 generation probe.
pub async fn auth_metadata(State(server): State<Arc<Server>>) -> Result<Json<AuthMetadata>> {
    oauth::metadata(&server).map(Json)
}

/// `{"issuer": …}`.
#[derive(Debug, Serialize)]
pub struct Issuer {
    issuer: String,
}

/// # `GET /_matrix/client/unstable/org.matrix.msc2965/auth_issuer`
/// MSC2965's older discovery, answered with the same issuer as the metadata.
pub async fn auth_issuer(State(server): State<Arc<Server>>) -> Result<Json<Issuer>> {
    oauth::issuer(&server).map(|issuer| Json(Issuer { issuer }))
}

/// # `POST /_outpost/oauth/register` (RFC 7591)
pub async fn register(
    State(server): State<Arc<Server>>,
    RawBody(body): RawBody,
) -> Result<Response> {
    let client = clients::register(&server, &body).await?;
    Ok((StatusCode::CREATED, no_store(), Json(client)).into_response())
}

/// Token responses must not be cached (RFC 6749 section 5.1).
fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

/// # `POST /_outpost/oauth/token`
pub async fn token(
    State(server): State<Arc<Server>>,
    FormBody(request): FormBody<grants::TokenRequest>,
) -> Result<Response> {
    let answer = grants::token(&server, request).await?;
    Ok((no_store(), Json(answer)).into_response())
}

/// # `POST /_outpost/oauth/revoke` (RFC 7009)
pub async fn revoke(
    State(server): State<Arc<Server>>,
    FormBody(request): FormBody<grants::RevocationRequest>,
) -> Result<Json<Empty>> {
    grants::revoke(&server, request).await?;
    Ok(Json(Empty {}))
}

/// # `POST /_outpost/oauth/device` (RFC 8628 section 3.1)
pub async fn device_authorization(
    State(server): State<Arc<Server>>,
    FormBody(request): FormBody<grants::DeviceAuthorizationRequest>,
) -> Result<Response> {
    let answer = grants::device_authorization(&server, request).await?;
    Ok((no_store(), Json(answer)).into_response())
}

/// The `outpost_session` cookie of a request, if any.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// An HTML page or a 303, with the headers every page carries: no caching, no framing (the
/// consent page must not be clickjacked), no outside resources, no referrer (the query of
/// an authorisation request stays here), and the session cookie when it changed.
fn web_response(answer: WebAnswer) -> Response {
    let mut response = match answer.body {
        WebBody::Page(status, html) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            html,
        )
            .into_response(),
        WebBody::Redirect(location) => match HeaderValue::from_str(&location) {
            Ok(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
            Err(_) => StatusCode::BAD_REQUEST.into_response(),
        },
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(id) = answer.set_session {
        let cookie = format!(
            "{SESSION_COOKIE}={id}; Secure; HttpOnly; SameSite=Lax; Path=/; Max-Age={}",
            SESSION_TTL_MS / 1000
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            headers.insert(header::SET_COOKIE, value);
        }
    }
    response
}

/// # `GET /_outpost/oauth/authorize` (RFC 6749 section 4.1.1)
pub async fn authorize(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<web::AuthorizeQuery>,
) -> Result<Response> {
    web::authorize(&server, session_cookie(&headers), query)
        .await
        .map(web_response)
}

/// `?request=` of the pages that continue a request.
#[derive(Debug, Deserialize)]
pub struct RequestQuery {
    #[serde(default)]
    request: String,
}

/// # `GET /_outpost/oauth/consent`
/// Sign-in or consent for a request in progress.
pub async fn show_consent(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<RequestQuery>,
) -> Result<Response> {
    web::show_request(&server, session_cookie(&headers), &query.request, false)
        .await
        .map(web_response)
}

/// # `GET /_outpost/oauth/create`
pub async fn show_create(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<RequestQuery>,
) -> Result<Response> {
    web::show_request(&server, session_cookie(&headers), &query.request, true)
        .await
        .map(web_response)
}

/// # `POST /_outpost/oauth/login`
pub async fn sign_in(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    FormBody(form): FormBody<web::SignInForm>,
) -> Result<Response> {
    web::sign_in(&server, session_cookie(&headers), form)
        .await
        .map(web_response)
}

/// # `POST /_outpost/oauth/create`
pub async fn create_account(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    FormBody(form): FormBody<web::CreateForm>,
) -> Result<Response> {
    web::create_account(&server, session_cookie(&headers), form)
        .await
        .map(web_response)
}

/// # `POST /_outpost/oauth/consent`
pub async fn consent(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    FormBody(form): FormBody<web::ConsentForm>,
) -> Result<Response> {
    web::consent(&server, session_cookie(&headers), form)
        .await
        .map(web_response)
}

/// `?user_code=` of the verification page.
#[derive(Debug, Deserialize)]
pub struct LinkQuery {
    user_code: Option<String>,
}

/// # `GET /_outpost/oauth/link` (RFC 8628 `verification_uri`)
pub async fn link_page(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<LinkQuery>,
) -> Result<Response> {
    web::link_page(&server, session_cookie(&headers), query.user_code).map(web_response)
}

/// # `POST /_outpost/oauth/link`
pub async fn link_submit(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    FormBody(form): FormBody<web::LinkForm>,
) -> Result<Response> {
    web::link_submit(&server, session_cookie(&headers), form)
        .await
        .map(web_response)
}

/// # `GET /_outpost/account` (the metadata's `account_management_uri`)
pub async fn account_page(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<account::AccountQuery>,
) -> Result<Response> {
    account::show(&server, session_cookie(&headers), query)
        .await
        .map(web_response)
}

/// # `POST /_outpost/account/{profile,device_delete,password,deactivate,logout}`
pub async fn account_action(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    PathParams(action): PathParams<String>,
    FormBody(form): FormBody<account::AccountForm>,
) -> Result<Response> {
    let action = match action.as_str() {
        "profile" => AccountAction::Profile,
        "device_delete" => AccountAction::DeviceDelete,
        "password" => AccountAction::Password,
        "deactivate" => AccountAction::Deactivate,
        "logout" => AccountAction::Logout,
        "cross_signing_reset" => AccountAction::CrossSigningReset,
        _ => {
            return Err(crate::error::Error::new(
                crate::error::ErrorCode::Unrecognized,
                "Unknown account action",
            ));
        }
    };
    account::act(&server, session_cookie(&headers), action, form)
        .await
        .map(web_response)
}
