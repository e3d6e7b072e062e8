//! The media repository's content store: files named by the SHA-256 of their bytes,
//! `<data_dir>/media/<first two hex>/<sha256 hex>`, so identical bytes are stored once.
//!
//! Every file is written under `<data_dir>/.media-staging/` first, fsynced, then renamed into
//! place and its directory fsynced; callers commit the database row naming a file only after
//! that, so a half-written file is never served and a row never points at nothing. Staging is
//! outside `media/` so a backup, which copies `media/` whole, never sees a growing file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Once;

use axum::body::Body;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorCode, Result};
use crate::util::random_string;

/// The content store inside the data dir; `appliance backup` copies it whole.
pub const MEDIA_DIR: &str = "media";
/// Where files are written before they are complete.
const STAGING_DIR: &str = ".media-staging";

/// Staging files left by a previous process (killed mid-upload) are removed once, before this
/// process stages its first file. A fact about the process, hence a static.
static SWEEP_STAGING: Once = Once::new();

/// `M_TOO_LARGE` for an upload over the limit.
pub fn too_large(limit: u64) -> Error {
    Error::new(
        ErrorCode::TooLarge,
        format!("Uploads may be at most {limit} bytes"),
    )
}

/// Maps an I/O failure to an internal error saying what was being done; a full disk becomes
/// [`Error::DiskFull`], which the media service turns into the store's clear refusal.
pub fn io_error(what: &str) -> impl Fn(io::Error) -> Error + '_ {
    move |err| match err.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Error::DiskFull,
        _ => Error::internal(format!("{what}: {err}")),
    }
}

/// Runs blocking file work off the runtime.
pub async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|err| Error::internal(format!("media task failed: {err}")))?
}

/// The store's two directories, resolved from the data dir.
#[derive(Debug, Clone)]
pub struct Dirs {
    media: PathBuf,
    staging: PathBuf,
}

impl Dirs {
    /// The directories of the unit whose data dir is `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            media: data_dir.join(MEDIA_DIR),
            staging: data_dir.join(STAGING_DIR),
        }
    }

    /// The path of the file holding the bytes with this hash. The hash comes from our own
    /// database, but is checked anyway: it becomes a path.
    pub fn content(&self, sha256: &str) -> Result<PathBuf> {
        if sha256.len() != 64
            || !sha256
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(Error::internal(format!(
                "malformed content hash {sha256:?}"
            )));
        }
        Ok(self.media.join(&sha256[..2]).join(sha256))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens the file of a hash; `M_NOT_FOUND` (and an error in the log) if the store lost it.
pub async fn open(dirs: &Dirs, sha256: &str) -> Result<File> {
    let path = dirs.content(sha256)?;
    blocking(move || match File::open(&path) {
        Ok(file) => Ok(file),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            tracing::error!(path = %path.display(), "media file missing from the content store");
            Err(Error::not_found(
                "The content of this media is missing on this server",
            ))
        }
        Err(err) => Err(Error::internal(format!(
            "opening {}: {err}",
            path.display()
        ))),
    })
    .await
}

/// A complete, fsynced file in staging. Dropping it removes the file unless it was moved into
/// the store.
pub struct Staged {
    path: PathBuf,
    sha256: String,
    size: u64,
    placed: bool,
}

