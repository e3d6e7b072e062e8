//! The browser side of the OAuth server: sign-in sessions (the `outpost_session` cookie),
//! CSRF tokens, authorisation requests in progress, the authorisation endpoint, and the
//! sign-in, create-account, consent and device-verification pages.
//!
//! All of it is in memory, bounded, and expires: a browser session after 12 hours, an
//! authorisation request after 30 minutes. A request is bound to the browser session that
//! opened it, and every form post must carry that session's CSRF token. A sign-in gives the
//! browser a new session ID (no session fixation).

use std::collections::HashMap;
use std::sync::Mutex;

use ruma::OwnedUserId;
use serde::Deserialize;

use super::super::{Server, accounts};
use super::clients::{self, Client};
use super::html::{self, ClientView};
use super::{CODE_TTL_MS, PREFIX, registration_open};
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::appservice::NamespaceKind;
use crate::matrix::oauth::{self, Scope};
use crate::store::oauth::{self as store, CodeRow};
use crate::util::{now_ms, random_string};

/// The name of the browser session cookie.
pub const SESSION_COOKIE: &str = "outpost_session";

/// Browser session lifetime (also the cookie's `Max-Age`).
pub const SESSION_TTL_MS: i64 = 12 * 60 * 60 * 1000;

/// How long an authorisation request may wait for the user.
pub(super) const REQUEST_TTL_MS: i64 = 30 * 60 * 1000;

/// Sessions and requests held at most; the oldest is dropped to admit a new one.
const MAX_ENTRIES: usize = 10_000;

/// What a page handler answers.
#[derive(Debug)]
pub struct WebAnswer {
    /// The page or the redirect.
    pub body: WebBody,
    /// A new session ID for the `outpost_session` cookie, when it changed.
    pub set_session: Option<String>,
}

/// A page (status, HTML) or a 303 See Other.
#[derive(Debug)]
pub enum WebBody {
    /// An HTML page with its status.
    Page(u16, String),
    /// 303 See Other to this location.
    Redirect(String),
}

/// A browser's sign-in session.
#[derive(Debug, Clone)]
pub(super) struct BrowserSession {
    /// The CSRF token every form of this session carries.
    pub(super) csrf: String,
    /// Who signed in, once someone did.
    pub(super) user_id: Option<String>,
    expires_ms: i64,
}

/// What a request in progress is for.
#[derive(Debug, Clone)]
pub(super) enum RequestKind {
    /// The authorisation code grant: where to send the answer.
    Code {
        redirect_uri: String,
        state: Option<String>,
        challenge: String,
        fragment: bool,
    },
    /// The device grant: the device code's key in `grants::DeviceCodes`.
    Device { key: Vec<u8> },
    /// The account page, once signed in: where to go back to.
    Account { return_to: String },
}

/// A request waiting for the user (sign-in, consent).
#[derive(Debug, Clone)]
pub(super) struct PendingRequest {
    pub(super) session: String,
    pub(super) client_id: String,
    pub(super) scope: Scope,
    pub(super) kind: RequestKind,
    pub(super) expires_ms: i64,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, BrowserSession>,
    requests: HashMap<String, PendingRequest>,
}

/// Browser sessions and authorisation requests in progress.
#[derive(Default)]
pub struct WebState {
    inner: Mutex<Inner>,
}

/// Drops expired entries, then the soonest-expiring ones while the map is full.
fn make_room<V>(map: &mut HashMap<String, V>, expires: impl Fn(&V) -> i64, now: i64) {
    map.retain(|_, v| expires(v) > now);
    while map.len() >= MAX_ENTRIES {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| expires(v))
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        map.remove(&oldest);
    }
}

