//! Passphrase-encrypted backups (`appliance backup --encrypt`, `appliance restore`) against real
//! units: an online encrypted backup under write load restored into a fresh unit with every
//! acknowledged message; a wrong passphrase, a truncated file (inside a chunk and exactly at a
//! chunk boundary), a flipped byte and appended bytes, each refused with nothing changed; the
//! passphrase from a file and from stdin, never on the command line and never written; the
//! time to encrypt and decrypt a backup of 64 MiB next to a plain one. Also the shipped invalid
//! peer cards and backup manifests (`provisioning/invalid/{peer-card,backup-manifest}/`),
//! refused by the tool itself, including the ones no schema can refuse.
//!
//! Exit codes under test: 0 success, 2 usage, 3 rejected input, 4 wrong state, 6 wrong
//! passphrase.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tests::appliance::{STRONG_PASSWORD, Unit, read_bytes};
use tests::json;

const USAGE: i32 = 2;
const REJECTED: i32 = 3;
const WRONG_PASSPHRASE: i32 = 6;

/// The encrypted container's magic (appliance-tools/src/crypt.rs).
const MAGIC: &[u8] = b"OUTPOST-ENC-BKP\n";
/// Header length and plaintext chunk size of the container this tool writes.
const HEADER_LEN: usize = 80;
const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;

const PASSPHRASE: &str = "quiet harbour lantern seven";

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// Writes `text` into the unit's temp dir (outside the data dir) and returns its path.
fn write_text(unit: &Unit, name: &str, text: &str) -> String {
    let path = unit.root().join(name);
    fs::write(&path, text).expect("writing a test file");
    path.to_string_lossy().into_owned()
}

/// Every file under `dir` with its bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push((path.clone(), read_bytes(&path)));
        }
    }
    found.sort();
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Asserts the data dir holds exactly `before`, byte for byte, and no staging leftovers.
fn assert_unchanged(unit: &Unit, before: &[(PathBuf, Vec<u8>)], what: &str) {
    let after = files_under(&unit.data_dir());
    let names = |files: &[(PathBuf, Vec<u8>)]| -> Vec<PathBuf> {
        files.iter().map(|(path, _)| path.clone()).collect()
    };
    assert_eq!(names(&after), names(before), "{what}: files changed");
    for ((path, bytes), (_, old)) in after.iter().zip(before) {
        assert!(bytes == old, "{what}: {} changed", path.display());
    }
}

