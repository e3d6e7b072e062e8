//! `appliance selftest` against real units: a local round trip passes (text and `--json`) and
//! leaves its temporary accounts deactivated; it refuses to run with the homeserver stopped;
//! the `--peer` flags come together or not at all, and the peer must be on the allow-list;
//! through a real peer unit (cards exchanged at the console) the message crosses federation,
//! the peer's test account is logged out again, and a wrong peer password fails at its step
//! with exit code 5 while the local account is still cleaned up.
//!
//! Exit codes under test: 0 success, 2 usage, 3 rejected input, 4 wrong state, 5 a step failed.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tests::appliance::{STRONG_PASSWORD, Unit, import_card};

const USAGE: i32 = 2;
const REJECTED: i32 = 3;
const WRONG_STATE: i32 = 4;
const ATTENTION: i32 = 5;

/// The steps of a local round trip, in order.
const LOCAL_STEPS: &[&str] = &[
    "create test accounts",
    "log in both devices",
    "publish device and one-time keys",
    "create an encrypted room",
    "invite B",
    "B joins the room",
    "A fetches and checks B's keys",
    "A shares a room key (Olm to-device)",
    "A sends an encrypted message",
    "B checks A's keys, decrypts the key",
    "B decrypts the message",
    "remove test accounts",
];

/// The accounts the selftest made (`@selftest-…`), from `appliance user list --json`.
fn selftest_users(unit: &Unit) -> Vec<Value> {
    unit.users()
        .into_iter()
        .filter(|user| {
            user["user_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("@selftest-"))
        })
        .collect()
}

/// Asserts every selftest account is deactivated and signed out, and returns how many there are.
fn all_removed(unit: &Unit) -> usize {
    let users = selftest_users(unit);
    for user in &users {
        assert_eq!(user["deactivated"], true, "still active: {user:#}");
        assert_eq!(user["devices"], 0, "still logged in: {user:#}");
    }
    users.len()
}

#[test]
fn a_local_selftest_passes_and_removes_its_accounts() {
    let mut unit = Unit::new();
    unit.setup("unit-a.test");
    unit.start();

    let run = unit.appliance(&["selftest"]);
    run.ok("selftest");
    let lines: Vec<&str> = run.stdout.lines().collect();
    let mut at = 0;
    for step in LOCAL_STEPS {
        let found = lines[at..]
            .iter()
            .position(|line| line.starts_with(&format!("  ok    {step} ")) && line.ends_with(" ms"))
            .unwrap_or_else(|| panic!("no ok line for {step:?} after line {at}\n{run}"));
        at += found + 1;
    }
    assert!(
        run.stdout.contains("Removed the temporary accounts"),
        "{run}"
    );
    assert!(run.stdout.contains("PASSED"), "{run}");
    assert!(!run.stdout.contains("FAIL"), "{run}");
    assert_eq!(all_removed(&unit), 2, "two temporary accounts\n{run}");

    let run = unit.appliance(&["selftest", "--json"]);
    run.ok("selftest --json");
    let report = run.json();
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["server_name"], "unit-a.test");
    assert!(report["peer"].is_null(), "{report:#}");
    assert!(report["failed_step"].is_null(), "{report:#}");
    let steps = report["steps"].as_array().expect("steps");
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(names, LOCAL_STEPS, "{report:#}");
    for step in steps {
        assert_eq!(step["ok"], true, "{step:#}");
        assert!(step["ms"].is_u64(), "{step:#}");
    }
    let removed = report["accounts_removed"]
        .as_array()
        .expect("accounts_removed");
    assert_eq!(removed.len(), 2, "{report:#}");
    assert!(removed.contains(&report["sender"]) && removed.contains(&report["receiver"]));
    assert_eq!(all_removed(&unit), 4);
    // The admin's account is untouched.
    unit.login_ok("admin", STRONG_PASSWORD);
}

#[test]
fn selftest_needs_the_homeserver_running() {
    let unit = Unit::new();
    unit.setup("unit-a.test");
    let run = unit.appliance(&["selftest"]);
    run.expect(WRONG_STATE, "selftest with the homeserver stopped");
    assert!(
        run.stderr.contains("not running") && run.stderr.contains("systemctl start homeserver"),
        "{run}"
    );
    assert!(run.stdout.is_empty(), "no steps ran\n{run}");
    assert_eq!(selftest_users(&unit).len(), 0, "nothing was created");

    let blank = Unit::new();
    blank
        .appliance(&["selftest"])
        .expect(WRONG_STATE, "selftest without a unit");
}

