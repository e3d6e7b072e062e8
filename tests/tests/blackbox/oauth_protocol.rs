//! The built-in OAuth 2.0 server against the spec and its RFCs, black-box: server metadata
//! (and MSC2965's unstable paths), dynamic client registration's rules and errors, the
//! authorisation endpoint's refusals (never a redirect to an unregistered URI), the sign-in
//! and consent pages driven as a browser would (cookie, CSRF), the token endpoint's errors
//! (`invalid_request`, `invalid_client`, `invalid_grant`, `unsupported_grant_type`), PKCE,
//! code reuse and expiry, refresh rotation with reuse detection, and revocation.

use tests::oauth::{
    authorize_path, location_params, param, pkce, post_form, register_client, sign_in_and_allow,
    text, web_client,
};
use tests::oauth_client::Browser;
use tests::{TestEnv, Value, json};

const REDIRECT: &str = "https://app.example/callback";

/// A server with open registration and no rate limit, and `alice` registered.
fn env() -> TestEnv {
    let env = TestEnv::unlimited();
    env.register("alice");
    env
}

fn oauth_error((status, body): &(u16, Value), want_status: u16, want_error: &str) {
    assert_eq!(
        (*status, body["error"].as_str()),
        (want_status, Some(want_error)),
        "{body:#}"
    );
    assert!(body["error_description"].is_string(), "{body:#}");
}

/// Runs the code flow for `alice` on `device`; returns `(code, verifier)`.
fn code_for(env: &TestEnv, client_id: &str, device: &str) -> (String, String) {
    let (verifier, challenge) = pkce(device);
    let mut browser = Browser::on(&env.base_url());
    let page = browser.get(&authorize_path(
        client_id,
        REDIRECT,
        device,
        "st4te",
        &challenge,
        &[],
    ));
    let done = sign_in_and_allow(&mut browser, &page, "alice");
    assert_eq!(done.status, 303, "{}", text(&done));
    let location = done.header("location").expect("Location");
    assert!(location.starts_with(&format!("{REDIRECT}?")), "{location}");
    let params = location_params(&done);
    assert_eq!(param(&params, "state").as_deref(), Some("st4te"));
    (param(&params, "code").expect("code"), verifier)
}

fn exchange(env: &TestEnv, client_id: &str, code: &str, verifier: &str) -> (u16, Value) {
    post_form(
        env,
        "/_outpost/oauth/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", client_id),
            ("code_verifier", verifier),
        ],
    )
}

fn whoami(env: &TestEnv, token: &str) -> (u16, Value) {
    env.with_token(token)
        .get("/_matrix/client/v3/account/whoami")
}

#[test]
fn metadata_names_every_endpoint_under_the_issuer() {
    let env = env();
    let base = env.base_url();
    let metadata = env.anon().get_ok("/_matrix/client/v1/auth_metadata");
    assert_eq!(metadata["issuer"], json!(format!("{base}/")));
    for endpoint in [
        "registration_endpoint",
        "authorization_endpoint",
        "token_endpoint",
        "revocation_endpoint",
        "device_authorization_endpoint",
    ] {
        let url = metadata[endpoint].as_str().expect(endpoint);
        assert!(url.starts_with(&format!("{base}/_outpost/oauth/")), "{url}");
    }
    assert_eq!(metadata["response_types_supported"], json!(["code"]));
    assert_eq!(
        metadata["response_modes_supported"],
        json!(["query", "fragment"])
    );
    assert_eq!(
        metadata["code_challenge_methods_supported"],
        json!(["S256"])
    );
    assert_eq!(
        metadata["grant_types_supported"],
        json!([
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code"
        ])
    );
    assert_eq!(metadata["prompt_values_supported"], json!(["create"]));
    let unstable = env
        .anon()
        .get_ok("/_matrix/client/unstable/org.matrix.msc2965/auth_metadata");
    assert_eq!(unstable, metadata);
    let issuer = env
        .anon()
        .get_ok("/_matrix/client/unstable/org.matrix.msc2965/auth_issuer");
    assert_eq!(issuer, json!({"issuer": format!("{base}/")}));

    let closed = TestEnv::with_config("[rate_limit]\nenabled = false\n");
    let metadata = closed.anon().get_ok("/_matrix/client/v1/auth_metadata");
    assert!(
        metadata.get("prompt_values_supported").is_none(),
        "no prompt=create without open registration: {metadata:#}"
    );
}

