//! TLS on the client listener: HTTPS with the unit CA, refusal of a client trusting another CA
//! and of a name outside `public_names`, HTTP/2 and HTTP/1.1 through ALPN, a certificate
//! reload (SIGHUP and the admin socket) that a long poll already open survives, imported
//! certificates, and the refusal of plain HTTP off loopback.

use std::fs;
use std::path::Path;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tests::tls::{
    TestCa, async_tls_connect, client_config, hyper_get, read_reply, send_request, served_leaf,
    tls_connect,
};
use tests::{
    READY_DEADLINE, TLS_NAMES, TempDir, TestEnv, admin_post, free_addr, json, poll_until,
    run_homeserver, sync_query, toml_str,
};

const BOTH: &[&[u8]] = &[b"h2", b"http/1.1"];

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn leaf_der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("a PEM certificate")
        .to_vec()
}

#[test]
fn https_with_the_unit_ca_speaks_http2_and_http1() {
    let env = TestEnv::tls("[registration]\nenabled = true\n");
    assert!(env.base_url().starts_with("https://"), "{}", env.base_url());
    // The harness's agent trusts only the unit CA, and registers over HTTPS.
    let alice = env.register("alice");
    let ca = env.ca_pem();

    let (version, status, _) = hyper_get(env.addr(), &ca, BOTH, "/_matrix/client/versions", None);
    assert_eq!((version, status), (hyper::Version::HTTP_2, 200));
    let token = alice.access_token.as_deref();
    let (version, status, body) = hyper_get(
        env.addr(),
        &ca,
        BOTH,
        "/_matrix/client/v3/account/whoami",
        token,
    );
    assert_eq!((version, status), (hyper::Version::HTTP_2, 200));
    let whoami: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(whoami["user_id"], json!(alice.user_id));

    let http1: &[&[u8]] = &[b"http/1.1"];
    let (version, status, body) = hyper_get(
        env.addr(),
        &ca,
        http1,
        "/_matrix/client/v3/account/whoami",
        token,
    );
    assert_eq!((version, status), (hyper::Version::HTTP_11, 200));
    assert!(String::from_utf8_lossy(&body).contains(&alice.user_id));
    // No ALPN at all: HTTP/1.1.
    let (version, status, _) = hyper_get(env.addr(), &ca, &[], "/_matrix/client/versions", None);
    assert_eq!((version, status), (hyper::Version::HTTP_11, 200));

    // Clients are pointed at the HTTPS URL, never at the bind address.
    let (status, well_known) = env.anon().get("/.well-known/matrix/client");
    assert_eq!(status, 200, "{well_known}");
    assert_eq!(
        well_known["m.homeserver"]["base_url"],
        json!(format!("https://localhost:{}", env.addr().port()))
    );

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = tests::raw_http(
        env.addr(),
        "GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost",
        b"",
    );
    assert!(
        plain.is_err(),
        "plain HTTP answered on the TLS port: {plain:?}"
    );
}

#[test]
fn a_client_trusting_another_ca_or_another_name_is_refused() {
    let env = TestEnv::tls("");
    let unit_ca = client_config(&env.ca_pem(), BOTH);
    for name in ["localhost", "127.0.0.1"] {
        tls_connect(env.addr(), name, unit_ca.clone())
            .unwrap_or_else(|err| panic!("{name} with the unit CA: {err}"));
    }
    let other = TestCa::new("Another CA");
    let refused = tls_connect(env.addr(), "localhost", client_config(&other.pem, BOTH));
    let err = refused
        .map(|_| ())
        .expect_err("a certificate from an untrusted CA is refused");
    assert!(
        err.to_string().to_lowercase().contains("issuer"),
        "refused for the wrong reason: {err}"
    );
    let refused = tls_connect(env.addr(), "chat.other.example", unit_ca);
    let err = refused
        .map(|_| ())
        .expect_err("a name outside public_names is refused");
    assert!(
        err.to_string().to_lowercase().contains("name"),
        "refused for the wrong reason: {err}"
    );
}

