//! Bad input, table-driven: malformed and mistyped bodies, oversized bodies, invalid IDs,
//! unknown room versions, unknown endpoints and methods, missing and unknown tokens, bad query
//! parameters. Each case asserts status and `errcode`; the server must still answer afterwards.

use std::io::Write;
use std::net::TcpStream;
use tests::{Client, TestEnv, enc, json, ok, raw_http};

/// Which access token a case sends.
#[derive(Clone, Copy)]
enum Token {
    None,
    Valid,
    Unknown,
}

/// One bad request and the replies (status, errcode) that are acceptable for it.
struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    token: Token,
    body: Vec<u8>,
    expect: Vec<(u16, &'static str)>,
}

fn case(
    name: &'static str,
    method: &'static str,
    path: impl Into<String>,
    token: Token,
    body: impl Into<Vec<u8>>,
    expect: &[(u16, &'static str)],
) -> Case {
    Case {
        name,
        method,
        path: path.into(),
        token,
        body: body.into(),
        expect: expect.to_vec(),
    }
}

/// Sends every case over a raw connection and returns a description of each mismatch.
fn check(env: &TestEnv, token: &str, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json",
            case.method,
            case.path,
            env.addr()
        );
        match case.token {
            Token::None => {}
            Token::Valid => head.push_str(&format!("\r\nAuthorization: Bearer {token}")),
            Token::Unknown => head.push_str("\r\nAuthorization: Bearer syt_not_a_real_token"),
        }
        let reply = match raw_http(env.addr(), &head, &case.body) {
            Ok(reply) => reply,
            Err(err) => {
                failures.push(format!("{}: transport error {err}", case.name));
                continue;
            }
        };
        let body = reply.json();
        let got = (reply.status, body["errcode"].as_str().unwrap_or("<none>"));
        let acceptable = case
            .expect
            .iter()
            .any(|&(status, code)| got == (status, code));
        if !acceptable || !body["error"].is_string() {
            failures.push(format!(
                "{}: {} {} -> {} {}; expected one of {:?} with an `error` string",
                case.name,
                case.method,
                case.path,
                reply.status,
                String::from_utf8_lossy(&reply.body),
                case.expect
            ));
        }
    }
    failures
}

fn assert_still_up(env: &TestEnv, alice: &Client) {
    ok(
        env.anon().get("/_matrix/client/versions"),
        "versions after bad input",
    );
    ok(
        alice.get("/_matrix/client/v3/account/whoami"),
        "whoami after bad input",
    );
}

/// IDs the cases refer to.
struct Ids {
    room: String,
    me: String,
    event: String,
}

use Token::{None as Anon, Unknown, Valid};
const NOT_JSON: &[(u16, &str)] = &[(400, "M_NOT_JSON")];
const BAD_JSON: &[(u16, &str)] = &[(400, "M_BAD_JSON")];
const INVALID: &[(u16, &str)] = &[(400, "M_INVALID_PARAM")];
const INVALID_EVENT: &[(u16, &str)] = &[(400, "M_INVALID_PARAM"), (404, "M_NOT_FOUND")];
const TOO_LARGE: &[(u16, &str)] = &[(413, "M_TOO_LARGE")];
const UNKNOWN_ROOM: &[(u16, &str)] = &[(404, "M_NOT_FOUND"), (403, "M_FORBIDDEN")];
const UNRECOGNIZED: &[(u16, &str)] = &[(404, "M_UNRECOGNIZED")];
const WRONG_METHOD: &[(u16, &str)] = &[(405, "M_UNRECOGNIZED")];
const MISSING_TOKEN: &[(u16, &str)] = &[(401, "M_MISSING_TOKEN")];
const UNKNOWN_TOKEN: &[(u16, &str)] = &[(401, "M_UNKNOWN_TOKEN")];

