//! A full data partition: the unit turns read-only with a clear error instead of answering 500,
//! keeps serving reads and `/sync`, reports it on the admin socket, hands the write-ahead log's
//! space back, and takes writes again by itself once space is freed, without losing anything it
//! acknowledged.
//!
//! The data dir is a small tmpfs mounted for the test (so the tests need root, as the suite
//! runs) and unmounted when the test ends, whatever happens.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tests::{Client, TestEnv, Value, admin_get, assert_error, enc, json, poll_until, str_field};

/// Size of the data partition under test.
const TMPFS_MIB: u64 = 48;

/// A tmpfs mounted on a test's data dir; unmounted (lazily, so a server still holding files
/// there cannot stop it) when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path) -> Tmpfs {
        std::fs::create_dir_all(path).expect("creating the mount point");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={TMPFS_MIB}m,mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("running mount(8)");
        assert!(
            status.success(),
            "mounting a tmpfs on {} failed ({status}): these tests need root",
            path.display()
        );
        Tmpfs {
            path: path.to_owned(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Free bytes on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> u64 {
    let stat = nix::sys::statvfs::statvfs(dir).expect("statvfs");
    stat.blocks_available() * stat.fragment_size()
}

/// Writes `filler` until the filesystem has at most `leave` bytes free (0: until it is full).
fn fill(filler: &Path, leave: u64) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(filler)
        .expect("opening the filler file");
    let chunk = vec![0x5au8; 64 * 1024];
    let dir = filler.parent().expect("the filler has a directory");
    loop {
        let free = free_bytes(dir);
        if free <= leave {
            break;
        }
        let take = usize::try_from((free - leave).min(chunk.len() as u64)).expect("small");
        match file.write_all(&chunk[..take]) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(err) => panic!("filling the disk: {err}"),
        }
    }
    file.sync_all().ok();
}

/// `GET /v1/status` on the admin socket, which must answer 200.
fn admin_status(data_dir: &Path) -> Value {
    let (head, body) = admin_get(data_dir, "/v1/status");
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "admin status: {head}\n{body}"
    );
    serde_json::from_str(&body).unwrap_or_else(|err| panic!("status body {body:?}: {err}"))
}

fn wal_size(env: &TestEnv) -> u64 {
    let mut path = env.db_path().into_os_string();
    path.push("-wal");
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}

fn send(client: &Client, room: &str, txn: &str, body: &str) -> (u16, Value) {
    client.send_event(
        room,
        "m.room.message",
        txn,
        &json!({ "msgtype": "m.text", "body": body }),
    )
}

fn upload(client: &Client, bytes: &[u8]) -> (u16, Value) {
    let reply = client.request(
        "POST",
        "/_matrix/media/v3/upload",
        &[("Content-Type", "application/octet-stream")],
        Some(bytes),
    );
    (reply.status, reply.json())
}

/// The refusal every write gets: the spec's `M_RESOURCE_LIMIT_EXCEEDED`, with the
/// `admin_contact` it requires.
fn assert_refused(reply: &(u16, Value), what: &str) {
    assert_error(reply, 403, "M_RESOURCE_LIMIT_EXCEEDED");
    assert_eq!(
        reply.1["admin_contact"], "mailto:it@example.org",
        "{what}: {reply:?}"
    );
}

/// Every acknowledged event can still be fetched.
fn assert_all_present(client: &Client, room: &str, acknowledged: &[String]) {
    for event_id in acknowledged {
        let (status, body) = client.get(&format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            enc(room),
            enc(event_id)
        ));
        assert_eq!(status, 200, "acknowledged event {event_id} lost: {body}");
    }
}

fn integrity_check(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).expect("opening the database");
    conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity_check")
}

const CONFIG: &str = "[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n\n\
    [storage]\nmin_free_bytes = 12582912\nreserve_bytes = 4194304\npassive_checkpoint_ms = 50\n\
    checkpoint_interval_secs = 1\nadmin_contact = \"mailto:it@example.org\"\n";