#[test]
fn registration_follows_the_metadata_rules() {
    let env = env();
    let good = json!({
        "client_name": "My App",
        "client_name#fr": "Mon application",
        "client_uri": "https://example.com/",
        "logo_uri": "https://example.com/logo.png",
        "tos_uri": "https://example.com/tos.html",
        "policy_uri": "https://example.com/policy.html",
        "redirect_uris": ["https://app.example.com/callback"],
        "token_endpoint_auth_method": "none",
        "response_types": ["code"],
        "grant_types": ["authorization_code", "refresh_token",
                        "urn:ietf:params:oauth:grant-type:token-exchange"],
        "application_type": "web"
    });
    let (status, body) = register_client(&env, &good);
    assert_eq!(status, 201, "{body:#}");
    assert!(body["client_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(
        body["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(body["token_endpoint_auth_method"], json!("none"));
    assert_eq!(body["application_type"], json!("web"));
    assert!(body.get("client_name#fr").is_none());

    let native = json!({
        "client_uri": "https://example.com/",
        "redirect_uris": ["com.example.app:/cb", "http://127.0.0.1/cb", "http://[::1]/cb"],
        "application_type": "native",
    });
    assert_eq!(register_client(&env, &native).0, 201);

    let with = |changes: Value| {
        let mut body = good.clone();
        for (key, value) in changes.as_object().expect("object") {
            if value.is_null() {
                body.as_object_mut().expect("object").remove(key);
            } else {
                body[key] = value.clone();
            }
        }
        register_client(&env, &body)
    };
    for (changes, error) in [
        (json!({"client_uri": null}), "invalid_client_metadata"),
        (
            json!({"client_uri": "http://example.com/"}),
            "invalid_client_metadata",
        ),
        (
            json!({"client_uri": "https://user:pw@example.com/"}),
            "invalid_client_metadata",
        ),
        (
            json!({"logo_uri": "https://other.org/logo.png"}),
            "invalid_client_metadata",
        ),
        (
            json!({"tos_uri": "http://example.com/tos"}),
            "invalid_client_metadata",
        ),
        (
            json!({"policy_uri": "https://evil.org/p"}),
            "invalid_client_metadata",
        ),
        (
            json!({"application_type": "desktop"}),
            "invalid_client_metadata",
        ),
        (
            json!({"token_endpoint_auth_method": "client_secret_basic"}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": "https://example.com/cb"}),
            "invalid_client_metadata",
        ),
        (json!({"redirect_uris": []}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris": ["https://example.com/cb#frag"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["http://example.com/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["https://evil.com/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["http://localhost/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"application_type": "native", "redirect_uris": ["http://localhost:1234/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"application_type": "native", "redirect_uris": ["example:/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"application_type": "native", "redirect_uris": ["com.example.app://cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"application_type": "native", "redirect_uris": ["https://localhost/cb"]}),
            "invalid_redirect_uri",
        ),
    ] {
        let answer = with(changes.clone());
        assert_eq!(answer.1["error"], json!(error), "{changes}: {:#}", answer.1);
        assert_eq!(answer.0, 400, "{changes}");
    }
    let reply = env
        .anon()
        .request("POST", "/_outpost/oauth/register", &[], Some(b"not json"));
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (400, json!("invalid_client_metadata"))
    );
}

#[test]
fn code_flow_signs_in_a_device_that_works_everywhere() {
    let env = env();
    let client_id = web_client(&env, REDIRECT);
    let (verifier, challenge) = pkce("one");
    let mut browser = Browser::on(&env.base_url());
    let page = browser.get(&authorize_path(
        &client_id,
        REDIRECT,
        "OAUTHDEV01",
        "xyz",
        &challenge,
        &[],
    ));
    assert_eq!(page.status, 200, "{}", text(&page));
    let html = text(&page);
    assert!(
        html.contains("Test App") && html.contains("https://app.example/"),
        "{html}"
    );
    assert_eq!(html.matches("<form ").count(), 1);
    assert!(html.contains("name=\"csrf\""));
    assert!(html.contains("<label for=\"username\">") && html.contains("<label for=\"password\">"));
    let cookie = browser
        .set_cookie_headers
        .first()
        .expect("a session cookie")
        .clone();
    for flag in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
    assert!(
        page.header("content-security-policy")
            .is_some_and(|c| c.contains("frame-ancestors 'none'"))
    );

    let done = sign_in_and_allow(&mut browser, &page, "alice");
    assert_eq!(done.status, 303);
    let params = location_params(&done);
    assert_eq!(param(&params, "state").as_deref(), Some("xyz"));
    let code = param(&params, "code").expect("code");

    let (status, tokens) = exchange(&env, &client_id, &code, &verifier);
    assert_eq!(status, 200, "{tokens:#}");
    assert_eq!(tokens["token_type"], json!("Bearer"));
    assert_eq!(tokens["expires_in"], json!(300));
    assert_eq!(
        tokens["scope"],
        json!("urn:matrix:client:api:* urn:matrix:client:device:OAUTHDEV01")
    );
    let access = tokens["access_token"].as_str().expect("access_token");
    let (status, me) = whoami(&env, access);
    assert_eq!(status, 200, "{me:#}");
    assert_eq!(me["user_id"], json!("@alice:outpost.test"));
    assert_eq!(me["device_id"], json!("OAUTHDEV01"));
    let devices = env.with_token(access).get_ok("/_matrix/client/v3/devices");
    assert!(
        devices["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .any(|d| d["device_id"] == json!("OAUTHDEV01"))
    );
    let room = env.with_token(access).create_room(&json!({}));
    assert!(room.starts_with('!'));

    // A browser already signed in goes straight to consent; fragment mode puts the answer
    // in the fragment.
    let (_, challenge) = pkce("two");
    let page = browser.get(&authorize_path(
        &client_id,
        REDIRECT,
        "OAUTHDEV02",
        "s2",
        &challenge,
        &[("response_mode", "fragment")],
    ));
    assert!(text(&page).contains("value=\"allow\""), "{}", text(&page));
    let done = browser.fill(&page, &[("action", "allow")]);
    let location = done.header("location").expect("Location");
    assert!(location.starts_with(&format!("{REDIRECT}#")), "{location}");
    assert!(location.contains("state=s2") && location.contains("code="));
}

#[test]
fn authorization_endpoint_refuses_without_open_redirects() {
    let env = env();
    let client_id = web_client(&env, REDIRECT);
    let (_, challenge) = pkce("x");
    let mut browser = Browser::on(&env.base_url());
    // Unknown client and unregistered redirect URIs: an error page, never a redirect.
    for path in [
        authorize_path("nope", REDIRECT, "D1", "s", &challenge, &[]),
        authorize_path(
            &client_id,
            "https://evil.example/cb",
            "D1",
            "s",
            &challenge,
            &[],
        ),
        authorize_path(
            &client_id,
            "https://app.example/callback/../x",
            "D1",
            "s",
            &challenge,
            &[],
        ),
        authorize_path(
            &client_id,
            "https://app.example/callbackx",
            "D1",
            "s",
            &challenge,
            &[],
        ),
    ] {
        let reply = browser.get(&path);
        assert_eq!(reply.status, 400, "{path}");
        assert!(reply.header("location").is_none(), "{path}");
    }
    // Everything else is answered at the redirect URI, with the state.
    let check = |browser: &mut Browser, path: String, error: &str| {
        let reply = browser.get(&path);
        assert_eq!(reply.status, 303, "{path}: {}", text(&reply));
        let params = location_params(&reply);
        assert_eq!(param(&params, "error").as_deref(), Some(error), "{path}");
        assert_eq!(param(&params, "state").as_deref(), Some("s"), "{path}");
    };
    check(
        &mut browser,
        authorize_path(&client_id, REDIRECT, "D1", "s", &challenge, &[])
            .replace("code_challenge_method=S256", "code_challenge_method=plain"),
        "invalid_request",
    );
    let no_challenge = format!(
        "/_outpost/oauth/authorize?response_type=code&client_id={client_id}&redirect_uri={}&scope={}&state=s",
        tests::enc(REDIRECT),
        tests::enc("urn:matrix:client:api:* urn:matrix:client:device:D1"),
    );
    check(&mut browser, no_challenge, "invalid_request");
    check(
        &mut browser,
        authorize_path(&client_id, REDIRECT, "D1", "s", &challenge, &[])
            .replace("response_type=code", "response_type=token"),
        "unsupported_response_type",
    );
    check(
        &mut browser,
        authorize_path(&client_id, REDIRECT, "bad/device", "s", &challenge, &[]),
        "invalid_scope",
    );

    // Deny: access_denied with the state.
    let page = browser.get(&authorize_path(
        &client_id,
        REDIRECT,
        "D2",
        "s",
        &challenge,
        &[],
    ));
    let after = browser.fill(
        &page,
        &[
            ("username", "alice"),
            ("password", &tests::password_for("alice")),
        ],
    );
    let consent = browser.follow_once(&after);
    let denied = browser.fill(&consent, &[("action", "deny")]);
    let params = location_params(&denied);
    assert_eq!(param(&params, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&params, "state").as_deref(), Some("s"));
}

#[test]
fn forms_need_the_session_and_its_csrf_token() {
    let env = env();
    let client_id = web_client(&env, REDIRECT);
    let (_, challenge) = pkce("c");
    let mut browser = Browser::on(&env.base_url());
    let page = browser.get(&authorize_path(
        &client_id,
        REDIRECT,
        "D1",
        "s",
        &challenge,
        &[],
    ));
    let request = page
        .post_form()
        .input("request")
        .expect("request")
        .value
        .clone();
    let password = tests::password_for("alice");
    // A forged form (wrong CSRF token) signs nobody in.
    let forged = browser.post_body(
        "/_outpost/oauth/login",
        &tests::oauth::form(&[
            ("csrf", "forged"),
            ("request", &request),
            ("username", "alice"),
            ("password", &password),
        ]),
    );
    assert_eq!(forged.status, 400, "{}", text(&forged));
    assert!(forged.header("location").is_none());
    // Another browser (no cookie) cannot use this one's request either.
    let mut other = Browser::on(&env.base_url());
    let stolen = other.fill(&page, &[("username", "alice"), ("password", &password)]);
    assert_eq!(stolen.status, 400, "{}", text(&stolen));
    // A wrong password shows the form again with 401; guessing meets `/login`'s back-off
    // (429, the form again, nobody signed in) once the free failures are spent.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let wrong = browser.fill(&page, &[("username", "alice"), ("password", "nope")]);
        assert!(text(&wrong).contains("role=\"alert\""), "{}", text(&wrong));
        assert!(wrong.header("location").is_none());
        statuses.push(wrong.status);
        if wrong.status == 429 {
            break;
        }
    }
    assert_eq!(&statuses[..3], [401, 401, 401]);
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
}

#[test]
fn token_endpoint_errors() {
    let env = env();
    let client_id = web_client(&env, REDIRECT);
    let other_client = web_client(&env, REDIRECT);
    let token = "/_outpost/oauth/token";
    oauth_error(
        &post_form(&env, token, &[("client_id", &client_id)]),
        400,
        "invalid_request",
    );
    oauth_error(
        &post_form(
            &env,
            token,
            &[("grant_type", "password"), ("client_id", &client_id)],
        ),
        400,
        "unsupported_grant_type",
    );
    oauth_error(
        &post_form(
            &env,
            token,
            &[("grant_type", "authorization_code"), ("client_id", "nope")],
        ),
        401,
        "invalid_client",
    );
    oauth_error(
        &post_form(
            &env,
            token,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", &client_id),
            ],
        ),
        400,
        "invalid_request",
    );
    let reply = env.anon().request(
        "POST",
        token,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(b"grant_type=refresh_token&grant_type=authorization_code"),
    );
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (400, json!("invalid_request"))
    );
    oauth_error(
        &exchange(&env, &client_id, "unknown-code", &pkce("u").0),
        400,
        "invalid_grant",
    );

    // PKCE mismatch: refused, and the code is burnt.
    let (code, verifier) = code_for(&env, &client_id, "PKCEDEV");
    oauth_error(
        &exchange(&env, &client_id, &code, &pkce("other").0),
        400,
        "invalid_grant",
    );
    oauth_error(
        &exchange(&env, &client_id, &code, &verifier),
        400,
        "invalid_grant",
    );

    // Another client's code.
    let (code, verifier) = code_for(&env, &client_id, "MIXDEV");
    oauth_error(
        &exchange(&env, &other_client, &code, &verifier),
        400,
        "invalid_grant",
    );

    // A different redirect URI than the request's.
    let (code, verifier) = code_for(&env, &client_id, "REDIRDEV");
    let answer = post_form(
        &env,
        token,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://app.example/other"),
            ("client_id", &client_id),
            ("code_verifier", &verifier),
        ],
    );
    oauth_error(&answer, 400, "invalid_grant");

    // An expired code.
    let (code, verifier) = code_for(&env, &client_id, "OLDDEV");
    let db = rusqlite::Connection::open(env.db_path()).expect("db");
    db.busy_timeout(std::time::Duration::from_secs(10))
        .expect("timeout");
    db.execute(
        "UPDATE oauth_codes SET expires_ts = 0 WHERE used_ts IS NULL",
        [],
    )
    .expect("expire codes");
    oauth_error(
        &exchange(&env, &client_id, &code, &verifier),
        400,
        "invalid_grant",
    );

    // Reuse: the second exchange fails and revokes what the first issued.
    let (code, verifier) = code_for(&env, &client_id, "REUSEDEV");
    let (status, tokens) = exchange(&env, &client_id, &code, &verifier);
    assert_eq!(status, 200, "{tokens:#}");
    let access = tokens["access_token"].as_str().expect("access");
    assert_eq!(whoami(&env, access).0, 200);
    oauth_error(
        &exchange(&env, &client_id, &code, &verifier),
        400,
        "invalid_grant",
    );
    let (status, body) = whoami(&env, access);
    assert_eq!(
        (status, body["errcode"].clone()),
        (401, json!("M_UNKNOWN_TOKEN"))
    );
}

fn refresh(env: &TestEnv, client_id: &str, token: &str) -> (u16, Value) {
    post_form(
        env,
        "/_outpost/oauth/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", client_id),
        ],
    )
}

