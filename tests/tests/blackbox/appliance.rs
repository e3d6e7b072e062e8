//! The `appliance` CLI against real units: setup from a provisioning file (valid, invalid,
//! refusing to overwrite), the user lifecycle through the admin socket and offline, status exit
//! codes, backup and restore (into a fresh unit, of a damaged file, of another unit, as root
//! into a data dir of another user), factory reset, and the generated man page and completions.
//!
//! Exit codes under test: 0 success, 2 usage, 3 rejected input, 4 wrong state, 5 attention.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tests::appliance::{STRONG_PASSWORD, Unit, provisioning, read_bytes};
use tests::{free_addr, json};

const USAGE: i32 = 2;
const REJECTED: i32 = 3;
const WRONG_STATE: i32 = 4;
const ATTENTION: i32 = 5;

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn repo_file(relative: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// Whether the data dir is absent or empty (nothing was written).
fn nothing_written(unit: &Unit) -> bool {
    match fs::read_dir(unit.data_dir()) {
        Ok(mut entries) => entries.next().is_none(),
        Err(_) => true,
    }
}

#[test]
fn setup_from_a_file_writes_the_whole_unit_and_refuses_to_overwrite_it() {
    let unit = Unit::new();
    unit.setup("unit-a.test");
    let data = unit.data_dir();
    for file in [
        "homeserver.toml",
        "provisioning.json",
        "homeserver.db",
        "signing.key",
        "tls/ca.pem",
        "tls/cert.pem",
    ] {
        assert!(data.join(file).is_file(), "{file} was not written");
    }
    for secret in ["signing.key", "tls/ca.key", "tls/key.pem"] {
        assert_eq!(mode(&data.join(secret)), 0o600, "{secret} must be 0600");
    }
    let recorded: serde_json::Value =
        serde_json::from_slice(&read_bytes(&data.join("provisioning.json"))).expect("JSON");
    assert_eq!(recorded["server_name"], "unit-a.test");
    assert!(
        !String::from_utf8_lossy(&read_bytes(&data.join("provisioning.json")))
            .contains(STRONG_PASSWORD),
        "the password must never be written to the provisioning file"
    );

    // A second setup refuses and changes nothing.
    let key = read_bytes(&data.join("signing.key"));
    let file = unit.write_json("again.json", &provisioning("unit-b.test", free_addr()));
    let again = unit.appliance_with_stdin(
        &[
            "setup",
            "--from",
            &file.to_string_lossy(),
            "--admin-password-file",
            "-",
            "--yes",
        ],
        Some(&format!("{STRONG_PASSWORD}\n")),
    );
    again.expect(WRONG_STATE, "setup over an existing unit");
    assert!(again.stderr.contains("already set up"), "{again}");
    assert_eq!(
        read_bytes(&data.join("signing.key")),
        key,
        "the key changed"
    );

    // --force replaces it: a new unit with a new key.
    unit.appliance_with_stdin(
        &[
            "setup",
            "--from",
            &file.to_string_lossy(),
            "--admin-password-file",
            "-",
            "--yes",
            "--force",
        ],
        Some(&format!("{STRONG_PASSWORD}\n")),
    )
    .ok("setup --force");
    assert_ne!(
        read_bytes(&data.join("signing.key")),
        key,
        "--force kept the old key"
    );
    let replaced = fs::read_to_string(data.join("homeserver.toml")).expect("config");
    assert!(replaced.contains("unit-b.test"), "{replaced}");
}

#[test]
fn invalid_provisioning_input_writes_nothing() {
    let unit = Unit::new();
    // Every shipped invalid example is refused with a message naming the problem.
    let invalid = repo_file("provisioning/invalid");
    let mut checked = 0;
    for entry in fs::read_dir(&invalid).expect("provisioning/invalid exists") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            // invalid/peer-card/, invalid/backup-manifest/: other formats, checked elsewhere.
            continue;
        }
        let run = unit.appliance_with_stdin(
            &[
                "setup",
                "--from",
                &path.to_string_lossy(),
                "--admin-password-file",
                "-",
                "--yes",
            ],
            Some(&format!("{STRONG_PASSWORD}\n")),
        );
        run.expect(REJECTED, &path.display().to_string());
        assert!(run.stderr.contains("nothing was written"), "{run}");
        assert!(
            nothing_written(&unit),
            "{} left files behind",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} invalid examples");

    // The shipped example is valid (--check writes nothing either way).
    let example = repo_file("provisioning/provisioning.example.json");
    unit.appliance(&["setup", "--check", "--from", &example.to_string_lossy()])
        .ok("the example validates");
    assert!(nothing_written(&unit));

    // A valid file but a weak password: refused, nothing written.
    let file = unit.write_json("p.json", &provisioning("unit-a.test", free_addr()));
    let file = file.to_string_lossy();
    unit.appliance_with_stdin(
        &[
            "setup",
            "--from",
            &file,
            "--admin-password-file",
            "-",
            "--yes",
        ],
        Some("admin123\n"),
    )
    .expect(REJECTED, "weak password");
    assert!(nothing_written(&unit));

    // No password and no terminal to ask on: a usage error, not a hang.
    let run = unit.appliance(&["setup", "--from", &file, "--yes"]);
    run.expect(USAGE, "missing password without a terminal");
    assert!(run.stderr.contains("--admin-password-file"), "{run}");
    // No --yes and no terminal to confirm on.
    let run = unit.appliance_with_stdin(
        &["setup", "--from", &file, "--admin-password-file", "-"],
        Some(&format!("{STRONG_PASSWORD}\n")),
    );
    run.expect(USAGE, "missing confirmation without a terminal");
    assert!(run.stderr.contains("--yes"), "{run}");
    // Flags instead of a file: a missing server name is named.
    let run = unit.appliance(&["setup", "--yes"]);
    run.expect(USAGE, "no server name");
    assert!(run.stderr.contains("--server-name"), "{run}");
    assert!(nothing_written(&unit));
}