impl WebState {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| Error::internal("OAuth web state poisoned"))
    }

    /// The live session a cookie names, or a new one (with the ID to set).
    pub(super) fn session(&self, cookie: Option<&str>) -> Result<(String, BrowserSession, bool)> {
        let now = now_ms();
        let mut inner = self.lock()?;
        if let Some(id) = cookie
            && let Some(session) = inner.sessions.get(id)
            && session.expires_ms > now
        {
            return Ok((id.to_owned(), session.clone(), false));
        }
        make_room(&mut inner.sessions, |s| s.expires_ms, now);
        let id = random_string(32);
        let session = BrowserSession {
            csrf: random_string(32),
            user_id: None,
            expires_ms: now + SESSION_TTL_MS,
        };
        inner.sessions.insert(id.clone(), session.clone());
        Ok((id, session, true))
    }

    /// The live session a form post comes from, if its CSRF token is that session's.
    pub(super) fn checked_session(
        &self,
        cookie: Option<&str>,
        csrf: &str,
    ) -> Result<Option<(String, BrowserSession)>> {
        let now = now_ms();
        let inner = self.lock()?;
        Ok(cookie
            .and_then(|id| inner.sessions.get(id).map(|s| (id.to_owned(), s.clone())))
            .filter(|(_, s)| s.expires_ms > now && constant_time_eq(&s.csrf, csrf)))
    }

    /// The signed-in user of the live session a form post comes from, if its CSRF token is
    /// that session's: `(session ID, user)`. `None` means the caller shows the expired page.
    pub(super) fn signed_in_session(
        &self,
        cookie: Option<&str>,
        csrf: &str,
    ) -> Result<Option<(String, String)>> {
        Ok(self
            .checked_session(cookie, csrf)?
            .and_then(|(id, session)| Some((id, session.user_id?))))
    }

    /// Signs a session in under a new ID (requests move with it); returns the new ID.
    pub(super) fn sign_in(&self, old: &str, user_id: &str) -> Result<String> {
        let now = now_ms();
        let mut inner = self.lock()?;
        inner.sessions.remove(old);
        let id = random_string(32);
        inner.sessions.insert(
            id.clone(),
            BrowserSession {
                csrf: random_string(32),
                user_id: Some(user_id.to_owned()),
                expires_ms: now + SESSION_TTL_MS,
            },
        );
        for request in inner.requests.values_mut() {
            if request.session == old {
                request.session = id.clone();
            }
        }
        Ok(id)
    }

    /// Ends a browser session.
    pub(super) fn sign_out(&self, id: &str) -> Result<()> {
        self.lock()?.sessions.remove(id);
        Ok(())
    }

    pub(super) fn add_request(&self, request: PendingRequest) -> Result<String> {
        let now = now_ms();
        let mut inner = self.lock()?;
        make_room(&mut inner.requests, |r| r.expires_ms, now);
        let id = random_string(32);
        inner.requests.insert(id.clone(), request);
        Ok(id)
    }

    /// A live request of this session.
    pub(super) fn request(&self, id: &str, session: &str) -> Result<Option<PendingRequest>> {
        let now = now_ms();
        let inner = self.lock()?;
        Ok(inner
            .requests
            .get(id)
            .filter(|r| r.session == session && r.expires_ms > now)
            .cloned())
    }

    pub(super) fn take_request(&self, id: &str, session: &str) -> Result<Option<PendingRequest>> {
        let found = self.request(id, session)?;
        if found.is_some() {
            self.lock()?.requests.remove(id);
        }
        Ok(found)
    }
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

pub(super) fn page(status: u16, html: String) -> WebAnswer {
    WebAnswer {
        body: WebBody::Page(status, html),
        set_session: None,
    }
}

pub(super) fn redirect(location: String) -> WebAnswer {
    WebAnswer {
        body: WebBody::Redirect(location),
        set_session: None,
    }
}

pub(super) fn with_session(mut answer: WebAnswer, id: Option<String>) -> WebAnswer {
    answer.set_session = id;
    answer
}

pub(super) fn expired_page() -> WebAnswer {
    page(
        400,
        html::message(
            "This sign-in has expired",
            "Go back to the application and start signing in again.",
        ),
    )
}

fn client_view(client: &Client) -> ClientView<'_> {
    ClientView {
        name: client.display_name(),
        uri: &client.row.client_uri,
        tos_uri: client.metadata.tos_uri.as_deref(),
        policy_uri: client.metadata.policy_uri.as_deref(),
    }
}

/// The authorisation endpoint's query (RFC 6749 section 4.1.1, RFC 7636, OIDC prompt).
#[derive(Debug, Default, Deserialize)]
pub struct AuthorizeQuery {
    /// The client.
    pub client_id: Option<String>,
    /// Where to send the answer.
    pub redirect_uri: Option<String>,
    /// `code`.
    pub response_type: Option<String>,
    /// The scope.
    pub scope: Option<String>,
    /// Echoed back.
    pub state: Option<String>,
    /// PKCE challenge.
    pub code_challenge: Option<String>,
    /// `S256`.
    pub code_challenge_method: Option<String>,
    /// `query` or `fragment`.
    pub response_mode: Option<String>,
    /// `create` asks for the account-creation page.
    pub prompt: Option<String>,
}

