//! Load benchmark for the release homeserver.
//!
//! Starts `target/release/homeserver` with rate limiting disabled, registers users, puts them in
//! one room, and has K sender threads post M messages each while one client long-polls `/sync`.
//! Prints throughput, send latency, send→sync delivery latency, idle and peak RSS and cold-start
//! time. Closed loop by default (each sender sends as fast as it is answered); `--rate R` offers a
//! fixed total rate instead, measuring latency from each message's scheduled time.
//!
//! With `--wal` it also samples the write-ahead log while the senders run: its peak size, the
//! WAL frames appended per message (counted from the WAL header, valid while no checkpoint
//! restarts the log during the run, so pair it with `--config` settings that hold checkpoints
//! off), and, after a `kill -9` that keeps the log, which tables and indexes those frames
//! rewrote (SQLite's `dbstat`).
//!
//! With `--tls` the client API is served over HTTPS (a certificate from the unit CA) and every
//! client trusts only that CA; it first prints the time to a first answer on a new connection
//! with and without the TLS handshake.
//!
//! With `--rooms N` it measures one account in N rooms instead (see `rooms.rs`).
//!
//! With `--bigroom N` it measures a room with N members and a second unit joining it over
//! federation (see `bigroom.rs`); with `--federation N`, N messages from K senders on one unit
//! to a peer and the peer's catch-up after an outage of `--outage` messages (see
//! `federation.rs`). Both need 127.0.0.2 and .3 on the loopback interface.
//!
//! With `--crowd N` it measures N users each long-polling `/sync` in N/5 rooms of 25 while
//! `--rate` messages/s (default 200) are offered for `--seconds` (default 60): delivery to every
//! member, server CPU, peak RSS, WAL growth (see `crowd.rs`).
//!
//! With `--compare synapse` it runs the send scenario (and with `--rooms N` the rooms scenario)
//! on Outpost and then on a stock Synapse from the pinned venv, and prints each figure's ratio
//! (see `synapse.rs`).
//!
//! With `--appservice` it measures the homeserver -> appservice path instead: a test
//! appservice (`tests::appservice`) whose namespace holds a member of the room receives the
//! K x M messages; it prints events/s and transactions/s delivered, the send -> appservice
//! receipt delay (p50/p99), and the catch-up time after a 10,000-event outage.
//!
//! Usage: `cargo run --release -p tests --bin bench -- [--senders K] [--messages M]
//! [--users N] [--rate R] [--wal] [--tls] [--appservice] [--rooms N] [--bigroom N]
//! [--federation N [--outage N]] [--crowd N [--seconds S]] [--compare synapse] [--config TOML]`. It asserts nothing
//! about speed.

mod bigroom;
mod crowd;
mod federation;
mod rooms;
mod synapse;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use synapse::{Synapse, Target};
use tests::bench::{mib, ms, percentiles, row};
use tests::{Client, TestEnv, Value, enc, json, str_field};

const HELP: &str = "\
bench: load benchmark for the Outpost homeserver

USAGE:
    cargo run --release -p tests --bin bench -- [OPTIONS]

OPTIONS:
    --senders K     concurrent sender threads (default 4)
    --messages M    messages per sender (default 500)
    --users N       users registered and joined; at least K + 1 (default K + 1)
    --rate R        offer R messages/s in total instead of sending as fast as possible
    --wal           sample the WAL: peak size, frames per message, pages rewritten per table
    --tls           serve the client API over HTTPS (unit CA) and measure the TLS handshake
                    (ends the server with kill -9 so the log can be read afterwards)
    --appservice    measure delivery to an appservice (throughput, delay, outage catch-up)
    --rooms N       one account in N rooms: initial, lazy and incremental /sync, sliding sync
    --bigroom N     a room with N members: send, /members, initial /sync, a federated join
    --federation N  N messages from K senders on unit A to unit B, then an outage
    --outage N      messages sent while B is down with --federation (default 100000; 0 skips)
    --crowd N       N users each long-polling /sync in N/5 rooms of 25, --rate msg/s offered
                    (default 200) for --seconds: delivery p50/p99/max, CPU, RSS, WAL
    --seconds S     how long --crowd offers its messages (default 60)
    --compare SERVER  also run the send scenario (and --rooms N) on SERVER (only \"synapse\",
                    from target/synapse-venv or $OUTPOST_SYNAPSE_VENV) and print the ratios
    --config TOML   extra TOML appended to the server's config (e.g. \"[storage]\\n...\")
    -h, --help      print this help";

