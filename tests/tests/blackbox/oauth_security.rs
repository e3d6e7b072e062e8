//! The unit's OAuth 2.0 authorization server under attack, black-box, through a scripted
//! browser (tests/src/oauth_client.rs) and raw requests:
//! - open redirects: an unregistered redirect URI (other path, host, userinfo, scheme, port on a
//!   non-loopback URI, extra query, fragment, relative forms) is refused at the authorization
//!   endpoint with an error page, never redirected to (RFC 6749 §4.1.2.1); registration refuses
//!   redirect URIs the spec forbids;
//! - codes: a code is bound to its client, its PKCE verifier and its redirect URI; a code used
//!   twice is refused and the tokens it gave are revoked (RFC 6749 §4.1.2); PKCE `plain` and a
//!   missing challenge are refused; `state` comes back verbatim; reusing a rotated refresh token
//!   revokes the session;
//! - the sign-in form is throttled per account like `/login`, shares its counter, and refuses
//!   even the right password while backing off;
//! - cookies are `Secure; HttpOnly; SameSite=Lax; Path=/`; a form without its CSRF token, with
//!   a wrong one, or with another session's token is refused and changes nothing;
//! - the pages load nothing from elsewhere, send a restrictive Content-Security-Policy and
//!   `X-Frame-Options: DENY`, and escape what a client registered (its name) on the consent page.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use tests::html::{self, Form};
use tests::oauth_client::{
    AuthRequest, AuthServer, Browser, CLIENT_URI, LOOPBACK_REDIRECT, Page, callback_params,
    client_metadata, form_body, pair,
};
use tests::{TestEnv, Value, json, password_for, raw_http_from};

/// The redirect URI the tests send (loopback: any port is accepted for the registered one).
const REDIRECT: &str = "http://127.0.0.1:43210/callback";

/// A server with registration open and the per-IP limiter off, with `alice` registered.
fn env_with_alice() -> TestEnv {
    let env = TestEnv::unlimited();
    env.register("alice");
    env
}

/// Panics unless `page` is an error shown to the user: a 4xx status, no redirect anywhere.
fn assert_refused_page(page: &Page, what: &str) {
    assert!(
        (400..500).contains(&page.reply.status),
        "{what}: expected a 4xx error page, got {} (Location {:?}):\n{}",
        page.reply.status,
        page.reply.header("location"),
        page.text()
    );
    assert!(
        page.reply.header("location").is_none(),
        "{what}: the error carries a Location {:?}",
        page.reply.header("location")
    );
}

#[test]
fn unregistered_redirect_uris_are_never_redirected_to() {
    let env = env_with_alice();
    let server = AuthServer::discover(&env);
    let client_id = server.register_native("redirect victim");
    let attempts = [
        ("another path", "http://127.0.0.1/other"),
        ("a path below", "http://127.0.0.1/callback/evil"),
        ("dot segments", "http://127.0.0.1/callback/../evil"),
        ("another host", "http://evil.example/callback"),
        (
            "a host with the loopback prefix",
            "http://127.0.0.1.evil.example/callback",
        ),
        (
            "userinfo before the real host",
            "http://127.0.0.1@evil.example/callback",
        ),
        (
            "userinfo with a port",
            "http://127.0.0.1:80@evil.example/callback",
        ),
        (
            "encoded slash in userinfo",
            "http://127.0.0.1%2F@evil.example/callback",
        ),
        (
            "userinfo on the registered host",
            "http://evil@127.0.0.1/callback",
        ),
        ("https instead of http", "https://127.0.0.1/callback"),
        (
            "javascript scheme",
            "javascript:alert(1)//127.0.0.1/callback",
        ),
        ("data scheme", "data:text/html,<script>alert(1)</script>"),
        ("scheme-relative", "//evil.example/callback"),
        ("backslash authority", "http:\\\\evil.example\\callback"),
        ("a fragment", "http://127.0.0.1/callback#frag"),
        (
            "an extra query",
            "http://127.0.0.1/callback?next=http://evil.example/",
        ),
        ("another loopback name", "http://localhost/callback"),
        ("relative", "/callback"),
    ];
    for (what, redirect_uri) in attempts {
        let request = AuthRequest::new(&client_id, redirect_uri);
        let mut browser = Browser::new();
        let first = browser.get(&request.url(&server));
        let page = browser.follow(first);
        assert_refused_page(&page, &format!("redirect_uri {what} ({redirect_uri})"));
    }

    // An unknown client and a missing redirect_uri: the same, nothing to redirect to.
    let unknown = AuthRequest::new("no-such-client", REDIRECT);
    let mut browser = Browser::new();
    let first = browser.get(&unknown.url(&server));
    assert_refused_page(&browser.follow(first), "an unknown client_id");

    // The registered URI itself (any port) still works: the refusals above were about the URI.
    let request = AuthRequest::new(&client_id, REDIRECT);
    let callback = Browser::new().authorize(&server, &request, "alice");
    assert!(
        callback.starts_with("http://127.0.0.1:43210/callback?"),
        "redirected to {callback}"
    );
}

