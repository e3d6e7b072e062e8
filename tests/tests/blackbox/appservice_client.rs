//! The Client-Server side of the Application Service API: an appservice's `as_token`
//! authenticates as its sender or, with `user_id`, as a registered user in its namespace, on a
//! device named by `device_id`; `m.login.application_service` registers and logs in its users;
//! exclusive namespaces keep users and aliases to their appservice (`M_EXCLUSIVE`); `ts` sets
//! `origin_server_ts`; appservices publish rooms under their networks; MSC4190 devices;
//! `rate_limited: false`; an appservice user in a room with an ordinary user; reload on SIGHUP.
//!
//! Registration files are written into `<data_dir>/appservices/` before the server starts.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tests::{
    Client, SERVER_NAME, TestEnv, Value, assert_error, enc, json, ok, poll_until, str_field,
};

const BRIDGE_TOKEN: &str = "as-bridge-token";
const DEVICES_TOKEN: &str = "as-devices-token";

/// A bridge: exclusive `@bridge_*` users and `#bridge_*` aliases, not rate limited.
fn bridge_yaml() -> String {
    format!(
        r#"id: bridge
url: null
as_token: {BRIDGE_TOKEN}
hs_token: hs-bridge-token
sender_localpart: bridgebot
rate_limited: false
protocols: [irc]
namespaces:
  users:
    - exclusive: true
      regex: '@bridge_.*:{server}'
  aliases:
    - exclusive: true
      regex: '#bridge_.*:{server}'
"#,
        server = SERVER_NAME.replace('.', "\\.")
    )
}

/// An encrypted bridge that manages its users' devices itself (MSC4190), rate limited.
fn devices_yaml() -> String {
    format!(
        r#"id: devices
url: null
as_token: {DEVICES_TOKEN}
hs_token: hs-devices-token
sender_localpart: devicesbot
io.element.msc4190: true
namespaces:
  users:
    - exclusive: true
      regex: '@dev_.*'
  aliases:
    - exclusive: true
      regex: '#dev_.*'
"#
    )
}

fn write_registrations(data_dir: &Path, files: &[(&str, String)]) {
    let dir = data_dir.join("appservices");
    std::fs::create_dir_all(&dir).expect("creating the appservices folder");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("writing a registration file");
    }
}

/// A server with open registration, rate limits as given, and both registrations installed.
fn env_with(rate_limit: &str) -> TestEnv {
    let config = format!("[registration]\nenabled = true\n\n[rate_limit]\n{rate_limit}\n");
    TestEnv::with_config_setup(&config, |data_dir| {
        write_registrations(
            data_dir,
            &[
                ("bridge.yaml", bridge_yaml()),
                ("devices.yaml", devices_yaml()),
            ],
        );
    })
    .0
}

fn env() -> TestEnv {
    env_with("enabled = false")
}

fn user(localpart: &str) -> String {
    format!("@{localpart}:{SERVER_NAME}")
}

/// `path` with `user_id` (and `device_id`) query parameters appended.
fn acting(path: &str, user_id: &str, device_id: Option<&str>) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut out = format!("{path}{sep}user_id={}", enc(user_id));
    if let Some(device) = device_id {
        out.push_str(&format!("&device_id={}", enc(device)));
    }
    out
}

const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

/// Registers `localpart` through the appservice with `token` (no session).
fn as_register(env: &TestEnv, token: &str, localpart: &str) -> (u16, Value) {
    env.with_token(token).post(
        "/_matrix/client/v3/register",
        &json!({"type": "m.login.application_service", "username": localpart, "inhibit_login": true}),
    )
}

