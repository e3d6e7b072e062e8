//! The client port's certificate through the `appliance` CLI: `setup` makes an HTTPS client
//! listener by default and can import an organisation's certificate from the provisioning
//! file; `tls client import` refuses a mismatched key, an expired or wrong-name certificate
//! and a broken chain with a message naming the file, changing nothing, and installs a good
//! one (config switched, a running server reloaded); `tls client ca` prints the unit CA;
//! `status` shows the certificate and warns about plain HTTP.
//!
//! Test certificates come from rcgen: an organisation root, an intermediate, leaves.
//! Exit codes under test: 0 success, 3 rejected input, 5 attention.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tests::appliance::{STRONG_PASSWORD, Unit, https_get};
use tests::{free_addr, json, poll_until};
use time::{Duration, OffsetDateTime};

const REJECTED: i32 = 3;
const ATTENTION: i32 = 5;

/// The name users type; the unit is also reached at 127.0.0.1.
const PUBLIC_NAME: &str = "chat.unit-a.test";

/// An organisation's PKI: a root and an intermediate that issues leaves.
struct Pki {
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(3650);
    params
}

fn pki(name: &str) -> Pki {
    let root = CertifiedIssuer::self_signed(
        ca_params(&format!("{name} Root")),
        KeyPair::generate().expect("key"),
    )
    .expect("root");
    let intermediate = CertifiedIssuer::signed_by(
        ca_params(&format!("{name} Intermediate")),
        KeyPair::generate().expect("key"),
        &root,
    )
    .expect("intermediate");
    Pki { root, intermediate }
}

/// A server leaf for `names`, valid from `from` to `until` days from now: `(cert, key)` PEM.
fn leaf(names: &[&str], issuer: &Issuer<'_, KeyPair>, from: i64, until: i64) -> (String, String) {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    for name in names {
        params.subject_alt_names.push(match name.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*name).to_owned().try_into().expect("DNS name")),
        });
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now + Duration::days(from);
    params.not_after = now + Duration::days(until);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("leaf");
    (cert.pem(), key.serialize_pem())
}

/// Writes `text` to `name` in the unit's temp dir (outside the data dir).
fn write(unit: &Unit, name: &str, text: &str) -> PathBuf {
    let path = unit.root().join(name);
    fs::write(&path, text).expect("writing a test file");
    path
}

fn arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Provisions a unit serving HTTPS from the unit CA on a loopback port, for [`PUBLIC_NAME`]
/// and 127.0.0.1; returns the client address.
fn setup_tls(unit: &Unit, extra: serde_json::Value) -> SocketAddr {
    let client = free_addr();
    let federation = free_addr();
    let mut network = json!({
        "client_listen": client.to_string(),
        "federation_listen": federation.to_string(),
        "federation_endpoints": [federation.to_string()],
        "public_names": [PUBLIC_NAME, "127.0.0.1"],
    });
    for (key, value) in extra.as_object().expect("an object") {
        network[key] = value.clone();
    }
    let file = unit.write_json(
        "provisioning.json",
        &json!({
            "version": 1,
            "server_name": "unit-a.test",
            "network": network,
            "admin": { "user": "admin" },
        }),
    );
    unit.appliance_with_stdin(
        &[
            "setup",
            "--from",
            &arg(&file),
            "--admin-password-file",
            "-",
            "--yes",
        ],
        Some(&format!("{STRONG_PASSWORD}\n")),
    )
    .ok("setup with TLS");
    client
}

/// Every file under the data dir's `tls/` plus the config, with its bytes.
fn snapshot(unit: &Unit) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, found: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).expect("listing tls/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, found);
            } else {
                found.insert(path.clone(), fs::read(&path).expect("reading"));
            }
        }
    }
    let mut found = BTreeMap::new();
    walk(&unit.data_dir().join("tls"), &mut found);
    let config = unit.data_dir().join("homeserver.toml");
    found.insert(config.clone(), fs::read(&config).expect("config"));
    found
}

fn config(unit: &Unit) -> String {
    fs::read_to_string(unit.data_dir().join("homeserver.toml")).expect("config")
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("a PEM certificate")
        .to_vec()
}

