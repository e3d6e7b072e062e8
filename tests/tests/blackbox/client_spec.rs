//! Client-Server behaviour that stock clients rely on, each checked against the spec: kicks do
//! not unban, encryption cannot be downgraded, unknown login types are the client's error,
//! `/versions` advertises what exists, `/sync` is never rate-limited, the endpoints browser
//! clients poll answer. Delayed sends are in `delayed_events.rs`.

use tests::{Client, TestEnv, assert_error, enc, json, ok};

#[test]
fn kicking_a_banned_user_is_refused_and_the_ban_stays() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    bob.join(&room);
    ok(
        alice.membership(&room, "ban", &json!({ "user_id": bob.user_id })),
        "ban bob",
    );
    let reply = alice.membership(&room, "kick", &json!({ "user_id": bob.user_id }));
    assert_error(&reply, 403, "M_FORBIDDEN");
    let member = alice.get_ok(&Client::state_path(&room, "m.room.member", &bob.user_id));
    assert_eq!(member["membership"], "ban", "the ban stays: {member:#}");
    assert_error(
        &bob.membership(&room, "join", &json!({})),
        403,
        "M_FORBIDDEN",
    );
}

#[test]
fn encryption_cannot_be_downgraded_or_switched() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));
    let megolm = json!({ "algorithm": "m.megolm.v1.aes-sha2" });
    alice.put_state(&room, "m.room.encryption", "", &megolm);
    let path = Client::state_path(&room, "m.room.encryption", "");
    for content in [
        json!({ "algorithm": "m.none" }),
        json!({ "algorithm": "org.example.unknown" }),
        json!({}),
    ] {
        let reply = alice.put(&path, &content);
        assert_error(&reply, 403, "M_FORBIDDEN");
    }
    let current = alice.get_ok(&path);
    assert_eq!(current["algorithm"], "m.megolm.v1.aes-sha2", "{current:#}");
    // The same algorithm with other rotation settings is still allowed.
    let rotated = json!({ "algorithm": "m.megolm.v1.aes-sha2", "rotation_period_ms": 3600000 });
    ok(
        alice.put(&path, &rotated),
        "same algorithm, new rotation period",
    );
}

#[test]
fn an_unknown_login_type_is_a_400() {
    let env = TestEnv::dev();
    env.register("alice");
    let reply = env.anon().post(
        "/_matrix/client/v3/login",
        &json!({ "type": "org.example.nope", "user": "alice" }),
    );
    assert_error(&reply, 400, "M_UNKNOWN");
    let reply = env.anon().post(
        "/_matrix/client/v3/login",
        &json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": "a@b" },
            "password": "x",
        }),
    );
    assert_eq!(reply.0, 400, "{:#}", reply.1);
}

#[test]
fn versions_advertises_cross_signing() {
    let env = TestEnv::dev();
    let versions = env.anon().get_ok("/_matrix/client/versions");
    assert_eq!(
        versions["unstable_features"]["org.matrix.e2e_cross_signing"], true,
        "{versions:#}"
    );
}

#[test]
fn cross_signing_keys_upload_on_the_unstable_path() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let public = vodozemac::Ed25519Keypair::new().public_key().to_base64();
    let body = json!({ "master_key": {
        "user_id": alice.user_id,
        "usage": ["master"],
        "keys": { format!("ed25519:{public}"): public },
    }});
    ok(
        alice.post("/_matrix/client/unstable/keys/device_signing/upload", &body),
        "unstable device_signing/upload",
    );
    let query = alice.post_ok(
        "/_matrix/client/v3/keys/query",
        &json!({ "device_keys": { alice.user_id.clone(): [] } }),
    );
    assert!(
        query["master_keys"][&alice.user_id].is_object(),
        "the key uploaded on the unstable path is served: {query:#}"
    );
}

#[test]
fn sync_is_never_rate_limited() {
    let env = TestEnv::with_config(
        "[registration]\nenabled = true\n\n[rate_limit]\nenabled = true\nper_second = 0.5\nburst = 3\n",
    );
    let alice = env.register("alice");
    for n in 0..30 {
        let (status, body) = alice.get("/_matrix/client/v3/sync?timeout=0");
        assert_eq!(status, 200, "sync #{n} was limited: {body:#}");
    }
    // Other endpoints still are.
    let limited = (0..30).any(|_| alice.get("/_matrix/client/v3/account/whoami").0 == 429);
    assert!(limited, "whoami is still rate limited");
}

#[test]
fn endpoints_browser_clients_poll_answer() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let protocols = alice.get_ok("/_matrix/client/v3/thirdparty/protocols");
    assert_eq!(protocols, json!({}));
    let turn = alice.get_ok("/_matrix/client/v3/voip/turnServer");
    assert_eq!(turn["uris"], json!([]), "{turn:#}");
    assert!(turn["ttl"].is_u64(), "{turn:#}");
}

#[test]
fn own_presence_answers_offline_before_any_activity() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let status = alice.get_ok(&format!(
        "/_matrix/client/v3/presence/{}/status",
        enc(&bob.user_id)
    ));
    assert_eq!(status["presence"], "offline", "{status:#}");
    let reply = alice.get("/_matrix/client/v3/presence/@nobody:outpost.test/status");
    assert_error(&reply, 404, "M_NOT_FOUND");
}