#[test]
fn as_token_authenticates_as_the_sender_and_masquerades_in_its_namespace() {
    let env = env();
    let bridge = env.with_token(BRIDGE_TOKEN);
    // No user_id: the sender, with no device.
    let me = ok(bridge.get(WHOAMI), "whoami as the sender");
    assert_eq!(me["user_id"], user("bridgebot"), "{me:#}");
    assert!(me.get("device_id").is_none(), "no device: {me:#}");
    // The deprecated query parameter works the same.
    let by_query = ok(
        env.anon()
            .get(&format!("{WHOAMI}?access_token={BRIDGE_TOKEN}")),
        "whoami with ?access_token=",
    );
    assert_eq!(by_query["user_id"], user("bridgebot"));

    // A user in the namespace who is not registered yet: 403.
    let ghost = user("bridge_alice");
    assert_error(
        &bridge.get(&acting(WHOAMI, &ghost, None)),
        403,
        "M_FORBIDDEN",
    );
    ok(
        as_register(&env, BRIDGE_TOKEN, "bridge_alice"),
        "register the ghost",
    );
    let me = ok(
        bridge.get(&acting(WHOAMI, &ghost, None)),
        "whoami as the ghost",
    );
    assert_eq!(me["user_id"], ghost, "{me:#}");

    // Outside the namespace (an ordinary user, another appservice's user): 403.
    env.register("carol");
    assert_error(
        &bridge.get(&acting(WHOAMI, &user("carol"), None)),
        403,
        "M_FORBIDDEN",
    );
    ok(
        as_register(&env, DEVICES_TOKEN, "dev_dan"),
        "the other appservice's user",
    );
    assert_error(
        &bridge.get(&acting(WHOAMI, &user("dev_dan"), None)),
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &bridge.get(&acting(WHOAMI, "@bridge_x:elsewhere.test", None)),
        403,
        "M_FORBIDDEN",
    );

    // A wrong token is an unknown token.
    assert_error(
        &env.with_token("as-wrong").get(WHOAMI),
        401,
        "M_UNKNOWN_TOKEN",
    );
}

#[test]
fn device_masquerading_and_endpoints_that_need_a_device() {
    let env = env();
    let bridge = env.with_token(BRIDGE_TOKEN);
    let ghost = user("bridge_bob");
    let login = ok(
        bridge.post(
            "/_matrix/client/v3/register",
            &json!({"type": "m.login.application_service", "username": "bridge_bob", "device_id": "BOBPHONE"}),
        ),
        "register with a session",
    );
    assert_eq!(login["device_id"], "BOBPHONE", "{login:#}");

    let me = ok(
        bridge.get(&acting(WHOAMI, &ghost, Some("BOBPHONE"))),
        "device_id",
    );
    assert_eq!(
        (&me["user_id"], &me["device_id"]),
        (&json!(ghost), &json!("BOBPHONE"))
    );
    let msc3202 = format!(
        "{}&org.matrix.msc3202.device_id=BOBPHONE",
        acting(WHOAMI, &ghost, None)
    );
    let me = ok(bridge.get(&msc3202), "org.matrix.msc3202.device_id");
    assert_eq!(me["device_id"], "BOBPHONE", "{me:#}");
    // A device the user does not have (or another user's): the spec's 400 M_UNKNOWN_DEVICE.
    assert_error(
        &bridge.get(&acting(WHOAMI, &ghost, Some("NOSUCH"))),
        400,
        "M_UNKNOWN_DEVICE",
    );
    let carol = env.register("carol");
    assert_error(
        &bridge.get(&acting(WHOAMI, &ghost, Some(&carol.device_id))),
        400,
        "M_UNKNOWN_DEVICE",
    );

    // Without a device, endpoints that act on one say which parameter is missing.
    let no_device = |method: &str, path: &str, body: Value| {
        let reply = bridge.call(method, &acting(path, &ghost, None), Some(&body));
        assert_error(&reply, 400, "M_MISSING_PARAM");
        assert!(
            reply.1["error"]
                .as_str()
                .is_some_and(|e| e.contains("device_id")),
            "{:#}",
            reply.1
        );
    };
    no_device("POST", "/_matrix/client/v3/keys/upload", json!({}));
    no_device("POST", "/_matrix/client/v3/logout", json!({}));
    no_device(
        "PUT",
        "/_matrix/client/v3/sendToDevice/m.test/txn1",
        json!({"messages": {}}),
    );
    // With the device they work.
    ok(
        bridge.post(
            &acting("/_matrix/client/v3/keys/upload", &ghost, Some("BOBPHONE")),
            &json!({}),
        ),
        "keys/upload on the device",
    );
    ok(
        bridge.post(
            &acting("/_matrix/client/v3/logout", &ghost, Some("BOBPHONE")),
            &json!({}),
        ),
        "logout of the device",
    );
    assert_error(
        &bridge.get(&acting(WHOAMI, &ghost, Some("BOBPHONE"))),
        400,
        "M_UNKNOWN_DEVICE",
    );
}

