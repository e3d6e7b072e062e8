//! Password guessing is throttled per account, whatever the source address: guesses from 20
//! loopback addresses soon get 429 `M_LIMIT_EXCEEDED` with `retry_after_ms` (every attempt in
//! the back-off window does, the right password included), another account is unaffected, and
//! once the window has passed the real user's right password succeeds.

use std::net::{IpAddr, Ipv4Addr};
use std::thread;
use std::time::{Duration, Instant};

use tests::{TestEnv, Value, json, password_for, raw_http_from};

/// One `POST /login` for `user` with `password` from `host`; `(status, body)`.
fn login_from(env: &TestEnv, host: IpAddr, user: &str, password: &str) -> (u16, Value) {
    let body = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    })
    .to_string();
    let reply = raw_http_from(
        host,
        env.addr(),
        "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json",
        body.as_bytes(),
    )
    .expect("login request");
    (reply.status, reply.json())
}

#[test]
fn guesses_from_many_addresses_are_throttled_per_account() {
    // The per-IP limiter stays at its defaults: it is not what stops these guesses.
    let env = TestEnv::with_config("[registration]\nenabled = true\n");
    env.register("alice");
    env.register("bob");
    let hosts: Vec<IpAddr> = (0..20)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + i)))
        .collect();

    let mut refused = None;
    for attempt in 0..60 {
        let host = hosts[attempt % hosts.len()];
        let (status, body) = login_from(&env, host, "alice", &format!("guess-{attempt}"));
        match status {
            403 => assert_eq!(body["errcode"], "M_FORBIDDEN", "{body:#}"),
            429 => {
                refused = Some((attempt, body));
                break;
            }
            other => panic!("unexpected {other}: {body:#}"),
        }
    }
    let (attempt, body) = refused.expect("60 guesses from 20 addresses were never throttled");
    assert!(
        attempt <= 5,
        "only after {attempt} wrong guesses did the account back off"
    );
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED", "{body:#}");
    let retry = body["retry_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("retry_after_ms missing: {body:#}"));
    assert!(retry > 0 && retry <= 60_000, "retry_after_ms {retry}");
    let window_end = Instant::now() + Duration::from_millis(retry);

    // Per account: bob, from the same addresses, logs in at once.
    let (status, body) = login_from(&env, hosts[0], "bob", &password_for("bob"));
    assert_eq!(status, 200, "{body:#}");

    // In the window even the right password is refused without being checked ...
    let (status, body) = login_from(&env, hosts[1], "alice", &password_for("alice"));
    if Instant::now() < window_end {
        assert_eq!(status, 429, "{body:#}");
        assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED", "{body:#}");
    }

    // ... and after it, the real user gets in (the back-off follows failures only).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = login_from(&env, hosts[2], "alice", &password_for("alice"));
        if status == 200 {
            assert!(body["access_token"].is_string(), "{body:#}");
            break;
        }
        assert_eq!(status, 429, "{body:#}");
        assert!(Instant::now() < deadline, "alice was kept out: {body:#}");
        let wait = body["retry_after_ms"].as_u64().unwrap_or(100).min(2000);
        thread::sleep(Duration::from_millis(wait));
    }

    // Success cleared the failures: one more typo is a plain 403, not a 429.
    let (status, body) = login_from(&env, hosts[3], "alice", "typo");
    assert_eq!(status, 403, "{body:#}");
}

#[test]
fn guesses_for_an_unknown_account_are_throttled_alike() {
    let env = TestEnv::with_config("[registration]\nenabled = true\n");
    let host = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 40));
    let statuses: Vec<u16> = (0..8)
        .map(|i| login_from(&env, host, "nobody", &format!("guess-{i}")).0)
        .collect();
    // A 429 must not tell a guesser which accounts exist.
    assert!(
        statuses.contains(&429),
        "an unknown account never backed off: {statuses:?}"
    );
}
