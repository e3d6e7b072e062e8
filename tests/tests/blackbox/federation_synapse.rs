//! Interop with a stock Synapse configured for a private federation: a room on Outpost joined
//! from Synapse, a room on Synapse joined from Outpost, an invite from Outpost to a Synapse
//! user, and messages both ways in each; rooms of versions 1 and 3 both ways.
//!
//! Synapse comes from PyPI, installed into `target/synapse-venv` on first run (or the venv named
//! by `$OUTPOST_SYNAPSE_VENV`). It is configured with `federation_domain_whitelist`,
//! `federation_custom_ca_list` (our unit CA), `trusted_key_servers: []` and
//! `ip_range_whitelist: 127.0.0.0/8`, and serves federation over TLS with a certificate from a
//! CA that Outpost pins through a peer card added by hand. Synapse resolves server names with
//! `getaddrinfo`, so it runs in a private mount namespace (`unshare -m`) with a bind-mounted
//! hosts file instead of touching the machine's `/etc/hosts`: this needs root.
//!
//! Ignored by a plain `cargo test` (it needs PyPI, a ~250 MB venv and root); the README's test
//! command (`tests/run.sh`) runs it as its own step:
//! `cargo test --release -p tests --test blackbox -- --ignored --nocapture federation_synapse::`.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tests::bridge::wait_synapse_ready;
use tests::federation::{
    Checks, Puppet, Unit, UnitOptions, client_for, free_port_on, register_on, timeline_bodies,
    unit_ip, within,
};
use tests::{Client, TempDir, enc, json, str_field};

/// Synapse's loopback address.
const SYNAPSE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

/// Cross-server delivery deadline; Synapse batches and backs off more than Outpost.
const DELIVERY: Duration = Duration::from_secs(60);

/// A Synapse process; killed on drop (its log is printed if the test is panicking).
struct Synapse {
    child: Child,
    log: PathBuf,
    client_url: String,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        // Best effort: it may have exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "=== synapse log tail:\n{}",
                lines[lines.len().saturating_sub(200)..].join("\n")
            );
        }
    }
}

/// Synapse's signing key file from the PKCS#8 key `peer-card` made: `ed25519 <version>
/// <unpadded base64 seed>` (the 32-byte seed sits at offset 16 of both PKCS#8 forms).
fn synapse_signing_key(outpost_key_file: &Path) -> String {
    let text = fs::read_to_string(outpost_key_file).expect("reading the puppet's signing key");
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, version, encoded] = parts[..] else {
        panic!("unexpected signing key format: {text}");
    };
    let der = ruma::serde::Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(
        encoded.trim_end_matches('='),
    )
    .expect("base64 key");
    let seed = &der.as_bytes()[16..48];
    let seed = ruma::serde::Base64::<ruma::serde::base64::Standard, Vec<u8>>::new(seed.to_vec());
    format!("ed25519 {version} {}\n", seed.encode())
}

/// Writes Synapse's config for `server_name` and starts it in its own mount namespace.
fn start_synapse(
    dir: &Path,
    identity: &Puppet,
    fed_port: u16,
    outpost: &Unit,
    outpost_ca: &Path,
) -> Synapse {
    let python = tests::venv::synapse_python();
    let client_port = free_port_on(SYNAPSE_IP);
    let tls = identity.data_dir().join("tls");
    let chain = format!(
        "{}{}",
        fs::read_to_string(tls.join("cert.pem")).expect("cert.pem"),
        fs::read_to_string(tls.join("ca.pem")).expect("ca.pem")
    );
    fs::write(dir.join("fullchain.pem"), chain).expect("writing fullchain.pem");
    fs::write(
        dir.join("signing.key"),
        synapse_signing_key(&identity.data_dir().join("signing.key")),
    )
    .expect("writing synapse's signing key");
    fs::create_dir_all(dir.join("media")).expect("media dir");
    let outpost_host = outpost.name().split(':').next().unwrap_or_default();
    fs::write(
        dir.join("hosts"),
        format!(
            "127.0.0.1 localhost\n{} {outpost_host}\n{SYNAPSE_IP} synapse.test\n",
            outpost.ip()
        ),
    )
    .expect("writing the hosts file");
    fs::write(
        dir.join("log.yaml"),
        "version: 1\nformatters:\n  f:\n    format: '%(asctime)s %(levelname)s %(name)s %(message)s'\n\
         handlers:\n  console:\n    class: logging.StreamHandler\n    formatter: f\n\
         root:\n  level: INFO\n  handlers: [console]\ndisable_existing_loggers: false\n",
    )
    .expect("writing log.yaml");
    let d = dir.display();
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
  - port: {fed_port}
    bind_addresses: ["{SYNAPSE_IP}"]
    type: http
    tls: true
    resources:
      - names: [federation, keys]
  - port: {client_port}
    bind_addresses: ["{SYNAPSE_IP}"]
    type: http
    tls: false
    resources:
      - names: [client]
tls_certificate_path: {d}/fullchain.pem
tls_private_key_path: {tls}/key.pem
federation_domain_whitelist: ["{outpost}", "{outpost_host}"]
federation_custom_ca_list: ["{ca}"]
federation_verify_certificates: true
trusted_key_servers: []
suppress_key_server_warning: true
ip_range_whitelist: ["127.0.0.0/8"]
enable_registration: true
enable_registration_without_verification: true
registration_shared_secret: "outpost-interop-test"
macaroon_secret_key: "outpost-interop-test-macaroon"
form_secret: "outpost-interop-test-form"
presence:
  enabled: false
rc_message:
  per_second: 1000
  burst_count: 1000
rc_joins:
  local:
    per_second: 1000
    burst_count: 1000
  remote:
    per_second: 1000
    burst_count: 1000
"#,
        server_name = identity.name(),
        tls = tls.display(),
        outpost = outpost.name(),
        ca = outpost_ca.display(),
    );
    let config_path = dir.join("homeserver.yaml");
    fs::write(&config_path, config).expect("writing homeserver.yaml");
    let log = dir.join("synapse.log");
    let script = format!(
        "mount --bind {hosts} /etc/hosts && exec {python} -m synapse.app.homeserver -c {config}",
        hosts = dir.join("hosts").display(),
        python = python.display(),
        config = config_path.display(),
    );
    let child = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("synapse.out")).expect("stdout file"))
        .stderr(File::create(&log).expect("log file"))
        .spawn()
        .expect("spawning unshare");
    let mut synapse = Synapse {
        child,
        log,
        client_url: format!("http://{SYNAPSE_IP}:{client_port}"),
    };
    let anon = client_for(&synapse.client_url);
    wait_synapse_ready(&anon, || {
        if let Some(status) = synapse.child.try_wait().expect("polling synapse") {
            panic!(
                "synapse exited with {status}:\n{}",
                fs::read_to_string(&synapse.log).unwrap_or_default()
            );
        }
    });
    synapse
}