#[test]
fn registration_refuses_redirect_uris_the_spec_forbids() {
    let env = TestEnv::unlimited();
    let server = AuthServer::discover(&env);
    // (application_type, redirect URI, why it is invalid); client_uri is https://client.example.org/.
    let invalid = [
        (
            "web",
            "http://client.example.org/callback",
            "web: not https",
        ),
        (
            "web",
            "https://client.example.org/callback#frag",
            "a fragment",
        ),
        (
            "web",
            "https://user:pass@client.example.org/callback",
            "userinfo",
        ),
        (
            "web",
            "https://evil.example/callback",
            "web: not under client_uri",
        ),
        (
            "web",
            "https://client.example.org.evil.example/cb",
            "web: suffix trick",
        ),
        ("web", "http://localhost/", "web: loopback"),
        (
            "native",
            "http://localhost:1234/callback",
            "loopback with a port",
        ),
        (
            "native",
            "https://localhost/callback",
            "loopback over https",
        ),
        (
            "native",
            "example:/callback",
            "private scheme not from client_uri",
        ),
        (
            "native",
            "com.example.app:/callback",
            "private scheme of another host",
        ),
        (
            "native",
            "org.example.client://callback",
            "private scheme with an authority",
        ),
        ("native", "javascript:alert(1)", "javascript"),
        ("native", "not a uri", "not a URI"),
    ];
    for (application_type, uri, why) in invalid {
        let (status, body) =
            server.register_client(&client_metadata("bad client", application_type, &[uri]));
        assert_eq!(status, 400, "{why} ({uri}) was registered: {body:#}");
        let error = body["error"].as_str().unwrap_or("");
        assert!(
            error == "invalid_redirect_uri" || error == "invalid_client_metadata",
            "{why} ({uri}): error {error:?} (RFC 7591 §3.2.2): {body:#}"
        );
    }
    // The valid forms from the spec are accepted.
    for (application_type, uri) in [
        ("web", "https://client.example.org/callback"),
        ("web", "https://app.client.example.org/callback"),
        ("native", "org.example.client:/callback"),
        ("native", "http://127.0.0.1/callback"),
        ("native", "http://[::1]/callback"),
        ("native", "http://localhost/callback"),
    ] {
        let (status, body) =
            server.register_client(&client_metadata("good client", application_type, &[uri]));
        assert_eq!(status, 201, "{application_type} {uri} refused: {body:#}");
    }
}

/// Runs the user side of `request` (alice allows) and returns the code.
fn code_for(server: &AuthServer, request: &AuthRequest) -> String {
    let callback = Browser::new().authorize(server, request, "alice");
    let params = callback_params(&callback, &request.response_mode);
    assert_eq!(
        pair(&params, "state"),
        Some(request.state.as_str()),
        "state not echoed in {callback}"
    );
    pair(&params, "code")
        .unwrap_or_else(|| panic!("no code in {callback}"))
        .to_owned()
}

fn assert_grant_error((status, body): &(u16, Value), error: &str, what: &str) {
    assert_eq!(*status, 400, "{what}: {body:#}");
    assert_eq!(body["error"], error, "{what}: {body:#}");
}