/// The table: one line per bad request.
#[rustfmt::skip]
fn cases(ids: &Ids) -> Vec<Case> {
    let (r, me) = (enc(&ids.room), enc(&ids.me));
    let v3 = "/_matrix/client/v3";
    let send = format!("{v3}/rooms/{r}/send/m.room.message");
    let huge = format!(r#"{{"msgtype":"m.text","body":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let big_event = format!(r#"{{"msgtype":"m.text","body":"{}"}}"#, "y".repeat(70_000));
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let long_key = "k".repeat(300);
    let unknown_room = enc("!nosuchroom:outpost.test");
    let event = enc(&ids.event);
    vec![
        // Bodies that are not JSON at all.
        case("garbage body", "POST", format!("{v3}/createRoom"), Valid, "{not json", NOT_JSON),
        case("plain text event", "PUT", format!("{send}/t1"), Valid, "hello", NOT_JSON),
        case("invalid UTF-8", "PUT", format!("{send}/t2"), Valid, b"{\"body\":\"\xff\xfe\"}".to_vec(), NOT_JSON),
        case("truncated JSON", "POST", format!("{v3}/login"), Anon, r#"{"type":"m.login.pass"#, NOT_JSON),
        // JSON of the wrong shape.
        case("array instead of object", "POST", format!("{v3}/createRoom"), Valid, "[1,2,3]", BAD_JSON),
        case("string instead of object", "PUT", format!("{send}/t3"), Valid, r#""text""#, BAD_JSON),
        case("number as room name", "POST", format!("{v3}/createRoom"), Valid, r#"{"name":5}"#, BAD_JSON),
        case("string as invite list", "POST", format!("{v3}/createRoom"), Valid, r#"{"invite":"@bob:outpost.test"}"#, BAD_JSON),
        case("number as password", "POST", format!("{v3}/login"), Anon,
            r#"{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":123}"#, BAD_JSON),
        case("array as state content", "PUT", format!("{v3}/rooms/{r}/state/m.room.topic"), Valid, "[]", BAD_JSON),
        case("string as filter limit", "POST", format!("{v3}/user/{me}/filter"), Valid, r#"{"room":{"timeline":{"limit":"ten"}}}"#, BAD_JSON),
        case("missing user_id", "POST", format!("{v3}/rooms/{r}/invite"), Valid, "{}", &[(400, "M_BAD_JSON"), (400, "M_MISSING_PARAM")]),
        case("integer beyond canonical JSON", "PUT", format!("{send}/t4"), Valid, r#"{"n":9007199254740993}"#, &[(400, "M_BAD_JSON"), (400, "M_INVALID_PARAM")]),
        case("deeply nested JSON", "PUT", format!("{send}/t5"), Valid, nested, &[(400, "M_NOT_JSON"), (400, "M_BAD_JSON")]),
        // Size limits.
        case("body over max_body_bytes", "PUT", format!("{send}/t6"), Valid, huge, TOO_LARGE),
        case("garbage over max_body_bytes", "POST", format!("{v3}/createRoom"), Valid, vec![b'z'; 3 * 1024 * 1024], TOO_LARGE),
        case("event over 64 KiB", "PUT", format!("{send}/t7"), Valid, big_event, &[(413, "M_TOO_LARGE"), (400, "M_TOO_LARGE"), (400, "M_BAD_JSON")]),
        case("state key over 255 bytes", "PUT", format!("{v3}/rooms/{r}/state/org.example.k/{long_key}"), Valid, "{}",
            &[(400, "M_BAD_JSON"), (400, "M_INVALID_PARAM"), (413, "M_TOO_LARGE"), (400, "M_TOO_LARGE")]),
        // Invalid identifiers.
        case("invalid room id: state", "GET", format!("{v3}/rooms/not-a-room/state"), Valid, "", INVALID),
        case("invalid room id: send", "PUT", format!("{v3}/rooms/not-a-room/send/m.room.message/t8"), Valid, "{}", INVALID),
        case("invalid room id or alias: join", "POST", format!("{v3}/join/not-a-room"), Valid, "{}", INVALID),
        case("invalid user id: invite", "POST", format!("{v3}/rooms/{r}/invite"), Valid, r#"{"user_id":"not-a-user"}"#, INVALID),
        case("invalid user id: ban", "POST", format!("{v3}/rooms/{r}/ban"), Valid, r#"{"user_id":"@"}"#, INVALID),
        case("invalid user id: filter", "POST", format!("{v3}/user/not-a-user/filter"), Valid, "{}", &[(400, "M_INVALID_PARAM"), (403, "M_FORBIDDEN")]),
        case("invalid event id: event", "GET", format!("{v3}/rooms/{r}/event/not-an-event"), Valid, "", INVALID_EVENT),
        case("invalid event id: context", "GET", format!("{v3}/rooms/{r}/context/not-an-event"), Valid, "", INVALID_EVENT),
        case("invalid event id: redact", "PUT", format!("{v3}/rooms/{r}/redact/not-an-event/t9"), Valid, "{}", INVALID_EVENT),
        case("invalid alias", "GET", format!("{v3}/directory/room/no-sigil"), Valid, "", INVALID),
        case("unknown room version", "POST", format!("{v3}/createRoom"), Valid, r#"{"room_version":"999"}"#, &[(400, "M_UNSUPPORTED_ROOM_VERSION")]),
        case("unknown room: state", "GET", format!("{v3}/rooms/{unknown_room}/state"), Valid, "", UNKNOWN_ROOM),
        case("unknown room: send", "PUT", format!("{v3}/rooms/{unknown_room}/send/m.room.message/t10"), Valid, "{}", UNKNOWN_ROOM),
        case("unknown room: messages", "GET", format!("{v3}/rooms/{unknown_room}/messages?dir=b"), Valid, "", UNKNOWN_ROOM),
        // Bad query parameters.
        case("non-numeric sync timeout", "GET", format!("{v3}/sync?timeout=soon"), Valid, "", INVALID),
        case("bad messages direction", "GET", format!("{v3}/rooms/{r}/messages?dir=sideways"), Valid, "", INVALID),
        case("non-numeric messages limit", "GET", format!("{v3}/rooms/{r}/messages?dir=b&limit=many"), Valid, "", INVALID),
        case("broken inline filter", "GET", format!("{v3}/sync?timeout=0&filter={}", enc("{broken")), Valid, "",
            &[(400, "M_NOT_JSON"), (400, "M_BAD_JSON"), (400, "M_INVALID_PARAM")]),
        case("unknown filter id", "GET", format!("{v3}/sync?timeout=0&filter=424242"), Valid, "", &[(400, "M_INVALID_PARAM"), (404, "M_NOT_FOUND")]),
        // Unknown endpoints and wrong methods.
        case("unknown v3 endpoint", "GET", format!("{v3}/does/not/exist"), Valid, "", UNRECOGNIZED),
        case("unknown endpoint without token", "GET", format!("{v3}/does/not/exist"), Anon, "", UNRECOGNIZED),
        case("unknown API version", "GET", "/_matrix/client/v9/sync", Valid, "", UNRECOGNIZED),
        case("outside the Matrix tree", "GET", "/index.php", Anon, "", UNRECOGNIZED),
        case("unknown room sub-resource", "POST", format!("{v3}/rooms/{r}/teleport"), Valid, "{}", UNRECOGNIZED),
        case("DELETE versions", "DELETE", "/_matrix/client/versions", Anon, "", WRONG_METHOD),
        case("GET createRoom", "GET", format!("{v3}/createRoom"), Valid, "", WRONG_METHOD),
        case("PUT sync", "PUT", format!("{v3}/sync"), Valid, "{}", WRONG_METHOD),
        case("POST whoami", "POST", format!("{v3}/account/whoami"), Valid, "{}", WRONG_METHOD),
        case("POST send (needs PUT)", "POST", format!("{send}/t11"), Valid, "{}", WRONG_METHOD),
        // Authentication.
        case("whoami without token", "GET", format!("{v3}/account/whoami"), Anon, "", MISSING_TOKEN),
        case("createRoom without token", "POST", format!("{v3}/createRoom"), Anon, "{}", MISSING_TOKEN),
        case("sync without token", "GET", format!("{v3}/sync"), Anon, "", MISSING_TOKEN),
        case("event without token", "GET", format!("{v3}/rooms/{r}/event/{event}"), Anon, "", MISSING_TOKEN),
        case("whoami with unknown token", "GET", format!("{v3}/account/whoami"), Unknown, "", UNKNOWN_TOKEN),
        case("send with unknown token", "PUT", format!("{send}/t12"), Unknown, "{}", UNKNOWN_TOKEN),
        case("unknown token as query parameter", "GET", format!("{v3}/account/whoami?access_token=nope"), Anon, "", UNKNOWN_TOKEN),
    ]
}

#[test]
fn bad_requests_get_precise_errors() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let token = alice.access_token.clone().expect("registered with a token");
    let room = alice.create_room(&json!({}));
    let event = alice.send_text(&room, "target");
    let cases = cases(&Ids {
        room: room.clone(),
        me: alice.user_id.clone(),
        event: event.clone(),
    });
    let failures = check(&env, &token, &cases);
    assert_still_up(&env, &alice);
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // None of the rejected requests left an event behind.
    let messages = alice.all_messages(&room, "b", Some(&json!({ "types": ["m.room.message"] })));
    assert_eq!(tests::event_ids(&messages), vec![event]);
}

#[test]
fn configured_body_limit_is_enforced() {
    let env = TestEnv::with_config(
        "[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n\n[limits]\nmax_body_bytes = 4096\n",
    );
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));
    let body = |size: usize| json!({ "msgtype": "m.text", "body": "q".repeat(size) });
    let (status, reply) = alice.send_event(&room, "m.room.message", "small", &body(3000));
    assert_eq!(status, 200, "a body under the limit: {reply:#}");
    let token = alice.access_token.clone().expect("token");
    let head = format!(
        "PUT /_matrix/client/v3/rooms/{}/send/m.room.message/big HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAuthorization: Bearer {token}",
        enc(&room),
        env.addr()
    );
    let reply =
        raw_http(env.addr(), &head, body(5000).to_string().as_bytes()).expect("raw request");
    assert_eq!(
        (reply.status, reply.json()["errcode"].clone()),
        (413, json!("M_TOO_LARGE")),
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_still_up(&env, &alice);
}

#[test]
fn garbage_on_the_socket_does_not_hurt() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    for junk in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"POST /_matrix/client/v3/createRoom HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"na",
    ] {
        let mut stream = TcpStream::connect(env.addr()).expect("connect");
        // The server may answer 400 or just close; either way it must keep serving others.
        let _ = stream.write_all(junk);
        drop(stream);
    }
    assert_still_up(&env, &alice);
}
