//! `appliance backup` and `appliance restore`: the whole unit in one file, and back.
//!
//! A backup is an uncompressed tar archive. Its first entry, `manifest.json`, names the unit
//! and lists every other entry with its size and SHA-256; then come the database (a consistent
//! copy made with SQLite's backup API, by the running server through its admin socket or by this
//! tool when the server is stopped), the signing key, the TLS files, the config, the
//! provisioning file and any media. The file is written under a temporary name and renamed
//! when complete, so a file with the final name is a finished backup.
//!
//! Restore reads the manifest first, refuses another unit's backup unless told, extracts into a
//! staging directory while checking every checksum, checks the database, and only then swaps
//! the staged files in (keeping the old ones aside until the swap has fully succeeded, and
//! putting them back if it fails). A damaged or truncated backup changes nothing.
//!
//! With `--encrypt` the same tar is written through [`crate::base::crypt`]: a passphrase-sealed
//! container (Argon2id, then ChaCha20-Poly1305 in the STREAM construction) that restore
//! recognises by its magic and opens before reading the manifest. Everything else (the
//! manifest, the checksums, progress, the staging and the swap) is the same for both. The
//! passphrase is asked at the console or read from `--passphrase-file`; it is never written
//! anywhere and never appears on the command line. A plain backup holds the unit's private
//! keys in the clear: keep its media physically safe. (The `age` crate, the obvious ready-made
//! format, pulls about 90 crates, a localisation stack among them, into a sealed appliance;
//! the container here uses only crates the workspace already builds.)

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use homeserver::admin::wire::{BackupOutcome, BackupRequest};
use homeserver::matrix::keys::SigningKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::base::admin_client::AdminClient;
use crate::base::console::{self, Console};
use crate::base::crypt::{self, CryptError, Decryptor, Encryptor, Header};
use crate::base::exit::{Exit, Failure};
use crate::base::progress::{Progress, human_bytes};
use crate::cli::{BackupArgs, RestoreArgs};
use crate::unit::{self, START_HINT, ServerState, Unit};

/// The `format` field of every manifest.
const FORMAT: &str = "outpost-backup";
/// The manifest version this tool writes and reads.
const FORMAT_VERSION: u32 = 1;
/// The manifest's name; always the archive's first entry.
const MANIFEST: &str = "manifest.json";
/// Largest manifest accepted (it lists file names and hashes; media may make it long).
const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;
/// Restore's staging directory inside the data dir.
const RESTORE_STAGING: &str = ".restore-staging";
/// Where restore keeps the replaced files until the swap has succeeded.
const PRE_RESTORE: &str = ".pre-restore";
/// Shortest passphrase accepted for a new encrypted backup: Argon2id slows each guess, but a
/// stolen stick can be attacked offline for as long as the thief likes.
const MIN_PASSPHRASE_CHARS: usize = 12;
/// Passphrase attempts at the console before restore gives up.
const PASSPHRASE_ATTEMPTS: u32 = 3;

/// What a backup holds; the archive's first entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always `outpost-backup`.
    pub format: String,
    /// Manifest version.
    pub format_version: u32,
    /// The unit the backup is of.
    pub server_name: String,
    /// The signing key ID at backup time.
    pub signing_key_id: Option<String>,
    /// When the backup was taken, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// The tool and version that wrote it.
    pub created_by: String,
    /// Every other entry of the archive.
    pub files: Vec<ManifestFile>,
}

/// One file of a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Path relative to the data dir, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hash.update(&buf[..written]);
        Ok(written)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that reports how many bytes it has read.
struct Counting<'a, R> {
    inner: R,
    progress: &'a mut Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.progress.add(read as u64);
        Ok(read)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 and size of a file.
fn hash_file(path: &Path, progress: &mut Progress) -> Result<(String, u64), Failure> {
    let file = File::open(path).map_err(|err| Failure::io("cannot read", path, err))?;
    let mut hashing = Hashing {
        inner: std::io::sink(),
        hash: Sha256::new(),
    };
    let size = std::io::copy(
        &mut Counting {
            inner: BufReader::new(file),
            progress,
        },
        &mut hashing,
    )
    .map_err(|err| Failure::io("cannot read", path, err))?;
    Ok((hex(&hashing.hash.finalize()), size))
}