#[test]
fn push_rule_paths_list_by_kind_and_refuse_malformed_parts_with_400() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let base = "/_matrix/client/v3/pushrules";
    let overrides = alice.get_ok(&format!("{base}/global/override/"));
    let ids: Vec<&str> = overrides
        .as_array()
        .unwrap_or_else(|| panic!("a list of rules: {overrides:#}"))
        .iter()
        .filter_map(|rule| rule["rule_id"].as_str())
        .collect();
    assert!(ids.contains(&".m.rule.master"), "{ids:?}");
    let rule = json!({ "actions": ["dont_notify"] });
    for (path, why) in [
        (
            format!("{base}/device/room/{}", enc("!a:b")),
            "unknown scope",
        ),
        (format!("{base}/global/nonsense/myrule"), "unknown kind"),
        (format!("{base}/global/room/not-a-room-id"), "room rule ID"),
        (
            format!("{base}/global/sender/not-a-user-id"),
            "sender rule ID",
        ),
    ] {
        let (status, body) = alice.put(&path, &rule);
        assert_eq!(status, 400, "{why}: {body:#}");
        let (status, body) = alice.get(&path);
        assert_eq!(status, 400, "{why}: {body:#}");
    }
    assert_eq!(alice.get(&format!("{base}/device/override/")).0, 400);
    let room_rule = format!("{base}/global/room/{}", enc("!abc:outpost.test"));
    ok(
        alice.put(&room_rule, &rule),
        "a room rule keyed by a room ID",
    );
}

#[test]
fn filters_naming_invalid_room_or_user_ids_are_400() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let path = format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id));
    for filter in [
        json!({ "room": { "rooms": ["not-a-room"] } }),
        json!({ "room": { "not_rooms": ["#alias:outpost.test"] } }),
        json!({ "room": { "timeline": { "senders": ["alice"] } } }),
        json!({ "room": { "state": { "not_senders": ["@"] } } }),
    ] {
        let (status, body) = alice.post(&path, &filter);
        assert_eq!(status, 400, "{filter}: {body:#}");
        let inline = format!(
            "/_matrix/client/v3/sync?timeout=0&filter={}",
            tests::enc(&filter.to_string())
        );
        assert_eq!(alice.get(&inline).0, 400, "inline {filter}");
    }
    let fine = json!({ "room": { "rooms": ["!abc:outpost.test"], "timeline": { "senders": ["@bob:outpost.test"] } } });
    ok(alice.post(&path, &fine), "a filter with valid IDs");
}

#[test]
fn canonical_aliases_that_do_not_point_here_are_m_bad_alias() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({ "room_alias_name": "here" }));
    let other = alice.create_room(&json!({ "room_alias_name": "elsewhere" }));
    assert_ne!(room, other);
    let path = Client::state_path(&room, "m.room.canonical_alias", "");
    let here = "#here:outpost.test";
    let reply = alice.put(
        &path,
        &json!({ "alias": here, "alt_aliases": ["#elsewhere:outpost.test"] }),
    );
    assert_error(&reply, 400, "M_BAD_ALIAS");
    let reply = alice.put(&path, &json!({ "alias": "#nowhere:outpost.test" }));
    assert_error(&reply, 400, "M_BAD_ALIAS");
    // Bad syntax stays M_INVALID_PARAM.
    let reply = alice.put(
        &path,
        &json!({ "alias": here, "alt_aliases": ["not an alias"] }),
    );
    assert_error(&reply, 400, "M_INVALID_PARAM");
    let reply = alice.put(&path, &json!({ "alias": here, "alt_aliases": [42] }));
    assert_error(&reply, 400, "M_INVALID_PARAM");
    ok(
        alice.put(&path, &json!({ "alias": here, "alt_aliases": [] })),
        "a good alias",
    );
}

/// `GET /rooms/{roomId}/state/{eventType}/{stateKey}?format=event` (spec v1.16) answers the
/// whole client-format event, which mautrix reads the create event with; the default and
/// `format=content` answer the content only; any other format is 400.
#[test]
fn a_state_event_can_be_read_whole_with_format_event() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({ "name": "Whole" }));
    let path = Client::state_path(&room, "m.room.create", "");
    let content = alice.get_ok(&path);
    assert!(content.get("event_id").is_none(), "{content:#}");
    assert_eq!(alice.get_ok(&format!("{path}?format=content")), content);
    let event = alice.get_ok(&format!("{path}?format=event"));
    assert_eq!(event["type"], "m.room.create", "{event:#}");
    assert_eq!(event["sender"], alice.user_id.as_str());
    assert_eq!(event["room_id"], room.as_str());
    assert_eq!(event["state_key"], "");
    assert_eq!(event["content"], content);
    assert!(
        event["event_id"]
            .as_str()
            .is_some_and(|id| id.starts_with('$')),
        "{event:#}"
    );
    assert!(event["origin_server_ts"].is_u64(), "{event:#}");
    let name = alice.get_ok(&format!(
        "{}?format=event",
        Client::state_path(&room, "m.room.name", "")
    ));
    assert_eq!(name["content"]["name"], "Whole");
    assert_error(
        &alice.get(&format!("{path}?format=pdu")),
        400,
        "M_INVALID_PARAM",
    );
}