/// # The authorisation endpoint
/// A request with an unknown client or a redirect URI it did not register is answered with
/// an error page and never redirected (RFC 6749 section 4.1.2.1: no open redirect); any other
/// fault goes back to the client's redirect URI with `error` and `state`. A valid request
/// shows the sign-in (or, with `prompt=create`, the create-account) page, or the consent page
/// to a browser already signed in.
pub async fn authorize(
    server: &Server,
    cookie: Option<String>,
    query: AuthorizeQuery,
) -> Result<WebAnswer> {
    let bad = |text: &str| page(400, html::message("This sign-in link is not valid", text));
    let Some(client_id) = query.client_id.as_deref() else {
        return Ok(bad("The request names no client (client_id)."));
    };
    let Some(client) = clients::find(server, client_id).await? else {
        return Ok(bad("The application is not registered with this server."));
    };
    let Some(redirect_uri) = query.redirect_uri.clone() else {
        return Ok(bad("The request has no redirect_uri."));
    };
    if !oauth::redirect_uri_matches(&client.row.redirect_uris, &redirect_uri, client.kind) {
        return Ok(bad(
            "The redirect_uri is not one the application registered.",
        ));
    }
    let fragment = match query.response_mode.as_deref() {
        None | Some("query") => false,
        Some("fragment") => true,
        Some(_) => {
            return Ok(redirect(oauth::redirect_with(
                &redirect_uri,
                false,
                &error_params(
                    "invalid_request",
                    "response_mode must be query or fragment",
                    query.state.as_deref(),
                ),
            )));
        }
    };
    let fail = |error: &str, description: &str| {
        redirect(oauth::redirect_with(
            &redirect_uri,
            fragment,
            &error_params(error, description, query.state.as_deref()),
        ))
    };
    match query.response_type.as_deref() {
        Some("code") => {}
        None => return Ok(fail("invalid_request", "response_type is required")),
        Some(_) => {
            return Ok(fail(
                "unsupported_response_type",
                "Only response_type=code is supported",
            ));
        }
    }
    if !client.may_use("authorization_code") {
        return Ok(fail(
            "unauthorized_client",
            "The client did not register for the authorization_code grant",
        ));
    }
    let Some(challenge) = query.code_challenge.clone() else {
        return Ok(fail(
            "invalid_request",
            "PKCE is required: code_challenge is missing",
        ));
    };
    if query.code_challenge_method.as_deref() != Some("S256") {
        return Ok(fail(
            "invalid_request",
            "code_challenge_method must be S256",
        ));
    }
    if !oauth::valid_code_challenge(&challenge) {
        return Ok(fail(
            "invalid_request",
            "code_challenge is not an S256 challenge",
        ));
    }
    let scope = match oauth::parse_scope(query.scope.as_deref().unwrap_or_default()) {
        Ok(scope) => scope,
        Err(why) => return Ok(fail("invalid_scope", &why)),
    };
    let create = query
        .prompt
        .as_deref()
        .is_some_and(|p| p.split(' ').any(|v| v == "create"));
    let (session_id, session, new) = server.oauth.web.session(cookie.as_deref())?;
    let request_id = server.oauth.web.add_request(PendingRequest {
        session: session_id.clone(),
        client_id: client.row.client_id.clone(),
        scope,
        kind: RequestKind::Code {
            redirect_uri,
            state: query.state,
            challenge,
            fragment,
        },
        expires_ms: now_ms() + REQUEST_TTL_MS,
    })?;
    let answer = if create && session.user_id.is_none() && registration_open(server) {
        create_page(server, &session, &request_id, Some(&client), "", None, 200)
    } else {
        request_page(server, &session, &request_id, &client).await?
    };
    Ok(with_session(answer, new.then_some(session_id)))
}

fn error_params<'a>(
    error: &'a str,
    description: &'a str,
    state: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(state) = state {
        params.push(("state", state));
    }
    params
}

