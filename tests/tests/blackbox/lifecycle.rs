//! Process lifecycle: refusing to start (bad config, unusable data dir, port in use) with a
//! non-zero exit and a one-line reason; `SIGTERM` exiting 0 promptly, even during long-polls,
//! with data intact on restart.

use std::ffi::OsStr;
use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::thread;
use std::time::Duration;
use tests::{TempDir, TestEnv, enc, free_addr, json, ok, run_homeserver, toml_str};

const EXIT_DEADLINE: Duration = Duration::from_secs(10);

/// Asserts a failed start: non-zero exit, and a one-line reason as the last stderr line.
/// Earlier lines may only be log records (timestamped), so the reason is never spread over
/// several lines (no multi-line parser excerpts, no `Caused by:` chains, no backtraces).
fn assert_refused(what: &str, args: &[&OsStr]) -> String {
    refusal(what, args).unwrap_or_else(|failure| panic!("{failure}"))
}

/// The one-line reason of a failed start, or why the start did not fail as it should.
fn refusal(what: &str, args: &[&OsStr]) -> Result<String, String> {
    let (status, stderr) = run_homeserver(args, EXIT_DEADLINE);
    if status.success() {
        return Err(format!("{what}: expected a non-zero exit, got {status}"));
    }
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    match lines.split_last() {
        Some((reason, before)) if before.iter().all(|line| is_log_record(line)) => {
            Ok(reason.to_string())
        }
        _ => Err(format!(
            "{what}: expected a one-line reason on stderr, got:\n{stderr}"
        )),
    }
}

/// Whether a stderr line is a log record: it starts with an RFC 3339 timestamp.
fn is_log_record(line: &str) -> bool {
    let bytes = line.as_bytes();
    bytes.len() > 20
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[10] == b'T'
}

fn write_config(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).expect("writing a config");
    path
}

fn config_text(data_dir: &Path, listen: &str) -> String {
    format!(
        "server_name = \"outpost.test\"\ndata_dir = {}\n\n[listen]\nclient = {}\n",
        toml_str(&data_dir.to_string_lossy()),
        toml_str(listen)
    )
}

