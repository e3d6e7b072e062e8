//! The server harness for the real-client tests: finds the built `homeserver` binary, starts
//! it with a throw-away data directory, waits until `GET /_matrix/client/versions` answers 200,
//! keeps its stdout and stderr in a log file for failure reports, and stops it (SIGTERM, then
//! SIGKILL) when done. Std only, so that every test file of this project can share it whatever
//! client library it uses.
//!
//! - [`Server::start`]: one `homeserver dev` on a free 127.0.0.1 port, named `localhost:PORT`.
//! - [`Server::start_tls`]: the same with `--tls`: HTTPS with a certificate from the unit's
//!   dev CA, whose PEM [`Server::ca_pem`] gives the client to trust (and nothing else).
//! - [`Server::start_federation`]: units named e.g. `unit-a.test`, `unit-b.test` on 127.0.0.2,
//!   127.0.0.3, …, each with a config file, its own keys and TLS identity and signed peer card
//!   (made by the binary's `peer-card` command), and every other unit's card on its allow-list
//!   (`<data_dir>/peers/<name>.json`), as tests/src/federation.rs of the black-box suite does.
//! - [`sdk`]: the matrix-rust-sdk helpers every scenario shares (registering a client). The
//!   harness itself stays std only.
//! - [`browser`]: a scripted user agent for the unit's OAuth sign-in and consent pages, and
//!   [`html`], the form parser it shares with the black-box suite (`tests/src/html.rs`).

pub mod browser;
#[path = "../../src/html.rs"]
pub mod html;
pub mod sdk;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to answer `/versions` after it was spawned.
const READY_DEADLINE: Duration = Duration::from_secs(15);
/// How long the server may take to exit after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// The homeserver binary under test: `$OUTPOST_HOMESERVER`, else the workspace's
/// `target/release/homeserver`.
pub fn homeserver_binary() -> PathBuf {
    match std::env::var_os("OUTPOST_HOMESERVER") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/homeserver"),
    }
}

/// A running homeserver process. Dropping it kills the process.
pub struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    /// The TLS federation listener of a federating unit; `None` for `dev`.
    federation_addr: Option<SocketAddr>,
    /// With TLS on the client listener: the CA file clients must trust.
    ca_path: Option<PathBuf>,
    server_name: String,
    log_path: PathBuf,
    // Kept for its Drop: removes the data directory and the log.
    _dir: tempfile::TempDir,
}

/// A federating unit between `peer-card` and its first start: config written, card made.
struct PreparedUnit {
    dir: tempfile::TempDir,
    name: String,
    client_addr: SocketAddr,
    federation_addr: SocketAddr,
    config_path: PathBuf,
    card_path: PathBuf,
}

impl PreparedUnit {
    /// The data directory named in the config.
    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Server {
    /// Starts `homeserver dev` on a free 127.0.0.1 port and waits until it is ready.
    pub fn start() -> Result<Self, String> {
        Server::start_dev(false)
    }

    /// Starts `homeserver dev --tls` (HTTPS with a certificate from the unit's dev CA) on a
    /// free 127.0.0.1 port and waits until it is ready.
    pub fn start_tls() -> Result<Self, String> {
        Server::start_dev(true)
    }

    fn start_dev(tls: bool) -> Result<Self, String> {
        let binary = existing_binary()?;
        let dir = temp_dir()?;
        let addr = free_port(Ipv4Addr::LOCALHOST)?;
        let server_name = format!("localhost:{}", addr.port());
        let mut command = Command::new(&binary);
        command
            .arg("dev")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--server-name")
            .arg(&server_name);
        if tls {
            command.arg("--tls");
        }
        let ca_path = tls.then(|| dir.path().join("data/tls/ca.pem"));
        let mut server = Server::spawn(command, dir, addr, None, server_name)?;
        server.ca_path = ca_path;
        server.wait_ready()?;
        Ok(server)
    }

    /// Starts one federating unit per name (`unit-a.test`, …) on 127.0.0.2, 127.0.0.3, …, each
    /// trusting every other one's peer card, and waits until all are ready. The units are
    /// returned in the order of `names`.
    pub fn start_federation(names: &[&str]) -> Result<Vec<Self>, String> {
        let binary = existing_binary()?;
        let mut prepared = Vec::with_capacity(names.len());
        for (n, name) in names.iter().enumerate() {
            let octet = u8::try_from(n + 2).map_err(|_| "at most 253 units")?;
            prepared.push(prepare_unit(
                &binary,
                name,
                Ipv4Addr::new(127, 0, 0, octet),
            )?);
        }
        for unit in &prepared {
            let peers = unit.data_dir().join("peers");
            fs::create_dir_all(&peers)
                .map_err(|e| format!("cannot create {}: {e}", peers.display()))?;
            for other in prepared.iter().filter(|other| other.name != unit.name) {
                let to = peers.join(format!("{}.json", other.name));
                fs::copy(&other.card_path, &to).map_err(|e| {
                    format!(
                        "cannot copy {} to {}: {e}",
                        other.card_path.display(),
                        to.display()
                    )
                })?;
            }
        }
        // Spawn all before waiting for any, so that the units come up side by side.
        let mut servers = Vec::with_capacity(prepared.len());
        for unit in prepared {
            let mut command = Command::new(&binary);
            command.arg("--config").arg(&unit.config_path);
            servers.push(Server::spawn(
                command,
                unit.dir,
                unit.client_addr,
                Some(unit.federation_addr),
                unit.name,
            )?);
        }
        for server in &mut servers {
            server
                .wait_ready()
                .map_err(|e| format!("{}: {e}\n{}", server.server_name, server.log()))?;
        }
        Ok(servers)
    }

    /// Runs `command` with the log file as stdout and stderr, `RUST_LOG` passed through
    /// (default `info`).
    fn spawn(
        mut command: Command,
        dir: tempfile::TempDir,
        addr: SocketAddr,
        federation_addr: Option<SocketAddr>,
        server_name: String,
    ) -> Result<Self, String> {
        let log_path = dir.path().join("homeserver.log");
        let log = File::create(&log_path).map_err(|e| format!("cannot create the log: {e}"))?;
        let child = command
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot spawn {command:?}: {e}"))?;
        Ok(Server {
            child: Some(child),
            addr,
            federation_addr,
            ca_path: None,
            server_name,
            log_path,
            _dir: dir,
        })
    }

    /// `http://IP:PORT` (`https://` with TLS), the client-server API base URL.
    pub fn url(&self) -> String {
        match self.ca_path {
            Some(_) => format!("https://{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// The CA (PEM) a client of a TLS server must trust; `None` without TLS.
    pub fn ca_pem(&self) -> Option<Vec<u8>> {
        self.ca_path.as_ref().and_then(|path| fs::read(path).ok())
    }

    /// The server name the users are registered under (`localhost:PORT` for `dev`, the
    /// unit's name for a federating unit).
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Everything the server has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log_path.display()))
    }

    /// Sends SIGTERM and waits for the exit status (the contract says 0).
    pub fn stop(&mut self) -> Result<ExitStatus, String> {
        let Some(mut child) = self.child.take() else {
            return Err("server already stopped".into());
        };
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if !sent.success() {
            let _ = child.kill();
            return Err(format!("kill -TERM {} failed: {sent}", child.id()));
        }
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "no exit within {STOP_DEADLINE:?} of SIGTERM; killed"
                    ));
                }
                Err(e) => return Err(format!("waiting for the server: {e}")),
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_DEADLINE;
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("homeserver exited during startup with {status}"));
            }
            let answered = match self.ca_path {
                // Std has no TLS: the listener accepting connections is enough, since it is
                // bound only once the certificate is loaded.
                Some(_) => TcpStream::connect_timeout(&self.addr, POLL)
                    .map(|_| 200)
                    .map_err(|e| e.to_string()),
                None => http_get_status(self.addr, "/_matrix/client/versions"),
            };
            match answered {
                Ok(200) => match self.federation_addr {
                    None => return Ok(()),
                    Some(addr) => match TcpStream::connect_timeout(&addr, POLL) {
                        Ok(_) => return Ok(()),
                        Err(e) => last = format!("federation listener {addr}: {e}"),
                    },
                },
                Ok(code) => last = format!("HTTP {code}"),
                Err(e) => last = e,
            }
            std::thread::sleep(POLL);
        }
        Err(format!(
            "not ready within {READY_DEADLINE:?}: GET /_matrix/client/versions answering 200 \
             and the federation listener (if any) accepting connections (last: {last})"
        ))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