#[test]
fn below_the_watermark_writes_get_a_clear_error_reads_work_and_writes_resume_when_space_returns() {
    let (mut env, tmpfs) = TestEnv::with_config_setup(CONFIG, Tmpfs::mount);
    let data = env.data_dir();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let room = alice.create_room(&json!({ "preset": "public_chat" }));
    bob.join(&room);
    let mut acknowledged = Vec::new();
    for i in 0..40 {
        acknowledged.push(alice.send_text(&room, &format!("before {i}")));
    }
    let since = str_field(&bob.sync(None, 0, None), "next_batch");
    assert!(
        data.join(".space-reserve").is_file(),
        "no reserve file made"
    );

    // Leave less than the watermark (12 MiB) free: the unit turns read-only.
    let filler = data.join("filler");
    fill(&filler, 6 * 1024 * 1024);
    let mut attempt = 0;
    let refused = poll_until("sends to be refused", Duration::from_secs(10), || {
        attempt += 1;
        let reply = send(&alice, &room, &format!("during-{attempt}"), "during");
        if reply.0 == 200 {
            // Sent before the guard measured again: acknowledged, so it must survive.
            acknowledged.push(str_field(&reply.1, "event_id"));
            return None;
        }
        Some(reply)
    });
    assert_refused(&refused, "send below the watermark");
    assert_refused(
        &alice.put(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/org.example.x",
                enc(&alice.user_id)
            ),
            &json!({ "a": 1 }),
        ),
        "account data",
    );
    assert_refused(
        &alice.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.topic/",
                enc(&room)
            ),
            &json!({ "topic": "full" }),
        ),
        "state",
    );
    assert_refused(&upload(&alice, b"some bytes"), "upload");
    assert_refused(
        &env.anon().post(
            "/_matrix/client/v3/register",
            &json!({ "username": "carol", "password": "pw-carol-1234",
                     "auth": { "type": "m.login.dummy" } }),
        ),
        "registration",
    );

    // Reads and /sync keep working.
    let synced = bob.sync(Some(&since), 0, None);
    assert!(synced["next_batch"].is_string(), "sync: {synced}");
    let (status, body) = bob.get(&format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=10",
        enc(&room)
    ));
    assert_eq!(status, 200, "messages while read-only: {body}");
    assert_eq!(body["chunk"].as_array().map(Vec::len), Some(10), "{body}");

    // The admin sees it.
    let status = admin_status(&data);
    assert_eq!(status["space"]["read_only"], true, "admin status: {status}");
    assert_eq!(status["space"]["min_free_bytes"], 12582912, "{status}");
    assert!(
        status["space"]["free_bytes"]
            .as_u64()
            .is_some_and(|free| free < 12582912),
        "{status}"
    );

    // Fill the disk completely: still the clear error, and the log's space is handed back.
    fill(&filler, 0);
    assert_refused(
        &send(&alice, &room, "full-disk", "during"),
        "send on a full disk",
    );
    poll_until("the WAL to be truncated", Duration::from_secs(20), || {
        (wal_size(&env) == 0).then_some(())
    });
    let synced = bob.sync(Some(&since), 0, None);
    assert!(
        synced["next_batch"].is_string(),
        "sync on a full disk: {synced}"
    );

    // Space comes back: writes resume without a restart.
    std::fs::remove_file(&filler).expect("removing the filler");
    poll_until(
        "sends to be accepted again",
        Duration::from_secs(10),
        || {
            let reply = send(
                &alice,
                &room,
                &format!("after-{}", acknowledged.len()),
                "after",
            );
            if reply.0 == 200 {
                acknowledged.push(str_field(&reply.1, "event_id"));
                Some(())
            } else {
                None
            }
        },
    );
    for i in 0..10 {
        acknowledged.push(alice.send_text(&room, &format!("after {i}")));
    }
    let upload_reply = upload(&alice, b"some bytes");
    assert_eq!(
        upload_reply.0, 200,
        "upload after recovery: {upload_reply:?}"
    );
    let status = admin_status(&data);
    assert_eq!(
        status["space"]["read_only"], false,
        "admin status: {status}"
    );
    assert_all_present(&bob, &room, &acknowledged);

    // Nothing acknowledged is lost across a restart, and the database is sound.
    env.stop();
    assert_eq!(integrity_check(&env.db_path()), "ok");
    env.restart();
    assert_all_present(&bob, &room, &acknowledged);
    env.stop();
    drop(tmpfs);
}

#[test]
fn a_disk_that_fills_past_the_watermark_answers_the_clear_error_not_500() {
    // No watermark: the writes themselves meet ENOSPC / SQLITE_FULL.
    let config = CONFIG.replace("min_free_bytes = 12582912", "min_free_bytes = 0");
    let (mut env, tmpfs) = TestEnv::with_config_setup(&config, Tmpfs::mount);
    let data = env.data_dir();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({ "preset": "private_chat" }));
    let mut acknowledged = vec![alice.send_text(&room, "before")];
    // Wait until the idle checkpoint has truncated the log, so the next write needs new space.
    poll_until("the WAL to be truncated", Duration::from_secs(20), || {
        (wal_size(&env) == 0).then_some(())
    });
    let filler = data.join("filler");
    fill(&filler, 0);

    let mut big = String::new();
    while big.len() < 32 * 1024 {
        big.push_str("lorem ipsum dolor sit amet ");
    }
    assert_refused(&send(&alice, &room, "full-1", &big), "send on a full disk");
    assert_refused(
        &upload(&alice, &vec![7u8; 256 * 1024]),
        "upload on a full disk",
    );

    std::fs::remove_file(&filler).expect("removing the filler");
    poll_until(
        "sends to be accepted again",
        Duration::from_secs(10),
        || {
            let reply = send(&alice, &room, "full-2", "after");
            (reply.0 == 200).then(|| acknowledged.push(str_field(&reply.1, "event_id")))
        },
    );
    assert_all_present(&alice, &room, &acknowledged);
    env.stop();
    assert_eq!(integrity_check(&env.db_path()), "ok");
    drop(tmpfs);
}
