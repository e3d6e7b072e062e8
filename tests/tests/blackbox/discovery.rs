//! Discovery endpoints: `/versions`, `/.well-known/matrix/client`, `/capabilities`, and CORS
//! (headers on ordinary responses and OPTIONS preflight).

use tests::{TestEnv, ok};

#[test]
fn versions_lists_spec_versions_without_auth() {
    let env = TestEnv::dev();
    let body = ok(env.anon().get("/_matrix/client/versions"), "versions");
    let versions: Vec<&str> = body["versions"]
        .as_array()
        .expect("`versions` is an array")
        .iter()
        .map(|v| v.as_str().expect("each version is a string"))
        .collect();
    assert!(
        versions.iter().any(|v| v.starts_with("v1.")),
        "expected some v1.x version in {versions:?}"
    );
    if let Some(unstable) = body.get("unstable_features") {
        assert!(
            unstable.is_object(),
            "unstable_features is an object: {body:#}"
        );
    }
}

#[test]
fn well_known_points_at_a_base_url() {
    let env = TestEnv::dev();
    let body = ok(env.anon().get("/.well-known/matrix/client"), "well-known");
    let base = body["m.homeserver"]["base_url"]
        .as_str()
        .unwrap_or_else(|| panic!("m.homeserver.base_url missing: {body:#}"));
    assert!(
        base.starts_with("http://") || base.starts_with("https://"),
        "base_url must be a URL: {base}"
    );
}

#[test]
fn capabilities_report_room_versions_and_password_change() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let body = ok(alice.get("/_matrix/client/v3/capabilities"), "capabilities");
    let caps = &body["capabilities"];
    let versions = &caps["m.room_versions"];
    assert_eq!(versions["default"], "12", "default room version: {body:#}");
    for version in ["10", "11", "12"] {
        assert_eq!(
            versions["available"][version], "stable",
            "room version {version} should be stable: {body:#}"
        );
    }
    if let Some(change) = caps.get("m.change_password") {
        assert_eq!(
            change["enabled"], true,
            "password change is implemented: {body:#}"
        );
    }

    let anonymous = env.anon().get("/_matrix/client/v3/capabilities");
    tests::assert_error(&anonymous, 401, "M_MISSING_TOKEN");
}

#[test]
fn every_response_allows_any_origin() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let origin = [("Origin", "https://app.example")];
    let cases = [
        (env.anon(), "GET", "/_matrix/client/versions", 200),
        (
            alice.clone(),
            "GET",
            "/_matrix/client/v3/account/whoami",
            200,
        ),
        (env.anon(), "GET", "/_matrix/client/v3/account/whoami", 401),
        (
            env.anon(),
            "GET",
            "/_matrix/client/v3/no/such/endpoint",
            404,
        ),
    ];
    for (client, method, path, status) in cases {
        let reply = client.request(method, path, &origin, None);
        assert_eq!(reply.status, status, "{method} {path}");
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some("*"),
            "{method} {path} must allow any origin; headers: {:?}",
            reply.headers
        );
    }
}

#[test]
fn options_preflight_is_answered_for_every_path() {
    let env = TestEnv::dev();
    let preflight = [
        ("Origin", "https://app.example"),
        ("Access-Control-Request-Method", "POST"),
        (
            "Access-Control-Request-Headers",
            "authorization, content-type",
        ),
    ];
    for path in [
        "/_matrix/client/versions",
        "/_matrix/client/v3/createRoom",
        "/_matrix/client/v3/rooms/%21abc%3Aoutpost.test/send/m.room.message/t1",
        "/_matrix/client/v3/sync",
    ] {
        let reply = env.anon().request("OPTIONS", path, &preflight, None);
        assert!(
            reply.status == 200 || reply.status == 204,
            "OPTIONS {path}: status {}",
            reply.status
        );
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some("*"),
            "{path}"
        );
        let methods = reply
            .header("access-control-allow-methods")
            .unwrap_or_default()
            .to_ascii_uppercase();
        assert!(
            methods == "*"
                || ["GET", "POST", "PUT", "DELETE"]
                    .iter()
                    .all(|m| methods.contains(m)),
            "OPTIONS {path}: allow-methods {methods:?}"
        );
        let headers = reply
            .header("access-control-allow-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        // A bare `*` does not cover `Authorization` in the Fetch standard, so name it.
        assert!(
            headers.contains("authorization") && headers.contains("content-type"),
            "OPTIONS {path}: allow-headers {headers:?}"
        );
    }
}
