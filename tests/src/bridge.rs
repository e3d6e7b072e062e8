//! Real application-service software under test (mautrix-python, heisenbridge) and the
//! homeservers it runs against: Outpost with registration files in `<data_dir>/appservices/`,
//! or a stock Synapse (client API only) with the same files, so a test's steps can be proved on
//! Synapse and then asserted on Outpost.
//!
//! The Python tools live in venvs under `target/` made by `tests/host-tools.sh ensure suite`
//! (rows `venv:mautrix-venv/...`, `venv:heisenbridge-venv/...`); Synapse in
//! `target/synapse-venv`, the one the Synapse interop test installs. Every process started here
//! is killed on drop, and its output printed when the test is panicking.

use crate::federation::client_for;
use crate::federation::register_on;
use crate::{Client, TempDir, TestEnv, free_addr, poll_until};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;

use crate::venv::{synapse_python, target_dir};
use std::time::{Duration, Instant};

/// How long Synapse may take to come up (first start creates its SQLite schema).
const SYNAPSE_READY: Duration = Duration::from_secs(180);

/// `target/<venv>/bin/<program>`, made by `tests/host-tools.sh ensure suite`; panics naming the
/// command to run when it is missing.
pub fn venv_program(venv: &str, program: &str) -> PathBuf {
    let path = target_dir().join(venv).join("bin").join(program);
    assert!(
        path.exists(),
        "{} is missing: install the test tools with `bash tests/host-tools.sh ensure suite`",
        path.display()
    );
    path
}

/// The directory of the Python drivers (`tests/appservice/`).
pub fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("appservice")
}

/// One appservice registration, as a bridge operator would write it.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The registration's `id`.
    pub id: String,
    /// The port of its `url` (`http://127.0.0.1:<port>`), where the appservice listens.
    pub port: u16,
    /// The token the appservice authenticates with.
    pub as_token: String,
    /// The token the homeserver authenticates with.
    pub hs_token: String,
    /// The bot's localpart.
    pub sender_localpart: String,
    /// Localpart prefix of the exclusive user and alias namespaces (`@<prefix>.*`).
    pub prefix: String,
    /// `receive_ephemeral`.
    pub receive_ephemeral: bool,
    /// `io.element.msc4190`: devices made with `PUT /devices/{id}` and the `as_token`.
    pub msc4190: bool,
}

impl Registration {
    /// A registration with fresh tokens and a free port, exclusive user and alias namespaces
    /// `<prefix>.*` and rate limiting off.
    pub fn new(id: &str, sender_localpart: &str, prefix: &str) -> Registration {
        let nonce = format!("{:x}{:x}", crate::federation::now_ms(), free_addr().port());
        Registration {
            id: id.to_owned(),
            port: free_addr().port(),
            as_token: format!("as-{id}-{nonce}"),
            hs_token: format!("hs-{id}-{nonce}"),
            sender_localpart: sender_localpart.to_owned(),
            prefix: prefix.to_owned(),
            receive_ephemeral: false,
            msc4190: false,
        }
    }

    /// The registration file (YAML) for `server_name`.
    pub fn yaml(&self, server_name: &str) -> String {
        let server = server_name.replace('.', "\\\\.");
        format!(
            "id: {id}\n\
             url: \"http://127.0.0.1:{port}\"\n\
             as_token: \"{as_token}\"\n\
             hs_token: \"{hs_token}\"\n\
             sender_localpart: {sender}\n\
             rate_limited: false\n\
             receive_ephemeral: {ephemeral}\n\
             io.element.msc4190: {msc4190}\n\
             namespaces:\n  \
               users:\n    \
                 - exclusive: true\n      \
                   regex: \"@{prefix}.*:{server}\"\n  \
               aliases:\n    \
                 - exclusive: true\n      \
                   regex: \"#{prefix}.*:{server}\"\n  \
               rooms: []\n",
            id = self.id,
            port = self.port,
            as_token = self.as_token,
            hs_token = self.hs_token,
            sender = self.sender_localpart,
            ephemeral = self.receive_ephemeral,
            msc4190 = self.msc4190,
            prefix = self.prefix,
        )
    }
}

