//! Connection caps and timeouts on the client listener: an idle-connection flood under the
//! systemd-default descriptor limit (1,024) does not lock a real client out, a slow request
//! head is cut at the header timeout and an idle keep-alive connection at the idle timeout, and
//! hundreds of concurrent long-poll `/sync` requests are all served while a flood is held.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tests::{TestEnv, closed_within, connect_from, json, poll_until, str_field};

const OPEN: &str = "[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n";

/// Source addresses 127.0.0.`first`.. for `count` simulated hosts.
fn hosts(first: u8, count: u8) -> Vec<IpAddr> {
    (0..count)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, first + i)))
        .collect()
}

/// Opens up to `per_host` connections from each of `hosts` that send nothing, and holds
/// them. A host gives up after 3 failed connects in a row (the server's backlog is full); a
/// connect may take one SYN retransmission (1 s) on a loaded machine.
fn idle_flood(addr: SocketAddr, hosts: &[IpAddr], per_host: usize) -> Vec<TcpStream> {
    let threads: Vec<_> = hosts
        .iter()
        .map(|&host| {
            thread::spawn(move || {
                let mut held = Vec::new();
                let mut failures_in_a_row = 0;
                while held.len() < per_host && failures_in_a_row < 3 {
                    match connect_from(host, addr, Duration::from_secs(3)) {
                        Ok(stream) => {
                            held.push(stream);
                            failures_in_a_row = 0;
                        }
                        Err(_) => failures_in_a_row += 1,
                    }
                }
                held
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("flood thread"))
        .collect()
}

/// `GET /versions` on a fresh connection from `host`, answered within `wait`.
fn versions_from(host: IpAddr, addr: SocketAddr, wait: Duration) -> Option<u16> {
    let mut stream = connect_from(host, addr, wait).ok()?;
    stream.set_read_timeout(Some(wait)).ok()?;
    stream
        .write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).ok()?;
    let text = String::from_utf8_lossy(&reply);
    text.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn idle_flood_at_1024_fds_leaves_room_for_a_real_client() {
    let env = TestEnv::with_config_nofile(OPEN, 1024);
    let addr = env.addr();
    // 2,000 connections that never send a byte, from 20 addresses: twice the descriptors the
    // server has.
    let flood = idle_flood(addr, &hosts(10, 20), 100);
    assert!(
        flood.len() > 1024,
        "the flood must outnumber the server's descriptors; opened {}",
        flood.len()
    );

    // A fresh client is still answered while the flood is held ...
    poll_until(
        "a fresh client answered during the flood",
        Duration::from_secs(15),
        || {
            (versions_from(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                addr,
                Duration::from_secs(2),
            ) == Some(200))
            .then_some(())
        },
    );
    // ... and can register, send and sync.
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));
    let event_id = alice.send_text(&room, "still here");
    let sync = alice.sync(None, 0, None);
    let events = tests::timeline(&sync, &room);
    assert!(
        events.iter().any(|e| e["event_id"] == event_id.as_str()),
        "the message is in the sync: {sync:#}"
    );
    // The cap hit is logged (once per interval, not per connection).
    poll_until("the cap warning in the log", Duration::from_secs(5), || {
        env.log().contains("connection cap reached").then_some(())
    });
    let warnings = env.log().matches("connection cap reached").count();
    assert!(
        warnings <= 5,
        "{warnings} warnings: the log is not rate limited"
    );
    drop(flood);
}

#[test]
fn slow_and_idle_connections_are_closed_at_their_timeouts() {
    let env = TestEnv::with_config(&format!(
        "{OPEN}\n[connections]\nheader_timeout_secs = 2\nidle_timeout_secs = 3\n"
    ));
    let addr = env.addr();
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);

    // Slowloris: a request head dribbled out a byte at a time is cut at the header timeout,
    // though bytes keep arriving.
    let mut slow = connect_from(local, addr, Duration::from_secs(2)).expect("connect");
    slow.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .expect("first bytes");
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let start = Instant::now();
    let mut closed = false;
    while start.elapsed() < Duration::from_secs(10) {
        if slow.write_all(b"a").is_err() || closed_within(&mut slow, Duration::from_millis(200)) {
            closed = true;
            break;
        }
    }
    let took = start.elapsed();
    assert!(closed, "a slow request head was never cut");
    assert!(took < Duration::from_secs(5), "cut only after {took:?}");

    // A connection that never sends anything owes its first head within the header timeout.
    let mut silent = connect_from(local, addr, Duration::from_secs(2)).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    assert!(
        closed_within(&mut silent, Duration::from_secs(6)),
        "a silent connection was kept open"
    );

    // A keep-alive connection idle after a complete request is closed at the idle timeout.
    let mut kept = connect_from(local, addr, Duration::from_secs(2)).expect("connect");
    kept.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    kept.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let n = kept.read(&mut buf).expect("a reply on the kept connection");
    kept.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(
        closed_within(&mut kept, Duration::from_secs(8)),
        "an idle keep-alive connection was kept open"
    );

    // The server itself is fine.
    assert_eq!(
        versions_from(local, addr, Duration::from_secs(5)),
        Some(200)
    );
}