/// Every regular file under `dir`, as (`prefix/relative` path, absolute path), sorted.
fn walk(dir: &Path, prefix: &str) -> Result<Vec<(String, PathBuf)>, Failure> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(err) => return Err(Failure::io("cannot list", dir, err)),
    };
    for entry in entries {
        let entry = entry.map_err(|err| Failure::io("cannot list", dir, err))?;
        let name = format!("{prefix}/{}", entry.file_name().to_string_lossy());
        let kind = entry
            .file_type()
            .map_err(|err| Failure::io("cannot inspect", &entry.path(), err))?;
        if kind.is_dir() {
            found.extend(walk(&entry.path(), &name)?);
        } else if kind.is_file() {
            found.push((name, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Removes a temporary file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `appliance backup`.
pub fn backup(unit: &Unit, args: &BackupArgs) -> Result<Exit, Failure> {
    let config = unit.config()?;
    let data_dir = unit::ensure_dir(unit.dir())?;
    let unit = Unit::new(data_dir.clone());
    if args.out.exists() && !args.force {
        return Err(Failure::rejected(format!(
            "{} already exists; choose another name or pass --force to replace it",
            args.out.display()
        )));
    }
    if args.out.is_dir() {
        return Err(Failure::rejected(format!(
            "{} is a directory; give a file name such as {}/outpost.backup",
            args.out.display(),
            args.out.display()
        )));
    }
    let passphrase = new_passphrase(args)?;
    let copy = TempFile(data_dir.join(format!(".backup-{}.db", std::process::id())));
    let _ = std::fs::remove_file(&copy.0);
    copy_database(&unit, &copy.0)?;
    let health = homeserver::service::admin::database_health(&copy.0)
        .map_err(|err| Failure::broke(format!("cannot check the database copy: {err}")))?;
    if health.quick_check != "ok" {
        return Err(Failure::broke(format!(
            "the database copy failed its integrity check ({}); the live database may be damaged: \
             see `appliance status`",
            health.quick_check.lines().next().unwrap_or_default()
        )));
    }

    let mut files: Vec<(String, PathBuf)> =
        vec![(homeserver::store::DB_FILE.to_owned(), copy.0.clone())];
    for name in [
        unit::CONFIG_FILE,
        unit::PROVISIONING_FILE,
        homeserver::SIGNING_KEY_FILE,
    ] {
        let path = unit.path(name);
        if path.is_file() {
            files.push((name.to_owned(), path));
        }
    }
    files.extend(walk(&unit.path(unit::TLS_DIR), unit::TLS_DIR)?);
    files.extend(walk(&unit.path(unit::MEDIA_DIR), unit::MEDIA_DIR)?);
    files.extend(walk(&unit.path(unit::PEERS_DIR), unit::PEERS_DIR)?);
    files.extend(walk(
        &unit.path(unit::APPSERVICES_DIR),
        unit::APPSERVICES_DIR,
    )?);

    let total: u64 = files
        .iter()
        .map(|(_, path)| std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0))
        .sum();
    let mut progress = Progress::new("Computing checksums", total);
    let mut entries = Vec::new();
    for (name, path) in &files {
        let (sha256, size) = hash_file(path, &mut progress)?;
        entries.push(ManifestFile {
            path: name.clone(),
            size,
            sha256,
        });
    }
    progress.finish();
    let signing_key_id = std::fs::read_to_string(unit.key_path())
        .ok()
        .and_then(|text| SigningKey::parse(&text).ok())
        .map(|key| key.key_id());
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        format_version: FORMAT_VERSION,
        server_name: config.server_name.to_string(),
        signing_key_id,
        created_ms: homeserver::util::now_ms(),
        created_by: format!("appliance {}", env!("CARGO_PKG_VERSION")),
        files: entries,
    };

    let partial = PathBuf::from(format!("{}.partial", args.out.display()));
    let archive_sha = write_archive(&partial, &manifest, &files, total, passphrase.as_deref())
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&partial);
        })?;
    std::fs::rename(&partial, &args.out)
        .map_err(|err| Failure::io("cannot rename the finished backup to", &args.out, err))?;
    let size = std::fs::metadata(&args.out)
        .map(|meta| meta.len())
        .unwrap_or(0);
    let safety = if passphrase.is_some() {
        "It is encrypted: it cannot be restored without the passphrase, so keep the passphrase \
         somewhere safe (and apart from the backup)."
    } else {
        "It holds the unit's private keys: keep it somewhere safe."
    };
    println!(
        "{} of {} written to {} ({}, {} files).\nSHA-256 of the backup file: {archive_sha}\n\
         {safety}",
        if passphrase.is_some() {
            "Encrypted backup"
        } else {
            "Backup"
        },
        manifest.server_name,
        args.out.display(),
        human_bytes(size),
        manifest.files.len()
    );
    Ok(Exit::Success)
}