/// The page a request shows its session: sign-in when signed out, consent when signed in.
async fn request_page(
    server: &Server,
    session: &BrowserSession,
    request_id: &str,
    client: &Client,
) -> Result<WebAnswer> {
    match &session.user_id {
        None => Ok(sign_in_page(
            server,
            session,
            request_id,
            Some(client),
            "",
            None,
            200,
        )),
        Some(user) => {
            let request = server.oauth.web.lock()?.requests.get(request_id).cloned();
            let Some(request) = request else {
                return Ok(expired_page());
            };
            Ok(page(
                200,
                html::consent(
                    &session.csrf,
                    request_id,
                    &client_view(client),
                    user,
                    &request.scope.device_id,
                ),
            ))
        }
    }
}

pub(super) fn sign_in_page(
    server: &Server,
    session: &BrowserSession,
    request_id: &str,
    client: Option<&Client>,
    username: &str,
    error: Option<&str>,
    status: u16,
) -> WebAnswer {
    let view = client.map(client_view);
    page(
        status,
        html::sign_in(
            server.server_name().as_str(),
            &session.csrf,
            request_id,
            view.as_ref(),
            username,
            error,
            registration_open(server),
        ),
    )
}

fn create_page(
    server: &Server,
    session: &BrowserSession,
    request_id: &str,
    client: Option<&Client>,
    username: &str,
    error: Option<&str>,
    status: u16,
) -> WebAnswer {
    let view = client.map(client_view);
    page(
        status,
        html::create_account(
            server.server_name().as_str(),
            &session.csrf,
            request_id,
            view.as_ref(),
            username,
            error,
        ),
    )
}

/// # `GET /consent?request=` (and `/create?request=`)
/// The page of a request in progress: sign-in or consent (`create`: the create-account page
/// when signed out and registration is open).
pub async fn show_request(
    server: &Server,
    cookie: Option<String>,
    request_id: &str,
    create: bool,
) -> Result<WebAnswer> {
    let (session_id, session, new) = server.oauth.web.session(cookie.as_deref())?;
    let Some(request) = server.oauth.web.request(request_id, &session_id)? else {
        return Ok(with_session(expired_page(), new.then_some(session_id)));
    };
    if let RequestKind::Account { return_to } = &request.kind {
        if session.user_id.is_some() {
            server.oauth.web.take_request(request_id, &session_id)?;
            return Ok(redirect(return_to.clone()));
        }
        return Ok(sign_in_page(
            server, &session, request_id, None, "", None, 200,
        ));
    }
    let client = clients::find(server, &request.client_id).await?;
    let Some(client) = client else {
        return Ok(expired_page());
    };
    if create && session.user_id.is_none() && registration_open(server) {
        return Ok(create_page(
            server,
            &session,
            request_id,
            Some(&client),
            "",
            None,
            200,
        ));
    }
    request_page(server, &session, request_id, &client).await
}

/// The sign-in form.
#[derive(Debug, Default, Deserialize)]
pub struct SignInForm {
    /// CSRF token.
    #[serde(default)]
    pub csrf: String,
    /// The request in progress.
    #[serde(default)]
    pub request: String,
    /// Localpart or full user ID.
    #[serde(default)]
    pub username: String,
    /// The password.
    #[serde(default)]
    pub password: String,
}

/// Resolves what a user typed as their name to one of our user IDs.
fn local_user(server: &Server, typed: &str) -> Option<OwnedUserId> {
    let typed = typed.trim();
    let full = if typed.starts_with('@') {
        typed.to_owned()
    } else {
        format!("@{}:{}", typed.to_lowercase(), server.server_name())
    };
    OwnedUserId::try_from(full)
        .ok()
        .filter(|u| u.server_name() == server.server_name())
}

