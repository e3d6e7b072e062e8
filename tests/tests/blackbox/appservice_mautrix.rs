//! A real appservice framework against the homeserver: mautrix-python's `AppService` (PyPI,
//! pinned in `tests/host-tools.sh`) doing the flow every mautrix bridge does: register its bot
//! and ghost users with `m.login.application_service`, masquerade as them (`user_id=`), massage
//! timestamps (`ts=`), create a portal room with an alias in its namespace, receive the human's
//! events and typing through transactions, answer alias and user queries, ping itself, set up
//! an encrypted bridge's bot device (`m.login.application_service` login, and MSC4190's
//! `PUT /devices/{id}`), and be refused outside its namespaces (`M_EXCLUSIVE`, 403) while a
//! human is refused inside them.
//!
//! The driver is `tests/appservice/mautrix_bridge.py`; it reports one JSON line per step and
//! every step is asserted here. The same registration is run against a stock Synapse
//! (`..._on_synapse`), which proves the driver's expectations are what a mature server does.
//!
//! Ignored by a plain `cargo test` (it needs the PyPI venvs of `tests/host-tools.sh ensure
//! suite`); the README's test command (`tests/run.sh`) runs it as its own step:
//! `cargo test --release -p tests --test blackbox -- --ignored appservice_mautrix::`.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tests::bridge::{Homeserver, Registration, Spawned, drivers_dir, venv_program};
use tests::federation::Checks;
use tests::{TempDir, enc};

/// How long the whole driver run may take (it bounds each step at 30 s itself).
const DRIVER_DEADLINE: Duration = Duration::from_secs(150);

/// Runs the mautrix driver against `homeserver` (whose registrations include `registration`)
/// and records every step it reports, plus the human's own view of the portal, in `checks`.
fn bridge_flow(
    homeserver: &Homeserver,
    (registration, e2ee): (&Registration, &Registration),
    dir: &Path,
    checks: &mut Checks,
) {
    let server_name = homeserver.server_name();
    let human = homeserver.register("human");
    let log = dir.join("mautrix-driver.log");
    let stderr = std::fs::File::create(&log).expect("creating the driver's log");
    let mut command = Command::new(venv_program("mautrix-venv", "python"));
    command
        .arg(drivers_dir().join("mautrix_bridge.py"))
        .args(["--homeserver", &homeserver.base_url()])
        .args(["--server-name", &server_name])
        .args(["--id", &registration.id])
        .args(["--port", &registration.port.to_string()])
        .args(["--bot", &registration.sender_localpart])
        .args(["--prefix", &registration.prefix])
        .args(["--human", &human.user_id])
        .args(["--e2ee-bot", &e2ee.sender_localpart])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr);
    let mut child = command.spawn().expect("starting the mautrix driver");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let token = human.access_token.clone().expect("a registered human");
    writeln!(
        stdin,
        "{}\n{}\n{token}\n{}",
        registration.as_token, registration.hs_token, e2ee.as_token
    )
    .expect("passing the tokens to the driver");
    drop(stdin);
    let stdout = child.stdout.take().expect("piped stdout");
    // The driver process is killed on drop (and its log printed if the test panics).
    let driver = Spawned {
        name: format!("mautrix driver ({})", homeserver.label()),
        child,
        log,
    };
    let (lines, reports) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut done = false;
    let mut steps = 0;
    while !done {
        let left = DRIVER_DEADLINE.saturating_sub(start.elapsed());
        let Ok(line) = reports.recv_timeout(left) else {
            break;
        };
        let report: Value = serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("driver wrote a line that is not JSON ({err}): {line}"));
        if report["done"] == true {
            done = true;
            continue;
        }
        let step = report["step"].as_str().unwrap_or("?");
        let detail = report["detail"].as_str().unwrap_or_default().to_owned();
        steps += 1;
        checks.check(&format!("mautrix: {step}"), report["ok"] == true, || detail);
    }
    checks.check("mautrix: the driver ran to its end", done, || {
        format!("after {steps} steps and {:?}", start.elapsed())
    });
    drop(driver);
    println!(
        "mautrix driver on {}: {steps} steps reported in {:.1}s",
        homeserver.label(),
        start.elapsed().as_secs_f64()
    );

    // The human's own view, through our harness rather than mautrix.
    let alias = format!("#{}portal:{server_name}", registration.prefix);
    let (status, resolved) = human.get(&format!(
        "/_matrix/client/v3/directory/room/{}",
        enc(&alias)
    ));
    checks.reply(
        "human resolves the portal alias",
        &(status, resolved.clone()),
        &[200],
        &[],
    );
    if let Some(room) = resolved["room_id"].as_str() {
        let ghost = format!("@{}alice:{server_name}", registration.prefix);
        let (status, page) = human.get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
            enc(room)
        ));
        let from_ghost = page["chunk"].as_array().is_some_and(|chunk| {
            chunk.iter().any(|event| {
                event["sender"] == ghost.as_str()
                    && event["content"]["body"] == "hello from the bridge"
            })
        });
        checks.check(
            "human's /messages shows the ghost's message as the ghost",
            status == 200 && from_ghost,
            || format!("{status} {page}"),
        );
    }
}

/// The registrations every run uses: the bridge (exclusive `@mx_.*` and `#mx_.*`, ephemeral
/// events on), and a second one with MSC4190 devices on (`@mxe_.*`) for the encrypted-bridge
/// device step: Synapse refuses `m.login.application_service` to an MSC4190 appservice, and
/// the first registration's step logs in that way.
fn registrations() -> (Registration, Registration) {
    let mut registration = Registration::new("mautrix", "mxbot", "mx_");
    registration.receive_ephemeral = true;
    let mut e2ee = Registration::new("mautrix-e2ee", "mxebot", "mxe_");
    e2ee.msc4190 = true;
    (registration, e2ee)
}

#[test]
#[ignore = "needs the mautrix venv of `tests/host-tools.sh ensure suite` (PyPI)"]
fn mautrix_bridge_flow_on_outpost() {
    let (registration, e2ee) = registrations();
    let homeserver = Homeserver::outpost(&[&registration, &e2ee]);
    let dir = TempDir::new();
    let mut checks = Checks::new();
    bridge_flow(&homeserver, (&registration, &e2ee), dir.path(), &mut checks);
    if checks.failed() > 0 {
        let driver = std::fs::read_to_string(dir.path().join("mautrix-driver.log"));
        eprintln!("=== driver log:\n{}", driver.unwrap_or_default());
        eprintln!("=== Outpost log:\n{}", homeserver.log());
    }
    checks.finish();
}

#[test]
#[ignore = "needs the mautrix venv of `tests/host-tools.sh ensure suite` and Synapse (PyPI)"]
fn mautrix_bridge_flow_on_synapse() {
    let (registration, e2ee) = registrations();
    let homeserver = Homeserver::synapse("synapse.test", &[&registration, &e2ee]);
    let dir = TempDir::new();
    let mut checks = Checks::new();
    bridge_flow(&homeserver, (&registration, &e2ee), dir.path(), &mut checks);
    if checks.failed() > 0 {
        let driver = std::fs::read_to_string(dir.path().join("mautrix-driver.log"));
        eprintln!("=== driver log:\n{}", driver.unwrap_or_default());
        eprintln!("=== Synapse log:\n{}", homeserver.log());
    }
    checks.finish();
}
