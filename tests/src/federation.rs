//! Multi-unit federation harness: several `homeserver` processes on their own loopback
//! addresses (127.0.0.2, .3, …) with real keys, real TLS and cross-imported peer cards, plus the
//! tools to attack them from outside.
//!
//! - [`Unit`]: one homeserver with a server name such as `unit-a.test`, a TLS federation listener
//!   on its own 127.0.0.x address and a client listener next to it. Its peer card is made with
//!   the binary's own `peer-card` command before the first start; [`Unit::trust`] copies a card
//!   into another unit's allow-list (`<data_dir>/peers/`) and [`Unit::reload_peers`] sends
//!   `SIGHUP`. Ports stay fixed across restarts because they are written into the cards.
//! - [`Federation`]: N units, every card imported by every other unit, started together.
//! - [`Puppet`]: a server that exists only as a signing key and a card (made by `peer-card`, never
//!   started): the test signs X-Matrix requests and PDUs with it to play a misbehaving peer.
//! - [`FedClient`]: a hand-written HTTPS/1.1 client for a unit's federation listener (rustls,
//!   trusting only the unit's CA from its card), for requests no well-behaved server would send.
//! - [`ConnCounter`]: a plain TCP listener that counts connection attempts, to prove a unit never
//!   dials a host that is not on its allow-list.
//! - Free functions comparing what units report: current state by `(type, state_key)`, the
//!   timeline as event IDs, waiting for message bodies.
//!
//! Every process is killed when its owner is dropped; on a panic the units' logs are printed and
//! their temp dirs kept.

pub use crate::client::register_on;
use crate::client::{Client, Http, Reply, str_field};
use crate::env::TempDir;
use crate::raw::{parse_response, response_complete};
use crate::{enc, homeserver_binary, poll_until, toml_str};
use ruma::signatures::Ed25519KeyPair;
use ruma::{CanonicalJsonObject, CanonicalJsonValue};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long a unit may take to answer on both listeners after being spawned.
pub const UNIT_READY: Duration = Duration::from_secs(20);

/// Default deadline for federation to deliver something (generous: CI machines are slow and
/// several units share two cores).
pub const DELIVERY: Duration = Duration::from_secs(60);

/// Whole-request timeout of the client HTTP agent.
const HTTP_TIMEOUT: Duration = Duration::from_secs(90);

/// The loopback address of the `n`-th unit of a test: 127.0.0.(2 + n).
pub fn unit_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + n)
}

/// A TCP port that is free on `ip` right now (bind port 0, read it, release it).
pub fn free_port_on(ip: Ipv4Addr) -> u16 {
    TcpListener::bind(SocketAddrV4::new(ip, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|err| panic!("cannot bind {ip}:0 (is 127.0.0.0/8 routed to lo?): {err}"))
}

/// `N` distinct TCP ports free on `ip` right now: all are held bound while the next is picked,
/// so the kernel cannot hand out one port twice (which made a unit's two listeners collide).
pub fn free_ports_on<const N: usize>(ip: Ipv4Addr) -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| {
            TcpListener::bind(SocketAddrV4::new(ip, 0)).unwrap_or_else(|err| {
                panic!("cannot bind {ip}:0 (is 127.0.0.0/8 routed to lo?): {err}")
            })
        })
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("bound listener").port())
}

/// Knobs of one unit's configuration.
#[derive(Debug, Clone)]
pub struct UnitOptions {
    /// `[federation] retry_cap_secs`: the longest backoff before retrying an unreachable peer.
    pub retry_cap_secs: u64,
    /// `[federation] request_timeout_secs`.
    pub request_timeout_secs: u64,
    /// `[federation] max_body_bytes`, if not the default.
    pub federation_max_body: Option<usize>,
    /// Lines appended after the generated config (other sections).
    pub extra_toml: String,
    /// Append the federation port to the server name (`unit-a.test:40123`), so servers that
    /// resolve names themselves (Synapse) dial the right port without SRV or `.well-known`.
    pub port_in_server_name: bool,
}

impl Default for UnitOptions {
    fn default() -> Self {
        UnitOptions {
            retry_cap_secs: 1,
            request_timeout_secs: 5,
            federation_max_body: None,
            extra_toml: String::new(),
            port_in_server_name: false,
        }
    }
}

/// The running (or exited) process of a unit.
#[derive(Debug)]
struct Process {
    child: Child,
    log: PathBuf,
}

/// One homeserver unit: server name, loopback address, fixed ports, temp dir, process.
#[derive(Debug)]
pub struct Unit {
    name: String,
    ip: Ipv4Addr,
    client_addr: SocketAddr,
    fed_addr: SocketAddr,
    http: Arc<Http>,
    process: Option<Process>,
    starts: u32,
    card: Value,
    // Declared last: removed after the process is killed.
    dir: TempDir,
}

