//! Storage: the one SQLite database of a unit.
//!
//! Owns opening the file (pragmas, integrity check, migrations), the single writer thread that
//! groups concurrent writes into one transaction ([`writer`]), the pool of read-only
//! connections, and the stream position that tells sync what is new. The per-table modules hold
//! static SQL with numbered parameters; nothing here knows about HTTP or Matrix rules.
//!
//! Storage never calls up into services: the only signal it sends out is the committed stream
//! position, through a `watch` channel that anyone may subscribe to.
//!
//! It also keeps the write-ahead log bounded: [`Store::checkpoint`] runs on a connection of its
//! own (not the writer's), so a passive checkpoint copies pages while the writer keeps
//! committing, and [`space`] refuses writes before the disk is full.

pub mod accounts;
pub mod admin;
pub mod appservice;
pub mod backup;
pub mod dag;
pub mod delayed_events;
pub mod e2ee;
pub mod events;
pub mod media;
mod migrations;
pub mod misc;
pub mod oauth;
pub mod outbox;
pub mod presence;
pub mod push;
pub mod search;
pub mod sliding_sync;
pub mod space;
pub mod state;
pub mod wake;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, watch};

use crate::error::{Error, Result};
pub use space::{SpaceGuard, SpacePolicy, SpaceState};
use writer::Erased;
pub use writer::WriteTx;

/// Largest size the WAL file is left at after a checkpoint restarts it: a burst may grow the
/// log beyond this, but the space is handed back once the burst has been checkpointed.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// How long any connection waits for a lock another holds before failing with `SQLITE_BUSY`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How a checkpoint treats concurrent work (SQLite's `wal_checkpoint` modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointMode {
    /// Copies what it can without waiting for anyone: never stalls the writer.
    Passive,
    /// Waits (briefly) for the writer and readers, copies everything and truncates the log to
    /// zero bytes: for idle moments and shutdown.
    Truncate,
}

/// What one checkpoint did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointOutcome {
    /// Whether it could not finish because the writer or a reader was busy.
    pub busy: bool,
    /// Frames in the log.
    pub log_frames: i64,
    /// Frames copied into the database so far.
    pub checkpointed_frames: i64,
}

impl CheckpointOutcome {
    /// The one row of `PRAGMA wal_checkpoint(…)`: `(busy, log, checkpointed)`.
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            busy: row.get::<_, i64>(0)? != 0,
            log_frames: row.get(1)?,
            checkpointed_frames: row.get(2)?,
        })
    }
}

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
    checkpointer: Mutex<Connection>,
    space: SpaceGuard,
    written: watch::Receiver<u64>,
    readers: Mutex<Vec<Connection>>,
    reader_slots: Semaphore,
    path: PathBuf,
    position: watch::Receiver<i64>,
    commits: watch::Receiver<u64>,
    wakes: Arc<wake::WakeLog>,
}

/// How much of the database file each reader maps (SQLite reads pages beyond it with pread).
const READER_MMAP_SIZE: i64 = 256 * 1024 * 1024;

/// Applies the pragmas every connection needs.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // Referential integrity is enforced by SQLite, not hoped for in code.
    conn.pragma_update(None, "foreign_keys", true)?;
    // A reader waits for a checkpoint or schema lock instead of failing at once.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Every statement is `prepare_cached`; rusqlite keeps 16 by default, far fewer than one
    // `/sync` or send uses (~160 distinct ones in `store/`), so the LRU evicted each statement
    // before its next use and every call re-parsed its SQL (41% of an initial /sync's CPU).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Without the query planner stability guarantee SQLite (built with STAT4) lets a bound
    // value shape the plan, e.g. `LIMIT ?n`, and then marks the cached statement expired on
    // every new binding of that parameter: each call re-parsed its SQL (7.5% of an initial
    // /sync's CPU). Our plans never depend on the values.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// Prepared statements kept per connection: room for every statement in `store/` (a few KiB
/// each), so none is parsed twice by one connection.
const STATEMENT_CACHE: usize = 512;

impl Store {
    /// Opens the database with no free-space watermark (for offline tools); see
    /// [`Store::open_with`].
    pub fn open(data_dir: &Path, read_connections: usize) -> Result<Self, OpenError> {
        Self::open_with(
            data_dir,
            read_connections,
            SpacePolicy {
                min_free_bytes: Some(0),
                reserve_bytes: Some(0),
                admin_contact: String::new(),
            },
        )
    }