/// Parsed command line.
#[derive(Debug, Clone)]
struct Args {
    senders: usize,
    messages: usize,
    users: usize,
    rate: Option<f64>,
    wal: bool,
    tls: bool,
    appservice: bool,
    rooms: Option<usize>,
    bigroom: Option<usize>,
    federation: Option<usize>,
    outage: usize,
    crowd: Option<usize>,
    seconds: u64,
    compare: bool,
    config: String,
}

impl Args {
    fn parse(mut raw: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
        let mut senders = 4usize;
        let mut messages = 500usize;
        let mut users = None;
        let mut rate = None;
        let mut wal = false;
        let mut tls = false;
        let mut appservice = false;
        let mut rooms = None;
        let mut bigroom = None;
        let mut federation = None;
        let mut outage = 100_000;
        let mut crowd = None;
        let mut seconds = 60;
        let mut compare = false;
        let mut config = String::new();
        while let Some(flag) = raw.next() {
            let mut value = |name: &str| raw.next().ok_or(format!("{name} needs a value"));
            match flag.as_str() {
                "-h" | "--help" => return Ok(None),
                "--senders" => senders = parse_number(&value("--senders")?)?,
                "--messages" => messages = parse_number(&value("--messages")?)?,
                "--users" => users = Some(parse_number(&value("--users")?)?),
                "--wal" => wal = true,
                "--tls" => tls = true,
                "--appservice" => appservice = true,
                "--rooms" => rooms = Some(parse_number(&value("--rooms")?)?),
                "--bigroom" => bigroom = Some(parse_number(&value("--bigroom")?)?),
                "--federation" => federation = Some(parse_number(&value("--federation")?)?),
                "--outage" => outage = parse_number(&value("--outage")?)?,
                "--crowd" => crowd = Some(parse_number(&value("--crowd")?)?),
                "--seconds" => seconds = parse_number(&value("--seconds")?)? as u64,
                "--compare" => match value("--compare")?.as_str() {
                    "synapse" => compare = true,
                    other => return Err(format!("--compare: only synapse is known, not {other}")),
                },
                "--config" => config = value("--config")?.replace("\\n", "\n"),
                "--rate" => {
                    let text = value("--rate")?;
                    let r: f64 = text
                        .parse()
                        .map_err(|_| format!("--rate: not a number: {text}"))?;
                    if !(r > 0.0 && r.is_finite()) {
                        return Err(format!("--rate must be positive, got {text}"));
                    }
                    rate = Some(r);
                }
                other => return Err(format!("unknown argument {other:?}; see --help")),
            }
        }
        if senders == 0 || messages == 0 {
            return Err("--senders and --messages must be at least 1".to_owned());
        }
        let users = users.unwrap_or(senders + 1).max(senders + 1);
        Ok(Some(Args {
            senders,
            messages,
            users,
            rate,
            wal,
            tls,
            appservice,
            rooms,
            bigroom,
            federation,
            outage,
            crowd,
            seconds,
            compare,
            config,
        }))
    }
}

fn parse_number(text: &str) -> Result<usize, String> {
    text.parse().map_err(|_| format!("not a number: {text}"))
}

/// What one sender thread measured.
#[derive(Debug, Default)]
struct SenderStats {
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
}

/// What the syncing client measured.
#[derive(Debug, Default)]
struct SyncStats {
    delivery: Vec<Duration>,
    limited_responses: usize,
}