#[test]
fn a_code_is_bound_to_its_client_verifier_and_redirect_uri() {
    let env = env_with_alice();
    let server = AuthServer::discover(&env);
    let client_a = server.register_native("client A");
    let client_b = server.register_native("client B");
    assert_ne!(client_a, client_b, "two registrations, one client_id");

    // Client B presents client A's code (with A's verifier and redirect URI).
    let request = AuthRequest::new(&client_a, REDIRECT);
    let code = code_for(&server, &request);
    let stolen = server.token(&[
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", client_b.as_str()),
        ("code_verifier", request.pkce.verifier.as_str()),
    ]);
    assert_grant_error(&stolen, "invalid_grant", "A's code redeemed by client B");

    // A wrong verifier, no verifier, another redirect URI (even another loopback port).
    let request = AuthRequest::new(&client_a, REDIRECT);
    let code = code_for(&server, &request);
    let mut wrong = request.clone();
    wrong.pkce = tests::oauth_client::Pkce::new();
    assert_grant_error(
        &server.exchange(&wrong, &code),
        "invalid_grant",
        "a wrong code_verifier",
    );
    let request = AuthRequest::new(&client_a, REDIRECT);
    let code = code_for(&server, &request);
    let (status, body) = server.token(&[
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", client_a.as_str()),
    ]);
    assert_eq!(status, 400, "no code_verifier: {body:#}");
    assert!(
        body["error"] == "invalid_request" || body["error"] == "invalid_grant",
        "no code_verifier: {body:#}"
    );
    let request = AuthRequest::new(&client_a, REDIRECT);
    let code = code_for(&server, &request);
    let mut moved = request.clone();
    moved.redirect_uri = "http://127.0.0.1:43211/callback".to_owned();
    assert_grant_error(
        &server.exchange(&moved, &code),
        "invalid_grant",
        "another redirect_uri at the token endpoint",
    );
    // A made-up code.
    let request = AuthRequest::new(&client_a, REDIRECT);
    assert_grant_error(
        &server.exchange(&request, "made-up-code"),
        "invalid_grant",
        "an unknown code",
    );
}

#[test]
fn pkce_is_required_with_s256_and_state_round_trips() {
    let env = env_with_alice();
    let server = AuthServer::discover(&env);
    let client_id = server.register_native("pkce client");

    // `plain` and no challenge at all: refused before any code is issued. With a registered
    // redirect URI the error may go back to the client (with the state), or be shown.
    for (what, challenge, method) in [
        (
            "code_challenge_method=plain",
            Some("plain-challenge-plain-challenge-plain-chall"),
            Some("plain"),
        ),
        ("no code_challenge", None, None),
        ("an unknown method", Some("x"), Some("S512")),
    ] {
        let request = AuthRequest::new(&client_id, REDIRECT);
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("scope", request.scope.as_str()),
            ("state", request.state.as_str()),
            ("response_mode", "query"),
        ];
        if let Some(challenge) = challenge {
            params.push(("code_challenge", challenge));
        }
        if let Some(method) = method {
            params.push(("code_challenge_method", method));
        }
        let url = format!(
            "{}?{}",
            server.endpoint("authorization_endpoint"),
            form_body(&params)
        );
        let mut browser = Browser::new();
        let first = browser.get(&url);
        let page = browser.follow(first);
        match page.location().filter(|_| page.is_redirect()) {
            Some(location) => {
                assert!(
                    location.starts_with(REDIRECT),
                    "{what}: redirected to {location}"
                );
                let params = callback_params(&location, "query");
                assert_eq!(
                    pair(&params, "error"),
                    Some("invalid_request"),
                    "{what}: {location}"
                );
                assert_eq!(
                    pair(&params, "state"),
                    Some(request.state.as_str()),
                    "{what}"
                );
                assert!(
                    pair(&params, "code").is_none(),
                    "{what}: a code in {location}"
                );
            }
            None => assert_refused_page(&page, what),
        }
    }

    // A state with every kind of character comes back exactly, in the query and the fragment.
    for mode in ["query", "fragment"] {
        let mut request = AuthRequest::new(&client_id, REDIRECT);
        request.state = "a b&c=d/é?#%2F+".to_owned();
        request.response_mode = mode.to_owned();
        let callback = Browser::new().authorize(&server, &request, "alice");
        if mode == "fragment" {
            assert!(
                !callback.split('#').next().unwrap_or("").contains("code="),
                "fragment mode put the code in the query: {callback}"
            );
        }
        let params = callback_params(&callback, mode);
        assert_eq!(
            pair(&params, "state"),
            Some(request.state.as_str()),
            "{callback}"
        );
        let code = pair(&params, "code").unwrap_or_else(|| panic!("no code in {callback}"));
        let (status, body) = server.exchange(&request, code);
        assert_eq!(status, 200, "{mode}: {body:#}");
    }
}

