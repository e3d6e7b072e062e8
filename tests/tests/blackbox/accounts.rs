//! Accounts: registration (UIA, name checks, `inhibit_login`, registration tokens, registration
//! disabled), login and logout, `whoami`, password change, deactivation, refresh tokens.

use tests::{Client, TestEnv, Value, assert_error, json, ok, password_for, str_field};

const REGISTER: &str = "/_matrix/client/v3/register";
const LOGIN: &str = "/_matrix/client/v3/login";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

fn password_login(localpart_or_id: &str, password: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": localpart_or_id },
        "password": password,
    })
}

/// Asserts a UIA 401 and returns its session ID and the stage lists of its flows.
fn uia_challenge(reply: &(u16, Value)) -> (String, Vec<Vec<String>>) {
    let (status, body) = reply;
    assert_eq!(*status, 401, "expected a UIA challenge: {body:#}");
    let flows = body["flows"]
        .as_array()
        .unwrap_or_else(|| panic!("UIA challenge without flows: {body:#}"))
        .iter()
        .map(|flow| {
            flow["stages"]
                .as_array()
                .unwrap_or_else(|| panic!("flow without stages: {body:#}"))
                .iter()
                .map(|stage| stage.as_str().expect("stage names are strings").to_owned())
                .collect()
        })
        .collect();
    (str_field(body, "session"), flows)
}

fn whoami(client: &Client) -> (u16, Value) {
    client.get(WHOAMI)
}

#[test]
fn register_walks_the_dummy_uia_flow() {
    let env = TestEnv::dev();
    let anon = env.anon();
    let request = json!({ "username": "carol", "password": password_for("carol") });
    let (session, flows) = uia_challenge(&anon.post(REGISTER, &request));
    assert!(
        flows.contains(&vec!["m.login.dummy".to_owned()]),
        "open registration offers the dummy flow: {flows:?}"
    );

    let mut complete = request.clone();
    complete["auth"] = json!({ "type": "m.login.dummy", "session": session });
    let body = ok(anon.post(REGISTER, &complete), "register with dummy auth");
    assert_eq!(body["user_id"], "@carol:outpost.test");
    let carol = env.client_from_login(&body);
    let me = ok(whoami(&carol), "whoami");
    assert_eq!(me["user_id"], "@carol:outpost.test");
    assert_eq!(me["device_id"], carol.device_id.as_str());
}

#[test]
fn register_rejects_taken_and_invalid_names() {
    let env = TestEnv::dev();
    env.register("alice");
    let anon = env.anon();
    let attempt = |name: &str| {
        anon.post(
            REGISTER,
            &json!({
                "username": name,
                "password": "whatever-123",
                "auth": { "type": "m.login.dummy" },
            }),
        )
    };
    assert_error(&attempt("alice"), 400, "M_USER_IN_USE");
    assert_error(&attempt("bad name!"), 400, "M_INVALID_USERNAME");
    assert_error(&attempt("@alice:outpost.test"), 400, "M_INVALID_USERNAME");

    let available = |name: &str| {
        anon.get(&format!(
            "/_matrix/client/v3/register/available?username={}",
            tests::enc(name)
        ))
    };
    assert_eq!(ok(available("bob"), "available bob")["available"], true);
    assert_error(&available("alice"), 400, "M_USER_IN_USE");
    assert_error(&available("no spaces"), 400, "M_INVALID_USERNAME");
}

#[test]
fn register_honours_device_id_and_inhibit_login() {
    let env = TestEnv::dev();
    let anon = env.anon();
    let body = ok(
        anon.post(
            REGISTER,
            &json!({
                "username": "dora",
                "password": password_for("dora"),
                "device_id": "DORAPHONE",
                "initial_device_display_name": "Dora's phone",
                "auth": { "type": "m.login.dummy" },
            }),
        ),
        "register dora",
    );
    assert_eq!(body["device_id"], "DORAPHONE");

    let body = ok(
        anon.post(
            REGISTER,
            &json!({
                "username": "erin",
                "password": password_for("erin"),
                "inhibit_login": true,
                "auth": { "type": "m.login.dummy" },
            }),
        ),
        "register erin without login",
    );
    assert_eq!(body["user_id"], "@erin:outpost.test");
    assert!(
        body.get("access_token").is_none(),
        "inhibit_login returns no token: {body:#}"
    );
    let erin = env.login("erin");
    assert_eq!(ok(whoami(&erin), "whoami")["user_id"], "@erin:outpost.test");
}