/// The passphrase for a new encrypted backup, or `None` without `--encrypt`: from
/// `--passphrase-file`, or typed twice at the console. Short passphrases are refused.
fn new_passphrase(args: &BackupArgs) -> Result<Option<String>, Failure> {
    if !args.encrypt {
        return Ok(None);
    }
    let check = |passphrase: &str| {
        let chars = passphrase.chars().count();
        if chars < MIN_PASSPHRASE_CHARS {
            Err(format!(
                "a backup passphrase needs at least {MIN_PASSPHRASE_CHARS} characters (this one \
                 has {chars}); several unrelated words are easy to type and hard to guess"
            ))
        } else {
            Ok(())
        }
    };
    if let Some(path) = &args.passphrase_file {
        let passphrase = console::read_secret_file(path)?;
        check(&passphrase)
            .map_err(|reason| Failure::rejected(format!("{reason}. Nothing was written.")))?;
        return Ok(Some(passphrase));
    }
    let console = Console::new();
    loop {
        let first = console.secret("Passphrase for the backup: ", "--passphrase-file")?;
        if let Err(reason) = check(&first) {
            eprintln!("  {reason}.");
            continue;
        }
        let second = console.secret("Type it again: ", "--passphrase-file")?;
        if first == second {
            return Ok(Some(first));
        }
        eprintln!("  The two passphrases differ; please start again.");
    }
}

/// Where the archive's bytes go: straight into the hashing file writer, or through the
/// encrypting container first. The SHA-256 is always of the bytes in the file.
enum Sink {
    Plain(Hashing<BufWriter<File>>),
    Sealed(Encryptor<Hashing<BufWriter<File>>>),
}

impl Sink {
    /// Ends the stream (for an encrypted one, writes its last chunk).
    fn finish(self) -> std::io::Result<Hashing<BufWriter<File>>> {
        match self {
            Self::Plain(inner) => Ok(inner),
            Self::Sealed(sealer) => sealer.finish(),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(inner) => inner.write(buf),
            Self::Sealed(sealer) => sealer.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(inner) => inner.flush(),
            Self::Sealed(sealer) => sealer.flush(),
        }
    }
}

/// Copies the live database into `dest`: through the running server, or directly when it is
/// stopped. Shows progress by watching the copy grow.
fn copy_database(unit: &Unit, dest: &Path) -> Result<(), Failure> {
    let db = unit.db_path();
    let estimate = [db.clone(), PathBuf::from(format!("{}-wal", db.display()))]
        .iter()
        .map(|path| std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0))
        .sum();
    let mut progress = Progress::new("Copying the database", estimate);
    match unit.server_state()? {
        ServerState::Running => {
            let client = AdminClient::new(unit.socket_path());
            let request = BackupRequest {
                path: dest.to_owned(),
            };
            let worker =
                std::thread::spawn(move || client.post::<_, BackupOutcome>("/v1/backup", &request));
            while !worker.is_finished() {
                progress.set(std::fs::metadata(dest).map(|meta| meta.len()).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(50));
            }
            worker
                .join()
                .map_err(|_| Failure::broke("the backup request thread panicked"))??;
        }
        ServerState::Stopped => {
            if !db.is_file() {
                return Err(Failure::broke(format!(
                    "the database {} is missing",
                    db.display()
                )));
            }
            homeserver::store::admin::backup(&db, dest, |step| {
                progress.set(step.copied_pages.saturating_mul(4096));
            })
            .map_err(|err| Failure::broke(format!("copying the database: {err}")))?;
        }
    }
    progress.finish();
    Ok(())
}

