//! `--crowd N`: N users, each long-polling `/sync`, in N/5 rooms of 25 members (every user in
//! 5 rooms), while messages are offered at a fixed rate (`--rate`, default 200/s) for
//! `--seconds` (default 60) into the rooms in turn, each from one of the room's members.
//!
//! Delivery is the time from the send's 200 reaching the sender to the event arriving in a
//! member's `/sync`, once per member (the sender included), so each message gives 25 samples;
//! an event that reaches a `/sync` before its send's 200 reached the sender counts as 0 (and is
//! counted). It prints p50/p99/max of that and of the send latency (from each message's
//! scheduled time), the server's CPU-seconds over the measured window, its peak RSS during the
//! window (`VmHWM` is reset through `/proc/<pid>/clear_refs` after set-up, whose password
//! hashing would otherwise set it) and over the whole run, the WAL's growth and peak, and the
//! bench process's own CPU so a saturated load generator shows.
//!
//! The load generator is one tokio runtime: one HTTP/1.1 keep-alive connection per syncing
//! user and a small pool of keep-alive connections for the sends. All connections come from
//! 127.0.0.1: the server's per-address cap (`client_max_per_address`, 256) bounds only
//! connections *not* waiting in a long poll, which stay far below it here, and the long polls
//! count against `long_poll_max` (4,096), so the server's defaults admit the bench unchanged.
//! Set-up (password registration, room creation, joins) uses the blocking test client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tests::bench::{mib, percentiles, row};
use tests::{Client, TestEnv, Value, enc, json, process_cpu_time};

use crate::wal_path;

/// Rooms each user is in.
const ROOMS_PER_USER: usize = 5;
/// Members of each room (so rooms = users x ROOMS_PER_USER / MEMBERS_PER_ROOM).
const MEMBERS_PER_ROOM: usize = 25;
/// Threads registering users and joining rooms during set-up.
const SETUP_THREADS: usize = 8;
/// Most send requests in flight at once (each holds one pooled connection).
const SEND_CONCURRENCY: usize = 64;
/// The long poll's `timeout`.
const POLL_TIMEOUT_MS: u64 = 30_000;
/// Longest wait after the last send for the deliveries still due.
const DRAIN: Duration = Duration::from_secs(15);

/// What the scenario is asked to do.
pub struct Crowd {
    /// Users, each syncing.
    pub users: usize,
    /// Messages offered per second, in total.
    pub rate: f64,
    /// How long the messages are offered.
    pub seconds: u64,
    /// Extra TOML appended to the server's config.
    pub config: String,
}

/// One syncing user after set-up.
struct Member {
    token: String,
}

/// When each message was scheduled and when its send's 200 came back.
#[derive(Default, Clone, Copy)]
struct SendTimes {
    due: Option<Instant>,
    ok: Option<Instant>,
}

/// What every sync loop records: `(message seq, arrival)`, and the `limited` timelines seen.
#[derive(Default)]
struct Arrivals {
    events: Vec<(u64, Instant)>,
    limited: usize,
    errors: usize,
    first_error: Option<String>,
}