#[test]
fn bad_certificates_are_refused_naming_the_file_and_nothing_changes() {
    let unit = Unit::new();
    setup_tls(&unit, json!({}));
    let before = snapshot(&unit);
    let org = pki("Org");
    let other = pki("Other");
    let names = [PUBLIC_NAME, "127.0.0.1"];
    let (cert, key) = leaf(&names, &org.intermediate, -1, 90);
    let cert_path = write(&unit, "cert.pem", &cert);
    let key_path = write(&unit, "key.pem", &key);
    let chain_path = write(
        &unit,
        "chain.pem",
        &format!("{}{}", org.intermediate.pem(), org.root.pem()),
    );

    let (_, other_key) = leaf(&names, &org.intermediate, -1, 90);
    let other_key_path = write(&unit, "other-key.pem", &other_key);
    let (expired, expired_key) = leaf(&names, &org.intermediate, -90, -1);
    let (wrong_name, wrong_name_key) = leaf(&["chat.unit-b.test"], &org.intermediate, -1, 90);
    let foreign_chain = write(
        &unit,
        "foreign-chain.pem",
        &format!("{}{}", other.intermediate.pem(), other.root.pem()),
    );
    let cases = [
        (
            "a key of another certificate",
            vec![arg(&cert_path), arg(&other_key_path), arg(&chain_path)],
            arg(&other_key_path),
            "does not belong to the certificate",
        ),
        (
            "an expired certificate",
            vec![
                arg(&write(&unit, "expired.pem", &expired)),
                arg(&write(&unit, "expired-key.pem", &expired_key)),
                arg(&chain_path),
            ],
            arg(&unit.root().join("expired.pem")),
            "the certificate expired on",
        ),
        (
            "a certificate for another name",
            vec![
                arg(&write(&unit, "wrong-name.pem", &wrong_name)),
                arg(&write(&unit, "wrong-name-key.pem", &wrong_name_key)),
                arg(&chain_path),
            ],
            arg(&unit.root().join("wrong-name.pem")),
            "does not cover chat.unit-a.test, 127.0.0.1",
        ),
        (
            "another organisation's chain",
            vec![arg(&cert_path), arg(&key_path), arg(&foreign_chain)],
            arg(&foreign_chain),
            "the chain does not verify",
        ),
        (
            "a key file that holds no key",
            vec![arg(&cert_path), arg(&cert_path), arg(&chain_path)],
            arg(&cert_path),
            "holds no PEM private key",
        ),
    ];
    for (what, files, named, reason) in cases {
        let mut command = vec!["tls", "client", "import"];
        command.extend(files.iter().map(String::as_str));
        let run = unit.appliance(&command);
        run.expect(REJECTED, what);
        assert!(
            run.stderr.contains(&named) && run.stderr.contains(reason),
            "{what}: the message must name {named} and say {reason:?}\n{run}"
        );
        assert!(run.stderr.contains("nothing was changed"), "{what}\n{run}");
        assert_eq!(snapshot(&unit), before, "{what} changed files");
    }

    // The good one is written and the config switched; the stopped server takes it at start.
    let run = unit.appliance(&[
        "tls",
        "client",
        "import",
        &arg(&cert_path),
        &arg(&key_path),
        &arg(&chain_path),
    ]);
    run.ok("a good import");
    assert!(run.stdout.contains("verified up to CN=Org Root"), "{run}");
    assert!(run.stdout.contains("next start"), "{run}");
    let dir = unit.data_dir().join("tls/client-imported");
    let written = fs::read_to_string(dir.join("cert.pem")).expect("cert.pem written");
    assert_eq!(written.matches("BEGIN CERTIFICATE").count(), 2, "{written}");
    assert_eq!(der_of(&written), der_of(&cert));
    assert!(fs::read_to_string(dir.join("key.pem")).is_ok_and(|k| k.contains("PRIVATE KEY")));
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(dir.join("key.pem"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        config(&unit).contains("tls = \"imported\""),
        "{}",
        config(&unit)
    );
    assert_eq!(
        config(&unit).matches("tls = ").count(),
        1,
        "one tls line: {}",
        config(&unit)
    );
    // Nothing but the folder appeared beside the unit's own files.
    let mut entries: Vec<String> = fs::read_dir(unit.data_dir().join("tls"))
        .expect("tls/")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with('.'))
        .collect();
    entries.sort();
    assert!(entries.is_empty(), "left behind: {entries:?}");
}