/// Writes the archive: the manifest, then every file; sealed with `passphrase` when one is
/// given. Returns the SHA-256 of the file written.
fn write_archive(
    path: &Path,
    manifest: &Manifest,
    files: &[(String, PathBuf)],
    total: u64,
    passphrase: Option<&str>,
) -> Result<String, Failure> {
    let fail = |err: std::io::Error| Failure::io("cannot write", path, err);
    let file = File::create(path).map_err(fail)?;
    let hashing = Hashing {
        inner: BufWriter::new(file),
        hash: Sha256::new(),
    };
    let sink = match passphrase {
        None => Sink::Plain(hashing),
        Some(passphrase) => {
            eprintln!("Deriving the encryption key from the passphrase…");
            Sink::Sealed(
                Encryptor::new(hashing, passphrase, crypt::KDF_PARAMS).map_err(
                    |err| match err {
                        CryptError::Io(err) => fail(err),
                        other => Failure::broke(other.to_string()),
                    },
                )?,
            )
        }
    };
    let mut builder = tar::Builder::new(sink);
    let now = u64::try_from(manifest.created_ms / 1000).unwrap_or(0);
    let manifest_json = serde_json::to_vec_pretty(manifest)
        .map_err(|err| Failure::broke(format!("encoding the manifest: {err}")))?;
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest_json.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(now);
    builder
        .append_data(&mut header, MANIFEST, manifest_json.as_slice())
        .map_err(fail)?;
    let mut progress = Progress::new("Writing the backup", total);
    for (name, source) in files {
        let file = File::open(source).map_err(|err| Failure::io("cannot read", source, err))?;
        let meta = file
            .metadata()
            .map_err(|err| Failure::io("cannot read", source, err))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(meta.len());
        header.set_mode(meta.permissions().mode() & 0o777);
        header.set_mtime(now);
        builder
            .append_data(
                &mut header,
                name,
                Counting {
                    inner: BufReader::new(file),
                    progress: &mut progress,
                },
            )
            .map_err(fail)?;
    }
    let mut hashing = builder.into_inner().and_then(Sink::finish).map_err(fail)?;
    hashing.flush().map_err(fail)?;
    let sha = hex(&hashing.hash.finalize());
    let file = hashing
        .inner
        .into_inner()
        .map_err(|err| fail(err.into_error()))?;
    file.sync_all().map_err(fail)?;
    progress.finish();
    Ok(sha)
}

/// Whether `path` (from an archive) is a plain relative path that stays inside the data dir.
fn is_safe(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|component| matches!(component, Component::Normal(_)))
}

