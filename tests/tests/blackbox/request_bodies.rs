//! Request bodies and the connection around them, on raw sockets: a body the server answers
//! without reading (404, 405, 401) leaves the keep-alive connection usable for the next request
//! (or, when too large to drain, is answered with `Connection: close`); a body dribbled at a byte
//! at a time is cut on the client and on the federation listener; and the caps that are built
//! but were not exercised elsewhere: the federation listener's caps after the TLS handshake,
//! `long_poll_max` answered 429, and the admin socket served while the client caps are full.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use tests::federation::{Unit, UnitOptions, unit_ip};
use tests::{TestEnv, Value, admin_get, closed_within, connect_from, json, poll_until, str_field};

const OPEN: &str = "[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n";

/// One parsed HTTP/1.1 response.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Reads exactly one response (head plus a `Content-Length` or chunked body) from `stream`;
/// `None` when the connection ends or stalls first.
fn read_response(stream: &mut impl Read) -> Option<Response> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut response = Response {
        status,
        head,
        body: Vec::new(),
    };
    if let Some(length) = response.header("content-length") {
        let mut body = vec![0u8; length.parse().ok()?];
        stream.read_exact(&mut body).ok()?;
        response.body = body;
    } else if response
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                stream.read_exact(&mut byte).ok()?;
                line.push(byte[0]);
            }
            let size = usize::from_str_radix(String::from_utf8_lossy(&line).trim(), 16).ok()?;
            let mut chunk = vec![0u8; size + 2];
            stream.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            response.body.extend_from_slice(&chunk[..size]);
        }
    }
    Some(response)
}

fn local() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// Whether the server has closed `stream` (end of file or an error, without blocking).
fn is_closed(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).expect("non-blocking");
    let mut byte = [0u8; 1];
    let closed = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(err) => err.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).expect("blocking");
    closed
}