#[test]
fn password_login_and_its_failures() {
    let env = TestEnv::dev();
    env.register("alice");
    let anon = env.anon();
    let flows = ok(anon.get(LOGIN), "GET /login");
    assert!(
        flows["flows"]
            .as_array()
            .expect("flows array")
            .iter()
            .any(|flow| flow["type"] == "m.login.password"),
        "password login is offered: {flows:#}"
    );

    let by_localpart = env.client_from_login(&ok(
        anon.post(LOGIN, &password_login("alice", &password_for("alice"))),
        "login by localpart",
    ));
    assert_eq!(
        ok(whoami(&by_localpart), "whoami")["user_id"],
        "@alice:outpost.test"
    );

    let mut with_device = password_login("@alice:outpost.test", &password_for("alice"));
    with_device["device_id"] = json!("LAPTOP");
    let body = ok(
        anon.post(LOGIN, &with_device),
        "login by user ID with device_id",
    );
    assert_eq!(body["device_id"], "LAPTOP");
    assert_eq!(body["user_id"], "@alice:outpost.test");
    assert_ne!(
        body["access_token"],
        by_localpart.access_token.as_deref().unwrap_or_default()
    );

    assert_error(
        &anon.post(LOGIN, &password_login("alice", "wrong-password")),
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &anon.post(LOGIN, &password_login("nobody", "wrong-password")),
        403,
        "M_FORBIDDEN",
    );
}

#[test]
fn logout_revokes_only_that_device() {
    let env = TestEnv::dev();
    let first = env.register("alice");
    let second = env.login("alice");
    assert_ne!(first.device_id, second.device_id);

    ok(
        first.post("/_matrix/client/v3/logout", &json!({})),
        "logout",
    );
    assert_error(&whoami(&first), 401, "M_UNKNOWN_TOKEN");
    assert_eq!(
        ok(whoami(&second), "second device")["device_id"],
        second.device_id.as_str()
    );
}

#[test]
fn logout_all_revokes_every_device() {
    let env = TestEnv::dev();
    let first = env.register("alice");
    let second = env.login("alice");
    ok(
        second.post("/_matrix/client/v3/logout/all", &json!({})),
        "logout/all",
    );
    assert_error(&whoami(&first), 401, "M_UNKNOWN_TOKEN");
    assert_error(&whoami(&second), 401, "M_UNKNOWN_TOKEN");
    let third = env.login("alice");
    ok(whoami(&third), "a fresh login after logout/all");
}

#[test]
fn password_change_needs_the_old_password_and_logs_out_other_devices() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let other = env.login("alice");
    let path = "/_matrix/client/v3/account/password";
    let new_password = "brand-New-pass-2";

    let (session, flows) =
        uia_challenge(&alice.post(path, &json!({ "new_password": new_password })));
    assert!(
        flows
            .iter()
            .any(|flow| flow.contains(&"m.login.password".to_owned())),
        "password change is guarded by m.login.password: {flows:?}"
    );
    let auth = |password: &str| {
        json!({
            "new_password": new_password,
            "auth": {
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "alice" },
                "password": password,
                "session": session,
            },
        })
    };
    let wrong = alice.post(path, &auth("not-my-password"));
    assert_eq!(
        wrong.0, 401,
        "a failed UIA stage answers 401: {:#}",
        wrong.1
    );
    assert_eq!(wrong.1["errcode"], "M_FORBIDDEN", "{:#}", wrong.1);

    ok(
        alice.post(path, &auth(&password_for("alice"))),
        "password change",
    );
    let anon = env.anon();
    assert_error(
        &anon.post(LOGIN, &password_login("alice", &password_for("alice"))),
        403,
        "M_FORBIDDEN",
    );
    ok(
        anon.post(LOGIN, &password_login("alice", new_password)),
        "login with the new password",
    );
    ok(
        whoami(&alice),
        "the device that changed the password stays logged in",
    );
    assert_error(&whoami(&other), 401, "M_UNKNOWN_TOKEN");
}

