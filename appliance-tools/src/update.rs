//! `appliance update apply` and `appliance update status`: offline A/B updates of the root
//! filesystem through RAUC, from a bundle on a USB stick.
//!
//! The unit has two root slots (`a` and `b`, each a squashfs with its dm-verity hash partition,
//! booted through its own unified kernel image). `apply` checks the bundle (RAUC verifies its
//! signature against the unit's keyring, which holds only the vendor's certificate), its
//! compatible string and its version (no downgrade unless asked), every block of its payload
//! against the signed dm-verity root hash (a damaged bundle is refused before anything is
//! written, not halfway through the install), takes a backup of the data with the ordinary
//! backup code, and has RAUC write the inactive slot. RAUC's post-install
//! handler puts that slot's kernel image on the ESP with a boot counter of 3 tries; the new
//! slot boots on trial at the next restart and is blessed (its counter dropped) once the
//! homeserver reports READY. A slot that fails its tries falls back to the other by itself
//! (systemd-boot's boot assessment; see `usr/libexec/outpost/esp-uki` in the layer).
//!
//! The database: the new homeserver migrates its schema at its first start, before it reports
//! READY, so a slot can only be judged good after the migration. An older homeserver refuses a
//! newer schema, so after a rollback from a slot that got as far as migrating, the old slot's
//! homeserver could not start. Hence the pre-update backup is restored on rollback, by itself:
//! `apply` writes a pending-update record (which slot it ran from, the backup) next to the
//! backup once RAUC has installed, and `update settle`, run at every boot before the homeserver
//! (outpost-update-settle.service) and after the booted slot is blessed
//! (outpost-mark-good.service), decides:
//! - booted the slot the update was applied from: the new slot failed its tries (or never came
//!   up). Restore the backup, record the rollback, drop the record. The signal is "the old slot
//!   booted while an update is pending", not RAUC's `bad` state (which stays until the next
//!   install, so it cannot say "once") nor the database's `user_version` (a failed release may
//!   have changed data without a schema bump, and a restore interrupted by a power cut must be
//!   retried although the schema already looks old again). The record is removed only after
//!   the restore completed, so a power cut during it repeats it at the next boot; afterwards
//!   nothing is left to repeat.
//! - booted the new slot, blessed good: the update is done; drop the record.
//!
//! Whatever the unit acknowledged after the backup (in the new slot, or in the old one between
//! `apply` and the restart) is lost by the restore; `update status` says so.
//! Nothing here runs RAUC's install steps itself: this module only checks, backs up, calls
//! `rauc`, reads its state, and restores with the ordinary restore code.

use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::base::console::Console;
use crate::base::exit::{Exit, Failure};
use crate::cli::{BackupArgs, RestoreArgs, UpdateApplyArgs, UpdateCommand};
use crate::unit::Unit;

/// RAUC's configuration on the unit: the compatible string every bundle must carry.
const RAUC_SYSTEM_CONF: &str = "/etc/rauc/system.conf";
/// The vendor's update certificate: the only signer whose bundles this unit accepts.
const RAUC_KEYRING: &str = "/etc/rauc/keyring.pem";
/// The running root's os-release; `IMAGE_VERSION` is the version of the booted slot.
const OS_RELEASE: &str = "/etc/os-release";
/// The bootloader backend (our script): also answers `describe SLOT` with good/pending/bad.
const BOOTLOADER_BACKEND: &str = "/usr/libexec/outpost/rauc-bootloader";
/// Where a USB stick given with `--device` is mounted (read-only) while its bundle is used.
const MEDIA_MOUNT: &str = "/run/outpost-update-media";
/// File name prefix of the pre-update backups (in the directory next to the data directory).
const BACKUP_PREFIX: &str = "pre-update-";
/// The update installed but not yet blessed (in the backup directory): what `settle` needs to
/// undo it. outpost-update-settle.service runs only when this file exists.
const PENDING_FILE: &str = "pending-update.json";
/// The last automatic rollback (in the backup directory), shown by `update status` until the
/// next `apply`.
const ROLLBACK_FILE: &str = "last-rollback.json";
/// SQLite's database header: `user_version` is the big-endian 32-bit number at this offset.
const SQLITE_USER_VERSION_AT: u64 = 60;