/// `GET /whoami` with `token`; the status and body.
fn whoami(env: &TestEnv, token: &str) -> (u16, Value) {
    env.with_token(token)
        .get("/_matrix/client/v3/account/whoami")
}

#[test]
fn code_reuse_is_refused_and_revokes_what_the_code_gave() {
    let env = env_with_alice();
    let server = AuthServer::discover(&env);
    let client_id = server.register_native("reuse client");
    let request = AuthRequest::new(&client_id, REDIRECT);
    let code = code_for(&server, &request);

    let reply_tokens = server.exchange(&request, &code);
    let (status, tokens) = &reply_tokens;
    assert_eq!(*status, 200, "{tokens:#}");
    let access = tokens["access_token"].as_str().expect("access_token");
    let refresh = tokens["refresh_token"].as_str().expect("refresh_token");
    let (status, me) = whoami(&env, access);
    assert_eq!(status, 200, "{me:#}");
    assert_eq!(me["device_id"], request.device_id.as_str(), "{me:#}");

    assert_grant_error(
        &server.exchange(&request, &code),
        "invalid_grant",
        "the same code a second time",
    );
    let (status, body) = whoami(&env, access);
    assert_eq!(
        status, 401,
        "the first exchange's access token survived the reuse: {body:#}"
    );
    assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN", "{body:#}");
    assert_grant_error(
        &server.refresh(&client_id, refresh),
        "invalid_grant",
        "the first exchange's refresh token after the reuse",
    );
}

#[test]
fn token_responses_are_not_cached_and_refresh_reuse_revokes_the_session() {
    let env = env_with_alice();
    let server = AuthServer::discover(&env);
    let client_id = server.register_native("refresh client");
    let request = AuthRequest::new(&client_id, REDIRECT);
    let code = code_for(&server, &request);
    let reply = Browser::new().request(
        "POST",
        &server.endpoint("token_endpoint"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(
            form_body(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("client_id", client_id.as_str()),
                ("code_verifier", request.pkce.verifier.as_str()),
            ])
            .as_bytes(),
        ),
    );
    assert_eq!(reply.reply.status, 200, "{}", reply.text());
    // RFC 6749 §5.1: "Cache-Control: no-store" on every response with tokens.
    let cache = reply.reply.header("cache-control").unwrap_or("");
    assert!(
        cache.contains("no-store"),
        "token response Cache-Control {cache:?}"
    );
    let first = reply.reply.json();
    let rt1 = first["refresh_token"].as_str().expect("refresh_token");

    let (status, second) = server.refresh(&client_id, rt1);
    assert_eq!(status, 200, "{second:#}");
    let rt2 = second["refresh_token"]
        .as_str()
        .expect("a rotated refresh_token");
    assert_ne!(rt1, rt2, "the refresh token did not rotate");
    let (status, third) = server.refresh(&client_id, rt2);
    assert_eq!(status, 200, "{third:#}");
    let access3 = third["access_token"].as_str().expect("access_token");
    assert_eq!(whoami(&env, access3).0, 200);

    // rt1 again, after its successor was itself used: a stolen token. The session ends.
    assert_grant_error(
        &server.refresh(&client_id, rt1),
        "invalid_grant",
        "a rotated-away refresh token",
    );
    let (status, body) = whoami(&env, access3);
    assert_eq!(
        status, 401,
        "the session survived refresh token reuse: {body:#}"
    );
    assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN", "{body:#}");
}

/// Sends the sign-in `form` of `page` from loopback `host` as a raw request, with `browser`'s
/// cookies; the reply (cookies it sets go into the jar).
fn sign_in_from(
    env: &TestEnv,
    browser: &mut Browser,
    page_url: &str,
    form: &Form,
    host: IpAddr,
    user: &str,
    password: &str,
) -> tests::Reply {
    let action = html::resolve(page_url, &form.action);
    let origin = html::origin(&action).expect("an absolute action URL");
    let path = &action[origin.len()..];
    let body = form_body(&form.submission(&[("username", user), ("password", password)]));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Cookie: {}",
        env.addr(),
        browser.cookie_header()
    );
    let reply = raw_http_from(host, env.addr(), &head, body.as_bytes()).expect("sign-in request");
    browser.absorb(&reply);
    reply
}

#[test]
fn password_guessing_on_the_sign_in_form_is_throttled_like_login() {
    // Default limits, as in login_throttle.rs: the per-account back-off is what must stop it.
    let env = TestEnv::with_config("[registration]\nenabled = true\n");
    env.register("alice");
    env.register("bob");
    let server = AuthServer::discover(&env);
    let client_id = server.register_native("guessing client");
    let request = AuthRequest::new(&client_id, REDIRECT);
    let mut browser = Browser::new();
    let first = browser.get(&request.url(&server));
    let mut page = browser.follow(first);
    let hosts: Vec<IpAddr> = (0..20)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 30 + i)))
        .collect();

    let mut throttled_after = None;
    for attempt in 0..40 {
        let form = page.post_form();
        let reply = sign_in_from(
            &env,
            &mut browser,
            &page.url,
            &form,
            hosts[attempt % hosts.len()],
            "alice",
            &format!("guess-{attempt}"),
        );
        match reply.status {
            429 => {
                throttled_after = Some(attempt);
                break;
            }
            // Refused: the form again (with an error), perhaps with a new CSRF token, or a
            // redirect back to it on the unit.
            status if status < 500 => {
                let answer = browser.follow(Page {
                    url: page.url.clone(),
                    reply,
                });
                assert!(
                    !answer.is_redirect() && !answer.forms().is_empty(),
                    "a wrong password answered {status}, then {} (Location {:?}) without the \
                     form again",
                    answer.reply.status,
                    answer.reply.header("location")
                );
                page = answer;
            }
            status => panic!(
                "a wrong password answered {status} (Location {:?})",
                reply.header("location")
            ),
        }
    }
    let attempt = throttled_after.expect("40 wrong passwords on the sign-in form, never a 429");
    assert!(
        attempt <= 5,
        "only after {attempt} wrong guesses did the form back off"
    );
    let window_start = Instant::now();

    // While backing off, the right password is refused too, and /login shares the back-off.
    let mut fresh = Browser::new();
    let first = fresh.get(&request.url(&server));
    let sign_in = fresh.follow(first);
    let form = sign_in.post_form();
    let reply = sign_in_from(
        &env,
        &mut fresh,
        &sign_in.url,
        &form,
        hosts[1],
        "alice",
        &password_for("alice"),
    );
    let login = raw_http_from(
        hosts[2],
        env.addr(),
        "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json",
        json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "alice"},
            "password": password_for("alice"),
        })
        .to_string()
        .as_bytes(),
    )
    .expect("login request");
    if window_start.elapsed() < Duration::from_secs(1) {
        assert_eq!(
            reply.status,
            429,
            "the right password got through during the back-off (Location {:?})",
            reply.header("location")
        );
        assert_eq!(
            login.status, 429,
            "/login did not share the sign-in form's back-off"
        );
    }

    // Another account is not affected.
    let mut bob = Browser::new();
    let consent = bob.sign_in(&request.url(&server), "bob", &password_for("bob"));
    assert_eq!(
        consent.reply.status,
        200,
        "bob's sign-in: {}",
        consent.text()
    );
    assert!(
        consent
            .post_form()
            .buttons
            .iter()
            .any(|button| button.name == "action" && button.value == "allow"),
        "bob did not reach the consent page: {}",
        consent.text()
    );
}

