//! Homeserver -> appservice (issue 17): transactions of the events an appservice is interested
//! in, in stream order and exactly once (deduplicated by txnId, as the spec tells appservices
//! to) across a `kill -9`; an appservice that answers 500, garbage or hangs and then recovers;
//! a long outage caught up with a short backoff cap, and a day-long one with the real cap
//! (compressed by pings, each of which ends the backoff); the exact queue depth; typing that
//! times out; an appservice removed and added again; the appservice ping (client and admin
//! socket) with each of its errors; third-party lookups; user and alias queries; and the
//! admin socket's appservice routes. The appservice is `tests::appservice::TestAppservice`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tests::appservice::{Behaviour, TestAppservice};
use tests::{
    TestEnv, Value, admin_get, admin_post, assert_error, enc, json, ok, poll_until, str_field,
};

const DEADLINE: Duration = Duration::from_secs(30);
const HS_TOKEN: &str = "hs-bridge-secret";
const AS_TOKEN: &str = "as-bridge-secret";
/// Open registration, no rate limits, a one-second backoff cap and a two-second request
/// timeout (so a hanging appservice and the ping timeout are quick to see).
const CONFIG: &str = "[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n\n\
                      [appservices]\nretry_cap_secs = 1\nrequest_timeout_secs = 2\n";

/// A server with the test appservice registered as `bridge` (users `@bridge_.*`, aliases
/// `#bridge_.*`, rooms matching `rooms`), `extra` YAML lines added.
fn setup(rooms: &[&str], extra: &str) -> (TestEnv, TestAppservice) {
    setup_with(CONFIG, rooms, extra)
}

/// [`setup`] with another server config.
fn setup_with(config: &str, rooms: &[&str], extra: &str) -> (TestEnv, TestAppservice) {
    let appservice = TestAppservice::start(HS_TOKEN);
    let yaml = bridge_yaml(&appservice, rooms, extra);
    let (env, ()) = TestEnv::with_config_setup(config, |data| {
        TestAppservice::install(data, "bridge", &yaml);
    });
    (env, appservice)
}

/// The registration [`setup`] installs.
fn bridge_yaml(appservice: &TestAppservice, rooms: &[&str], extra: &str) -> String {
    appservice.registration(
        "bridge",
        AS_TOKEN,
        "bridgebot",
        [&["@bridge_.*"], &["#bridge_.*"], rooms],
        extra,
    )
}

/// Reloads the registrations through the admin socket; how many are registered.
fn reload(env: &TestEnv) -> u64 {
    let (head, body) = admin_post(&env.data_dir(), "/v1/appservices/reload", "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    body["appservices"].as_u64().expect("a count")
}

/// The admin socket's view of appservice `id`.
fn link(env: &TestEnv, id: &str) -> Value {
    let (head, body) = admin_get(&env.data_dir(), "/v1/appservices");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    let list: Value = serde_json::from_str(&body).expect("JSON");
    list["appservices"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|a| a["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not listed: {list:#}"))
}

/// Waits until the appservice has received every event of `ids` (deduplicated).
fn wait_for(appservice: &TestAppservice, ids: &[String]) {
    poll_until("the events at the appservice", DEADLINE, || {
        let got: HashSet<String> = appservice.event_ids().into_iter().collect();
        ids.iter().all(|id| got.contains(id)).then_some(())
    });
}

/// Every transaction re-sent under one txnId carried the same body, and no event is in two
/// different transactions.
fn assert_exactly_once(appservice: &TestAppservice) {
    let mut bodies: HashMap<String, Value> = HashMap::new();
    for (txn, body) in appservice.transactions() {
        if let Some(first) = bodies.get(&txn) {
            assert_eq!(first, &body, "txn {txn} re-sent with another body");
        }
        bodies.insert(txn, body);
    }
    let ids = appservice.event_ids();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "an event came in two transactions");
}

