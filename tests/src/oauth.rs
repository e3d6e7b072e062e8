//! OAuth 2.0 request shapes of `oauth_protocol.rs`, by path on one test server: deterministic
//! PKCE pairs, client registration, form-encoded requests to the token endpoints, authorisation
//! URLs, and signing in on the pages with the one scripted browser
//! ([`oauth_client::Browser`](crate::oauth_client::Browser)). No behaviour is asserted here.

use crate::oauth_client::{Browser, Page, base64url};
use crate::{Client, Reply, TestEnv, Value, json, password_for};
use sha2::{Digest, Sha256};

/// A PKCE `(verifier, S256 challenge)` pair; `seed` makes the verifier unique.
pub fn pkce(seed: &str) -> (String, String) {
    let verifier = format!("{:0<64}", format!("verifier-{seed}-"));
    let challenge = base64url(&Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// Form-encodes `pairs`.
pub fn form(pairs: &[(&str, &str)]) -> String {
    crate::html::form_body(pairs)
}

/// The value of `name` in a `a=b&c=d` string (percent- and `+`-decoded).
pub fn param(encoded: &str, name: &str) -> Option<String> {
    crate::html::pair(&crate::html::parse_pairs(encoded), name).map(str::to_owned)
}

/// The page text of a reply.
pub fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// Registers a client (`POST` the metadata); returns `(status, body)`.
pub fn register_client(env: &TestEnv, metadata: &Value) -> (u16, Value) {
    env.anon().post("/_outpost/oauth/register", metadata)
}

/// A web client of `https://app.example` with one redirect URI; returns its `client_id`.
pub fn web_client(env: &TestEnv, redirect_uri: &str) -> String {
    web_client_of(&env.anon(), redirect_uri)
}

/// [`web_client`] through any anonymous client of a server.
pub fn web_client_of(anon: &Client, redirect_uri: &str) -> String {
    let (status, body) = anon.post(
        "/_outpost/oauth/register",
        &json!({
            "client_name": "Test App",
            "client_uri": "https://app.example/",
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token",
                            "urn:ietf:params:oauth:grant-type:device_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "application_type": "web",
        }),
    );
    assert_eq!(status, 201, "{body:#}");
    body["client_id"].as_str().expect("client_id").to_owned()
}

/// `POST`s a form to an OAuth endpoint; returns `(status, JSON body)`.
pub fn post_form(env: &TestEnv, path: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
    post_form_of(&env.anon(), path, pairs)
}

/// [`post_form`] through any anonymous client of a server.
pub fn post_form_of(anon: &Client, path: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
    let reply = anon.request(
        "POST",
        path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(form(pairs).as_bytes()),
    );
    (reply.status, reply.json())
}

/// An authorisation request URL.
pub fn authorize_path(
    client_id: &str,
    redirect_uri: &str,
    device_id: &str,
    state: &str,
    challenge: &str,
    extra: &[(&str, &str)],
) -> String {
    let scope = format!("urn:matrix:client:api:* urn:matrix:client:device:{device_id}");
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", scope.as_str()),
        ("state", state),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ];
    pairs.extend_from_slice(extra);
    format!("/_outpost/oauth/authorize?{}", form(&pairs))
}

/// Signs `localpart` in on the page shown and allows access; returns the final 303 (to the
/// client's redirect URI).
pub fn sign_in_and_allow(browser: &mut Browser, sign_in_page: &Page, localpart: &str) -> Page {
    sign_in_with(browser, sign_in_page, localpart, &password_for(localpart))
}

/// [`sign_in_and_allow`] with an explicit password.
pub fn sign_in_with(
    browser: &mut Browser,
    sign_in_page: &Page,
    localpart: &str,
    password: &str,
) -> Page {
    assert_eq!(sign_in_page.status, 200, "{}", text(sign_in_page));
    let after = browser.fill(
        sign_in_page,
        &[("username", localpart), ("password", password)],
    );
    let consent = browser.follow_once(&after);
    assert_eq!(consent.status, 200, "{}", text(&consent));
    browser.fill(&consent, &[("action", "allow")])
}

/// The query (or fragment) parameters of a redirect's `Location`.
pub fn location_params(reply: &Reply) -> String {
    let location = reply.header("location").expect("Location");
    location
        .split_once('#')
        .or_else(|| location.split_once('?'))
        .map(|(_, p)| p.to_owned())
        .unwrap_or_default()
}
