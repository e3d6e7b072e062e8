//! The client side of the unit's OAuth 2.0 authorization server, as the standards describe it
//! (RFC 6749, 7591, 7636, 8414; Matrix client-server API "OAuth 2.0 API"): discovery from
//! `GET /_matrix/client/v1/auth_metadata` (every other URL comes from the metadata), dynamic
//! client registration, PKCE S256, the authorization request, and a scripted browser that drives
//! the unit's sign-in and consent pages: a cookie jar, no automatic redirects (each 3xx is looked
//! at, and only the unit's own origin is followed), and the one POST form of each page submitted
//! with all its hidden inputs (the CSRF token among them) plus what a user would type.
//!
//! The [`Browser`] is the suite's one scripted user agent: `oauth_protocol.rs` (through
//! `oauth.rs`, its request shapes by path), `oauth_security.rs`, `oauth_uia.rs` and
//! `oauth_browser.rs` use it; `tests/client/` drives the same pages through the SDK's reqwest
//! with this module's form parser (`html.rs`).
//!
//! Request shapes only; what the server must answer is asserted in `tests/tests/blackbox/oauth_*.rs`.

use crate::client::Reply;
use crate::html::{self, Form};
use crate::{TestEnv, password_for};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::time::Duration;

pub use crate::html::{callback_params, form_body, form_encode, pair, parse_pairs};

/// The scope a Matrix client asks for: the whole client-server API and one device.
pub fn matrix_scope(device_id: &str) -> String {
    format!("urn:matrix:client:api:* urn:matrix:client:device:{device_id}")
}

/// The redirect URI the test clients register: a native app's loopback URI without a port,
/// which the server must accept with any port (spec: "Redirect URI validation").
pub const LOOPBACK_REDIRECT: &str = "http://127.0.0.1/callback";

/// The `client_uri` the test clients register.
pub const CLIENT_URI: &str = "https://client.example.org/";

/// `n` random bytes from the kernel.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .expect("/dev/urandom is readable");
    bytes
}

/// Unpadded base64url (RFC 4648 §5), the encoding of PKCE challenges.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize]));
        }
    }
    out
}

/// A random string of unreserved characters (state values, device IDs).
pub fn random_token(bytes: usize) -> String {
    base64url(&random_bytes(bytes))
}

/// A PKCE pair (RFC 7636): a random verifier and its S256 challenge.
#[derive(Debug, Clone)]
pub struct Pkce {
    /// 43 characters of base64url, sent to the token endpoint.
    pub verifier: String,
    /// `BASE64URL(SHA256(verifier))`, sent in the authorization request.
    pub challenge: String,
}

impl Pkce {
    /// A fresh pair.
    pub fn new() -> Pkce {
        let verifier = random_token(32);
        let challenge = base64url(&Sha256::digest(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Pkce::new()
    }
}

/// The unit's authorization server as a client sees it: its metadata, and requests to the
/// endpoints the metadata names.
#[derive(Debug)]
pub struct AuthServer {
    /// The metadata document of `GET /_matrix/client/v1/auth_metadata`.
    pub metadata: Value,
    agent: ureq::Agent,
}

impl AuthServer {
    /// Fetches the metadata; panics unless the server answers 200 with a JSON object.
    pub fn discover(env: &TestEnv) -> AuthServer {
        let reply = env
            .anon()
            .request("GET", "/_matrix/client/v1/auth_metadata", &[], None);
        assert_eq!(
            reply.status,
            200,
            "GET /_matrix/client/v1/auth_metadata: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let metadata = reply.json();
        assert!(metadata.is_object(), "metadata is not a JSON object");
        AuthServer {
            metadata,
            agent: no_redirect_agent(),
        }
    }

    /// The URL the metadata gives for `field` (e.g. `token_endpoint`); panics if absent.
    pub fn endpoint(&self, field: &str) -> String {
        self.metadata[field]
            .as_str()
            .unwrap_or_else(|| panic!("metadata has no {field}: {:#}", self.metadata))
            .to_owned()
    }

    /// `POST registration_endpoint` with the client metadata `body`; `(status, JSON body)`.
    pub fn register_client(&self, body: &Value) -> (u16, Value) {
        let reply = send(
            &self.agent,
            "POST",
            &self.endpoint("registration_endpoint"),
            &[("Content-Type", "application/json")],
            Some(body.to_string().as_bytes()),
        );
        (reply.status, reply.json())
    }

    /// Registers a native public client named `name` with [`LOOPBACK_REDIRECT`] and returns its
    /// `client_id`; panics unless the server answers 201.
    pub fn register_native(&self, name: &str) -> String {
        self.register_with_redirects(name, "native", &[LOOPBACK_REDIRECT])
    }

    /// Registers a public client of `application_type` with `redirect_uris`; its `client_id`.
    pub fn register_with_redirects(
        &self,
        name: &str,
        application_type: &str,
        redirect_uris: &[&str],
    ) -> String {
        let (status, body) =
            self.register_client(&client_metadata(name, application_type, redirect_uris));
        assert_eq!(status, 201, "client registration: {body:#}");
        body["client_id"]
            .as_str()
            .unwrap_or_else(|| panic!("registration answered no client_id: {body:#}"))
            .to_owned()
    }

    /// `POST token_endpoint` with form `fields`; `(status, JSON body)`.
    pub fn token(&self, fields: &[(&str, &str)]) -> (u16, Value) {
        let reply = send(
            &self.agent,
            "POST",
            &self.endpoint("token_endpoint"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(form_body(fields).as_bytes()),
        );
        (reply.status, reply.json())
    }

    /// The authorization code grant for `code` obtained with `request`.
    pub fn exchange(&self, request: &AuthRequest, code: &str) -> (u16, Value) {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", request.redirect_uri.as_str()),
            ("client_id", request.client_id.as_str()),
            ("code_verifier", request.pkce.verifier.as_str()),
        ])
    }

    /// The refresh token grant.
    pub fn refresh(&self, client_id: &str, refresh_token: &str) -> (u16, Value) {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
        ])
    }