/// The appservice's events of `room` in the order received.
fn room_events(appservice: &TestAppservice, room: &str) -> Vec<String> {
    appservice
        .events()
        .iter()
        .filter(|e| e["room_id"] == room)
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn events_of_interesting_rooms_arrive_in_order_exactly_once_across_kill9() {
    let (mut env, appservice) = setup(&[], "");
    let alice = env.register("alice");
    let ghost = env.register("bridge_bob");
    let room = alice.create_room(&json!({}));
    alice.invite(&room, &ghost.user_id);
    ghost.join(&room);
    // A room with no member in the namespace is not the appservice's business.
    let private = alice.create_room(&json!({}));
    let hidden = alice.send_text(&private, "not for the bridge");

    let mut sent = Vec::new();
    for i in 0..20 {
        sent.push(alice.send_text(&room, &format!("before {i}")));
    }
    wait_for(&appservice, &sent);
    assert_eq!(
        appservice.bad_auth(),
        0,
        "every request carries the hs_token"
    );
    let first = appservice.requests()[0].clone();
    assert_eq!(first.method, "PUT");
    assert!(first.path.starts_with("/_matrix/app/v1/transactions/"));

    // A transaction in flight when the server dies is re-sent after the restart.
    appservice.set_behaviour(Behaviour::Hang);
    let before = appservice.requests().len();
    for i in 0..30 {
        sent.push(alice.send_text(&room, &format!("during {i}")));
    }
    poll_until("a hung request", DEADLINE, || {
        (appservice.requests().len() > before).then_some(())
    });
    env.kill9();
    appservice.set_behaviour(Behaviour::Normal);
    env.restart();
    let alice = env.login("alice");
    for i in 0..20 {
        sent.push(alice.send_text(&room, &format!("after {i}")));
    }
    wait_for(&appservice, &sent);
    assert!(
        appservice.transactions().len() > appservice.unique_transactions().len(),
        "the transaction whose answer was lost was sent again"
    );
    let got = room_events(&appservice, &room);
    let got_sent: Vec<String> = got.iter().filter(|id| sent.contains(id)).cloned().collect();
    assert_eq!(
        got_sent, sent,
        "the messages arrive in the order they were sent"
    );
    assert_exactly_once(&appservice);
    assert!(!appservice.event_ids().contains(&hidden));
    for (_, body) in appservice.transactions() {
        let n = body["events"].as_array().map_or(0, Vec::len);
        assert!(n <= 100, "at most 100 events per transaction, got {n}");
    }
    let shown = link(&env, "bridge");
    assert_eq!(shown["link"], "up", "{shown:#}");
    assert!(shown["last_delivery_ms"].as_i64().is_some());
}

#[test]
fn room_id_and_alias_namespaces_make_a_room_interesting() {
    let (env, appservice) = setup(&[], "");
    let alice = env.register("alice");
    let aliased = alice.create_room(&json!({"room_alias_name": "bridge_chat"}));
    let plain = alice.create_room(&json!({"room_alias_name": "plain"}));
    let by_alias = alice.send_text(&aliased, "alias in namespace");
    let not_yet = alice.send_text(&plain, "nobody's");
    // Events are examined in stream order: once this one arrived, `not_yet` was passed over.
    let marker = alice.send_text(&aliased, "after it");
    wait_for(&appservice, &[by_alias, marker]);

    // The same registration with the plain room's ID in its room namespace, reloaded.
    let yaml = appservice.registration(
        "bridge",
        AS_TOKEN,
        "bridgebot",
        [
            &["@bridge_.*"],
            &["#bridge_.*"],
            &[&plain.replace('.', "\\.")],
        ],
        "",
    );
    TestAppservice::install(&env.data_dir(), "bridge", &yaml);
    let (head, _) = admin_post(&env.data_dir(), "/v1/appservices/reload", "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let by_room = alice.send_text(&plain, "room in namespace");
    wait_for(&appservice, std::slice::from_ref(&by_room));
    assert!(
        !appservice.event_ids().contains(&not_yet),
        "sent before the room was in a namespace"
    );
    assert_exactly_once(&appservice);
}

#[test]
fn an_appservice_that_fails_then_recovers_gets_everything() {
    let (env, appservice) = setup(&[], "");
    let alice = env.register("alice");
    let ghost = env.register("bridge_carol");
    let room = alice.create_room(&json!({}));
    alice.invite(&room, &ghost.user_id);
    ghost.join(&room);
    let mut sent = Vec::new();
    for behaviour in [Behaviour::Error500, Behaviour::Garbage, Behaviour::Hang] {
        appservice.set_behaviour(behaviour);
        let before = appservice.requests().len();
        sent.push(alice.send_text(&room, &format!("{behaviour:?}")));
        // Retried (with the one-second cap) while failing, and the admin socket says so.
        poll_until("two failed attempts", DEADLINE, || {
            (appservice.requests().len() >= before + 2).then_some(())
        });
        let shown = poll_until("the link down", DEADLINE, || {
            let shown = link(&env, "bridge");
            (shown["link"] == "down").then_some(shown)
        });
        assert!(shown["last_error"].as_str().is_some_and(|e| !e.is_empty()));
        assert!(shown["next_retry_ms"].as_i64().is_some());
        assert!(
            shown["queue_depth"].as_i64().is_some_and(|d| d >= 1),
            "{shown:#}"
        );
        appservice.set_behaviour(Behaviour::Normal);
        wait_for(&appservice, &sent);
        let shown = poll_until("the link up", DEADLINE, || {
            let shown = link(&env, "bridge");
            (shown["link"] == "up").then_some(shown)
        });
        assert_eq!(shown["last_error"], Value::Null);
    }
    assert_eq!(
        room_events(&appservice, &room)
            .into_iter()
            .filter(|id| sent.contains(id))
            .collect::<Vec<_>>(),
        sent
    );
    assert_exactly_once(&appservice);
}

#[test]
fn a_long_outage_is_caught_up_in_order() {
    let (env, appservice) = setup(&[], "");
    let alice = env.register("alice");
    let ghost = env.register("bridge_dave");
    let room = alice.create_room(&json!({}));
    alice.invite(&room, &ghost.user_id);
    ghost.join(&room);
    appservice.set_behaviour(Behaviour::Error500);
    let mut sent = Vec::new();
    for i in 0..250 {
        sent.push(alice.send_text(&room, &format!("queued {i}")));
    }
    // The outage outlasts several backoff periods (capped at one second here, an hour's worth
    // of doubling compressed): nothing is dropped meanwhile.
    poll_until("several retries", DEADLINE, || {
        let failures = appservice.requests().len();
        (failures >= 4).then_some(())
    });
    let depth = link(&env, "bridge")["queue_depth"].as_i64().expect("depth");
    assert!(depth >= 100, "the queue holds the outage's events: {depth}");
    appservice.set_behaviour(Behaviour::Normal);
    wait_for(&appservice, &sent);
    let got: Vec<String> = room_events(&appservice, &room)
        .into_iter()
        .filter(|id| sent.contains(id))
        .collect();
    assert_eq!(got, sent);
    assert_exactly_once(&appservice);
    poll_until("an empty queue", DEADLINE, || {
        (link(&env, "bridge")["queue_depth"] == 0).then_some(())
    });
}

#[test]
fn ping_answers_duration_or_each_spec_error() {
    let (env, appservice) = setup(&[], "");
    let ping = |token: &str, id: &str, body: &Value| {
        env.with_token(token).post(
            &format!("/_matrix/client/v1/appservice/{}/ping", enc(id)),
            body,
        )
    };
    let answer = ok(
        ping(AS_TOKEN, "bridge", &json!({"transaction_id": "ping-1"})),
        "ping",
    );
    assert!(answer["duration_ms"].as_u64().is_some(), "{answer:#}");
    let seen = appservice
        .requests()
        .into_iter()
        .find(|r| r.path == "/_matrix/app/v1/ping")
        .expect("the appservice was pinged");
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body["transaction_id"], "ping-1");
    assert!(seen.authorised);

    // Only the appservice's own as_token may ask.
    let alice = env.register("alice");
    let token = alice.access_token.clone().expect("a token");
    assert_error(&ping(&token, "bridge", &json!({})), 403, "M_FORBIDDEN");
    assert_error(&ping(AS_TOKEN, "other", &json!({})), 403, "M_FORBIDDEN");

    appservice.set_behaviour(Behaviour::Error500);
    let reply = ping(AS_TOKEN, "bridge", &json!({}));
    assert_error(&reply, 502, "M_BAD_STATUS");
    assert_eq!(reply.1["status"], 500);
    assert!(
        reply.1["body"]
            .as_str()
            .is_some_and(|b| b.contains("M_UNKNOWN"))
    );
    appservice.set_behaviour(Behaviour::Garbage);
    assert_error(
        &ping(AS_TOKEN, "bridge", &json!({})),
        502,
        "M_CONNECTION_FAILED",
    );
    appservice.set_behaviour(Behaviour::Hang);
    assert_error(
        &ping(AS_TOKEN, "bridge", &json!({})),
        504,
        "M_CONNECTION_TIMEOUT",
    );
    appservice.set_behaviour(Behaviour::Normal);

    // The admin socket pings too, with the same errors.
    let (head, body) = admin_post(&env.data_dir(), "/v1/appservices/bridge/ping", "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert!(body["duration_ms"].as_u64().is_some());
    let (head, body) = admin_post(&env.data_dir(), "/v1/appservices/nope/ping", "");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(body.contains("M_NOT_FOUND"));

    // A stopped appservice: connection refused.
    drop(appservice);
    poll_until("the appservice port closed", DEADLINE, || {
        let (status, body) = ping(AS_TOKEN, "bridge", &json!({}));
        (status == 502 && body["errcode"] == "M_CONNECTION_FAILED").then_some(())
    });
}

#[test]
fn a_send_only_appservice_has_no_url_to_ping() {
    let appservice = TestAppservice::start(HS_TOKEN);
    let yaml = appservice
        .registration("sendonly", AS_TOKEN, "bot", [&["@so_.*"], &[], &[]], "")
        .replace(&format!("url: {}", appservice.url()), "url: null");
    let (env, ()) = TestEnv::with_config_setup(CONFIG, |data| {
        TestAppservice::install(data, "sendonly", &yaml);
    });
    let reply = env
        .with_token(AS_TOKEN)
        .post("/_matrix/client/v1/appservice/sendonly/ping", &json!({}));
    assert_error(&reply, 400, "M_URL_NOT_SET");
    let shown = link(&env, "sendonly");
    assert_eq!(shown["link"], "send-only");
    assert_eq!(shown["url"], Value::Null);
    assert_eq!(shown["sender"], "@bot:outpost.test");
    let (head, body) = admin_post(&env.data_dir(), "/v1/appservices/sendonly/ping", "");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(body.contains("M_URL_NOT_SET"));
}

#[test]
fn admin_lists_and_reloads_appservices() {
    let (env, appservice) = setup(&[], "");
    let shown = link(&env, "bridge");
    assert_eq!(shown["url"], appservice.url());
    assert_eq!(shown["sender"], "@bridgebot:outpost.test");
    assert_eq!(shown["link"], "idle", "{shown:#}");
    assert_eq!(shown["queue_depth"], 0);
    assert_eq!(shown["last_delivery_ms"], Value::Null);
    assert_eq!(shown["last_error"], Value::Null);
    assert_eq!(shown["next_retry_ms"], Value::Null);

    // A second file appears: the reload counts it and the list shows it after the first.
    let second = TestAppservice::start("hs-second");
    let yaml = second.registration(
        "second",
        "as-second",
        "secondbot",
        [&["@second_.*"], &[], &[]],
        "",
    );
    TestAppservice::install(&env.data_dir(), "second", &yaml);
    let (head, body) = admin_post(&env.data_dir(), "/v1/appservices/reload", "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON"),
        json!({"appservices": 2})
    );
    let (_, body) = admin_get(&env.data_dir(), "/v1/appservices");
    let list: Value = serde_json::from_str(&body).expect("JSON");
    let ids: Vec<&str> = list["appservices"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(ids, ["bridge", "second"]);

    // The newly loaded appservice gets events from now on.
    let alice = env.register("alice");
    let ghost = env.register("second_eve");
    let room = alice.create_room(&json!({}));
    alice.invite(&room, &ghost.user_id);
    ghost.join(&room);
    let event = alice.send_text(&room, "hello second");
    wait_for(&second, std::slice::from_ref(&event));
    assert!(!appservice.event_ids().contains(&event));
}

#[test]
fn third_party_lookups_go_to_the_bridging_appservice() {
    let (env, appservice) = setup(&[], "protocols: [irc]\n");
    let alice = env.register("alice");
    // Registered, but the appservice has not answered for its protocol yet: left out.
    assert_eq!(
        alice.get_ok("/_matrix/client/v3/thirdparty/protocols"),
        json!({})
    );
    appservice.set_thirdparty(
        "protocol",
        "irc",
        json!({
            "user_fields": ["network", "nickname"],
            "location_fields": ["network", "channel"],
            "icon": "mxc://example.org/irc",
            "field_types": {},
            "instances": [{"network_id": "local", "desc": "Local IRC", "fields": {"network": "local"}}]
        }),
    );
    let protocols = alice.get_ok("/_matrix/client/v3/thirdparty/protocols");
    assert_eq!(
        protocols["irc"]["user_fields"],
        json!(["network", "nickname"])
    );
    assert_eq!(
        protocols["irc"]["instances"][0]["instance_id"],
        "bridge|local"
    );
    let one = alice.get_ok("/_matrix/client/v3/thirdparty/protocol/irc");
    assert_eq!(one, protocols["irc"]);
    assert_error(
        &alice.get("/_matrix/client/v3/thirdparty/protocol/xmpp"),
        404,
        "M_NOT_FOUND",
    );

    let portal = json!([{"alias": "#bridge_local_chan:outpost.test", "protocol": "irc", "fields": {"network": "local", "channel": "#chan"}}]);
    appservice.set_thirdparty("location", "irc", portal.clone());
    let found =
        alice.get_ok("/_matrix/client/v3/thirdparty/location/irc?network=local&channel=%23chan");
    assert_eq!(found, portal);
    let asked = appservice
        .requests()
        .into_iter()
        .rfind(|r| r.path == "/_matrix/app/v1/thirdparty/location/irc")
        .expect("forwarded");
    assert_eq!(asked.query, "network=local&channel=%23chan");
    let users = json!([{"userid": "@bridge_nick:outpost.test", "protocol": "irc", "fields": {"nickname": "nick"}}]);
    appservice.set_thirdparty("user", "irc", users.clone());
    assert_eq!(
        alice.get_ok("/_matrix/client/v3/thirdparty/user/irc?nickname=nick"),
        users
    );
    assert_error(
        &alice.get("/_matrix/client/v3/thirdparty/user/xmpp"),
        404,
        "M_NOT_FOUND",
    );

    appservice.set_thirdparty("location", "", portal.clone());
    appservice.set_thirdparty("user", "", users.clone());
    assert_eq!(
        alice.get_ok(&format!(
            "/_matrix/client/v3/thirdparty/location?alias={}",
            enc("#bridge_local_chan:outpost.test")
        )),
        portal
    );
    assert_eq!(
        alice.get_ok(&format!(
            "/_matrix/client/v3/thirdparty/user?userid={}",
            enc("@bridge_nick:outpost.test")
        )),
        users
    );
    // Outside every namespace nobody is asked.
    assert_error(
        &alice.get(&format!(
            "/_matrix/client/v3/thirdparty/user?userid={}",
            enc("@nick:outpost.test")
        )),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &alice.get("/_matrix/client/v3/thirdparty/location"),
        400,
        "M_MISSING_PARAM",
    );
    assert_error(
        &env.anon().get("/_matrix/client/v3/thirdparty/protocols"),
        401,
        "M_MISSING_TOKEN",
    );
}

#[test]
fn unknown_users_and_aliases_in_a_namespace_are_asked_of_the_appservice() {
    let (env, appservice) = setup(&[], "");
    let alice = env.register("alice");
    let owner = env.register("bridge_owner");
    // The appservice creates the user it is asked about (here through ordinary registration),
    // then answers 200.
    let anon = env.anon();
    appservice.on_user_query(move |user_id| {
        if user_id != "@bridge_zed:outpost.test" {
            return false;
        }
        let (status, _) = anon.post(
            "/_matrix/client/v3/register",
            &json!({"username": "bridge_zed", "password": tests::password_for("bridge_zed"),
                    "auth": {"type": "m.login.dummy"}}),
        );
        status == 200
    });
    let profile = alice.get_ok(&format!(
        "/_matrix/client/v3/profile/{}",
        enc("@bridge_zed:outpost.test")
    ));
    assert!(profile.is_object(), "{profile:#}");
    let asked: Vec<String> = appservice
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/_matrix/app/v1/users/"))
        .map(|r| r.path)
        .collect();
    assert_eq!(
        asked,
        ["/_matrix/app/v1/users/%40bridge_zed%3Aoutpost.test"]
    );
    // The appservice does not know this one: still 404. Outside the namespace nobody is asked.
    assert_error(
        &alice.get(&format!(
            "/_matrix/client/v3/profile/{}",
            enc("@bridge_nobody:outpost.test")
        )),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &alice.get(&format!(
            "/_matrix/client/v3/profile/{}",
            enc("@zed:outpost.test")
        )),
        404,
        "M_NOT_FOUND",
    );
    let user_queries = appservice
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/_matrix/app/v1/users/"))
        .count();
    assert_eq!(user_queries, 2);

    // An invite to an unknown user of the namespace asks too.
    appservice.on_user_query({
        let anon = env.anon();
        move |user_id| {
            user_id == "@bridge_yan:outpost.test"
                && anon
                    .post(
                        "/_matrix/client/v3/register",
                        &json!({"username": "bridge_yan", "password": tests::password_for("bridge_yan"),
                                "auth": {"type": "m.login.dummy"}}),
                    )
                    .0
                    == 200
        }
    });
    let room = alice.create_room(&json!({}));
    ok(
        alice.membership(
            &room,
            "invite",
            &json!({"user_id": "@bridge_yan:outpost.test"}),
        ),
        "invite a user the appservice creates",
    );

    // Aliases: the appservice creates the room with the alias, then answers 200.
    appservice.on_alias_query(move |alias| {
        alias == "#bridge_lobby:outpost.test"
            && owner
                .post(
                    "/_matrix/client/v3/createRoom",
                    &json!({"room_alias_name": "bridge_lobby", "preset": "public_chat"}),
                )
                .0
                == 200
    });
    let resolved = alice.get_ok(&format!(
        "/_matrix/client/v3/directory/room/{}",
        enc("#bridge_lobby:outpost.test")
    ));
    let lobby = str_field(&resolved, "room_id");
    assert_eq!(alice.join("#bridge_lobby:outpost.test"), lobby);
    assert_error(
        &alice.get(&format!(
            "/_matrix/client/v3/directory/room/{}",
            enc("#bridge_none:outpost.test")
        )),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &alice.get(&format!(
            "/_matrix/client/v3/directory/room/{}",
            enc("#elsewhere:outpost.test")
        )),
        404,
        "M_NOT_FOUND",
    );
    let alias_queries: Vec<String> = appservice
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/_matrix/app/v1/rooms/"))
        .map(|r| r.path)
        .collect();
    assert_eq!(
        alias_queries,
        [
            "/_matrix/app/v1/rooms/%23bridge_lobby%3Aoutpost.test",
            "/_matrix/app/v1/rooms/%23bridge_none%3Aoutpost.test"
        ]
    );
}

#[test]
fn ephemeral_data_and_to_device_messages_go_to_appservices_that_ask() {
    let (env, appservice) = setup(&[], "receive_ephemeral: true\n");
    let alice = env.register("alice");
    let ghost = env.register("bridge_gus");
    let room = alice.create_room(&json!({}));
    alice.invite(&room, &ghost.user_id);
    ghost.join(&room);
    let event = alice.send_text(&room, "read me");
    wait_for(&appservice, std::slice::from_ref(&event));

    ok(
        alice.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                enc(&room),
                enc(&alice.user_id)
            ),
            &json!({"typing": true, "timeout": 30000}),
        ),
        "typing",
    );
    ok(
        alice.post(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                enc(&room),
                enc(&event)
            ),
            &json!({}),
        ),
        "receipt",
    );
    ok(
        alice.put(
            &format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id)),
            &json!({"presence": "online", "status_msg": "bridging"}),
        ),
        "presence",
    );
    ok(
        alice.put(
            "/_matrix/client/v3/sendToDevice/m.test/txn-1",
            &json!({"messages": {ghost.user_id.clone(): {ghost.device_id.clone(): {"hello": "ghost"}}}}),
        ),
        "to-device",
    );
    let find = |key: &str, kind: &str| {
        appservice
            .section(key)
            .into_iter()
            .find(|e| e["type"] == kind)
    };
    let typing = poll_until("typing at the appservice", DEADLINE, || {
        find("ephemeral", "m.typing")
    });
    assert_eq!(typing["room_id"], room.as_str());
    assert_eq!(typing["content"]["user_ids"], json!([alice.user_id]));
    let receipt = poll_until("a receipt", DEADLINE, || find("ephemeral", "m.receipt"));
    assert_eq!(receipt["room_id"], room.as_str());
    assert!(
        receipt["content"][&event]["m.read"][&alice.user_id]["ts"].is_i64(),
        "{receipt:#}"
    );
    let presence = poll_until("presence", DEADLINE, || find("ephemeral", "m.presence"));
    assert_eq!(presence["sender"], alice.user_id.as_str());
    assert_eq!(presence["content"]["status_msg"], "bridging");
    let to_device = poll_until("a to-device message", DEADLINE, || {
        find("to_device", "m.test")
    });
    assert_eq!(to_device["sender"], alice.user_id.as_str());
    assert_eq!(to_device["to_user_id"], ghost.user_id.as_str());
    assert_eq!(to_device["to_device_id"], ghost.device_id.as_str());
    assert_eq!(to_device["content"], json!({"hello": "ghost"}));
    // The same items under MSC2409's unstable keys, for bridges written against them.
    assert!(find("de.sorunome.msc2409.ephemeral", "m.typing").is_some());
    assert!(find("de.sorunome.msc2409.to_device", "m.test").is_some());
    assert_exactly_once(&appservice);
}

