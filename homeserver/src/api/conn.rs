//! Connection admission and lifetime on the client and federation listeners: the accept loop
//! (with the TLS handshake, and HTTP/1.1 or HTTP/2 as ALPN chose), the header-read and idle
//! timeouts, the caps per listener and per source address, and the file-descriptor budget they
//! share.
//!
//! Every accepted TCP connection is registered in one [`Connections`] table. A connection is
//! *idle* while no request is in flight on it (including a fresh one that has not finished its
//! first request head); only idle connections are ever closed early. When a cap is reached, the
//! oldest idle connection in the cap's scope (the same source address, the same listener, or
//! the whole process) is closed so the new one can be served; only when none is idle is the new
//! connection refused. So a flood of idle connections evicts itself while a fresh client still
//! gets in, and a connection with a request in flight is never cut.
//!
//! Long polls (`/sync`, sliding sync) are counted apart: while a request waits in one, its
//! connection does not count against the per-listener and per-address caps (which bound idle
//! and short-request connections), only against `long_poll_max` and the descriptor budget, so
//! hundreds of legitimate sync waiters do not crowd out other requests and are not crowded out
//! by an idle flood.
//!
//! The descriptor budget is the soft `RLIMIT_NOFILE` (raised to the hard limit at start) less a
//! reserve for the database, media files, outbound federation and the admin socket, which
//! listens apart and is never subject to these caps.
//!
//! Request bodies pass through [`WatchedBody`]: past `body_timeout_secs` a body that averages
//! less than `body_min_rate` bytes/s is cut and answered 408 with `Connection: close` (a
//! slow-body client would otherwise hold its connection, in flight and so never reaped, for
//! as long as it likes). A body the handler did not read to the end (404, 405, 401 answered
//! before reading it) is drained, up to [`DRAIN_MAX`] bytes within [`DRAIN_TIMEOUT`], before
//! the response goes out, so the keep-alive connection stays usable; a larger or slower one
//! gets `Connection: close` instead of a silently dropped connection.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::config::ConnectionsConfig;
use crate::error::Error;

/// Descriptors kept out of the connection budget: SQLite (database, WAL and shared memory per
/// connection), media files being read or written, outbound federation connections, the admin
/// socket and its clients, and sockets accepted just before an eviction completes.
pub const RESERVED_FDS: u64 = 256;

/// How long an in-flight request may finish after its connection was asked to close.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// At most one "cap reached" warning per this interval; the ones in between are counted.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Most bytes of an unread request body drained to keep its connection alive.
pub const DRAIN_MAX: u64 = 64 * 1024;

/// How long draining an unread request body may hold the response back.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    /// The Client-Server API.
    Client,
    /// The Server-Server API (after the TLS handshake).
    Federation,
}

impl Listener {
    fn index(self) -> usize {
        match self {
            Listener::Client => 0,
            Listener::Federation => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Listener::Client => "client",
            Listener::Federation => "federation",
        }
    }
}

/// The caps of one listener, after clamping to the descriptor budget.
#[derive(Debug, Clone, Copy)]
struct Caps {
    max: usize,
    max_per_address: usize,
    max_long_polls: usize,
}

/// Why a connection was asked to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum CloseReason {
    Open = 0,
    /// The request head did not arrive within the header timeout: dropped at once.
    HeaderTimeout = 1,
    /// Idle past the keep-alive timeout: dropped at once.
    IdleTimeout = 2,
    /// Closed to make room under a cap (a request that raced in still finishes).
    Evicted = 3,
}

/// One registered connection's state, shared between its task, its requests and the table.
struct Conn {
    id: u64,
    listener: Listener,
    addr: IpAddr,
    epoch: Instant,
    in_flight: AtomicU32,
    /// Milliseconds since `epoch` (plus one) when the connection last became idle.
    idle_since: AtomicU64,
    /// When the first byte of a request head arrived while idle; 0 when none is pending.
    head_since: AtomicU64,
    /// How many requests on this connection wait as long polls. The connection counts as a
    /// long poll while any does: HTTP/2 carries several requests at once, and the connection
    /// must stay out of the ordinary caps until the last of them is answered.
    long_polls: AtomicU32,
    close_reason: AtomicU8,
    close: Notify,
}

impl Conn {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    fn ask_to_close(&self, reason: CloseReason) {
        if self
            .close_reason
            .compare_exchange(
                CloseReason::Open as u8,
                reason as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            self.close.notify_one();
        }
    }