#[test]
fn encrypted_backup_under_load_restores_every_acknowledged_message() {
    let mut unit = Unit::new();
    unit.setup("unit-a.test");
    unit.start();
    let password = "Quiet-Harbor-42";
    unit.appliance_with_stdin(
        &["user", "create", "carol", "--password-file", "-"],
        Some(&format!("{password}\n")),
    )
    .ok("create carol");
    let carol = unit.login_ok("carol", password);
    let room = carol.create_room(&json!({ "name": "logbook" }));
    let mut sent = Vec::new();
    for n in 0..20 {
        sent.push(carol.send_text(&room, &format!("entry {n}")));
    }

    // Online encrypted backup while carol keeps writing: every message acknowledged before the
    // backup started must be in it.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged_count = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (carol, room) = (carol.clone(), room.clone());
        let (stop, count) = (Arc::clone(&stop), Arc::clone(&acknowledged_count));
        thread::spawn(move || {
            let mut acknowledged = Vec::new();
            for n in 0..500 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // The unit's default rate limit applies to carol: a 429 is waited out (the
                // encrypted backup's key derivation keeps this loop running longer than a
                // plain backup does), anything else fails the test.
                let (status, reply) = carol.send_event(
                    &room,
                    "m.room.message",
                    &format!("during-{n}"),
                    &json!({ "msgtype": "m.text", "body": format!("during {n}") }),
                );
                if status == 429 {
                    let wait = reply["retry_after_ms"].as_u64().unwrap_or(100);
                    thread::sleep(Duration::from_millis(wait.min(1000)));
                    continue;
                }
                assert_eq!(status, 200, "send during the backup: {reply:#}");
                let event_id = reply["event_id"].as_str().expect("event_id").to_owned();
                acknowledged.push((event_id, Instant::now()));
                count.fetch_add(1, Ordering::Relaxed);
            }
            acknowledged
        })
    };
    tests::poll_until("a few writes under load", Duration::from_secs(10), || {
        (acknowledged_count.load(Ordering::Relaxed) >= 5).then_some(())
    });
    let passphrase_file = write_text(&unit, "passphrase.txt", &format!("{PASSPHRASE}\n"));
    let archive = unit.root().join("unit-a.backup");
    let archive_arg = archive.to_string_lossy().into_owned();
    let backup_started = Instant::now();
    let run = unit.appliance(&[
        "backup",
        "--out",
        &archive_arg,
        "--encrypt",
        "--passphrase-file",
        &passphrase_file,
    ]);
    let backup_took = backup_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during = writer.join().expect("writer thread");
    run.ok("online encrypted backup");
    assert!(
        run.stdout.contains("Encrypted backup of unit-a.test"),
        "{run}"
    );
    assert!(run.stdout.contains("SHA-256"), "{run}");
    sent.extend(
        during
            .into_iter()
            .filter(|(_, acknowledged)| *acknowledged < backup_started)
            .map(|(event_id, _)| event_id),
    );
    assert!(sent.len() >= 25, "the load did not run before the backup");

    // The file is the container, and nothing of the tar shows through.
    let bytes = read_bytes(&archive);
    assert!(bytes.starts_with(MAGIC), "no magic header");
    for clear in [
        &b"manifest.json"[..],
        b"outpost-backup",
        b"unit-a.test",
        b"SQLite format 3",
        PASSPHRASE.as_bytes(),
    ] {
        assert!(
            !contains(&bytes, clear),
            "{:?} readable in the encrypted backup",
            String::from_utf8_lossy(clear)
        );
    }
    unit.stop();
    // The passphrase was written nowhere in the unit.
    for (path, content) in files_under(&unit.data_dir()) {
        assert!(
            !contains(&content, PASSPHRASE.as_bytes()),
            "the passphrase is in {}",
            path.display()
        );
    }

    // A fresh unit in another directory, the passphrase on stdin.
    let mut fresh = Unit::new();
    let restore_started = Instant::now();
    let run = fresh.appliance_with_stdin(
        &["restore", &archive_arg, "--passphrase-file", "-"],
        Some(&format!("{PASSPHRASE}\n")),
    );
    let restore_took = restore_started.elapsed();
    run.ok("restore of an encrypted backup into a blank unit");
    assert!(run.stderr.contains("Checking and unpacking"), "{run}");
    eprintln!(
        "encrypted backup of {} bytes under load: backup {backup_took:?}, restore \
         {restore_took:?}",
        bytes.len()
    );
    fresh.start();
    let carol = fresh.login_ok("carol", password);
    let messages = carol.get_ok(&format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000",
        tests::enc(&room)
    ));
    let restored: Vec<&str> = messages["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter_map(|event| event["event_id"].as_str())
        .collect();
    for event_id in &sent {
        assert!(
            restored.contains(&event_id.as_str()),
            "{event_id} lost in the restore"
        );
    }
    fresh
        .appliance(&["status"])
        .ok("the restored unit is healthy");
}

