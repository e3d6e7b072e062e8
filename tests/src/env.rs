//! The homeserver process under test: locating the binary, temp dirs, starting in dev or
//! config mode, readiness, signals, restart, and the failure report printed on panic.

use crate::client::{Client, Http, str_field};
use crate::{COUNTER, SERVER_NAME, password_for, poll_until, toml_str};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a freshly spawned server may take to answer `/_matrix/client/versions`.
pub const READY_DEADLINE: Duration = Duration::from_secs(10);

/// How long a server may take to exit after `SIGTERM`.
pub const EXIT_DEADLINE: Duration = Duration::from_secs(15);

/// Whole-request timeout of the HTTP agent; longer than any long-poll a test makes.
const HTTP_TIMEOUT: Duration = Duration::from_secs(90);

/// Path of the homeserver binary under test.
///
/// `$OUTPOST_HOMESERVER` wins; otherwise the binary is looked up next to the current executable
/// (`target/<profile>/deps/<test>` and `target/<profile>/<bin>` both map to
/// `target/<profile>/homeserver`).
pub fn homeserver_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("OUTPOST_HOMESERVER") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable knows its own path");
    let mut dir = exe
        .parent()
        .expect("an executable lives in a directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.pop();
    }
    dir.join(format!("homeserver{}", std::env::consts::EXE_SUFFIX))
}

/// Panics with a build hint unless the homeserver binary exists.
fn require_binary() -> PathBuf {
    let binary = homeserver_binary();
    assert!(
        binary.is_file(),
        "homeserver binary not found at {}: build it with `cargo build --release -p homeserver` \
         (and run the tests with the same profile) or set OUTPOST_HOMESERVER",
        binary.display()
    );
    binary
}