#[test]
fn peer_flags_come_together_and_the_peer_must_be_allow_listed() {
    let mut unit = Unit::new();
    unit.setup("unit-a.test");
    let password = unit.root().join("peer-password");
    fs::write(&password, format!("{STRONG_PASSWORD}\n")).expect("writing the password file");
    let password = password.to_string_lossy().into_owned();
    for args in [
        vec!["selftest", "--peer", "unit-b.test"],
        vec![
            "selftest",
            "--peer",
            "unit-b.test",
            "--peer-user",
            "@bob:unit-b.test",
            "--peer-password-file",
            &password,
        ],
        vec!["selftest", "--peer-user", "@bob:unit-b.test"],
        vec!["selftest", "--peer-client-url", "http://127.0.0.1:1"],
    ] {
        let run = unit.appliance(&args);
        run.expect(USAGE, "incomplete --peer flags");
        assert!(run.stderr.contains("--peer"), "{run}");
    }

    unit.start();
    let full = |user: &str, url: &str| -> Vec<String> {
        [
            "selftest",
            "--peer",
            "unit-b.test",
            "--peer-user",
            user,
            "--peer-password-file",
            &password,
            "--peer-client-url",
            url,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let run_with = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        unit.appliance(&args)
    };
    let run = run_with(full("@bob:unit-c.test", "http://127.0.0.1:1"));
    run.expect(USAGE, "a peer user of another server");
    assert!(
        run.stderr.contains("not an account on unit-b.test"),
        "{run}"
    );
    let run = run_with(full("@bob:unit-b.test", "ftp://127.0.0.1:1"));
    run.expect(USAGE, "an ftp URL");
    assert!(run.stderr.contains("only http:// and https://"), "{run}");
    let mut with_ca = full("@bob:unit-b.test", "http://127.0.0.1:1");
    with_ca.extend(["--peer-ca".to_owned(), password.clone()]);
    let run = run_with(with_ca);
    run.expect(USAGE, "--peer-ca with plain http");
    assert!(run.stderr.contains("--peer-ca is for an https://"), "{run}");
    let run = run_with(full("@bob:unit-b.test", "https://127.0.0.1:1"));
    run.expect(
        REJECTED,
        "an https peer that is not allow-listed (no card, no CA)",
    );
    assert!(
        run.stderr.contains("not on this unit's allow-list"),
        "{run}"
    );
    let run = run_with(full("@bob:unit-b.test", "http://127.0.0.1:1"));
    run.expect(REJECTED, "a peer that is not allow-listed");
    assert!(
        run.stderr.contains("not on this unit's allow-list"),
        "{run}"
    );
    assert_eq!(selftest_users(&unit).len(), 0, "nothing was created");
}

/// Two units that federate (cards exchanged both ways, both running), with the test account
/// `bob` on B.
fn two_federating_units() -> (Unit, Unit) {
    two_federating_units_with(false)
}

/// [`two_federating_units`], B serving its client API over HTTPS when `b_https`.
fn two_federating_units_with(b_https: bool) -> (Unit, Unit) {
    let (mut a, mut b) = (Unit::new(), Unit::new());
    a.setup("unit-a.test");
    if b_https {
        b.setup_https("unit-b.test");
    } else {
        b.setup("unit-b.test");
    }
    import_card(&a, &b);
    import_card(&b, &a);
    b.create_user("bob");
    a.start();
    b.start();
    (a, b)
}

/// Writes `password` into the file `name` in `unit`'s temp dir.
fn password_file(unit: &Unit, name: &str, password: &str) -> PathBuf {
    let path = unit.root().join(name);
    fs::write(&path, format!("{password}\n")).expect("writing the password file");
    path
}

/// The arguments of `appliance selftest --peer unit-b.test …` with bob's password in `password`.
fn peer_selftest(b: &Unit, password: &Path) -> Vec<String> {
    [
        "selftest",
        "--peer",
        "unit-b.test",
        "--peer-user",
        "@bob:unit-b.test",
        "--peer-password-file",
        &password.to_string_lossy(),
        "--peer-client-url",
        &b.client_url(),
        "--step-timeout",
        "15",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn run_args(unit: &Unit, args: &[String]) -> tests::appliance::Run {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    unit.appliance(&args)
}

/// Asserts a passed selftest through B: the federated steps and B's cleanup ran, A's
/// temporary accounts (`expected` so far) are deactivated, bob is active with no device left.
fn assert_peer_round_trip(a: &Unit, b: &Unit, run: &tests::appliance::Run, expected: usize) {
    for line in [
        "B joins the room",
        "B decrypts the message",
        "B leaves the room",
        "log B out of the peer",
        "remove test accounts",
    ] {
        assert!(
            run.stdout.contains(&format!("  ok    {line} ")),
            "{line}\n{run}"
        );
    }
    assert!(run.stdout.contains("PASSED"), "{run}");
    assert_eq!(
        all_removed(a),
        expected,
        "one temporary account per run\n{run}"
    );
    let bob = b
        .users()
        .into_iter()
        .find(|user| user["user_id"] == "@bob:unit-b.test")
        .expect("bob is listed");
    assert_eq!(bob["deactivated"], false, "{bob:#}");
    assert_eq!(
        bob["devices"], 0,
        "the temporary device was logged out: {bob:#}"
    );
    assert_eq!(
        selftest_users(b).len(),
        0,
        "nothing was created on the peer"
    );
}

#[test]
fn a_selftest_through_a_peer_crosses_federation_and_cleans_up_on_both_units() {
    let (a, b) = two_federating_units();
    let password = password_file(&a, "bob-password", STRONG_PASSWORD);
    let args = peer_selftest(&b, &password);
    let run = run_args(&a, &args);
    run.ok("selftest through the peer");
    assert_peer_round_trip(&a, &b, &run, 1);

    // A wrong peer password fails at the login step with exit code 5, naming it, and the
    // account made here is still removed.
    let wrong = password_file(&a, "wrong-password", "Not-Bobs-Password-9");
    let run = run_args(&a, &peer_selftest(&b, &wrong));
    run.expect(ATTENTION, "selftest with a wrong peer password");
    assert!(run.stdout.contains("  FAIL  log in both devices"), "{run}");
    assert!(
        run.stdout.contains("FAILED") && run.stdout.contains("M_FORBIDDEN"),
        "{run}"
    );
    assert!(run.stdout.contains("  ok    remove test accounts"), "{run}");
    assert_eq!(all_removed(&a), 2);
}

/// A peer that serves its client API over HTTPS with a certificate from its unit CA: the
/// selftest trusts the CA on the peer's card, and nothing else.
#[test]
fn a_selftest_through_an_https_peer_trusts_the_unit_ca_on_its_card() {
    let (a, b) = two_federating_units_with(true);
    let password = password_file(&a, "bob-password", STRONG_PASSWORD);
    let args = peer_selftest(&b, &password);
    assert!(
        args.iter().any(|arg| arg.starts_with("https://")),
        "{args:?}"
    );
    let run = run_args(&a, &args);
    run.ok("selftest through the HTTPS peer");
    assert_peer_round_trip(&a, &b, &run, 1);

    // Another CA (A's own) does not vouch for B's certificate: the login step fails on TLS.
    let mut wrong_ca = args.clone();
    wrong_ca.extend([
        "--peer-ca".to_owned(),
        a.data_dir()
            .join("tls/ca.pem")
            .to_string_lossy()
            .into_owned(),
    ]);
    let run = run_args(&a, &wrong_ca);
    run.expect(ATTENTION, "selftest trusting the wrong CA for the peer");
    assert!(run.stdout.contains("FAILED"), "{run}");
    assert!(run.stdout.contains("  ok    remove test accounts"), "{run}");
}

/// A second selftest through the same peer. Between the runs bob shares no room with anyone
/// on A, so B sends A no device-list updates about his new temporary device; A must notice
/// that the list it cached in the first run may be out of date (a join into a shared room
/// after the fetch) and fetch it again.
#[test]
fn a_second_selftest_through_the_same_peer_passes() {
    let (a, b) = two_federating_units();
    let password = password_file(&a, "bob-password", STRONG_PASSWORD);
    let args = peer_selftest(&b, &password);
    for round in 1..=2 {
        let run = run_args(&a, &args);
        run.ok(&format!("selftest through the peer, round {round}"));
        assert_peer_round_trip(&a, &b, &run, round);
    }
}