fn main() -> ExitCode {
    match Args::parse(std::env::args().skip(1)) {
        Ok(Some(args)) if args.compare => {
            run_compare(&args);
            ExitCode::SUCCESS
        }
        Ok(Some(Args {
            crowd: Some(users),
            rate,
            seconds,
            config,
            ..
        })) => {
            crowd::run(&crowd::Crowd {
                users,
                rate: rate.unwrap_or(200.0),
                seconds,
                config,
            });
            ExitCode::SUCCESS
        }
        Ok(Some(args)) if args.rooms.is_some() => {
            rooms::run(args.rooms.unwrap_or_default(), &args.config);
            ExitCode::SUCCESS
        }
        Ok(Some(Args {
            bigroom: Some(members),
            config,
            ..
        })) => {
            bigroom::run(members, &config);
            ExitCode::SUCCESS
        }
        Ok(Some(Args {
            federation: Some(messages),
            outage,
            senders,
            config,
            ..
        })) => {
            federation::run(messages, outage, senders, &config);
            ExitCode::SUCCESS
        }
        Ok(Some(args)) if args.appservice => {
            run_appservice(&args);
            ExitCode::SUCCESS
        }
        Ok(Some(args)) => {
            run(args);
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("{HELP}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("bench: {message}");
            ExitCode::from(2)
        }
    }
}

/// Connections measured for the handshake cost.
const HANDSHAKES: u32 = 200;

/// Prints the median and p99 time to a first answer on a new connection: TCP connect plus
/// `GET /_matrix/client/versions` in clear on a plain listener started for the comparison, and
/// with a full TLS handshake (TLS 1.3, ECDSA P-256) first on `env`.
fn handshake_cost(env: &TestEnv) {
    let plain = TestEnv::with_config("");
    let mut clear = Vec::new();
    for _ in 0..HANDSHAKES {
        let start = Instant::now();
        let reply = tests::raw_http(
            plain.addr(),
            "GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost",
            b"",
        )
        .expect("plain request");
        assert_eq!(reply.status, 200);
        clear.push(start.elapsed());
    }
    let config = tests::tls::client_config(&env.ca_pem(), &[b"http/1.1"]);
    let mut secure = Vec::new();
    for _ in 0..HANDSHAKES {
        let start = Instant::now();
        let mut stream =
            tests::tls::tls_connect(env.addr(), "localhost", config.clone()).expect("TLS");
        tests::tls::send_request(
            &mut stream,
            "GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\nConnection: close",
            b"",
        )
        .expect("sends");
        let reply = tests::tls::read_reply(&mut stream).expect("answers");
        assert_eq!(reply.status, 200);
        secure.push(start.elapsed());
    }
    for (label, mut samples) in [
        ("new conn + 1st answer, HTTP", clear),
        ("new conn + 1st answer, TLS 1.3", secure),
    ] {
        samples.sort();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
        row(label, format!("p50 {} / p99 {}", ms(at(0.5)), ms(at(0.99))));
    }
}

fn run(args: Args) {
    println!("Outpost bench: {}", describe(&args));
    let extra = server_config(&args);
    let mut env = if args.tls {
        TestEnv::tls(&extra)
    } else {
        TestEnv::with_config(&extra)
    };
    if args.tls {
        handshake_cost(&env);
    }
    row("cold start to listening", ms(env.startup_time()));
    row(
        "idle RSS (VmRSS)",
        mib(env.idle_rss_kib().unwrap_or_default()),
    );
    let wal = args.wal.then(|| wal_path(&env.db_path()));
    let figures = send_scenario(&Target::Outpost(&env), &args, wal.as_deref());
    if let Some((before, after, peak)) = figures.wal {
        report_wal(&mut env, &before, &after, figures.sent, peak);
        return;
    }
    let status = env.sigterm();
    row("server exit after SIGTERM", status);
}

/// `K senders x M messages, N users, <rate>` for the report's first line.
fn describe(args: &Args) -> String {
    let rate_text = args.rate.map_or_else(
        || "closed loop".to_owned(),
        |r| format!("{r} msg/s offered"),
    );
    format!(
        "{} senders x {} messages, {} users, {rate_text}",
        args.senders, args.messages, args.users
    )
}

/// Outpost's config for the send scenario: open registration, no rate limits, `--config`.
fn server_config(args: &Args) -> String {
    // With --wal the server logs each restart checkpoint's writer pause for the report.
    let log = if args.wal {
        "[log]\nlevel = \"info,homeserver::wal=debug\"\n"
    } else {
        ""
    };
    format!(
        "[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n\n{log}\n{}\n",
        args.config
    )
}

/// What the send scenario measured, for a comparison between servers.
struct SendFigures {
    /// Messages answered 200.
    sent: usize,
    /// Of them, per second of the sending phase.
    throughput: f64,
    /// Send latencies, sorted.
    send: Vec<Duration>,
    /// Send -> `/sync` delivery, sorted.
    delivery: Vec<Duration>,
    /// Server CPU per message, sends and `/sync` together.
    cpu_per_message: Option<Duration>,
    /// Peak RSS of the server process, KiB.
    peak_kib: u64,
    /// With `--wal`: the log's header before and after the sends, and its peak size.
    wal: Option<(WalHeader, WalHeader, u64)>,
}

/// The send scenario on `target`: K senders post M messages each into one room (closed loop,
/// or paced to `--rate`) while its first member long-polls `/sync`; prints the figures and
/// returns them. With `wal`, samples that log file too.
fn send_scenario(target: &Target<'_>, args: &Args, wal: Option<&Path>) -> SendFigures {
    let users: Vec<Client> = (0..args.users)
        .map(|i| target.register(&format!("bench{i}")))
        .collect();
    let room = users[0].create_room(&json!({ "preset": "public_chat", "name": "bench" }));
    for user in &users[1..] {
        user.join(&room);
    }

    let epoch = Instant::now();
    let total = args.senders * args.messages;
    let senders_done = Arc::new(AtomicBool::new(false));
    let sync_stats = Arc::new(Mutex::new(SyncStats::default()));
    let since = str_field(
        &users[0].sync(
            None,
            0,
            Some(&json!({ "room": { "timeline": { "limit": 1 } } })),
        ),
        "next_batch",
    );
    let listener = {
        let (client, room) = (users[0].clone(), room.clone());
        let (done, stats) = (Arc::clone(&senders_done), Arc::clone(&sync_stats));
        thread::spawn(move || listen(&client, &room, since, total, epoch, &done, &stats))
    };

    let wal_start = wal.map(WalHeader::read);
    let wal_peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = wal.map(|path| {
        let (path, peak, done) = (
            path.to_path_buf(),
            Arc::clone(&wal_peak),
            Arc::clone(&senders_done),
        );
        thread::spawn(move || sample_wal(&path, &peak, &done))
    });

    let cpu_start = target.cpu_time();
    let start = Instant::now();
    let threads: Vec<_> = (0..args.senders)
        .map(|s| {
            let (client, room, args) = (users[1 + s].clone(), room.clone(), args.clone());
            thread::spawn(move || send(&client, &room, s, &args, epoch))
        })
        .collect();
    let mut sent = SenderStats::default();
    for thread in threads {
        let stats = thread.join().expect("sender thread panicked");
        sent.latencies.extend(stats.latencies);
        sent.errors += stats.errors;
        sent.first_error = sent.first_error.or(stats.first_error);
    }
    let elapsed = start.elapsed();
    let wal_end = wal.map(WalHeader::read);
    senders_done.store(true, Ordering::SeqCst);
    if let Some(sampler) = sampler {
        sampler.join().expect("WAL sampler panicked");
    }
    listener.join().expect("sync thread panicked");
    let cpu_used = target
        .cpu_time()
        .zip(cpu_start)
        .map(|(end, start)| end.saturating_sub(start));
    let peak = target.proc_status_kib("VmHWM").unwrap_or_default();

    let ok_count = sent.latencies.len();
    row(
        "messages sent",
        format!(
            "{ok_count} ok, {} errors in {:.2} s -> {:.0} msg/s",
            sent.errors,
            elapsed.as_secs_f64(),
            ok_count as f64 / elapsed.as_secs_f64()
        ),
    );
    if let Some(error) = &sent.first_error {
        row("first send error", error);
    }
    let basis = if args.rate.is_some() {
        " (from schedule)"
    } else {
        ""
    };
    row(
        &format!("send latency{basis}"),
        percentiles(&mut sent.latencies),
    );
    let mut sync = std::mem::take(&mut *sync_stats.lock().expect("sync stats lock"));
    let delivered = sync.delivery.len();
    row(
        &format!("send->sync delivery{basis}"),
        percentiles(&mut sync.delivery),
    );
    row(
        "delivered via /sync",
        format!(
            "{delivered} of {ok_count} ({} limited responses)",
            sync.limited_responses
        ),
    );
    let cpu_per_message = cpu_used.map(|cpu| cpu / u32::try_from(ok_count.max(1)).unwrap_or(1));
    if let (Some(cpu), Some(per)) = (cpu_used, cpu_per_message) {
        row(
            "server CPU, sends + /sync",
            format!(
                "{:.2} s -> {:.0} us per message",
                cpu.as_secs_f64(),
                per.as_secs_f64() * 1e6
            ),
        );
    }
    row("peak RSS (VmHWM)", mib(peak));
    SendFigures {
        sent: ok_count,
        throughput: ok_count as f64 / elapsed.as_secs_f64(),
        send: sent.latencies,
        delivery: sync.delivery,
        cpu_per_message,
        peak_kib: peak,
        wal: wal_start
            .zip(wal_end)
            .map(|(before, after)| (before, after, wal_peak.load(Ordering::SeqCst))),
    }
}

/// `--compare synapse`: the send scenario (and with `--rooms N` the rooms scenario) on
/// Outpost, then on a stock Synapse, each on a fresh server, and the ratio of each figure.
fn run_compare(args: &Args) {
    println!(
        "Outpost vs Synapse ({}): {}",
        tests::venv::SYNAPSE_REQUIREMENT,
        describe(args)
    );
    let env = TestEnv::with_config(&server_config(args));
    println!("--- Outpost: send");
    let outpost = send_scenario(&Target::Outpost(&env), args, None);
    drop(env);
    let synapse = Synapse::start();
    println!("--- Synapse: send");
    let stock = send_scenario(&Target::Synapse(&synapse), args, None);
    drop(synapse);
    println!("--- send: Outpost vs Synapse (ratio > 1: Outpost better)");
    let at = |sample: &[Duration], q: f64| {
        sample
            .get(((sample.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
    };
    compare_row(
        "throughput, msg/s",
        format!("{:.0}", outpost.throughput),
        format!("{:.0}", stock.throughput),
        outpost.throughput / stock.throughput.max(1e-9),
    );
    for (label, a, b) in [
        (
            "send latency p50",
            at(&outpost.send, 0.5),
            at(&stock.send, 0.5),
        ),
        (
            "send latency p99",
            at(&outpost.send, 0.99),
            at(&stock.send, 0.99),
        ),
        (
            "delivery p50",
            at(&outpost.delivery, 0.5),
            at(&stock.delivery, 0.5),
        ),
        (
            "delivery p99",
            at(&outpost.delivery, 0.99),
            at(&stock.delivery, 0.99),
        ),
        (
            "server CPU per message",
            outpost.cpu_per_message,
            stock.cpu_per_message,
        ),
    ] {
        if let (Some(a), Some(b)) = (a, b) {
            compare_row(
                label,
                ms(a),
                ms(b),
                b.as_secs_f64() / a.as_secs_f64().max(1e-9),
            );
        }
    }
    compare_row(
        "peak RSS",
        mib(outpost.peak_kib),
        mib(stock.peak_kib),
        stock.peak_kib as f64 / outpost.peak_kib.max(1) as f64,
    );
    if let Some(n) = args.rooms {
        let env = TestEnv::with_config(&rooms::server_config(&args.config));
        println!("--- Outpost: one account in {n} rooms");
        let outpost = rooms::scenario(&Target::Outpost(&env), n);
        drop(env);
        let synapse = Synapse::start();
        println!("--- Synapse: one account in {n} rooms");
        let stock = rooms::scenario(&Target::Synapse(&synapse), n);
        drop(synapse);
        println!("--- rooms: Outpost vs Synapse, p50 wall time (ratio > 1: Outpost faster)");
        for (label, a) in &outpost {
            if let Some((_, b)) = stock.iter().find(|(other, _)| other == label) {
                compare_row(
                    label,
                    ms(*a),
                    ms(*b),
                    b.as_secs_f64() / a.as_secs_f64().max(1e-9),
                );
            }
        }
    }
}

/// One line of a comparison: the figure on each server and their ratio.
fn compare_row(label: &str, outpost: String, synapse: String, ratio: f64) {
    row(
        label,
        format!("Outpost {outpost:>12}   Synapse {synapse:>12}   ratio {ratio:.2}"),
    );
}

/// Prints how long the writer paused for its restart checkpoints (sends queue behind it),
/// from the `homeserver::wal` debug lines, and how many of them left the log unrestarted
/// because a reader was still on an older snapshot.
fn report_checkpoint_pauses(log: &str) {
    let mut pauses = Vec::new();
    let mut busy = 0;
    for line in log
        .lines()
        .filter(|line| line.contains("WAL restart checkpoint"))
    {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(name))
                .map(|value| value.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
        };
        if let Some(micros) = field("pause_us=").and_then(|value| value.parse().ok()) {
            pauses.push(Duration::from_micros(micros));
        }
        if field("busy=") == Some("true") {
            busy += 1;
        }
    }
    if pauses.is_empty() {
        row("writer pause per restart checkpoint", "none logged");
        return;
    }
    let count = pauses.len();
    row(
        "writer pause per restart checkpoint",
        format!(
            "{} ({count} checkpoints, {busy} left the log unrestarted)",
            percentiles(&mut pauses)
        ),
    );
}

/// `<db>-wal`.
fn wal_path(db: &Path) -> PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push("-wal");
    PathBuf::from(path)
}

/// Polls the WAL file's size every 10 ms until `done`, keeping the largest seen.
fn sample_wal(path: &Path, peak: &std::sync::atomic::AtomicU64, done: &AtomicBool) {
    while !done.load(Ordering::SeqCst) {
        let size = std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0);
        peak.fetch_max(size, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(10));
    }
}

/// What the WAL file says about itself: its salts (which change when a checkpoint restarts
/// the log) and the valid frames after the header, with each frame's page number.
#[derive(Debug, Default)]
struct WalHeader {
    salts: Option<[u8; 8]>,
    page_size: usize,
    frames: Vec<u32>,
    commits: usize,
}

impl WalHeader {
    /// Reads the log; frames count while their salts match the header's (a frame left over
    /// from before a restart carries the old salts). Checksums are not verified: this is a
    /// benchmark of a log the server just wrote, not a recovery.
    fn read(path: &Path) -> WalHeader {
        let Ok(bytes) = std::fs::read(path) else {
            return WalHeader::default();
        };
        if bytes.len() < 32 {
            return WalHeader::default();
        }
        let be32 = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let page_size = be32(8) as usize;
        let salts: [u8; 8] = bytes[16..24].try_into().expect("8 bytes");
        let mut frames = Vec::new();
        let mut commits = 0;
        let mut at = 32;
        while page_size > 0 && at + 24 + page_size <= bytes.len() {
            if bytes[at + 8..at + 16] != salts {
                break;
            }
            frames.push(be32(at));
            if be32(at + 4) != 0 {
                commits += 1;
            }
            at += 24 + page_size;
        }
        WalHeader {
            salts: Some(salts),
            page_size,
            frames,
            commits,
        }
    }
}

/// Prints the WAL figures; ends the server with `kill -9` first so the log stays on disk for
/// attributing its frames to tables.
fn report_wal(env: &mut TestEnv, before: &WalHeader, after: &WalHeader, sent: usize, peak: u64) {
    row("peak WAL size", mib(peak / 1024));
    report_checkpoint_pauses(&env.log());
    let frame_bytes = (after.page_size + 24) as u64;
    if before.salts != after.salts || after.frames.len() < before.frames.len() {
        row(
            "WAL frames per message",
            "not measured: a checkpoint restarted the log during the run \
             (hold checkpoints off with --config to measure it)",
        );
    } else if sent > 0 {
        let frames = after.frames.len() - before.frames.len();
        let commits = after.commits - before.commits;
        row(
            "WAL appended per message",
            format!(
                "{:.1} frames = {:.1} KiB ({} frames of {} B in {} commits, {:.2} messages per \
                 commit)",
                frames as f64 / sent as f64,
                (frames as u64 * frame_bytes) as f64 / sent as f64 / 1024.0,
                frames,
                frame_bytes,
                commits,
                sent as f64 / commits.max(1) as f64,
            ),
        );
    }
    env.kill9();
    let wal = WalHeader::read(&wal_path(&env.db_path()));
    let run = &wal.frames[before.frames.len().min(wal.frames.len())..];
    if before.salts != wal.salts || run.is_empty() {
        return;
    }
    let owners = match page_owners(&env.db_path()) {
        Ok(owners) => owners,
        Err(err) => {
            row("WAL frames by table", format!("dbstat failed: {err}"));
            return;
        }
    };
    let mut by_owner: HashMap<&str, usize> = HashMap::new();
    for page in run {
        let owner = owners
            .get(page)
            .map_or("(free or new page)", String::as_str);
        *by_owner.entry(owner).or_default() += 1;
    }
    let mut ranked: Vec<_> = by_owner.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    println!("WAL frames written during the run, by table or index (frames per message):");
    for (owner, frames) in ranked.iter().take(25) {
        println!(
            "    {owner:<48}{frames:>9} ({:.2})",
            *frames as f64 / sent.max(1) as f64
        );
    }
}

/// Which table or index owns each page, from SQLite's `dbstat` (after the log is recovered).
fn page_owners(db: &Path) -> rusqlite::Result<HashMap<u32, String>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut statement = conn.prepare("SELECT name, pageno FROM dbstat")?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, u32>(1)?, row.get::<_, String>(0)?))
    })?;
    rows.collect()
}

