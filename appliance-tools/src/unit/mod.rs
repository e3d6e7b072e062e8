//! A unit on disk: the data directory and the files that make it up, whether the homeserver is
//! running, and erasing it.
//!
//! Everything of a unit lives in one directory (the data partition in the image): the
//! homeserver config, the provisioning file, the signing key, the TLS CA and certificate, the
//! database and media. One directory is what backup copies, restore replaces and factory reset
//! erases.
//!
//! The layer between [`crate::base`] and the commands: the unit's files and what is kept in
//! them — the config, the provisioning file ([`provisioning`]), the allow-list of peer cards
//! ([`allowlist`]) and the firewall sets that follow it ([`firewall`]), the registered
//! appservices ([`appservices`]), the TLS identity, and the database opened while the server
//! is stopped ([`offline`]). It imports [`crate::base`] only, never a command module.

use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use homeserver::config::Config;

use self::provisioning::Provisioning;
use crate::base::exit::Failure;

pub mod allowlist;
pub mod appservices;
pub mod client_cert;
pub mod firewall;
pub mod offline;
pub mod provisioning;

/// The TLS files in [`TLS_DIR`]: the homeserver's one implementation names them.
pub use homeserver::transport::tls::{CA_CERT, CERT, KEY};

/// The homeserver config file inside the data dir.
pub const CONFIG_FILE: &str = "homeserver.toml";
/// The declarative provisioning file inside the data dir.
pub const PROVISIONING_FILE: &str = "provisioning.json";
/// The TLS directory inside the data dir.
pub const TLS_DIR: &str = "tls";
/// The media directory inside the data dir.
pub const MEDIA_DIR: &str = "media";
/// The federation allow-list (imported peer cards) inside the data dir.
pub const PEERS_DIR: &str = "peers";
/// The application-service registrations inside the data dir (the homeserver's one name).
pub use homeserver::service::appservice::APPSERVICES_DIR;

/// Entries whose presence means a unit (or part of one) is set up here.
const UNIT_MARKERS: &[&str] = &[
    CONFIG_FILE,
    PROVISIONING_FILE,
    homeserver::SIGNING_KEY_FILE,
    homeserver::store::DB_FILE,
];

/// Everything restore replaces: the unit's files plus the database's WAL and shared-memory
/// files (a stale WAL next to a restored database would be replayed into it).
pub const REPLACED_ON_RESTORE: &[&str] = &[
    CONFIG_FILE,
    PROVISIONING_FILE,
    homeserver::SIGNING_KEY_FILE,
    TLS_DIR,
    MEDIA_DIR,
    PEERS_DIR,
    APPSERVICES_DIR,
    "homeserver.db",
    "homeserver.db-wal",
    "homeserver.db-shm",
];

/// The command-line tool's shared systemd hint, so every message says the same thing.
pub const START_HINT: &str = "systemctl start homeserver";
/// How to stop the service.
pub const STOP_HINT: &str = "systemctl stop homeserver";

/// Whether the homeserver of a unit is running, judged by its admin socket.
pub enum ServerState {
    /// The admin socket accepts connections.
    Running,
    /// No socket, or a stale one nobody listens on.
    Stopped,
}

/// A unit's data directory.
#[derive(Debug, Clone)]
pub struct Unit {
    dir: PathBuf,
}

impl Unit {
    /// The unit living in `dir` (which may not exist yet).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/<name>`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The homeserver config.
    pub fn config_path(&self) -> PathBuf {
        self.path(CONFIG_FILE)
    }

    /// The provisioning file.
    pub fn provisioning_path(&self) -> PathBuf {
        self.path(PROVISIONING_FILE)
    }

    /// The signing key.
    pub fn key_path(&self) -> PathBuf {
        self.path(homeserver::SIGNING_KEY_FILE)
    }

    /// The database.
    pub fn db_path(&self) -> PathBuf {
        self.path(homeserver::store::DB_FILE)
    }

    /// The folder of peer cards (the federation allow-list).
    pub fn peers_dir(&self) -> PathBuf {
        self.path(PEERS_DIR)
    }

    /// The TLS folder (unit CA and leaf certificate).
    pub fn tls_dir(&self) -> PathBuf {
        self.path(TLS_DIR)
    }

    /// The admin socket.
    pub fn socket_path(&self) -> PathBuf {
        homeserver::admin::socket_path(&self.dir)
    }