#[test]
fn appservices_that_do_not_ask_get_no_ephemeral_data() {
    let (env, appservice) = setup(&[], "");
    let alice = env.register("alice");
    let ghost = env.register("bridge_hal");
    let room = alice.create_room(&json!({}));
    alice.invite(&room, &ghost.user_id);
    ghost.join(&room);
    ok(
        alice.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                enc(&room),
                enc(&alice.user_id)
            ),
            &json!({"typing": true, "timeout": 30000}),
        ),
        "typing",
    );
    // An event after the typing notice: once it arrives, the typing would have too.
    let event = alice.send_text(&room, "after typing");
    wait_for(&appservice, std::slice::from_ref(&event));
    for (_, body) in appservice.transactions() {
        assert!(body.get("ephemeral").is_none(), "{body:#}");
        assert!(body.get("de.sorunome.msc2409.ephemeral").is_none());
    }
}

#[test]
fn typing_that_times_out_is_pushed_without_the_user() {
    let (env, appservice) = setup(&[], "receive_ephemeral: true\n");
    let alice = env.register("alice");
    let ghost = env.register("bridge_ida");
    let room = alice.create_room(&json!({}));
    alice.invite(&room, &ghost.user_id);
    ghost.join(&room);
    ok(
        alice.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                enc(&room),
                enc(&alice.user_id)
            ),
            &json!({"typing": true, "timeout": 1000}),
        ),
        "typing for a second",
    );
    // Alice never says she stopped: the notice expires, and the appservice hears of it.
    let typing = || -> Vec<Value> {
        appservice
            .section("ephemeral")
            .into_iter()
            .filter(|e| e["type"] == "m.typing" && e["room_id"] == room.as_str())
            .map(|e| e["content"]["user_ids"].clone())
            .collect()
    };
    let seen = poll_until(
        "the typing notice expiring at the appservice",
        DEADLINE,
        || {
            let seen = typing();
            (seen.last() == Some(&json!([]))).then_some(seen)
        },
    );
    assert_eq!(seen, vec![json!([alice.user_id]), json!([])]);
    assert_exactly_once(&appservice);
}