#[test]
fn refresh_rotates_and_reuse_revokes_the_session() {
    let env = env();
    let client_id = web_client(&env, REDIRECT);
    let other_client = web_client(&env, REDIRECT);
    let (code, verifier) = code_for(&env, &client_id, "ROTDEV");
    let first = exchange(&env, &client_id, &code, &verifier).1;
    let r1 = first["refresh_token"].as_str().expect("r1").to_owned();

    oauth_error(&refresh(&env, &other_client, &r1), 400, "invalid_grant");
    oauth_error(
        &refresh(&env, &client_id, "opr_unknown"),
        400,
        "invalid_grant",
    );

    // The legacy /refresh does not take an OAuth session's token (and leaves it usable).
    let (status, body) = env
        .anon()
        .post("/_matrix/client/v3/refresh", &json!({"refresh_token": r1}));
    assert_eq!(
        (status, body["errcode"].clone()),
        (401, json!("M_UNKNOWN_TOKEN")),
        "{body:#}"
    );

    let (status, second) = refresh(&env, &client_id, &r1);
    assert_eq!(status, 200, "{second:#}");
    let r2 = second["refresh_token"].as_str().expect("r2").to_owned();
    assert_ne!(r1, r2, "the refresh token rotates");
    assert_eq!(
        whoami(&env, first["access_token"].as_str().expect("a1")).0,
        401
    );
    // A retry of the same swap (its answer lost; r2 never used) is served again.
    let (status, retried) = refresh(&env, &client_id, &r1);
    assert_eq!(status, 200, "{retried:#}");
    let r2b = retried["refresh_token"].as_str().expect("r2b").to_owned();
    let (status, third) = refresh(&env, &client_id, &r2b);
    assert_eq!(status, 200, "{third:#}");
    let a3 = third["access_token"].as_str().expect("a3").to_owned();
    assert_eq!(whoami(&env, &a3).1["device_id"], json!("ROTDEV"));
    // r1's successor has now been used: r1 again is reuse, and the session ends.
    oauth_error(&refresh(&env, &client_id, &r1), 400, "invalid_grant");
    assert_eq!(whoami(&env, &a3).0, 401);
    let r3 = third["refresh_token"].as_str().expect("r3");
    oauth_error(&refresh(&env, &client_id, r3), 400, "invalid_grant");

    // A legacy login's refresh token is not an OAuth session's.
    let (status, legacy) = env.anon().post(
        "/_matrix/client/v3/login",
        &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                "password": tests::password_for("alice"), "refresh_token": true}),
    );
    assert_eq!(status, 200);
    let legacy_refresh = legacy["refresh_token"].as_str().expect("legacy refresh");
    oauth_error(
        &refresh(&env, &client_id, legacy_refresh),
        400,
        "invalid_grant",
    );
}