#[test]
fn appservice_registration_and_login() {
    let env = env();
    let bridge = env.with_token(BRIDGE_TOKEN);
    let register = |client: &Client, body: Value| client.post("/_matrix/client/v3/register", &body);

    // Registration with a session, no UIA, no password.
    let session = ok(
        register(
            &bridge,
            json!({"type": "m.login.application_service", "username": "bridge_eve"}),
        ),
        "register bridge_eve",
    );
    assert_eq!(session["user_id"], user("bridge_eve"));
    let eve = env.client_from_login(&session);
    assert_eq!(
        ok(eve.get(WHOAMI), "eve's own token")["user_id"],
        user("bridge_eve")
    );
    let inhibited = ok(
        as_register(&env, BRIDGE_TOKEN, "bridge_fay"),
        "inhibit_login",
    );
    assert_eq!(inhibited, json!({"user_id": user("bridge_fay")}));
    assert_error(
        &as_register(&env, BRIDGE_TOKEN, "bridge_fay"),
        400,
        "M_USER_IN_USE",
    );

    // Outside its namespace, or in another appservice's: M_EXCLUSIVE.
    assert_error(
        &as_register(&env, BRIDGE_TOKEN, "plainuser"),
        400,
        "M_EXCLUSIVE",
    );
    assert_error(
        &as_register(&env, BRIDGE_TOKEN, "dev_x"),
        400,
        "M_EXCLUSIVE",
    );
    // Without the as_token, or with a user's token: 401.
    let as_type = json!({"type": "m.login.application_service", "username": "bridge_gil"});
    assert_error(
        &register(&env.anon(), as_type.clone()),
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &register(&env.with_token("as-wrong"), as_type.clone()),
        401,
        "M_UNKNOWN_TOKEN",
    );
    let carol = env.register("carol");
    assert_error(&register(&carol, as_type), 401, "M_UNKNOWN_TOKEN");

    // Ordinary registration of a name in an exclusive namespace: M_EXCLUSIVE.
    let normal = json!({"username": "bridge_hal", "password": "pw-hal-1234", "auth": {"type": "m.login.dummy"}});
    assert_error(&register(&env.anon(), normal), 400, "M_EXCLUSIVE");
    assert_error(
        &env.anon()
            .get("/_matrix/client/v3/register/available?username=bridge_hal"),
        400,
        "M_EXCLUSIVE",
    );

    // Login: the flow is offered; a registered user in the namespace gets a session.
    let flows = ok(env.anon().get("/_matrix/client/v3/login"), "GET /login");
    assert!(
        flows["flows"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["type"] == "m.login.application_service")),
        "{flows:#}"
    );
    let login = |client: &Client, who: &str| {
        client.post(
            "/_matrix/client/v3/login",
            &json!({"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": who}}),
        )
    };
    let fay = env.client_from_login(&ok(login(&bridge, "bridge_fay"), "login bridge_fay"));
    assert_eq!(
        ok(fay.get(WHOAMI), "fay's token")["user_id"],
        user("bridge_fay")
    );
    let by_id = ok(login(&bridge, &user("bridge_fay")), "login by full user ID");
    assert_eq!(by_id["user_id"], user("bridge_fay"));
    assert_error(&login(&bridge, "bridge_nobody"), 403, "M_FORBIDDEN");
    assert_error(&login(&bridge, "carol"), 400, "M_EXCLUSIVE");
    assert_error(&login(&env.anon(), "bridge_fay"), 401, "M_MISSING_TOKEN");
    assert_error(&login(&carol, "bridge_fay"), 401, "M_UNKNOWN_TOKEN");

    // An MSC4190 appservice gets no sessions: register needs inhibit_login, login is refused.
    let devices = env.with_token(DEVICES_TOKEN);
    assert_error(
        &register(
            &devices,
            json!({"type": "m.login.application_service", "username": "dev_ivy"}),
        ),
        400,
        "M_APPSERVICE_LOGIN_UNSUPPORTED",
    );
    ok(
        as_register(&env, DEVICES_TOKEN, "dev_ivy"),
        "inhibit_login passes",
    );
    assert_error(
        &login(&devices, "dev_ivy"),
        400,
        "M_APPSERVICE_LOGIN_UNSUPPORTED",
    );
}