/// Runs `appliance restore`.
pub fn restore(unit: &Unit, args: &RestoreArgs) -> Result<Exit, Failure> {
    unit.require_stopped("restoring a backup")?;
    // What the decryptor found wrong, if anything: a clearer reason than the tar reader's.
    let fault: Rc<RefCell<Option<String>>> = Rc::default();
    let damaged = |detail: String| {
        let detail = fault.borrow().clone().unwrap_or(detail);
        Failure::rejected(format!(
            "{} is not a usable backup: {detail}. Nothing was changed.",
            args.file.display()
        ))
    };
    let file = File::open(&args.file).map_err(|err| Failure::io("cannot open", &args.file, err))?;
    let mut source = Source::open(BufReader::new(file), args, Rc::clone(&fault), &damaged)?;
    let mut archive = tar::Archive::new(&mut source);
    let mut entries = archive
        .entries()
        .map_err(|err| damaged(format!("cannot read it as an archive ({err})")))?;

    // 1. The manifest, before anything else.
    let manifest: Manifest = {
        let mut first = entries
            .next()
            .ok_or_else(|| damaged("it is empty".to_owned()))?
            .map_err(|err| damaged(format!("cannot read it as an archive ({err})")))?;
        let name = first
            .path()
            .map(|path| path.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name != MANIFEST || first.size() > MAX_MANIFEST_BYTES {
            return Err(damaged(
                "it does not start with an Outpost backup manifest".to_owned(),
            ));
        }
        let mut text = Vec::new();
        first
            .read_to_end(&mut text)
            .map_err(|err| damaged(format!("the manifest is unreadable ({err})")))?;
        serde_json::from_slice(&text)
            .map_err(|err| damaged(format!("the manifest is malformed ({err})")))?
    };
    if manifest.format != FORMAT || manifest.format_version != FORMAT_VERSION {
        return Err(damaged(format!(
            "it is a {} version {} file; this tool reads {FORMAT} version {FORMAT_VERSION}",
            manifest.format, manifest.format_version
        )));
    }
    let expected: BTreeMap<&str, &ManifestFile> = manifest
        .files
        .iter()
        .map(|file| (file.path.as_str(), file))
        .collect();
    if expected.len() != manifest.files.len()
        || !expected.keys().all(|path| is_safe(path))
        || !expected.contains_key(homeserver::store::DB_FILE)
        || !expected.contains_key(unit::CONFIG_FILE)
    {
        return Err(damaged("its manifest lists unusable paths".to_owned()));
    }

    // 2. Whose backup is it?
    let current = unit.server_name();
    if let Some(current) = &current
        && *current != manifest.server_name
        && !args.force_other_unit
    {
        return Err(Failure::state(format!(
            "this backup is of unit {}, but this unit is {current}. Nothing was changed. To \
             replace {current} with {} anyway, pass --force-other-unit.",
            manifest.server_name, manifest.server_name
        )));
    }
    eprintln!(
        "Backup of {} taken {} by {} ({} files).",
        manifest.server_name,
        crate::base::console::format_time_ms(manifest.created_ms),
        manifest.created_by,
        manifest.files.len()
    );

    // 3. Extract into staging, checking every file against the manifest.
    let data_dir = unit::ensure_dir(unit.dir())?;
    let unit = Unit::new(data_dir.clone());
    let pre_restore = data_dir.join(PRE_RESTORE);
    if pre_restore.exists() {
        return Err(Failure::state(format!(
            "{} holds the data an interrupted restore set aside; move it somewhere safe (or \
             delete it if the unit works) and try again",
            pre_restore.display()
        )));
    }
    let staging = data_dir.join(RESTORE_STAGING);
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(|err| Failure::io("cannot remove the old", &staging, err))?;
    }
    std::fs::create_dir(&staging).map_err(|err| Failure::io("cannot create", &staging, err))?;
    // The archive's borrow of `source` ends here, so the end of the stream can be checked.
    let extracted = extract(&mut entries, &expected, &staging, &damaged);
    let staged = extracted
        .and_then(|()| {
            source
                .finish()
                .map_err(|err| damaged(format!("it does not end properly ({err})")))
        })
        .and_then(|()| check_staged(&staging, &data_dir).map_err(&damaged));
    if let Err(err) = staged {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(err);
    }

    // 4. Confirm, then swap.
    if current.is_some() && !args.yes {
        let confirmed = Console::new().confirm(
            &format!(
                "Replace all current data of {} with this backup?",
                current.as_deref().unwrap_or_default()
            ),
            false,
            "--yes",
        );
        if !matches!(confirmed, Ok(true)) {
            let _ = std::fs::remove_dir_all(&staging);
            confirmed?;
            return Err(Failure::state("restore cancelled; nothing was changed"));
        }
    }
    // This tool runs as root at the unit's console, the homeserver as its own user: the
    // restored files get the data directory's owner before they take the old ones' place.
    if let Err(err) = own_tree(&staging, &data_dir) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(err);
    }
    swap(&data_dir, &staging, &pre_restore)?;
    unit::restrict_dir(&data_dir)?;
    // The firewall admits the restored unit's peers, and no others.
    let cards = crate::unit::allowlist::allowed_cards(&unit, &manifest.server_name)?;
    for note in crate::unit::firewall::rebuild(&unit, &cards)? {
        eprintln!("{note}");
    }
    println!(
        "Restored {} into {}. Start the homeserver with `{START_HINT}`.",
        manifest.server_name,
        unit.dir().display()
    );
    Ok(Exit::Success)
}