#[test]
fn revocation_logs_the_device_out() {
    let env = env();
    let client_id = web_client(&env, REDIRECT);
    let revoke = "/_outpost/oauth/revoke";
    oauth_error(
        &post_form(&env, revoke, &[("client_id", &client_id)]),
        400,
        "invalid_request",
    );
    let (status, _) = post_form(&env, revoke, &[("token", "opa_unknown")]);
    assert_eq!(status, 200, "an unknown token is already revoked");

    let (code, verifier) = code_for(&env, &client_id, "REVDEV");
    let tokens = exchange(&env, &client_id, &code, &verifier).1;
    let access = tokens["access_token"].as_str().expect("access");
    let refresh_token = tokens["refresh_token"].as_str().expect("refresh");
    let (status, _) = post_form(
        &env,
        revoke,
        &[
            ("token", access),
            ("token_type_hint", "access_token"),
            ("client_id", &client_id),
        ],
    );
    assert_eq!(status, 200);
    assert_eq!(whoami(&env, access).0, 401);
    oauth_error(
        &refresh(&env, &client_id, refresh_token),
        400,
        "invalid_grant",
    );
    let alice = env.login("alice");
    let devices = alice.get_ok("/_matrix/client/v3/devices");
    assert!(
        !devices["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .any(|d| d["device_id"] == json!("REVDEV"))
    );

    // Revoking by refresh token works too.
    let (code, verifier) = code_for(&env, &client_id, "REVDEV2");
    let tokens = exchange(&env, &client_id, &code, &verifier).1;
    let (status, _) = post_form(
        &env,
        revoke,
        &[("token", tokens["refresh_token"].as_str().expect("refresh"))],
    );
    assert_eq!(status, 200);
    assert_eq!(
        whoami(&env, tokens["access_token"].as_str().expect("a")).0,
        401
    );
}

#[test]
fn prompt_create_makes_an_account_and_signs_it_in() {
    let env = env();
    let client_id = web_client(&env, REDIRECT);
    let (verifier, challenge) = pkce("create");
    let mut browser = Browser::on(&env.base_url());
    let page = browser.get(&authorize_path(
        &client_id,
        REDIRECT,
        "NEWDEV",
        "s",
        &challenge,
        &[("prompt", "create")],
    ));
    let html = text(&page);
    assert_eq!(page.status, 200, "{html}");
    for field in ["username", "password", "password_confirm"] {
        assert!(
            html.contains(&format!("<label for=\"{field}\">")),
            "{field}: {html}"
        );
    }
    let mismatch = browser.fill(
        &page,
        &[
            ("username", "bob"),
            ("password", "pw-One-1"),
            ("password_confirm", "pw-Two-2"),
        ],
    );
    assert_eq!(mismatch.status, 400, "{}", text(&mismatch));
    let taken = browser.fill(
        &page,
        &[
            ("username", "alice"),
            ("password", "pw-One-1"),
            ("password_confirm", "pw-One-1"),
        ],
    );
    assert_eq!(taken.status, 409, "{}", text(&taken));
    let created = browser.fill(
        &page,
        &[
            ("username", "bob"),
            ("password", "pw-One-1"),
            ("password_confirm", "pw-One-1"),
        ],
    );
    let consent = browser.follow_once(&created);
    assert!(
        text(&consent).contains("@bob:outpost.test"),
        "{}",
        text(&consent)
    );
    let done = browser.fill(&consent, &[("action", "allow")]);
    let code = param(&location_params(&done), "code").expect("code");
    let tokens = exchange(&env, &client_id, &code, &verifier).1;
    let (status, me) = whoami(&env, tokens["access_token"].as_str().expect("access"));
    assert_eq!(
        (status, me["user_id"].clone()),
        (200, json!("@bob:outpost.test"))
    );
}

#[test]
fn legacy_login_off_leaves_only_oauth() {
    let env = TestEnv::with_config(
        "[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n\n[auth]\nlegacy_login = false\n",
    );
    let flows = env.anon().get_ok("/_matrix/client/v3/login");
    assert!(
        !flows["flows"]
            .as_array()
            .expect("flows")
            .iter()
            .any(|f| f["type"] == json!("m.login.password")),
        "{flows:#}"
    );
    let (status, body) = env.anon().post(
        "/_matrix/client/v3/login",
        &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "x"},
                "password": "y"}),
    );
    assert_eq!(
        (status, body["errcode"].clone()),
        (400, json!("M_UNKNOWN")),
        "{body:#}"
    );
    let (status, body) = env.anon().post(
        "/_matrix/client/v3/register",
        &json!({"username": "x", "password": "y", "auth": {"type": "m.login.dummy"}}),
    );
    assert_eq!(
        (status, body["errcode"].clone()),
        (403, json!("M_FORBIDDEN")),
        "{body:#}"
    );
    // OAuth still signs people in.
    let metadata = env.anon().get_ok("/_matrix/client/v1/auth_metadata");
    assert_eq!(metadata["prompt_values_supported"], json!(["create"]));
}

