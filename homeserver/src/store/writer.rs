//! The single writer: one thread owns the read-write connection and commits concurrent write
//! requests together (group commit).
//!
//! With `synchronous=FULL` every commit costs an fsync (~3 ms on the target disks), so one
//! transaction per request caps a unit at a few hundred writes per second. The writer instead
//! takes every request that is waiting, runs each inside its own savepoint of one transaction,
//! commits once, and only then answers each request. A failing request rolls back to its
//! savepoint and leaves the rest of the batch intact.
//!
//! The writer also allocates stream positions, so positions become visible to readers in order
//! and without gaps that could later fill in.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{oneshot, watch};

use super::CheckpointOutcome;
use super::wake::{Audience, Touched, WakeLog};
use crate::error::{Error, Result};
use crate::matrix::pdu::Pdu;

/// Most requests committed in one transaction; bounds the latency a batch adds.
const MAX_BATCH: usize = 256;

/// Parsed events the writer keeps; when full it starts over (auth events are re-read soon).
const PDU_CACHE_SIZE: usize = 4096;

/// Parsed PDUs by event ID, for the auth events every new event looks up. An event's JSON is
/// fixed by its ID (the ID is its hash) except for redaction, which evicts it.
#[derive(Default)]
struct PduCache(HashMap<String, Pdu>);

/// The view a write request gets: the connection inside the open transaction, and the
/// stream-position allocator.
pub struct WriteTx<'a> {
    conn: &'a Connection,
    next_pos: &'a mut i64,
    cache: &'a RefCell<PduCache>,
    outbox: &'a std::cell::Cell<bool>,
    touched: &'a RefCell<Touched>,
}

impl WriteTx<'_> {
    /// Allocates the next stream position for what `audience` may see (so only their waiting
    /// `/sync`s wake, see [`super::wake`]). Positions allocated by a request that then fails
    /// are simply skipped; readers only ever compare positions.
    pub fn next_stream_pos(&mut self, audience: Audience<'_>) -> i64 {
        self.touched.borrow_mut().add(self.conn, audience);
        *self.next_pos += 1;
        *self.next_pos
    }
}

impl WriteTx<'_> {
    /// Loads an event's PDU, from the writer's cache when it has it.
    pub fn pdu(&self, event_id: &str) -> Result<Option<Pdu>> {
        if let Some(pdu) = self.cache.borrow().0.get(event_id) {
            return Ok(Some(pdu.clone()));
        }
        let Some(event) = super::events::get_event(self.conn, event_id)? else {
            return Ok(None);
        };
        let mut cache = self.cache.borrow_mut();
        if cache.0.len() >= PDU_CACHE_SIZE {
            cache.0.clear();
        }
        cache.0.insert(event_id.to_owned(), event.pdu.clone());
        Ok(Some(event.pdu))
    }

    /// Notes that this write queued something for a peer, so the sender is woken after the
    /// commit (and only then).
    pub fn mark_outbox(&self) {
        self.outbox.set(true);
    }

    /// Drops a cached PDU whose stored JSON changed (redaction).
    pub fn forget_pdu(&self, event_id: &str) {
        self.cache.borrow_mut().0.remove(event_id);
    }
}

impl Deref for WriteTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

/// Called after the batch commits (`None`) or fails to commit (`Some(error)`).
type Completion = Box<dyn FnOnce(Option<&rusqlite::Error>) + Send>;
/// How a write request went, as far as the batch needs to know.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Failed,
    /// Failed because the disk is full: SQLite may have rolled the whole transaction back, so
    /// the batch's other requests are told the same (the clear refusal, not a 500).
    DiskFull,
}

