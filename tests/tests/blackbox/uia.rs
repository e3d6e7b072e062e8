//! User-interactive authentication: a session authorises only the operation it was started for
//! (the same user, endpoint and request), a failed stage answers the whole UIA state with the
//! stage's error, and registration remembers its first request and replays a completed session
//! as the same account.

use tests::{Client, TestEnv, Value, assert_error, json, ok, password_for, str_field};

const REGISTER: &str = "/_matrix/client/v3/register";
const LOGIN: &str = "/_matrix/client/v3/login";

fn login_device(env: &TestEnv, localpart: &str, device: &str) -> Client {
    let body = ok(
        env.anon().post(
            LOGIN,
            &json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": localpart },
                "password": password_for(localpart),
                "device_id": device,
            }),
        ),
        "login",
    );
    env.client_from_login(&body)
}

fn password_auth(client: &Client, session: &str, password: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": client.user_id },
        "password": password,
        "session": session,
    })
}

fn challenge(reply: (u16, Value)) -> String {
    assert_eq!(reply.0, 401, "expected a UIA challenge: {:#}", reply.1);
    str_field(&reply.1, "session")
}

fn device_ids(client: &Client) -> Vec<String> {
    let body = client.get_ok("/_matrix/client/v3/devices");
    let mut ids: Vec<String> = body["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| d["device_id"].as_str().expect("device_id").to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_session_started_for_one_device_does_not_delete_another() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    login_device(&env, "alice", "DEVA");
    login_device(&env, "alice", "DEVB");
    let password = password_for("alice");

    let session = challenge(alice.delete("/_matrix/client/v3/devices/DEVA"));
    let auth = password_auth(&alice, &session, &password);
    // The session of DELETE /devices/DEVA, presented to delete DEVB.
    let reply = alice.call(
        "DELETE",
        "/_matrix/client/v3/devices/DEVB",
        Some(&json!({ "auth": auth })),
    );
    assert_error(&reply, 403, "M_FORBIDDEN");
    // …to delete several devices, to change the password, to deactivate.
    let reply = alice.post(
        "/_matrix/client/v3/delete_devices",
        &json!({ "devices": ["DEVB"], "auth": auth }),
    );
    assert_error(&reply, 403, "M_FORBIDDEN");
    let reply = alice.post(
        "/_matrix/client/v3/account/password",
        &json!({ "new_password": "Another-pass-99", "auth": auth }),
    );
    assert_error(&reply, 403, "M_FORBIDDEN");
    let reply = alice.post(
        "/_matrix/client/v3/account/deactivate",
        &json!({ "auth": auth }),
    );
    assert_error(&reply, 403, "M_FORBIDDEN");
    assert!(device_ids(&alice).contains(&"DEVB".to_owned()));

    // The session still does what it was started for.
    ok(
        alice.call(
            "DELETE",
            "/_matrix/client/v3/devices/DEVA",
            Some(&json!({ "auth": auth })),
        ),
        "delete DEVA with its own session",
    );
    let left = device_ids(&alice);
    assert!(!left.contains(&"DEVA".to_owned()), "{left:?}");
    assert!(left.contains(&"DEVB".to_owned()), "{left:?}");
}

#[test]
fn a_session_of_one_user_does_not_authorise_another() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let session = challenge(alice.post(
        "/_matrix/client/v3/delete_devices",
        &json!({ "devices": [] }),
    ));
    let auth = password_auth(&bob, &session, &password_for("bob"));
    let reply = bob.post(
        "/_matrix/client/v3/delete_devices",
        &json!({ "devices": [], "auth": auth }),
    );
    assert_error(&reply, 403, "M_FORBIDDEN");
}

#[test]
fn a_changed_request_body_is_refused_within_the_session() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    login_device(&env, "alice", "DEVB");
    let session = challenge(alice.post(
        "/_matrix/client/v3/delete_devices",
        &json!({ "devices": ["NOSUCH"] }),
    ));
    let auth = password_auth(&alice, &session, &password_for("alice"));
    let reply = alice.post(
        "/_matrix/client/v3/delete_devices",
        &json!({ "devices": ["DEVB"], "auth": auth }),
    );
    assert_error(&reply, 403, "M_FORBIDDEN");
    assert!(device_ids(&alice).contains(&"DEVB".to_owned()));
}