fn open(addr: SocketAddr) -> TcpStream {
    let stream = connect_from(local(), addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
}

const VERSIONS: &[u8] = b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn a_body_answered_unread_keeps_the_connection_alive() {
    let env = TestEnv::with_config(OPEN);
    let mut stream = open(env.addr());
    let body = [b'x'; 100];
    // 404 (unknown path), 405 (wrong method), 401 (no access token): each answered without
    // reading the body, each followed by a request on the same connection.
    for (request, want) in [
        ("POST /_matrix/client/v3/no_such_endpoint", 404),
        ("PUT /_matrix/client/versions", 405),
        ("POST /_matrix/client/v3/createRoom", 401),
    ] {
        let head = format!(
            "{request} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("head");
        stream.write_all(&body).expect("body");
        stream.write_all(VERSIONS).expect("second request");
        let first = read_response(&mut stream)
            .unwrap_or_else(|| panic!("no answer to {request} with an unread body"));
        assert_eq!(first.status, want, "{request}: {first:?}");
        let second = read_response(&mut stream).unwrap_or_else(|| {
            panic!("the request after {request} was not answered on the same connection")
        });
        assert_eq!(second.status, 200, "{second:?}");
        assert!(second.json()["versions"].is_array(), "{second:?}");
    }

    // A body too large to drain is answered, marked `Connection: close`, and the connection
    // ends cleanly instead of silently.
    let mut stream = open(env.addr());
    let big = vec![b'x'; 4 * 1024 * 1024];
    let head = format!(
        "POST /_matrix/client/v3/no_such_endpoint HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    let mut writer = stream.try_clone().expect("clone");
    let write = thread::spawn(move || {
        // The server stops reading once it has answered.
        let _ = writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.write_all(&big));
    });
    let reply = read_response(&mut stream).expect("an answer to the oversized unread body");
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(
        reply.header("connection").map(|v| v.to_ascii_lowercase()),
        Some("close".to_owned()),
        "{reply:?}"
    );
    assert!(
        closed_within(&mut stream, Duration::from_secs(10)),
        "the connection stayed open after Connection: close"
    );
    drop(stream);
    write.join().expect("writer thread");
}

/// What a dribbling client saw: the bytes the server sent, and whether it closed.
struct Dribbled {
    received: Vec<u8>,
    closed: bool,
}

/// Writes `head`, then the body one byte every 100 ms until the server answers or closes, then
/// collects the rest for up to 5 s. `None` if the server was still reading after `limit`. The
/// stream must have a read timeout of a few milliseconds.
fn dribble<S: Read + Write>(
    stream: &mut S,
    head: &str,
    length: usize,
    limit: Duration,
) -> Option<Dribbled> {
    stream.write_all(head.as_bytes()).expect("head");
    stream.flush().expect("flush");
    let start = Instant::now();
    let mut received = Vec::new();
    let mut closed = false;
    for _ in 0..length {
        if start.elapsed() > limit {
            return None;
        }
        if stream
            .write_all(b" ")
            .and_then(|()| stream.flush())
            .is_err()
        {
            break;
        }
        thread::sleep(Duration::from_millis(100));
        closed = probe(stream, &mut received);
        if closed || !received.is_empty() {
            break;
        }
    }
    let until = Instant::now() + Duration::from_secs(5);
    while !closed && Instant::now() < until {
        closed = probe(stream, &mut received);
    }
    Some(Dribbled { received, closed })
}

/// Reads what has arrived into `received`; `true` once the server has closed.
fn probe<S: Read>(stream: &mut S, received: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => {
            received.extend_from_slice(&buf[..n]);
            false
        }
        Err(err) => !matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn a_slow_body_is_cut_on_the_client_listener() {
    let env = TestEnv::with_config(&format!(
        "{OPEN}\n[connections]\nbody_timeout_secs = 2\nbody_min_rate = 1024\n"
    ));
    let mut stream = open(env.addr());
    stream
        .set_read_timeout(Some(Duration::from_millis(1)))
        .expect("probe timeout");
    // /login reads its body: 2,000 bytes at 10 bytes/s would hold the connection 200 s.
    let head = "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\n\
                Content-Type: application/json\r\nContent-Length: 2000\r\n\r\n";
    let start = Instant::now();
    let outcome = dribble(&mut stream, head, 2000, Duration::from_secs(20));
    let took = start.elapsed();
    let outcome =
        outcome.unwrap_or_else(|| panic!("a slow body was still being read after {took:?}"));
    let reply = read_response(&mut outcome.received.as_slice()).unwrap_or_else(|| {
        panic!(
            "the slow body was cut without an answer after {took:?}: {:?}",
            String::from_utf8_lossy(&outcome.received)
        )
    });
    assert_eq!(reply.status, 408, "{reply:?}");
    assert_eq!(reply.json()["errcode"], "M_UNKNOWN", "{reply:?}");
    assert_eq!(
        reply.header("connection").map(|v| v.to_ascii_lowercase()),
        Some("close".to_owned())
    );
    assert!(
        outcome.closed,
        "the connection stayed open after the slow body was cut"
    );
    // A body at an ordinary rate is not affected.
    let alice = env.register("alice");
    let room = alice.create_room(&json!({"name": "x".repeat(100)}));
    assert!(room.starts_with('!'));
}

fn unit_with(toml: &str) -> Unit {
    let options = UnitOptions {
        extra_toml: toml.to_owned(),
        ..UnitOptions::default()
    };
    let mut unit = Unit::new("unit-a.test", unit_ip(0), &options);
    unit.start();
    unit
}

#[test]
fn a_slow_body_is_cut_on_the_federation_listener() {
    let unit = unit_with("[connections]\nbody_timeout_secs = 2\nbody_min_rate = 1024\n");
    let fed = unit.fed_client();
    let mut stream = fed.connect_from(local()).expect("TLS connection");
    stream
        .sock
        .set_read_timeout(Some(Duration::from_millis(1)))
        .expect("probe timeout");
    let head = format!(
        "PUT /_matrix/federation/v1/send/slow1 HTTP/1.1\r\nHost: {}\r\n\
         Authorization: X-Matrix origin=\"unit-b.test\",destination=\"{}\",key=\"ed25519:a\",sig=\"x\"\r\n\
         Content-Type: application/json\r\nContent-Length: 2000\r\n\r\n",
        unit.name(),
        unit.name()
    );
    let start = Instant::now();
    let outcome = dribble(&mut stream, &head, 2000, Duration::from_secs(20));
    let took = start.elapsed();
    let outcome =
        outcome.unwrap_or_else(|| panic!("a slow body was still being read after {took:?}"));
    if let Some(reply) = read_response(&mut outcome.received.as_slice()) {
        assert!(
            reply.status >= 400,
            "a cut body must not be accepted: {reply:?}"
        );
    }
    assert!(
        outcome.closed,
        "the federation connection stayed open after the slow body was cut"
    );
}

/// TLS connections held open by a test, with which of them the server has closed.
struct Held {
    streams: Vec<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
    closed: Vec<bool>,
}

impl Held {
    fn open(fed: &tests::federation::FedClient, from: IpAddr, count: usize) -> Held {
        let streams: Vec<_> = (0..count)
            .map(|_| fed.connect_from(from).expect("TLS connection"))
            .collect();
        for stream in &streams {
            stream
                .sock
                .set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
        }
        Held {
            closed: vec![false; streams.len()],
            streams,
        }
    }

    /// How many the server has closed so far.
    fn closed(&mut self) -> usize {
        for (stream, closed) in self.streams.iter_mut().zip(&mut self.closed) {
            if !*closed {
                *closed = closed_within(stream, Duration::from_millis(40));
            }
        }
        self.closed.iter().filter(|c| **c).count()
    }
}

#[test]
fn federation_caps_apply_after_the_tls_handshake() {
    let unit = unit_with(
        "[connections]
federation_max = 6
federation_max_per_address = 4
         header_timeout_secs = 300
idle_timeout_secs = 300
",
    );
    let fed = unit.fed_client();
    // Twelve idle TLS connections from one address: past the per-address cap of 4, the
    // oldest idle ones are closed to admit the new ones (the timeouts are far away).
    let mut first = Held::open(&fed, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 60)), 12);
    poll_until(
        "8 of 12 idle TLS connections closed under a per-address cap of 4",
        Duration::from_secs(10),
        || (first.closed() >= 8).then_some(()),
    );
    assert_eq!(first.closed(), 8, "more closed than the cap requires");
    // Four more from a second address: the listener-wide cap of 6 closes older ones again.
    let mut second = Held::open(&fed, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 61)), 4);
    poll_until(
        "at most 6 idle federation connections under a listener cap of 6",
        Duration::from_secs(10),
        || ((12 - first.closed()) + (4 - second.closed()) <= 6).then_some(()),
    );
    // A fresh peer connection is still served.
    let reply = fed
        .request("GET", "/_matrix/federation/v1/version", None, None)
        .expect("a fresh federation request");
    assert_eq!(reply.status, 200, "{reply:?}");
    poll_until("the cap warning in the log", Duration::from_secs(5), || {
        unit.log().contains("connection cap reached").then_some(())
    });
}