#[test]
fn a_reload_swaps_the_certificate_while_a_long_poll_completes() {
    let mut env = TestEnv::tls("[registration]\nenabled = true\n");
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));
    let since = alice.sync(None, 0, None)["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let config = client_config(&env.ca_pem(), &[b"http/1.1"]);
    let served_now = || {
        let stream = tls_connect(env.addr(), "localhost", config.clone()).expect("connects");
        served_leaf(&stream)
    };

    // A long poll on a connection made with the first certificate.
    let mut poll = tls_connect(env.addr(), "localhost", config.clone()).expect("connects");
    let first = served_leaf(&poll);
    let token = alice.access_token.clone().expect("a token");
    send_request(
        &mut poll,
        &format!(
            "GET /_matrix/client/v3/sync?{} HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {token}",
            sync_query(Some(&since), 60_000, None)
        ),
        b"",
    )
    .expect("sends the long poll");

    // The admin socket's reload reissues a removed certificate and serves it at once.
    let cert_path = env.data_dir().join("tls/client/cert.pem");
    fs::remove_file(&cert_path).expect("removes the certificate");
    let (head, body) = admin_post(&env.data_dir(), "/v1/tls/reload", "{}");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    let reloaded: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        reloaded["names"],
        json!(["localhost", "127.0.0.1"]),
        "{body}"
    );
    assert!(
        reloaded["not_after_ms"].as_u64().unwrap_or(0) > now_ms(),
        "{body}"
    );
    assert!(
        !reloaded["issuer"].as_str().unwrap_or("").is_empty(),
        "{body}"
    );
    let second = served_now();
    assert_ne!(second, first, "a new connection gets the new certificate");
    assert_eq!(
        second,
        leaf_der(&fs::read_to_string(&cert_path).expect("reissued")),
        "the served certificate is the file's"
    );

    // SIGHUP does the same.
    fs::remove_file(&cert_path).expect("removes the certificate");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &env.pid().to_string()])
        .status()
        .expect("kill(1)");
    assert!(status.success());
    let third = poll_until("the certificate reloaded on SIGHUP", READY_DEADLINE, || {
        let leaf = served_now();
        (leaf != second).then_some(leaf)
    });
    assert_ne!(third, first);

    // The long poll made before both reloads completes normally on its connection.
    let event_id = alice.send_text(&room, "after the reloads");
    let reply = read_reply(&mut poll).expect("the long poll answers");
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    let body = reply.json();
    assert!(body["next_batch"].is_string(), "{body}");
    let answered_with_event = body.to_string().contains(&event_id);
    if !answered_with_event {
        // It answered with something else that arrived first; the connection still serves.
        send_request(
            &mut poll,
            &format!(
                "GET /_matrix/client/v3/account/whoami HTTP/1.1\r\nHost: localhost\r\n\
                 Authorization: Bearer {token}"
            ),
            b"",
        )
        .expect("reuses the connection");
        assert_eq!(read_reply(&mut poll).expect("answers").status, 200);
    }
    env.stop();
}

#[test]
fn an_imported_certificate_is_served_and_a_bad_one_never_replaces_it() {
    let dir = TempDir::new();
    let org = TestCa::new("Org Issuing CA");
    let ca_file = dir.path().join("org-ca.pem");
    fs::write(&ca_file, &org.pem).expect("writes the CA");
    let (cert, key) = org.issue(&["localhost", "127.0.0.1"]);
    let write = |data_dir: &Path, cert: &str, key: &str| {
        let folder = data_dir.join("tls/client-imported");
        fs::create_dir_all(&folder).expect("creates the folder");
        fs::write(folder.join("cert.pem"), format!("{cert}{}", org.pem)).expect("cert");
        fs::write(folder.join("key.pem"), key).expect("key");
    };
    let listen = format!("tls = \"imported\"\npublic_names = {TLS_NAMES}\n");
    let (env, ()) = TestEnv::with_tls(&listen, "", Some(ca_file), |data_dir| {
        write(data_dir, &cert, &key)
    });
    let (version, status, _) =
        hyper_get(env.addr(), &org.pem, BOTH, "/_matrix/client/versions", None);
    assert_eq!((version, status), (hyper::Version::HTTP_2, 200));
    let config = client_config(&org.pem, BOTH);
    let served =
        || served_leaf(&tls_connect(env.addr(), "127.0.0.1", config.clone()).expect("TLS"));
    assert_eq!(served(), leaf_der(&cert));

    // A certificate that does not cover every public name, and a key of another certificate,
    // are refused by the reload; the served certificate stays.
    let (narrow, narrow_key) = org.issue(&["localhost"]);
    let (other, other_key) = org.issue(&["localhost", "127.0.0.1"]);
    for (cert_pem, key_pem, why) in [
        (&narrow, &narrow_key, "127.0.0.1"),
        (&other, &key, "does not belong"),
    ] {
        write(&env.data_dir(), cert_pem, key_pem);
        let (head, body) = admin_post(&env.data_dir(), "/v1/tls/reload", "{}");
        assert!(head.starts_with("HTTP/1.1 400"), "{head}\n{body}");
        assert!(body.contains(why), "{body}");
        assert_eq!(served(), leaf_der(&cert), "the old certificate stays");
    }
    let _ = other_key;

    // A good one replaces it, and the server never wrote the imported files.
    let (renewed, renewed_key) = org.issue(&["localhost", "127.0.0.1"]);
    write(&env.data_dir(), &renewed, &renewed_key);
    let (head, body) = admin_post(&env.data_dir(), "/v1/tls/reload", "{}");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    assert!(body.contains("Org Issuing CA"), "{body}");
    assert_eq!(served(), leaf_der(&renewed));
    assert!(
        !env.data_dir().join("tls/client").exists(),
        "nothing issued"
    );
}