#[test]
fn exclusive_alias_namespaces() {
    let env = env();
    let alice = env.register("alice");
    let bridge = env.with_token(BRIDGE_TOKEN);
    let devices = env.with_token(DEVICES_TOKEN);
    let room = alice.create_room(&json!({"preset": "public_chat"}));
    let alias_path = |name: &str| {
        format!(
            "/_matrix/client/v3/directory/room/{}",
            enc(&env.alias(name))
        )
    };
    let body = json!({"room_id": room});

    // An ordinary user cannot take an alias in the bridge's exclusive namespace.
    assert_error(
        &alice.put(&alias_path("bridge_chat"), &body),
        400,
        "M_EXCLUSIVE",
    );
    assert_error(
        &alice.post(
            "/_matrix/client/v3/createRoom",
            &json!({"room_alias_name": "bridge_new"}),
        ),
        400,
        "M_EXCLUSIVE",
    );
    ok(
        alice.put(&alias_path("plain"), &body),
        "an alias outside every namespace",
    );

    // The bridge may, without being in the room; the other appservice may not.
    ok(
        bridge.put(&alias_path("bridge_chat"), &body),
        "the owning appservice",
    );
    assert_error(
        &devices.put(&alias_path("bridge_other"), &body),
        400,
        "M_EXCLUSIVE",
    );
    // An appservice creates aliases only in its own namespace.
    assert_error(
        &bridge.put(&alias_path("plain2"), &body),
        400,
        "M_EXCLUSIVE",
    );
    let resolved = ok(alice.get(&alias_path("bridge_chat")), "resolve");
    assert_eq!(resolved["room_id"], room);

    // Deleting: only the owning appservice.
    assert_error(
        &alice.delete(&alias_path("bridge_chat")),
        400,
        "M_EXCLUSIVE",
    );
    assert_error(
        &devices.delete(&alias_path("bridge_chat")),
        400,
        "M_EXCLUSIVE",
    );
    ok(
        bridge.delete(&alias_path("bridge_chat")),
        "the owner deletes",
    );
    assert_error(&alice.get(&alias_path("bridge_chat")), 404, "M_NOT_FOUND");

    // createRoom with an alias in its namespace, as the sender.
    let made = ok(
        bridge.post(
            "/_matrix/client/v3/createRoom",
            &json!({"room_alias_name": "bridge_made"}),
        ),
        "the bridge's createRoom",
    );
    let resolved = ok(alice.get(&alias_path("bridge_made")), "resolve bridge_made");
    assert_eq!(resolved["room_id"], made["room_id"]);
}

