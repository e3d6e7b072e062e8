//! Rate limiting from config: a user over their budget gets 429 `M_LIMIT_EXCEEDED` with
//! `retry_after_ms`, other users are unaffected, the budget refills; unauthenticated requests
//! are limited per IP; with `enabled = false` nothing is limited.

use std::thread;
use std::time::{Duration, Instant};
use tests::{Client, TestEnv, Value, json, ok};

const LOW_LIMITS: &str = "[registration]\nenabled = true\n\n[rate_limit]\nenabled = true\nper_second = 1.0\nburst = 10\n";

/// Repeats `request` until it is rate limited; returns the 429 body and how many requests
/// succeeded before it. Panics if `max` requests all pass.
fn hammer(max: usize, mut request: impl FnMut() -> (u16, Value)) -> (Value, usize) {
    for passed in 0..max {
        let (status, body) = request();
        match status {
            200 => continue,
            429 => return (body, passed),
            other => panic!("unexpected {other} while hammering: {body:#}"),
        }
    }
    panic!("{max} requests in a row were not rate limited");
}

fn whoami(client: &Client) -> (u16, Value) {
    client.get("/_matrix/client/v3/account/whoami")
}

#[test]
fn users_over_budget_get_429_and_recover() {
    let env = TestEnv::with_config(LOW_LIMITS);
    let alice = env.register("alice");
    let bob = env.register("bob");

    let (body, passed) = hammer(60, || whoami(&alice));
    assert!(
        passed >= 5,
        "the burst allows several requests first, got {passed}"
    );
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED", "{body:#}");
    assert!(body["error"].is_string(), "{body:#}");
    let retry = body["retry_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("retry_after_ms missing: {body:#}"));
    assert!(retry > 0 && retry <= 10_000, "retry_after_ms {retry}");

    // Budgets are per user: bob is unaffected.
    ok(whoami(&bob), "another user");

    // The bucket refills at per_second: retrying after the advertised delay succeeds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        thread::sleep(Duration::from_millis(retry));
        let (status, body) = whoami(&alice);
        if status == 200 {
            break;
        }
        assert_eq!(status, 429, "{body:#}");
        assert!(Instant::now() < deadline, "alice's budget never refilled");
    }
}

#[test]
fn unauthenticated_requests_are_limited_per_ip() {
    let env = TestEnv::with_config(LOW_LIMITS);
    let anon = env.anon();
    let (body, _) = hammer(60, || {
        let (status, body) = anon.post(
            "/_matrix/client/v3/login",
            &json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "nobody" },
                "password": "guess",
            }),
        );
        // A wrong password (403) still counts as a request that got through.
        (if status == 403 { 200 } else { status }, body)
    });
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED", "{body:#}");
    assert!(body["retry_after_ms"].as_u64().is_some(), "{body:#}");
}

#[test]
fn disabled_rate_limit_never_answers_429() {
    let env =
        TestEnv::with_config("[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n");
    let alice = env.register("alice");
    for i in 0..300 {
        let (status, body) = whoami(&alice);
        assert_eq!(
            status, 200,
            "request {i} with rate limiting disabled: {body:#}"
        );
    }
}