#[test]
fn the_unit_serves_https_and_an_import_replaces_the_certificate() {
    let mut unit = Unit::new();
    let addr = setup_tls(&unit, json!({}));
    let toml = config(&unit);
    assert!(toml.contains("tls = \"unit-ca\""), "{toml}");
    assert!(
        toml.contains(&format!(
            "public_base_url = \"https://{PUBLIC_NAME}:{}\"",
            addr.port()
        )),
        "{toml}"
    );
    unit.start();

    // `tls client ca` prints the unit CA and its fingerprint; trusting it reaches the API.
    let run = unit.appliance(&["tls", "client", "ca"]);
    run.ok("tls client ca");
    let unit_ca = fs::read_to_string(unit.data_dir().join("tls/ca.pem")).expect("ca.pem");
    assert_eq!(run.stdout, unit_ca);
    let fingerprint = run
        .stderr
        .lines()
        .map(str::trim)
        .find(|line| line.len() == 95 && line.split(':').count() == 32)
        .unwrap_or_else(|| panic!("no fingerprint line\n{run}"));
    assert!(
        fingerprint
            .bytes()
            .all(|b| b == b':' || (b.is_ascii_hexdigit() && !b.is_ascii_lowercase())),
        "{fingerprint}"
    );
    let versions = poll_until(
        "HTTPS with the unit CA",
        std::time::Duration::from_secs(10),
        || https_get(addr, PUBLIC_NAME, &unit_ca, "/_matrix/client/versions").ok(),
    );
    assert!(
        versions.response.starts_with("HTTP/1.1 200"),
        "{}",
        versions.response
    );
    https_get(addr, "127.0.0.1", &unit_ca, "/_matrix/client/versions")
        .expect("the unit CA certificate covers the address too");
    // The selftest reaches its own unit over HTTPS.
    unit.appliance(&["selftest"]).ok("selftest over HTTPS");

    // Import the organisation's certificate while the server runs: it serves it at once (the
    // reload switches the running listener to the imported files), and after a restart too.
    let org = pki("Org");
    let roots = org.root.pem();
    let (cert, key) = leaf(&[PUBLIC_NAME, "127.0.0.1"], &org.intermediate, -1, 90);
    let chain = write(&unit, "chain.pem", &org.intermediate.pem());
    let run = unit.appliance(&[
        "tls",
        "client",
        "import",
        &arg(&write(&unit, "cert.pem", &cert)),
        &arg(&write(&unit, "key.pem", &key)),
        &arg(&chain),
    ]);
    run.ok("import while running");
    assert!(run.stdout.contains("now serves it"), "{run}");
    for when in ["after the import", "after a restart"] {
        let served = https_get(addr, PUBLIC_NAME, &roots, "/_matrix/client/versions")
            .unwrap_or_else(|err| panic!("the organisation's certificate is served {when}: {err}"));
        assert_eq!(served.chain.first(), Some(&der_of(&cert)), "{when}");
        assert_eq!(served.chain.len(), 2, "leaf and intermediate {when}");
        assert!(
            https_get(addr, PUBLIC_NAME, &unit_ca, "/_matrix/client/versions").is_err(),
            "the unit CA's certificate is no longer served {when}"
        );
        if when == "after the import" {
            unit.stop();
            unit.start();
        }
    }

    // A renewed certificate imported into the running server is served at once (reload).
    let (renewed, renewed_key) = leaf(&[PUBLIC_NAME, "127.0.0.1"], &org.intermediate, -1, 120);
    let run = unit.appliance(&[
        "tls",
        "client",
        "import",
        &arg(&write(&unit, "renewed.pem", &renewed)),
        &arg(&write(&unit, "renewed-key.pem", &renewed_key)),
        &arg(&chain),
    ]);
    run.ok("import with the server in imported mode");
    assert!(run.stdout.contains("now serves it"), "{run}");
    let served = https_get(addr, "127.0.0.1", &roots, "/_matrix/client/versions")
        .expect("the renewed certificate is served");
    assert_eq!(served.chain.first(), Some(&der_of(&renewed)));

    // `status` shows it.
    let status = unit.appliance(&["status", "--json"]);
    status.ok("status of a healthy unit");
    let tls = &status.json()["client_tls"];
    assert_eq!(tls["mode"], "imported", "{status}");
    assert_eq!(tls["names"], json!([PUBLIC_NAME, "127.0.0.1"]));
    assert_eq!(tls["issuer"], "CN=Org Intermediate");
    let days = tls["days_left"].as_i64().expect("days_left");
    assert!((118..=120).contains(&days), "{days}");

    // Back to the unit CA (the organisation's certificate withdrawn): the running server
    // switches at once, and the config says so for the next start.
    let run = unit.appliance(&["tls", "client", "unit-ca"]);
    run.ok("tls client unit-ca");
    assert!(run.stdout.contains("now serves it"), "{run}");
    assert!(
        config(&unit).contains("tls = \"unit-ca\""),
        "{}",
        config(&unit)
    );
    for when in ["after the switch", "after a restart"] {
        https_get(addr, PUBLIC_NAME, &unit_ca, "/_matrix/client/versions")
            .unwrap_or_else(|err| panic!("the unit CA's certificate is served {when}: {err}"));
        assert!(
            https_get(addr, PUBLIC_NAME, &roots, "/_matrix/client/versions").is_err(),
            "the imported certificate is no longer served {when}"
        );
        if when == "after the switch" {
            unit.stop();
            unit.start();
        }
    }
    let again = unit.appliance(&["tls", "client", "unit-ca"]);
    again.ok("tls client unit-ca a second time");
    assert!(again.stdout.contains("nothing to do"), "{again}");
    unit.stop();
}