/// Writes a config with `listen` as its `[listen]` section and runs the server on it, which
/// must exit by itself: its status and stderr.
fn start_failing(listen: &str) -> (std::process::ExitStatus, String) {
    let dir = TempDir::new();
    let config = dir.path().join("homeserver.toml");
    let data_dir = dir.path().join("data");
    fs::write(
        &config,
        format!(
            "server_name = \"outpost.test\"\ndata_dir = {}\n\n[listen]\n{listen}",
            toml_str(&data_dir.to_string_lossy())
        ),
    )
    .expect("writes the config");
    run_homeserver(
        &["--config".as_ref(), config.as_os_str()],
        Duration::from_secs(30),
    )
}

/// The one `homeserver: ...` error line a failed start ends with (log lines may come first).
fn one_error_line(stderr: &str) -> &str {
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("homeserver: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().last(),
        Some(errors[0]),
        "{stderr}"
    );
    errors[0]
}

#[test]
fn plain_http_off_loopback_and_a_missing_imported_certificate_stop_the_start() {
    let port = free_addr().port();
    let (status, stderr) = start_failing(&format!("client = \"0.0.0.0:{port}\"\n"));
    assert!(!status.success(), "started: {stderr}");
    let error = one_error_line(&stderr);
    assert!(
        error.contains("0.0.0.0") && error.contains("insecure_plain_http"),
        "{stderr}"
    );

    let (status, stderr) = start_failing(&format!(
        "client = \"127.0.0.1:{port}\"\ntls = \"imported\"\npublic_names = {TLS_NAMES}\n"
    ));
    assert!(!status.success(), "started: {stderr}");
    let error = one_error_line(&stderr);
    assert!(error.contains("client-imported/cert.pem"), "{stderr}");
}

#[test]
fn the_ca_http_listener_serves_the_ca_and_redirects_everything_else() {
    use sha2::Digest;
    let ca_http = free_addr();
    let listen = format!(
        "tls = \"unit-ca\"\npublic_names = {TLS_NAMES}\nca_http = {}\n",
        toml_str(&ca_http.to_string())
    );
    let (env, ()) = TestEnv::with_tls(&listen, "", None, |_| ());
    let get = |path: &str| {
        tests::raw_http(
            ca_http,
            &format!("GET {path} HTTP/1.1\r\nHost: localhost"),
            b"",
        )
        .unwrap_or_else(|err| panic!("GET {path}: {err}"))
    };

    let cert = get("/ca.crt");
    assert_eq!(cert.status, 200);
    assert_eq!(cert.body, env.ca_pem().into_bytes());
    assert_eq!(
        cert.header("content-type"),
        Some("application/x-x509-ca-cert")
    );

    // The page shows the fingerprint users compare: SHA-256 of the DER, as phones show it.
    let digest = sha2::Sha256::digest(leaf_der(&env.ca_pem()));
    let fingerprint: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    let page = get("/");
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains(&fingerprint.join(":")), "{html}");
    assert!(html.contains("/ca.crt"), "{html}");

    // No API in clear: everything else is redirected to HTTPS, the query kept.
    let base = format!("https://localhost:{}", env.addr().port());
    for path in [
        "/_matrix/client/versions?x=1",
        "/.well-known/matrix/client",
        "/_matrix/client/v3/login",
    ] {
        let reply = get(path);
        assert_eq!(reply.status, 308, "{path}");
        assert_eq!(
            reply.header("location"),
            Some(format!("{base}{path}").as_str())
        );
    }
    let login = tests::raw_http(
        ca_http,
        "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json",
        b"{\"type\":\"m.login.password\"}",
    )
    .expect("POST");
    assert_eq!(login.status, 308);
}

