//! A real bridge end to end: heisenbridge (PyPI, pinned in `tests/host-tools.sh`) between the
//! homeserver and a local IRC server (Debian's `ngircd`) on loopback. A Matrix user, the
//! bridge's owner, sets the network up through the bridge's control room as its README says,
//! joins an IRC channel through it and talks with an IRC user (a plain IRC client written
//! here) both ways, in the channel and in a private query.
//!
//! The same registration and steps run against a stock Synapse (`..._on_synapse`), which
//! proves the steps are what a mature server gives heisenbridge.
//!
//! Ignored by a plain `cargo test` (it needs `ngircd` and the heisenbridge venv of
//! `tests/host-tools.sh ensure suite`); the README's test command (`tests/run.sh`) runs it as
//! its own step: `cargo test --release -p tests --test blackbox -- --ignored appservice_irc::`.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tests::bridge::{Homeserver, Registration, Spawned, poll_for, venv_program, wait_listening};
use tests::federation::Checks;
use tests::{Client, TempDir, Value, enc, free_addr, json};

/// How long one step may take: heisenbridge answers commands at once, but connecting to IRC
/// and joining channels goes through ngircd's flood penalties (the whole scenario takes ~12 s
/// on Synapse).
const STEP: Duration = Duration::from_secs(30);

/// The IRC channel the two users meet in.
const CHANNEL: &str = "#outpost";

/// The network name the owner gives heisenbridge; part of the puppets' user IDs.
const NETWORK: &str = "loop";

/// The Matrix user's IRC nickname.
const MATRIX_NICK: &str = "mxalice";

/// The IRC user's nickname.
const IRC_NICK: &str = "bob";

/// `ngircd`, from Debian's package (in /usr/sbin, which a non-root PATH may lack).
fn ngircd_binary() -> PathBuf {
    let path = PathBuf::from("/usr/sbin/ngircd");
    assert!(
        path.exists(),
        "ngircd is missing: install the test tools with `bash tests/host-tools.sh ensure suite`"
    );
    path
}

/// Starts ngircd on a free loopback port, in the foreground; returns it and its port.
fn start_ngircd(dir: &Path) -> (Spawned, u16) {
    let port = free_addr().port();
    let run = dir.join("ngircd-run");
    fs::create_dir_all(&run).expect("creating ngircd's run dir");
    // /proc/self belongs to the effective user.
    let root = fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    // As root ngircd must drop to an unprivileged user, which then writes its PID file.
    let user = if root {
        fs::set_permissions(&run, fs::Permissions::from_mode(0o777))
            .expect("opening ngircd's run dir to its user");
        "ServerUID = nobody\nServerGID = nogroup\n"
    } else {
        ""
    };
    let config = dir.join("ngircd.conf");
    fs::write(
        &config,
        format!(
            "[Global]\nName = irc.test\nInfo = Outpost test IRC server\n\
             AdminInfo1 = Outpost tests\nAdminInfo2 = loopback\nAdminEMail = nobody@irc.test\n\
             Listen = 127.0.0.1\nPorts = {port}\nPidFile = {pid}\nMotdPhrase = \"Outpost test\"\n{user}\
             [Limits]\nMaxNickLength = 30\n\
             [Options]\nPAM = no\nDNS = no\nIdent = no\n",
            pid = run.join("ngircd.pid").display(),
        ),
    )
    .expect("writing ngircd.conf");
    let mut process = Spawned::start(
        "ngircd",
        Command::new(ngircd_binary())
            .arg("--nodaemon")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null()),
        &dir.join("ngircd.log"),
    );
    wait_listening("ngircd to listen", port, Duration::from_secs(10));
    process.assert_running();
    (process, port)
}