impl Staged {
    /// SHA-256 of the bytes, lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.placed {
            // Best effort: a leftover is swept at the next start.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Bytes gathered from the request body before they are written out in one blocking call.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// Most of a refused upload's body that is read and thrown away (see [`discard`]).
const DISCARD_BYTES: usize = 1024 * 1024;

/// Reads and throws away what is left of an upload refused before its body was read, at most
/// [`DISCARD_BYTES`] for at most a second. hyper closes a connection whose request body was not
/// read to the end, and a client that already pooled that connection for its next request
/// then fails it (seen as "peer disconnected"); a small refused body is cheaper to read than
/// to make every client retry.
pub async fn discard(mut body: Body) {
    let drain = async {
        let mut read = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                read = read.saturating_add(data.len());
                if read > DISCARD_BYTES {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
}

/// Streams a request body into a staging file, hashing it on the way; refuses it with
/// `M_TOO_LARGE` as soon as it passes `limit` (whatever `Content-Length` said).
///
/// Each batch of bytes is written by its own short task on the blocking pool, so no thread is
/// held while a slow client sends: slow uploads cannot starve the pool the database reads use.
/// If the upload fails or the client goes away, dropping the [`Staged`] removes the file.
pub async fn receive(dirs: Dirs, mut body: Body, limit: u64) -> Result<Staged> {
    let (file, mut staged) =
        blocking(move || new_staged(&dirs).map_err(io_error("creating a staging file"))).await?;
    let mut writer = (file, Sha256::new());
    let mut batch: Vec<u8> = Vec::with_capacity(WRITE_BATCH_BYTES);
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(err)) => {
                return Err(Error::invalid_param(format!(
                    "The upload could not be read: {err}"
                )));
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        staged.size = staged.size.saturating_add(data.len() as u64);
        if staged.size > limit {
            return Err(too_large(limit));
        }
        batch.extend_from_slice(&data);
        if batch.len() >= WRITE_BATCH_BYTES {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(WRITE_BATCH_BYTES));
            writer = write_batch(writer, full).await?;
        }
    }
    let (file, hasher) = write_batch(writer, batch).await?;
    staged.sha256 = blocking(move || {
        file.sync_all().map_err(io_error("syncing an upload"))?;
        Ok(hex(&hasher.finalize()))
    })
    .await?;
    Ok(staged)
}

/// Appends `batch` to the file and the hash, on the blocking pool.
async fn write_batch(writer: (File, Sha256), batch: Vec<u8>) -> Result<(File, Sha256)> {
    let (mut file, mut hasher) = writer;
    blocking(move || {
        hasher.update(&batch);
        file.write_all(&batch)
            .map_err(io_error("writing an upload"))?;
        Ok((file, hasher))
    })
    .await
}

/// Creates a fresh staging file.
fn new_staged(dirs: &Dirs) -> io::Result<(File, Staged)> {
    fs::create_dir_all(&dirs.staging)?;
    SWEEP_STAGING.call_once(|| {
        if let Ok(entries) = fs::read_dir(&dirs.staging) {
            for entry in entries.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }
    });
    let path = dirs.staging.join(format!("{}.part", random_string(20)));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let staged = Staged {
        path,
        sha256: String::new(),
        size: 0,
        placed: false,
    };
    Ok((file, staged))
}

/// Moves a staged file into the store, durably, or drops it when the store already holds the
/// same bytes.
pub async fn place(dirs: Dirs, staged: Staged) -> Result<()> {
    blocking(move || place_blocking(&dirs, staged)).await
}

fn place_blocking(dirs: &Dirs, mut staged: Staged) -> Result<()> {
    let target = dirs.content(&staged.sha256)?;
    let parent = target
        .parent()
        .ok_or_else(|| Error::internal("a content path has a fan-out directory"))?;
    create_dir_durably(parent).map_err(io_error("creating the media directory"))?;
    if target.is_file() {
        // Deduplicated: the store already holds these bytes under their hash.
        return Ok(());
    }
    fs::rename(&staged.path, &target).map_err(io_error("moving media into place"))?;
    staged.placed = true;
    sync_dir(parent).map_err(io_error("syncing the media directory"))
}

/// Creates `dir` (and missing parents), fsyncing each parent so the new entries survive a
/// power cut along with the files about to be renamed into them.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_durably(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(err) => return Err(err),
    }
    match dir.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes bytes held in memory (a thumbnail, an item fetched from another unit) into the
/// store, durably; returns their hash.
pub async fn store_bytes(dirs: Dirs, bytes: Vec<u8>) -> Result<String> {
    blocking(move || {
        let (mut file, mut staged) =
            new_staged(&dirs).map_err(io_error("creating a staging file"))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(io_error("writing media"))?;
        staged.size = bytes.len() as u64;
        staged.sha256 = hex(&Sha256::digest(&bytes));
        let sha256 = staged.sha256.clone();
        place_blocking(&dirs, staged)?;
        Ok(sha256)
    })
    .await
}

/// Writes bytes to a file that has no name (created in staging and unlinked at once), for a
/// response that is sent but not kept; the space is freed when the file is closed.
pub async fn unnamed(dirs: Dirs, bytes: Vec<u8>) -> Result<File> {
    blocking(move || {
        let (mut file, staged) = new_staged(&dirs).map_err(io_error("creating a staging file"))?;
        file.write_all(&bytes)
            .and_then(|()| file.seek(io::SeekFrom::Start(0)).map(drop))
            .map_err(io_error("writing a thumbnail"))?;
        // Dropping the staged entry unlinks the name; the open file stays readable.
        drop(staged);
        Ok(file)
    })
    .await
}