#[test]
fn setup_from_flags_needs_no_file() {
    let unit = Unit::new();
    let client = free_addr().to_string();
    let federation = free_addr().to_string();
    unit.appliance_with_stdin(
        &[
            "setup",
            "--server-name",
            "flags.test",
            "--client-listen",
            &client,
            "--federation-listen",
            &federation,
            "--federation-endpoint",
            "10.1.2.3:8448",
            "--admin-user",
            "root-admin",
            "--public-base-url",
            "https://chat.flags.test/",
            // Plain HTTP on loopback, which this harness talks; TLS is appliance_tls.rs's.
            "--client-tls",
            "off",
            "--admin-password-file",
            "-",
            "--yes",
        ],
        Some(&format!("{STRONG_PASSWORD}\n")),
    )
    .ok("setup from flags");
    let recorded: serde_json::Value =
        serde_json::from_slice(&read_bytes(&unit.data_dir().join("provisioning.json")))
            .expect("JSON");
    assert_eq!(
        recorded["network"]["federation_endpoints"],
        json!(["10.1.2.3:8448"])
    );
    assert_eq!(recorded["admin"]["user"], "root-admin");
    // Stored without the trailing slash; the homeserver serves it in .well-known.
    assert_eq!(
        recorded["network"]["public_base_url"],
        "https://chat.flags.test"
    );
    let config = fs::read_to_string(unit.data_dir().join("homeserver.toml")).expect("config");
    assert!(
        config.contains("public_base_url = \"https://chat.flags.test\""),
        "{config}"
    );
    let mut unit = unit;
    unit.start();
    let well_known = unit.client().get_ok("/.well-known/matrix/client");
    assert_eq!(
        well_known["m.homeserver"]["base_url"],
        "https://chat.flags.test"
    );
}