/// Runs the scenario (see the module header).
pub fn run(crowd: &Crowd) {
    raise_nofile();
    let rooms = (crowd.users * ROOMS_PER_USER / MEMBERS_PER_ROOM).max(1);
    println!(
        "Outpost crowd bench: {} users, {rooms} rooms of ~{MEMBERS_PER_ROOM}, every user \
         long-polling /sync, {} msg/s offered for {} s",
        crowd.users, crowd.rate, crowd.seconds
    );
    let config = format!(
        "[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n\n{}\n",
        crowd.config
    );
    let env = TestEnv::with_config(&config);
    let setup = Instant::now();
    let clients = register_all(&env, crowd.users);
    let membership = assign_rooms(crowd.users, rooms);
    let room_ids = make_rooms(&clients, &membership);
    let filter_ids = upload_filters(&clients);
    row(
        "set-up (register, rooms, joins)",
        format!(
            "{:.1} s: {} users, {} rooms, {} memberships",
            setup.elapsed().as_secs_f64(),
            clients.len(),
            room_ids.len(),
            membership.iter().map(Vec::len).sum::<usize>()
        ),
    );
    let members: Vec<Member> = clients
        .iter()
        .map(|c| Member {
            token: c
                .access_token
                .clone()
                .expect("registered clients hold a token"),
        })
        .collect();
    let total = (crowd.rate * crowd.seconds as f64).round() as usize;
    let expected: usize = (0..total)
        .map(|seq| membership[seq % room_ids.len()].len())
        .sum();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the load generator's runtime");
    let addr = env.addr();
    let arrivals = Arc::new(Mutex::new(Arrivals::default()));
    let stop = Arc::new(AtomicBool::new(false));

    // Every user's first /sync (timeout 0) before the window, so the long polls are waiting.
    let ready = Instant::now();
    let sinces = runtime.block_on(initial_syncs(addr, &members, &filter_ids));
    row(
        "initial /sync of every user",
        format!("{:.1} s", ready.elapsed().as_secs_f64()),
    );
    for ((member, since), filter) in members.iter().zip(sinces).zip(filter_ids.iter()) {
        runtime.spawn(sync_loop(
            addr,
            member.token.clone(),
            filter.clone(),
            since,
            Arc::clone(&arrivals),
            Arc::clone(&stop),
        ));
    }
    // Let the long polls reach the server before the clock starts.
    thread::sleep(Duration::from_secs(2));
    row(
        "connections established to the server",
        tests::established_connections(addr.port()),
    );

    let pid = env.pid();
    // Reset VmHWM: set-up's argon2 hashing (19 MiB per hash) would otherwise set the peak.
    let hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let rss_before = tests::proc_status_kib(pid, "VmRSS").unwrap_or_default();
    let wal = wal_path(&env.db_path());
    let wal_before = file_len(&wal);
    let wal_peak = Arc::new(AtomicU64::new(wal_before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (wal, peak, on) = (wal.clone(), Arc::clone(&wal_peak), Arc::clone(&sampling));
        thread::spawn(move || {
            while on.load(Ordering::SeqCst) {
                peak.fetch_max(file_len(&wal), Ordering::SeqCst);
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let server_cpu = process_cpu_time(pid);
    let own_cpu = process_cpu_time(std::process::id());
    let started = Instant::now();
    let senders: Vec<(String, String)> = (0..total)
        .map(|seq| {
            let room = seq % room_ids.len();
            let who = membership[room][(seq / room_ids.len()) % membership[room].len()];
            (room_ids[room].clone(), members[who].token.clone())
        })
        .collect();
    let sends = runtime.block_on(offer(addr, senders, crowd.rate));
    let offered = started.elapsed();
    // Wait until every delivery arrived, or DRAIN passed without completing.
    let drain = Instant::now();
    while arrivals.lock().expect("arrivals lock").events.len() < expected && drain.elapsed() < DRAIN
    {
        thread::sleep(Duration::from_millis(50));
    }
    let window = started.elapsed();
    let server_cpu = process_cpu_time(pid)
        .zip(server_cpu)
        .map(|(end, start)| end.saturating_sub(start));
    let own_cpu = process_cpu_time(std::process::id())
        .zip(own_cpu)
        .map(|(end, start)| end.saturating_sub(start));
    let peak = tests::proc_status_kib(pid, "VmHWM").unwrap_or_default();
    let rss_after = tests::proc_status_kib(pid, "VmRSS").unwrap_or_default();
    sampling.store(false, Ordering::SeqCst);
    sampler.join().expect("WAL sampler panicked");
    let wal_after = file_len(&wal);
    stop.store(true, Ordering::SeqCst);
    runtime.shutdown_background();

    let ok: Vec<&SendTimes> = sends.times.iter().filter(|t| t.ok.is_some()).collect();
    row(
        "messages sent",
        format!(
            "{} ok, {} errors of {total} offered in {:.1} s -> {:.0} msg/s",
            ok.len(),
            sends.errors,
            offered.as_secs_f64(),
            ok.len() as f64 / offered.as_secs_f64()
        ),
    );
    if let Some(error) = &sends.first_error {
        row("first send error", error);
    }
    let mut latency: Vec<Duration> = ok
        .iter()
        .filter_map(|t| Some(t.ok?.duration_since(t.due?)))
        .collect();
    row("send latency (from schedule)", percentiles(&mut latency));
    let arrivals = arrivals.lock().expect("arrivals lock");
    let mut early = 0;
    let mut delivery: Vec<Duration> = arrivals
        .events
        .iter()
        .filter_map(|&(seq, at)| {
            let ok = sends.times.get(usize::try_from(seq).ok()?)?.ok?;
            if at < ok {
                early += 1;
            }
            Some(at.saturating_duration_since(ok))
        })
        .collect();
    let mut from_schedule: Vec<Duration> = arrivals
        .events
        .iter()
        .filter_map(|&(seq, at)| {
            let due = sends.times.get(usize::try_from(seq).ok()?)?.due?;
            Some(at.saturating_duration_since(due))
        })
        .collect();
    row("delivery (send's 200 -> /sync)", percentiles(&mut delivery));
    row(
        "delivery (scheduled send -> /sync)",
        percentiles(&mut from_schedule),
    );
    row(
        "deliveries",
        format!(
            "{} of {expected} expected ({early} before the send's 200, {} limited timelines, \
             {} /sync errors)",
            arrivals.events.len(),
            arrivals.limited,
            arrivals.errors
        ),
    );
    if let Some(error) = &arrivals.first_error {
        row("first /sync error", error);
    }
    if let Some(cpu) = server_cpu {
        row(
            "server CPU over the window",
            format!(
                "{:.2} s in {:.1} s ({:.0}% of one core) -> {:.0} us per message",
                cpu.as_secs_f64(),
                window.as_secs_f64(),
                cpu.as_secs_f64() * 100.0 / window.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / ok.len().max(1) as f64
            ),
        );
    }
    if let Some(cpu) = own_cpu {
        row(
            "load generator CPU (this process)",
            format!(
                "{:.2} s ({:.0}% of one core)",
                cpu.as_secs_f64(),
                cpu.as_secs_f64() * 100.0 / window.as_secs_f64()
            ),
        );
    }
    row(
        "server RSS before / after the window",
        format!("{} / {}", mib(rss_before), mib(rss_after)),
    );
    row(
        if hwm_reset {
            "peak RSS during the window (VmHWM)"
        } else {
            "peak RSS (VmHWM, not reset: set-up included)"
        },
        mib(peak),
    );
    row(
        "WAL size before / peak / after",
        format!(
            "{} / {} / {}",
            mib(wal_before / 1024),
            mib(wal_peak.load(Ordering::SeqCst) / 1024),
            mib(wal_after / 1024)
        ),
    );
}

/// Raises this process's soft open-file limit to its hard limit: one descriptor per syncing
/// user is more than the common default of 1,024.
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err()
    {
        eprintln!("bench: could not raise the open-file limit to {hard}");
    }
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |meta| meta.len())
}

/// Registers `crowd_0` .. `crowd_<n-1>` from [`SETUP_THREADS`] threads, in order.
fn register_all(env: &TestEnv, n: usize) -> Vec<Client> {
    let slots: Vec<Mutex<Option<Client>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    thread::scope(|scope| {
        for _ in 0..SETUP_THREADS {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    let client = env.register(&format!("crowd_{i}"));
                    *slots[i].lock().expect("slot lock") = Some(client);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .expect("slot lock")
                .expect("every user registered")
        })
        .collect()
}

/// The members of each room: user `u` is in rooms `(u + stride * k) mod rooms` for
/// `k < ROOMS_PER_USER`, with `stride` coprime to `rooms` so those are distinct; every room
/// then holds about [`MEMBERS_PER_ROOM`] users, and rooms overlap in a spread-out way.
fn assign_rooms(users: usize, rooms: usize) -> Vec<Vec<usize>> {
    let per = ROOMS_PER_USER.min(rooms);
    let mut stride = (rooms / per).max(1) + 1;
    while gcd(stride, rooms) != 1 {
        stride += 1;
    }
    let mut members = vec![Vec::new(); rooms];
    for user in 0..users {
        for k in 0..per {
            members[(user + stride * k) % rooms].push(user);
        }
    }
    members
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Creates each room (public, by its first member) and joins the others, from several
/// threads; returns the room IDs in the order of `membership`.
fn make_rooms(clients: &[Client], membership: &[Vec<usize>]) -> Vec<String> {
    let room_ids: Vec<String> = membership
        .iter()
        .enumerate()
        .map(|(n, members)| {
            clients[members[0]]
                .create_room(&json!({ "preset": "public_chat", "name": format!("crowd {n}") }))
        })
        .collect();
    let joins: Vec<(usize, &str)> = membership
        .iter()
        .zip(&room_ids)
        .flat_map(|(members, room)| members[1..].iter().map(move |&u| (u, room.as_str())))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    thread::scope(|scope| {
        for _ in 0..SETUP_THREADS {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&(user, room)) = joins.get(i) else {
                        break;
                    };
                    clients[user].join(room);
                }
            });
        }
    });
    room_ids
}

/// Uploads each user's sync filter (messages only in the timeline, members lazy-loaded, no
/// presence), as a client such as Element does once, and returns the filter IDs.
fn upload_filters(clients: &[Client]) -> Vec<String> {
    let filter = json!({
        "room": {
            "timeline": { "limit": 50, "types": ["m.room.message"] },
            "state": { "lazy_load_members": true },
        },
        "presence": { "not_types": ["*"] },
    });
    clients
        .iter()
        .map(|client| {
            let (status, body) = client.post(
                &format!("/_matrix/client/v3/user/{}/filter", enc(&client.user_id)),
                &filter,
            );
            assert_eq!(status, 200, "uploading a filter: {body}");
            tests::str_field(&body, "filter_id")
        })
        .collect()
}

/// One keep-alive HTTP/1.1 connection to the server.
type Conn = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Conn, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|err| format!("connect: {err}"))?;
    stream.set_nodelay(true).map_err(|err| err.to_string())?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("handshake: {err}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One request on `conn`: `(status, body)`.
async fn request(
    conn: &mut Conn,
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, Bytes), String> {
    conn.ready()
        .await
        .map_err(|err| format!("not ready: {err}"))?;
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|err| err.to_string())?;
    let response = conn
        .send_request(request)
        .await
        .map_err(|err| format!("{method} {path}: {err}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| format!("reading the body: {err}"))?
        .to_bytes();
    Ok((status, body))
}

fn sync_path(filter: &str, since: Option<&str>, timeout_ms: u64) -> String {
    let mut path = format!(
        "/_matrix/client/v3/sync?timeout={timeout_ms}&filter={}",
        enc(filter)
    );
    if let Some(since) = since {
        path.push_str("&since=");
        path.push_str(&enc(since));
    }
    path
}

/// Runs every member's initial `/sync` (64 at a time, each on a connection of its own that is
/// closed after it); returns the `next_batch` tokens. The long polls open their own
/// connections: a thousand connections idle between the initial sync and the first long poll
/// would exceed the server's per-address cap on idle connections (256), which closes the
/// excess, and every one of those would show as a `/sync` error in the window.
async fn initial_syncs(addr: SocketAddr, members: &[Member], filters: &[String]) -> Vec<String> {
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for (member, filter) in members.iter().zip(filters) {
        let (token, filter, gate) = (member.token.clone(), filter.clone(), Arc::clone(&gate));
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.expect("semaphore never closed");
            let mut conn = connect(addr).await.expect("connecting a syncing user");
            let (status, body) = request(
                &mut conn,
                addr,
                "GET",
                &sync_path(&filter, None, 0),
                &token,
                None,
            )
            .await
            .expect("initial /sync");
            assert_eq!(status, 200, "initial /sync answered {status}");
            let body: Value = serde_json::from_slice(&body).expect("initial /sync is JSON");
            tests::str_field(&body, "next_batch")
        }));
    }
    let mut sinces = Vec::new();
    for task in tasks {
        sinces.push(task.await.expect("initial /sync task"));
    }
    sinces
}