#[test]
fn cookies_are_secure_httponly_and_samesite_lax() {
    let env = env_with_alice();
    let server = AuthServer::discover(&env);
    let client_id = server.register_native("cookie client");
    let request = AuthRequest::new(&client_id, REDIRECT);
    let mut browser = Browser::new();
    let consent = browser.sign_in(&request.url(&server), "alice", &password_for("alice"));
    let _ = browser.consent(&consent, "allow");
    assert!(
        browser
            .set_cookie_headers
            .iter()
            .any(|header| header.starts_with("outpost_session=")),
        "no outpost_session cookie was set: {:?}",
        browser.set_cookie_headers
    );
    for header in &browser.set_cookie_headers {
        let attrs: Vec<String> = header
            .split(';')
            .skip(1)
            .map(|attr| attr.trim().to_ascii_lowercase())
            .collect();
        for want in ["secure", "httponly", "samesite=lax", "path=/"] {
            assert!(
                attrs.iter().any(|attr| attr == want),
                "Set-Cookie {header:?} lacks {want}"
            );
        }
    }
}

/// A browser at the sign-in page of a fresh request; the page.
fn at_sign_in(server: &AuthServer, request: &AuthRequest) -> (Browser, Page) {
    let mut browser = Browser::new();
    let first = browser.get(&request.url(server));
    let page = browser.follow(first);
    assert_eq!(page.reply.status, 200, "sign-in page: {}", page.text());
    (browser, page)
}