fn device_start(env: &TestEnv, client_id: &str, device: &str) -> Value {
    let scope = format!("urn:matrix:client:api:* urn:matrix:client:device:{device}");
    let (status, body) = post_form(
        env,
        "/_outpost/oauth/device",
        &[("client_id", client_id), ("scope", &scope)],
    );
    assert_eq!(status, 200, "{body:#}");
    body
}

fn device_poll(env: &TestEnv, client_id: &str, device_code: &str) -> (u16, Value) {
    post_form(
        env,
        "/_outpost/oauth/token",
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
            ("client_id", client_id),
        ],
    )
}

/// Polls as the device would (at the server's interval) until the answer is not pending.
fn device_outcome(
    env: &TestEnv,
    client_id: &str,
    device_code: &str,
    interval: u64,
) -> (u16, Value) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let answer = device_poll(env, client_id, device_code);
        if answer.1["error"] != json!("authorization_pending") {
            return answer;
        }
        assert!(std::time::Instant::now() < deadline, "still pending");
        std::thread::sleep(std::time::Duration::from_secs(interval));
    }
}

#[test]
fn device_grant_signs_in_through_the_verification_page() {
    let env = env();
    let client_id = web_client(&env, REDIRECT);
    let start = device_start(&env, &client_id, "TVDEVICE");
    let device_code = start["device_code"]
        .as_str()
        .expect("device_code")
        .to_owned();
    let user_code = start["user_code"].as_str().expect("user_code").to_owned();
    let interval = start["interval"].as_u64().expect("interval");
    let verification = start["verification_uri"]
        .as_str()
        .expect("verification_uri");
    assert_eq!(
        verification,
        format!("{}/_outpost/oauth/link", env.base_url())
    );
    assert!(
        start["verification_uri_complete"]
            .as_str()
            .is_some_and(|u| u.contains(&user_code))
    );
    oauth_error(
        &device_poll(&env, &client_id, &device_code),
        400,
        "authorization_pending",
    );
    oauth_error(
        &device_poll(&env, &client_id, &device_code),
        400,
        "slow_down",
    );
    oauth_error(
        &device_poll(&env, &client_id, "unknown"),
        400,
        "invalid_grant",
    );
    oauth_error(
        &post_form(
            &env,
            "/_outpost/oauth/device",
            &[("client_id", &client_id), ("scope", "openid")],
        ),
        400,
        "invalid_scope",
    );

    let mut browser = Browser::on(&env.base_url());
    let page = browser.get(verification);
    assert!(text(&page).contains("<label for=\"user_code\">"));
    let wrong = browser.fill(&page, &[("user_code", "BBBB-CCCC")]);
    assert_eq!(wrong.status, 400, "{}", text(&wrong));
    let typed = browser.fill(&page, &[("user_code", &user_code.to_lowercase())]);
    let sign_in = browser.follow_once(&typed);
    let done = sign_in_and_allow(&mut browser, &sign_in, "alice");
    assert_eq!(done.status, 200, "{}", text(&done));

    let (status, tokens) = device_outcome(&env, &client_id, &device_code, interval);
    assert_eq!(status, 200, "{tokens:#}");
    let (status, me) = whoami(&env, tokens["access_token"].as_str().expect("access"));
    assert_eq!((status, me["device_id"].clone()), (200, json!("TVDEVICE")));
    oauth_error(
        &device_poll(&env, &client_id, &device_code),
        400,
        "invalid_grant",
    );

    // Refused on the page: access_denied.
    let start = device_start(&env, &client_id, "TVDEVICE2");
    let device_code = start["device_code"].as_str().expect("device_code");
    let complete = start["verification_uri_complete"]
        .as_str()
        .expect("complete");
    let page = browser.get(complete);
    let shown = start["user_code"].as_str().expect("user_code");
    assert!(
        text(&page).contains(shown),
        "the complete URI fills the code in"
    );
    let typed = browser.fill(&page, &[("user_code", shown)]);
    let consent = browser.follow_once(&typed);
    let refused = browser.fill(&consent, &[("action", "deny")]);
    assert_eq!(refused.status, 200);
    oauth_error(
        &device_outcome(&env, &client_id, device_code, interval),
        400,
        "access_denied",
    );
}