#[test]
fn five_hundred_long_polls_are_served_during_a_flood() {
    let env = TestEnv::with_config_nofile(OPEN, 1024);
    let addr = env.addr();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));
    let since = str_field(&alice.sync(None, 0, None), "next_batch");
    let token = alice.access_token.clone().expect("alice has a token");

    let flood = idle_flood(addr, &hosts(10, 20), 100);
    assert!(
        flood.len() > 1024,
        "the flood must outnumber the server's descriptors; opened {}",
        flood.len()
    );

    // 500 long polls from 5 addresses, each waiting for the next event.
    let sent = Arc::new(AtomicUsize::new(0));
    let waiters: Vec<_> = (0..500)
        .map(|i| {
            let host = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + (i % 5) as u8));
            let head = format!(
                "GET /_matrix/client/v3/sync?since={since}&timeout=30000 HTTP/1.1\r\nHost: x\r\n\
                 Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            );
            let sent = Arc::clone(&sent);
            thread::spawn(move || -> Result<String, String> {
                let mut stream = connect_from(host, addr, Duration::from_secs(5))
                    .map_err(|err| format!("connect: {err}"))?;
                stream
                    .set_read_timeout(Some(Duration::from_secs(40)))
                    .map_err(|err| err.to_string())?;
                stream
                    .write_all(head.as_bytes())
                    .map_err(|err| format!("write: {err}"))?;
                sent.fetch_add(1, Ordering::SeqCst);
                let mut reply = Vec::new();
                stream
                    .read_to_end(&mut reply)
                    .map_err(|err| format!("read: {err}"))?;
                Ok(String::from_utf8_lossy(&reply).into_owned())
            })
        })
        .collect();
    poll_until("500 long polls sent", Duration::from_secs(20), || {
        (sent.load(Ordering::SeqCst) == 500).then_some(())
    });
    // A fresh client is still served while the 500 wait and the flood is held.
    poll_until("a fresh client answered", Duration::from_secs(15), || {
        (versions_from(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            addr,
            Duration::from_secs(2),
        ) == Some(200))
        .then_some(())
    });
    let event_id = alice.send_text(&room, "wake up");
    let mut served = 0;
    let mut failures = Vec::new();
    for waiter in waiters {
        match waiter.join().expect("waiter thread") {
            Ok(reply) if reply.starts_with("HTTP/1.1 200") && reply.contains(&event_id) => {
                served += 1
            }
            Ok(reply) => failures.push(reply.chars().take(200).collect::<String>()),
            Err(err) => failures.push(err),
        }
    }
    assert_eq!(
        served,
        500,
        "long polls not served: {:?}",
        &failures[..failures.len().min(5)]
    );
    drop(flood);
}