    /// Opens (creating if needed) the database in `data_dir`, checkpoints what a previous run
    /// left in the log, checks it, migrates it and starts the writer thread; writes are refused
    /// while free space is under `space`'s watermark.
    pub fn open_with(
        data_dir: &Path,
        read_connections: usize,
        space: SpacePolicy,
    ) -> Result<Self, OpenError> {
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
        // A log that a burst grew is cut back to this size when a checkpoint restarts it.
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
            .map_err(sqlite)?;
        // What a crash left in the log goes into the database now, so crashes in quick
        // succession cannot stack log on log. A full disk must not stop the start (the unit
        // then starts read-only, and the checkpointer retries with the reserve released).
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::warn!(error = %err, "checkpoint at start failed");
        }
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
        let (written_tx, written) = watch::channel(0);
        let wakes = Arc::new(wake::WakeLog::default());
        // Pollers that start at `start_pos` are judged by the log from the first batch on.
        wakes.publish(start_pos, wake::Touched::default());
        let writer = writer::WriterHandle::spawn(
            conn,
            start_pos,
            writer::Signals {
                position: position_tx,
                commits: commits_tx,
                written: written_tx,
                wakes: Arc::clone(&wakes),
            },
        );
        let checkpointer = Connection::open(&path).map_err(sqlite)?;
        configure(&checkpointer).map_err(sqlite)?;
        checkpointer
            .pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
            .map_err(sqlite)?;
        let mut readers = Vec::with_capacity(read_connections);
        for _ in 0..read_connections {
            let reader = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(sqlite)?;
            configure(&reader).map_err(sqlite)?;
            // Readers map the database file instead of copying every page they touch with a
            // pread: `bench --crowd` (1,000 long-polling users) made 23,000 preads a second.
            // Read-only: the writer still writes with pwrite and fsync.
            reader
                .pragma_update(None, "mmap_size", READER_MMAP_SIZE)
                .map_err(sqlite)?;
            readers.push(reader);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                writer,
                checkpointer: Mutex::new(checkpointer),
                space: SpaceGuard::new(data_dir, space),
                written,
                readers: Mutex::new(readers),
                reader_slots: Semaphore::new(read_connections),
                path,
                position,
                commits,
                wakes,
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
    ///
    /// Refused with `M_RESOURCE_LIMIT_EXCEEDED` while free space is under the watermark; a
    /// write that finds the disk full anyway gets the same error, never a 500.
    pub fn write<T, F>(&self, f: F) -> impl Future<Output = Result<T>> + Send + '_
    where
        F: FnOnce(&mut WriteTx<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.write_typed(erase_write(f), true)
    }

    /// Like [`Store::write`], but also below the free-space watermark: for the small writes a
    /// read path needs (acknowledging delivered to-device messages) and for workers' bookkeeping
    /// that deletes rows (a delivered outbox). Nothing a client sends may use it.
    pub fn write_bookkeeping<T, F>(&self, f: F) -> impl Future<Output = Result<T>> + Send + '_
    where
        F: FnOnce(&mut WriteTx<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.write_typed(erase_write(f), false)
    }

    /// The future of [`Store::write`] and [`Store::write_bookkeeping`], generic only over the
    /// result type: an `async fn` generic over the closure too would be compiled once per
    /// call site.
    async fn write_typed<T: 'static>(
        &self,
        f: writer::ErasedWrite,
        check_space: bool,
    ) -> Result<T> {
        if check_space {
            self.inner.space.check()?;
        }
        downcast(self.write_erased(f).await?)
    }

    /// The one, non-generic body of [`Store::write`]: each kind of write only adds
    /// its boxed closure and a downcast, not a copy of this future and the writer's channel.
    async fn write_erased(&self, f: writer::ErasedWrite) -> Result<Erased> {
        self.inner
            .writer
            .submit(f)
            .await
            .map_err(|err| self.disk_full_as_refusal(err))
    }

    /// Turns a disk-full failure (`SQLITE_FULL`, `ENOSPC`) into the clear refusal, turning
    /// writes off until space is back; other errors pass through.
    pub fn disk_full_as_refusal(&self, err: Error) -> Error {
        if err.is_disk_full() {
            self.inner.space.trip();
            self.inner.space.refusal()
        } else {
            err
        }
    }

    /// The free-space guard of the data partition.
    pub fn space(&self) -> &SpaceGuard {
        &self.inner.space
    }

