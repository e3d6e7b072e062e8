//! Harness for black-box tests of the `appliance` CLI.
//!
//! A [`Unit`] is one temporary data directory that tests provision with the real
//! `appliance setup --from`, run the real `homeserver --config <data>/homeserver.toml` on (the
//! config `setup` wrote, on a free loopback port chosen at setup), and drive with `appliance`
//! commands ([`Unit::appliance`], stdin closed or fed a given text, so no command can wait for a
//! terminal) and HTTP. On panic, dropping the unit prints every command run, its output and
//! the server's log, and keeps the temp dir.
//!
//! The binary is `$OUTPOST_APPLIANCE` if set, else `target/<profile>/appliance` next to the
//! running test executable; build it with `cargo build --release -p appliance-tools`.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::{Client, Http};
use crate::{EXIT_DEADLINE, READY_DEADLINE, TempDir, free_addr, homeserver_binary, poll_until};

/// How long one `appliance` command may take (setup hashes a password and makes keys).
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// A password the appliance's strength policy accepts for any test user.
pub const STRONG_PASSWORD: &str = "Tr4in-Lamp-Ocean";

/// Path of the `appliance` binary under test (see the module docs).
pub fn appliance_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("OUTPOST_APPLIANCE") {
        return PathBuf::from(path);
    }
    homeserver_binary().with_file_name(format!("appliance{}", std::env::consts::EXE_SUFFIX))
}

/// One finished `appliance` run.
#[derive(Debug, Clone)]
pub struct Run {
    /// The command line, for messages.
    pub command: String,
    /// The exit code (`-1` if killed by a signal).
    pub code: i32,
    /// Everything printed on stdout.
    pub stdout: String,
    /// Everything printed on stderr.
    pub stderr: String,
}

impl Run {
    /// Asserts the exit code, printing the run on mismatch.
    pub fn expect(&self, code: i32, what: &str) -> &Run {
        assert_eq!(self.code, code, "{what}: unexpected exit code\n{self}");
        self
    }

    /// Asserts success.
    pub fn ok(&self, what: &str) -> &Run {
        self.expect(0, what)
    }

    /// Stdout parsed as JSON (panics with the run if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout is not JSON ({err})\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\nexit code {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

/// A provisioning file for a unit called `server_name` whose clients connect to `client` over
/// plain HTTP (on loopback, where it is allowed), which the harness's HTTP client speaks.
pub fn provisioning(server_name: &str, client: SocketAddr) -> Value {
    let federation = free_addr();
    json!({
        "version": 1,
        "server_name": server_name,
        "network": {
            "client_listen": client.to_string(),
            "federation_listen": federation.to_string(),
            "federation_endpoints": [federation.to_string()],
            "client_tls": "off",
        },
        "admin": { "user": "admin" },
    })
}

/// One unit's data dir, its homeserver process (when started) and its `appliance` runs.
pub struct Unit {
    dir: TempDir,
    http: Arc<Http>,
    server: Option<Child>,
    starts: u32,
    history: Mutex<Vec<String>>,
}

impl Unit {
    /// A blank unit: an empty temp dir, nothing set up, no server.
    pub fn new() -> Unit {
        let binary = appliance_binary();
        assert!(
            binary.is_file(),
            "appliance binary not found at {}: build it with `cargo build --release -p \
             appliance-tools` (same profile as the tests) or set OUTPOST_APPLIANCE",
            binary.display()
        );
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Unit {
            dir: TempDir::new(),
            http: Arc::new(Http::new(agent, String::new())),
            server: None,
            starts: 0,
            history: Mutex::new(Vec::new()),
        }
    }

    /// The temp dir (the data dir is its `data` subdirectory).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The unit's data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs `appliance --data-dir <data> ARGS` with stdin closed.
    pub fn appliance(&self, args: &[&str]) -> Run {
        self.appliance_with_stdin(args, None)
    }