/// `form`'s submission with the `csrf` field replaced by `csrf` (dropped when `None`).
fn with_csrf(form: &Form, fill: &[(&str, &str)], csrf: Option<&str>) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = form
        .submission(fill)
        .into_iter()
        .filter(|(name, _)| name != "csrf")
        .collect();
    if let Some(csrf) = csrf {
        fields.push(("csrf".to_owned(), csrf.to_owned()));
    }
    fields
}

/// Whether `page` is the consent page (it has the allow button).
fn is_consent(page: &Page) -> bool {
    page.forms().iter().any(|form| {
        form.buttons
            .iter()
            .any(|button| button.name == "action" && button.value == "allow")
    })
}

/// Panics unless the sign-in submission `answer` was refused: whatever the server shows (an
/// error status, the form again, a redirect on the unit), the user did not get to the consent.
fn assert_sign_in_refused(browser: &mut Browser, answer: Page, what: &str) {
    let status = answer.reply.status;
    let page = browser.follow(answer);
    assert!(
        !page.is_redirect() && !is_consent(&page) && status < 500,
        "{what}: accepted or failed (status {status}, then {} at {}, Location {:?}):\n{}",
        page.reply.status,
        page.url,
        page.reply.header("location"),
        page.text()
    );
}

/// Panics unless the consent submission `answer` was refused: no redirect to the client.
fn assert_consent_refused(answer: &Page, what: &str) {
    let location = answer.location().unwrap_or_default();
    assert!(
        !(answer.is_redirect() && location.starts_with(REDIRECT)) && answer.reply.status < 500,
        "{what}: answered {} (Location {location:?}):\n{}",
        answer.reply.status,
        answer.text()
    );
}