/// Where restore reads the archive from: the file itself, or the container that decrypts it.
enum Source {
    Plain(BufReader<File>),
    Sealed {
        reader: Decryptor<BufReader<File>>,
        /// Shared with restore's error messages.
        fault: Rc<RefCell<Option<String>>>,
    },
}

impl Source {
    /// Looks at the file's first bytes; for an encrypted backup reads its header and opens it
    /// with the passphrase (before anything is written anywhere).
    fn open(
        mut reader: BufReader<File>,
        args: &RestoreArgs,
        fault: Rc<RefCell<Option<String>>>,
        damaged: &dyn Fn(String) -> Failure,
    ) -> Result<Self, Failure> {
        let start = reader
            .fill_buf()
            .map_err(|err| Failure::io("cannot read", &args.file, err))?;
        if !crypt::is_encrypted(start) {
            if args.passphrase_file.is_some() {
                eprintln!(
                    "{} is not encrypted; --passphrase-file is not needed.",
                    args.file.display()
                );
            }
            return Ok(Self::Plain(reader));
        }
        let header = Header::read(&mut reader).map_err(|err| match err {
            CryptError::Io(err) => Failure::io("cannot read", &args.file, err),
            other => damaged(other.to_string()),
        })?;
        let opened = open_header(&header, args)?;
        Ok(Self::Sealed {
            reader: Decryptor::new(reader, opened),
            fault,
        })
    }

    /// Reads to the end: for an encrypted backup this checks that the chunk marked last is
    /// there and authentic (the tar reader stops at the archive's end marker, before it).
    fn finish(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(_) => Ok(()),
            Self::Sealed { .. } => std::io::copy(self, &mut std::io::sink()).map(|_| ()),
        }
    }
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(reader) => reader.read(buf),
            Self::Sealed { reader, fault } => reader.read(buf).inspect_err(|_| {
                if let Some(failure) = reader.failure() {
                    fault.borrow_mut().get_or_insert_with(|| failure.to_owned());
                }
            }),
        }
    }
}

/// Derives the key of an encrypted backup from the passphrase in `--passphrase-file`, or asked
/// at the console (a few attempts). A wrong passphrase is [`Exit::WrongPassphrase`].
fn open_header(header: &Header, args: &RestoreArgs) -> Result<crypt::Opened, Failure> {
    let kdf = header.kdf();
    let attempt = |passphrase: &str| {
        eprintln!(
            "Deriving the key from the passphrase (Argon2id, {} MiB, {} passes)…",
            kdf.memory_kib / 1024,
            kdf.passes
        );
        header.open(passphrase)
    };
    let unexpected =
        |err: CryptError| Failure::broke(format!("cannot open {}: {err}", args.file.display()));
    let wrong = || {
        Failure::new(
            Exit::WrongPassphrase,
            format!(
                "the passphrase does not open this backup ({}). Nothing was changed.",
                args.file.display()
            ),
        )
    };
    if let Some(path) = &args.passphrase_file {
        let passphrase = console::read_secret_file(path)?;
        return match attempt(&passphrase) {
            Ok(opened) => Ok(opened),
            Err(CryptError::WrongPassphrase) => Err(wrong()),
            Err(err) => Err(unexpected(err)),
        };
    }
    let console = Console::new();
    eprintln!("{} is an encrypted backup.", args.file.display());
    for left in (0..PASSPHRASE_ATTEMPTS).rev() {
        let passphrase = console.secret("Passphrase of the backup: ", "--passphrase-file")?;
        match attempt(&passphrase) {
            Ok(opened) => return Ok(opened),
            Err(CryptError::WrongPassphrase) if left > 0 => {
                eprintln!("  That passphrase does not open this backup; try again.");
            }
            Err(CryptError::WrongPassphrase) => {}
            Err(err) => return Err(unexpected(err)),
        }
    }
    Err(wrong())
}

