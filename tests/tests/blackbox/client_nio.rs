//! matrix-nio, a stock Python client, over HTTPS: it trusts only the unit CA (an
//! `ssl.SSLContext` with that one root), logs in, creates a room, sends and syncs its message
//! back; with another CA it is refused at the TLS handshake.
//!
//! matrix-nio comes from PyPI, pinned, installed into `target/nio-venv` on first run (or the
//! venv named by `$OUTPOST_NIO_VENV`). Ignored by a plain `cargo test` (it needs PyPI); the
//! README's test command (`tests/run.sh`) runs it with the Synapse interop test.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use tests::{TestEnv, password_for};

/// The matrix-nio release the test is checked against (ISC licence; raise it deliberately).
const NIO_REQUIREMENT: &str = "matrix-nio==0.25.2";

fn nio_python() -> PathBuf {
    tests::venv::python_with("nio-venv", "OUTPOST_NIO_VENV", &[NIO_REQUIREMENT], "nio")
}

/// Runs tests/python/nio_https.py against `env` trusting `ca_file`; its JSON answer.
fn nio(env: &TestEnv, ca_file: &std::path::Path, user: &str) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/nio_https.py");
    let out = Command::new(nio_python())
        .arg(&script)
        .arg(env.base_url())
        .arg(ca_file)
        .arg(user)
        .arg(password_for(user))
        .output()
        .expect("running the nio driver");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "nio driver failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|err| panic!("nio driver printed no JSON ({err}): {stdout}"))
}

#[test]
#[ignore = "installs matrix-nio from PyPI into target/nio-venv"]
fn matrix_nio_talks_to_the_unit_over_https_trusting_only_the_unit_ca() {
    let env = TestEnv::tls("[registration]\nenabled = true\n");
    assert!(env.base_url().starts_with("https://"), "{}", env.base_url());
    let alice = env.register("alice");
    let unit_ca = env.data_dir().join("tls").join("ca.pem");

    let seen = nio(&env, &unit_ca, "alice");
    assert_eq!(seen["error"], Value::Null, "{seen:#}");
    assert_eq!(seen["user_id"], alice.user_id.as_str(), "{seen:#}");
    assert!(
        seen["bodies"]
            .as_array()
            .is_some_and(|bodies| bodies.iter().any(|b| b == "hello from nio")),
        "the message came back through /sync: {seen:#}"
    );

    // Another CA (a second unit's) does not vouch for this unit's certificate.
    let other = TestEnv::tls("");
    let other_ca = other.data_dir().join("tls").join("ca.pem");
    let refused = nio(&env, &other_ca, "alice");
    let error = refused["tls_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("CERTIFICATE_VERIFY_FAILED") || error.contains("certificate verify"),
        "refused at the handshake: {refused:#}"
    );
}