/// Whether `client` sees `body` in `room` (joined or not yet: errors count as no).
fn sees(client: &Client, room: &str, body: &str) -> bool {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
        enc(room)
    );
    let (status, page) = client.get(&path);
    status == 200
        && tests::bodies(page["chunk"].as_array().map_or(&[][..], |c| c))
            .iter()
            .any(|b| b == body)
}

#[test]
#[ignore = "installs Synapse from PyPI into target/synapse-venv and needs root for unshare -m"]
fn synapse_and_outpost_share_rooms_both_ways() {
    let fed_port = free_port_on(SYNAPSE_IP);
    let synapse_name = format!("synapse.test:{fed_port}");
    // Synapse's identity (signing key, TLS CA and certificate for synapse.test) is made by the
    // homeserver's own peer-card; the card is what an admin would write by hand.
    let identity = Puppet::new(&synapse_name, SocketAddr::from((SYNAPSE_IP, fed_port)));
    let mut card = identity.card().clone();
    if let Some(object) = card.as_object_mut() {
        object.remove("signatures");
    }
    let mut unit = Unit::new(
        "unit-a.test",
        unit_ip(0),
        &UnitOptions {
            port_in_server_name: true,
            ..UnitOptions::default()
        },
    );
    unit.trust_card("synapse", &card);
    unit.start();
    let dir = TempDir::new();
    let outpost_ca = unit.data_dir().join("tls").join("ca.pem");
    let synapse = start_synapse(dir.path(), &identity, fed_port, &unit, &outpost_ca);
    let alice = unit.register("alice");
    let sam = register_on(&client_for(&synapse.client_url), "sam");
    let mut checks = Checks::new();

    // 1. A room on Outpost, joined from Synapse through its alias.
    let bridge = alice.create_room(&json!({
        "preset": "public_chat",
        "room_alias_name": "bridge",
    }));
    let alias = format!("#bridge:{}", unit.name());
    let join = sam.post(
        &format!("/_matrix/client/v3/join/{}", enc(&alias)),
        &json!({}),
    );
    checks.reply(
        "Synapse user joins an Outpost room by alias",
        &join,
        &[200],
        &[],
    );
    if join.0 == 200 {
        alice.send_text(&bridge, "hello synapse");
        checks.check(
            "Outpost → Synapse message (Outpost room)",
            within(DELIVERY, || sees(&sam, &bridge, "hello synapse")),
            || "sam never saw it".to_owned(),
        );
        let txn = format!("t{}", tests::federation::now_ms());
        let sent = sam.send_event(
            &bridge,
            "m.room.message",
            &txn,
            &json!({ "msgtype": "m.text", "body": "hello outpost" }),
        );
        checks.reply("Synapse user sends", &sent, &[200], &[]);
        checks.check(
            "Synapse → Outpost message (Outpost room)",
            within(DELIVERY, || {
                timeline_bodies(&alice, &bridge).contains(&"hello outpost".to_owned())
            }),
            || "alice never saw it".to_owned(),
        );
    }

    // 2. A room on Synapse, joined from Outpost with `via`.
    let (status, created) = sam.post(
        "/_matrix/client/v3/createRoom",
        &json!({ "preset": "public_chat" }),
    );
    assert_eq!(status, 200, "createRoom on Synapse: {created}");
    let lounge = str_field(&created, "room_id");
    let join = alice.post(
        &format!(
            "/_matrix/client/v3/join/{}?via={}",
            enc(&lounge),
            enc(&synapse_name)
        ),
        &json!({}),
    );
    checks.reply("Outpost user joins a Synapse room via", &join, &[200], &[]);
    if join.0 == 200 {
        let txn = format!("u{}", tests::federation::now_ms());
        sam.send_event(
            &lounge,
            "m.room.message",
            &txn,
            &json!({ "msgtype": "m.text", "body": "welcome from synapse" }),
        );
        checks.check(
            "Synapse → Outpost message (Synapse room)",
            within(DELIVERY, || {
                timeline_bodies(&alice, &lounge).contains(&"welcome from synapse".to_owned())
            }),
            || "alice never saw it".to_owned(),
        );
        alice.send_text(&lounge, "thanks from outpost");
        checks.check(
            "Outpost → Synapse message (Synapse room)",
            within(DELIVERY, || sees(&sam, &lounge, "thanks from outpost")),
            || "sam never saw it".to_owned(),
        );
    }

    // 3. An invite from Outpost to a Synapse user (invite v2, countersigned by Synapse).
    let private = alice.create_room(&json!({ "preset": "private_chat" }));
    let invite = alice.membership(&private, "invite", &json!({ "user_id": sam.user_id }));
    checks.reply("Outpost invites a Synapse user", &invite, &[200], &[]);
    if invite.0 == 200 {
        let invited = within(DELIVERY, || {
            sam.sync(None, 0, None)["rooms"]["invite"][&private].is_object()
        });
        checks.check("Synapse shows the invite", invited, || {
            "no invite".to_owned()
        });
        if invited {
            let join = sam.post(
                &format!("/_matrix/client/v3/rooms/{}/join", enc(&private)),
                &json!({}),
            );
            checks.reply("Synapse user accepts the invite", &join, &[200], &[]);
            alice.send_text(&private, "private hello");
            checks.check(
                "Outpost → Synapse message (invited room)",
                within(DELIVERY, || sees(&sam, &private, "private hello")),
                || "sam never saw it".to_owned(),
            );
        }
    }
    // 4. Old room versions both ways: v1 (event IDs in the JSON, hashed references, state
    // resolution v1) and v3 (standard-base64 event IDs).
    for version in ["1", "3"] {
        let ours = alice.create_room(&json!({ "preset": "public_chat", "room_version": version }));
        let join = sam.post(
            &format!(
                "/_matrix/client/v3/join/{}?via={}",
                enc(&ours),
                enc(unit.name())
            ),
            &json!({}),
        );
        checks.reply(
            &format!("Synapse user joins an Outpost v{version} room"),
            &join,
            &[200],
            &[],
        );
        if join.0 == 200 {
            let body = format!("v{version} hello from outpost");
            alice.send_text(&ours, &body);
            checks.check(
                &format!("Outpost → Synapse message (Outpost v{version} room)"),
                within(DELIVERY, || sees(&sam, &ours, &body)),
                || "sam never saw it".to_owned(),
            );
            let reply = format!("v{version} hello from synapse");
            let txn = format!("v{version}-{}", tests::federation::now_ms());
            sam.send_event(
                &ours,
                "m.room.message",
                &txn,
                &json!({ "msgtype": "m.text", "body": reply }),
            );
            checks.check(
                &format!("Synapse → Outpost message (Outpost v{version} room)"),
                within(DELIVERY, || timeline_bodies(&alice, &ours).contains(&reply)),
                || "alice never saw it".to_owned(),
            );
        }
        let (status, created) = sam.post(
            "/_matrix/client/v3/createRoom",
            &json!({ "preset": "public_chat", "room_version": version }),
        );
        assert_eq!(status, 200, "createRoom v{version} on Synapse: {created}");
        let theirs = str_field(&created, "room_id");
        let join = alice.post(
            &format!(
                "/_matrix/client/v3/join/{}?via={}",
                enc(&theirs),
                enc(&synapse_name)
            ),
            &json!({}),
        );
        checks.reply(
            &format!("Outpost user joins a Synapse v{version} room"),
            &join,
            &[200],
            &[],
        );
        if join.0 == 200 {
            let body = format!("v{version} from outpost in synapse's room");
            alice.send_text(&theirs, &body);
            checks.check(
                &format!("Outpost → Synapse message (Synapse v{version} room)"),
                within(DELIVERY, || sees(&sam, &theirs, &body)),
                || "sam never saw it".to_owned(),
            );
        }
    }

    for (room, what) in [(&bridge, "Outpost room"), (&lounge, "Synapse room")] {
        println!(
            "{what} {room}: members on Outpost {:?}",
            tests::federation::joined_members(&alice, room)
        );
    }
    checks.finish();
    drop(synapse);
}