/// Extracts every entry after the manifest into `staging`, verifying sizes and checksums.
fn extract<R: Read>(
    entries: &mut tar::Entries<'_, R>,
    expected: &BTreeMap<&str, &ManifestFile>,
    staging: &Path,
    damaged: &dyn Fn(String) -> Failure,
) -> Result<(), Failure> {
    let total = expected.values().map(|file| file.size).sum();
    let mut progress = Progress::new("Checking and unpacking the backup", total);
    let mut seen = std::collections::BTreeSet::new();
    for entry in entries {
        let mut entry =
            entry.map_err(|err| damaged(format!("it is truncated or damaged ({err})")))?;
        let name = entry
            .path()
            .map(|path| path.to_string_lossy().into_owned())
            .map_err(|err| damaged(format!("an entry has a bad name ({err})")))?;
        let Some(file) = expected.get(name.as_str()) else {
            return Err(damaged(format!(
                "it holds {name:?}, which its manifest does not list"
            )));
        };
        if !entry.header().entry_type().is_file() || !seen.insert(name.clone()) {
            return Err(damaged(format!(
                "its entry {name:?} is not a single plain file"
            )));
        }
        let dest = staging.join(&name);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|err| Failure::io("cannot create", parent, err))?;
        }
        // Appservice registrations hold their two tokens.
        let secret = name == homeserver::SIGNING_KEY_FILE
            || name.ends_with(".key")
            || name.ends_with("key.pem")
            || name.starts_with(&format!("{}/", unit::APPSERVICES_DIR));
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .map_err(|err| Failure::io("cannot create", &dest, err))?;
        let mode = if secret { 0o600 } else { 0o640 };
        out.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|err| Failure::io("cannot set the mode of", &dest, err))?;
        let mut hashing = Hashing {
            inner: BufWriter::new(out),
            hash: Sha256::new(),
        };
        let size = std::io::copy(
            &mut Counting {
                inner: &mut entry,
                progress: &mut progress,
            },
            &mut hashing,
        )
        .map_err(|err| damaged(format!("{name} is truncated or unreadable ({err})")))?;
        hashing
            .flush()
            .map_err(|err| Failure::io("cannot write", &dest, err))?;
        if size != file.size || hex(&hashing.hash.finalize()) != file.sha256 {
            return Err(damaged(format!(
                "{name} does not match its checksum in the manifest (the file is damaged)"
            )));
        }
        let out = hashing
            .inner
            .into_inner()
            .map_err(|err| Failure::io("cannot write", &dest, err.into_error()))?;
        out.sync_all()
            .map_err(|err| Failure::io("cannot write", &dest, err))?;
    }
    if let Some(missing) = expected.keys().find(|path| !seen.contains(**path)) {
        return Err(damaged(format!(
            "{missing} is missing (the file is probably truncated)"
        )));
    }
    progress.finish();
    Ok(())
}

/// Checks what was extracted: the database opens and passes its integrity check, the signing
/// key parses, and the config loads once pointed at this data dir.
fn check_staged(staging: &Path, data_dir: &Path) -> Result<(), String> {
    let db = staging.join(homeserver::store::DB_FILE);
    let health = homeserver::service::admin::database_health(&db)
        .map_err(|err| format!("its database cannot be opened ({err})"))?;
    if health.quick_check != "ok" {
        return Err(format!(
            "its database fails the integrity check ({})",
            health.quick_check.lines().next().unwrap_or_default()
        ));
    }
    let key = staging.join(homeserver::SIGNING_KEY_FILE);
    if key.exists() {
        let text = std::fs::read_to_string(&key).map_err(|err| err.to_string())?;
        SigningKey::parse(&text).map_err(|err| format!("its signing key is unusable ({err})"))?;
    }
    let config_path = staging.join(unit::CONFIG_FILE);
    let config = std::fs::read_to_string(&config_path).map_err(|err| err.to_string())?;
    let config = crate::unit::provisioning::replace_data_dir(&config, data_dir)
        .map_err(|err| format!("its config cannot be moved here ({err})"))?;
    std::fs::write(&config_path, config).map_err(|err| err.to_string())?;
    homeserver::config::Config::from_file(&config_path)
        .map_err(|err| format!("its config does not load ({err})"))?;
    Ok(())
}