/// One sender: `args.messages` messages, closed loop or paced to its share of `args.rate`.
fn send(client: &Client, room: &str, sender: usize, args: &Args, epoch: Instant) -> SenderStats {
    let mut stats = SenderStats::default();
    // Each sender offers rate/K; senders are staggered so the total is evenly spaced.
    let pacing = args.rate.map(|rate| {
        let interval = Duration::from_secs_f64(args.senders as f64 / rate);
        let offset = Duration::from_secs_f64(sender as f64 / rate);
        (Instant::now() + offset, interval)
    });
    for i in 0..args.messages {
        let origin = match pacing {
            Some((first, interval)) => {
                let due = first + interval * u32::try_from(i).unwrap_or(u32::MAX);
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                due
            }
            None => Instant::now(),
        };
        let t_ns = u64::try_from(origin.duration_since(epoch).as_nanos()).unwrap_or(u64::MAX);
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/b{sender}-{i}",
            enc(room)
        );
        let content = json!({
            "msgtype": "m.text",
            "body": format!("bench {sender}/{i}"),
            "t_ns": t_ns,
        });
        match client.try_call("PUT", &path, Some(&content)) {
            Ok((200, _)) => stats.latencies.push(origin.elapsed()),
            Ok((status, body)) => {
                stats.errors += 1;
                stats.first_error.get_or_insert(format!("{status} {body}"));
            }
            Err(err) => {
                stats.errors += 1;
                stats.first_error.get_or_insert(err.to_string());
            }
        }
    }
    stats
}