/// A type-erased write request: runs, reports how it went, and returns its completion.
type Job = Box<dyn FnOnce(&mut WriteTx<'_>) -> (Outcome, Completion) + Send>;

/// A request's result with its type erased; [`Store`](super::Store) downcasts it back.
pub type Erased = Box<dyn Any + Send>;
/// A write request as [`WriterHandle::submit`] takes it: its result type erased.
pub type ErasedWrite = Box<dyn FnOnce(&mut WriteTx<'_>) -> Result<Erased> + Send>;

enum Message {
    Job(Job),
    Checkpoint(oneshot::Sender<rusqlite::Result<CheckpointOutcome>>),
    Shutdown,
}

/// What the writer announces after each commit.
pub struct Signals {
    /// The newest stream position, when a batch allocated positions (wakes sync).
    pub position: watch::Sender<i64>,
    /// A counter bumped by every commit that queued something for a peer (wakes the federation
    /// sender, whose outbox rows carry no stream position).
    pub commits: watch::Sender<u64>,
    /// A counter bumped by every commit (wakes the checkpointer).
    pub written: watch::Sender<u64>,
    /// Whom each batch's positions concern, published before `position` moves.
    pub wakes: std::sync::Arc<WakeLog>,
}

/// The async side's handle to the writer thread.
pub struct WriterHandle {
    sender: Mutex<Option<mpsc::Sender<Message>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl WriterHandle {
    /// Starts the writer thread on `conn`; `start_pos` is the newest stream position on disk.
    pub fn spawn(conn: Connection, start_pos: i64, position: Signals) -> Self {
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || run(conn, receiver, start_pos, position))
            .expect("spawning the writer thread needs only memory");
        Self {
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
        }
    }

    fn send(&self, message: Message) -> Result<()> {
        let guard = self.sender.lock().map_err(|_| Error::WriterGone)?;
        guard
            .as_ref()
            .ok_or(Error::WriterGone)?
            .send(message)
            .map_err(|_| Error::WriterGone)
    }

    /// Submits `f` and waits for the commit of the batch that holds it.
    ///
    /// Not generic: [`Store::write`](super::Store::write) erases the request's closure and
    /// result type, so the channel, the completion and this future exist once in the binary
    /// rather than once per kind of write (they were 2% of the crate's LLVM IR).
    pub async fn submit(&self, f: ErasedWrite) -> Result<Erased> {
        let (reply, answer) = oneshot::channel::<Result<Erased>>();
        let job: Job = Box::new(move |tx| {
            let result = match catch_unwind(AssertUnwindSafe(|| f(tx))) {
                Ok(result) => result,
                Err(_) => Err(Error::internal("write request panicked")),
            };
            let outcome = match &result {
                Ok(_) => Outcome::Ok,
                Err(err) if err.is_disk_full() => Outcome::DiskFull,
                Err(_) => Outcome::Failed,
            };
            let completion: Completion = Box::new(move |failure| {
                let result = match failure {
                    None => result,
                    Some(err) => Err(commit_error(err)),
                };
                // The requester may have gone away (client disconnected); the write stands.
                let _ = reply.send(result);
            });
            (outcome, completion)
        });
        self.send(Message::Job(job))?;
        answer.await.map_err(|_| Error::WriterGone)?
    }

    /// Runs a restart checkpoint on the writer's own connection, between batches. SQLite starts
    /// the log over only when a write begins with every frame already copied, which a
    /// checkpoint on another connection never achieves while commits keep coming (the writer
    /// appends while it copies). So the checkpointer copies the bulk on its own connection and
    /// then has the writer copy the short tail and wait briefly for older readers: a pause of a
    /// few milliseconds, after which the log is reused from its start.
    pub async fn checkpoint_tail(&self) -> Result<CheckpointOutcome> {
        let (reply, answer) = oneshot::channel();
        self.send(Message::Checkpoint(reply))?;
        Ok(answer.await.map_err(|_| Error::WriterGone)??)
    }

    /// Lets the writer finish what was submitted, then joins it. Idempotent.
    pub fn shutdown(&self) {
        if let Ok(mut sender) = self.sender.lock()
            && let Some(sender) = sender.take()
        {
            let _ = sender.send(Message::Shutdown);
        }
        if let Ok(mut thread) = self.thread.lock()
            && let Some(thread) = thread.take()
            && thread.join().is_err()
        {
            tracing::error!("writer thread panicked");
        }
    }
}

fn run(conn: Connection, receiver: mpsc::Receiver<Message>, start_pos: i64, position: Signals) {
    let mut next_pos = start_pos;
    let cache = RefCell::new(PduCache::default());
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut shutting_down = false;
    while !shutting_down {
        let Ok(first) = receiver.recv() else { break };
        let mut pending = Some(first);
        while let Some(message) = pending.take() {
            match message {
                Message::Job(job) => jobs.push(job),
                Message::Checkpoint(reply) => {
                    // Commit what came before, then copy the log's tail: the next write then
                    // starts the log over (see `WriterHandle::checkpoint_tail`).
                    commit_batch(&conn, &cache, &mut jobs, &mut next_pos, &position);
                    let started = std::time::Instant::now();
                    let result = checkpoint_restart(&conn);
                    // The benchmark reads these to report how long checkpoints held sends up.
                    tracing::debug!(
                        target: "homeserver::wal",
                        pause_us = started.elapsed().as_micros() as u64,
                        busy = matches!(result, Ok(CheckpointOutcome { busy: true, .. })),
                        "WAL restart checkpoint"
                    );
                    let _ = reply.send(result);
                }
                Message::Shutdown => shutting_down = true,
            }
            if jobs.len() < MAX_BATCH && !shutting_down {
                pending = receiver.try_recv().ok();
            }
        }
        commit_batch(&conn, &cache, &mut jobs, &mut next_pos, &position);
    }
    tracing::debug!("writer stopped");
}

/// How long the writer waits, after copying the log's tail, for readers still on an older
/// snapshot to finish. Sends queue behind it, so it is short; a reader running longer only
/// postpones the restart to the next tail checkpoint.
const RESTART_WAIT: Duration = Duration::from_millis(10);

/// Copies the log's tail into the database and waits (at most [`RESTART_WAIT`]) until no
/// reader still reads from the log, so that the next commit starts the log over.
///
/// A log only restarts when, at the start of a write, every frame is copied *and* no reader
/// holds a snapshot that reaches into the log. Under steady load some `/sync` is always
/// reading, and the readers that began before the copy finished kept the log from ever
/// restarting (peak 216 MiB at 600 events/s). Readers that begin after the copy read the
/// database file alone and do not hold the log, so the wait ends as soon as the older ones do.
fn checkpoint_restart(conn: &Connection) -> rusqlite::Result<CheckpointOutcome> {
    conn.busy_timeout(RESTART_WAIT)?;
    let result = conn.query_row(
        "PRAGMA wal_checkpoint(RESTART)",
        [],
        CheckpointOutcome::from_row,
    );
    conn.busy_timeout(super::BUSY_TIMEOUT)?;
    result
}

/// Runs `jobs` in one transaction and answers each after the commit.
fn commit_batch(
    conn: &Connection,
    cache: &RefCell<PduCache>,
    jobs: &mut Vec<Job>,
    next_pos: &mut i64,
    position: &Signals,
) {
    if jobs.is_empty() {
        return;
    }
    let batch_start = *next_pos;
    let outbox = std::cell::Cell::new(false);
    let touched = RefCell::new(Touched::default());
    let mut completions = Vec::with_capacity(jobs.len());
    let mut disk_full = false;
    let commit_result = (|| -> rusqlite::Result<()> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        for job in jobs.drain(..) {
            conn.execute_batch("SAVEPOINT job")?;
            let mut tx = WriteTx {
                conn,
                next_pos: &mut *next_pos,
                cache,
                outbox: &outbox,
                touched: &touched,
            };
            let (outcome, completion) = job(&mut tx);
            completions.push(completion);
            disk_full |= outcome == Outcome::DiskFull;
            if outcome != Outcome::Ok {
                conn.execute_batch("ROLLBACK TO job")?;
            }
            conn.execute_batch("RELEASE job")?;
        }
        conn.execute_batch("COMMIT")
    })();
    match commit_result {
        Ok(()) => {
            // Publish the new position before answering, so a client that gets its 200 and
            // syncs at once already sees its own write.
            if *next_pos != batch_start {
                position.wakes.publish(*next_pos, touched.into_inner());
                position.position.send_replace(*next_pos);
            }
            if outbox.get() {
                position.commits.send_modify(|count| *count += 1);
            }
            position.written.send_modify(|count| *count += 1);
            for completion in completions {
                completion(None);
            }
        }
        Err(err) => {
            tracing::error!(error = %err, "write batch failed to commit");
            let _ = conn.execute_batch("ROLLBACK");
            *next_pos = batch_start;
            // The cache may hold events of the rolled-back batch: start clean.
            cache.borrow_mut().0.clear();
            jobs.clear();
            let full = rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                None,
            );
            let err = if disk_full { &full } else { &err };
            for completion in completions {
                completion(Some(err));
            }
        }
    }
}

/// What a request whose batch failed to commit gets: the SQLite error itself when it is one
/// (so a full disk reaches the store as `SQLITE_FULL` and becomes the clear refusal), otherwise
/// an internal error.
fn commit_error(err: &rusqlite::Error) -> Error {
    match err {
        rusqlite::Error::SqliteFailure(code, message) => {
            Error::Database(rusqlite::Error::SqliteFailure(*code, message.clone()))
        }
        other => Error::internal(format!("commit failed: {other}")),
    }
}