#[test]
fn bad_configs_are_refused_with_a_one_line_reason() {
    let dir = TempDir::new();
    let data = dir.path().join("data");
    let data_toml = toml_str(&data.to_string_lossy());
    let listen = toml_str(&free_addr().to_string());
    let cases = [
        (
            "missing server_name",
            format!("data_dir = {data_toml}\n[listen]\nclient = {listen}\n"),
            Some("server_name"),
        ),
        (
            "missing data_dir",
            format!("server_name = \"outpost.test\"\n[listen]\nclient = {listen}\n"),
            Some("data_dir"),
        ),
        ("not TOML", "this is = = not toml\n[[[".to_owned(), None),
        (
            "server_name of the wrong type",
            format!("server_name = 5\ndata_dir = {data_toml}\n[listen]\nclient = {listen}\n"),
            Some("server_name"),
        ),
        (
            "unparseable listen address",
            format!(
                "server_name = \"outpost.test\"\ndata_dir = {data_toml}\n[listen]\nclient = \"not-an-address\"\n"
            ),
            None,
        ),
        (
            "rate limit of the wrong type",
            format!(
                "server_name = \"outpost.test\"\ndata_dir = {data_toml}\n[listen]\nclient = {listen}\n[rate_limit]\nper_second = \"fast\"\n"
            ),
            Some("per_second"),
        ),
    ];
    let mut failures = Vec::new();
    for (i, (what, text, mention)) in cases.iter().enumerate() {
        let path = write_config(dir.path(), &format!("bad-{i}.toml"), text);
        match refusal(what, &[OsStr::new("--config"), path.as_os_str()]) {
            Ok(line) => {
                // The operator must be able to find the mistake: by key name or line number.
                if let Some(mention) = mention
                    && !line.contains(mention)
                    && !line.contains("line ")
                {
                    failures.push(format!(
                        "{what}: the reason should name `{mention}` or its line: {line}"
                    ));
                }
            }
            Err(failure) => failures.push(failure),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let missing = dir.path().join("no-such-config.toml");
    assert_refused(
        "missing config file",
        &[OsStr::new("--config"), missing.as_os_str()],
    );
}

#[test]
fn unusable_data_dir_is_refused() {
    let dir = TempDir::new();
    let file = dir.path().join("a-file");
    fs::write(&file, "not a directory").expect("writing a plain file");
    let mut cases = vec![
        ("data_dir is a file", file.clone()),
        ("data_dir below a file", file.join("sub")),
    ];
    let read_only = dir.path().join("read-only");
    fs::create_dir(&read_only).expect("mkdir");
    set_mode(&read_only, 0o555);
    // Root ignores permissions; only test the read-only case when it actually is read-only.
    if fs::write(read_only.join("probe"), "x").is_err() {
        cases.push(("data_dir not writable", read_only.join("data")));
        cases.push(("data_dir itself read-only", read_only.clone()));
    }
    for (i, (what, data_dir)) in cases.iter().enumerate() {
        let text = config_text(data_dir, &free_addr().to_string());
        let path = write_config(dir.path(), &format!("c{i}.toml"), &text);
        assert_refused(what, &[OsStr::new("--config"), path.as_os_str()]);
    }
    set_mode(&read_only, 0o755);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn port_in_use_is_refused() {
    let dir = TempDir::new();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("local addr").to_string();
    let text = config_text(&dir.path().join("data"), &addr);
    let path = write_config(dir.path(), "taken.toml", &text);
    let line = assert_refused(
        "config: port in use",
        &[OsStr::new("--config"), path.as_os_str()],
    );
    let port = addr.rsplit(':').next().expect("addr has a port");
    assert!(
        line.to_ascii_lowercase().contains("in use") || line.contains(port),
        "the reason should say what is in use: {line}"
    );

    let dev_data = dir.path().join("dev-data");
    assert_refused(
        "dev: port in use",
        &[
            OsStr::new("dev"),
            OsStr::new("--data-dir"),
            dev_data.as_os_str(),
            OsStr::new("--listen"),
            OsStr::new(&addr),
        ],
    );
    drop(taken);
}

#[test]
fn sigterm_exits_zero_and_keeps_data() {
    let mut env = TestEnv::dev();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({ "name": "Persistent" }));
    let event = alice.send_text(&room, "before shutdown");
    assert!(
        env.db_path().is_file(),
        "the database lives at <data_dir>/homeserver.db"
    );

    let status = env.sigterm();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM exit status: {status}\n{}",
        env.log()
    );

    env.restart();
    let fetched = ok(
        alice.get(&format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            enc(&room),
            enc(&event)
        )),
        "event after restart (same access token)",
    );
    assert_eq!(fetched["content"]["body"], "before shutdown");
    let name = ok(
        alice.get(&tests::Client::state_path(&room, "m.room.name", "")),
        "state after restart",
    );
    assert_eq!(name["name"], "Persistent");
    env.stop();
}

#[test]
fn sigterm_does_not_wait_for_long_polls() {
    let mut env = TestEnv::dev();
    let alice = env.register("alice");
    let since = tests::str_field(&alice.sync(None, 0, None), "next_batch");
    let addr = env.addr();
    let baseline = tests::established_connections(addr.port());
    let head = format!(
        "GET /_matrix/client/v3/sync?timeout=30000&since={} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}",
        enc(&since),
        alice.access_token.as_deref().expect("token")
    );
    let pollers: Vec<_> = (0..3)
        .map(|_| {
            let head = head.clone();
            thread::spawn(move || tests::raw_http(addr, &head, b""))
        })
        .collect();
    // Wait until the three long-polls hold their own accepted connections.
    tests::poll_until("the long-polls to connect", Duration::from_secs(10), || {
        (tests::established_connections(addr.port()) >= baseline + 3).then_some(())
    });

    // `sigterm` panics if the process needs longer than its deadline (well under 30 s).
    let status = env.sigterm();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM exit status: {status}\n{}",
        env.log()
    );
    for poller in pollers {
        // Either an early empty answer or a closed connection is fine; hanging is not.
        if let Ok(reply) = poller.join().expect("poller thread") {
            assert!(reply.status == 200 || reply.status >= 500, "{reply:?}");
        }
    }
}