#[test]
fn status_warns_about_plain_http_and_a_certificate_expiring_soon() {
    // Plain HTTP on every interface, accepted explicitly: status warns (the server is not
    // started, as tests listen on loopback only).
    let unit = Unit::new();
    let port = free_addr().port();
    let federation = free_addr();
    let file = unit.write_json(
        "provisioning.json",
        &json!({
            "version": 1,
            "server_name": "plain.test",
            "network": {
                "client_listen": format!("0.0.0.0:{port}"),
                "federation_listen": federation.to_string(),
                "federation_endpoints": [federation.to_string()],
                "client_tls": "off",
                "insecure_plain_http": true,
            },
            "admin": { "user": "admin" },
        }),
    );
    unit.appliance_with_stdin(
        &[
            "setup",
            "--from",
            &arg(&file),
            "--admin-password-file",
            "-",
            "--yes",
        ],
        Some(&format!("{STRONG_PASSWORD}\n")),
    )
    .ok("setup with insecure plain HTTP");
    let status = unit.appliance(&["status", "--json"]);
    status.expect(ATTENTION, "status");
    let report = status.json();
    assert_eq!(
        report["client_tls"]["insecure_plain_http"], true,
        "{status}"
    );
    assert!(
        report["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .any(|problem| problem.as_str().is_some_and(|p| p.contains("plain HTTP"))),
        "{status}"
    );
    let text = unit.appliance(&["status"]);
    assert!(text.stdout.contains("INSECURE"), "{text}");

    // An imported certificate with 10 days left: named, with the days, as needing attention.
    let unit = Unit::new();
    let org = pki("Org");
    let (cert, key) = leaf(&[PUBLIC_NAME, "127.0.0.1"], &org.intermediate, -300, 10);
    write(&unit, "key.pem", &key);
    setup_tls(
        &unit,
        json!({
            "client_tls": "imported",
            "client_certificate": {
                "certificate": arg(&write(&unit, "cert.pem", &cert)),
                "key": "key.pem",
            },
        }),
    );
    let status = unit.appliance(&["status", "--json"]);
    let report = status.json();
    assert_eq!(report["client_tls"]["mode"], "imported", "{status}");
    let days = report["client_tls"]["days_left"].as_i64().expect("days");
    assert!((9..=10).contains(&days), "{days}");
    assert!(
        report["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .any(|problem| problem
                .as_str()
                .is_some_and(|p| p.contains("client certificate expires"))),
        "{status}"
    );
}

#[test]
fn setup_defaults_to_https_and_checks_a_provisioned_certificate_first() {
    // From flags, nothing said about TLS: HTTPS from the unit CA for the server name.
    let unit = Unit::new();
    let client = free_addr();
    unit.appliance_with_stdin(
        &[
            "setup",
            "--server-name",
            "flags.test",
            "--client-listen",
            &client.to_string(),
            "--federation-listen",
            &free_addr().to_string(),
            "--admin-password-file",
            "-",
            "--yes",
        ],
        Some(&format!("{STRONG_PASSWORD}\n")),
    )
    .ok("setup from flags");
    let toml = config(&unit);
    for line in [
        "tls = \"unit-ca\"".to_owned(),
        "public_names = [\"flags.test\"]".to_owned(),
        format!("public_base_url = \"https://flags.test:{}\"", client.port()),
        "insecure_plain_http = false".to_owned(),
    ] {
        assert!(toml.contains(&line), "{line} missing:\n{toml}");
    }

    // A provisioning file with the organisation's certificate: a wrong-name one is refused
    // before anything is written; a good one is installed with the unit.
    let unit = Unit::new();
    let org = pki("Org");
    let (wrong, wrong_key) = leaf(&["chat.unit-b.test"], &org.intermediate, -1, 90);
    write(&unit, "wrong.pem", &wrong);
    write(&unit, "wrong-key.pem", &wrong_key);
    let client = free_addr();
    let federation = free_addr();
    let provisioning = |cert: &str, key: &str| {
        json!({
            "version": 1,
            "server_name": "unit-a.test",
            "network": {
                "client_listen": client.to_string(),
                "federation_listen": federation.to_string(),
                "federation_endpoints": [federation.to_string()],
                "public_names": [PUBLIC_NAME],
                "client_tls": "imported",
                "client_certificate": { "certificate": cert, "key": key, "chain": "chain.pem" },
            },
            "admin": { "user": "admin" },
        })
    };
    write(&unit, "chain.pem", &org.intermediate.pem());
    let file = unit.write_json("wrong.json", &provisioning("wrong.pem", "wrong-key.pem"));
    let run = unit.appliance_with_stdin(
        &[
            "setup",
            "--from",
            &arg(&file),
            "--admin-password-file",
            "-",
            "--yes",
        ],
        Some(&format!("{STRONG_PASSWORD}\n")),
    );
    run.expect(
        REJECTED,
        "a wrong-name certificate in the provisioning file",
    );
    assert!(
        run.stderr.contains("wrong.pem") && run.stderr.contains("nothing was written"),
        "{run}"
    );
    assert!(!unit.data_dir().join("homeserver.toml").exists());

    let (cert, key) = leaf(&[PUBLIC_NAME], &org.intermediate, -1, 90);
    write(&unit, "cert.pem", &cert);
    write(&unit, "key.pem", &key);
    let file = unit.write_json("good.json", &provisioning("cert.pem", "key.pem"));
    unit.appliance_with_stdin(
        &[
            "setup",
            "--from",
            &arg(&file),
            "--admin-password-file",
            "-",
            "--yes",
        ],
        Some(&format!("{STRONG_PASSWORD}\n")),
    )
    .ok("setup with an imported certificate");
    assert!(config(&unit).contains("tls = \"imported\""));
    let written = fs::read_to_string(unit.data_dir().join("tls/client-imported/cert.pem"))
        .expect("the certificate is installed");
    assert_eq!(der_of(&written), der_of(&cert));
    let recorded = fs::read_to_string(unit.data_dir().join("provisioning.json")).expect("record");
    assert!(!recorded.contains("client_certificate"), "{recorded}");
}