/// An update installed into the other slot and not yet blessed there.
#[derive(Debug, Serialize, Deserialize)]
struct PendingUpdate {
    /// The slot `apply` ran in: booting it again means the new slot failed.
    from_slot: String,
    /// Its version.
    from_version: String,
    /// The slot written.
    to_slot: String,
    /// The version installed there.
    to_version: String,
    /// The pre-update backup.
    backup: PathBuf,
    /// When the backup was taken (ms since the epoch).
    backup_ms: i64,
    /// The database's schema version at the backup, when readable.
    schema_version: Option<i64>,
}

/// What an automatic rollback did.
#[derive(Debug, Serialize, Deserialize)]
struct Rollback {
    /// The release that failed its boot tries.
    failed_version: String,
    /// The release running again.
    running_version: String,
    /// The backup restored.
    backup: PathBuf,
    /// When that backup was taken (ms since the epoch).
    backup_ms: i64,
    /// When it was restored (ms since the epoch).
    restored_ms: i64,
    /// The schema version of the backup's database, and of the database the failed release
    /// left (informational: the restore does not depend on it).
    schema_at_backup: Option<i64>,
    schema_found: Option<i64>,
}

/// Runs `appliance update …`.
///
/// `backup` is the `backup` command's own code, handed in by `main` (a command never imports
/// another), so the pre-update backup is an ordinary backup.
/// `restore` likewise is the `restore` command's code: a rollback restores the pre-update
/// backup exactly as an admin would.
pub fn run(
    unit: &Unit,
    command: &UpdateCommand,
    backup: &dyn Fn(&Unit, &BackupArgs) -> Result<Exit, Failure>,
    restore: &dyn Fn(&Unit, &RestoreArgs) -> Result<Exit, Failure>,
) -> Result<Exit, Failure> {
    match command {
        UpdateCommand::Apply(args) => apply(unit, args, backup),
        UpdateCommand::Status { json } => status(unit, *json),
        UpdateCommand::Settle => settle(unit, restore),
    }
}

/// Milliseconds since the epoch, now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The root slot booted now (`a` or `b`), from the bootloader backend (the kernel command
/// line's `outpost.slot=`).
fn booted_slot() -> Result<String, Failure> {
    let out = Command::new(BOOTLOADER_BACKEND)
        .arg("get-current")
        .stdin(Stdio::null())
        .output()
        .map_err(|err| Failure::broke(format!("cannot run {BOOTLOADER_BACKEND}: {err}")))?;
    let slot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || !matches!(slot.as_str(), "a" | "b") {
        return Err(Failure::broke(format!(
            "cannot tell which slot is booted: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(slot)
}

/// `good`, `pending` or `bad` for a slot (the bootloader backend's `describe`), `unknown` when
/// it cannot tell.
fn slot_state(slot: &str) -> String {
    Command::new(BOOTLOADER_BACKEND)
        .args(["describe", slot])
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The database's schema version as its file header says (`PRAGMA user_version` of a
/// checkpointed database), None when unreadable. Read from the bytes rather than through
/// SQLite: opening the database as root here could leave root-owned `-wal`/`-shm` files the
/// homeserver cannot open. Only reported, never acted on.
fn schema_version(unit: &Unit) -> Option<i64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(unit.dir().join(homeserver::store::DB_FILE)).ok()?;
    file.seek(SeekFrom::Start(SQLITE_USER_VERSION_AT)).ok()?;
    let mut bytes = [0u8; 4];
    file.read_exact(&mut bytes).ok()?;
    Some(i64::from(i32::from_be_bytes(bytes)))
}

/// A JSON record of the backup directory, None when there is none.
fn read_record<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, Failure> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| Failure::broke(format!("{} is malformed: {err}", path.display()))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(Failure::io("cannot read", path, err)),
    }
}

/// Writes a JSON record into the backup directory, durably.
fn write_record<T: Serialize>(path: &Path, record: &T) -> Result<(), Failure> {
    let bytes = serde_json::to_vec_pretty(record).expect("a record serialises");
    crate::unit::replace_file(path, &bytes, 0o600)
}

/// Removes a record, durably (a record that came back after a power cut would repeat a
/// restore).
fn remove_record(path: &Path) -> Result<(), Failure> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(Failure::io("cannot remove", path, err)),
    }
    match path.parent() {
        Some(dir) => crate::unit::sync_dir(dir),
        None => Ok(()),
    }
}

