//! `--bigroom N`: one room with N members on unit A, and a second unit B joining it.
//!
//! The members are application-service users (registered with `m.login.application_service`
//! and joined with `?user_id=` masquerading, both standard client-server API), so making
//! 10,000 of them costs no password hashing; they join from several threads at once. Then:
//! one local member sends messages into the room one at a time (send latency, server CPU per
//! message), `/members` of the room, an initial `/sync` of a member (full and lazy-loaded),
//! and a user of unit B joins over federation: the time from starting `/join` to its answer,
//! and to the first message sent after it arriving in B's `/sync`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tests::appservice::TestAppservice;
use tests::bench::{mib, ms, percentiles, row};
use tests::federation::{Unit, UnitOptions, unit_ip};
use tests::{Client, enc, json, proc_status_kib, process_cpu_time, str_field, sync_query};

/// The appservice's token; its users are `@crowd_<n>`.
const AS_TOKEN: &str = "as-bigroom";
/// Client threads registering and joining the members.
const BULK_THREADS: usize = 8;
/// Messages sent one at a time into the big room.
const SENDS: usize = 200;
/// Calls of each read measured (`/members`, initial `/sync`).
const READS: usize = 5;
/// Longest wait for B to see the first message after its join.
const DELIVERY: Duration = Duration::from_secs(300);

/// Runs the scenario with `members` members (the sender included); `config` is appended to
/// both units' configuration.
pub fn run(members: usize, config: &str) {
    println!(
        "Outpost bigroom bench: a room with {members} members on unit A, then unit B joins it"
    );
    let appservice = TestAppservice::start("hs-bigroom");
    let yaml = appservice.registration(
        "bigroom",
        AS_TOKEN,
        "bigbot",
        [&["@crowd_.*"], &[], &[]],
        "",
    );
    // Joining a big room moves its whole state in one federation request and answer.
    let options = UnitOptions {
        request_timeout_secs: 300,
        federation_max_body: Some(512 * 1024 * 1024),
        extra_toml: config.to_owned(),
        ..UnitOptions::default()
    };
    let mut a = Unit::new("unit-a.test", unit_ip(0), &options);
    let mut b = Unit::new("unit-b.test", unit_ip(1), &options);
    a.trust(&b);
    b.trust(&a);
    TestAppservice::install(&a.data_dir(), "bigroom", &yaml);
    a.start();
    b.start();

    let alice = a.register("alice");
    let room = alice.create_room(&json!({ "preset": "public_chat", "name": "big" }));
    let service = a.anon().with_token(Some(AS_TOKEN));
    let crowd = members.saturating_sub(1);
    let cpu_start = process_cpu_time(a.pid());
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    thread::scope(|scope| {
        for _ in 0..BULK_THREADS {
            scope.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= crowd {
                        break;
                    }
                    join_member(&a, &service, &room, n);
                }
            });
        }
    });
    let elapsed = started.elapsed();
    row(
        "members registered and joined",
        format!(
            "{crowd} in {:.1} s -> {:.0} joins/s, server CPU {}",
            elapsed.as_secs_f64(),
            crowd as f64 / elapsed.as_secs_f64(),
            cpu_per(process_cpu_time(a.pid()), cpu_start, crowd, "join"),
        ),
    );

    let cpu_start = process_cpu_time(a.pid());
    let mut sends = Vec::with_capacity(SENDS);
    for i in 0..SENDS {
        let start = Instant::now();
        alice.send_text(&room, &format!("big room message {i}"));
        sends.push(start.elapsed());
    }
    row("send latency, one at a time", percentiles(&mut sends));
    row(
        "server CPU per message",
        cpu_per(process_cpu_time(a.pid()), cpu_start, SENDS, "message"),
    );

    let members_path = format!("/_matrix/client/v3/rooms/{}/members", enc(&room));
    let mut times = Vec::new();
    let mut listed = 0;
    for _ in 0..READS {
        let start = Instant::now();
        let body = alice.get_ok(&members_path);
        times.push(start.elapsed());
        listed = body["chunk"].as_array().map_or(0, Vec::len);
    }
    row(
        &format!("GET /members ({listed} events)"),
        percentiles(&mut times),
    );

    let member = a.user_id("crowd_0");
    for (label, filter) in [
        ("initial /sync of a member", None),
        (
            "initial /sync, lazy, timeline 10",
            Some(json!({ "room": { "timeline": { "limit": 10 },
                                   "state": { "lazy_load_members": true } } })),
        ),
    ] {
        let path = format!(
            "/_matrix/client/v3/sync?{}&user_id={}",
            sync_query(None, 0, filter.as_ref()),
            enc(&member)
        );
        let mut times = Vec::new();
        for _ in 0..READS {
            let start = Instant::now();
            service.get_ok(&path);
            times.push(start.elapsed());
        }
        row(label, percentiles(&mut times));
    }

    federated_join(&a, &b, &alice, &room);
    row(
        "peak RSS of A / B (VmHWM)",
        format!(
            "{} / {}",
            mib(proc_status_kib(a.pid(), "VmHWM").unwrap_or_default()),
            mib(proc_status_kib(b.pid(), "VmHWM").unwrap_or_default())
        ),
    );
}