    /// Whether any file of a unit is here (a complete unit, or what an interrupted setup left).
    pub fn exists(&self) -> bool {
        UNIT_MARKERS.iter().any(|name| self.path(name).exists())
    }

    /// Asks a running homeserver to re-read what a command just wrote (`POST path` on the
    /// admin socket) and returns its answer; `None` when it is stopped, as it reads the files
    /// when it starts. `written` names what was written ("the allow-list was") for the error.
    pub fn reload_running<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        written: &str,
    ) -> Result<Option<T>, Failure> {
        match self.server_state()? {
            ServerState::Stopped => Ok(None),
            ServerState::Running => crate::base::admin_client::AdminClient::new(self.socket_path())
                .post(path, &serde_json::json!({}))
                .map(Some)
                .map_err(|failure| {
                    Failure::new(
                        failure.code,
                        format!(
                            "{written} written, but the homeserver did not reload ({failure}); \
                             restart it to load the change"
                        ),
                    )
                }),
        }
    }

    /// Whether the homeserver is running, by connecting to its admin socket.
    pub fn server_state(&self) -> Result<ServerState, Failure> {
        let socket = self.socket_path();
        match UnixStream::connect(&socket) {
            Ok(_) => Ok(ServerState::Running),
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::NotFound | ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(ServerState::Stopped)
            }
            Err(err) if err.kind() == ErrorKind::PermissionDenied => Err(Failure::broke(format!(
                "cannot reach the homeserver's admin socket {}: permission denied. Run this as \
                 root or as a member of the admin group.",
                socket.display()
            ))),
            Err(err) => Err(Failure::io("cannot reach the admin socket", &socket, err)),
        }
    }

    /// Fails unless the homeserver is stopped; `doing` completes "stop the homeserver before …".
    pub fn require_stopped(&self, doing: &str) -> Result<(), Failure> {
        match self.server_state()? {
            ServerState::Stopped => Ok(()),
            ServerState::Running => Err(Failure::state(format!(
                "the homeserver is running; stop it before {doing} (`{STOP_HINT}`)"
            ))),
        }
    }

    /// Fails unless a unit is set up here.
    pub fn require_set_up(&self) -> Result<(), Failure> {
        if self.config_path().is_file() {
            Ok(())
        } else {
            Err(Failure::state(format!(
                "no unit is set up in {}: run `appliance setup` first (or pass --data-dir)",
                self.dir.display()
            )))
        }
    }

    /// Loads and validates the homeserver config.
    pub fn config(&self) -> Result<Config, Failure> {
        self.require_set_up()?;
        Config::from_file(&self.config_path()).map_err(|err| Failure::broke(err.to_string()))
    }

    /// Loads the provisioning file, if there is one.
    pub fn provisioning(&self) -> Result<Option<Provisioning>, Failure> {
        let path = self.provisioning_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => Provisioning::parse(&text)
                .map(Some)
                .map_err(|err| Failure::broke(format!("{}: {err}", path.display()))),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(Failure::io("cannot read", &path, err)),
        }
    }

    /// The unit's server name, from the provisioning file or else the config; `None` if
    /// neither can be read.
    pub fn server_name(&self) -> Option<String> {
        if let Ok(Some(provisioning)) = self.provisioning() {
            return Some(provisioning.server_name);
        }
        Config::from_file(&self.config_path())
            .ok()
            .map(|config| config.server_name.to_string())
    }

    /// Erases everything in the data dir except the entries named in `keep` (the directory
    /// itself stays: it may be a mount point).
    pub fn erase(&self, keep: &[&str]) -> Result<(), Failure> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(Failure::io("cannot list", &self.dir, err)),
        };
        for entry in entries {
            let entry = entry.map_err(|err| Failure::io("cannot list", &self.dir, err))?;
            if keep.iter().any(|name| entry.file_name() == *name) {
                continue;
            }
            let path = entry.path();
            let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
            let removed = if is_dir {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(|err| Failure::io("cannot remove", &path, err))?;
        }
        Ok(())
    }
}

/// Creates `dir` (and parents) if needed and returns its absolute, canonical path.
pub fn ensure_dir(dir: &Path) -> Result<PathBuf, Failure> {
    std::fs::create_dir_all(dir).map_err(|err| Failure::io("cannot create", dir, err))?;
    dir.canonicalize()
        .map_err(|err| Failure::io("cannot resolve", dir, err))
}

