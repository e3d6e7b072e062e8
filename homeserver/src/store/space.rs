//! Free space on the data partition: the watermark below which the unit refuses writes, and
//! the reserve file that makes room for a checkpoint when the disk fills anyway.
//!
//! A full disk must never cost an acknowledged event, and must not leave the write-ahead log
//! holding its space for good (a checkpoint needs room to copy pages into the database file).
//! So writes stop while free space is still above zero: [`SpaceGuard::check`] is asked before
//! every write and answers from a `statvfs` at most [`RECHECK`] old, so the cost per write is
//! an atomic load. Reads and `/sync` never ask. When space comes back the next check lets
//! writes through again, without a restart.
//!
//! If the disk fills despite the watermark (another process, a burst of media), SQLite answers
//! `SQLITE_FULL`; [`SpaceGuard::trip`] then turns writes off at once, and the checkpointer
//! deletes the reserve file (`<data_dir>/.space-reserve`, made at start) so its checkpoint can
//! copy the log into the database and truncate it. The reserve is made again once free space
//! is back above the watermark.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::Error;

/// The reserve file inside the data dir.
pub const RESERVE_FILE: &str = ".space-reserve";

/// How old a free-space measurement may be before a write measures again.
pub const RECHECK: Duration = Duration::from_millis(500);

/// The watermark when none is configured: this, or a tenth of the partition if smaller.
pub const DEFAULT_MIN_FREE: u64 = 256 * 1024 * 1024;
/// The reserve when none is configured: this, or a fortieth of the partition if smaller.
pub const DEFAULT_RESERVE: u64 = 64 * 1024 * 1024;

/// Free-space policy for one data directory.
#[derive(Debug, Clone)]
pub struct SpacePolicy {
    /// Below this many free bytes the unit refuses writes; `None`: [`DEFAULT_MIN_FREE`] scaled
    /// down to a tenth of a smaller partition.
    pub min_free_bytes: Option<u64>,
    /// Size of the reserve file, 0 for none; `None`: [`DEFAULT_RESERVE`] scaled down to a
    /// fortieth of a smaller partition.
    pub reserve_bytes: Option<u64>,
    /// The `admin_contact` URI sent with `M_RESOURCE_LIMIT_EXCEEDED`.
    pub admin_contact: String,
}

impl SpacePolicy {
    /// The policy the `[storage]` section of the configuration sets.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            min_free_bytes: config.storage.min_free_bytes,
            reserve_bytes: config.storage.reserve_bytes,
            admin_contact: config.storage.admin_contact.clone().unwrap_or_else(|| {
                let host = config.server_name.host();
                format!("mailto:admin@{host}")
            }),
        }
    }
}

/// What the guard last measured, for the admin status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceState {
    /// Bytes free for the service (statvfs `f_bavail`).
    pub free_bytes: u64,
    /// Size of the filesystem.
    pub total_bytes: u64,
    /// The watermark.
    pub min_free_bytes: u64,
    /// Whether writes are refused now.
    pub read_only: bool,
}

/// The free-space watermark of the data partition, measured lazily and shared by every write.
pub struct SpaceGuard {
    dir: PathBuf,
    policy: SpacePolicy,
    read_only: AtomicBool,
    free: AtomicU64,
    total: AtomicU64,
    measured: Mutex<Option<Instant>>,
}

impl SpaceGuard {
    /// A guard for the filesystem holding `dir`; measures once now.
    pub fn new(dir: &Path, policy: SpacePolicy) -> Self {
        let guard = Self {
            dir: dir.to_owned(),
            policy,
            read_only: AtomicBool::new(false),
            free: AtomicU64::new(u64::MAX),
            total: AtomicU64::new(0),
            measured: Mutex::new(None),
        };
        guard.measure();
        guard
    }

    /// `Ok` when writes may go ahead; the refusal, `M_RESOURCE_LIMIT_EXCEEDED`, when free space
    /// is under the watermark. Measures again when the last measurement is older than
    /// [`RECHECK`].
    pub fn check(&self) -> Result<(), Error> {
        let stale = self
            .measured
            .lock()
            .map(|at| at.is_none_or(|at| at.elapsed() >= RECHECK))
            .unwrap_or(true);
        if stale {
            self.measure();
        }
        if self.read_only.load(Ordering::Acquire) {
            return Err(self.refusal());
        }
        Ok(())
    }

