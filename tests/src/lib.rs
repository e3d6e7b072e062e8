//! Black-box harness for the built Outpost binaries.
//!
//! [`TestEnv`] owns one temporary directory and one `homeserver` process listening on a free
//! 127.0.0.1 port, started in `dev` mode or from a generated TOML config. Tests talk to it over
//! real HTTP through [`Client`]s, can kill it (`SIGKILL` / `SIGTERM`) and restart it on the same
//! data directory. When a test panics, dropping the environment prints the command line and the
//! captured stderr log and keeps the temporary directory for inspection.
//!
//! The binary is `$OUTPOST_HOMESERVER` if set, else `target/<profile>/homeserver` next to the
//! running test executable; build it first with `cargo build --release -p homeserver`.
//!
//! Modules: `env` (processes, temp dirs), `bench` (the figures the benchmarks print),
//! `client` (Matrix requests over the `ureq` agent and JSON helpers), `raw` (hand-written
//! HTTP/1.1 for requests the agent cannot make), `tls` (TLS clients of the client listener and
//! test certificates), `e2ee` (a vodozemac-based encrypting client), `federation` (several
//! units), `appliance` (the CLI), `appservice` (a test application service), `bridge` (real
//! appservice software, and a stock Synapse to prove its scenarios on), `venv` (pinned PyPI
//! tools in venvs under `target/`), `oauth` (`oauth_protocol.rs`'s OAuth 2.0 request shapes, by
//! path), `html` (the forms of a server-rendered page), `oauth_client` (a standard OAuth 2.0
//! client, metadata-driven, and the suite's one scripted browser over `html`).
//!
//! The harness owns no Matrix behaviour beyond request shapes: every assertion about behaviour
//! lives in `tests/tests/blackbox/*.rs`.

pub mod appliance;
pub mod appservice;
// Figures the benchmark binaries print (percentiles, durations, sizes).
pub mod bench;
mod client;
pub mod e2ee;
mod env;
pub mod federation;
pub mod png;
mod raw;
pub mod tls;
// Real appservice software (mautrix-python, heisenbridge) and the servers it runs against.
pub mod bridge;
pub mod venv;
// OAuth 2.0 request shapes and a scripted user agent for the unit's pages.
pub mod oauth;
// The OAuth 2.0 server as standard clients and browsers use it (oauth_security, oauth_browser).
pub mod html;
pub mod oauth_client;

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicU64;
use std::thread;
use std::time::{Duration, Instant};

pub use client::{
    Client, Reply, assert_error, bodies, event_ids, ok, section_events, str_field, sync_query,
    timeline,
};
pub use env::{
    EXIT_DEADLINE, READY_DEADLINE, TLS_NAMES, TempDir, TestEnv, established_connections,
    homeserver_binary, proc_status_kib, process_cpu_time, run_homeserver,
};
pub use raw::{admin_get, admin_post, closed_within, connect_from, raw_http, raw_http_from};
pub use serde_json::{Value, json};

/// The server name every test environment uses; user IDs are `@name:outpost.test`.
pub const SERVER_NAME: &str = "outpost.test";

/// Distinguishes temp dirs created by one test process.
pub(crate) static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Percent-encodes one URL path segment or query value (everything except RFC 3986 unreserved).
pub fn enc(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            write!(out, "%{byte:02X}").expect("writing to a String cannot fail");
        }
    }
    out
}

/// Quotes a string as a TOML basic string.
pub fn toml_str(raw: &str) -> String {
    let mut out = String::from("\"");
    for c in raw.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                write!(out, "\\u{:04X}", u32::from(c)).expect("writing to a String cannot fail");
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Finds a currently free TCP port on 127.0.0.1 by binding port 0 and releasing it.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding 127.0.0.1:0 always yields a port")
}

/// The password the harness registers `localpart` with.
pub fn password_for(localpart: &str) -> String {
    format!("{localpart}-Secret-Pass-1")
}

/// Polls `condition` every few milliseconds until it returns `Some`, panicking with `what` after
/// `deadline`.
pub fn poll_until<T>(
    what: &str,
    deadline: Duration,
    mut condition: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}