/// A child process killed on drop; its output file is printed when the test is panicking.
#[derive(Debug)]
pub struct Spawned {
    /// What it is, for messages.
    pub name: String,
    /// The running process.
    pub child: Child,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Spawned {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn start(name: &str, command: &mut Command, log: &Path) -> Spawned {
        let out = File::create(log).expect("creating a log file");
        let err = out.try_clone().expect("cloning a log file handle");
        let child = command
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Spawned {
            name: name.to_owned(),
            child,
            log: log.to_path_buf(),
        }
    }

    /// Its output so far.
    pub fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with its output if it has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("polling a child") {
            panic!("{} exited with {status}:\n{}", self.name, self.output());
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // Best effort: it may have exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let log = self.output();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "=== {} output (last 300 lines):\n{}",
                self.name,
                lines[lines.len().saturating_sub(300)..].join("\n")
            );
        }
    }
}

/// The homeserver a real appservice runs against.
#[derive(Debug)]
pub enum Homeserver {
    /// Outpost, the server under test.
    Outpost(Box<TestEnv>),
    /// A stock Synapse, for proving a scenario's steps.
    Synapse {
        /// The Synapse process.
        process: Spawned,
        /// Its client-server base URL.
        url: String,
        /// Its temp dir (config, database, logs); dropped after the process.
        dir: TempDir,
    },
}

impl Homeserver {
    /// Outpost with `registrations` in `<data_dir>/appservices/`, open registration and rate
    /// limiting off.
    pub fn outpost(registrations: &[&Registration]) -> Homeserver {
        let (env, ()) = TestEnv::with_config_setup(
            "[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n",
            |data_dir| {
                let dir = data_dir.join("appservices");
                fs::create_dir_all(&dir).expect("creating <data_dir>/appservices");
                for registration in registrations {
                    fs::write(
                        dir.join(format!("{}.yaml", registration.id)),
                        registration.yaml(crate::SERVER_NAME),
                    )
                    .expect("writing a registration file");
                }
            },
        );
        Homeserver::Outpost(Box::new(env))
    }

    /// A stock Synapse (client listener only, SQLite) with `registrations` in
    /// `app_service_config_files`; installs Synapse into `target/synapse-venv` if needed.
    pub fn synapse(server_name: &str, registrations: &[&Registration]) -> Homeserver {
        let dir = TempDir::new();
        let mut files = String::new();
        for registration in registrations {
            let path = dir.path().join(format!("{}.yaml", registration.id));
            fs::write(&path, registration.yaml(server_name)).expect("writing a registration");
            write!(files, "\"{}\", ", path.display()).expect("writing to a String cannot fail");
        }
        let extra = format!(
            r#"app_service_config_files: [{files}]
rc_message:
  per_second: 1000
  burst_count: 1000
rc_registration:
  per_second: 1000
  burst_count: 1000
rc_joins:
  local:
    per_second: 1000
    burst_count: 1000
"#
        );
        let (process, url) = start_synapse(&dir, server_name, "INFO", &extra);
        Homeserver::Synapse { process, url, dir }
    }

    /// Which server this is, for messages.
    pub fn label(&self) -> &'static str {
        match self {
            Homeserver::Outpost(_) => "Outpost",
            Homeserver::Synapse { .. } => "Synapse",
        }
    }

    /// The client-server API base URL.
    pub fn base_url(&self) -> String {
        match self {
            Homeserver::Outpost(env) => env.base_url(),
            Homeserver::Synapse { url, .. } => url.clone(),
        }
    }

    /// The server name in user IDs.
    pub fn server_name(&self) -> String {
        match self {
            Homeserver::Outpost(env) => env.server_name().to_owned(),
            Homeserver::Synapse { dir, .. } => {
                let config = fs::read_to_string(dir.path().join("homeserver.yaml"))
                    .expect("reading synapse's config");
                config
                    .lines()
                    .find_map(|line| line.strip_prefix("server_name: "))
                    .expect("server_name in synapse's config")
                    .trim_matches('"')
                    .to_owned()
            }
        }
    }

    /// An anonymous client.
    pub fn anon(&self) -> Client {
        match self {
            Homeserver::Outpost(env) => env.anon(),
            Homeserver::Synapse { url, .. } => client_for(url),
        }
    }

    /// Registers a human user `localpart` (password login, user-interactive auth as the server
    /// asks), asserting success.
    pub fn register(&self, localpart: &str) -> Client {
        register_on(&self.anon(), localpart)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        match self {
            Homeserver::Outpost(env) => env.log(),
            Homeserver::Synapse { process, .. } => process.output(),
        }
    }
}