/// A temporary directory under [`std::env::temp_dir`], removed on drop unless the thread is
/// panicking (then its path is printed so a failed test can be inspected).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh, uniquely named directory.
    pub fn new() -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "outpost-test-{}-{n}-{nanos:08x}",
                std::process::id()
            ));
            match fs::create_dir(&path) {
                Ok(()) => return TempDir { path },
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(err) => panic!("cannot create temp dir {}: {err}", path.display()),
            }
        }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("=== kept temp dir {}", self.path.display());
        } else {
            // Best effort: a leftover directory in /tmp is not worth a second panic.
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// How the server under test is configured.
#[derive(Debug, Clone)]
enum Mode {
    /// `homeserver dev --data-dir … --listen … --server-name …`.
    Dev,
    /// `homeserver --config <file>`; the file holds `server_name`, `data_dir`, `[listen]` and
    /// then these extra TOML lines.
    Config(String),
}

/// The running (or exited) server process.
#[derive(Debug)]
struct Server {
    child: Child,
    command_line: String,
    addr: SocketAddr,
}

/// One homeserver under test with its own temp dir, data dir and port.
///
/// Dropping it kills the server; if the test is panicking it first prints the command line and
/// every captured stderr log, and keeps the temp dir.
#[derive(Debug)]
pub struct TestEnv {
    mode: Mode,
    binary: PathBuf,
    http: Arc<Http>,
    server: Option<Server>,
    /// Soft and hard `RLIMIT_NOFILE` the server is started under (through `prlimit`), if set.
    nofile: Option<u64>,
    starts: u32,
    startup_time: Duration,
    idle_rss_kib: Option<u64>,
    /// For a server whose client listener speaks TLS: the CA file its clients trust.
    tls_ca: Option<PathBuf>,
    // Declared last: dropped after the server is killed.
    dir: TempDir,
}

impl TestEnv {
    /// Starts `homeserver dev` on a free port with a fresh data dir.
    pub fn dev() -> TestEnv {
        TestEnv::start_new(Mode::Dev)
    }

    /// Starts `homeserver --config` with a generated config: `server_name`, `data_dir` and
    /// `[listen] client` are filled in, `extra_toml` (other sections such as `[registration]`,
    /// `[rate_limit]`, `[limits]`) is appended verbatim.
    pub fn with_config(extra_toml: &str) -> TestEnv {
        TestEnv::start_new(Mode::Config(extra_toml.to_owned()))
    }

    /// Like [`TestEnv::with_config`], with the server's open-file limit (soft and hard) set to
    /// `nofile`, as systemd's default of 1,024 would, through `prlimit`.
    pub fn with_config_nofile(extra_toml: &str, nofile: u64) -> TestEnv {
        let mut env = TestEnv::unstarted(Mode::Config(extra_toml.to_owned()), Some(nofile));
        env.start();
        env
    }

    /// A config-mode server with open registration and rate limiting off: for tests that make
    /// many requests quickly.
    pub fn unlimited() -> TestEnv {
        TestEnv::with_config("[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n")
    }

    /// Like [`TestEnv::with_config`], but runs `setup` on the (not yet existing) data dir path
    /// before the first start, e.g. to mount a small filesystem there; returns what it made.
    pub fn with_config_setup<T>(extra_toml: &str, setup: impl FnOnce(&Path) -> T) -> (TestEnv, T) {
        let mut env = TestEnv::unstarted(Mode::Config(extra_toml.to_owned()), None);
        let made = setup(&env.data_dir());
        env.start();
        (env, made)
    }

    /// A config-mode server whose client listener serves HTTPS with a certificate it issues
    /// from its unit CA for [`TLS_NAMES`]; its clients trust only that CA. `extra_toml` as in
    /// [`TestEnv::with_config`].
    pub fn tls(extra_toml: &str) -> TestEnv {
        let listen = format!("tls = \"unit-ca\"\npublic_names = {TLS_NAMES}\n");
        TestEnv::with_tls(&listen, extra_toml, None, |_| ()).0
    }

    /// A config-mode server with TLS on the client listener: `listen_toml` holds `[listen]`
    /// keys besides `client` (`tls`, `public_names`, ...), `extra_toml` the other sections.
    /// Clients trust only the CA in the file `trust` (default: the unit CA,
    /// `<data_dir>/tls/ca.pem`). `setup` runs on the data dir path before the first start,
    /// e.g. to write an imported certificate; returns what it made.
    pub fn with_tls<T>(
        listen_toml: &str,
        extra_toml: &str,
        trust: Option<PathBuf>,
        setup: impl FnOnce(&Path) -> T,
    ) -> (TestEnv, T) {
        let mut env =
            TestEnv::unstarted(Mode::Config(format!("{listen_toml}\n{extra_toml}")), None);
        env.tls_ca = Some(trust.unwrap_or_else(|| env.data_dir().join("tls").join("ca.pem")));
        let made = setup(&env.data_dir());
        env.start();
        (env, made)
    }

    /// The CA (PEM) clients of this TLS server trust.
    pub fn ca_pem(&self) -> String {
        let path = self.tls_ca.as_ref().expect("a TLS test server");
        fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    }

    fn start_new(mode: Mode) -> TestEnv {
        let mut env = TestEnv::unstarted(mode, None);
        env.start();
        env
    }

    fn unstarted(mode: Mode, nofile: Option<u64>) -> TestEnv {
        let binary = require_binary();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            .max_idle_connections(256)
            .max_idle_connections_per_host(256)
            .build()
            .new_agent();
        TestEnv {
            mode,
            binary,
            http: Arc::new(Http::new(agent, String::new())),
            server: None,
            nofile,
            starts: 0,
            startup_time: Duration::ZERO,
            idle_rss_kib: None,
            tls_ca: None,
            dir: TempDir::new(),
        }
    }

    /// The temp dir owned by this environment.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `<data_dir>/homeserver.db`.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir().join("homeserver.db")
    }

    /// The server name user IDs and aliases end with.
    pub fn server_name(&self) -> &'static str {
        SERVER_NAME
    }

    /// The listening address of the current server process.
    pub fn addr(&self) -> SocketAddr {
        self.server().addr
    }

    /// The base URL of the current server process.
    pub fn base_url(&self) -> String {
        self.http.base()
    }

    /// The process ID of the current server process.
    pub fn pid(&self) -> u32 {
        self.server().child.id()
    }

    /// Time from spawning the last server process to its first 200 from `/versions`.
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    /// `VmRSS` of the server right after it became ready, in KiB (Linux only).
    pub fn idle_rss_kib(&self) -> Option<u64> {
        self.idle_rss_kib
    }

    /// A field (e.g. `VmHWM`, `VmRSS`) of `/proc/<pid>/status`, in KiB.
    pub fn proc_status_kib(&self, field: &str) -> Option<u64> {
        proc_status_kib(self.pid(), field)
    }

    /// CPU time (user + system, all threads, exited ones included) the current server process
    /// has used so far: benchmarks subtract two readings to get the server's CPU per operation.
    pub fn cpu_time(&self) -> Option<Duration> {
        process_cpu_time(self.pid())
    }

    /// The command line of the last server process, for messages.
    pub fn command_line(&self) -> String {
        self.server().command_line.clone()
    }

    /// Every stderr log this environment captured so far, oldest first.
    pub fn log(&self) -> String {
        let mut all = String::new();
        for n in 1..=self.starts {
            let path = self.log_path(n);
            let text = fs::read_to_string(&path).unwrap_or_default();
            writeln!(all, "--- {} ---\n{text}", path.display())
                .expect("writing to a String cannot fail");
        }
        all
    }

    /// An anonymous client (no access token).
    pub fn anon(&self) -> Client {
        Client {
            http: Arc::clone(&self.http),
            user_id: String::new(),
            device_id: String::new(),
            access_token: None,
            refresh_token: None,
        }
    }

    /// A client using an arbitrary access token.
    pub fn with_token(&self, token: &str) -> Client {
        self.anon().with_token(Some(token))
    }

    /// Registers `localpart` ([`register_on`](crate::client::register_on)), asserting
    /// success; returns the logged-in client.
    pub fn register(&self, localpart: &str) -> Client {
        crate::client::register_on(&self.anon(), localpart)
    }

    /// Logs `localpart` in with its [`password_for`] password on a new device, asserting success.
    pub fn login(&self, localpart: &str) -> Client {
        let (status, body) = self.anon().post(
            "/_matrix/client/v3/login",
            &json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": localpart },
                "password": password_for(localpart),
            }),
        );
        assert_eq!(status, 200, "login {localpart}: {status} {body:#}");
        self.client_from_login(&body)
    }

    /// A client from a `/register` or `/login` response body.
    pub fn client_from_login(&self, body: &Value) -> Client {
        Client {
            http: Arc::clone(&self.http),
            user_id: str_field(body, "user_id"),
            device_id: str_field(body, "device_id"),
            access_token: Some(str_field(body, "access_token")),
            refresh_token: body["refresh_token"].as_str().map(str::to_owned),
        }
    }

    /// `#name:server` for this server.
    pub fn alias(&self, name: &str) -> String {
        format!("#{name}:{SERVER_NAME}")
    }

    /// Sends `SIGKILL` and reaps the process.
    pub fn kill9(&mut self) {
        let server = self.server_mut();
        // The process may already be gone; `wait` below is what matters.
        let _ = server.child.kill();
        server.child.wait().expect("waiting for a killed child");
    }

    /// Sends `SIGTERM` (via `kill(1)`) and waits up to [`EXIT_DEADLINE`] for the exit status.
    pub fn sigterm(&mut self) -> ExitStatus {
        let pid = self.pid();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("running kill(1)");
        assert!(status.success(), "kill -TERM {pid} failed: {status}");
        self.wait_exit(EXIT_DEADLINE)
    }

    /// Sends `SIGTERM` and asserts a clean exit (status 0).
    pub fn stop(&mut self) {
        let status = self.sigterm();
        assert!(
            status.success(),
            "homeserver exited with {status} after SIGTERM\n{}",
            self.log()
        );
    }

    /// Waits for the server process to exit, panicking after `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let child = &mut self.server_mut().child;
        poll_until("the homeserver to exit", deadline, || {
            child.try_wait().expect("polling the child")
        })
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.server_mut().child.try_wait(), Ok(None))
    }

    /// Starts the server again on the same data dir (on a new port; clients follow). The
    /// previous process must have exited.
    pub fn restart(&mut self) {
        assert!(
            !self.is_running(),
            "restart() needs the previous server stopped (kill9/sigterm)"
        );
        self.start();
    }

    fn server(&self) -> &Server {
        self.server.as_ref().expect("the server was started")
    }

    fn server_mut(&mut self) -> &mut Server {
        self.server.as_mut().expect("the server was started")
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("stderr-{start}.log"))
    }

    /// Spawns the server on a free port and waits until it answers; retries a few times when
    /// the port was taken between choosing and binding it.
    fn start(&mut self) {
        for attempt in 1..=3 {
            let addr = crate::free_addr();
            let (mut child, command_line, spawned) = self.spawn(addr);
            let scheme = if self.tls_ca.is_some() {
                "https"
            } else {
                "http"
            };
            *self
                .http
                .base
                .write()
                .expect("base URL lock is never poisoned") = format!("{scheme}://{addr}");
            if let Some(ca) = &self.tls_ca {
                // The unit CA appears before the listener does (or the server fails first).
                let pem = poll_until("the CA file", READY_DEADLINE, || {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        return Some(None);
                    }
                    fs::read_to_string(ca).ok().map(Some)
                });
                if let Some(pem) = pem {
                    *self
                        .http
                        .agent
                        .write()
                        .expect("agent lock is never poisoned") = tls_agent(&pem);
                }
            }
            let ready = wait_ready(
                &self.anon(),
                &mut child,
                spawned,
                &self.log_path(self.starts),
            );
            self.server = Some(Server {
                child,
                command_line,
                addr,
            });
            match ready {
                Ok(startup) => {
                    self.startup_time = startup;
                    self.idle_rss_kib = proc_status_kib(self.pid(), "VmRSS");
                    return;
                }
                Err(reason) => {
                    let log = fs::read_to_string(self.log_path(self.starts)).unwrap_or_default();
                    let port_taken = log.to_ascii_lowercase().contains("in use");
                    if !(port_taken && attempt < 3) {
                        let _ = self.server_mut().child.kill();
                        panic!(
                            "homeserver did not become ready: {reason}\ncommand: {}\nlog:\n{}",
                            self.command_line(),
                            self.log()
                        );
                    }
                }
            }
        }
    }

    /// Writes the config (in config mode) and spawns the process with stderr to a log file.
    fn spawn(&mut self, addr: SocketAddr) -> (Child, String, Instant) {
        self.starts += 1;
        let log_path = self.log_path(self.starts);
        let data_dir = self.data_dir();
        let mut command = match self.nofile {
            Some(limit) => {
                // prlimit execs the server, so the child's pid is the server's.
                let mut command = Command::new("prlimit");
                command
                    .arg(format!("--nofile={limit}:{limit}"))
                    .arg("--")
                    .arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        match &self.mode {
            Mode::Dev => {
                command
                    .arg("dev")
                    .arg("--data-dir")
                    .arg(&data_dir)
                    .arg("--listen")
                    .arg(addr.to_string())
                    .arg("--server-name")
                    .arg(SERVER_NAME);
            }
            Mode::Config(extra) => {
                let config_path = self.dir.path().join("homeserver.toml");
                let config = format!(
                    "server_name = {}\ndata_dir = {}\n\n[listen]\nclient = {}\n\n{extra}",
                    toml_str(SERVER_NAME),
                    toml_str(&data_dir.to_string_lossy()),
                    toml_str(&addr.to_string()),
                );
                fs::write(&config_path, config).expect("writing the test config");
                command.arg("--config").arg(&config_path);
            }
        }
        let command_line = format!("{command:?}");
        let log = File::create(&log_path).expect("creating the stderr log file");
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            // The "listening" line wait_ready looks for is logged at INFO.
            .env_remove("RUST_LOG");
        let spawned = Instant::now();
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("spawning {command_line}: {err}"));
        (child, command_line, spawned)
    }
}