    /// Runs `appliance --data-dir <data> ARGS`, feeding `stdin` (or closing it).
    pub fn appliance_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut command = Command::new(appliance_binary());
        command
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("OUTPOST_DATA_DIR")
            .env("NO_COLOR", "1");
        let command_line = format!("{command:?}");
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("spawning {command_line}: {err}"));
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("stdin was piped");
            // The command may exit before reading (e.g. on a usage error); that is its answer.
            let _ = pipe.write_all(text.as_bytes());
        }
        let output = wait_output(child, &command_line);
        let run = Run {
            command: command_line,
            code: output.0.code().unwrap_or(-1),
            stdout: output.1,
            stderr: output.2,
        };
        self.history
            .lock()
            .expect("history lock is never poisoned")
            .push(run.to_string());
        run
    }

    /// Writes `file` as JSON into the temp dir (outside the data dir) and returns its path.
    pub fn write_json(&self, name: &str, file: &Value) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(
            &path,
            serde_json::to_vec_pretty(file).expect("JSON values serialise"),
        )
        .expect("writing a test file");
        path
    }

    /// Provisions the unit as `server_name` with `appliance setup --from … --yes`, the admin
    /// `admin` with [`STRONG_PASSWORD`]; asserts success.
    pub fn setup(&self, server_name: &str) {
        self.setup_from(
            &provisioning(server_name, free_addr()),
            "appliance setup --from",
        );
    }

    /// [`Unit::setup`] with HTTPS on the client port: a certificate from the unit CA for
    /// 127.0.0.1, the address tests reach it on.
    pub fn setup_https(&self, server_name: &str) {
        let mut provisioning = provisioning(server_name, free_addr());
        provisioning["network"]["client_tls"] = "unit-ca".into();
        provisioning["network"]["public_names"] = serde_json::json!(["127.0.0.1"]);
        self.setup_from(&provisioning, "appliance setup --from, with HTTPS");
    }

    fn setup_from(&self, provisioning: &Value, what: &str) {
        let file = self.write_json("provisioning.json", provisioning);
        self.appliance_with_stdin(
            &[
                "setup",
                "--from",
                &file.to_string_lossy(),
                "--admin-password-file",
                "-",
                "--yes",
            ],
            Some(&format!("{STRONG_PASSWORD}\n")),
        )
        .ok(what);
    }

    /// The client listen address from the unit's config.
    pub fn client_addr(&self) -> SocketAddr {
        let config =
            fs::read_to_string(self.data_dir().join("homeserver.toml")).expect("config exists");
        let line = config
            .lines()
            .find(|line| line.trim_start().starts_with("client"))
            .expect("config has a client listen address");
        line.split('"')
            .nth(1)
            .and_then(|addr| addr.parse().ok())
            .expect("client listen address parses")
    }

    /// Whether the unit's config serves TLS on the client port (`listen.tls` other than "off").
    pub fn client_tls(&self) -> bool {
        let config =
            fs::read_to_string(self.data_dir().join("homeserver.toml")).expect("config exists");
        config.lines().any(|line| {
            let (key, value) = line.split_once('=').unwrap_or_default();
            key.trim() == "tls" && value.trim() != "\"off\""
        })
    }

    /// The unit's client API as a URL (`http://IP:PORT`), as `appliance selftest
    /// --peer-client-url` takes it.
    pub fn client_url(&self) -> String {
        let scheme = if self.client_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.client_addr())
    }

    /// Creates `name` with [`STRONG_PASSWORD`] through `appliance user create`; asserts success.
    pub fn create_user(&self, name: &str) {
        self.appliance_with_stdin(
            &["user", "create", name, "--password-file", "-"],
            Some(&format!("{STRONG_PASSWORD}\n")),
        )
        .ok("user create");
    }

    /// Every account, from `appliance user list --json`.
    pub fn users(&self) -> Vec<Value> {
        let run = self.appliance(&["user", "list", "--json"]);
        run.ok("user list --json");
        run.json()["users"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("user list --json has no users array\n{run}"))
    }

    /// Starts `homeserver --config <data>/homeserver.toml` and waits until it answers HTTP and
    /// its admin socket exists.
    pub fn start(&mut self) {
        assert!(self.server.is_none(), "the homeserver is already running");
        self.starts += 1;
        let log = File::create(self.log_path(self.starts)).expect("creating the server log");
        let child = Command::new(homeserver_binary())
            .arg("--config")
            .arg(self.data_dir().join("homeserver.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env("NO_COLOR", "1")
            .spawn()
            .expect("spawning the homeserver");
        let addr = self.client_addr();
        let tls = self.client_tls();
        let scheme = if tls { "https" } else { "http" };
        *self.http.base.write().expect("base lock is never poisoned") =
            format!("{scheme}://{addr}");
        self.server = Some(child);
        let client = self.client();
        let socket = self.data_dir().join("admin.sock");
        let started = Instant::now();
        loop {
            let child = self.server.as_mut().expect("just started");
            if let Some(status) = child.try_wait().expect("polling the homeserver") {
                panic!(
                    "the homeserver exited early with {status}\n{}",
                    self.server_log()
                );
            }
            // Over TLS the harness's HTTP client cannot ask; the port accepting is enough, and
            // the TLS tests make their own handshakes.
            let answering = if tls {
                std::net::TcpStream::connect(addr).is_ok()
            } else {
                client
                    .try_request("GET", "/_matrix/client/versions", &[], None)
                    .is_ok_and(|reply| reply.status == 200)
            };
            if answering && socket.exists() {
                return;
            }
            assert!(
                started.elapsed() < READY_DEADLINE,
                "the homeserver did not become ready within {READY_DEADLINE:?}\n{}",
                self.server_log()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the homeserver with SIGTERM and asserts a clean exit.
    pub fn stop(&mut self) {
        let mut child = self.server.take().expect("the homeserver was started");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("running kill(1)");
        assert!(status.success(), "kill -TERM failed");
        let exit: ExitStatus = poll_until("the homeserver to exit", EXIT_DEADLINE, || {
            child.try_wait().expect("polling the homeserver")
        });
        assert!(
            exit.success(),
            "homeserver exited with {exit}\n{}",
            self.server_log()
        );
    }

    /// An anonymous client of this unit's homeserver.
    pub fn client(&self) -> Client {
        Client {
            http: Arc::clone(&self.http),
            user_id: String::new(),
            device_id: String::new(),
            access_token: None,
            refresh_token: None,
        }
    }

    /// `POST /login` with a password: `(status, body)`.
    pub fn login(&self, user: &str, password: &str) -> (u16, Value) {
        self.client().post(
            "/_matrix/client/v3/login",
            &json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": user },
                "password": password,
            }),
        )
    }

    /// Logs in, asserting success, and returns the logged-in client.
    pub fn login_ok(&self, user: &str, password: &str) -> Client {
        let (status, body) = self.login(user, password);
        assert_eq!(status, 200, "login {user}: {body:#}");
        Client {
            user_id: body["user_id"].as_str().unwrap_or_default().to_owned(),
            device_id: body["device_id"].as_str().unwrap_or_default().to_owned(),
            access_token: body["access_token"].as_str().map(str::to_owned),
            ..self.client()
        }
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("homeserver-{start}.log"))
    }

    /// Every server log so far.
    pub fn server_log(&self) -> String {
        let mut all = String::new();
        for n in 1..=self.starts {
            let text = fs::read_to_string(self.log_path(n)).unwrap_or_default();
            writeln!(all, "--- homeserver log {n} ---\n{text}").expect("writing to a String");
        }
        all
    }
}

impl Default for Unit {
    fn default() -> Self {
        Unit::new()
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        if let Some(child) = &mut self.server {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            if let Ok(history) = self.history.lock() {
                for run in history.iter() {
                    eprintln!("=== {run}");
                }
            }
            eprintln!("{}", self.server_log());
        }
    }
}

/// Waits for `child` to exit within [`COMMAND_DEADLINE`], reading its output as it goes.
fn wait_output(mut child: Child, command_line: &str) -> (ExitStatus, String, String) {
    let mut stdout = child.stdout.take().expect("stdout was piped");
    let mut stderr = child.stderr.take().expect("stderr was piped");
    let out = thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let err = thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("polling appliance") {
            break status;
        }
        if started.elapsed() > COMMAND_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command_line} still running after {COMMAND_DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    (status, stdout, stderr)
}

/// Puts `from` on `into`'s allow-list the way admins do: `from` exports its card, `into`
/// imports it with the fingerprint `from`'s admin reads out; asserts success.
pub fn import_card(from: &Unit, into: &Unit) {
    let card = from.root().join("card-export.json");
    from.appliance(&["peer", "export", "--out", &card.to_string_lossy()])
        .ok("peer export");
    let fingerprint = from.appliance(&["peer", "fingerprint"]);
    fingerprint.ok("peer fingerprint");
    into.appliance(&[
        "peer",
        "import",
        &card.to_string_lossy(),
        "--expect-fingerprint",
        fingerprint.stdout.trim(),
    ])
    .ok("peer import");
}

/// What one HTTPS request saw: the answer and the certificate chain the server sent.
#[derive(Debug)]
pub struct HttpsReply {
    /// The status line, headers and body as text.
    pub response: String,
    /// The certificates the server presented (DER), leaf first.
    pub chain: Vec<Vec<u8>>,
}

/// `GET path` over a fresh TLS connection to `addr`, sending `name` as SNI and checking the
/// server's certificate for it against only the certificates in `roots_pem`, as a client
/// that was given the unit CA (or the organisation's root) does. `Err` carries the handshake
/// or I/O error.
pub fn https_get(
    addr: SocketAddr,
    name: &str,
    roots_pem: &str,
    path: &str,
) -> Result<HttpsReply, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::io::Read as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        let cert = cert.map_err(|err| format!("roots PEM: {err}"))?;
        roots.add(cert).map_err(|err| format!("root: {err}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| err.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server = ServerName::try_from(name.to_owned()).map_err(|err| err.to_string())?;
    let conn =
        rustls::ClientConnection::new(Arc::new(config), server).map_err(|err| err.to_string())?;
    let tcp = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|err| format!("connect {addr}: {err}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|err| err.to_string())?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .map_err(|err| format!("TLS: {err}"))?;
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        // A server that closes without close_notify after a complete answer.
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(err) => return Err(format!("TLS: {err}")),
    }
    let chain = stream
        .conn
        .peer_certificates()
        .map(|certs| certs.iter().map(|cert| cert.to_vec()).collect())
        .unwrap_or_default();
    Ok(HttpsReply {
        response: String::from_utf8_lossy(&response).into_owned(),
        chain,
    })
}

/// SHA-256-free fingerprint of a file for "unchanged" checks: its bytes.
pub fn read_bytes(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}