/// One user's long-poll loop until `stop`: records each benchmark message's arrival.
async fn sync_loop(
    addr: SocketAddr,
    token: String,
    filter: String,
    mut since: String,
    arrivals: Arc<Mutex<Arrivals>>,
    stop: Arc<AtomicBool>,
) {
    let mut conn = match connect(addr).await {
        Ok(conn) => conn,
        Err(err) => {
            let mut arrivals = arrivals.lock().expect("arrivals lock");
            arrivals.errors += 1;
            arrivals.first_error.get_or_insert(err);
            return;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let path = sync_path(&filter, Some(&since), POLL_TIMEOUT_MS);
        let reply = request(&mut conn, addr, "GET", &path, &token, None).await;
        let at = Instant::now();
        let body = match reply {
            Ok((200, body)) => body,
            other => {
                let why = match other {
                    Ok((status, body)) => {
                        format!("{status} {}", String::from_utf8_lossy(&body))
                    }
                    Err(err) => err,
                };
                {
                    let mut arrivals = arrivals.lock().expect("arrivals lock");
                    arrivals.errors += 1;
                    arrivals.first_error.get_or_insert(why);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Ok(fresh) = connect(addr).await {
                    conn = fresh;
                }
                continue;
            }
        };
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            continue;
        };
        let mut found = Vec::new();
        let mut limited = 0;
        if let Some(rooms) = body["rooms"]["join"].as_object() {
            for room in rooms.values() {
                if room["timeline"]["limited"] == true {
                    limited += 1;
                }
                for event in room["timeline"]["events"].as_array().into_iter().flatten() {
                    if let Some(seq) = event["content"]["seq"].as_u64() {
                        found.push((seq, at));
                    }
                }
            }
        }
        if !found.is_empty() || limited > 0 {
            let mut arrivals = arrivals.lock().expect("arrivals lock");
            arrivals.events.extend(found);
            arrivals.limited += limited;
        }
        if let Some(next) = body["next_batch"].as_str() {
            since = next.to_owned();
        }
    }
}

/// What the sends measured, indexed by message seq.
struct Sends {
    times: Vec<SendTimes>,
    errors: usize,
    first_error: Option<String>,
}

/// Offers `senders.len()` messages at `rate` per second: message `seq` is due at
/// `seq / rate` and is sent into `senders[seq].0` with the token `senders[seq].1` over a pooled
/// keep-alive connection, at most [`SEND_CONCURRENCY`] at once (a late one waits, and its
/// latency counts from when it was due).
async fn offer(addr: SocketAddr, senders: Vec<(String, String)>, rate: f64) -> Sends {
    let times = Arc::new(Mutex::new(vec![SendTimes::default(); senders.len()]));
    let pool: Arc<Mutex<Vec<Conn>>> = Arc::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(SEND_CONCURRENCY));
    let failures: Arc<Mutex<(usize, Option<String>)>> = Arc::default();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(senders.len());
    for (seq, (room, token)) in senders.into_iter().enumerate() {
        let due = start + Duration::from_secs_f64(seq as f64 / rate);
        tokio::time::sleep_until(due).await;
        let (times, pool, gate, failures) = (
            Arc::clone(&times),
            Arc::clone(&pool),
            Arc::clone(&gate),
            Arc::clone(&failures),
        );
        tasks.push(tokio::spawn(async move {
            let due = due.into_std();
            times.lock().expect("times lock")[seq].due = Some(due);
            let _permit = gate.acquire().await.expect("semaphore never closed");
            let pooled = pool.lock().expect("pool lock").pop();
            let conn = match pooled {
                Some(conn) if !conn.is_closed() => Ok(conn),
                _ => connect(addr).await,
            };
            let path = format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/crowd{seq}",
                enc(&room)
            );
            let content =
                json!({ "msgtype": "m.text", "body": format!("crowd {seq}"), "seq": seq });
            let result = match conn {
                Ok(mut conn) => {
                    let result = request(
                        &mut conn,
                        addr,
                        "PUT",
                        &path,
                        &token,
                        Some(content.to_string().into_bytes()),
                    )
                    .await;
                    pool.lock().expect("pool lock").push(conn);
                    result
                }
                Err(err) => Err(err),
            };
            match result {
                Ok((200, _)) => times.lock().expect("times lock")[seq].ok = Some(Instant::now()),
                other => {
                    let why = match other {
                        Ok((status, body)) => {
                            format!("{status} {}", String::from_utf8_lossy(&body))
                        }
                        Err(err) => err,
                    };
                    let mut failures = failures.lock().expect("failures lock");
                    failures.0 += 1;
                    failures.1.get_or_insert(why);
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("send task");
    }
    let times = std::mem::take(&mut *times.lock().expect("times lock"));
    let (errors, first_error) = std::mem::take(&mut *failures.lock().expect("failures lock"));
    Sends {
        times,
        errors,
        first_error,
    }
}