/// # `POST /login`: the sign-in form
/// The password check is the one `/login` uses (argon2, the per-account back-off); a wrong
/// password shows the form again (401), a back-off says how long to wait (429).
pub async fn sign_in(
    server: &Server,
    cookie: Option<String>,
    form: SignInForm,
) -> Result<WebAnswer> {
    let Some((session_id, session)) = server
        .oauth
        .web
        .checked_session(cookie.as_deref(), &form.csrf)?
    else {
        return Ok(expired_page());
    };
    let Some(request) = server.oauth.web.request(&form.request, &session_id)? else {
        return Ok(expired_page());
    };
    let client = clients::find(server, &request.client_id).await?;
    let retry = |error: &str, status: u16| {
        sign_in_page(
            server,
            &session,
            &form.request,
            client.as_ref(),
            &form.username,
            Some(error),
            status,
        )
    };
    let Some(user_id) = local_user(server, &form.username) else {
        return Ok(retry("Wrong username or password.", 401));
    };
    match accounts::check_password(server, &user_id, form.password).await {
        Ok(()) => {}
        Err(Error::RateLimited { retry_after_ms }) => {
            let wait = retry_after_ms.div_ceil(1000).max(1);
            return Ok(retry(
                &format!("Too many attempts. Wait {wait} seconds, then try again."),
                429,
            ));
        }
        Err(Error::Matrix {
            code: ErrorCode::UserDeactivated,
            ..
        }) => return Ok(retry("This account has been deactivated.", 403)),
        Err(Error::Matrix {
            code: ErrorCode::Forbidden,
            ..
        }) => return Ok(retry("Wrong username or password.", 401)),
        Err(err) => return Err(err),
    }
    let new_id = server.oauth.web.sign_in(&session_id, user_id.as_str())?;
    tracing::info!(user = %user_id, "signed in on the OAuth pages");
    Ok(with_session(
        redirect(format!("{PREFIX}/consent?request={}", form.request)),
        Some(new_id),
    ))
}

/// The create-account form.
#[derive(Debug, Default, Deserialize)]
pub struct CreateForm {
    /// CSRF token.
    #[serde(default)]
    pub csrf: String,
    /// The request in progress.
    #[serde(default)]
    pub request: String,
    /// The wanted localpart.
    #[serde(default)]
    pub username: String,
    /// The password.
    #[serde(default)]
    pub password: String,
    /// The password again.
    #[serde(default)]
    pub password_confirm: String,
}

/// # `POST /create`: the create-account form (`prompt=create`)
/// Only with open registration; the account is made as `/register` makes one (the same
/// name rules, application services' exclusive namespaces respected), then signed in.
pub async fn create_account(
    server: &Server,
    cookie: Option<String>,
    form: CreateForm,
) -> Result<WebAnswer> {
    let Some((session_id, session)) = server
        .oauth
        .web
        .checked_session(cookie.as_deref(), &form.csrf)?
    else {
        return Ok(expired_page());
    };
    let Some(request) = server.oauth.web.request(&form.request, &session_id)? else {
        return Ok(expired_page());
    };
    if !registration_open(server) {
        return Ok(page(
            403,
            html::message(
                "Registration is closed",
                "Ask the administrator of this unit for an account.",
            ),
        ));
    }
    let client = clients::find(server, &request.client_id).await?;
    let retry = |error: &str, status: u16| {
        create_page(
            server,
            &session,
            &form.request,
            client.as_ref(),
            &form.username,
            Some(error),
            status,
        )
    };
    if form.password.is_empty() {
        return Ok(retry("Choose a password.", 400));
    }
    if form.password != form.password_confirm {
        return Ok(retry("The two passwords differ.", 400));
    }
    let user_id = match accounts::validate_localpart(&form.username.trim().to_lowercase(), server) {
        Ok(user_id) => user_id,
        Err(_) => {
            return Ok(retry(
                "A username may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+'.",
                400,
            ));
        }
    };
    if server
        .appservices
        .exclusive_owner(NamespaceKind::Users, user_id.as_str())
        .is_some()
    {
        return Ok(retry("That username is reserved.", 400));
    }
    match accounts::register(
        server,
        user_id.clone(),
        Some(form.password),
        accounts::DeviceRequest::default(),
        true,
        None,
    )
    .await
    {
        Ok(_) => {}
        Err(Error::Matrix {
            code: ErrorCode::UserInUse,
            ..
        }) => return Ok(retry("That username is taken.", 409)),
        Err(Error::RateLimited { .. }) => return Ok(retry("The server is busy; try again.", 429)),
        Err(err) => return Err(err),
    }
    let new_id = server.oauth.web.sign_in(&session_id, user_id.as_str())?;
    tracing::info!(user = %user_id, "account created on the OAuth pages");
    Ok(with_session(
        redirect(format!("{PREFIX}/consent?request={}", form.request)),
        Some(new_id),
    ))
}

/// The consent form.
#[derive(Debug, Default, Deserialize)]
pub struct ConsentForm {
    /// CSRF token.
    #[serde(default)]
    pub csrf: String,
    /// The request in progress.
    #[serde(default)]
    pub request: String,
    /// `allow` or `deny`.
    #[serde(default)]
    pub action: String,
}