#[test]
fn wrong_passphrases_and_damaged_encrypted_backups_change_nothing() {
    let mut unit = Unit::new();
    unit.setup("unit-a.test");
    let archive = unit.root().join("unit-a.backup");
    let archive_arg = archive.to_string_lossy().into_owned();

    // Refusals before anything is written: a short passphrase, no passphrase and no terminal,
    // a passphrase file without --encrypt.
    let run = unit.appliance_with_stdin(
        &[
            "backup",
            "--out",
            &archive_arg,
            "--encrypt",
            "--passphrase-file",
            "-",
        ],
        Some("short\n"),
    );
    run.expect(REJECTED, "a short passphrase");
    assert!(run.stderr.contains("at least 12 characters"), "{run}");
    let run = unit.appliance(&["backup", "--out", &archive_arg, "--encrypt"]);
    run.expect(USAGE, "no passphrase and no terminal");
    assert!(run.stderr.contains("--passphrase-file"), "{run}");
    let file = write_text(&unit, "passphrase.txt", PASSPHRASE);
    unit.appliance(&["backup", "--out", &archive_arg, "--passphrase-file", &file])
        .expect(USAGE, "--passphrase-file without --encrypt");
    assert!(!archive.exists(), "a refused backup left a file");
    let leftovers: Vec<_> = fs::read_dir(unit.root())
        .expect("root")
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Offline encrypted backup, the passphrase on stdin.
    let run = unit.appliance_with_stdin(
        &[
            "backup",
            "--out",
            &archive_arg,
            "--encrypt",
            "--passphrase-file",
            "-",
        ],
        Some(&format!("{PASSPHRASE}\n")),
    );
    run.ok("offline encrypted backup");
    let original = read_bytes(&archive);
    assert!(original.starts_with(MAGIC));
    let before = files_under(&unit.data_dir());
    let restore = |path: &Path, passphrase: &str| {
        unit.appliance_with_stdin(
            &[
                "restore",
                &path.to_string_lossy(),
                "--passphrase-file",
                "-",
                "--yes",
            ],
            Some(&format!("{passphrase}\n")),
        )
    };

    // The wrong passphrase: its own exit code and message.
    let run = restore(&archive, "quiet harbour lantern eight");
    run.expect(WRONG_PASSPHRASE, "wrong passphrase");
    assert!(
        run.stderr
            .contains("the passphrase does not open this backup"),
        "{run}"
    );
    assert!(run.stderr.contains("Nothing was changed"), "{run}");
    assert_unchanged(&unit, &before, "wrong passphrase");

    // No passphrase and no terminal: a usage error naming the flag, not a hang.
    let run = unit.appliance(&["restore", &archive_arg, "--yes"]);
    run.expect(USAGE, "restore without a passphrase");
    assert!(run.stderr.contains("--passphrase-file"), "{run}");

    // Damaged copies, each refused with a message that says what is wrong.
    let whole = CHUNK + TAG;
    let chunks_before_last = (original.len() - HEADER_LEN) / whole;
    assert!(chunks_before_last >= 2, "the backup is too small to cut");
    let mut flipped = original.clone();
    let middle = original.len() / 2;
    flipped[middle] ^= 0x55;
    let mut appended = original.clone();
    appended.extend_from_slice(b"more");
    let mut header = original.clone();
    header[40] ^= 0x01; // a salt byte: the key no longer matches
    let cases: [(&str, Vec<u8>, i32, &str); 6] = [
        ("flipped byte", flipped, REJECTED, "altered or damaged"),
        (
            "truncated inside a chunk",
            original[..original.len() * 2 / 3].to_vec(),
            REJECTED,
            "altered or damaged",
        ),
        (
            "truncated at a chunk boundary",
            original[..HEADER_LEN + 2 * whole].to_vec(),
            REJECTED,
            "truncated",
        ),
        ("bytes appended", appended, REJECTED, "altered or damaged"),
        (
            "cut inside the header",
            original[..HEADER_LEN / 2].to_vec(),
            REJECTED,
            "shorter than the header",
        ),
        (
            "altered salt",
            header,
            WRONG_PASSPHRASE,
            "the passphrase does not open this backup",
        ),
    ];
    for (what, bytes, code, message) in cases {
        let damaged = unit.root().join("damaged.backup");
        fs::write(&damaged, &bytes).expect("write");
        let run = restore(&damaged, PASSPHRASE);
        run.expect(code, what);
        assert!(run.stderr.contains(message), "{what}: {run}");
        assert!(run.stderr.contains("Nothing was changed"), "{what}: {run}");
        assert_unchanged(&unit, &before, what);
    }

    // The right passphrase, from a file this time (no trailing newline), restores.
    unit.appliance(&["restore", &archive_arg, "--passphrase-file", &file, "--yes"])
        .ok("restore with the right passphrase");
    assert_eq!(
        read_bytes(&unit.data_dir().join("signing.key")),
        before
            .iter()
            .find(|(path, _)| path.ends_with("signing.key"))
            .map(|(_, bytes)| bytes.clone())
            .expect("a signing key")
    );
    // A plain backup still restores, with or without a passphrase given.
    let plain = unit.root().join("plain.backup");
    unit.appliance(&["backup", "--out", &plain.to_string_lossy()])
        .ok("plain backup");
    assert!(!read_bytes(&plain).starts_with(MAGIC));
    let run = unit.appliance(&[
        "restore",
        &plain.to_string_lossy(),
        "--passphrase-file",
        &file,
        "--yes",
    ]);
    run.ok("plain restore with a needless passphrase");
    assert!(run.stderr.contains("not encrypted"), "{run}");
    unit.start();
    unit.login_ok("admin", STRONG_PASSWORD);
}