/// A plain IRC client: one connection, every line it received kept in order.
struct Irc {
    stream: TcpStream,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Irc {
    /// Connects and registers as `nick`, waiting for the welcome (001).
    fn connect(port: u16, nick: &str) -> Irc {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting to ngircd");
        let reader = stream.try_clone().expect("cloning the IRC socket");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let mut ponger = stream.try_clone().expect("cloning the IRC socket");
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                if let Some(token) = line.strip_prefix("PING ") {
                    // Best effort: a lost PONG only ends the connection the test watches.
                    let _ = write!(ponger, "PONG {token}\r\n");
                }
                sink.lock().expect("IRC line log").push(line);
            }
        });
        let mut irc = Irc { stream, lines };
        irc.send(&format!("NICK {nick}"));
        irc.send(&format!("USER {nick} 0 * :{nick} on IRC"));
        let welcome = irc.wait(Duration::from_secs(10), |line| line.contains(" 001 "));
        assert!(
            welcome.is_some(),
            "ngircd did not welcome {nick}: {:?}",
            irc.all()
        );
        irc
    }

    /// Sends one line.
    fn send(&mut self, line: &str) {
        write!(self.stream, "{line}\r\n").expect("writing to the IRC server");
    }

    /// Every line received so far.
    fn all(&self) -> Vec<String> {
        self.lines.lock().expect("IRC line log").clone()
    }

    /// Waits for a received line matching `want`; returns it, or `None` after `deadline`.
    fn wait(&self, deadline: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        poll_for(deadline, || {
            self.lines
                .lock()
                .expect("IRC line log")
                .iter()
                .find(|line| want(line))
                .cloned()
        })
    }
}

/// The owner's view of invites: an incremental sync (a full sync may be served from a cache,
/// as Synapse does for two minutes), every invite seen kept.
struct Invites {
    since: Option<String>,
    seen: Vec<String>,
    accepted: Vec<String>,
}

impl Invites {
    fn new() -> Invites {
        Invites {
            since: None,
            seen: Vec::new(),
            accepted: Vec::new(),
        }
    }

    /// Waits for an invite to a room not accepted yet, joins it and returns its ID; `None`
    /// when none came within [`STEP`], or the bridge exited.
    fn accept_next(&mut self, client: &Client, bridge: &mut Spawned) -> Option<String> {
        let room = poll_for(STEP, || {
            if bridge.child.try_wait().is_ok_and(|status| status.is_some()) {
                return Some(None);
            }
            let sync = client.sync(self.since.as_deref(), 0, None);
            if let Some(next) = sync["next_batch"].as_str() {
                self.since = Some(next.to_owned());
            }
            if let Some(rooms) = sync["rooms"]["invite"].as_object() {
                for room in rooms.keys() {
                    if !self.seen.contains(room) {
                        self.seen.push(room.clone());
                    }
                }
            }
            self.seen
                .iter()
                .find(|room| !self.accepted.contains(room))
                .map(|room| Some(room.clone()))
        })??;
        self.accepted.push(room.clone());
        let (status, _) = client.post(
            &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
            &json!({}),
        );
        (status == 200).then_some(room)
    }
}

/// The last 50 events of `room` as `client` sees them, oldest first.
fn recent(client: &Client, room: &str) -> Vec<Value> {
    let (status, page) = client.get(&format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
        enc(room)
    ));
    if status != 200 {
        return Vec::new();
    }
    let mut events = page["chunk"].as_array().cloned().unwrap_or_default();
    events.reverse();
    events
}