/// # `POST /consent`
/// `allow` issues the code and sends the browser to the client (303, `code` and `state` in
/// the query or fragment), or approves the device grant; `deny` sends `access_denied`.
pub async fn consent(
    server: &Server,
    cookie: Option<String>,
    form: ConsentForm,
) -> Result<WebAnswer> {
    let Some((session_id, user_id)) = server
        .oauth
        .web
        .signed_in_session(cookie.as_deref(), &form.csrf)?
    else {
        return Ok(expired_page());
    };
    let allow = match form.action.as_str() {
        "allow" => true,
        "deny" => false,
        _ => {
            return Ok(page(
                400,
                html::message("Unknown answer", "Choose Allow or Deny."),
            ));
        }
    };
    let Some(request) = server.oauth.web.take_request(&form.request, &session_id)? else {
        return Ok(expired_page());
    };
    match request.kind {
        RequestKind::Account { return_to } => Ok(redirect(return_to)),
        RequestKind::Device { key } => {
            let decided = server
                .oauth
                .devices
                .decide(&key, allow.then(|| user_id.clone()))?;
            Ok(if !decided {
                expired_page()
            } else if allow {
                page(
                    200,
                    html::message(
                        "Device connected",
                        "You can close this page and continue on your other device.",
                    ),
                )
            } else {
                page(
                    200,
                    html::message("Access refused", "The other device was not signed in."),
                )
            })
        }
        RequestKind::Code {
            redirect_uri,
            state,
            challenge,
            fragment,
        } => {
            if !allow {
                let params =
                    error_params("access_denied", "The user refused access", state.as_deref());
                return Ok(redirect(oauth::redirect_with(
                    &redirect_uri,
                    fragment,
                    &params,
                )));
            }
            let code = random_string(32);
            let hash = accounts::token_hash(&code);
            let row = CodeRow {
                client_id: request.client_id.clone(),
                user_id: user_id.clone(),
                device_id: request.scope.device_id.clone(),
                scope: request.scope.to_scope_string(),
                redirect_uri: redirect_uri.clone(),
                code_challenge: challenge,
                expires_ts: now_ms() + CODE_TTL_MS,
                used_ts: None,
            };
            server
                .store
                .write(move |tx| store::insert_code(tx, &hash, &row, now_ms()))
                .await?;
            tracing::info!(user = %user_id, client_id = %request.client_id, "OAuth access allowed");
            let mut params = vec![("code", code.as_str())];
            if let Some(state) = state.as_deref() {
                params.push(("state", state));
            }
            Ok(redirect(oauth::redirect_with(
                &redirect_uri,
                fragment,
                &params,
            )))
        }
    }
}

/// # `GET /link`: the device verification page (RFC 8628 `verification_uri`)
pub fn link_page(
    server: &Server,
    cookie: Option<String>,
    user_code: Option<String>,
) -> Result<WebAnswer> {
    let (session_id, session, new) = server.oauth.web.session(cookie.as_deref())?;
    let code = user_code.unwrap_or_default();
    Ok(with_session(
        page(200, html::link(&session.csrf, &code, None)),
        new.then_some(session_id),
    ))
}

/// The device verification form.
#[derive(Debug, Default, Deserialize)]
pub struct LinkForm {
    /// CSRF token.
    #[serde(default)]
    pub csrf: String,
    /// What the user typed.
    #[serde(default)]
    pub user_code: String,
}

/// # `POST /link`
/// A known, pending user code becomes an authorisation request of this browser session,
/// which goes on to sign-in and consent.
pub async fn link_submit(
    server: &Server,
    cookie: Option<String>,
    form: LinkForm,
) -> Result<WebAnswer> {
    let Some((session_id, session)) = server
        .oauth
        .web
        .checked_session(cookie.as_deref(), &form.csrf)?
    else {
        return Ok(expired_page());
    };
    let Some(found) = server.oauth.devices.by_user_code(&form.user_code)? else {
        return Ok(page(
            400,
            html::link(
                &session.csrf,
                &form.user_code,
                Some("This code is unknown or has expired. Check it on your device."),
            ),
        ));
    };
    let request_id = server.oauth.web.add_request(PendingRequest {
        session: session_id,
        client_id: found.client_id,
        scope: found.scope,
        kind: RequestKind::Device { key: found.key },
        expires_ms: now_ms() + REQUEST_TTL_MS,
    })?;
    Ok(redirect(format!("{PREFIX}/consent?request={request_id}")))
}