/// Gives everything under `dir` (not `dir` itself, and no symlink) the owner and group of
/// `like`. Restore and `update settle` (which restores through [`restore`]) run as root on the
/// unit; without this the homeserver's user could not open the restored database and keys.
fn own_tree(dir: &Path, like: &Path) -> Result<(), Failure> {
    let entries = std::fs::read_dir(dir).map_err(|err| Failure::io("cannot list", dir, err))?;
    for entry in entries {
        let path = entry
            .map_err(|err| Failure::io("cannot list", dir, err))?
            .path();
        let kind = std::fs::symlink_metadata(&path)
            .map_err(|err| Failure::io("cannot inspect", &path, err))?
            .file_type();
        if kind.is_symlink() {
            continue;
        }
        unit::match_owner(&path, like)?;
        if kind.is_dir() {
            own_tree(&path, like)?;
        }
    }
    Ok(())
}

/// Moves the unit's current files aside, the staged ones in, and on any failure puts
/// everything back as it was.
fn swap(data_dir: &Path, staging: &Path, pre_restore: &Path) -> Result<(), Failure> {
    std::fs::create_dir(pre_restore)
        .map_err(|err| Failure::io("cannot create", pre_restore, err))?;
    let mut moved_out: Vec<&str> = Vec::new();
    let mut moved_in: Vec<String> = Vec::new();
    let result: Result<(), Failure> = (|| {
        for name in unit::REPLACED_ON_RESTORE {
            let from = data_dir.join(name);
            if from.symlink_metadata().is_ok() {
                std::fs::rename(&from, pre_restore.join(name))
                    .map_err(|err| Failure::io("cannot set aside", &from, err))?;
                moved_out.push(name);
            }
        }
        let staged =
            std::fs::read_dir(staging).map_err(|err| Failure::io("cannot list", staging, err))?;
        let mut names: Vec<String> = staged
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        // The config last, as in setup: its presence marks a complete unit.
        names.sort_by_key(|name| name == unit::CONFIG_FILE);
        for name in names {
            let to = data_dir.join(&name);
            std::fs::rename(staging.join(&name), &to)
                .map_err(|err| Failure::io("cannot move into place", &to, err))?;
            moved_in.push(name);
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(pre_restore);
            let _ = std::fs::remove_dir_all(staging);
            Ok(())
        }
        Err(err) => {
            for name in &moved_in {
                let _ = std::fs::rename(data_dir.join(name), staging.join(name));
            }
            let mut restored = true;
            for name in &moved_out {
                restored &= std::fs::rename(pre_restore.join(name), data_dir.join(name)).is_ok();
            }
            if restored {
                let _ = std::fs::remove_dir(pre_restore);
                let _ = std::fs::remove_dir_all(staging);
                Err(Failure::broke(format!(
                    "{err}; the previous data was put back unchanged"
                )))
            } else {
                Err(Failure::broke(format!(
                    "{err}; the previous data could not all be put back: it is in {}",
                    pre_restore.display()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in provisioning/ (which check-examples.py validates against the schema) is
    /// what this type reads, so the schema and the code describe the same file.
    #[test]
    fn the_shipped_example_manifest_parses() {
        let text = include_str!("../../provisioning/backup-manifest.example.json");
        let manifest: Manifest = serde_json::from_str(text).expect("the example parses");
        assert_eq!(manifest.format, FORMAT);
        assert_eq!(manifest.format_version, FORMAT_VERSION);
        assert!(manifest.files.iter().all(|file| is_safe(&file.path)));
        let paths: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        assert!(paths.contains(&homeserver::store::DB_FILE), "{paths:?}");
        assert!(paths.contains(&unit::CONFIG_FILE), "{paths:?}");
    }

    #[test]
    fn the_manifest_type_refuses_unknown_keys_and_negative_sizes() {
        for text in [
            include_str!("../../provisioning/invalid/backup-manifest/unknown-key.json"),
            include_str!("../../provisioning/invalid/backup-manifest/negative-size.json"),
        ] {
            assert!(serde_json::from_str::<Manifest>(text).is_err(), "{text}");
        }
    }
}
