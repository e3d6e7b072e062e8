//! The federation side of the `appliance` CLI against real units: peer cards exported and
//! imported at the console (with the fingerprint check) let two units federate; `peer list`
//! shows the link state; bad cards and bad manual peers are refused with nothing written;
//! `peer remove` makes the peer's requests refused; `keys rotate` and `tls renew` keep the
//! federation working (the rotated key's old half still verifies pre-rotation history).
//!
//! Each unit is provisioned with `appliance setup --from` on loopback ports; federation
//! TLS, keys and cards are the real ones. Exit codes under test: 0 success, 2 usage,
//! 3 rejected input, 4 wrong state, 5 attention. Needs the `openssl` command: `s_client` makes
//! a TLS request the way a peer does (trusting only the unit CA), `verify` checks the renewed
//! certificate's chain.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::Client;
use tests::appliance::{STRONG_PASSWORD, Unit, read_bytes};

const USAGE: i32 = 2;
const REJECTED: i32 = 3;
const WRONG_STATE: i32 = 4;
const ATTENTION: i32 = 5;

/// How long a federated message or link-state change may take to show up.
const DELIVERY: Duration = Duration::from_secs(60);

/// Two units, `unit-a.test` and `unit-b.test`, set up but not started, each with one user
/// (`alice` on A, `bob` on B) created offline.
fn two_units() -> (Unit, Unit) {
    let (a, b) = (Unit::new(), Unit::new());
    a.setup("unit-a.test");
    b.setup("unit-b.test");
    create_user(&a, "alice");
    create_user(&b, "bob");
    (a, b)
}

fn create_user(unit: &Unit, name: &str) {
    unit.appliance_with_stdin(
        &["user", "create", name, "--password-file", "-"],
        Some(&format!("{STRONG_PASSWORD}\n")),
    )
    .ok("user create");
}

/// The unit's fingerprint, from `appliance peer fingerprint`.
fn fingerprint(unit: &Unit) -> String {
    unit.appliance(&["peer", "fingerprint"])
        .ok("peer fingerprint")
        .stdout
        .trim()
        .to_owned()
}

/// Exports `unit`'s card into its temp dir and returns the file.
fn export(unit: &Unit, name: &str) -> PathBuf {
    let path = unit.root().join(name);
    unit.appliance(&["peer", "export", "--out", &path.to_string_lossy()])
        .ok("peer export");
    path
}

/// Imports `from`'s card into `into`, checking the fingerprint `from`'s admin reads out.
fn import(from: &Unit, into: &Unit) -> String {
    let card = export(from, "card.json");
    let expected = fingerprint(from);
    let run = into.appliance(&[
        "peer",
        "import",
        &card.to_string_lossy(),
        "--expect-fingerprint",
        &expected.to_lowercase(),
    ]);
    run.ok("peer import with the fingerprint read out");
    run.stdout.clone()
}

fn peers_json(unit: &Unit) -> Vec<Value> {
    let run = unit.appliance(&["peer", "list", "--json"]);
    run.ok("peer list --json");
    run.json()["peers"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("peer list --json has no peers array\n{run}"))
}

fn peer_named<'a>(peers: &'a [Value], name: &str) -> Option<&'a Value> {
    peers.iter().find(|peer| peer["server_name"] == name)
}

/// Polls `check` until it returns `Some`, panicking with `what` after [`DELIVERY`].
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            started.elapsed() < DELIVERY,
            "timed out after {DELIVERY:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn bodies_in(client: &Client, room: &str) -> Vec<String> {
    tests::bodies(&client.all_messages(room, "b", None))
}

fn wait_for_body(client: &Client, room: &str, body: &str) {
    eventually(&format!("{body:?} to reach {}", client.user_id), || {
        bodies_in(client, room)
            .iter()
            .any(|b| b == body)
            .then_some(())
    });
}

/// Alice (on A) creates a room and invites Bob (on B), who joins over federation.
fn share_room(alice: &Client, bob: &Client) -> String {
    let room = alice.create_room(&json!({ "preset": "private_chat" }));
    invite_and_join(alice, bob, &room);
    room
}