#[test]
fn a_failed_stage_answers_the_whole_uia_state_with_its_error() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let session = challenge(alice.post("/_matrix/client/v3/account/deactivate", &json!({})));
    let (status, body) = alice.post(
        "/_matrix/client/v3/account/deactivate",
        &json!({ "auth": password_auth(&alice, &session, "wrong-password") }),
    );
    assert_eq!(status, 401, "{body:#}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body:#}");
    assert!(body["error"].is_string(), "{body:#}");
    assert_eq!(
        body["session"],
        session.as_str(),
        "the session is kept: {body:#}"
    );
    assert_eq!(body["completed"], json!([]), "{body:#}");
    assert!(body["params"].is_object(), "{body:#}");
    assert_eq!(
        body["flows"],
        json!([{ "stages": ["m.login.password"] }]),
        "{body:#}"
    );
    // A password straight away, with no session, also gets one on failure.
    let (status, body) = alice.post(
        "/_matrix/client/v3/account/deactivate",
        &json!({ "auth": {
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": alice.user_id },
            "password": "wrong-password",
        }}),
    );
    assert_eq!(status, 401, "{body:#}");
    assert!(body["session"].is_string(), "{body:#}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body:#}");
    // The right password in the same session completes it.
    ok(
        alice.post(
            "/_matrix/client/v3/account/deactivate",
            &json!({ "auth": password_auth(&alice, &session, &password_for("alice")) }),
        ),
        "deactivate",
    );
}

#[test]
fn registration_remembers_its_first_request_and_replays_as_the_same_account() {
    let env = TestEnv::dev();
    let anon = env.anon();
    let first = json!({
        "username": "carol",
        "password": password_for("carol"),
        "device_id": "CAROLPHONE",
        "initial_device_display_name": "Carol's phone",
    });
    let session = challenge(anon.post(REGISTER, &first));
    // The second request carries only the auth, as some clients send it.
    let second = json!({ "auth": { "type": "m.login.dummy", "session": session } });
    let body = ok(anon.post(REGISTER, &second), "complete registration");
    assert_eq!(body["user_id"], "@carol:outpost.test", "{body:#}");
    assert_eq!(body["device_id"], "CAROLPHONE", "{body:#}");
    let carol = env.client_from_login(&body);
    let device = carol.get_ok("/_matrix/client/v3/devices/CAROLPHONE");
    assert_eq!(device["display_name"], "Carol's phone", "{device:#}");

    // Replayed: the same account and answer, never a second account or an error.
    let again = ok(anon.post(REGISTER, &second), "replay the completed session");
    assert_eq!(again["user_id"], body["user_id"], "{again:#}");
    assert_eq!(again["access_token"], body["access_token"], "{again:#}");
    // Even with a different name in the replayed body.
    let mut renamed = second.clone();
    renamed["username"] = json!("mallory");
    let again = ok(anon.post(REGISTER, &renamed), "replay with another name");
    assert_eq!(again["user_id"], "@carol:outpost.test", "{again:#}");
    assert_error(
        &carol.get("/_matrix/client/v3/profile/@mallory:outpost.test"),
        404,
        "M_NOT_FOUND",
    );
}

#[test]
fn inhibit_login_from_the_first_request_is_kept_and_returns_no_device() {
    let env = TestEnv::dev();
    let anon = env.anon();
    let session = challenge(anon.post(
        REGISTER,
        &json!({ "username": "dave", "password": password_for("dave"), "inhibit_login": true }),
    ));
    let body = ok(
        anon.post(
            REGISTER,
            &json!({ "auth": { "type": "m.login.dummy", "session": session } }),
        ),
        "register",
    );
    assert_eq!(body["user_id"], "@dave:outpost.test", "{body:#}");
    assert!(body.get("access_token").is_none(), "{body:#}");
    assert!(body.get("device_id").is_none(), "{body:#}");
}

#[test]
fn registration_sets_the_display_name_to_the_localpart() {
    let env = TestEnv::dev();
    let erin = env.register("erin");
    let profile = erin.get_ok("/_matrix/client/v3/profile/@erin:outpost.test/displayname");
    assert_eq!(profile["displayname"], "erin", "{profile:#}");
}