/// `update settle`: after a boot, finish or undo the pending update (see the module header).
fn settle(
    unit: &Unit,
    restore: &dyn Fn(&Unit, &RestoreArgs) -> Result<Exit, Failure>,
) -> Result<Exit, Failure> {
    let dir = backup_dir(unit);
    let pending_path = dir.join(PENDING_FILE);
    let Some(pending) = read_record::<PendingUpdate>(&pending_path)? else {
        println!("No update is pending.");
        return Ok(Exit::Success);
    };
    let booted = booted_slot()?;
    if booted != pending.from_slot {
        let state = slot_state(&booted);
        if state == "good" {
            remove_record(&pending_path)?;
            println!(
                "The update to version {} (slot {booted}) is good; it is complete.",
                pending.to_version
            );
        } else {
            println!(
                "Version {} runs on trial in slot {booted} ({state}).",
                pending.to_version
            );
        }
        return Ok(Exit::Success);
    }
    let backup_time = crate::base::console::format_time_ms(pending.backup_ms);
    let schema_found = schema_version(unit);
    println!(
        "Version {} (slot {}) did not come up within its boot tries; the unit runs version {} \
         again. Restoring the data from the pre-update backup of {backup_time} ({}); anything \
         written after that backup is lost.",
        pending.to_version,
        pending.to_slot,
        pending.from_version,
        pending.backup.display()
    );
    restore(
        unit,
        &RestoreArgs {
            file: pending.backup.clone(),
            passphrase_file: None,
            force_other_unit: false,
            yes: true,
        },
    )?;
    // Restore gave the restored files the data directory's owner (the homeserver's user).
    let record = Rollback {
        failed_version: pending.to_version,
        running_version: pending.from_version,
        backup: pending.backup,
        backup_ms: pending.backup_ms,
        restored_ms: now_ms(),
        schema_at_backup: pending.schema_version,
        schema_found,
    };
    write_record(&dir.join(ROLLBACK_FILE), &record)?;
    remove_record(&pending_path)?;
    println!("{}", rollback_line(&record));
    Ok(Exit::Success)
}

/// One line about an automatic rollback, for the journal and `update status`.
fn rollback_line(record: &Rollback) -> String {
    let schema = |v: Option<i64>| v.map_or_else(|| "unknown".to_owned(), |v| v.to_string());
    format!(
        "rolled back from version {} to {} at {}, data restored from the backup of {} \
         (anything written after that backup is gone; database schema version {} as the \
         failed release left it, {} restored)",
        record.failed_version,
        record.running_version,
        crate::base::console::format_time_ms(record.restored_ms),
        crate::base::console::format_time_ms(record.backup_ms),
        schema(record.schema_found),
        schema(record.schema_at_backup)
    )
}

/// The directory pre-update backups go to: beside the data directory, on the data partition
/// (the root is read-only), and outside what a restore replaces.
fn backup_dir(unit: &Unit) -> PathBuf {
    unit.dir()
        .parent()
        .unwrap_or_else(|| Path::new("/"))
        .join("update-backups")
}

/// A mounted USB stick, unmounted when dropped.
struct Media {
    dir: PathBuf,
}