#[test]
fn a_re_added_appservice_starts_where_it_is_added() {
    let (env, appservice) = setup(&[], "");
    let alice = env.register("alice");
    let ghost = env.register("bridge_jo");
    let room = alice.create_room(&json!({}));
    alice.invite(&room, &ghost.user_id);
    ghost.join(&room);
    let first = alice.send_text(&room, "while registered");
    wait_for(&appservice, std::slice::from_ref(&first));

    // A transaction is in flight (refused) when the appservice is removed.
    appservice.set_behaviour(Behaviour::Error500);
    let before = appservice.requests().len();
    let refused = alice.send_text(&room, "refused, then removed");
    poll_until("a refused transaction", DEADLINE, || {
        (appservice.requests().len() > before).then_some(())
    });
    let refused_txn: u64 = appservice.requests()[before]
        .path
        .rsplit('/')
        .next()
        .and_then(|t| t.parse().ok())
        .expect("a numeric txnId");
    let file = env.data_dir().join("appservices").join("bridge.yaml");
    std::fs::remove_file(&file).expect("removing the registration");
    assert_eq!(reload(&env), 0);
    appservice.set_behaviour(Behaviour::Normal);
    let gap: Vec<String> = (0..5)
        .map(|i| alice.send_text(&room, &format!("while removed {i}")))
        .collect();

    // Added again with the same id: it gets what happens from now on.
    TestAppservice::install(
        &env.data_dir(),
        "bridge",
        &bridge_yaml(&appservice, &[], ""),
    );
    assert_eq!(reload(&env), 1);
    let after = alice.send_text(&room, "after re-adding");
    wait_for(&appservice, std::slice::from_ref(&after));
    let got = appservice.event_ids();
    for id in gap.iter().chain([&refused]) {
        assert!(
            !got.contains(id),
            "{id} was sent while not registered: {got:?}"
        );
    }
    // Its transaction IDs went on counting: none repeats one it may have processed.
    let txns: Vec<u64> = appservice
        .transactions()
        .iter()
        .filter_map(|(txn, _)| txn.parse().ok())
        .collect();
    let last = *txns.last().expect("a transaction after re-adding");
    assert!(last > refused_txn, "txnIds {txns:?} restarted");
    assert_exactly_once(&appservice);
    poll_until("an empty queue", DEADLINE, || {
        (link(&env, "bridge")["queue_depth"] == 0).then_some(())
    });
}