/// The message bodies of `room` with their senders, for failure details.
fn transcript(client: &Client, room: &str) -> String {
    recent(client, room)
        .iter()
        .filter(|event| event["type"] == "m.room.message")
        .map(|event| {
            format!(
                "{}: {}",
                event["sender"].as_str().unwrap_or("?"),
                event["content"]["body"].as_str().unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join("\n    ")
}

/// Sends a text message (a bridge command, in the control and network rooms).
fn say(client: &Client, room: &str, body: &str) -> bool {
    let txn = format!("t{}", tests::federation::now_ms());
    let (status, _) = client.send_event(
        room,
        "m.room.message",
        &txn,
        &json!({ "msgtype": "m.text", "body": body }),
    );
    // Distinct transaction IDs for commands sent within one millisecond.
    std::thread::sleep(Duration::from_millis(2));
    status == 200
}

/// Waits until `room` holds a message `body` from `sender` (any sender when `None`).
fn sees(client: &Client, room: &str, sender: Option<&str>, body: &str) -> bool {
    poll_for(STEP, || {
        recent(client, room)
            .iter()
            .any(|event| {
                event["type"] == "m.room.message"
                    && event["content"]["body"] == body
                    && sender.is_none_or(|s| event["sender"] == s)
            })
            .then_some(())
    })
    .is_some()
}

/// The whole scenario against `homeserver`, each step recorded in `checks`; returns early
/// (the later steps cannot run) at the first failed step that later ones depend on.
fn irc_flow(homeserver: &Homeserver, registration: &Registration, dir: &Path, checks: &mut Checks) {
    let server_name = homeserver.server_name();
    let (_ngircd, irc_port) = start_ngircd(dir);
    let mut bob = Irc::connect(irc_port, IRC_NICK);
    bob.send(&format!("JOIN {CHANNEL}"));
    assert!(
        bob.wait(STEP, |l| l.contains(" 366 ")).is_some(),
        "bob could not join {CHANNEL}: {:?}",
        bob.all()
    );

    let alice = homeserver.register("alice");
    let config = dir.join("heisenbridge.yaml");
    fs::write(&config, registration.yaml(&server_name)).expect("writing the registration");
    let mut bridge = Spawned::start(
        "heisenbridge",
        Command::new(venv_program("heisenbridge-venv", "heisenbridge"))
            .arg("-v")
            .arg("--config")
            .arg(&config)
            .args(["--listen-address", "127.0.0.1"])
            .args(["--listen-port", &registration.port.to_string()])
            .args(["--owner", &alice.user_id])
            .arg(homeserver.base_url())
            .stdin(Stdio::null()),
        &dir.join("heisenbridge.log"),
    );

    // 1. With an owner given, heisenbridge registers its bot and opens a control room for the
    // owner at start.
    let mut invites = Invites::new();
    let control = invites.accept_next(&alice, &mut bridge);
    checks.check(
        "heisenbridge starts and invites its owner to a control room",
        control.is_some(),
        || match bridge.child.try_wait() {
            Ok(Some(status)) => format!("heisenbridge exited with {status}"),
            _ => format!("no invite from the bridge within {STEP:?}"),
        },
    );
    let Some(control) = control else { return };
    bridge.assert_running();

    // 2. The owner adds the IRC network and opens it: a network room.
    let commands = [
        format!("ADDNETWORK {NETWORK}"),
        format!("ADDSERVER {NETWORK} 127.0.0.1 {irc_port}"),
        format!("OPEN {NETWORK}"),
    ];
    let sent = commands
        .iter()
        .all(|command| say(&alice, &control, command));
    let network = invites.accept_next(&alice, &mut bridge);
    checks.check(
        "ADDNETWORK, ADDSERVER, OPEN: the bridge opens a network room",
        sent && network.is_some(),
        || format!("control room:\n    {}", transcript(&alice, &control)),
    );
    let Some(network) = network else { return };

    // 3. Connect as MATRIX_NICK: the IRC user sees the nick online.
    let sent =
        say(&alice, &network, &format!("NICK {MATRIX_NICK}")) && say(&alice, &network, "CONNECT");
    let online = sent
        && poll_for(STEP, || {
            bob.send(&format!("ISON {MATRIX_NICK}"));
            // Once a second: ngircd delays a client that sends faster (flood penalty).
            std::thread::sleep(Duration::from_secs(1));
            bob.all()
                .iter()
                .any(|l| l.contains(" 303 ") && l.ends_with(&format!(":{MATRIX_NICK}")))
                .then_some(())
        })
        .is_some();
    checks.check(
        "NICK, CONNECT: the bridge connects to the IRC server as the owner",
        online,
        || format!("network room:\n    {}", transcript(&alice, &network)),
    );
    if !online {
        return;
    }

    // 4. Join the channel through the bridge: a channel room, and the IRC side sees the join.
    let sent = say(&alice, &network, &format!("JOIN {CHANNEL}"));
    let channel = invites.accept_next(&alice, &mut bridge);
    let joined_irc = bob
        .wait(STEP, |l| {
            l.starts_with(&format!(":{MATRIX_NICK}!"))
                && (l.ends_with(&format!("JOIN {CHANNEL}"))
                    || l.ends_with(&format!("JOIN :{CHANNEL}")))
        })
        .is_some();
    checks.check(
        "JOIN: the bridge joins the IRC channel and invites the owner to its room",
        sent && channel.is_some() && joined_irc,
        || {
            format!(
                "channel room {channel:?}, IRC saw the join: {joined_irc}; network room:\n    {}",
                transcript(&alice, &network)
            )
        },
    );
    let Some(channel) = channel else { return };

    // 5. IRC → Matrix in the channel, from the IRC user's puppet.
    let puppet = format!("@irc_{NETWORK}_{IRC_NICK}:{server_name}");
    bob.send(&format!("PRIVMSG {CHANNEL} :hello from irc"));
    checks.check(
        "IRC → Matrix: the channel message reaches the room from the IRC user's puppet",
        sees(&alice, &channel, Some(&puppet), "hello from irc"),
        || format!("channel room:\n    {}", transcript(&alice, &channel)),
    );

    // 6. Matrix → IRC in the channel, as the owner's nick.
    let sent = say(&alice, &channel, "hello from matrix");
    let heard = bob
        .wait(STEP, |l| {
            l.starts_with(&format!(":{MATRIX_NICK}!"))
                && l.ends_with(&format!("PRIVMSG {CHANNEL} :hello from matrix"))
        })
        .is_some();
    checks.check(
        "Matrix → IRC: the owner's message reaches the channel as their nick",
        sent && heard,
        || format!("sent: {sent}; IRC lines: {:?}", bob.all()),
    );

    // 7. A private message from IRC opens a private room; the owner answers through it.
    bob.send(&format!("PRIVMSG {MATRIX_NICK} :psst"));
    let private = invites.accept_next(&alice, &mut bridge);
    let got = private
        .as_ref()
        .is_some_and(|room| sees(&alice, room, Some(&puppet), "psst"));
    checks.check(
        "IRC → Matrix: a private message opens a private room with the IRC user",
        got,
        || format!("private room {private:?}"),
    );
    if let Some(private) = private {
        let sent = say(&alice, &private, "psst back");
        let heard = bob
            .wait(STEP, |l| {
                l.starts_with(&format!(":{MATRIX_NICK}!"))
                    && l.ends_with(&format!("PRIVMSG {IRC_NICK} :psst back"))
            })
            .is_some();
        checks.check(
            "Matrix → IRC: the owner's answer in the private room reaches the IRC user",
            sent && heard,
            || format!("sent: {sent}; IRC lines: {:?}", bob.all()),
        );
    }
    bridge.assert_running();
}

/// The registration heisenbridge's `--generate` writes, with a free port: exclusive `@irc_.*`.
fn registration() -> Registration {
    Registration::new("heisenbridge", "heisenbridge", "irc_")
}

/// Runs the scenario on `homeserver` and asserts every step, printing the logs on failure.
fn run(homeserver: &Homeserver, registration: &Registration) {
    let dir = TempDir::new();
    let mut checks = Checks::new();
    let start = std::time::Instant::now();
    irc_flow(homeserver, registration, dir.path(), &mut checks);
    println!(
        "heisenbridge on {}: scenario took {:.1}s",
        homeserver.label(),
        start.elapsed().as_secs_f64()
    );
    if checks.failed() > 0 {
        for log in ["heisenbridge.log", "ngircd.log"] {
            let text = fs::read_to_string(dir.path().join(log)).unwrap_or_default();
            eprintln!("=== {log}:\n{text}");
        }
        eprintln!("=== {} log:\n{}", homeserver.label(), homeserver.log());
    }
    checks.finish();
}

#[test]
#[ignore = "needs ngircd and the heisenbridge venv of `tests/host-tools.sh ensure suite`"]
fn heisenbridge_irc_both_ways_on_outpost() {
    let registration = registration();
    let homeserver = Homeserver::outpost(&[&registration]);
    run(&homeserver, &registration);
}

#[test]
#[ignore = "needs ngircd, the heisenbridge venv of `tests/host-tools.sh ensure suite` and Synapse"]
fn heisenbridge_irc_both_ways_on_synapse() {
    let registration = registration();
    let homeserver = Homeserver::synapse("synapse.test", &[&registration]);
    run(&homeserver, &registration);
}