#[test]
fn account_page_lists_and_ends_sessions() {
    let env = env();
    let metadata = env.anon().get_ok("/_matrix/client/v1/auth_metadata");
    let account_uri = metadata["account_management_uri"]
        .as_str()
        .expect("account uri");
    assert_eq!(account_uri, format!("{}/_outpost/account", env.base_url()));
    let actions = metadata["account_management_actions_supported"]
        .as_array()
        .expect("actions");
    for action in [
        "org.matrix.devices_list",
        "org.matrix.device_delete",
        "org.matrix.account_deactivate",
    ] {
        assert!(actions.contains(&json!(action)), "{action}");
    }
    let client_id = web_client(&env, REDIRECT);
    let (code, verifier) = code_for(&env, &client_id, "PAGEDEV");
    let tokens = exchange(&env, &client_id, &code, &verifier).1;
    let access = tokens["access_token"].as_str().expect("access");

    // Signed out, the page signs in first and comes back.
    let mut browser = Browser::on(&env.base_url());
    let page = browser.get(&format!(
        "{account_uri}?action=org.matrix.device_delete&device_id=PAGEDEV"
    ));
    let after = browser.fill(
        &page,
        &[
            ("username", "alice"),
            ("password", &tests::password_for("alice")),
        ],
    );
    let back = browser.follow_once(&after);
    assert_eq!(back.status, 303, "{}", text(&back));
    let account = browser.follow_once(&back);
    let html = text(&account);
    assert_eq!(account.status, 200, "{html}");
    assert!(
        html.contains("@alice:outpost.test") && html.contains("PAGEDEV"),
        "{html}"
    );
    // The form of the device PAGEDEV: find it and post it.
    let start = html.find("value=\"PAGEDEV\"").expect("the device's form");
    let form_start = html[..start].rfind("<form ").expect("form start");
    let form = tests::html::forms(&html[form_start..]).remove(0);
    let ended = browser.submit(&account, &form, &[]);
    assert_eq!(ended.status, 303, "{}", text(&ended));
    assert_eq!(whoami(&env, access).0, 401, "the device is signed out");

    // The profile form sets the display name.
    let account = browser.get("/_outpost/account?action=org.matrix.profile");
    let html = text(&account);
    let start = html
        .find("action=\"/_outpost/account/profile\"")
        .expect("profile form");
    let form_start = html[..start].rfind("<form ").expect("form start");
    let form = tests::html::forms(&html[form_start..]).remove(0);
    let saved = browser.submit(&account, &form, &[("displayname", "Alice <A>")]);
    assert_eq!(saved.status, 303, "{}", text(&saved));
    let profile = env
        .login("alice")
        .get_ok("/_matrix/client/v3/profile/%40alice%3Aoutpost.test");
    assert_eq!(profile["displayname"], json!("Alice <A>"));
    assert!(text(&browser.get("/_outpost/account")).contains("value=\"Alice &lt;A&gt;\""));

    // A forged post (no CSRF token) changes nothing.
    let forged = browser.post_body(
        "/_outpost/account/password",
        "current_password=x&password=y&password_confirm=y",
    );
    assert_eq!(forged.status, 400);
}