    /// `POST revocation_endpoint` (RFC 7009) for `token`; the status.
    pub fn revoke(&self, client_id: &str, token: &str) -> u16 {
        send(
            &self.agent,
            "POST",
            &self.endpoint("revocation_endpoint"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(form_body(&[("token", token), ("client_id", client_id)]).as_bytes()),
        )
        .status
    }
}

/// Client metadata (RFC 7591) of a public client.
pub fn client_metadata(name: &str, application_type: &str, redirect_uris: &[&str]) -> Value {
    json!({
        "client_name": name,
        "client_uri": CLIENT_URI,
        "redirect_uris": redirect_uris,
        "application_type": application_type,
        "token_endpoint_auth_method": "none",
        "response_types": ["code"],
        "grant_types": ["authorization_code", "refresh_token"],
    })
}

/// One authorization request (RFC 6749 §4.1.1 with PKCE) and what the client keeps of it.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    /// The registered client.
    pub client_id: String,
    /// The redirect URI sent (with a port for a loopback URI).
    pub redirect_uri: String,
    /// The device the scope allocates.
    pub device_id: String,
    /// The `scope` parameter.
    pub scope: String,
    /// The `state` parameter.
    pub state: String,
    /// The PKCE pair.
    pub pkce: Pkce,
    /// `query` or `fragment`.
    pub response_mode: String,
    /// Extra parameters (e.g. `prompt=create`).
    pub extra: Vec<(String, String)>,
}

impl AuthRequest {
    /// A request for the full API and a fresh device, answered in the query.
    pub fn new(client_id: &str, redirect_uri: &str) -> AuthRequest {
        let device_id = random_token(8);
        AuthRequest {
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            scope: matrix_scope(&device_id),
            device_id,
            state: random_token(12),
            pkce: Pkce::new(),
            response_mode: "query".to_owned(),
            extra: Vec::new(),
        }
    }

    /// The authorization URL on `server`'s `authorization_endpoint`.
    pub fn url(&self, server: &AuthServer) -> String {
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", self.client_id.as_str()),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("scope", self.scope.as_str()),
            ("state", self.state.as_str()),
            ("response_mode", self.response_mode.as_str()),
            ("code_challenge", self.pkce.challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        params.extend(
            self.extra
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        );
        let endpoint = server.endpoint("authorization_endpoint");
        let joiner = if endpoint.contains('?') { '&' } else { '?' };
        format!("{endpoint}{joiner}{}", form_body(&params))
    }
}

/// A page (or redirect) the scripted browser received, and the URL it came from.
#[derive(Debug, Clone)]
pub struct Page {
    /// The absolute URL requested.
    pub url: String,
    /// The whole reply.
    pub reply: Reply,
}

impl Page {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.reply.body).into_owned()
    }

    /// The `Location` header resolved against the page URL, if any.
    pub fn location(&self) -> Option<String> {
        self.reply
            .header("location")
            .map(|location| html::resolve(&self.url, location))
    }

    /// Every form of the page.
    pub fn forms(&self) -> Vec<Form> {
        html::forms(&self.text())
    }

    /// The page's one `method="post"` form; panics with the page when there is none or several.
    pub fn post_form(&self) -> Form {
        let forms: Vec<Form> = self
            .forms()
            .into_iter()
            .filter(|form| form.method == "post")
            .collect();
        assert_eq!(
            forms.len(),
            1,
            "{} (status {}) has {} POST forms, expected exactly one:\n{}",
            self.url,
            self.reply.status,
            forms.len(),
            self.text()
        );
        forms.into_iter().next().expect("one form")
    }

    /// Whether the reply is a redirect (3xx).
    pub fn is_redirect(&self) -> bool {
        (300..400).contains(&self.reply.status)
    }
}

