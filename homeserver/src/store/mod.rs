//! Storage: the one SQLite database of a unit.
//!
//! Owns opening the file (pragmas, integrity check, migrations), the single writer thread that
//! groups concurrent writes into one transaction ([`writer`]), the pool of read-only
//! connections, and the stream position that tells sync what is new. The per-table modules hold
//! static SQL with numbered parameters; nothing here knows about HTTP or Matrix rules.
//!
//! Storage never calls up into services: the only signal it sends out is the committed stream
//! position, through a `watch` channel that anyone may subscribe to.

pub mod accounts;
pub mod admin;
pub mod backup;
pub mod e2ee;
pub mod events;
pub mod federation;
pub mod media;
mod migrations;
pub mod misc;
pub mod presence;
pub mod push;
pub mod search;
pub mod sliding_sync;
pub mod state;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, watch};

use crate::error::{Error, Result};
pub use writer::WriteTx;

/// The database file name inside the data dir.
pub const DB_FILE: &str = "homeserver.db";

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// SQLite refused (cannot create, locked, not a database…).
    #[error("cannot open database {path}: {source}")]
    Sqlite {
        /// Database path.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// `PRAGMA quick_check` found corruption: starting would risk making it worse.
    #[error(
        "database {path} failed its integrity check ({detail}); restore a backup or run \
         `appliance restore`"
    )]
    Corrupt {
        /// Database path.
        path: PathBuf,
        /// The first problem SQLite reported.
        detail: String,
    },
    /// The database is from a newer Outpost than this binary.
    #[error("database schema version {found} is newer than this homeserver supports ({known})")]
    TooNew {
        /// user_version found in the file.
        found: i64,
        /// The highest migration this binary knows.
        known: i64,
    },
}

/// Handle to the database: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    writer: writer::WriterHandle,
    readers: Mutex<Vec<Connection>>,
    reader_slots: Semaphore,
    path: PathBuf,
    position: watch::Receiver<i64>,
    commits: watch::Receiver<u64>,
}

/// Applies the pragmas every connection needs.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // Referential integrity is enforced by SQLite, not hoped for in code.
    conn.pragma_update(None, "foreign_keys", true)?;
    // A reader waits for a checkpoint or schema lock instead of failing at once.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir`, checks it, migrates it and starts
    /// the writer thread.
    pub fn open(data_dir: &Path, read_connections: usize) -> Result<Self, OpenError> {
        let path = data_dir.join(DB_FILE);
        let sqlite = |source| OpenError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(sqlite)?;
        configure(&conn).map_err(sqlite)?;
        // WAL: readers never block the writer, and one fsync of the log commits a batch.
        conn.pragma_update(None, "journal_mode", "wal")
            .map_err(sqlite)?;
        // FULL: the WAL is fsynced at every commit, so an acknowledged event survives power loss.
        conn.pragma_update(None, "synchronous", "full")
            .map_err(sqlite)?;
        // Checkpoints are scheduled by us (see `checkpoint`), not run inside a client's commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(sqlite)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |row| row.get(0))
            .map_err(sqlite)?;
        if check != "ok" {
            return Err(OpenError::Corrupt {
                path,
                detail: check,
            });
        }
        migrations::apply(&mut conn).map_err(|err| match err {
            migrations::MigrationError::Sqlite(source) => OpenError::Sqlite {
                path: path.clone(),
                source,
            },
            migrations::MigrationError::TooNew { found, known } => {
                OpenError::TooNew { found, known }
            }
        })?;
        let start_pos = events::max_stream_pos(&conn).map_err(sqlite)?;
        let (position_tx, position) = watch::channel(start_pos);
        let (commits_tx, commits) = watch::channel(0);
        let writer = writer::WriterHandle::spawn(
            conn,
            start_pos,
            writer::Signals {
                position: position_tx,
                commits: commits_tx,
            },
        );
        let mut readers = Vec::with_capacity(read_connections);
        for _ in 0..read_connections {
            let reader = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(sqlite)?;
            configure(&reader).map_err(sqlite)?;
            readers.push(reader);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                writer,
                readers: Mutex::new(readers),
                reader_slots: Semaphore::new(read_connections),
                path,
                position,
                commits,
            }),
        })
    }

    /// The database file path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` inside the shared write transaction and returns its result once the
    /// transaction holding it has been committed (durably, `synchronous=FULL`).
    ///
    /// `f` runs on the writer thread inside a savepoint: if it fails, only its own changes are
    /// rolled back and the other writes of the batch still commit.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&mut WriteTx<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.inner.writer.submit(f).await
    }

    /// Runs a read-only query on a pooled connection, off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let _permit = self
            .inner
            .reader_slots
            .acquire()
            .await
            .map_err(|_| Error::internal("read pool closed"))?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let conn = inner
                .readers
                .lock()
                .map_err(|_| Error::internal("read pool poisoned"))?
                .pop()
                .ok_or_else(|| Error::internal("read pool empty despite permit"))?;
            let result = f(&conn);
            if let Ok(mut pool) = inner.readers.lock() {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|err| Error::internal(format!("read task failed: {err}")))?
    }

    /// The newest committed stream position.
    pub fn current_pos(&self) -> i64 {
        *self.inner.position.borrow()
    }

    /// A receiver that changes whenever a write batch that allocated positions commits; the
    /// sync notifier waits on it instead of polling the database.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.inner.position.clone()
    }

    /// A receiver that changes after every commit that queued something for a peer.
    pub fn subscribe_commits(&self) -> watch::Receiver<u64> {
        self.inner.commits.clone()
    }

    /// Runs a WAL checkpoint (TRUNCATE) on the writer connection between batches.
    pub async fn checkpoint(&self) -> Result<()> {
        self.inner.writer.checkpoint().await
    }

    /// Stops the writer after it has committed everything already submitted, and waits for it.
    pub fn shutdown(&self) {
        self.inner.writer.shutdown();
    }
}