impl Unit {
    /// Prepares a unit named `name` listening on `ip` (free ports), writes its config and makes
    /// its peer card (keys and TLS identity are generated by `peer-card`). Not started yet.
    pub fn new(name: &str, ip: Ipv4Addr, options: &UnitOptions) -> Unit {
        let binary = homeserver_binary();
        assert!(
            binary.is_file(),
            "homeserver binary not found at {}: build it with `cargo build --release -p \
             homeserver` or set OUTPOST_HOMESERVER",
            binary.display()
        );
        let dir = TempDir::new();
        let [client_port, fed_port] = free_ports_on(ip);
        let client_addr = SocketAddr::V4(SocketAddrV4::new(ip, client_port));
        let fed_addr = SocketAddr::V4(SocketAddrV4::new(ip, fed_port));
        let name = if options.port_in_server_name {
            format!("{name}:{}", fed_addr.port())
        } else {
            name.to_owned()
        };
        let name = name.as_str();
        let data_dir = dir.path().join("data");
        let mut federation = format!(
            "[federation]\nlisten = {}\nretry_cap_secs = {}\nrequest_timeout_secs = {}\n",
            toml_str(&fed_addr.to_string()),
            options.retry_cap_secs,
            options.request_timeout_secs,
        );
        if let Some(max) = options.federation_max_body {
            federation.push_str(&format!("max_body_bytes = {max}\n"));
        }
        let config = format!(
            "server_name = {}\ndata_dir = {}\n\n[listen]\nclient = {}\n\n[registration]\n\
             enabled = true\n\n[rate_limit]\nenabled = false\n\n{federation}\n{}\n",
            toml_str(name),
            toml_str(&data_dir.to_string_lossy()),
            toml_str(&client_addr.to_string()),
            options.extra_toml,
        );
        let config_path = dir.path().join("homeserver.toml");
        fs::write(&config_path, config).expect("writing the unit config");
        let card = make_card(&config_path, &dir.path().join("card.json"));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            .max_idle_connections(64)
            .max_idle_connections_per_host(64)
            .build()
            .new_agent();
        Unit {
            name: name.to_owned(),
            ip,
            client_addr,
            fed_addr,
            http: Arc::new(Http::new(agent, format!("http://{client_addr}"))),
            process: None,
            starts: 0,
            card,
            dir,
        }
    }

    /// The unit's server name, e.g. `unit-a.test`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The unit's loopback address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The TLS federation listener's address (the endpoint in the card).
    pub fn fed_addr(&self) -> SocketAddr {
        self.fed_addr
    }

    /// The client API listener's address.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The unit's signed peer card, as `peer-card` wrote it.
    pub fn card(&self) -> &Value {
        &self.card
    }