#[test]
fn admin_socket_lists_clients_and_revokes_a_users_sessions() {
    let env = env();
    let client_id = web_client(&env, REDIRECT);
    let (code, verifier) = code_for(&env, &client_id, "ADMDEV");
    let tokens = exchange(&env, &client_id, &code, &verifier).1;
    let access = tokens["access_token"].as_str().expect("access");
    let legacy = env.login("alice");

    let (head, body) = tests::admin_get(&env.data_dir(), "/v1/oauth/clients");
    assert!(head.contains(" 200 "), "{head}\n{body}");
    let list: Value = serde_json::from_str(&body).expect("json");
    let entry = list["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .find(|c| c["client_id"] == json!(client_id))
        .expect("our client")
        .clone();
    assert_eq!(entry["client_name"], json!("Test App"));
    assert_eq!(entry["sessions"], json!(1));

    let (head, body) = tests::admin_post(&env.data_dir(), "/v1/users/alice/oauth/revoke", "{}");
    assert!(head.contains(" 200 "), "{head}\n{body}");
    let revoked: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(revoked["devices"], json!(["ADMDEV"]));
    assert_eq!(whoami(&env, access).0, 401);
    assert_eq!(
        legacy.get("/_matrix/client/v3/account/whoami").0,
        200,
        "legacy sessions stay"
    );
}

#[test]
fn appliance_lists_clients_and_revokes_sessions() {
    use tests::appliance::{STRONG_PASSWORD, Unit};
    let mut unit = Unit::new();
    unit.setup("unit-a.test");
    unit.start();
    let anon = unit.client();
    let client_id = tests::oauth::web_client_of(&anon, REDIRECT);
    let (verifier, challenge) = pkce("cli");
    let mut browser = Browser::on(&unit.client_url());
    let page = browser.get(&authorize_path(
        &client_id,
        REDIRECT,
        "CLIDEV",
        "s",
        &challenge,
        &[],
    ));
    let done = tests::oauth::sign_in_with(&mut browser, &page, "admin", STRONG_PASSWORD);
    let code = param(&location_params(&done), "code").expect("code");
    let (status, tokens) = tests::oauth::post_form_of(
        &anon,
        "/_outpost/oauth/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &client_id),
            ("code_verifier", &verifier),
        ],
    );
    assert_eq!(status, 200, "{tokens:#}");
    let access = tokens["access_token"].as_str().expect("access");

    let list = unit
        .appliance(&["oauth", "clients", "--json"])
        .ok("oauth clients")
        .json();
    assert_eq!(
        list["clients"][0]["client_id"],
        json!(client_id),
        "{list:#}"
    );
    assert_eq!(list["clients"][0]["sessions"], json!(1));
    let text = unit
        .appliance(&["oauth", "clients"])
        .ok("oauth clients")
        .stdout
        .clone();
    assert!(
        text.contains("Test App") && text.contains("1 open session"),
        "{text}"
    );

    let out = unit
        .appliance(&["oauth", "revoke", "admin"])
        .ok("oauth revoke")
        .stdout
        .clone();
    assert!(out.contains("CLIDEV"), "{out}");
    let (status, _) = anon
        .with_token(Some(access))
        .get("/_matrix/client/v3/account/whoami");
    assert_eq!(status, 401);
    unit.appliance(&["oauth", "revoke", "nobody"])
        .expect(3, "unknown user");
}