const POLL: Duration = Duration::from_millis(100);

/// The homeserver binary, if it exists.
fn existing_binary() -> Result<PathBuf, String> {
    let binary = homeserver_binary();
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "homeserver binary not found at {} (build it with `cargo build --release -p \
             homeserver` at the repo root, or set OUTPOST_HOMESERVER)",
            binary.display()
        ))
    }
}

fn temp_dir() -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix("outpost-client-test-")
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir: {e}"))
}

/// An address on loopback `ip` whose port was free a moment ago.
fn free_port(ip: Ipv4Addr) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(SocketAddrV4::new(ip, 0))
        .map_err(|e| format!("cannot bind a free port on {ip} (is 127.0.0.0/8 on lo?): {e}"))?;
    listener.local_addr().map_err(|e| e.to_string())
}

/// Writes the config of unit `name` listening on `ip` (client API and TLS federation on free
/// ports, open registration, no rate limits, short federation retries) and runs
/// `homeserver --config FILE peer-card --out card.json`, which also makes the unit's signing key
/// and TLS identity.
fn prepare_unit(binary: &Path, name: &str, ip: Ipv4Addr) -> Result<PreparedUnit, String> {
    let dir = temp_dir()?;
    let client_addr = free_port(ip)?;
    let federation_addr = free_port(ip)?;
    let data_dir = dir.path().join("data");
    let config = format!(
        "server_name = {}\ndata_dir = {}\n\n[listen]\nclient = {}\n\n[registration]\n\
         enabled = true\n\n[rate_limit]\nenabled = false\n\n[federation]\nlisten = {}\n\
         retry_cap_secs = 1\nrequest_timeout_secs = 5\n",
        toml_str(name),
        toml_str(&data_dir.to_string_lossy()),
        toml_str(&client_addr.to_string()),
        toml_str(&federation_addr.to_string()),
    );
    let config_path = dir.path().join("homeserver.toml");
    fs::write(&config_path, config)
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
    let card_path = dir.path().join("card.json");
    let output = Command::new(binary)
        .arg("--config")
        .arg(&config_path)
        .arg("peer-card")
        .arg("--out")
        .arg(&card_path)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} peer-card: {e}", binary.display()))?;
    if !output.status.success() || !card_path.is_file() {
        return Err(format!(
            "`peer-card` for {name} failed with {}:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(PreparedUnit {
        dir,
        name: name.to_owned(),
        client_addr,
        federation_addr,
        config_path,
        card_path,
    })
}

/// A TOML basic string holding `raw`.
fn toml_str(raw: &str) -> String {
    let mut out = String::from("\"");
    for c in raw.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The status code of a plain HTTP/1.1 GET, without any client library.
fn http_get_status(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| e.to_string())?;
    let head = String::from_utf8_lossy(&head);
    head.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.trim().parse().ok())
        .ok_or_else(|| format!("not an HTTP/1.1 status line: {head:?}"))
}
