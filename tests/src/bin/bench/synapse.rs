//! `--compare synapse`: a stock Synapse (the release the interop tests pin, from
//! `target/synapse-venv` or `$OUTPOST_SYNAPSE_VENV`) to run the same scenarios against in the
//! same run: SQLite, client listener only, open registration, every rate limit raised out of
//! reach, presence off.
//!
//! The bench's scenarios talk to either server through [`Target`], which gives them what they
//! need of it: registration, the process to read CPU and memory from, a label.

use std::time::Duration;

use tests::bridge::{Spawned, start_synapse};
use tests::federation::{client_for, register_on};
use tests::{Client, TempDir, TestEnv, proc_status_kib, process_cpu_time};

/// Every `rc_*` limit Synapse 1.163 knows of, with its sub-limits if it has any, raised so the
/// bench measures the server and not its throttle.
const RATE_LIMITS: &[(&str, &[&str])] = &[
    ("rc_message", &[]),
    ("rc_registration", &[]),
    ("rc_registration_token_validity", &[]),
    ("rc_joins", &["local", "remote"]),
    ("rc_joins_per_room", &[]),
    ("rc_invites", &["per_room", "per_user", "per_issuer"]),
    ("rc_login", &["address", "account", "failed_attempts"]),
    ("rc_3pid_validation", &[]),
    ("rc_third_party_invite", &[]),
    ("rc_media_create", &[]),
    ("rc_presence", &["per_user"]),
    ("rc_delayed_event_mgmt", &[]),
    ("rc_reports", &[]),
    ("rc_room_creation", &[]),
];

/// The YAML of [`RATE_LIMITS`], each at 100,000/s with a burst as large.
fn unlimited_yaml() -> String {
    let mut yaml = String::new();
    for (name, parts) in RATE_LIMITS {
        yaml.push_str(name);
        yaml.push_str(":\n");
        if parts.is_empty() {
            yaml.push_str("  per_second: 100000\n  burst_count: 100000\n");
        }
        for part in *parts {
            yaml.push_str(&format!(
                "  {part}:\n    per_second: 100000\n    burst_count: 100000\n"
            ));
        }
    }
    yaml
}

/// A running stock Synapse, killed on drop.
pub struct Synapse {
    process: Spawned,
    url: String,
    // Dropped after the process.
    _dir: TempDir,
}

impl Synapse {
    /// Starts Synapse on a free port with a fresh SQLite database, through the interop
    /// tests' launcher; panics when it is not answering in time.
    pub fn start() -> Synapse {
        let dir = TempDir::new();
        let (process, url) = start_synapse(&dir, "synapse.bench", "WARNING", &unlimited_yaml());
        Synapse {
            process,
            url,
            _dir: dir,
        }
    }
}

/// The server a scenario runs against.
pub enum Target<'a> {
    /// Outpost, the server under test.
    Outpost(&'a TestEnv),
    /// A stock Synapse, for the ratio.
    Synapse(&'a Synapse),
}

impl Target<'_> {
    /// `Outpost` or `Synapse`, for the report.
    pub fn label(&self) -> &'static str {
        match self {
            Target::Outpost(_) => "Outpost",
            Target::Synapse(_) => "Synapse",
        }
    }

    /// Registers `localpart` with a password, as the server's user-interactive auth asks.
    pub fn register(&self, localpart: &str) -> Client {
        match self {
            Target::Outpost(env) => env.register(localpart),
            Target::Synapse(synapse) => register_on(&client_for(&synapse.url), localpart),
        }
    }

    /// The server's process ID (CPU and memory are read from `/proc`).
    pub fn pid(&self) -> u32 {
        match self {
            Target::Outpost(env) => env.pid(),
            Target::Synapse(synapse) => synapse.process.child.id(),
        }
    }

    /// The server's user + system CPU time so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        process_cpu_time(self.pid())
    }

    /// A `kB` field of the server's `/proc/<pid>/status`.
    pub fn proc_status_kib(&self, field: &str) -> Option<u64> {
        proc_status_kib(self.pid(), field)
    }
}