#[test]
fn dev_tls_serves_https_with_a_dev_ca_it_names() {
    let dir = TempDir::new();
    let data_dir = dir.path().join("data");
    let addr = free_addr();
    let log_path = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(tests::homeserver_binary())
        .arg("dev")
        .arg("--tls")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--listen")
        .arg(addr.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&log_path).expect("log file"))
        .env("NO_COLOR", "1")
        .spawn()
        .expect("spawns homeserver dev --tls");
    let ca_path = data_dir.join("tls/ca.pem");
    let ready = poll_until(
        "homeserver dev --tls to answer over HTTPS",
        READY_DEADLINE,
        || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(status));
            }
            let ca = fs::read_to_string(&ca_path).ok()?;
            let http1: &[&[u8]] = &[b"http/1.1"];
            let stream = tls_connect(addr, "localhost", client_config(&ca, http1)).ok()?;
            Some(Ok((ca, stream)))
        },
    );
    let log = || fs::read_to_string(&log_path).unwrap_or_default();
    let (ca, mut stream) = match ready {
        Ok(ready) => ready,
        Err(status) => panic!("exited with {status}: {}", log()),
    };
    send_request(
        &mut stream,
        "GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\nConnection: close",
        b"",
    )
    .expect("sends");
    assert_eq!(read_reply(&mut stream).expect("answers").status, 200);
    tls_connect(addr, "127.0.0.1", client_config(&ca, BOTH)).expect("valid for the address");
    let printed = poll_until("the start-up hint", READY_DEADLINE, || {
        let text = log();
        text.contains("is up").then_some(text)
    });
    assert!(
        printed.contains(&format!("https://{addr}"))
            && printed.contains(&ca_path.display().to_string()),
        "{printed}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_idle_tls_connection_cannot_hold_a_slot() {
    let env = TestEnv::tls("[connections]\nheader_timeout_secs = 1\n");
    // No handshake at all: the handshake counts against the header timeout.
    let mut silent = std::net::TcpStream::connect(env.addr()).expect("connects");
    silent
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    assert!(
        tests::closed_within(&mut silent, Duration::from_secs(10)),
        "a connection that never starts a handshake is closed"
    );
    // A handshake but no request, over HTTP/2 and HTTP/1.1.
    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let mut idle = tls_connect(
            env.addr(),
            "localhost",
            client_config(&env.ca_pem(), &[alpn]),
        )
        .expect("handshake");
        idle.sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        assert!(
            tests::closed_within(&mut idle, Duration::from_secs(10)),
            "an idle {} connection is closed",
            String::from_utf8_lossy(alpn)
        );
    }
}

#[test]
fn an_http2_connection_stays_a_long_poll_until_its_last_long_poll_ends() {
    // One ordinary connection at most: a connection whose requests wait in long polls does not
    // count against it (a flood of idle connections must not lock out waiting clients).
    let env = TestEnv::tls(
        "[registration]\nenabled = true\n\
         [connections]\nclient_max = 1\nclient_max_per_address = 1\n",
    );
    let alice = env.register("alice");
    let since = alice.sync(None, 0, None)["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let token = alice.access_token.clone().expect("a token");
    let (ca, addr) = (env.ca_pem(), env.addr());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let (tls, h2) = async_tls_connect(addr, client_config(&ca, &[b"h2"])).await;
        assert!(h2, "the server speaks HTTP/2 when offered only h2");
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        // Two long polls on the one HTTP/2 connection.
        let sync = |timeout_ms: u64| {
            let mut sender = sender.clone();
            let request = hyper::Request::get(format!(
                "https://localhost:{}/_matrix/client/v3/sync?since={since}&timeout={timeout_ms}",
                addr.port()
            ))
            .header("Authorization", format!("Bearer {token}"))
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .expect("a request");
            async move {
                sender
                    .send_request(request)
                    .await
                    .map(|r| r.status().as_u16())
            }
        };
        // The short one first, so that it is the one that moved the connection out of the
        // ordinary cap (a head start; should it not be enough, the test passes on old code too,
        // it cannot fail on good code).
        let short = tokio::spawn(sync(1_500));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let long = tokio::spawn(sync(60_000));
        let status = short
            .await
            .expect("the task")
            .expect("the short poll answers");
        assert_eq!(status, 200);
        assert!(!long.is_finished(), "the long poll still waits");

        // The connection still holds a long poll, so it stays out of the ordinary cap and a
        // new client gets in.
        let versions = tokio::task::spawn_blocking(move || -> std::io::Result<u16> {
            let mut stream = tls_connect(addr, "localhost", client_config(&ca, &[b"http/1.1"]))?;
            send_request(
                &mut stream,
                &format!(
                    "GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost:{}",
                    addr.port()
                ),
                b"",
            )?;
            Ok(read_reply(&mut stream)?.status)
        })
        .await
        .expect("the task");
        assert_eq!(
            versions.ok(),
            Some(200),
            "a new client is let in while the HTTP/2 connection waits in a long poll"
        );
        assert!(!long.is_finished(), "the long poll still waits");
        long.abort();
    });
}