#[test]
fn setup_reads_the_password_file_the_provisioning_file_names() {
    // An installer's stick: provisioning.json and the password side by side, no terminal.
    let mut unit = Unit::new();
    let mut file = provisioning("stick.test", free_addr());
    file["admin"]["password_file"] = json!("admin-password");
    fs::write(unit.root().join("admin-password"), "short\n").expect("write");
    let path = unit.write_json("stick.json", &file);
    let path = path.to_string_lossy();
    unit.appliance(&["setup", "--check", "--from", &path])
        .expect(REJECTED, "--check reads the weak password file too");
    fs::write(
        unit.root().join("admin-password"),
        format!("{STRONG_PASSWORD}\n"),
    )
    .expect("write");
    unit.appliance(&["setup", "--from", &path, "--yes"])
        .ok("setup from the stick");
    let recorded = fs::read_to_string(unit.data_dir().join("provisioning.json")).expect("read");
    assert!(!recorded.contains("password"), "{recorded}");
    unit.start();
    unit.login_ok("admin", STRONG_PASSWORD);
}

#[test]
fn user_lifecycle_through_the_admin_socket() {
    let mut unit = Unit::new();
    unit.setup("unit-a.test");
    unit.start();
    let socket = unit.data_dir().join("admin.sock");
    assert_eq!(mode(&socket), 0o660, "the admin socket must be 0660");

    // The first admin from setup can log in.
    unit.login_ok("admin", STRONG_PASSWORD);

    let password = "Quiet-Harbor-42";
    unit.appliance_with_stdin(
        &["user", "create", "alice", "--password-file", "-"],
        Some(&format!("{password}\n")),
    )
    .ok("user create alice");
    unit.login_ok("alice", password);

    // Creating her twice, or with a weak password, is refused.
    unit.appliance_with_stdin(
        &["user", "create", "alice", "--password-file", "-"],
        Some(&format!("{password}\n")),
    )
    .expect(REJECTED, "duplicate user");
    unit.appliance_with_stdin(
        &["user", "create", "bob", "--password-file", "-"],
        Some("bob\n"),
    )
    .expect(REJECTED, "weak password");

    unit.appliance(&["user", "make-admin", "alice"])
        .ok("make-admin");
    let list = unit
        .appliance(&["user", "list", "--json"])
        .ok("list")
        .json();
    let users = list["users"].as_array().expect("users array");
    let ids: Vec<&str> = users.iter().filter_map(|u| u["user_id"].as_str()).collect();
    assert_eq!(ids, ["@admin:unit-a.test", "@alice:unit-a.test"]);
    assert!(
        users
            .iter()
            .all(|u| u["admin"] == true && u["deactivated"] == false)
    );
    assert_eq!(users[1]["devices"], 1, "alice logged in once");

    // Reset ends her sessions; the new password works, the old one does not.
    let session = unit.login_ok("alice", password);
    let new_password = "Amber-Kettle-Forest-7";
    unit.appliance_with_stdin(
        &[
            "user",
            "reset-password",
            "@alice:unit-a.test",
            "--password-file",
            "-",
        ],
        Some(&format!("{new_password}\n")),
    )
    .ok("reset-password");
    let (status, _) = session.get("/_matrix/client/v3/account/whoami");
    assert_eq!(status, 401, "the old session must be logged out");
    assert_eq!(unit.login("alice", password).0, 403);
    unit.login_ok("alice", new_password);

    // Deactivation without a terminal needs --yes; then login fails for good.
    unit.appliance(&["user", "deactivate", "alice"])
        .expect(USAGE, "no --yes");
    unit.appliance(&["user", "deactivate", "alice", "--yes"])
        .ok("deactivate");
    let (status, body) = unit.login("alice", new_password);
    assert_eq!(status, 403, "{body:#}");
    assert_eq!(body["errcode"], "M_USER_DEACTIVATED", "{body:#}");
    let list = unit
        .appliance(&["user", "list", "--json"])
        .ok("list")
        .json();
    assert_eq!(list["users"][1]["deactivated"], true);
    unit.appliance(&["user", "deactivate", "nobody", "--yes"])
        .expect(REJECTED, "unknown user");

    // The table form is readable too.
    let table = unit
        .appliance(&["user", "list"])
        .ok("list as a table")
        .stdout
        .clone();
    assert!(
        table.contains("@alice:unit-a.test") && table.contains("deactivated"),
        "{table}"
    );

    unit.stop();
    assert!(
        !socket.exists(),
        "the admin socket must be removed at shutdown"
    );
}