fn invite_and_join(alice: &Client, bob: &Client, room: &str) {
    alice.invite(room, &bob.user_id);
    eventually(&format!("the invite to {room} to reach bob"), || {
        bob.sync(None, 0, None)["rooms"]["invite"][room]
            .is_object()
            .then_some(())
    });
    assert_eq!(bob.join(room), room, "bob joins over federation");
}

/// The unit's federation listen address, from its provisioning file.
fn federation_addr(unit: &Unit) -> String {
    let file: Value =
        serde_json::from_slice(&read_bytes(&unit.data_dir().join("provisioning.json")))
            .expect("provisioning.json is JSON");
    file["network"]["federation_listen"]
        .as_str()
        .expect("federation_listen")
        .to_owned()
}

/// `GET path` on the unit's federation listener over TLS, trusting only its unit CA (as a
/// peer does), with `openssl s_client`; returns the JSON body.
fn federation_get(unit: &Unit, path: &str) -> Value {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-ign_eof", "-verify_return_error"])
        .args(["-connect", &federation_addr(unit)])
        .arg("-CAfile")
        .arg(unit.data_dir().join("tls/ca.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running openssl s_client");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin was piped");
        write!(
            stdin,
            "GET {path} HTTP/1.1\r\nHost: unit\r\nConnection: close\r\n\r\n"
        )
        .expect("writing the request");
    }
    let output = child.wait_with_output().expect("openssl s_client output");
    let reply = String::from_utf8_lossy(&output.stdout);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|err| {
        panic!(
            "GET {path} over TLS: no JSON body ({err})\n{reply}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn peer_cards_exchanged_at_the_console_let_two_units_federate_until_removed() {
    let (mut a, mut b) = two_units();
    // B runs and A is stopped while the cards cross: one import is picked up by a reload, the
    // other when the homeserver starts.
    b.start();
    let into_b = import(&a, &b);
    assert!(
        into_b.contains("reloaded its allow-list: 1 peer"),
        "a running homeserver reloads after an import: {into_b}"
    );
    let into_a = import(&b, &a);
    // The firewall's peer set for A now admits B's federation endpoint (an IP literal).
    let rules = std::fs::read_to_string(a.data_dir().join("firewall/unit-b.test.nft"))
        .expect("B's firewall rule file on A");
    let endpoint = federation_addr(&b);
    let (ip, port) = endpoint.rsplit_once(':').expect("ip:port");
    assert!(
        rules.contains(&format!(
            "add element inet outpost peer_sources_v4 {{ {ip} }}"
        )) && rules.contains(&format!(
            "add element inet outpost peer_endpoints_v4 {{ {ip} . {port} }}"
        )),
        "{rules}"
    );
    assert!(into_a.contains("stopped"), "{into_a}");
    let listed = peers_json(&b);
    let peer = peer_named(&listed, "unit-a.test").expect("B lists A");
    assert_eq!(peer["fingerprint"], fingerprint(&a));
    assert_eq!(peer["signed"], true);
    assert!(peer["link"]["last_success_ts"].is_null(), "{peer:#}");
    a.start();

    let alice = a.login_ok("alice", STRONG_PASSWORD);
    let bob = b.login_ok("bob", STRONG_PASSWORD);
    let room = share_room(&alice, &bob);
    alice.send_text(&room, "hello from A");
    wait_for_body(&bob, &room, "hello from A");
    bob.send_text(&room, "hello from B");
    wait_for_body(&alice, &room, "hello from B");

    for (unit, other) in [(&a, "unit-b.test"), (&b, "unit-a.test")] {
        let peer = eventually(&format!("a delivery to {other} in peer list"), || {
            let peers = peers_json(unit);
            peer_named(&peers, other)
                .filter(|peer| {
                    peer["link"]["last_success_ts"].is_i64() && peer["link"]["queue_depth"] == 0
                })
                .cloned()
        });
        assert_eq!(peer["link"]["consecutive_failures"], 0, "{peer:#}");
    }
    let table = a.appliance(&["peer", "list"]);
    table.ok("peer list");
    assert!(
        table.stdout.contains("unit-b.test") && table.stdout.contains(&fingerprint(&b)),
        "{table}"
    );
    let status = a.appliance(&["status", "--json"]);
    status.ok("status with a healthy link");
    assert_eq!(status.json()["peers"][0]["server_name"], "unit-b.test");

    // B takes A off its allow-list: A's deliveries are refused from then on.
    b.appliance(&["peer", "remove", "unit-a.test"])
        .expect(USAGE, "peer remove without --yes and no terminal");
    let removed = b.appliance(&["peer", "remove", "unit-a.test", "--yes"]);
    removed.ok("peer remove");
    assert!(
        removed.stdout.contains("reloaded its allow-list: 0 peers"),
        "{removed}"
    );
    assert!(files_in(&b.data_dir().join("peers")).is_empty());
    assert!(
        files_in(&b.data_dir().join("firewall")).is_empty(),
        "a removed peer's firewall rules go with its card"
    );
    assert!(peers_json(&b).is_empty());
    b.appliance(&["peer", "remove", "unit-a.test", "--yes"])
        .expect(REJECTED, "removing a peer that is not there");

    alice.send_text(&room, "after the removal");
    let refused = eventually("B to refuse A's delivery", || {
        let peers = peers_json(&a);
        let peer = peer_named(&peers, "unit-b.test")?.clone();
        let error = peer["link"]["last_error"].as_str()?.to_owned();
        (peer["link"]["consecutive_failures"].as_i64() > Some(0)).then_some(error)
    });
    assert!(
        refused.contains("403"),
        "B refuses a removed peer with 403: {refused}"
    );
    assert!(
        !bodies_in(&bob, &room).contains(&"after the removal".to_owned()),
        "a removed peer's event must not be accepted"
    );
    let status = a.appliance(&["status"]);
    status.expect(ATTENTION, "status with a refused link needs attention");
    assert!(
        status.stdout.contains("unit-b.test has not been reached"),
        "{status}"
    );

    // Offline, the list comes from the card files and the database.
    a.stop();
    let peers = peers_json(&a);
    let peer = peer_named(&peers, "unit-b.test").expect("offline list shows B");
    assert!(peer["link"]["last_success_ts"].is_i64(), "{peer:#}");
    assert!(peer["link"]["queue_depth"].as_i64() >= Some(1), "{peer:#}");
    assert!(
        peer["link"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("403")),
        "{peer:#}"
    );
}

#[test]
fn bad_cards_and_bad_manual_peers_are_refused_and_nothing_is_written() {
    let (a, b) = (Unit::new(), Unit::new());
    a.setup("unit-a.test");
    b.setup("unit-b.test");
    let peers_dir = b.data_dir().join("peers");
    let card_path = export(&a, "card.json");
    let card_text = fs::read_to_string(&card_path).expect("card");
    let card: Value = serde_json::from_str(&card_text).expect("card is JSON");
    let fp = fingerprint(&a);
    let path = |file: &Path| file.to_string_lossy().into_owned();

    let run = b.appliance(&["peer", "import", &path(&card_path)]);
    run.expect(USAGE, "import with no terminal and no fingerprint");
    assert!(run.stderr.contains("--expect-fingerprint"), "{run}");
    let run = b.appliance(&[
        "peer",
        "import",
        &path(&card_path),
        "--expect-fingerprint",
        "AAAA-BBBB-CCCC-DDDD-EEEE",
    ]);
    run.expect(REJECTED, "import with the wrong fingerprint");
    assert!(run.stderr.contains(&fp), "{run}");

    // One byte changed in a signed field: the port of the endpoint, or the issue time.
    let endpoint = card["endpoints"][0].as_str().expect("endpoint");
    let tampered_endpoint = card_text.replacen(endpoint, &other_last_digit(endpoint), 1);
    let issued = format!("\"issued_at\": {}", card["issued_at"]);
    let tampered_time = card_text.replacen(&issued, &other_last_digit(&issued), 1);
    for (name, text) in [("endpoint", tampered_endpoint), ("time", tampered_time)] {
        let changed = text.bytes().zip(card_text.bytes()).filter(|(x, y)| x != y);
        assert_eq!(
            (text.len(), changed.count()),
            (card_text.len(), 1),
            "one byte changed"
        );
        let file = b.root().join(format!("tampered-{name}.json"));
        fs::write(&file, text).expect("writing");
        let run = b.appliance(&["peer", "import", &path(&file), "--expect-fingerprint", &fp]);
        run.expect(REJECTED, "a tampered card");
        assert!(run.stderr.contains("does not verify"), "{run}");
    }

    // Our own card, an unsigned card, and something that is not a card.
    let own = export(&b, "own.json");
    let run = b.appliance(&["peer", "import", &path(&own), "--yes"]);
    run.expect(REJECTED, "our own card");
    assert!(run.stderr.contains("own card"), "{run}");
    let mut unsigned = card.clone();
    unsigned
        .as_object_mut()
        .expect("object")
        .remove("signatures");
    let unsigned_file = b.write_json("unsigned.json", &unsigned);
    let run = b.appliance(&["peer", "import", &path(&unsigned_file), "--yes"]);
    run.expect(REJECTED, "an unsigned card");
    assert!(run.stderr.contains("peer add"), "{run}");
    let junk = b.write_json("junk.json", &json!({ "hello": "world" }));
    b.appliance(&["peer", "import", &path(&junk), "--yes"])
        .expect(REJECTED, "not a card");
    assert!(files_in(&peers_dir).is_empty(), "nothing was written");

    // Peers added by hand (a Synapse, say): every value is checked first.
    let key = "ed25519:a_syn=l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ";
    let ca = a.data_dir().join("tls/ca.pem");
    let not_a_ca = b.write_json("not-a-ca.json", &json!({}));
    let add = |server: &str, endpoint: &str, key: &str, ca: &Path| {
        b.appliance(&[
            "peer",
            "add",
            "--server-name",
            server,
            "--endpoint",
            endpoint,
            "--verify-key",
            key,
            "--ca-file",
            &path(ca),
        ])
    };
    for (what, run) in [
        ("no port", add("synapse.test", "synapse.test", key, &ca)),
        ("port 0", add("synapse.test", "127.0.0.1:0", key, &ca)),
        (
            "bad key",
            add("synapse.test", "127.0.0.1:8448", "ed25519:x=AAAA", &ca),
        ),
        (
            "not ed25519",
            add("synapse.test", "127.0.0.1:8448", "rsa:x=AAAA", &ca),
        ),
        (
            "bad CA",
            add("synapse.test", "127.0.0.1:8448", key, &not_a_ca),
        ),
        ("own name", add("unit-b.test", "127.0.0.1:8448", key, &ca)),
        ("bad name", add("bad name", "127.0.0.1:8448", key, &ca)),
    ] {
        run.expect(REJECTED, what);
    }
    assert!(files_in(&peers_dir).is_empty(), "nothing was written");
    add("synapse.test:8448", "127.0.0.1:8448", key, &ca).ok("peer add");
    assert_eq!(files_in(&peers_dir), ["synapse.test_8448.json"]);
    let written: Value =
        serde_json::from_slice(&read_bytes(&peers_dir.join("synapse.test_8448.json")))
            .expect("JSON");
    assert!(written.get("signatures").is_none(), "{written:#}");
    assert_eq!(
        written["verify_keys"]["ed25519:a_syn"],
        key.split_once('=').map(|(_, k)| k).unwrap_or_default()
    );
    let peers = peers_json(&b);
    let manual = peer_named(&peers, "synapse.test:8448").expect("listed");
    assert_eq!(manual["signed"], false);

    // A good import next to it, then removal of each.
    b.appliance(&["peer", "import", &path(&card_path), "--yes"])
        .ok("import with --yes");
    assert_eq!(peers_json(&b).len(), 2);
    b.appliance(&["peer", "remove", "synapse.test:8448", "--yes"])
        .ok("remove the manual peer");
    assert_eq!(files_in(&peers_dir), ["unit-a.test.json"]);
}

/// `text` with its last character (a digit) replaced by another digit.
fn other_last_digit(text: &str) -> String {
    let (head, last) = text.split_at(text.len() - 1);
    format!("{head}{}", if last == "7" { '8' } else { '7' })
}

#[test]
fn key_rotation_and_certificate_renewal_keep_two_units_federating() {
    let (mut a, mut b) = two_units();
    import(&a, &b);
    import(&b, &a);
    a.start();
    b.start();
    let alice = a.login_ok("alice", STRONG_PASSWORD);
    let bob = b.login_ok("bob", STRONG_PASSWORD);
    let room = share_room(&alice, &bob);
    alice.send_text(&room, "before the rotation");
    wait_for_body(&bob, &room, "before the rotation");
    // A room whose whole history is signed with the key about to be retired; B has never
    // seen it.
    let old_room = alice.create_room(&json!({ "preset": "private_chat", "name": "Archive" }));
    alice.send_text(&old_room, "signed with the old key");

    let old_card: Value =
        serde_json::from_slice(&read_bytes(&export(&a, "old-card.json"))).expect("card is JSON");
    let old_key_id = old_card["verify_keys"]
        .as_object()
        .and_then(|keys| keys.keys().next().cloned())
        .expect("a verify key");
    let old_fp = fingerprint(&a);

    a.appliance(&["keys", "rotate", "--yes"])
        .expect(WRONG_STATE, "rotating while the homeserver runs");
    a.stop();
    a.appliance(&["keys", "rotate"])
        .expect(USAGE, "rotating without --yes and no terminal");
    let rotated = a.appliance(&["keys", "rotate", "--yes"]);
    rotated.ok("keys rotate");
    let new_fp = fingerprint(&a);
    assert_ne!(new_fp, old_fp);
    assert!(rotated.stdout.contains(&new_fp), "{rotated}");
    assert!(
        rotated.stdout.contains("unit-b.test"),
        "names the peers: {rotated}"
    );

    let new_card: Value =
        serde_json::from_slice(&read_bytes(&export(&a, "new-card.json"))).expect("card is JSON");
    assert!(new_card["verify_keys"].get(&old_key_id).is_none());
    assert!(
        new_card["old_verify_keys"][&old_key_id]["expired_ts"].is_u64(),
        "{new_card:#}"
    );
    assert_eq!(
        new_card["old_verify_keys"][&old_key_id]["key"],
        old_card["verify_keys"][&old_key_id]
    );
    // B's admin imports the new card (checked against the new fingerprint); it replaces the
    // old one.
    import(&a, &b);
    assert_eq!(files_in(&b.data_dir().join("peers")), ["unit-a.test.json"]);
    a.start();

    let keys = federation_get(&a, "/_matrix/key/v2/server");
    assert_eq!(keys["server_name"], "unit-a.test");
    assert_eq!(
        keys["old_verify_keys"][&old_key_id]["key"], old_card["verify_keys"][&old_key_id],
        "{keys:#}"
    );
    assert!(keys["old_verify_keys"][&old_key_id]["expired_ts"].is_u64());
    assert!(keys["verify_keys"].get(&old_key_id).is_none(), "{keys:#}");

    alice.send_text(&room, "after the rotation");
    wait_for_body(&bob, &room, "after the rotation");
    bob.send_text(&room, "B still accepts A");
    wait_for_body(&alice, &room, "B still accepts A");
    // Joining the archive room makes B verify its state, signed before the rotation, with
    // the old key from the new card.
    invite_and_join(&alice, &bob, &old_room);

    // A new leaf certificate from the same unit CA: peers keep their cards.
    b.appliance(&["tls", "renew"])
        .expect(WRONG_STATE, "renewing while the homeserver runs");
    a.stop();
    let tls = a.data_dir().join("tls");
    let (ca_before, cert_before) = (
        read_bytes(&tls.join("ca.pem")),
        read_bytes(&tls.join("cert.pem")),
    );
    a.appliance(&["tls", "renew"]).ok("tls renew");
    assert_eq!(
        read_bytes(&tls.join("ca.pem")),
        ca_before,
        "the CA is unchanged"
    );
    assert_ne!(
        read_bytes(&tls.join("cert.pem")),
        cert_before,
        "a new certificate"
    );
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(tls.join("ca.pem"))
        .arg(tls.join("cert.pem"))
        .output()
        .expect("running openssl verify");
    assert!(
        verify.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    a.start();
    // B dials A and checks A's new certificate against the CA on the card it already has.
    bob.send_text(&room, "to the renewed A");
    wait_for_body(&alice, &room, "to the renewed A");
    alice.send_text(&room, "from the renewed A");
    wait_for_body(&bob, &room, "from the renewed A");

    let status = a.appliance(&["status", "--json"]).json();
    let certificates = status["certificates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let leaf = certificates
        .iter()
        .find(|cert| cert["file"] == "cert.pem")
        .unwrap_or_else(|| panic!("status lists the certificate: {status:#}"));
    let in_four_years = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|now| now.as_millis() as i64 + 4 * 365 * 24 * 3600 * 1000)
        .unwrap_or_default();
    assert!(
        leaf["not_after_ts"].as_i64() > Some(in_four_years),
        "{status:#}"
    );
}

/// The SPKI pin of the certificate in `cert_pem`, computed the way the `peer add` help tells
/// an admin to (with openssl), so the test also checks that the two agree.
fn spki_pin(cert_pem: &Path) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(
            "openssl x509 -in \"$1\" -pubkey -noout | openssl pkey -pubin -outform der \
             | openssl dgst -sha256 -binary | openssl base64",
        )
        .arg("sh")
        .arg(cert_pem)
        .output()
        .expect("running openssl");
    assert!(output.status.success(), "openssl: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn a_peer_added_by_hand_with_a_key_pin_federates_and_a_wrong_pin_is_refused() {
    let (mut a, mut b) = two_units();
    import(&a, &b);
    // A puts B on its allow-list by hand, as it would a Synapse with a self-signed certificate:
    // B's signing key and a pin of its TLS key, no CA.
    let card: Value =
        serde_json::from_slice(&read_bytes(&export(&b, "card.json"))).expect("B's card");
    let (key_id, key) = card["verify_keys"]
        .as_object()
        .and_then(|keys| keys.iter().next())
        .map(|(id, key)| (id.clone(), key.as_str().unwrap_or_default().to_owned()))
        .expect("B's card has a verify key");
    let (endpoint, verify_key) = (federation_addr(&b), format!("{key_id}={key}"));
    let add = |a: &Unit, pin: &str| {
        a.appliance(&[
            "peer",
            "add",
            "--server-name",
            "unit-b.test",
            "--endpoint",
            &endpoint,
            "--verify-key",
            &verify_key,
            "--spki-sha256",
            pin,
        ])
    };
    for (what, pin) in [
        ("a pin that is not base64", "not a pin"),
        ("a pin of the wrong length", "AAAA"),
    ] {
        add(&a, pin).expect(REJECTED, what);
    }
    a.appliance(&["peer", "add", "--server-name", "unit-b.test"])
        .expect(USAGE, "neither --ca-file nor --spki-sha256");

    // First a wrong pin: A's own certificate key. Nothing reaches B.
    let wrong = spki_pin(&a.data_dir().join("tls/cert.pem"));
    let right = spki_pin(&b.data_dir().join("tls/cert.pem"));
    assert_ne!(wrong, right);
    let added = add(&a, &wrong);
    added.ok("peer add with a pin");
    assert!(
        added.stderr.contains(wrong.trim_end_matches('=')),
        "the pin is shown: {added}"
    );
    let written: Value =
        serde_json::from_slice(&read_bytes(&a.data_dir().join("peers/unit-b.test.json")))
            .expect("the card A wrote");
    assert!(written["tls"].get("ca_pem").is_none(), "{written:#}");
    a.start();
    b.start();
    let alice = a.login_ok("alice", STRONG_PASSWORD);
    let bob = b.login_ok("bob", STRONG_PASSWORD);
    let room = alice.create_room(&json!({ "preset": "private_chat" }));
    let invite =
        |alice: &Client| alice.membership(&room, "invite", &json!({ "user_id": bob.user_id }));
    let (status, refused) = invite(&alice);
    assert_ne!(
        status, 200,
        "an invite crossed a link whose certificate does not match the pin"
    );
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("certificate")),
        "the error names the certificate: {refused:#}"
    );
    assert!(bob.sync(None, 0, None)["rooms"]["invite"][&room].is_null());

    // The right pin: the invite goes through, and messages cross both ways.
    add(&a, &right).ok("peer add with the right pin replaces the card");
    tests::ok(invite(&alice), "invite through the right pin");
    eventually(&format!("the invite to {room} to reach bob"), || {
        bob.sync(None, 0, None)["rooms"]["invite"][&room]
            .is_object()
            .then_some(())
    });
    assert_eq!(bob.join(&room), room, "bob joins over federation");
    alice.send_text(&room, "pinned hello from A");
    wait_for_body(&bob, &room, "pinned hello from A");
    bob.send_text(&room, "hello back from B");
    wait_for_body(&alice, &room, "hello back from B");
}