impl Media {
    fn mount(device: &Path) -> Result<Self, Failure> {
        let dir = PathBuf::from(MEDIA_MOUNT);
        std::fs::create_dir_all(&dir).map_err(|err| Failure::io("cannot create", &dir, err))?;
        let out = Command::new("mount")
            .args(["-o", "ro,nosuid,nodev,noexec"])
            .arg(device)
            .arg(&dir)
            .output()
            .map_err(|err| Failure::broke(format!("cannot run mount: {err}")))?;
        if !out.status.success() {
            return Err(Failure::rejected(format!(
                "cannot mount {}: {}",
                device.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(Self { dir })
    }
}

impl Drop for Media {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// What `rauc info` says about a bundle whose signature it verified.
#[derive(Debug)]
struct BundleInfo {
    compatible: String,
    version: String,
}

/// Has RAUC check the bundle's signature against the unit's keyring and read its manifest.
fn bundle_info(file: &Path) -> Result<BundleInfo, Failure> {
    // The keyring is named explicitly: without one, `rauc info` skips the signature check.
    if !Path::new(RAUC_KEYRING).is_file() {
        return Err(Failure::state(format!(
            "this unit has no update certificate ({RAUC_KEYRING}); it cannot check bundles"
        )));
    }
    let out = Command::new("rauc")
        .args(["info", "--output-format=json"])
        .arg(format!("--keyring={RAUC_KEYRING}"))
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| Failure::broke(format!("cannot run rauc: {err}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let reason = stderr
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("rauc refused it")
            .trim();
        return Err(Failure::rejected(format!(
            "{} is not a valid update bundle for this unit (bad or foreign signature, damaged \
             or truncated file): {reason}; nothing was changed",
            file.display()
        )));
    }
    let info: Value = serde_json::from_slice(&out.stdout)
        .map_err(|err| Failure::broke(format!("rauc info printed no JSON: {err}")))?;
    let field = |name: &str| info.get(name).and_then(Value::as_str).map(str::to_owned);
    Ok(BundleInfo {
        compatible: field("compatible").unwrap_or_default(),
        version: field("version").unwrap_or_default(),
    })
}

/// Block size of RAUC's verity bundles: payload, hash tree and their dm-verity blocks.
const VERITY_BLOCK: u64 = 4096;

/// Checks every byte of a verity bundle's payload against the hash tree whose root hash (and
/// salt and size) the signed manifest names, before anything is written. `rauc info` checks
/// only the signature over the manifest, and `rauc install` reads the payload through
/// dm-verity as it copies it: a damaged or tampered block would stop the install halfway,
/// with the inactive slot partly overwritten. (RAUC 1.15's `perform-pre-check` does the same
/// check; the test image's Debian RAUC 1.8 has no such option, so the check is here, for
/// both.) A verity bundle is `payload | hash tree | CMS signature | signature size (u64, big
/// endian)`; `veritysetup verify` reads the whole payload in user space.
fn check_payload(file: &Path) -> Result<(), Failure> {
    let refuse = |why: String| {
        Failure::rejected(format!(
            "{} is not a valid update bundle for this unit: its content does not match its \
             signed manifest ({why}); nothing was changed",
            file.display()
        ))
    };
    let out = Command::new("rauc")
        .arg("info")
        .arg(format!("--keyring={RAUC_KEYRING}"))
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| Failure::broke(format!("cannot run rauc: {err}")))?;
    if !out.status.success() {
        return Err(refuse("rauc info failed on a second read".to_owned()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let verity = |name: &str| {
        text.lines().find_map(|line| {
            line.trim()
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(|value| value.trim().trim_matches('\'').to_owned())
        })
    };
    let hex = |value: &Option<String>| {
        value
            .as_deref()
            .is_some_and(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let (salt, hash) = (verity("Verity Salt"), verity("Verity Hash"));
    let tree_size = verity("Verity Size").and_then(|v| v.parse::<u64>().ok());
    let (Some(salt), Some(hash), Some(tree_size)) = (
        hex(&salt).then_some(salt).flatten(),
        hex(&hash).then_some(hash).flatten(),
        tree_size,
    ) else {
        return Err(refuse("it names no dm-verity hash tree".to_owned()));
    };
    let mut bundle =
        std::fs::File::open(file).map_err(|err| Failure::io("cannot open", file, err))?;
    let size = bundle
        .metadata()
        .map_err(|err| Failure::io("cannot inspect", file, err))?
        .len();
    let mut tail = [0u8; 8];
    {
        use std::io::{Read, Seek, SeekFrom};
        bundle
            .seek(SeekFrom::Start(size.saturating_sub(8)))
            .and_then(|_| bundle.read_exact(&mut tail))
            .map_err(|err| Failure::io("cannot read", file, err))?;
    }
    let payload = size
        .checked_sub(8)
        .and_then(|rest| rest.checked_sub(u64::from_be_bytes(tail)))
        .and_then(|rest| rest.checked_sub(tree_size))
        .filter(|payload| {
            *payload > 0 && payload % VERITY_BLOCK == 0 && tree_size % VERITY_BLOCK == 0
        })
        .ok_or_else(|| refuse("its payload and hash tree do not fit its size".to_owned()))?;
    let out = Command::new("veritysetup")
        .args([
            "verify",
            "--no-superblock",
            "--format=1",
            "--hash=sha256",
            "--data-block-size=4096",
            "--hash-block-size=4096",
        ])
        .arg(format!("--data-blocks={}", payload / VERITY_BLOCK))
        .arg(format!("--hash-offset={payload}"))
        .arg(format!("--salt={salt}"))
        .arg(file)
        .arg(file)
        .arg(&hash)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| Failure::broke(format!("cannot run veritysetup: {err}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let reason = stderr
            .lines()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("veritysetup refused it")
            .trim();
        return Err(refuse(format!("damaged or tampered payload: {reason}")));
    }
    Ok(())
}

/// The value of `key=` in a simple KEY=value file (system.conf's `compatible`, os-release's
/// `IMAGE_VERSION`), quotes removed.
fn key_value(path: &str, key: &str) -> Result<Option<String>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| Failure::io("cannot read", Path::new(path), err))?;
    Ok(text.lines().find_map(|line| {
        line.trim()
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
            .map(|value| value.trim().trim_matches('"').to_owned())
    }))
}

/// Compares two release versions: dot-separated numbers numerically, anything else as text.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |v: &str| -> Vec<String> { v.split('.').map(str::to_owned).collect() };
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(pb.iter()) {
        let order = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if order.is_ne() {
            return order;
        }
    }
    pa.len().cmp(&pb.len())
}

/// The bundle's path: FILE itself, or FILE on the stick mounted from `--device` (a relative
/// path that stays on the stick).
fn bundle_path(args: &UpdateApplyArgs, media: Option<&Media>) -> Result<PathBuf, Failure> {
    let Some(media) = media else {
        return Ok(args.file.clone());
    };
    let relative = args.file.strip_prefix("/").unwrap_or(&args.file);
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(Failure::usage(format!(
            "{} must be a path on the stick, without ..",
            args.file.display()
        )));
    }
    Ok(media.dir.join(relative))
}

fn apply(
    unit: &Unit,
    args: &UpdateApplyArgs,
    backup: &dyn Fn(&Unit, &BackupArgs) -> Result<Exit, Failure>,
) -> Result<Exit, Failure> {
    let media = args.device.as_deref().map(Media::mount).transpose()?;
    let file = bundle_path(args, media.as_ref())?;
    if !file.is_file() {
        return Err(Failure::rejected(format!(
            "{} is not a file; give the update bundle (.raucb)",
            file.display()
        )));
    }

    // 1. Signature and manifest (RAUC, against the unit's keyring), compatibility, version.
    println!("Checking the bundle's signature ...");
    let info = bundle_info(&file)?;
    let compatible = key_value(RAUC_SYSTEM_CONF, "compatible")?.unwrap_or_default();
    if info.compatible != compatible {
        return Err(Failure::rejected(format!(
            "the bundle is for '{}', this unit is '{compatible}'; nothing was changed",
            info.compatible
        )));
    }
    let current = key_value(OS_RELEASE, "IMAGE_VERSION")?.unwrap_or_default();
    let order = compare_versions(&info.version, &current);
    if order.is_le() && !args.allow_downgrade {
        let what = if order.is_eq() {
            "the version running now"
        } else {
            "older than the version running now"
        };
        return Err(Failure::rejected(format!(
            "the bundle's version {} is {what} ({current}); pass --allow-downgrade to install \
             it anyway; nothing was changed",
            info.version
        )));
    }
    println!(
        "Signed update for {compatible}, version {} (running {current}).",
        info.version
    );
    println!("Checking the bundle's content against its signed manifest ...");
    check_payload(&file)?;

    // 2. A backup of the data, with the ordinary backup code, before anything is written.
    let from_slot = booted_slot()?;
    let mut taken: Option<(PathBuf, i64, Option<i64>)> = None;
    if unit.exists() && unit.config_path().is_file() {
        let dir = backup_dir(unit);
        std::fs::create_dir_all(&dir).map_err(|err| Failure::io("cannot create", &dir, err))?;
        let out = dir.join(format!(
            "{BACKUP_PREFIX}{current}-to-{}.outpost-backup",
            info.version
        ));
        println!("Backing up the data to {} ...", out.display());
        let (backup_ms, schema) = (now_ms(), schema_version(unit));
        backup(
            unit,
            &BackupArgs {
                out: out.clone(),
                force: true,
                encrypt: false,
                passphrase_file: None,
            },
        )?;
        // Only the newest pre-update backup is kept: the data partition is small.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name();
                if path != out && name.to_string_lossy().starts_with(BACKUP_PREFIX) {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        taken = Some((out, backup_ms, schema));
    } else {
        println!("The unit is not set up yet: no data to back up.");
    }

    // 3. RAUC writes the inactive slot (its progress goes straight to the console) and marks
    // it to boot next, on trial.
    println!("Installing into the inactive root slot ...");
    let status = Command::new("rauc")
        .arg("install")
        .arg(&file)
        .stdin(Stdio::null())
        .status()
        .map_err(|err| Failure::broke(format!("cannot run rauc: {err}")))?;
    if !status.success() {
        return Err(Failure::broke(
            "RAUC could not install the bundle (see above); the running slot is untouched and \
             the other one was not activated",
        ));
    }
    drop(media);
    // What undoes this update if the new slot fails: written only now that RAUC installed, so
    // a refused or failed install leaves no pending update behind.
    if let Some((backup, backup_ms, schema_version)) = taken {
        let dir = backup_dir(unit);
        remove_record(&dir.join(ROLLBACK_FILE))?;
        write_record(
            &dir.join(PENDING_FILE),
            &PendingUpdate {
                to_slot: if from_slot == "a" { "b" } else { "a" }.to_owned(),
                from_slot,
                from_version: current.clone(),
                to_version: info.version.clone(),
                backup,
                backup_ms,
                schema_version,
            },
        )?;
    }
    println!(
        "Version {} is installed and boots at the next restart, on trial: if its homeserver \
         does not come up within its boot tries the unit returns to version {current} by \
         itself and restores the data from the backup just taken (anything written after it \
         is then lost).",
        info.version
    );
    let reboot = args.reboot
        || (Console::new().is_interactive()
            && Console::new().confirm("Restart now?", false, "--reboot")?);
    if reboot {
        println!("Restarting ...");
        let status = Command::new("systemctl")
            .arg("reboot")
            .status()
            .map_err(|err| Failure::broke(format!("cannot run systemctl reboot: {err}")))?;
        if !status.success() {
            return Err(Failure::broke("systemctl reboot failed; restart the unit"));
        }
    } else {
        println!("Restart the unit to boot it (`appliance update status` shows the slots).");
    }
    Ok(Exit::Success)
}

/// One root slot, as `update status` shows it.
#[derive(Debug, Serialize)]
struct SlotStatus {
    /// `a` or `b`.
    name: String,
    /// The partition it lives on.
    device: String,
    /// The installed version, when known (the factory slot's only while it is booted).
    version: Option<String>,
    /// This slot is running now.
    booted: bool,
    /// This slot boots at the next restart.
    primary: bool,
    /// `good` (booted fine), `pending` (on trial: boot counter running), `bad` (failed its
    /// tries, or nothing bootable installed).
    state: String,
}

fn status(unit: &Unit, json: bool) -> Result<Exit, Failure> {
    let out = Command::new("rauc")
        .args(["status", "--detailed", "--output-format=json"])
        .stdin(Stdio::null())
        .output()
        .map_err(|err| Failure::broke(format!("cannot run rauc: {err}")))?;
    if !out.status.success() {
        return Err(Failure::broke(format!(
            "rauc status failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let rauc: Value = serde_json::from_slice(&out.stdout)
        .map_err(|err| Failure::broke(format!("rauc status printed no JSON: {err}")))?;
    let booted = rauc.get("booted").and_then(Value::as_str).unwrap_or("");
    let primary_slot = rauc
        .get("boot_primary")
        .and_then(Value::as_str)
        .unwrap_or("");
    let current = key_value(OS_RELEASE, "IMAGE_VERSION")?;
    let mut slots = Vec::new();
    for entry in rauc
        .get("slots")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some((id, slot)) = entry.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        if slot.get("class").and_then(Value::as_str) != Some("rootfs") {
            continue;
        }
        let name = slot
            .get("bootname")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let is_booted = name == booted;
        let installed = slot
            .pointer("/slot_status/bundle/version")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let version = if is_booted {
            current.clone().or(installed)
        } else {
            installed
        };
        let state = slot_state(&name);
        slots.push(SlotStatus {
            device: slot
                .get("device")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            version,
            booted: is_booted,
            primary: id == primary_slot,
            state,
            name,
        });
    }
    let backups: Vec<PathBuf> = std::fs::read_dir(backup_dir(unit))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(BACKUP_PREFIX))
                })
                .collect()
        })
        .unwrap_or_default();
    let dir = backup_dir(unit);
    let pending = read_record::<PendingUpdate>(&dir.join(PENDING_FILE))?;
    let rollback = read_record::<Rollback>(&dir.join(ROLLBACK_FILE))?;
    if json {
        let doc = serde_json::json!({
            "slots": slots,
            "pre_update_backups": backups,
            "pending_update": pending,
            "last_rollback": rollback,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("a JSON value serialises")
        );
        return Ok(Exit::Success);
    }
    for slot in &slots {
        let mut notes = Vec::new();
        if slot.booted {
            notes.push("booted");
        }
        if slot.primary {
            notes.push("boots next");
        }
        println!(
            "slot {} ({}): version {}, {}{}",
            slot.name,
            slot.device,
            slot.version.as_deref().unwrap_or("unknown (factory image)"),
            slot.state,
            if notes.is_empty() {
                String::new()
            } else {
                format!(", {}", notes.join(", "))
            }
        );
    }
    for backup in &backups {
        println!("pre-update backup: {}", backup.display());
    }
    if let Some(pending) = &pending {
        println!(
            "update pending: version {} in slot {}; if it fails its boot tries the unit returns \
             to version {} and restores the backup of {} by itself (anything written after it \
             is then lost)",
            pending.to_version,
            pending.to_slot,
            pending.from_version,
            crate::base::console::format_time_ms(pending.backup_ms)
        );
    }
    if let Some(rollback) = &rollback {
        println!("{}", rollback_line(rollback));
    }
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::compare_versions;
    use std::cmp::Ordering;

    #[test]
    fn versions_compare_numerically_by_part() {
        assert_eq!(compare_versions("1.10", "1.9"), Ordering::Greater);
        assert_eq!(compare_versions("100", "99"), Ordering::Greater);
        assert_eq!(compare_versions("1.2", "1.2"), Ordering::Equal);
        assert_eq!(compare_versions("1.2", "1.2.1"), Ordering::Less);
        assert_eq!(compare_versions("2026.1", "2025.12"), Ordering::Greater);
    }
}