#[test]
fn user_commands_work_offline_on_the_database() {
    let mut unit = Unit::new();
    unit.setup("unit-a.test");
    let password = "Quiet-Harbor-42";
    unit.appliance_with_stdin(
        &["user", "create", "bob", "--password-file", "-"],
        Some(&format!("{password}\n")),
    )
    .ok("offline create");
    let list = unit
        .appliance(&["user", "list", "--json"])
        .ok("offline list")
        .json();
    assert_eq!(list["users"].as_array().map(Vec::len), Some(2));
    // Deactivation must leave rooms, which needs the running server.
    unit.appliance(&["user", "deactivate", "bob", "--yes"])
        .expect(WRONG_STATE, "offline deactivate");
    unit.start();
    unit.login_ok("bob", password);
}

#[test]
fn status_exit_codes_follow_the_units_health() {
    let mut unit = Unit::new();
    let blank = unit.appliance(&["status", "--json"]);
    blank.expect(ATTENTION, "status of a blank unit");
    assert_eq!(blank.json()["healthy"], false);

    unit.setup("unit-a.test");
    let stopped = unit.appliance(&["status", "--json"]);
    stopped.expect(ATTENTION, "status with the homeserver stopped");
    let report = stopped.json();
    assert_eq!(report["running"], false);
    assert_eq!(report["database"]["quick_check"], "ok", "{report:#}");
    assert!(
        report["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("not running")),
        "{report:#}"
    );

    unit.start();
    let running = unit.appliance(&["status", "--json"]);
    running.ok("status with the homeserver running");
    let report = running.json();
    assert_eq!(report["healthy"], true, "{report:#}");
    assert_eq!(report["server"]["ready"], true);
    assert_eq!(report["server"]["server_name"], "unit-a.test");
    assert_eq!(report["database"]["users"], 1);
    assert!(
        report["disk"]["free_bytes"]
            .as_u64()
            .is_some_and(|free| free > 0)
    );
    assert_eq!(report["server"]["signing_key_id"], report["signing_key_id"]);
    let text = unit.appliance(&["status"]).ok("text status").stdout.clone();
    assert!(text.contains("All good"), "{text}");

    unit.stop();
    unit.appliance(&["status"])
        .expect(ATTENTION, "stopped again");
}

#[test]
fn backup_restores_into_a_fresh_unit_with_every_acknowledged_message() {
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
    // Media is part of the unit: its files go into the backup with their checksums.
    let photo = b"logbook photo ".repeat(5000);
    let upload = carol.request(
        "POST",
        "/_matrix/media/v3/upload?filename=photo.bin",
        &[("Content-Type", "application/octet-stream")],
        Some(&photo),
    );
    assert_eq!(upload.status, 200, "upload: {:?}", upload.json());
    let content_uri = upload.json()["content_uri"]
        .as_str()
        .expect("content_uri")
        .to_owned();

    // Online backup while the server runs and carol keeps writing: every message acknowledged
    // before the backup started must be in it.
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
                acknowledged.push((
                    carol.send_text(&room, &format!("during {n}")),
                    Instant::now(),
                ));
                count.fetch_add(1, Ordering::Relaxed);
            }
            acknowledged
        })
    };
    // Let the load get going before the backup starts.
    tests::poll_until("a few writes under load", Duration::from_secs(10), || {
        (acknowledged_count.load(Ordering::Relaxed) >= 5).then_some(())
    });
    let archive = unit.root().join("unit-a.backup");
    let archive_arg = archive.to_string_lossy().into_owned();
    let backup_started = Instant::now();
    let run = unit.appliance(&["backup", "--out", &archive_arg]);
    stop.store(true, Ordering::Relaxed);
    let during = writer.join().expect("writer thread");
    run.ok("online backup");
    sent.extend(
        during
            .into_iter()
            .filter(|(_, acknowledged)| *acknowledged < backup_started)
            .map(|(event_id, _)| event_id),
    );
    assert!(sent.len() >= 25, "the load did not run before the backup");
    assert!(run.stdout.contains("SHA-256"), "{run}");
    assert!(archive.is_file());
    // It does not overwrite without --force.
    unit.appliance(&["backup", "--out", &archive_arg])
        .expect(REJECTED, "existing output");
    // Restore refuses while the server runs.
    unit.appliance(&["restore", &archive_arg, "--yes"])
        .expect(WRONG_STATE, "restore with the server running");
    unit.stop();

    // A fresh unit in another directory.
    let mut fresh = Unit::new();
    fresh
        .appliance(&["restore", &archive_arg])
        .ok("restore into a blank unit");
    let config = fs::read_to_string(fresh.data_dir().join("homeserver.toml")).expect("config");
    assert!(
        config.contains(
            &*fresh
                .data_dir()
                .canonicalize()
                .expect("dir")
                .to_string_lossy()
        ),
        "restore must point the config at the new data dir:\n{config}"
    );
    assert_eq!(mode(&fresh.data_dir().join("signing.key")), 0o600);
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
    let (media_server, media_id) = content_uri
        .strip_prefix("mxc://")
        .and_then(|rest| rest.split_once('/'))
        .expect("an mxc URI");
    let download = carol.request(
        "GET",
        &format!(
            "/_matrix/client/v1/media/download/{}/{}",
            tests::enc(media_server),
            tests::enc(media_id)
        ),
        &[],
        None,
    );
    assert_eq!(
        download.status,
        200,
        "media after restore: {:?}",
        download.json()
    );
    assert!(download.body == photo, "media changed in the restore");
    assert_eq!(
        download.header("content-disposition"),
        Some("attachment; filename=\"photo.bin\"")
    );
    fresh
        .appliance(&["status"])
        .ok("the restored unit is healthy");
}