/// Backs up and restores `unit` (stopped) plainly and encrypted; returns the four timings.
fn time_round_trips(unit: &Unit, passphrase_file: &str) -> [(String, Duration, u64); 4] {
    let mut timings = Vec::new();
    for encrypt in [false, true] {
        let out = unit.root().join(format!("timed-{encrypt}.backup"));
        let out_arg = out.to_string_lossy().into_owned();
        let mut args = vec!["backup", "--out", &out_arg];
        if encrypt {
            args.extend(["--encrypt", "--passphrase-file", passphrase_file]);
        }
        let started = Instant::now();
        unit.appliance(&args).ok("timed backup");
        let backup = started.elapsed();
        let size = fs::metadata(&out).expect("backup").len();
        let fresh = Unit::new();
        let mut args = vec!["restore", &out_arg];
        if encrypt {
            args.extend(["--passphrase-file", passphrase_file]);
        }
        let started = Instant::now();
        fresh.appliance(&args).ok("timed restore");
        let restore = started.elapsed();
        let kind = if encrypt { "encrypted" } else { "plain" };
        timings.push((format!("{kind} backup"), backup, size));
        timings.push((format!("{kind} restore"), restore, size));
    }
    timings.try_into().expect("four timings")
}

#[test]
fn a_64_mib_backup_encrypts_and_decrypts_in_seconds() {
    let unit = Unit::new();
    unit.setup("unit-a.test");
    // 64 MiB of incompressible-looking media (restore checks files against the manifest, not
    // against the media table, so any file under media/ is carried).
    let media = unit.data_dir().join("media").join("ab");
    fs::create_dir_all(&media).expect("media dir");
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let noise: Vec<u8> = (0..64 * 1024 * 1024 / 8)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect();
    fs::write(media.join("ab".repeat(32)), &noise).expect("media file");
    let passphrase_file = write_text(&unit, "passphrase.txt", PASSPHRASE);
    let timings = time_round_trips(&unit, &passphrase_file);
    for (what, took, size) in &timings {
        eprintln!(
            "{what} of {:.1} MiB: {took:.2?}",
            *size as f64 / (1024.0 * 1024.0)
        );
        // Generous: on the 2-core build machine each takes about a second.
        assert!(
            *took < Duration::from_secs(30),
            "{what} took {took:?}; something is far too slow"
        );
    }
    let plain_size = timings[0].2;
    let sealed_size = timings[2].2;
    // Header plus 16 bytes per 64 KiB chunk: the container costs 0.02 %.
    let chunks = plain_size / CHUNK as u64 + 1;
    assert_eq!(
        sealed_size,
        plain_size + HEADER_LEN as u64 + chunks * TAG as u64
    );
}

/// A minimal ustar archive of `(name, bytes)` entries, as `appliance backup` lays them out.
fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in entries {
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        header[100..108].copy_from_slice(b"0000644\0");
        header[108..116].copy_from_slice(b"0000000\0");
        header[116..124].copy_from_slice(b"0000000\0");
        header[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        header[136..148].copy_from_slice(b"00000000000\0");
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[test]
fn shipped_invalid_peer_cards_and_manifests_are_refused_by_the_tool() {
    // Not unit-a.example, the unit the examples are of: its own card would be refused for that.
    let unit = Unit::new();
    unit.setup("unit-b.example");
    let before = files_under(&unit.data_dir());

    // Every invalid backup manifest, as the first entry of an archive with the files it
    // names: restore refuses it before touching the unit.
    let mut checked = 0;
    for entry in fs::read_dir(repo_file("provisioning/invalid/backup-manifest")).expect("dir") {
        let path = entry.expect("dir entry").path();
        let manifest = read_bytes(&path);
        let archive = tar(&[
            ("manifest.json", &manifest),
            ("homeserver.toml", b"not the real config\n"),
        ]);
        let file = unit.root().join("crafted.backup");
        fs::write(&file, archive).expect("write");
        let run = unit.appliance(&[
            "restore",
            &file.to_string_lossy(),
            "--yes",
            "--force-other-unit",
        ]);
        run.expect(REJECTED, &path.display().to_string());
        assert!(run.stderr.contains("Nothing was changed"), "{run}");
        assert_unchanged(&unit, &before, &path.display().to_string());
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} invalid manifests");

    // Every invalid peer card: import refuses it and the allow-list stays empty.
    let mut checked = 0;
    for entry in fs::read_dir(repo_file("provisioning/invalid/peer-card")).expect("dir") {
        let path = entry.expect("dir entry").path();
        let run = unit.appliance(&["peer", "import", &path.to_string_lossy(), "--yes"]);
        run.expect(REJECTED, &path.display().to_string());
        assert_unchanged(&unit, &before, &path.display().to_string());
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} invalid peer cards");
    // The valid example card is accepted, so the refusals above are about the mistakes.
    unit.appliance(&[
        "peer",
        "import",
        &repo_file("provisioning/peer-card.example.json").to_string_lossy(),
        "--yes",
    ])
    .ok("the example card imports");
}