#[test]
fn forms_without_the_right_csrf_token_are_refused() {
    let env = env_with_alice();
    let server = AuthServer::discover(&env);
    let client_id = server.register_native("csrf client");
    let request = AuthRequest::new(&client_id, REDIRECT);
    let password = password_for("alice");
    let alice = [("username", "alice"), ("password", password.as_str())];

    let (mut browser, page) = at_sign_in(&server, &request);
    let form = page.post_form();
    let token = form
        .input("csrf")
        .unwrap_or_else(|| panic!("the sign-in form has no csrf input: {form:?}"))
        .value
        .clone();
    assert!(token.len() >= 16, "a short CSRF token {token:?}");

    let missing = browser.post_fields(&page, &form, &with_csrf(&form, &alice, None));
    assert_sign_in_refused(&mut browser, missing, "sign-in without csrf");
    let wrong = browser.post_fields(&page, &form, &with_csrf(&form, &alice, Some("x")));
    assert_sign_in_refused(&mut browser, wrong, "sign-in with a wrong csrf");
    // Another session's valid token, with this session's cookie.
    let (_other, other_page) = at_sign_in(&server, &request);
    let other_token = other_page
        .post_form()
        .input("csrf")
        .expect("csrf input")
        .value
        .clone();
    assert_ne!(other_token, token, "two sessions got the same CSRF token");
    let crossed = browser.post_fields(&page, &form, &with_csrf(&form, &alice, Some(&other_token)));
    assert_sign_in_refused(&mut browser, crossed, "sign-in with another session's csrf");
    // A forged cross-site POST carries no cookie (SameSite=Lax): refused.
    let mut attacker = Browser::new();
    let forged = attacker.post_fields(&page, &form, &form.submission(&alice));
    assert_sign_in_refused(&mut attacker, forged, "sign-in without the session cookie");
    // The session those attempts used is still signed out: the authorization URL shows the
    // sign-in form again, not the consent.
    let again = browser.get(&request.url(&server));
    let again = browser.follow(again);
    assert!(
        !is_consent(&again) && again.post_form().input("password").is_some(),
        "after refused sign-ins the session went on to {} at {}:\n{}",
        again.reply.status,
        again.url,
        again.text()
    );

    // The refusals changed nothing: the real submission signs in and reaches the consent.
    let (mut browser, page) = at_sign_in(&server, &request);
    let form = page.post_form();
    let consent = browser.submit(&page, &form, &alice);
    let consent = browser.follow(consent);
    let consent_form = consent.post_form();
    assert!(
        consent_form
            .buttons
            .iter()
            .any(|b| b.name == "action" && b.value == "allow"),
        "no consent page after a valid sign-in: {}",
        consent.text()
    );

    // The consent form: without csrf, with a wrong one, without the cookie.
    let allow = [("action", "allow")];
    for (what, fields, use_cookie) in [
        (
            "consent without csrf",
            with_csrf(&consent_form, &allow, None),
            true,
        ),
        (
            "consent with a wrong csrf",
            with_csrf(&consent_form, &allow, Some("nope")),
            true,
        ),
        (
            "consent without the cookie",
            consent_form.submission(&allow),
            false,
        ),
    ] {
        let answer = if use_cookie {
            browser.post_fields(&consent, &consent_form, &fields)
        } else {
            Browser::new().post_fields(&consent, &consent_form, &fields)
        };
        assert_consent_refused(&answer, what);
    }
    let answer = browser.consent(&consent, "allow");
    assert_eq!(answer.reply.status, 303, "{}", answer.text());
    let location = answer.location().expect("Location");
    assert!(location.starts_with(REDIRECT), "{location}");
    assert!(
        pair(&callback_params(&location, "query"), "code").is_some(),
        "{location}"
    );
}