#[test]
fn ts_sets_origin_server_ts_for_appservices_only() {
    let env = env();
    let alice = env.register("alice");
    let bridge = env.with_token(BRIDGE_TOKEN);
    let ghost = user("bridge_ts");
    ok(
        as_register(&env, BRIDGE_TOKEN, "bridge_ts"),
        "register the ghost",
    );
    let made = ok(
        bridge.post(
            &acting("/_matrix/client/v3/createRoom", &ghost, None),
            &json!({"preset": "public_chat"}),
        ),
        "the ghost creates a room",
    );
    let room = str_field(&made, "room_id");
    alice.join(&room);

    let event_ts = |event_id: &str| {
        let event = alice.get_ok(&format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            enc(&room),
            enc(event_id)
        ));
        event["origin_server_ts"]
            .as_i64()
            .expect("origin_server_ts")
    };
    let send = |client: &Client, query: &str, txn: &str| {
        client.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}{query}",
                enc(&room)
            ),
            &json!({"msgtype": "m.text", "body": "bridged"}),
        )
    };
    let query = format!("?user_id={}&ts=1234567890", enc(&ghost));
    let sent = ok(send(&bridge, &query, "t1"), "send with ts");
    assert_eq!(event_ts(&str_field(&sent, "event_id")), 1_234_567_890);

    let state_path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.topic/{}",
        enc(&room),
        acting("", &ghost, None)
    );
    let state = ok(
        bridge.put(
            &format!("{state_path}&ts=2000"),
            &json!({"topic": "bridged"}),
        ),
        "state with ts",
    );
    assert_eq!(event_ts(&str_field(&state, "event_id")), 2000);

    for bad in ["abc", "-1", "9007199254740992", "1.5"] {
        let query = format!("?user_id={}&ts={bad}", enc(&ghost));
        let reply = send(&bridge, &query, &format!("bad{bad}"));
        assert_error(&reply, 400, "M_INVALID_PARAM");
    }
    // An ordinary user's ts is not the appservice extension: ignored.
    let sent = ok(send(&alice, "?ts=1000", "a1"), "a user's send with ts");
    assert!(event_ts(&str_field(&sent, "event_id")) > 1_600_000_000_000);
}