/// Polls `condition` every 100 ms until it returns `Some`, or `None` after `deadline`.
pub fn poll_for<T>(deadline: Duration, mut condition: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = condition() {
            return Some(value);
        }
        if start.elapsed() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `port` on 127.0.0.1 accepts connections, panicking after `deadline`.
pub fn wait_listening(what: &str, port: u16, deadline: Duration) {
    poll_until(what, deadline, || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
}

/// Starts a stock Synapse with its files in `dir`: client listener only on a free loopback
/// port, SQLite, open registration, presence off, no federation. `extra` is YAML appended to
/// the config (appservice files, rate limits) and `log_level` the root logger's level.
/// Returns the process (killed on drop) and its base URL once `/versions` answers; panics
/// if that takes longer than [`SYNAPSE_READY`]. The interop tests and `bench --compare` share
/// it, so both measure the same configuration.
pub fn start_synapse(
    dir: &TempDir,
    server_name: &str,
    log_level: &str,
    extra: &str,
) -> (Spawned, String) {
    let python = synapse_python();
    let d = dir.path().display();
    let port = free_addr().port();
    fs::write(
        dir.path().join("log.yaml"),
        format!(
            "version: 1\nformatters:\n  f:\n    format: '%(asctime)s %(levelname)s %(name)s %(message)s'\n\
             handlers:\n  console:\n    class: logging.StreamHandler\n    formatter: f\n\
             root:\n  level: {log_level}\n  handlers: [console]\ndisable_existing_loggers: false\n"
        ),
    )
    .expect("writing log.yaml");
    let config = format!(
        r#"server_name: "{server_name}"
pid_file: {d}/homeserver.pid
signing_key_path: {d}/signing.key
media_store_path: {d}/media
log_config: {d}/log.yaml
report_stats: false
enable_metrics: false
database:
  name: sqlite3
  args:
    database: {d}/homeserver.db
listeners:
  - port: {port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    resources:
      - names: [client]
federation_domain_whitelist: []
trusted_key_servers: []
suppress_key_server_warning: true
enable_registration: true
enable_registration_without_verification: true
macaroon_secret_key: "outpost-test-macaroon"
form_secret: "outpost-test-form"
presence:
  enabled: false
{extra}"#
    );
    let config_path = dir.path().join("homeserver.yaml");
    fs::write(&config_path, config).expect("writing homeserver.yaml");
    // PYTHONDONTWRITEBYTECODE: the venv may be another checkout's, used read-only.
    let status = Command::new(&python)
        .args(["-m", "synapse.app.homeserver", "--generate-keys", "-c"])
        .arg(&config_path)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::null())
        .status()
        .expect("running synapse --generate-keys");
    assert!(status.success(), "synapse --generate-keys failed");
    let mut process = Spawned::start(
        "synapse",
        Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config_path)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null()),
        &dir.path().join("synapse.log"),
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_synapse_ready(&client_for(&url), || process.assert_running());
    (process, url)
}

/// Waits until the Synapse behind `anon` answers `/_matrix/client/versions`, calling
/// `assert_running` (which panics with the log when the process has exited) between tries;
/// panics after [`SYNAPSE_READY`]. A first start compiles Synapse's Python, which is slow.
pub fn wait_synapse_ready(anon: &Client, mut assert_running: impl FnMut()) {
    let start = Instant::now();
    loop {
        assert_running();
        if anon
            .try_request("GET", "/_matrix/client/versions", &[], None)
            .is_ok_and(|r| r.status == 200)
        {
            return;
        }
        assert!(
            start.elapsed() < SYNAPSE_READY,
            "synapse not ready within {SYNAPSE_READY:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}