#[test]
fn damaged_backups_are_refused_and_the_current_data_kept() {
    let mut unit = Unit::new();
    unit.setup("unit-a.test");
    let archive = unit.root().join("unit-a.backup");
    let archive_arg = archive.to_string_lossy().into_owned();
    // Offline backup, with the server stopped.
    unit.appliance(&["backup", "--out", &archive_arg])
        .ok("offline backup");
    let key = read_bytes(&unit.data_dir().join("signing.key"));
    let db = read_bytes(&unit.data_dir().join("homeserver.db"));

    // One byte flipped in the middle: a checksum mismatch.
    let mut bytes = read_bytes(&archive);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    let flipped = unit.root().join("flipped.backup");
    fs::write(&flipped, &bytes).expect("write");
    let run = unit.appliance(&["restore", &flipped.to_string_lossy(), "--yes"]);
    run.expect(REJECTED, "flipped byte");
    assert!(run.stderr.contains("Nothing was changed"), "{run}");

    // Cut short: truncated.
    let original = read_bytes(&archive);
    let truncated = unit.root().join("truncated.backup");
    fs::write(&truncated, &original[..original.len() * 2 / 3]).expect("write");
    unit.appliance(&["restore", &truncated.to_string_lossy(), "--yes"])
        .expect(REJECTED, "truncated");
    // Not a backup at all.
    unit.appliance(&[
        "restore",
        &repo_file("README.md").to_string_lossy(),
        "--yes",
    ])
    .expect(REJECTED, "not a backup");

    assert_eq!(read_bytes(&unit.data_dir().join("signing.key")), key);
    assert_eq!(read_bytes(&unit.data_dir().join("homeserver.db")), db);
    let leftovers: Vec<String> = fs::read_dir(unit.data_dir())
        .expect("data dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    unit.start();
    unit.login_ok("admin", STRONG_PASSWORD);
    unit.stop();

    // Another unit's backup is refused unless asked for.
    let other = Unit::new();
    other.setup("unit-b.test");
    let run = other.appliance(&["restore", &archive_arg, "--yes"]);
    run.expect(WRONG_STATE, "another unit's backup");
    assert!(run.stderr.contains("--force-other-unit"), "{run}");
    other
        .appliance(&["restore", &archive_arg, "--yes", "--force-other-unit"])
        .ok("forced restore of another unit");
    let name: serde_json::Value =
        serde_json::from_slice(&read_bytes(&other.data_dir().join("provisioning.json")))
            .expect("JSON");
    assert_eq!(name["server_name"], "unit-a.test");
}

/// Every entry under `dir` (recursively, symlinks not followed) whose owner or group is not
/// `uid`:`uid`.
fn owned_otherwise(dir: &Path, uid: u32) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut wrong = Vec::new();
    for entry in fs::read_dir(dir).expect("list the data dir") {
        let path = entry.expect("entry").path();
        let meta = fs::symlink_metadata(&path).expect("inspect");
        if (meta.uid(), meta.gid()) != (uid, uid) {
            wrong.push(format!(
                "{} ({}:{})",
                path.display(),
                meta.uid(),
                meta.gid()
            ));
        }
        if meta.is_dir() {
            wrong.extend(owned_otherwise(&path, uid));
        }
    }
    wrong
}