#[test]
fn appservice_published_room_lists() {
    let env = env();
    let alice = env.register("alice");
    let bridge = env.with_token(BRIDGE_TOKEN);
    let main_room = alice.create_room(&json!({"preset": "public_chat", "visibility": "public"}));
    let irc_room = alice.create_room(&json!({"preset": "public_chat"}));
    let list_path = |network: &str, room: &str| {
        format!(
            "/_matrix/client/v3/directory/list/appservice/{network}/{}",
            enc(room)
        )
    };
    let listed = |body: Value| -> Vec<String> {
        let page = ok(
            alice.post("/_matrix/client/v3/publicRooms", &body),
            "publicRooms",
        );
        let mut rooms: Vec<String> = page["chunk"]
            .as_array()
            .unwrap_or_else(|| panic!("{page:#}"))
            .iter()
            .map(|r| str_field(r, "room_id"))
            .collect();
        rooms.sort();
        rooms
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    ok(
        bridge.put(
            &list_path("irc", &irc_room),
            &json!({"visibility": "public"}),
        ),
        "list",
    );
    assert_error(
        &alice.put(
            &list_path("irc", &irc_room),
            &json!({"visibility": "public"}),
        ),
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &bridge.put(
            &list_path("irc", "!nosuch:outpost.test"),
            &json!({"visibility": "public"}),
        ),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &bridge.put(
            &list_path("irc", &irc_room),
            &json!({"visibility": "hidden"}),
        ),
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &bridge.put(&list_path("irc", &irc_room), &json!({})),
        400,
        "M_BAD_JSON",
    );

    assert_eq!(
        listed(json!({})),
        vec![main_room.clone()],
        "the unit's own list"
    );
    assert_eq!(
        listed(json!({"third_party_instance_id": "bridge|irc"})),
        vec![irc_room.clone()]
    );
    assert_eq!(
        listed(json!({"third_party_instance_id": "irc"})),
        vec![irc_room.clone()]
    );
    assert!(listed(json!({"third_party_instance_id": "bridge|mail"})).is_empty());
    assert_eq!(
        listed(json!({"include_all_networks": true})),
        sorted(vec![main_room.clone(), irc_room.clone()])
    );
    assert_error(
        &alice.post(
            "/_matrix/client/v3/publicRooms",
            &json!({"include_all_networks": true, "third_party_instance_id": "irc"}),
        ),
        400,
        "M_INVALID_PARAM",
    );
    ok(
        bridge.put(
            &list_path("irc", &irc_room),
            &json!({"visibility": "private"}),
        ),
        "unlist",
    );
    assert!(listed(json!({"third_party_instance_id": "irc"})).is_empty());
}

#[test]
fn msc4190_devices_are_made_and_deleted_by_the_appservice() {
    let env = env();
    let devices = env.with_token(DEVICES_TOKEN);
    let ghost = user("dev_kim");
    ok(as_register(&env, DEVICES_TOKEN, "dev_kim"), "register");
    let device_path = |id: &str| acting(&format!("/_matrix/client/v3/devices/{id}"), &ghost, None);

    ok(
        devices.put(
            &device_path("KIMDEV"),
            &json!({"display_name": "Kim's bridge device"}),
        ),
        "create",
    );
    let list = ok(
        devices.get(&acting("/_matrix/client/v3/devices", &ghost, None)),
        "list",
    );
    let names: Vec<&Value> = list["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| &d["device_id"])
        .collect();
    assert_eq!(names, [&json!("KIMDEV")], "{list:#}");
    assert_eq!(list["devices"][0]["display_name"], "Kim's bridge device");
    let me = ok(
        devices.get(&acting(WHOAMI, &ghost, Some("KIMDEV"))),
        "act on the device",
    );
    assert_eq!(me["device_id"], "KIMDEV");
    // Keys go up on the new device.
    ok(
        devices.post(
            &acting("/_matrix/client/v3/keys/upload", &ghost, Some("KIMDEV")),
            &json!({}),
        ),
        "keys/upload",
    );

    // Deleting needs no user-interactive auth for the appservice.
    ok(devices.delete(&device_path("KIMDEV")), "delete without UIA");
    assert_error(
        &devices.get(&acting(WHOAMI, &ghost, Some("KIMDEV"))),
        400,
        "M_UNKNOWN_DEVICE",
    );
    ok(
        devices.put(&device_path("KIM2"), &json!({})),
        "create another",
    );
    ok(
        devices.post(
            &acting("/_matrix/client/v3/delete_devices", &ghost, None),
            &json!({"devices": ["KIM2"]}),
        ),
        "delete_devices without UIA",
    );
    let list = ok(
        devices.get(&acting("/_matrix/client/v3/devices", &ghost, None)),
        "list",
    );
    assert_eq!(list["devices"], json!([]));

    // An ordinary user still renames only devices that exist, and deletes with UIA.
    let alice = env.register("alice");
    assert_error(
        &alice.put("/_matrix/client/v3/devices/NEWDEV", &json!({})),
        404,
        "M_NOT_FOUND",
    );
    let (status, body) = alice.delete(&format!("/_matrix/client/v3/devices/{}", alice.device_id));
    assert_eq!(status, 401, "UIA for a user: {body:#}");
    assert!(body["flows"].is_array(), "{body:#}");
}

#[test]
fn rate_limits_follow_the_registration() {
    let env = env_with("enabled = true\nper_second = 0.5\nburst = 5");
    let bridge = env.with_token(BRIDGE_TOKEN);
    for n in 0..30 {
        ok(
            bridge.get(WHOAMI),
            &format!("unlimited appservice request {n}"),
        );
    }
    let devices = env.with_token(DEVICES_TOKEN);
    let limited = (0..30)
        .map(|_| devices.get(WHOAMI))
        .find(|(status, _)| *status != 200);
    let reply = limited.expect("a rate-limited appservice is limited");
    assert_error(&reply, 429, "M_LIMIT_EXCEEDED");
}

#[test]
fn an_appservice_user_and_a_normal_user_talk_in_a_room() {
    let env = env();
    let alice = env.register("alice");
    let bridge = env.with_token(BRIDGE_TOKEN);
    let ghost = user("bridge_zed");
    ok(
        as_register(&env, BRIDGE_TOKEN, "bridge_zed"),
        "register the ghost",
    );
    let room = alice.create_room(&json!({"preset": "private_chat"}));
    alice.invite(&room, &ghost);
    ok(
        bridge.post(
            &acting(
                &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
                &ghost,
                None,
            ),
            &json!({}),
        ),
        "the ghost joins",
    );
    ok(
        bridge.put(
            &acting(
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/z1",
                    enc(&room)
                ),
                &ghost,
                None,
            ),
            &json!({"msgtype": "m.text", "body": "hello from IRC"}),
        ),
        "the ghost speaks",
    );
    let said_by = |sync: &Value, sender: &str, body: &str| {
        sync["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .is_some_and(|events| {
                events
                    .iter()
                    .any(|e| e["sender"] == sender && e["content"]["body"] == body)
            })
    };
    alice.sync_until(None, None, Duration::from_secs(10), |s| {
        said_by(s, &ghost, "hello from IRC")
    });
    alice.send_text(&room, "hello from Matrix");
    let ghost_sync = |since: Option<String>| {
        let mut query = format!("timeout=1000&user_id={}", enc(&ghost));
        if let Some(since) = since {
            query.push_str(&format!("&since={}", enc(&since)));
        }
        bridge.sync_raw(&query)
    };
    let mut since = None;
    poll_until(
        "the ghost to see alice's message",
        Duration::from_secs(10),
        || {
            let sync = ghost_sync(since.take());
            if said_by(&sync, &alice.user_id, "hello from Matrix") {
                return Some(());
            }
            since = Some(str_field(&sync, "next_batch"));
            None
        },
    );
    let members = ok(
        alice.get(&format!(
            "/_matrix/client/v3/rooms/{}/joined_members",
            enc(&room)
        )),
        "members",
    );
    assert!(members["joined"].get(&ghost).is_some(), "{members:#}");
}