/// Long-polls `/sync` until `total` messages arrived, or the senders are done and nothing more
/// arrives for a few seconds; records each message's delivery latency.
fn listen(
    client: &Client,
    room: &str,
    mut since: String,
    total: usize,
    epoch: Instant,
    senders_done: &AtomicBool,
    stats: &Mutex<SyncStats>,
) {
    let filter = json!({
        "room": { "timeline": { "limit": 1000, "types": ["m.room.message"] } },
        "presence": { "not_types": ["*"] },
    });
    let mut seen = 0usize;
    let mut quiet_since: Option<Instant> = None;
    while seen < total {
        let response: Value = match client.try_call(
            "GET",
            &format!(
                "/_matrix/client/v3/sync?{}",
                tests::sync_query(Some(&since), 5000, Some(&filter))
            ),
            None,
        ) {
            Ok((200, body)) => body,
            Ok((status, body)) => {
                eprintln!("sync failed: {status} {body}");
                return;
            }
            Err(err) => {
                eprintln!("sync failed: {err}");
                return;
            }
        };
        let received = epoch.elapsed();
        let events = tests::timeline(&response, room);
        let mut stats = stats.lock().expect("sync stats lock");
        if response["rooms"]["join"][room]["timeline"]["limited"] == true {
            stats.limited_responses += 1;
        }
        for event in &events {
            if let Some(t_ns) = event["content"]["t_ns"].as_u64() {
                stats
                    .delivery
                    .push(received.saturating_sub(Duration::from_nanos(t_ns)));
                seen += 1;
            }
        }
        drop(stats);
        match response["next_batch"].as_str() {
            Some(next) => since = next.to_owned(),
            None => return,
        }
        if events.is_empty() && senders_done.load(Ordering::SeqCst) {
            let quiet = *quiet_since.get_or_insert_with(Instant::now);
            if quiet.elapsed() > Duration::from_secs(5) {
                return;
            }
        } else {
            quiet_since = None;
        }
    }
}