/// A page reads as its reply (`page.status`, `page.header(..)`, `page.body`).
impl std::ops::Deref for Page {
    type Target = Reply;

    fn deref(&self) -> &Reply {
        &self.reply
    }
}

/// A scripted browser: one cookie jar (the unit is its only origin), no automatic redirects.
/// URLs are absolute, or paths on the base URL of [`Browser::on`].
#[derive(Debug)]
pub struct Browser {
    agent: ureq::Agent,
    base: Option<String>,
    /// The cookies the jar holds, `(name, value)`.
    pub cookies: Vec<(String, String)>,
    /// Every `Set-Cookie` header received, verbatim, in order.
    pub set_cookie_headers: Vec<String>,
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

impl Browser {
    /// An empty jar.
    pub fn new() -> Browser {
        Browser {
            agent: no_redirect_agent(),
            base: None,
            cookies: Vec::new(),
            set_cookie_headers: Vec::new(),
        }
    }

    /// An empty jar that also takes paths, resolved on `base` (a server's base URL).
    pub fn on(base: &str) -> Browser {
        Browser {
            base: Some(base.to_owned()),
            ..Browser::new()
        }
    }

    /// One request with the jar's cookies; stores the cookies the reply sets.
    pub fn request(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Page {
        let url = match &self.base {
            Some(base) if url.starts_with('/') => html::resolve(base, url),
            _ => url.to_owned(),
        };
        let url = url.as_str();
        let cookie = self.cookie_header();
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if !cookie.is_empty() {
            all.push(("Cookie", cookie.as_str()));
        }
        let reply = send(&self.agent, method, url, &all, body);
        self.absorb(&reply);
        Page {
            url: url.to_owned(),
            reply,
        }
    }

    /// The `Cookie` header value the jar sends ("" when empty).
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Stores the cookies `reply` sets (for replies fetched outside the browser, e.g. raw
    /// requests from other source addresses).
    pub fn absorb(&mut self, reply: &Reply) {
        for (name, value) in &reply.headers {
            if name == "set-cookie" {
                self.set_cookie_headers.push(value.clone());
                self.store_cookie(value);
            }
        }
    }

    fn store_cookie(&mut self, header: &str) {
        let first = header.split(';').next().unwrap_or("");
        let Some((name, value)) = first.split_once('=') else {
            return;
        };
        let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
        let expired = header.split(';').any(|attr| {
            let attr = attr.trim().to_ascii_lowercase();
            attr == "max-age=0" || attr.starts_with("max-age=-")
        });
        self.cookies.retain(|(known, _)| *known != name);
        if !expired {
            self.cookies.push((name, value));
        }
    }

    /// `GET url`.
    pub fn get(&mut self, url: &str) -> Page {
        self.request("GET", url, &[], None)
    }

    /// Submits `form` of `page` with its hidden inputs plus `fill`, as a browser would:
    /// `application/x-www-form-urlencoded` to the form's action.
    pub fn submit(&mut self, page: &Page, form: &Form, fill: &[(&str, &str)]) -> Page {
        self.post_fields(page, form, &form.submission(fill))
    }

    /// Posts exactly `fields` to `form`'s action (for tests that drop or alter hidden inputs).
    pub fn post_fields(&mut self, page: &Page, form: &Form, fields: &[(String, String)]) -> Page {
        let action = html::resolve(&page.url, &form.action);
        self.request(
            "POST",
            &action,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(form_body(fields).as_bytes()),
        )
    }

    /// Submits the page's one POST form with its hidden inputs plus `fill`.
    pub fn fill(&mut self, page: &Page, fill: &[(&str, &str)]) -> Page {
        self.submit(page, &page.post_form(), fill)
    }

    /// Posts `body` (already form-encoded) to a URL or path, as a hand-made form would.
    pub fn post_body(&mut self, url: &str, body: &str) -> Page {
        self.request(
            "POST",
            url,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(body.as_bytes()),
        )
    }

    /// Follows one 303 See Other (panics on anything else), wherever it points.
    pub fn follow_once(&mut self, page: &Page) -> Page {
        assert_eq!(page.reply.status, 303, "{}", page.text());
        let next = page.location().expect("a 303 carries a Location");
        self.get(&next)
    }

    /// Follows redirects from `page` while they stay on `page`'s origin (the unit's pages); a
    /// redirect elsewhere (the client's redirect URI) is returned unfollowed.
    pub fn follow(&mut self, mut page: Page) -> Page {
        let origin = html::origin(&page.url).unwrap_or("").to_owned();
        for _ in 0..10 {
            let Some(next) = page.location().filter(|_| page.is_redirect()) else {
                return page;
            };
            if html::origin(&next) != Some(origin.as_str()) {
                return page;
            }
            page = self.get(&next);
        }
        panic!("more than 10 redirects from {}", page.url);
    }

    /// Opens the authorization URL and signs in as `user` with `password`: returns the first
    /// page after the sign-in form's submission (redirects on the unit followed), normally the
    /// consent page.
    pub fn sign_in(&mut self, auth_url: &str, user: &str, password: &str) -> Page {
        let page = self.get(auth_url);
        let page = self.follow(page);
        assert_eq!(
            page.reply.status,
            200,
            "the authorization URL {auth_url} led to {} with {}:\n{}",
            page.url,
            page.reply.status,
            page.text()
        );
        let form = page.post_form();
        assert!(
            form.input("username").is_some() && form.input("password").is_some(),
            "the page at {} is not a sign-in form (username, password): {form:?}",
            page.url
        );
        let after = self.submit(&page, &form, &[("username", user), ("password", password)]);
        self.follow(after)
    }

    /// Presses the consent page's `action` button (`allow` or `deny`); the server's reply,
    /// unfollowed.
    pub fn consent(&mut self, page: &Page, action: &str) -> Page {
        assert_eq!(
            page.reply.status,
            200,
            "expected the consent page, got {} at {}:\n{}",
            page.reply.status,
            page.url,
            page.text()
        );
        let form = page.post_form();
        assert!(
            form.buttons
                .iter()
                .any(|button| button.name == "action" && button.value == action),
            "the consent form at {} has no button action={action}: {form:?}",
            page.url
        );
        self.submit(page, &form, &[("action", action)])
    }

    /// The whole user side of a successful authorization: sign in as `localpart` (registered
    /// by the harness, so with [`password_for`]), allow, and return the 303's `Location`.
    pub fn authorize(
        &mut self,
        server: &AuthServer,
        request: &AuthRequest,
        localpart: &str,
    ) -> String {
        let consent = self.sign_in(&request.url(server), localpart, &password_for(localpart));
        let answer = self.consent(&consent, "allow");
        assert_eq!(
            answer.reply.status,
            303,
            "consent 'allow' answered {} (expected 303 to the redirect URI):\n{}",
            answer.reply.status,
            answer.text()
        );
        answer
            .location()
            .expect("a 303 carries a Location to the redirect URI")
    }
}

/// Signs `localpart` in with a fresh native client: the server, the request and the token
/// response of the code exchange.
pub fn login(env: &TestEnv, localpart: &str) -> (AuthServer, AuthRequest, Value) {
    let server = AuthServer::discover(env);
    let client_id = server.register_native("outpost test client");
    let request = AuthRequest::new(&client_id, "http://127.0.0.1:9/callback");
    let callback = Browser::new().authorize(&server, &request, localpart);
    let params = callback_params(&callback, "query");
    let code = pair(&params, "code")
        .unwrap_or_else(|| panic!("no code in {callback}"))
        .to_owned();
    let (status, tokens) = server.exchange(&request, &code);
    assert_eq!(status, 200, "code exchange: {tokens:#}");
    (server, request, tokens)
}

/// An agent that never follows redirects and never turns a status into an error.
fn no_redirect_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent()
}

/// One request to an absolute URL; panics on transport errors.
fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Reply {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let result = match body {
        Some(bytes) => builder
            .body(bytes)
            .map_err(ureq::Error::Http)
            .and_then(|request| agent.run(request)),
        None => builder
            .body(())
            .map_err(ureq::Error::Http)
            .and_then(|request| agent.run(request)),
    };
    let response = result.unwrap_or_else(|err| panic!("{method} {url}: transport error: {err}"));
    Reply::read(response).unwrap_or_else(|err| panic!("{method} {url}: reading the body: {err}"))
}