/// On a unit the console runs `appliance` as root while the homeserver runs as its own user
/// (`outpost`, uid 850): a restore must leave nothing the homeserver cannot open. Needs root
/// (to hand a directory to another user); elsewhere it has nothing to check.
#[test]
fn restore_as_root_gives_the_restored_files_the_data_directorys_owner() {
    const HOMESERVER_UID: u32 = 850;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: a restore cannot produce files of another user; nothing to check");
        return;
    }
    let source = Unit::new();
    source.setup("unit-a.test");
    let archive = source.root().join("unit-a.backup");
    let archive_arg = archive.to_string_lossy().into_owned();
    source
        .appliance(&["backup", "--out", &archive_arg])
        .ok("offline backup");

    // Restored into a fresh data dir owned by the homeserver's user, and over an existing unit
    // whose files that user owns.
    for over_existing in [false, true] {
        let target = Unit::new();
        if over_existing {
            target.setup("unit-a.test");
        } else {
            fs::create_dir_all(target.data_dir()).expect("data dir");
        }
        let chown = std::process::Command::new("chown")
            .args(["-R", &format!("{HOMESERVER_UID}:{HOMESERVER_UID}")])
            .arg(target.data_dir())
            .status()
            .expect("run chown");
        assert!(chown.success(), "chown of the data dir");
        target
            .appliance(&["restore", &archive_arg, "--yes"])
            .ok("restore as root");
        for name in ["homeserver.db", "signing.key", "homeserver.toml"] {
            assert!(target.data_dir().join(name).exists(), "{name} not restored");
        }
        let wrong = owned_otherwise(&target.data_dir(), HOMESERVER_UID);
        assert!(
            wrong.is_empty(),
            "restored files not owned by the data dir's owner (over an existing unit: \
             {over_existing}): {wrong:?}"
        );
    }
}

#[test]
fn factory_reset_needs_the_server_name_and_a_stopped_server() {
    let mut unit = Unit::new();
    unit.setup("unit-a.test");
    unit.appliance(&["factory-reset"])
        .expect(USAGE, "no terminal, no --confirm");
    unit.appliance(&["factory-reset", "--confirm", "unit-b.test"])
        .expect(WRONG_STATE, "wrong name");
    assert!(unit.data_dir().join("signing.key").is_file());
    unit.start();
    unit.appliance(&["factory-reset", "--confirm", "unit-a.test"])
        .expect(WRONG_STATE, "server running");
    unit.stop();
    unit.appliance(&["factory-reset", "--confirm", "unit-a.test"])
        .ok("factory reset");
    assert!(nothing_written(&unit), "the data dir must be empty");
    // A blank unit can be set up again.
    unit.setup("unit-c.test");
}

#[test]
fn man_page_and_completions_come_from_the_same_definitions() {
    let unit = Unit::new();
    let man = unit.appliance(&["man"]).ok("man").stdout.clone();
    assert!(
        man.contains(".TH appliance") && man.contains("factory\\-reset"),
        "{man}"
    );
    let pages = unit.root().join("man");
    unit.appliance(&["man", "--out-dir", &pages.to_string_lossy()])
        .ok("man --out-dir");
    assert!(pages.join("appliance-user-create.1").is_file());
    let bash = unit
        .appliance(&["completions", "bash"])
        .ok("completions")
        .stdout
        .clone();
    assert!(bash.contains("reset-password"), "{bash}");
    let help = unit.appliance(&["--help"]).ok("help").stdout.clone();
    assert!(help.contains("Exit codes"), "{help}");
}