/// Closes the data dir to other users (at most mode 0750; a stricter mode such as the image's
/// 0700 is kept): the database holds every message, and SQLite creates its files
/// world-readable under the usual umask.
pub fn restrict_dir(dir: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)
        .map_err(|err| Failure::io("cannot inspect", dir, err))?
        .permissions()
        .mode();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o750))
        .map_err(|err| Failure::io("cannot set the mode of", dir, err))
}

/// Writes `bytes` to `path` with `mode`, durably (fsync).
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|err| Failure::io("cannot create", path, err))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|err| Failure::io("cannot write", path, err))
}

/// Replaces `path` with `bytes` atomically: written and fsynced under a temporary name in the
/// same directory (ending in `.tmp`, so no reader that looks for `*.json` picks it up), given
/// the owner of the file it replaces (or of the directory), renamed over `path`, and the
/// directory fsynced. A crash leaves the old file or the new one, never a mix.
pub fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Failure> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = write_file(&tmp, bytes, mode)
        .and_then(|()| match_owner(&tmp, if path.exists() { path } else { dir }))
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .map_err(|err| Failure::io("cannot move into place", path, err))
        });
    if let Err(failure) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(failure);
    }
    sync_dir(dir)
}

/// Gives `path` the owner and group of `like` when they differ. The console runs this tool as
/// root while the homeserver runs as its own user, which must still be able to read the keys,
/// certificates and peer cards the tool writes into the data dir.
pub fn match_owner(path: &Path, like: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    let want = std::fs::metadata(like).map_err(|err| Failure::io("cannot inspect", like, err))?;
    let have =
        std::fs::symlink_metadata(path).map_err(|err| Failure::io("cannot inspect", path, err))?;
    if (have.uid(), have.gid()) == (want.uid(), want.gid()) {
        return Ok(());
    }
    std::os::unix::fs::chown(path, Some(want.uid()), Some(want.gid()))
        .map_err(|err| Failure::io("cannot set the owner of", path, err))
}

/// Replaces the directory `dir` with one holding exactly `files` (name, bytes, mode), as one
/// step: the new directory is built and fsynced beside it (`.NAME.new`), then swapped with the
/// old one by `renameat2(RENAME_EXCHANGE)` (or renamed into place when there is none), and the
/// old one removed. A reader sees either every old file or every new one, never a new key
/// beside an old certificate; a crash leaves one of the two directories in place. Files and
/// directory get the owner of `owner_like` (the homeserver must read them).
pub fn replace_dir(
    dir: &Path,
    files: &[(&str, &[u8], u32)],
    owner_like: &Path,
) -> Result<(), Failure> {
    use std::os::unix::fs::DirBuilderExt;
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = parent.join(format!(".{name}.new"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(|err| Failure::io("cannot remove the old", &staging, err))?;
    }
    let built = (|| {
        std::fs::DirBuilder::new()
            .mode(0o750)
            .create(&staging)
            .map_err(|err| Failure::io("cannot create", &staging, err))?;
        for (file, bytes, mode) in files {
            let path = staging.join(file);
            write_file(&path, bytes, *mode)?;
            match_owner(&path, owner_like)?;
        }
        match_owner(&staging, owner_like)?;
        sync_dir(&staging)?;
        if dir.exists() {
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                &staging,
                nix::fcntl::AT_FDCWD,
                dir,
                nix::fcntl::RenameFlags::RENAME_EXCHANGE,
            )
            .map_err(|err| Failure::io("cannot swap in", dir, err.into()))?;
        } else {
            std::fs::rename(&staging, dir)
                .map_err(|err| Failure::io("cannot move into place", dir, err))?;
        }
        sync_dir(parent)
    })();
    // After a swap the staging name holds the old directory; after a failure, the new one.
    if staging.exists() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    built
}

/// Fsyncs a directory, so a rename or removal in it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), Failure> {
    std::fs::File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|err| Failure::io("cannot sync", dir, err))
}

/// Generates the TLS CA and the leaf for the server name (plus every endpoint host) into
/// `dir`, with the homeserver's own code, so `appliance` and the homeserver make exactly the
/// same files.
pub fn generate_tls(
    dir: &Path,
    server_name: &str,
    endpoint_hosts: &[String],
) -> Result<(), Failure> {
    homeserver::transport::tls::generate(dir, server_name, endpoint_hosts)
        .map_err(|err| Failure::broke(format!("generating the TLS certificate: {err}")))
}