    /// The unit's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `@localpart:<server name>`.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.name)
    }

    /// The unit's signing key (read from `<data_dir>/signing.key`).
    pub fn signing_key(&self) -> Ed25519KeyPair {
        read_signing_key(&self.data_dir().join("signing.key"))
    }

    /// Spawns the process and waits until both listeners answer.
    pub fn start(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// Spawns the process without waiting (see [`Unit::wait_ready`]); lets a test start several
    /// units at once.
    pub fn spawn(&mut self) {
        assert!(
            self.process.is_none() || !self.is_running(),
            "{} is already running",
            self.name
        );
        self.starts += 1;
        let log = self.dir.path().join(format!("stderr-{}.log", self.starts));
        let file = File::create(&log).expect("creating the unit's log file");
        let child = Command::new(homeserver_binary())
            .arg("--config")
            .arg(self.dir.path().join("homeserver.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .spawn()
            .unwrap_or_else(|err| panic!("spawning {}: {err}", self.name));
        self.process = Some(Process { child, log });
    }

    /// Waits until `/versions` answers 200 and the federation port accepts connections.
    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        let client = self.anon();
        loop {
            if let Some(status) = self.process_mut().child.try_wait().expect("polling a unit") {
                panic!(
                    "{} exited during start-up with {status}\n{}",
                    self.name,
                    self.log()
                );
            }
            let client_up = client
                .try_request("GET", "/_matrix/client/versions", &[], None)
                .is_ok_and(|reply| reply.status == 200);
            if client_up
                && TcpStream::connect_timeout(&self.fed_addr, Duration::from_secs(1)).is_ok()
            {
                return;
            }
            assert!(
                start.elapsed() < UNIT_READY,
                "{} not ready within {UNIT_READY:?}\n{}",
                self.name,
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn process_mut(&mut self) -> &mut Process {
        self.process.as_mut().expect("the unit was started")
    }

    /// The current process ID.
    pub fn pid(&self) -> u32 {
        self.process
            .as_ref()
            .expect("the unit was started")
            .child
            .id()
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.process_mut().child.try_wait(), Ok(None))
    }

    /// `SIGKILL`, then reap.
    pub fn kill9(&mut self) {
        let process = self.process_mut();
        // It may have exited already; the wait is what matters.
        let _ = process.child.kill();
        process.child.wait().expect("reaping a killed unit");
    }

    /// `SIGTERM`, then waits for a clean exit (status 0).
    pub fn stop(&mut self) {
        self.signal("TERM");
        let name = self.name.clone();
        let child = &mut self.process_mut().child;
        let status: ExitStatus = poll_until(
            &format!("{name} to exit after SIGTERM"),
            Duration::from_secs(20),
            || child.try_wait().expect("polling a unit"),
        );
        assert!(
            status.success(),
            "{name} exited with {status}\n{}",
            self.log()
        );
    }

    /// Starts the unit again on the same data dir and ports.
    pub fn restart(&mut self) {
        assert!(!self.is_running(), "restart() needs the unit stopped");
        self.start();
    }

    fn signal(&self, name: &str) {
        let pid = self.pid();
        let status = Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .expect("running kill(1)");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// Puts `card` on this unit's allow-list as `peers/<file_stem>.json` (effective at the next
    /// start or [`Unit::reload_peers`]).
    pub fn trust_card(&self, file_stem: &str, card: &Value) {
        let dir = self.data_dir().join("peers");
        fs::create_dir_all(&dir).expect("creating the peers dir");
        let text = serde_json::to_string_pretty(card).expect("a card serialises");
        let tmp = dir.join(format!("{file_stem}.json.tmp"));
        fs::write(&tmp, text).expect("writing a peer card");
        fs::rename(&tmp, dir.join(format!("{file_stem}.json"))).expect("installing a peer card");
    }

    /// Puts `other`'s own card on this unit's allow-list.
    pub fn trust(&self, other: &Unit) {
        self.trust_card(&other.name, &other.card);
    }

    /// Removes `peers/<file_stem>.json`.
    pub fn distrust(&self, file_stem: &str) {
        let path = self
            .data_dir()
            .join("peers")
            .join(format!("{file_stem}.json"));
        fs::remove_file(&path).unwrap_or_else(|err| panic!("removing {}: {err}", path.display()));
    }

    /// Cuts the link to `peer` (this side only): replaces its card with an unsigned copy whose
    /// only endpoint refuses connections, and reloads. [`Unit::mend_link`] undoes it.
    pub fn cut_link(&self, peer: &Unit, dead_endpoint: SocketAddr) {
        let mut card = peer.card.clone();
        card["endpoints"] = json!([dead_endpoint.to_string()]);
        // An edited card no longer verifies; an unsigned card is a peer added by hand.
        if let Some(object) = card.as_object_mut() {
            object.remove("signatures");
        }
        self.trust_card(&peer.name, &card);
        self.reload_peers();
    }

    /// Restores `peer`'s real card and reloads.
    pub fn mend_link(&self, peer: &Unit) {
        self.trust(peer);
        self.reload_peers();
    }

    /// Sends `SIGHUP` and waits until the log shows the allow-list was reloaded.
    pub fn reload_peers(&self) {
        let before = self.current_log().matches("allow-list loaded").count();
        self.signal("HUP");
        poll_until(
            &format!("{} to reload its allow-list", self.name),
            Duration::from_secs(10),
            || (self.current_log().matches("allow-list loaded").count() > before).then_some(()),
        );
    }

    /// The log of the current (or last) process.
    pub fn current_log(&self) -> String {
        self.process
            .as_ref()
            .map(|p| fs::read_to_string(&p.log).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Every log this unit wrote, oldest first.
    pub fn log(&self) -> String {
        let mut all = String::new();
        for n in 1..=self.starts {
            let path = self.dir.path().join(format!("stderr-{n}.log"));
            all.push_str(&format!("--- {} ({}) ---\n", path.display(), self.name));
            all.push_str(&fs::read_to_string(&path).unwrap_or_default());
        }
        all
    }

    /// An anonymous client of this unit.
    pub fn anon(&self) -> Client {
        Client {
            http: Arc::clone(&self.http),
            user_id: String::new(),
            device_id: String::new(),
            access_token: None,
            refresh_token: None,
        }
    }

    /// Registers `localpart` with a dummy-auth `/register`, asserting success.
    pub fn register(&self, localpart: &str) -> Client {
        register_on(&self.anon(), localpart)
    }

    /// A read-only connection to the unit's database (WAL mode lets it read while the unit
    /// runs).
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.data_dir().join("homeserver.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("opening the unit's database read-only")
    }

    /// `SELECT COUNT(*) FROM <table>` on the unit's database.
    pub fn count_rows(&self, table: &str) -> i64 {
        self.db()
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .unwrap_or_else(|err| panic!("counting {table}: {err}"))
    }

    /// Whether the unit stored an event with this ID in any form (accepted, rejected, outlier).
    pub fn has_event_row(&self, event_id: &str) -> bool {
        self.db()
            .query_row(
                "SELECT COUNT(*) FROM events WHERE event_id = ?1",
                [event_id],
                |row| row.get::<_, i64>(0),
            )
            .expect("querying events")
            > 0
    }

    /// A raw federation client for this unit's listener, trusting only the CA in its card.
    pub fn fed_client(&self) -> FedClient {
        FedClient::new(&self.name, self.fed_addr, &card_ca(&self.card))
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        if let Some(process) = &mut self.process {
            // Best effort: it may be gone already.
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
        if thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(400)..].join("\n");
            eprintln!(
                "=== {} (client {}, federation {}) log tail:\n{tail}",
                self.name, self.client_addr, self.fed_addr
            );
        }
    }
}

/// An anonymous client of any Matrix server at `base_url` (e.g. a Synapse under test).
pub fn client_for(base_url: &str) -> Client {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(HTTP_TIMEOUT))
        .build()
        .new_agent();
    Client {
        http: Arc::new(Http::new(agent, base_url.to_owned())),
        user_id: String::new(),
        device_id: String::new(),
        access_token: None,
        refresh_token: None,
    }
}

/// Runs `homeserver --config <config> peer-card --out <out>` and returns the card.
fn make_card(config: &Path, out: &Path) -> Value {
    let output = Command::new(homeserver_binary())
        .arg("--config")
        .arg(config)
        .arg("peer-card")
        .arg("--out")
        .arg(out)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("running homeserver peer-card");
    assert!(
        output.status.success(),
        "peer-card failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let text = fs::read_to_string(out).expect("reading the peer card");
    serde_json::from_str(&text).expect("the peer card is JSON")
}

/// Parses a `signing.key` file: `ed25519 <version> <unpadded base64 PKCS#8 DER>`.
pub fn read_signing_key(path: &Path) -> Ed25519KeyPair {
    let text =
        fs::read_to_string(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [algorithm, version, encoded] = parts[..] else {
        panic!("{} is not `ed25519 <version> <base64>`", path.display());
    };
    assert_eq!(algorithm, "ed25519", "{}", path.display());
    let der = ruma::serde::Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(
        encoded.trim_end_matches('='),
    )
    .expect("the key file holds base64");
    Ed25519KeyPair::from_der(der.as_bytes(), version.to_owned()).expect("a PKCS#8 ed25519 key")
}

/// A fresh random signing key with key version `version`.
pub fn random_key(version: &str) -> Ed25519KeyPair {
    let der = Ed25519KeyPair::generate();
    Ed25519KeyPair::from_der(&der, version.to_owned()).expect("a fresh key parses")
}

/// The CA PEM of a card.
pub fn card_ca(card: &Value) -> String {
    card["tls"]["ca_pem"]
        .as_str()
        .unwrap_or_else(|| panic!("card without tls.ca_pem: {card:#}"))
        .to_owned()
}

/// N units with every card imported by every other unit, started together.
#[derive(Debug)]
pub struct Federation {
    /// The units, in the order of the names given.
    pub units: Vec<Unit>,
}

impl Federation {
    /// Units named `names` on 127.0.0.2, .3, … with default options, fully meshed.
    pub fn start(names: &[&str]) -> Federation {
        Federation::start_with(names, &UnitOptions::default())
    }

    /// Like [`Federation::start`] with `options` for every unit.
    pub fn start_with(names: &[&str], options: &UnitOptions) -> Federation {
        let mut units: Vec<Unit> = names
            .iter()
            .enumerate()
            .map(|(n, name)| {
                let n = u8::try_from(n).expect("fewer than 250 units");
                Unit::new(name, unit_ip(n), options)
            })
            .collect();
        for unit in &units {
            for other in &units {
                if unit.name != other.name {
                    unit.trust(other);
                }
            }
        }
        for unit in &mut units {
            unit.spawn();
        }
        for unit in &mut units {
            unit.wait_ready();
        }
        Federation { units }
    }
}

impl std::ops::Index<usize> for Federation {
    type Output = Unit;
    fn index(&self, index: usize) -> &Unit {
        &self.units[index]
    }
}

impl std::ops::IndexMut<usize> for Federation {
    fn index_mut(&mut self, index: usize) -> &mut Unit {
        &mut self.units[index]
    }
}

/// A peer that exists only as a card and a signing key: the test speaks for it.
#[derive(Debug)]
pub struct Puppet {
    name: String,
    card: Value,
    key_path: PathBuf,
    dir: TempDir,
}

impl Puppet {
    /// Makes a card for `name` whose endpoint is `endpoint` (nothing needs to listen there),
    /// with keys generated by the homeserver's own `peer-card`.
    pub fn new(name: &str, endpoint: SocketAddr) -> Puppet {
        let dir = TempDir::new();
        let config = format!(
            "server_name = {}\ndata_dir = {}\n\n[federation]\nlisten = {}\n",
            toml_str(name),
            toml_str(&dir.path().join("data").to_string_lossy()),
            toml_str(&endpoint.to_string()),
        );
        let config_path = dir.path().join("puppet.toml");
        fs::write(&config_path, config).expect("writing the puppet config");
        let card = make_card(&config_path, &dir.path().join("card.json"));
        Puppet {
            name: name.to_owned(),
            card,
            key_path: dir.path().join("data").join("signing.key"),
            dir,
        }
    }

    /// The puppet's server name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The data dir `peer-card` filled: `signing.key` and `tls/{ca,cert,key}.pem`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Its signed card.
    pub fn card(&self) -> &Value {
        &self.card
    }

    /// `@localpart:<name>`.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.name)
    }

    /// Its real signing key.
    pub fn key(&self) -> Ed25519KeyPair {
        read_signing_key(&self.key_path)
    }

    /// The `Authorization` header for a request from this puppet to `destination`.
    pub fn authorization(
        &self,
        destination: &str,
        method: &str,
        uri: &str,
        content: Option<&Value>,
    ) -> String {
        x_matrix(&self.key(), &self.name, destination, method, uri, content)
    }

    /// Signs and sends one request to `unit`'s federation listener; transport errors panic.
    pub fn request(&self, unit: &Unit, method: &str, uri: &str, content: Option<&Value>) -> Reply {
        let auth = self.authorization(unit.name(), method, uri, content);
        let body = content.map(|c| c.to_string().into_bytes());
        unit.fed_client()
            .request(method, uri, Some(&auth), body.as_deref())
            .unwrap_or_else(|err| panic!("{method} {uri} to {}: {err}", unit.name()))
    }

    /// Hashes and signs an event template (room version 12 rules) as this puppet and returns
    /// `(event ID, signed PDU)`.
    pub fn sign_event(&self, template: &Value) -> (String, Value) {
        sign_pdu(&self.key(), &self.name, template)
    }
}

/// A puppet user in a room: what it needs to append events the way a real server would.
pub struct Member {
    /// The puppet's user.
    pub user_id: String,
    /// The room joined.
    pub room: String,
    /// The event to build on.
    pub last: String,
    /// The depth of `last`.
    pub depth: u64,
    /// The room's state as the puppet knows it: `(type, state_key) → event_id`.
    pub state: BTreeMap<(String, String), String>,
}

impl Member {
    /// Joins `user_id` of `puppet` to `room` on `unit` through make_join / send_join.
    pub fn join(
        puppet: &Puppet,
        unit: &Unit,
        room: &str,
        localpart: &str,
    ) -> Result<Member, Reply> {
        let user_id = puppet.user_id(localpart);
        let make = puppet.request(
            unit,
            "GET",
            &format!(
                "/_matrix/federation/v1/make_join/{}/{}?ver=12",
                enc(room),
                enc(&user_id)
            ),
            None,
        );
        if make.status != 200 {
            return Err(make);
        }
        let template = make.json()["event"].clone();
        let (join_id, join) = puppet.sign_event(&template);
        let send = puppet.request(
            unit,
            "PUT",
            &format!(
                "/_matrix/federation/v2/send_join/{}/{}",
                enc(room),
                enc(&join_id)
            ),
            Some(&join),
        );
        if send.status != 200 {
            return Err(send);
        }
        let mut state = BTreeMap::new();
        for pdu in send.json()["state"].as_array().cloned().unwrap_or_default() {
            let key = (
                pdu["type"].as_str().unwrap_or_default().to_owned(),
                pdu["state_key"].as_str().unwrap_or_default().to_owned(),
            );
            state.insert(key, event_id_of(&pdu));
        }
        state.insert(
            ("m.room.member".to_owned(), user_id.clone()),
            join_id.clone(),
        );
        Ok(Member {
            user_id,
            room: room.to_owned(),
            last: join_id,
            depth: template["depth"].as_u64().unwrap_or(1),
            state,
        })
    }

    pub fn state_id(&self, kind: &str, key: &str) -> String {
        self.state
            .get(&(kind.to_owned(), key.to_owned()))
            .cloned()
            .unwrap_or_else(|| panic!("the puppet knows no {kind}/{key}"))
    }

    /// An unsigned event template from this member, on top of its last event.
    pub fn template(&self, kind: &str, state_key: Option<&str>, content: Value) -> Value {
        let mut auth = vec![
            self.state_id("m.room.power_levels", ""),
            self.state_id("m.room.member", &self.user_id),
        ];
        if kind == "m.room.member" {
            auth.push(self.state_id("m.room.join_rules", ""));
        }
        let mut event = json!({
            "type": kind,
            "room_id": self.room,
            "sender": self.user_id,
            "content": content,
            "origin_server_ts": now_ms(),
            "depth": self.depth + 1,
            "prev_events": [self.last],
            "auth_events": auth,
        });
        if let Some(key) = state_key {
            event["state_key"] = json!(key);
        }
        event
    }

    /// Records that `event_id` was accepted, so the next event builds on it.
    pub fn advance(&mut self, event_id: &str) {
        self.last = event_id.to_owned();
        self.depth += 1;
    }
}

/// Builds an `X-Matrix` header value signed with `key` (spec: Request Authentication).
pub fn x_matrix(
    key: &Ed25519KeyPair,
    origin: &str,
    destination: &str,
    method: &str,
    uri: &str,
    content: Option<&Value>,
) -> String {
    let mut request =
        json!({"method": method, "uri": uri, "origin": origin, "destination": destination});
    if let Some(content) = content {
        request["content"] = content.clone();
    }
    let mut object = canonical_object(&request);
    ruma::signatures::sign_json(origin, key, &mut object).expect("signing a request");
    let key_id = format!("ed25519:{}", key.version());
    let sig = match object.get("signatures") {
        Some(CanonicalJsonValue::Object(by_server)) => match by_server.get(origin) {
            Some(CanonicalJsonValue::Object(by_key)) => match by_key.get(&key_id) {
                Some(CanonicalJsonValue::String(sig)) => sig.clone(),
                _ => panic!("signing produced no signature"),
            },
            _ => panic!("signing produced no signature"),
        },
        _ => panic!("signing produced no signature"),
    };
    format!(
        "X-Matrix origin=\"{origin}\",destination=\"{destination}\",key=\"{key_id}\",sig=\"{sig}\""
    )
}

/// A JSON value as a canonical JSON object (panics on non-objects and floats).
pub fn canonical_object(value: &Value) -> CanonicalJsonObject {
    match ruma::canonical_json::to_canonical_value(value).expect("canonical JSON") {
        CanonicalJsonValue::Object(object) => object,
        other => panic!("not a JSON object: {other:?}"),
    }
}

/// The room version 12 rules.
pub fn v12_rules() -> ruma::room_version_rules::RoomVersionRules {
    ruma::RoomVersionId::V12
        .rules()
        .expect("ruma knows room version 12")
}

/// The event ID (`$` + reference hash, room version 12) of a PDU.
pub fn event_id_of(pdu: &Value) -> String {
    let hash = ruma::signatures::reference_hash(&canonical_object(pdu), &v12_rules())
        .expect("a reference hash");
    format!("${hash}")
}

/// Adds the content hash and `server`'s signature to an event template (room version 12) and
/// returns `(event ID, PDU)`.
pub fn sign_pdu(key: &Ed25519KeyPair, server: &str, template: &Value) -> (String, Value) {
    let mut object = canonical_object(template);
    ruma::signatures::hash_and_sign_event(server, key, &mut object, &v12_rules().redaction)
        .expect("hashing and signing an event");
    let pdu = serde_json::to_value(&object).expect("canonical JSON is JSON");
    (event_id_of(&pdu), pdu)
}

/// Wall-clock milliseconds since the epoch, for `origin_server_ts`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A hand-written HTTPS/1.1 client for one unit's federation listener.
#[derive(Debug, Clone)]
pub struct FedClient {
    host: String,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl FedClient {
    /// A client for `server_name` at `addr` that trusts only `ca_pem`.
    pub fn new(server_name: &str, addr: SocketAddr, ca_pem: &str) -> FedClient {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots
                .add(cert.expect("the card's CA is PEM"))
                .expect("the card's CA is a certificate");
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("rustls protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let host = server_name
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(server_name, |(host, _)| host)
            .to_owned();
        FedClient {
            host,
            addr,
            tls: Arc::new(tls),
        }
    }

    /// Opens a connection from the loopback address `local` and completes the TLS handshake,
    /// for tests that hold connections or write requests byte by byte.
    pub fn connect_from(
        &self,
        local: std::net::IpAddr,
    ) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|err| std::io::Error::other(err.to_string()))?;
        let connection = rustls::ClientConnection::new(Arc::clone(&self.tls), name)
            .map_err(std::io::Error::other)?;
        let tcp = crate::raw::connect_from(local, self.addr, Duration::from_secs(10))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut stream = rustls::StreamOwned::new(connection, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(stream)
    }

    /// Sends one request (`Connection: close`) and reads the whole reply. `authorization` is
    /// sent verbatim; `body` as `application/json`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: Option<&[u8]>,
    ) -> std::io::Result<Reply> {
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|err| std::io::Error::other(err.to_string()))?;
        let connection = rustls::ClientConnection::new(Arc::clone(&self.tls), name)
            .map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect_timeout(&self.addr, Duration::from_secs(10))?;
        tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(60)))?;
        let mut stream = rustls::StreamOwned::new(connection, tcp);
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.host
        );
        if let Some(auth) = authorization {
            head.push_str(&format!("Authorization: {auth}\r\n"));
        }
        let body = body.unwrap_or_default();
        if !body.is_empty() || matches!(method, "PUT" | "POST") {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        // A server that refuses a large body may answer and close before reading all of it.
        let write_error = stream
            .write_all(&request)
            .and_then(|()| stream.flush())
            .err();
        let mut received = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    received.extend_from_slice(&buf[..n]);
                    if response_complete(&received) {
                        break;
                    }
                }
                Err(_) if response_complete(&received) => break,
                Err(err) if received.is_empty() => {
                    return Err(write_error.unwrap_or(err));
                }
                Err(err) => return Err(err),
            }
        }
        parse_response(&received).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "unparseable HTTP response: {:?}",
                    String::from_utf8_lossy(&received)
                ),
            )
        })
    }
}

