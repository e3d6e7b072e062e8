//! The server harness for the real-client tests: finds the built `homeserver` binary, starts
//! it in `dev` mode on a free loopback port with a throw-away data directory, waits until
//! `GET /_matrix/client/versions` answers 200, keeps its stderr in a log file for failure
//! reports, and stops it (SIGTERM, then SIGKILL) when done. Std only, so that every test file
//! of this project can share it whatever client library it uses.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
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

/// A running `homeserver dev` process. Dropping it kills the process.
pub struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    server_name: String,
    log_path: PathBuf,
    // Kept for its Drop: removes the data directory and the log.
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `homeserver dev` on a free 127.0.0.1 port and waits until it is ready.
    pub fn start() -> Result<Self, String> {
        let binary = homeserver_binary();
        if !binary.is_file() {
            return Err(format!(
                "homeserver binary not found at {} (build it with `cargo build --release -p \
                 homeserver` at the repo root, or set OUTPOST_HOMESERVER)",
                binary.display()
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("outpost-client-test-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let addr = free_port()?;
        let server_name = format!("localhost:{}", addr.port());
        let log_path = dir.path().join("homeserver.log");
        let log = File::create(&log_path).map_err(|e| format!("cannot create the log: {e}"))?;
        let child = Command::new(&binary)
            .arg("dev")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--server-name")
            .arg(&server_name)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot spawn {}: {e}", binary.display()))?;
        let mut server = Server {
            child: Some(child),
            addr,
            server_name,
            log_path,
            _dir: dir,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`, the client-server API base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server name the users are registered under (`localhost:PORT`).
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
            match http_get_status(self.addr, "/_matrix/client/versions") {
                Ok(200) => return Ok(()),
                Ok(code) => last = format!("HTTP {code}"),
                Err(e) => last = e,
            }
            std::thread::sleep(POLL);
        }
        Err(format!(
            "GET /_matrix/client/versions not 200 within {READY_DEADLINE:?} (last: {last})"
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

/// A loopback address whose port was free a moment ago.
fn free_port() -> Result<SocketAddr, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind a free port: {e}"))?;
    listener.local_addr().map_err(|e| e.to_string())
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