/// Registers `@crowd_<n>` through the appservice and joins it to `room`.
fn join_member(unit: &Unit, service: &Client, room: &str, n: usize) {
    let localpart = format!("crowd_{n}");
    let (status, body) = service.post(
        "/_matrix/client/v3/register",
        &json!({ "type": "m.login.application_service", "username": localpart,
                 "inhibit_login": true }),
    );
    assert_eq!(status, 200, "registering {localpart}: {body}");
    let user = unit.user_id(&localpart);
    let (status, body) = service.post(
        &format!(
            "/_matrix/client/v3/join/{}?user_id={}",
            enc(room),
            enc(&user)
        ),
        &json!({}),
    );
    assert_eq!(status, 200, "joining {user}: {body}");
}

/// A user of `b` joins `room` through `a`; prints the time to the join's answer and to the
/// first message sent after it arriving in B's `/sync`.
fn federated_join(a: &Unit, b: &Unit, alice: &Client, room: &str) {
    let bob = b.register("bob");
    let since = str_field(&bob.sync(None, 0, None), "next_batch");
    let start = Instant::now();
    let (status, body) = bob.post(
        &format!(
            "/_matrix/client/v3/join/{}?server_name={}",
            enc(room),
            enc(a.name())
        ),
        &json!({}),
    );
    let joined = start.elapsed();
    if status != 200 {
        row("federated join", format!("failed: {status} {body}"));
        return;
    }
    row("federated join: /join answered", ms(joined));
    alice.send_text(room, "welcome, B");
    // Lazy-loaded: B's first /sync after the join otherwise carries all N member events.
    let filter = json!({ "room": { "timeline": { "limit": 50 },
                                   "state": { "lazy_load_members": true } } });
    let mut since = since;
    loop {
        let path = format!(
            "/_matrix/client/v3/sync?{}",
            sync_query(Some(&since), 1000, Some(&filter))
        );
        let sync = match bob.try_call("GET", &path, None) {
            Ok((200, sync)) => sync,
            other => {
                let why = match other {
                    Ok((status, _)) => format!("status {status}"),
                    Err(err) => err.to_string(),
                };
                row(
                    "federated join: 1st message on B",
                    format!("B's /sync failed after {}: {why}", ms(start.elapsed())),
                );
                return;
            }
        };
        if tests::bodies(&tests::timeline(&sync, room))
            .iter()
            .any(|body| body == "welcome, B")
        {
            row("federated join: 1st message on B", ms(start.elapsed()));
            return;
        }
        if start.elapsed() > DELIVERY {
            row(
                "federated join: 1st message on B",
                format!("not within {DELIVERY:?}"),
            );
            return;
        }
        since = str_field(&sync, "next_batch");
    }
}

/// `<total CPU> -> <per item>` between two CPU readings of a process.
pub fn cpu_per(end: Option<Duration>, start: Option<Duration>, count: usize, item: &str) -> String {
    match end.zip(start) {
        Some((end, start)) => {
            let used = end.saturating_sub(start);
            format!(
                "{:.2} s -> {:.0} us per {item}",
                used.as_secs_f64(),
                used.as_secs_f64() * 1e6 / count.max(1) as f64
            )
        }
        None => "not measured".to_owned(),
    }
}