/// Messages sent while the appservice is down, for the catch-up figure.
const OUTAGE_EVENTS: usize = 10_000;

/// `--appservice`: delivery to a local appservice (see the module header).
fn run_appservice(args: &Args) {
    use tests::appservice::{Behaviour, TestAppservice};
    println!(
        "Outpost appservice bench: {} senders x {} messages, then a {OUTAGE_EVENTS}-event outage",
        args.senders, args.messages
    );
    let appservice = TestAppservice::start("hs-bench");
    let yaml = appservice.registration(
        "bench",
        "as-bench",
        "benchbot",
        [&["@ghost_.*"], &[], &[]],
        "",
    );
    let extra = format!(
        "[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n\n\
         [appservices]\nretry_cap_secs = 1\n\n{}\n",
        args.config
    );
    let (env, ()) = TestEnv::with_config_setup(&extra, |data| {
        TestAppservice::install(data, "bench", &yaml);
    });
    let senders: Vec<Client> = (0..args.senders)
        .map(|i| env.register(&format!("bench{i}")))
        .collect();
    let ghost = env.register("ghost_listener");
    let room = senders[0].create_room(&json!({ "preset": "public_chat" }));
    for user in senders[1..].iter().chain([&ghost]) {
        user.join(&room);
    }
    let wait_all = |ids: &[String], deadline: Duration| -> Option<Instant> {
        let want: std::collections::HashSet<&String> = ids.iter().collect();
        let start = Instant::now();
        loop {
            let arrivals = appservice.event_arrivals();
            let got: Vec<&Instant> = arrivals
                .iter()
                .filter(|(id, _)| want.contains(id))
                .map(|(_, at)| at)
                .collect();
            if got.len() >= want.len() {
                return got.into_iter().max().copied();
            }
            if start.elapsed() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    };

    // Live: K senders as fast as answered; each message's delay is from just before its send
    // to its transaction's arrival.
    let txns_before = appservice.transaction_count();
    let started = Instant::now();
    let sent: Vec<(String, Instant)> = thread::scope(|scope| {
        let handles: Vec<_> = senders
            .iter()
            .map(|client| {
                let room = room.clone();
                scope.spawn(move || {
                    (0..args.messages)
                        .map(|i| {
                            let at = Instant::now();
                            (client.send_text(&room, &format!("as bench {i}")), at)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("sender thread"))
            .collect()
    });
    let ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    let Some(last) = wait_all(&ids, Duration::from_secs(300)) else {
        println!("not every event reached the appservice within 5 minutes");
        return;
    };
    let elapsed = last.duration_since(started);
    let txns = appservice.transaction_count() - txns_before;
    let arrivals: HashMap<String, Instant> = appservice.event_arrivals().into_iter().collect();
    let mut delays: Vec<Duration> = sent
        .iter()
        .filter_map(|(id, at)| arrivals.get(id).map(|got| got.duration_since(*at)))
        .collect();
    row("events delivered", ids.len());
    row(
        "events/s delivered",
        format!("{:.0}", ids.len() as f64 / elapsed.as_secs_f64()),
    );
    row(
        "transactions/s delivered",
        format!(
            "{:.0} ({txns} transactions)",
            txns as f64 / elapsed.as_secs_f64()
        ),
    );
    row("send -> appservice receipt", percentiles(&mut delays));

    // Outage: the appservice answers 500 while OUTAGE_EVENTS messages are sent, then recovers.
    appservice.set_behaviour(Behaviour::Error500);
    let per_sender = OUTAGE_EVENTS.div_ceil(senders.len());
    let queued: Vec<String> = thread::scope(|scope| {
        let handles: Vec<_> = senders
            .iter()
            .map(|client| {
                let room = room.clone();
                scope.spawn(move || {
                    (0..per_sender)
                        .map(|i| client.send_text(&room, &format!("outage {i}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("sender thread"))
            .collect()
    });
    let recovered = Instant::now();
    appservice.set_behaviour(Behaviour::Normal);
    let Some(last) = wait_all(&queued, Duration::from_secs(600)) else {
        println!("the outage's events did not all arrive within 10 minutes");
        return;
    };
    row("events queued during the outage", queued.len());
    row(
        "catch-up after the outage",
        format!(
            "{} (from recovery to the last event; includes up to the 1 s backoff cap)",
            ms(last.duration_since(recovered))
        ),
    );
}