    fn reason(&self) -> CloseReason {
        match self.close_reason.load(Ordering::Acquire) {
            1 => CloseReason::HeaderTimeout,
            2 => CloseReason::IdleTimeout,
            3 => CloseReason::Evicted,
            _ => CloseReason::Open,
        }
    }
}

/// Open connections and long polls in one scope.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    open: usize,
    long_polls: usize,
}

impl Counts {
    fn ordinary(&self) -> usize {
        self.open - self.long_polls
    }
}

#[derive(Default)]
struct Table {
    next_id: u64,
    conns: HashMap<u64, Arc<Conn>>,
    per_listener: [Counts; 2],
    per_address: HashMap<(Listener, IpAddr), Counts>,
    /// Registered connections whose socket is still open, evicted ones included.
    live: usize,
    /// Cap hits since the last warning, and when that warning was logged.
    unlogged_hits: u64,
    last_warning: Option<Instant>,
}

impl Table {
    fn remove(&mut self, id: u64) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        let long_poll = conn.long_polls.swap(0, Ordering::AcqRel) > 0;
        let key = (conn.listener, conn.addr);
        let listener = &mut self.per_listener[conn.listener.index()];
        listener.open -= 1;
        if long_poll {
            listener.long_polls -= 1;
        }
        if let Some(counts) = self.per_address.get_mut(&key) {
            counts.open -= 1;
            if long_poll {
                counts.long_polls -= 1;
            }
            if counts.open == 0 {
                self.per_address.remove(&key);
            }
        }
    }

    /// The idle connection that has been idle longest among those `scope` accepts.
    fn oldest_idle(&self, scope: impl Fn(&Conn) -> bool) -> Option<u64> {
        self.conns
            .values()
            .filter(|conn| {
                conn.is_idle() && conn.reason() == CloseReason::Open && scope(conn.as_ref())
            })
            .min_by_key(|conn| conn.idle_since.load(Ordering::Acquire))
            .map(|conn| conn.id)
    }

    /// Closes the oldest idle connection in `scope` and forgets it at once, so the caller's
    /// count drops below the cap; `false` when nothing in scope is idle.
    fn evict(&mut self, scope: impl Fn(&Conn) -> bool) -> bool {
        let Some(id) = self.oldest_idle(scope) else {
            return false;
        };
        if let Some(conn) = self.conns.get(&id) {
            conn.ask_to_close(CloseReason::Evicted);
        }
        self.remove(id);
        true
    }

    /// Logs a cap hit at most once per [`WARN_EVERY`], with how many were not logged.
    fn note_cap_hit(&mut self, listener: Listener, addr: IpAddr, cap: &str, refused: bool) {
        self.unlogged_hits += 1;
        let now = Instant::now();
        if self
            .last_warning
            .is_some_and(|at| now.duration_since(at) < WARN_EVERY)
        {
            return;
        }
        let counts = self.per_listener[listener.index()];
        tracing::warn!(
            listener = listener.name(),
            %addr,
            cap,
            action = if refused { "refused the new connection" } else { "closed the oldest idle connection" },
            open = counts.open,
            long_polls = counts.long_polls,
            cap_hits = self.unlogged_hits,
            "connection cap reached"
        );
        self.unlogged_hits = 0;
        self.last_warning = Some(now);
    }
}

/// The connection table shared by both listeners.
pub struct Connections {
    table: Mutex<Table>,
    caps: [Caps; 2],
    budget: usize,
    header_timeout: Duration,
    idle_timeout: Duration,
    body_timeout: Duration,
    body_min_rate: u64,
    epoch: Instant,
}