#[test]
fn deactivation_revokes_tokens_and_retires_the_name() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let path = "/_matrix/client/v3/account/deactivate";
    let (session, _) = uia_challenge(&alice.post(path, &json!({})));
    let body = ok(
        alice.post(
            path,
            &json!({
                "auth": {
                    "type": "m.login.password",
                    "identifier": { "type": "m.id.user", "user": "alice" },
                    "password": password_for("alice"),
                    "session": session,
                },
            }),
        ),
        "deactivate",
    );
    assert!(body["id_server_unbind_result"].is_string(), "{body:#}");

    assert_error(&whoami(&alice), 401, "M_UNKNOWN_TOKEN");
    let login = env
        .anon()
        .post(LOGIN, &password_login("alice", &password_for("alice")));
    assert_eq!(
        login.0, 403,
        "a deactivated user cannot log in: {:#}",
        login.1
    );
    assert_error(
        &env.anon()
            .get("/_matrix/client/v3/register/available?username=alice"),
        400,
        "M_USER_IN_USE",
    );
}

#[test]
fn refresh_tokens_rotate() {
    let env = TestEnv::dev();
    let body = ok(
        env.anon().post(
            REGISTER,
            &json!({
                "username": "alice",
                "password": password_for("alice"),
                "refresh_token": true,
                "auth": { "type": "m.login.dummy" },
            }),
        ),
        "register with refresh_token",
    );
    let alice = env.client_from_login(&body);
    let old_refresh = alice
        .refresh_token
        .clone()
        .unwrap_or_else(|| panic!("refresh_token requested but not returned: {body:#}"));
    assert!(
        body["expires_in_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{body:#}"
    );

    let refresh = |token: &str| {
        env.anon().post(
            "/_matrix/client/v3/refresh",
            &json!({ "refresh_token": token }),
        )
    };
    let refreshed = ok(refresh(&old_refresh), "refresh");
    let new_token = str_field(&refreshed, "access_token");
    assert_ne!(Some(new_token.as_str()), alice.access_token.as_deref());
    let renewed = alice.with_token(Some(&new_token));
    let me = ok(whoami(&renewed), "whoami with the refreshed token");
    assert_eq!(me["user_id"], "@alice:outpost.test");
    assert_eq!(me["device_id"], alice.device_id.as_str());

    if refreshed.get("refresh_token").is_some() {
        // The new access token has been used, so the old refresh token is revoked.
        assert_error(&refresh(&old_refresh), 401, "M_UNKNOWN_TOKEN");
    }
    assert_error(&refresh("not-a-refresh-token"), 401, "M_UNKNOWN_TOKEN");
}

#[test]
fn registration_tokens_gate_registration() {
    let env = TestEnv::with_config(
        "[registration]\nenabled = true\ntokens = [\"letmein-123\"]\n\n[rate_limit]\nenabled = false\n",
    );
    let anon = env.anon();
    let request = json!({ "username": "tess", "password": password_for("tess") });
    let (session, flows) = uia_challenge(&anon.post(REGISTER, &request));
    assert!(
        flows
            .iter()
            .all(|flow| flow.contains(&"m.login.registration_token".to_owned())),
        "every flow must need the token: {flows:?}"
    );

    let mut dummy_only = request.clone();
    dummy_only["auth"] = json!({ "type": "m.login.dummy", "session": session });
    assert_eq!(
        anon.post(REGISTER, &dummy_only).0,
        401,
        "the dummy stage alone is not enough"
    );

    let stage = |auth: Value| {
        let mut body = request.clone();
        body["auth"] = auth;
        anon.post(REGISTER, &body)
    };
    let wrong = stage(json!({
        "type": "m.login.registration_token", "token": "guess", "session": session,
    }));
    assert_eq!(wrong.0, 401, "{:#}", wrong.1);
    assert_eq!(wrong.1["errcode"], "M_FORBIDDEN", "{:#}", wrong.1);

    let mut reply = stage(json!({
        "type": "m.login.registration_token", "token": "letmein-123", "session": session,
    }));
    // Finish any remaining stages of the flow (e.g. a trailing m.login.dummy).
    for _ in 0..3 {
        if reply.0 != 401 {
            break;
        }
        reply = stage(json!({ "type": "m.login.dummy", "session": session }));
    }
    let body = ok(reply, "register with the right token");
    assert_eq!(body["user_id"], "@tess:outpost.test");
}

#[test]
fn registration_disabled_by_config() {
    let env = TestEnv::with_config("[registration]\nenabled = false\n");
    let anon = env.anon();
    for body in [
        json!({ "username": "mallory", "password": "whatever-123" }),
        json!({
            "username": "mallory",
            "password": "whatever-123",
            "auth": { "type": "m.login.dummy" },
        }),
    ] {
        assert_error(&anon.post(REGISTER, &body), 403, "M_FORBIDDEN");
    }
    ok(anon.get(LOGIN), "login flows are still served");
}