#[test]
fn a_day_long_outage_backs_off_to_the_cap_and_is_caught_up_in_order() {
    const CAP_MS: i64 = 3_600_000;
    let config = "[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n\n\
                  [appservices]\nretry_cap_secs = 3600\nrequest_timeout_secs = 2\n";
    let (env, appservice) = setup_with(config, &[], "");
    let alice = env.register("alice");
    let ghost = env.register("bridge_kim");
    let room = alice.create_room(&json!({}));
    alice.invite(&room, &ghost.user_id);
    ghost.join(&room);
    let private = alice.create_room(&json!({}));
    let first = alice.send_text(&room, "before the outage");
    wait_for(&appservice, std::slice::from_ref(&first));

    // The appservice is up (it answers pings) but refuses every transaction.
    appservice.set_behaviour(Behaviour::RejectTransactions);
    let mut sent = vec![alice.send_text(&room, "hour 0")];
    poll_until("the first failure", DEADLINE, || {
        (link(&env, "bridge")["failures"].as_i64() >= Some(1)).then_some(())
    });
    // A successful ping ends the wait, so each ping stands for a backoff period running out:
    // the doubling reaches the one-hour cap without an hour of real waiting.
    let ping = || {
        let (head, body) = admin_post(&env.data_dir(), "/v1/appservices/bridge/ping", "");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    };
    let retry = || -> Value {
        let before = link(&env, "bridge")["failures"].as_i64().expect("failures");
        ping();
        poll_until("a retry after the ping", DEADLINE, || {
            let shown = link(&env, "bridge");
            (shown["failures"].as_i64().expect("failures") > before).then_some(shown)
        })
    };
    let mut backoffs = Vec::new();
    while backoffs.last() != Some(&CAP_MS) {
        assert!(
            backoffs.len() < 30,
            "the backoff never reached the cap: {backoffs:?}"
        );
        let shown = retry();
        let failures = shown["failures"].as_i64().expect("failures");
        let backoff = shown["backoff_ms"]
            .as_i64()
            .expect("a backoff while failing");
        let doubling = 1000i64 << (failures - 1).min(30);
        assert_eq!(backoff, doubling.min(CAP_MS), "{shown:#}");
        assert_eq!(shown["link"], "down");
        backoffs.push(backoff);
    }
    assert!(
        backoffs.windows(2).all(|w| w[0] <= w[1]),
        "the backoff only grows: {backoffs:?}"
    );

    // A day at the cap: every hour ten messages, and a retry that fails.
    let mut passed_over = Vec::new();
    for hour in 1..=24 {
        for i in 0..10 {
            sent.push(alice.send_text(&room, &format!("hour {hour} message {i}")));
        }
        passed_over.push(alice.send_text(&private, &format!("not the bridge's, hour {hour}")));
        let shown = retry();
        assert_eq!(shown["backoff_ms"], CAP_MS, "{shown:#}");
    }
    // The queue depth counts exactly what waits for it, not the other room's messages.
    assert_eq!(
        link(&env, "bridge")["queue_depth"],
        sent.len(),
        "every message of the day waits"
    );
    let early = appservice.event_ids();
    assert!(
        sent.iter().all(|id| !early.contains(id)),
        "nothing delivered during the outage"
    );

    // It takes transactions again; the next ping sends everything now, not an hour later.
    appservice.set_behaviour(Behaviour::Normal);
    ping();
    wait_for(&appservice, &sent);
    let got: Vec<String> = room_events(&appservice, &room)
        .into_iter()
        .filter(|id| sent.contains(id))
        .collect();
    assert_eq!(got, sent, "in the order sent");
    assert_exactly_once(&appservice);
    for id in &passed_over {
        assert!(!appservice.event_ids().contains(id));
    }
    let shown = poll_until("the link up and the queue empty", DEADLINE, || {
        let shown = link(&env, "bridge");
        (shown["link"] == "up" && shown["queue_depth"] == 0).then_some(shown)
    });
    assert_eq!(shown["failures"], 0);
    assert_eq!(shown["backoff_ms"], Value::Null);
}