#[test]
fn long_polls_past_long_poll_max_get_429() {
    let env = TestEnv::with_config(&format!("{OPEN}\n[connections]\nlong_poll_max = 2\n"));
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));
    let since = str_field(&alice.sync(None, 0, None), "next_batch");
    let token = alice.access_token.clone().expect("token");
    let addr = env.addr();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let head = format!(
                "GET /_matrix/client/v3/sync?since={since}&timeout=60000 HTTP/1.1\r\nHost: x\r\n\
                 Authorization: Bearer {token}\r\n\r\n"
            );
            thread::spawn(move || {
                // A waiter refused while the test's own probe held a slot tries again.
                loop {
                    let mut stream = open(addr);
                    stream
                        .set_read_timeout(Some(Duration::from_secs(60)))
                        .expect("timeout");
                    stream.write_all(head.as_bytes()).expect("request");
                    let reply = read_response(&mut stream);
                    if reply.as_ref().is_none_or(|reply| reply.status != 429) {
                        return reply;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            })
        })
        .collect();
    // Once both wait, a third long poll is refused with the spec's rate-limit answer.
    let (status, body) = poll_until("a third long poll refused", Duration::from_secs(20), || {
        let reply = alice.get(&format!("/_matrix/client/v3/sync?since={since}&timeout=0"));
        (reply.0 == 429).then_some(reply)
    });
    assert_eq!(status, 429);
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED", "{body}");
    assert!(body["retry_after_ms"].as_u64().is_some(), "{body}");
    // Other requests are not affected, and the waiters are served when news comes.
    let event_id = alice.send_text(&room, "wake up");
    for waiter in waiters {
        let reply = waiter.join().expect("waiter").expect("a sync answer");
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(
            String::from_utf8_lossy(&reply.body).contains(&event_id),
            "{reply:?}"
        );
    }
    // With the waiters gone, long polls are admitted again.
    let (status, _) = alice.get(&format!("/_matrix/client/v3/sync?since={since}&timeout=0"));
    assert_eq!(status, 200);
}

#[test]
fn the_admin_socket_is_served_while_the_client_caps_are_full() {
    let env = TestEnv::with_config(&format!(
        "{OPEN}\n[connections]\nclient_max = 4\nclient_max_per_address = 4\n\
         body_timeout_secs = 120\n"
    ));
    let addr = env.addr();
    // Four connections, each with a request in flight (a body still arriving): nothing is
    // idle, so the caps cannot make room.
    let busy_request = || {
        let mut stream = open(addr);
        stream
            .write_all(
                b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\n\
                  Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"type\"",
            )
            .expect("partial request");
        stream
    };
    let mut busy: Vec<_> = (0..4).map(|_| busy_request()).collect();
    thread::sleep(Duration::from_millis(50));
    // A fresh client connection is refused: the caps really are full. A fresh connection
    // that arrives before the server has read a busy one's head finds that one still idle,
    // and it is closed to make room; it is then replaced, and the next try waits a round so
    // the server reads the new head first.
    poll_until(
        "a fresh connection refused",
        Duration::from_secs(30),
        || {
            let mut replaced = false;
            for stream in &mut busy {
                if is_closed(stream) {
                    *stream = busy_request();
                    replaced = true;
                }
            }
            if replaced {
                thread::sleep(Duration::from_millis(50));
                return None;
            }
            let mut stream = open(addr);
            stream.write_all(VERSIONS).ok();
            read_response(&mut stream).is_none().then_some(())
        },
    );
    // The admin socket still answers.
    let (head, body) = admin_get(&env.data_dir(), "/v1/status");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    let status: Value = serde_json::from_str(&body).expect("status JSON");
    assert!(status.is_object(), "{status}");
    for stream in &mut busy {
        let _ = stream.write_all(b"x");
    }
    drop(busy);
    // And the client listener recovers once the busy connections go.
    poll_until(
        "the client listener serves again",
        Duration::from_secs(10),
        || {
            let mut stream = open(addr);
            stream.write_all(VERSIONS).ok();
            read_response(&mut stream)
                .filter(|reply| reply.status == 200)
                .map(|_| ())
        },
    );
}