impl Connections {
    /// A table for the configured caps, clamped so that all connections together fit in
    /// `fd_limit` descriptors less [`RESERVED_FDS`].
    pub fn new(config: &ConnectionsConfig, fd_limit: u64) -> Arc<Self> {
        let spare = if fd_limit > 2 * RESERVED_FDS {
            fd_limit - RESERVED_FDS
        } else {
            fd_limit / 2
        };
        let budget = usize::try_from(spare).unwrap_or(usize::MAX).max(16);
        let clamp = |cap: usize| cap.min(budget);
        let caps = [
            Caps {
                max: clamp(config.client_max),
                max_per_address: clamp(config.client_max_per_address),
                max_long_polls: clamp(config.long_poll_max),
            },
            Caps {
                max: clamp(config.federation_max),
                max_per_address: clamp(config.federation_max_per_address),
                max_long_polls: 0,
            },
        ];
        let wanted = config.client_max + config.long_poll_max + config.federation_max;
        if wanted > budget {
            tracing::warn!(
                fd_limit,
                budget,
                wanted,
                "the file descriptor limit is below the configured connection caps; \
                 connections share {budget} descriptors and the oldest idle ones are closed first"
            );
        }
        Arc::new(Self {
            table: Mutex::new(Table::default()),
            caps,
            budget,
            header_timeout: Duration::from_secs(config.header_timeout_secs),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
            body_timeout: Duration::from_secs(config.body_timeout_secs),
            body_min_rate: config.body_min_rate.max(1),
            epoch: Instant::now(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock leaves counts that are still consistent enough to
        // serve with; never take the listener down over it.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a new connection, closing the oldest idle one of a full scope first;
    /// `Ok(None)` when a cap is reached and nothing in its scope is idle, `Err(Busy)` while
    /// too many evicted connections have yet to release their sockets.
    fn admit(
        self: &Arc<Self>,
        listener: Listener,
        addr: IpAddr,
    ) -> Result<Option<Registered>, Busy> {
        let caps = self.caps[listener.index()];
        let mut table = self.lock();
        // Evicted connections leave the table at once but hold their socket until their task
        // runs; under a burst on a busy machine those could eat the reserve. Past half of it
        // the caller waits for them to close (see `serve`).
        if table.live >= self.budget + RESERVED_FDS as usize / 2 {
            return Err(Busy);
        }
        let per_address = table
            .per_address
            .get(&(listener, addr))
            .copied()
            .unwrap_or_default();
        if per_address.ordinary() >= caps.max_per_address {
            let evicted = table.evict(|c| c.listener == listener && c.addr == addr);
            table.note_cap_hit(listener, addr, "per address", !evicted);
            if !evicted {
                return Ok(None);
            }
        }
        if table.per_listener[listener.index()].ordinary() >= caps.max {
            let evicted = table.evict(|c| c.listener == listener);
            table.note_cap_hit(listener, addr, "per listener", !evicted);
            if !evicted {
                return Ok(None);
            }
        }
        if table.conns.len() >= self.budget {
            let evicted = table.evict(|_| true);
            table.note_cap_hit(listener, addr, "file descriptors", !evicted);
            if !evicted {
                return Ok(None);
            }
        }
        table.next_id += 1;
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let conn = Arc::new(Conn {
            id: table.next_id,
            listener,
            addr,
            epoch: self.epoch,
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(now),
            // A fresh connection owes its first request head within the header timeout.
            head_since: AtomicU64::new(now),
            long_polls: AtomicU32::new(0),
            close_reason: AtomicU8::new(CloseReason::Open as u8),
            close: Notify::new(),
        });
        table.conns.insert(conn.id, Arc::clone(&conn));
        table.live += 1;
        table.per_listener[listener.index()].open += 1;
        table.per_address.entry((listener, addr)).or_default().open += 1;
        Ok(Some(Registered {
            table: Arc::clone(self),
            conn,
        }))
    }

    /// Closes connections past the header or idle timeout, until `shutdown`.
    pub async fn reap(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let tick = (self.header_timeout.min(self.idle_timeout) / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut ticker = tokio::time::interval(tick);
        let header_ms = self.header_timeout.as_millis() as u64;
        let idle_ms = self.idle_timeout.as_millis() as u64;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = crate::util::stopped(&mut shutdown) => break,
            }
            let now = self.epoch.elapsed().as_millis() as u64 + 1;
            let table = self.lock();
            for conn in table.conns.values() {
                if !conn.is_idle() {
                    continue;
                }
                let head = conn.head_since.load(Ordering::Acquire);
                if head != 0 {
                    if now.saturating_sub(head) > header_ms {
                        conn.ask_to_close(CloseReason::HeaderTimeout);
                    }
                } else if now.saturating_sub(conn.idle_since.load(Ordering::Acquire)) > idle_ms {
                    conn.ask_to_close(CloseReason::IdleTimeout);
                }
            }
        }
    }
}

/// Too many evicted connections still hold their sockets: try again in a moment.
struct Busy;

/// How long a new connection waits for evicted ones to release their sockets before it is
/// refused.
const BUSY_WAIT: Duration = Duration::from_millis(200);

/// A connection's place in the table; dropping it (when the connection's task ends) frees it.
struct Registered {
    table: Arc<Connections>,
    conn: Arc<Conn>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut table = self.table.lock();
        table.remove(self.conn.id);
        table.live -= 1;
    }
}

/// The handle a request carries (as an extension) to its connection, so a long-poll handler
/// can move the connection out of the ordinary caps while it waits.
#[derive(Clone)]
pub struct ConnHandle {
    table: Arc<Connections>,
    conn: Arc<Conn>,
}

impl ConnHandle {
    /// Counts this connection as a long poll until the guard drops; 429 `M_LIMIT_EXCEEDED` when
    /// `long_poll_max` requests already wait.
    pub fn long_poll(&self) -> Result<LongPoll, Error> {
        let listener = self.conn.listener;
        let cap = self.table.caps[listener.index()].max_long_polls;
        let mut table = self.table.lock();
        if !table.conns.contains_key(&self.conn.id) {
            // Already forgotten (evicted): nothing to move.
            return Ok(LongPoll { handle: None });
        }
        // The table lock orders every change of the connection's count.
        if self.conn.long_polls.load(Ordering::Acquire) == 0 {
            if table.per_listener[listener.index()].long_polls >= cap {
                table.note_cap_hit(listener, self.conn.addr, "long polls", true);
                return Err(Error::RateLimited {
                    retry_after_ms: 1000,
                });
            }
            table.per_listener[listener.index()].long_polls += 1;
            table
                .per_address
                .entry((listener, self.conn.addr))
                .or_default()
                .long_polls += 1;
        }
        self.conn.long_polls.fetch_add(1, Ordering::AcqRel);
        Ok(LongPoll {
            handle: Some(self.clone()),
        })
    }
}

/// While alive, the connection counts as a long poll.
pub struct LongPoll {
    handle: Option<ConnHandle>,
}

impl Drop for LongPoll {
    fn drop(&mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        let mut table = handle.table.lock();
        // A forgotten connection was uncounted (and its count zeroed) when it was removed;
        // otherwise the connection stays a long poll until its last one ends.
        if !table.conns.contains_key(&handle.conn.id)
            || handle.conn.long_polls.fetch_sub(1, Ordering::AcqRel) != 1
        {
            return;
        }
        let listener = handle.conn.listener;
        table.per_listener[listener.index()].long_polls -= 1;
        if let Some(counts) = table.per_address.get_mut(&(listener, handle.conn.addr)) {
            counts.long_polls -= 1;
        }
    }
}

/// Marks a request in flight on its connection until dropped (with the response body).
struct InFlight(Arc<Conn>);

impl InFlight {
    fn begin(conn: &Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.head_since.store(0, Ordering::Release);
        InFlight(Arc::clone(conn))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection's byte stream, noting when a request head starts arriving on an idle
/// connection so the header timeout can run from there.
struct Tracked<T> {
    inner: T,
    conn: Arc<Conn>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before
            && self.conn.is_idle()
            && self.conn.head_since.load(Ordering::Acquire) == 0
        {
            let now = self.conn.now();
            self.conn.head_since.store(now, Ordering::Release);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What the connection's service learns about a request body from the handler's side.
#[derive(Default)]
struct BodyWatch {
    /// The body was read to its end (or had none).
    ended: AtomicBool,
    /// The body was cut for arriving too slowly.
    timed_out: AtomicBool,
    /// The handler asked for the body at least once (hyper sends `100 Continue` only then).
    polled: AtomicBool,
    /// The rest of a body the handler dropped unread, for the service to drain.
    leftover: Mutex<Option<Incoming>>,
}

impl BodyWatch {
    fn take_leftover(&self) -> Option<Incoming> {
        self.leftover
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

/// Why a request body ended in an error.
#[derive(Debug)]
struct BodyTooSlow;

impl std::fmt::Display for BodyTooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body arrived too slowly")
    }
}

impl std::error::Error for BodyTooSlow {}

/// A request body that must keep up a minimum rate after a grace period, and that hands what
/// is left of it back to the connection when dropped unread.
struct WatchedBody {
    inner: Option<Incoming>,
    watch: Arc<BodyWatch>,
    started: Instant,
    received: u64,
    grace: Duration,
    min_rate: u64,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WatchedBody {
    fn new(inner: Incoming, watch: Arc<BodyWatch>, grace: Duration, min_rate: u64) -> Self {
        if hyper::body::Body::is_end_stream(&inner) {
            watch.ended.store(true, Ordering::Release);
        }
        Self {
            inner: Some(inner),
            watch,
            started: Instant::now(),
            received: 0,
            grace,
            min_rate,
            timer: None,
        }
    }

    /// When the body falls below the minimum rate if nothing more arrives.
    fn deadline(&self) -> tokio::time::Instant {
        let earned = Duration::from_millis(self.received.saturating_mul(1000) / self.min_rate);
        tokio::time::Instant::from_std(self.started + self.grace + earned)
    }
}

impl hyper::body::Body for WatchedBody {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        this.watch.polled.store(true, Ordering::Release);
        if this.watch.timed_out.load(Ordering::Acquire) {
            return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(Box::new(err)))),
            Poll::Ready(None) => {
                this.watch.ended.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Pending => {
                let deadline = this.deadline();
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    this.watch.timed_out.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner
            .as_ref()
            .map(hyper::body::Body::size_hint)
            .unwrap_or_default()
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if hyper::body::Body::is_end_stream(&inner) {
            self.watch.ended.store(true, Ordering::Release);
        } else if !self.watch.timed_out.load(Ordering::Acquire) {
            *self
                .watch
                .leftover
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(inner);
        }
    }
}

/// Reads and discards the rest of an unread body; `false` when it is longer than
/// [`DRAIN_MAX`], fails, or does not end within [`DRAIN_TIMEOUT`].
async fn drain(mut body: Incoming) -> bool {
    if hyper::body::Body::size_hint(&body).lower() > DRAIN_MAX {
        return false;
    }
    let read = async {
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return false;
            };
            if let Some(data) = frame.data_ref() {
                total += data.len() as u64;
                if total > DRAIN_MAX {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIMEOUT, read)
        .await
        .unwrap_or(false)
}

/// The answer to a request whose body was cut for arriving too slowly.
fn body_too_slow() -> axum::response::Response {
    let body = serde_json::json!({
        "errcode": "M_UNKNOWN",
        "error": "The request body arrived too slowly",
    });
    let mut response = axum::response::IntoResponse::into_response((
        axum::http::StatusCode::REQUEST_TIMEOUT,
        axum::Json(body),
    ));
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// Accepts connections on `listener` (through TLS when `tls` is given) and serves `app` on
/// them under the table's caps and timeouts, until `shutdown`; then lets in-flight requests
/// finish for a grace period.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    kind: Listener,
    table: Arc<Connections>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut connections = tokio::task::JoinSet::new();
    let mut accept_errors = 0u64;
    let mut last_accept_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = crate::util::stopped(&mut shutdown) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors (or another transient error): the budget should prevent
                // it, but never spin on it.
                accept_errors += 1;
                if last_accept_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::warn!(listener = kind.name(), error = %err, errors = accept_errors, "accept failed");
                    accept_errors = 0;
                    last_accept_warning = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let mut admitted = table.admit(kind, peer.ip());
        let waiting_since = Instant::now();
        while admitted.is_err() && waiting_since.elapsed() < BUSY_WAIT {
            tokio::time::sleep(Duration::from_millis(2)).await;
            admitted = table.admit(kind, peer.ip());
        }
        let Ok(Some(registered)) = admitted else {
            if admitted.is_err() {
                table
                    .lock()
                    .note_cap_hit(kind, peer.ip(), "descriptors still closing", true);
            }
            drop(stream);
            continue;
        };
        // Without NODELAY the first response on a fresh TLS 1.3 connection waits ~40 ms for a
        // delayed ACK.
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let stop = shutdown.clone();
        let header_timeout = table.header_timeout;
        connections.spawn(async move {
            match acceptor {
                Some(acceptor) => {
                    // The handshake counts against the header timeout, and an eviction cuts it
                    // short, so a connection that never finishes one cannot hold a slot.
                    let conn = Arc::clone(&registered.conn);
                    let handshake = tokio::select! {
                        done = tokio::time::timeout(header_timeout, acceptor.accept(stream)) => done.ok(),
                        _ = conn.close.notified() => None,
                    };
                    let Some(Ok(tls_stream)) = handshake else {
                        tracing::debug!(%peer, "TLS handshake failed, timed out or was evicted");
                        return;
                    };
                    let protocol = match tls_stream.get_ref().1.alpn_protocol() {
                        Some(b"h2") => Protocol::Http2,
                        _ => Protocol::Http1,
                    };
                    serve_connection(tls_stream, peer, app, registered, stop, protocol).await;
                }
                None => {
                    serve_connection(stream, peer, app, registered, stop, Protocol::Http1).await;
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}

/// The HTTP version a connection speaks: HTTP/2 only when TLS negotiated it through ALPN
/// (no cleartext h2c), HTTP/1.1 otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Most concurrent requests (streams) one HTTP/2 connection may have open; more are refused
/// by the protocol (`REFUSED_STREAM`) rather than queued.
const HTTP2_MAX_STREAMS: u32 = 100;

/// A hyper connection of either version that can be asked to finish gracefully.
trait Graceful: Future + Unpin {
    fn start_graceful_shutdown(&mut self);
}

impl<I, S, B> Graceful for Pin<Box<hyper::server::conn::http1::Connection<I, S>>>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn start_graceful_shutdown(&mut self) {
        self.as_mut().graceful_shutdown();
    }
}

impl<I, S, B> Graceful
    for Pin<Box<hyper::server::conn::http2::Connection<I, S, hyper_util::rt::TokioExecutor>>>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    hyper_util::rt::TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn start_graceful_shutdown(&mut self) {
        self.as_mut().graceful_shutdown();
    }
}

/// Runs one connection until it ends by itself, is asked to close (timeout or eviction) or
/// shutdown asks; then closes an idle connection at once and gives one with a request in
/// flight [`CLOSE_GRACE`] to finish.
async fn drive(
    mut connection: impl Graceful,
    conn: &Conn,
    peer: SocketAddr,
    stop: &mut watch::Receiver<bool>,
) {
    let closing = tokio::select! {
        _ = &mut connection => false,
        _ = conn.close.notified() => {
            tracing::debug!(%peer, reason = ?conn.reason(), "closing a connection");
            true
        }
        _ = crate::util::stopped(stop) => true,
    };
    // The connection is not being polled here, so no request can start between this check
    // and the drop: an idle connection is closed at once (hyper's graceful shutdown would wait
    // for a first request on a fresh one), a request that raced in still finishes.
    if closing && !conn.is_idle() {
        connection.start_graceful_shutdown();
        let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
    }
}

/// Serves HTTP/1.1 or HTTP/2 on one connection until it closes, times out, is evicted or
/// shutdown asks.
///
/// With HTTP/2 a connection carries many requests at once: it is idle (and so subject to the
/// header and idle timeouts and to eviction) only while none is in flight, and frames arriving
/// while idle (a PING, SETTINGS) start the header timeout as a request head's first bytes do.
async fn serve_connection<T>(
    io: T,
    peer: SocketAddr,
    app: Router,
    registered: Registered,
    mut stop: watch::Receiver<bool>,
    protocol: Protocol,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::clone(&registered.conn);
    let handle = ConnHandle {
        table: Arc::clone(&registered.table),
        conn: Arc::clone(&conn),
    };
    let (grace, min_rate) = (
        registered.table.body_timeout,
        registered.table.body_min_rate,
    );
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let in_flight = InFlight::begin(&handle.conn);
        let expects_continue = request
            .headers()
            .get(axum::http::header::EXPECT)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let watch = Arc::new(BodyWatch::default());
        let mut request = request.map(|incoming| {
            axum::body::Body::new(WatchedBody::new(
                incoming,
                Arc::clone(&watch),
                grace,
                min_rate,
            ))
        });
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(handle.clone());
        let app = app.clone();
        async move {
            let mut response = tower::ServiceExt::oneshot(app, request).await?;
            if watch.timed_out.load(Ordering::Acquire) {
                tracing::debug!(%peer, "request body too slow; closing the connection");
                response = body_too_slow();
            } else if !watch.ended.load(Ordering::Acquire) {
                // A client that waits for `100 Continue` has sent no body: reading it now
                // would only invite one. Otherwise drain what is left so the connection
                // survives; when that fails (or the body is still held), close it cleanly.
                let drained = match watch.take_leftover() {
                    Some(body) if !expects_continue || watch.polled.load(Ordering::Acquire) => {
                        drain(body).await
                    }
                    _ => false,
                };
                if !drained {
                    response.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
            }
            // The request stays in flight until its body is sent or dropped.
            Ok::<_, Infallible>(response.map(|body| {
                axum::body::Body::new(body.map_frame(move |frame| {
                    let _held = &in_flight;
                    frame
                }))
            }))
        }
    });
    let io = TokioIo::new(Tracked {
        inner: io,
        conn: Arc::clone(&conn),
    });
    match protocol {
        Protocol::Http1 => {
            let connection =
                Box::pin(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
            drive(connection, &conn, peer, &mut stop).await;
        }
        Protocol::Http2 => {
            let connection = Box::pin(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .max_concurrent_streams(HTTP2_MAX_STREAMS)
                    .serve_connection(io, service),
            );
            drive(connection, &conn, peer, &mut stop).await;
        }
    }
    drop(registered);
}