#[test]
fn registrations_reload_on_sighup() {
    let config = "[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n";
    let (env, ()) = TestEnv::with_config_setup(config, |data_dir| {
        write_registrations(data_dir, &[("bridge.yaml", bridge_yaml())]);
    });
    let hup = || {
        let status = Command::new("kill")
            .args(["-HUP", &env.pid().to_string()])
            .status()
            .expect("running kill(1)");
        assert!(status.success());
    };
    ok(env.with_token(BRIDGE_TOKEN).get(WHOAMI), "loaded at start");
    assert_error(
        &env.with_token(DEVICES_TOKEN).get(WHOAMI),
        401,
        "M_UNKNOWN_TOKEN",
    );

    write_registrations(&env.data_dir(), &[("devices.yaml", devices_yaml())]);
    hup();
    poll_until(
        "the new registration to load",
        Duration::from_secs(10),
        || (env.with_token(DEVICES_TOKEN).get(WHOAMI).0 == 200).then_some(()),
    );
    std::fs::remove_file(env.data_dir().join("appservices").join("bridge.yaml")).expect("remove");
    hup();
    poll_until(
        "the removed registration to unload",
        Duration::from_secs(10),
        || (env.with_token(BRIDGE_TOKEN).get(WHOAMI).0 == 401).then_some(()),
    );
}

#[test]
fn appservices_replace_cross_signing_keys_without_uia() {
    let env = env();
    let bridge = env.with_token(BRIDGE_TOKEN);
    let ghost = user("bridge_xs");
    ok(
        as_register(&env, BRIDGE_TOKEN, "bridge_xs"),
        "register the ghost",
    );
    let master = |user_id: &str| {
        let public = vodozemac::Ed25519Keypair::new().public_key().to_base64();
        json!({"master_key": {
            "user_id": user_id, "usage": ["master"], "keys": {format!("ed25519:{public}"): public},
        }})
    };
    let path = acting(
        "/_matrix/client/v3/keys/device_signing/upload",
        &ghost,
        None,
    );
    ok(bridge.post(&path, &master(&ghost)), "first upload");
    let second = master(&ghost);
    ok(bridge.post(&path, &second), "replacement without UIA");
    let query = ok(
        bridge.post(
            &acting("/_matrix/client/v3/keys/query", &ghost, None),
            &json!({"device_keys": {&ghost: []}}),
        ),
        "keys/query",
    );
    assert_eq!(
        query["master_keys"][&ghost]["keys"], second["master_key"]["keys"],
        "{query:#}"
    );
    // A user replacing theirs still needs their password.
    let alice = env.register("alice");
    let alice_id = alice.user_id.clone();
    let upload = "/_matrix/client/v3/keys/device_signing/upload";
    ok(
        alice.post(upload, &master(&alice_id)),
        "alice's first upload",
    );
    assert_eq!(alice.post(upload, &master(&alice_id)).0, 401);
}