/// A plain TCP listener that accepts and counts connections (and closes them at once).
#[derive(Debug)]
pub struct ConnCounter {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ConnCounter {
    /// Listens on a free port of `ip`.
    pub fn bind(ip: Ipv4Addr) -> ConnCounter {
        let listener = TcpListener::bind(SocketAddrV4::new(ip, 0))
            .unwrap_or_else(|err| panic!("binding {ip}:0: {err}"));
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (count, stop) = (Arc::clone(&count), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            count.fetch_add(1, Ordering::SeqCst);
                            drop(stream);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        ConnCounter {
            addr,
            count,
            stop,
            thread: Some(thread),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for ConnCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `GET /rooms/{room}/state` as `(type, state_key) → event_id`, asserting 200.
pub fn state_ids(client: &Client, room: &str) -> BTreeMap<(String, String), String> {
    let path = format!("/_matrix/client/v3/rooms/{}/state", enc(room));
    let (status, body) = client.get(&path);
    assert_eq!(status, 200, "GET {path} as {}: {body:#}", client.user_id);
    body.as_array()
        .unwrap_or_else(|| panic!("state is an array: {body:#}"))
        .iter()
        .map(|event| {
            (
                (
                    str_field(event, "type"),
                    event["state_key"].as_str().unwrap_or_default().to_owned(),
                ),
                str_field(event, "event_id"),
            )
        })
        .collect()
}

/// The content of one state event, or `None` when the server answers 404.
pub fn state_content(client: &Client, room: &str, event_type: &str, key: &str) -> Option<Value> {
    let (status, body) = client.get(&Client::state_path(room, event_type, key));
    match status {
        200 => Some(body),
        404 => None,
        _ => panic!("GET state {event_type}/{key}: {status} {body:#}"),
    }
}

/// Every event `/messages` returns for `room`, oldest first.
pub fn timeline_events(client: &Client, room: &str) -> Vec<Value> {
    let mut events = client.all_messages(room, "b", None);
    events.reverse();
    events
}

/// The event IDs of [`timeline_events`], oldest first.
pub fn timeline_ids(client: &Client, room: &str) -> Vec<String> {
    crate::event_ids(&timeline_events(client, room))
}

/// The `m.room.message` bodies of [`timeline_events`], oldest first.
pub fn timeline_bodies(client: &Client, room: &str) -> Vec<String> {
    crate::bodies(&timeline_events(client, room))
}

/// Polls `/messages` until every body in `expected` is there (in any order), and returns the
/// bodies then present, oldest first. Panics after `deadline`.
pub fn wait_for_bodies(
    client: &Client,
    room: &str,
    expected: &[String],
    deadline: Duration,
) -> Vec<String> {
    let want: BTreeSet<&String> = expected.iter().collect();
    let start = Instant::now();
    loop {
        let bodies = timeline_bodies(client, room);
        let have: BTreeSet<&String> = bodies.iter().collect();
        if want.is_subset(&have) {
            return bodies;
        }
        assert!(
            start.elapsed() < deadline,
            "{} did not see {} of {} expected messages in {room} within {deadline:?}; \
             missing e.g. {:?}",
            client.user_id,
            want.difference(&have).count(),
            want.len(),
            want.difference(&have).take(5).collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `/sync` (without a filter, from scratch each time) until `user` has an invite to
/// `room`. Panics after `deadline`.
pub fn wait_for_invite(client: &Client, room: &str, deadline: Duration) {
    let start = Instant::now();
    loop {
        let sync = client.sync(None, 0, None);
        if sync["rooms"]["invite"][room].is_object() {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "{} never saw the invite to {room}: {sync:#}",
            client.user_id
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Polls until `check` returns `Ok`, returning its value; panics with the last `Err` after
/// `deadline`.
pub fn eventually<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(value) => return value,
            Err(why) => assert!(
                start.elapsed() < deadline,
                "timed out after {deadline:?} waiting for {what}: {why}"
            ),
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Collects the outcome of many independent checks so one run reports every failure, then
/// panics in [`Checks::finish`] if any failed.
#[derive(Debug, Default)]
pub struct Checks {
    failures: Vec<String>,
    passed: usize,
}

impl Checks {
    /// A fresh, empty collector.
    pub fn new() -> Checks {
        Checks::default()
    }

    /// Records `name` as failed with `detail` unless `ok`.
    pub fn check(&mut self, name: &str, ok: bool, detail: impl FnOnce() -> String) {
        if ok {
            self.passed += 1;
        } else {
            self.failures.push(format!("{name}: {}", detail()));
        }
    }

    /// Checks that a reply has one of `statuses` and (when `errcodes` is not empty) one of
    /// `errcodes`.
    pub fn reply(
        &mut self,
        name: &str,
        (status, body): &(u16, Value),
        statuses: &[u16],
        errcodes: &[&str],
    ) {
        let errcode = body["errcode"].as_str().unwrap_or_default();
        let ok = statuses.contains(status) && (errcodes.is_empty() || errcodes.contains(&errcode));
        self.check(name, ok, || {
            format!("expected {statuses:?} {errcodes:?}, got {status} {body}")
        });
    }

    /// Like [`Checks::reply`] for a raw [`Reply`].
    pub fn raw(&mut self, name: &str, reply: &Reply, statuses: &[u16], errcodes: &[&str]) {
        self.reply(name, &(reply.status, reply.json()), statuses, errcodes);
    }

    /// How many checks failed so far.
    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// Panics listing every failed check, if any.
    pub fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} checks failed:\n  - {}",
            self.failures.len(),
            self.failures.len() + self.passed,
            self.failures.join("\n  - ")
        );
    }
}

/// Polls `condition` until it holds (returns `true`) or `deadline` passes (returns `false`);
/// for checks that are recorded rather than asserted.
pub fn within(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if condition() {
            return true;
        }
        if start.elapsed() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The user IDs `GET /rooms/{room}/joined_members` lists.
pub fn joined_members(client: &Client, room: &str) -> BTreeSet<String> {
    let path = format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room));
    let (status, body) = client.get(&path);
    assert_eq!(status, 200, "GET {path} as {}: {body:#}", client.user_id);
    body["joined"]
        .as_object()
        .map(|joined| joined.keys().cloned().collect())
        .unwrap_or_default()
}

/// Creates a room as `creator` with `create_body`, invites every user of `others` (users of
/// other units), has each join over federation once the invite arrived, and waits until every
/// participant's unit lists all of them as joined. Returns the room ID.
pub fn share_room(creator: &Client, others: &[&Client], create_body: &Value) -> String {
    let room = str_field(
        &crate::ok(
            creator.post("/_matrix/client/v3/createRoom", create_body),
            "createRoom",
        ),
        "room_id",
    );
    for user in others {
        creator.invite(&room, &user.user_id);
        wait_for_invite(user, &room, DELIVERY);
        let joined = user.join(&room);
        assert_eq!(joined, room, "{} joins over federation", user.user_id);
    }
    let everyone: BTreeSet<String> = std::iter::once(creator)
        .chain(others.iter().copied())
        .map(|u| u.user_id.clone())
        .collect();
    for user in std::iter::once(creator).chain(others.iter().copied()) {
        eventually(
            &format!("{}'s unit to list every member as joined", user.user_id),
            DELIVERY,
            || {
                let members = joined_members(user, &room);
                if members == everyone {
                    Ok(())
                } else {
                    Err(format!("joined: {members:?}"))
                }
            },
        );
    }
    room
}