    /// Measures free space now and updates the read-only flag; returns the new state.
    pub fn measure(&self) -> SpaceState {
        if let Ok(mut at) = self.measured.lock() {
            *at = Some(Instant::now());
        }
        match statvfs(&self.dir) {
            Ok((free, total)) => {
                self.free.store(free, Ordering::Release);
                self.total.store(total, Ordering::Release);
                let low = free < self.min_free_for(total);
                let was = self.read_only.swap(low, Ordering::AcqRel);
                if low && !was {
                    tracing::error!(
                        free_bytes = free,
                        min_free_bytes = self.min_free_for(total),
                        "disk nearly full: refusing writes until space is freed"
                    );
                } else if was && !low {
                    tracing::warn!(free_bytes = free, "disk space is back: accepting writes");
                }
            }
            Err(err) => tracing::warn!(error = %err, dir = %self.dir.display(), "statvfs failed"),
        }
        self.state()
    }

    /// The last measurement.
    pub fn state(&self) -> SpaceState {
        SpaceState {
            free_bytes: self.free.load(Ordering::Acquire),
            total_bytes: self.total.load(Ordering::Acquire),
            min_free_bytes: self.min_free_for(self.total.load(Ordering::Acquire)),
            read_only: self.read_only.load(Ordering::Acquire),
        }
    }

    /// Turns writes off at once after the disk answered "full" (`SQLITE_FULL`, `ENOSPC`); the
    /// next measurement turns them on again if space is back by then.
    pub fn trip(&self) {
        if !self.read_only.swap(true, Ordering::AcqRel) {
            tracing::error!("the disk is full: refusing writes until space is freed");
        }
        if let Ok(mut at) = self.measured.lock() {
            *at = Some(Instant::now());
        }
    }

    /// The error a refused write gets. `M_RESOURCE_LIMIT_EXCEEDED` is the spec's code for "the
    /// homeserver has reached a resource limit imposed on it ... too much memory or disk
    /// space", and it must carry `admin_contact`.
    pub fn refusal(&self) -> Error {
        Error::ResourceLimit {
            admin_contact: self.policy.admin_contact.clone(),
            message: "This server's disk is nearly full, so it accepts no new messages or \
                      changes until its administrator frees space; reading and syncing still \
                      work, and nothing already sent is lost"
                .to_owned(),
        }
    }

    /// Makes the reserve file when it is missing and there is room for it above the watermark.
    /// Blocking (allocates the file's blocks).
    pub fn ensure_reserve(&self) {
        let total = self.total.load(Ordering::Acquire);
        let size = self
            .policy
            .reserve_bytes
            .unwrap_or_else(|| DEFAULT_RESERVE.min(total / 40));
        let path = self.dir.join(RESERVE_FILE);
        if size == 0 || path.exists() {
            return;
        }
        let free = self.free.load(Ordering::Acquire);
        if free < self.min_free_for(total).saturating_add(size) {
            return;
        }
        let made = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|file| {
                let len = i64::try_from(size).unwrap_or(i64::MAX);
                nix::fcntl::posix_fallocate(&file, 0, len).map_err(std::io::Error::from)?;
                file.sync_all()
            });
        match made {
            Ok(()) => tracing::info!(bytes = size, "made the disk space reserve file"),
            Err(err) => {
                let _ = std::fs::remove_file(&path);
                tracing::warn!(error = %err, "cannot make the disk space reserve file");
            }
        }
    }

    /// The watermark on a filesystem of `total` bytes (0 when not yet measured).
    fn min_free_for(&self, total: u64) -> u64 {
        self.policy.min_free_bytes.unwrap_or_else(|| {
            if total == 0 {
                DEFAULT_MIN_FREE
            } else {
                DEFAULT_MIN_FREE.min(total / 10)
            }
        })
    }

    /// Deletes the reserve file so a checkpoint has room; true if there was one.
    pub fn release_reserve(&self) -> bool {
        match std::fs::remove_file(self.dir.join(RESERVE_FILE)) {
            Ok(()) => {
                tracing::warn!("deleted the disk space reserve file to make room for a checkpoint");
                true
            }
            Err(_) => false,
        }
    }
}

pub use crate::util::is_disk_full as is_full;

/// `(available, total)` bytes of the filesystem holding `dir`.
// statvfs's field types are u64 on x86-64 but narrower on other targets.
#[allow(clippy::useless_conversion)]
fn statvfs(dir: &Path) -> nix::Result<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(dir)?;
    let fragment = u64::from(stat.fragment_size());
    Ok((
        u64::from(stat.blocks_available()).saturating_mul(fragment),
        u64::from(stat.blocks()).saturating_mul(fragment),
    ))
}