    /// A receiver bumped by every commit, whatever it wrote (wakes the checkpointer).
    pub fn subscribe_writes(&self) -> watch::Receiver<u64> {
        self.inner.written.clone()
    }

    /// Runs a read-only query on a pooled connection, off the async runtime, inside one read
    /// transaction: every statement of `f` sees the same snapshot, and the WAL read lock is
    /// taken once instead of per statement (an initial `/sync` runs thousands of statements;
    /// locking and unlocking the shared memory for each was 8% of its CPU).
    pub fn read<T, F>(&self, f: F) -> impl Future<Output = Result<T>> + Send + '_
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let f: ErasedRead = Box::new(move |conn| f(conn).map(|value| Box::new(value) as Erased));
        self.read_typed(f)
    }

    /// The future of [`Store::read`], generic only over the result type (see
    /// [`Store::write_typed`]).
    async fn read_typed<T: 'static>(&self, f: ErasedRead) -> Result<T> {
        downcast(self.read_erased(f).await?)
    }

    /// The one, non-generic body of [`Store::read`]. A read's closure and result are boxed so
    /// that the blocking task, its harness and this future are compiled once instead of once
    /// per query (with the writer's, a tenth of the crate's LLVM IR and of its build time).
    async fn read_erased(&self, f: ErasedRead) -> Result<Erased> {
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
            let result = match conn.unchecked_transaction() {
                // Dropping the transaction ends it (a rollback: nothing was written).
                Ok(snapshot) => f(&snapshot),
                Err(err) => Err(err.into()),
            };
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

    /// Whom the recent commits concern: a waiting `/sync` woken by [`Store::subscribe`] asks it
    /// whether to look again.
    pub fn wakes(&self) -> &wake::WakeLog {
        &self.inner.wakes
    }

    /// A receiver that changes after every commit that queued something for a peer.
    pub fn subscribe_commits(&self) -> watch::Receiver<u64> {
        self.inner.commits.clone()
    }

    /// Copies the log's last frames on the writer's connection between batches, so the next
    /// write starts the log over; see [`writer::WriterHandle::checkpoint_tail`]. Call it after a
    /// passive [`Store::checkpoint`] has copied the bulk.
    pub async fn checkpoint_tail(&self) -> Result<CheckpointOutcome> {
        self.inner.writer.checkpoint_tail().await
    }

    /// Runs a WAL checkpoint on the checkpointer's own connection, off the runtime. A
    /// [`CheckpointMode::Truncate`] waits at most `wait` for the writer and readers and then
    /// reports `busy` instead. When the disk is too full for the checkpoint to copy pages into
    /// the database, the reserve file is deleted and the checkpoint tried once more.
    pub async fn checkpoint(
        &self,
        mode: CheckpointMode,
        wait: Duration,
    ) -> Result<CheckpointOutcome> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let conn = inner
                .checkpointer
                .lock()
                .map_err(|_| Error::internal("checkpointer connection poisoned"))?;
            let run = || -> rusqlite::Result<CheckpointOutcome> {
                conn.busy_timeout(wait)?;
                let sql = match mode {
                    CheckpointMode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
                    CheckpointMode::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
                };
                conn.query_row(sql, [], CheckpointOutcome::from_row)
            };
            match run() {
                Err(err) if space::is_full(&err) && inner.space.release_reserve() => Ok(run()?),
                result => Ok(result?),
            }
        })
        .await
        .map_err(|err| Error::internal(format!("checkpoint task failed: {err}")))?
    }

    /// Stops the writer after it has committed everything already submitted, and waits for it.
    pub fn shutdown(&self) {
        self.inner.writer.shutdown();
    }
}

/// A read as [`Store::read_erased`] takes it: its result type erased.
type ErasedRead = Box<dyn FnOnce(&Connection) -> Result<Erased> + Send>;

/// Boxes a write request and erases its result type, for [`Store::write_erased`].
fn erase_write<T, F>(f: F) -> writer::ErasedWrite
where
    F: FnOnce(&mut WriteTx<'_>) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    Box::new(move |tx| f(tx).map(|value| Box::new(value) as Erased))
}

/// Takes a read's or write's result back out of its box: [`Store::read`] and
/// [`Store::write_bookkeeping`] box a `T` and ask for that same `T`, so this cannot fail.
fn downcast<T: 'static>(erased: Erased) -> Result<T> {
    erased
        .downcast::<T>()
        .map(|value| *value)
        .map_err(|_| Error::internal("a store result came back as another type"))
}