/// The `[listen] public_names` of [`TestEnv::tls`] servers, as TOML.
pub const TLS_NAMES: &str = "[\"localhost\", \"127.0.0.1\"]";

/// A `ureq` agent like the harness's, trusting only the CA in `ca_pem`.
pub(crate) fn tls_agent(ca_pem: &str) -> ureq::Agent {
    use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
    let roots: Vec<Certificate<'static>> = vec![
        Certificate::from_pem(ca_pem.as_bytes()).expect("the CA file holds a PEM certificate"),
    ];
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(HTTP_TIMEOUT))
        .max_idle_connections(256)
        .max_idle_connections_per_host(256)
        .tls_config(tls)
        .build()
        .new_agent()
}

/// Polls `/versions` until 200, the child exiting, or [`READY_DEADLINE`]; returns the time from
/// spawn to the first 200. The 200 counts only once the child's own log says it is listening:
/// when another test's server took the port between choosing and binding it, that server
/// answers `/versions` while this child is still failing to bind.
fn wait_ready(
    client: &Client,
    child: &mut Child,
    spawned: Instant,
    log: &Path,
) -> Result<Duration, String> {
    loop {
        if let Some(status) = child.try_wait().map_err(|err| err.to_string())? {
            return Err(format!("exited early with {status}"));
        }
        if let Ok(reply) = client.try_request("GET", "/_matrix/client/versions", &[], None)
            && reply.status == 200
            && fs::read_to_string(log).is_ok_and(|text| text.contains(" listening addr="))
        {
            return Ok(spawned.elapsed());
        }
        if spawned.elapsed() > READY_DEADLINE {
            return Err(format!("no 200 from /versions within {READY_DEADLINE:?}"));
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Number of established TCP connections whose local port is `port` (i.e. accepted by a
/// server listening there), from `/proc/net/tcp`. Lets a test wait until requests it started in
/// other threads have reached the server.
pub fn established_connections(port: u16) -> usize {
    let table = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1).unwrap_or_default();
            let state = fields.nth(1).unwrap_or_default();
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            // State 01 is TCP_ESTABLISHED.
            local_port == Some(port) && state == "01"
        })
        .count()
}

/// User + system CPU time of a process from `/proc/<pid>/stat` (fields 14 and 15, in clock
/// ticks; `getconf CLK_TCK` says how long one is, 100 per second on Linux everywhere we run).
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it start past its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ').skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (user + system) as f64 / clock_ticks_per_second() as f64,
    ))
}

/// `getconf CLK_TCK`, asked once; 100 if `getconf` cannot say.
fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

/// A `kB` field of `/proc/<pid>/status`.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        if let Some(server) = &mut self.server {
            // Best effort: the process may have exited already.
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        if panicking {
            if let Some(server) = &self.server {
                eprintln!("=== homeserver command: {}", server.command_line);
            }
            eprintln!("=== homeserver stderr:\n{}", self.log());
        }
    }
}

/// Runs the homeserver binary with `args` to completion (it is expected to exit by itself) and
/// returns its exit status and stderr. Panics if it is still running after `deadline`.
pub fn run_homeserver(args: &[&std::ffi::OsStr], deadline: Duration) -> (ExitStatus, String) {
    let binary = require_binary();
    let dir = TempDir::new();
    let log_path = dir.path().join("stderr.log");
    let log = File::create(&log_path).expect("creating the stderr log file");
    let mut child = Command::new(&binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .env("NO_COLOR", "1")
        .spawn()
        .unwrap_or_else(|err| panic!("spawning {}: {err}", binary.display()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("polling the child") {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} {args:?} still running after {deadline:?}; stderr:\n{}",
                binary.display(),
                fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    (status, fs::read_to_string(&log_path).unwrap_or_default())
}