/// Checks one page's security headers and that it loads nothing from elsewhere.
fn check_page(page: &Page, unit_origin: &str) {
    let what = &page.url;
    let frame = page.reply.header("x-frame-options").unwrap_or("");
    assert!(
        frame.eq_ignore_ascii_case("deny"),
        "{what}: X-Frame-Options {frame:?}"
    );
    let csp = page
        .reply
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"));
    let directives: Vec<Vec<&str>> = csp
        .split(';')
        .map(|directive| directive.split_whitespace().collect::<Vec<_>>())
        .filter(|words| !words.is_empty())
        .collect();
    let directive = |name: &str| directives.iter().find(|words| words[0] == name);
    let default =
        directive("default-src").unwrap_or_else(|| panic!("{what}: no default-src in {csp}"));
    assert!(
        default[1..] == ["'none'"] || default[1..] == ["'self'"],
        "{what}: default-src {:?} in {csp}",
        &default[1..]
    );
    let ancestors = directive("frame-ancestors")
        .unwrap_or_else(|| panic!("{what}: no frame-ancestors in {csp}"));
    assert_eq!(ancestors[1..], ["'none'"], "{what}: {csp}");
    for words in &directives {
        for source in &words[1..] {
            let open = matches!(
                *source,
                "*" | "http:" | "https:" | "data:" | "'unsafe-eval'"
            ) || (words[0] == "script-src" && *source == "'unsafe-inline'");
            assert!(!open, "{what}: {} allows {source}: {csp}", words[0]);
        }
    }
    if let Some(form_action) = directive("form-action") {
        assert!(
            form_action[1..]
                .iter()
                .all(|s| *s == "'self'" || s.starts_with(unit_origin)),
            "{what}: form-action {form_action:?}"
        );
    }
    let text = page.text();
    for (tag, attr, url) in html::linked_urls(&text) {
        // Links the user may follow (the client's URI on the consent page) load nothing.
        if tag == "a" {
            continue;
        }
        let resolved = html::resolve(&page.url, &url);
        assert!(
            html::origin(&resolved) == Some(unit_origin),
            "{what}: <{tag} {attr}={url:?}> loads from outside the unit"
        );
    }
    let lower = text.to_ascii_lowercase();
    for needle in ["url(http", "url(//", "url('http", "url(\"http", "@import"] {
        assert!(!lower.contains(needle), "{what}: CSS loads {needle}…");
    }
}

#[test]
fn pages_are_self_contained_unframeable_and_escape_client_metadata() {
    let env = env_with_alice();
    let server = AuthServer::discover(&env);
    let unit_origin = html::origin(&env.base_url()).expect("base URL").to_owned();
    let name = "<script>alert('owned')</script> Evil & Co";
    let (status, body) = server.register_client(&json!({
        "client_name": name,
        "client_uri": CLIENT_URI,
        "redirect_uris": [LOOPBACK_REDIRECT],
        "application_type": "native",
        "token_endpoint_auth_method": "none",
        "response_types": ["code"],
        "grant_types": ["authorization_code", "refresh_token"],
    }));
    assert_eq!(status, 201, "{body:#}");
    let client_id = body["client_id"].as_str().expect("client_id");
    let request = AuthRequest::new(client_id, REDIRECT);

    let (mut browser, sign_in) = at_sign_in(&server, &request);
    check_page(&sign_in, &unit_origin);
    let form = sign_in.post_form();
    let password = password_for("alice");
    let consent = browser.submit(
        &sign_in,
        &form,
        &[("username", "alice"), ("password", password.as_str())],
    );
    let consent = browser.follow(consent);
    check_page(&consent, &unit_origin);
    let text = consent.text();
    assert!(
        !text.contains("<script>alert"),
        "the client's name reached the consent page unescaped:\n{text}"
    );
    assert!(
        html::decode_entities(&text).contains(name),
        "the consent page does not show the client's name {name:?}:\n{text}"
    );
    assert!(
        text.contains(CLIENT_URI.trim_end_matches('/')),
        "the consent page does not show client_uri:\n{text}"
    );

    // An error page too (an unregistered redirect URI).
    let bad = AuthRequest::new(client_id, "http://evil.example/callback");
    let mut other = Browser::new();
    let first = other.get(&bad.url(&server));
    let error = other.follow(first);
    assert_refused_page(&error, "an unregistered redirect URI");
    check_page(&error, &unit_origin);
    let error_text = error.text();
    assert!(
        !error_text.contains("href=\"http://evil.example"),
        "the error page links to the unregistered URI:\n{error_text}"
    );

    // Deny: back to the client with access_denied and the state, and no code.
    let deny = browser.consent(&consent, "deny");
    assert_eq!(deny.reply.status, 303, "{}", deny.text());
    let location = deny.location().expect("Location");
    assert!(location.starts_with(REDIRECT), "{location}");
    let params = callback_params(&location, "query");
    assert_eq!(pair(&params, "error"), Some("access_denied"), "{location}");
    assert_eq!(
        pair(&params, "state"),
        Some(request.state.as_str()),
        "{location}"
    );
    assert!(pair(&params, "code").is_none(), "{location}");
}
