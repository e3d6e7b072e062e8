//! Federation figures for the closing note: send→sync latency across units, and how long a
//! unit that was down takes to converge after a partition.
//!
//! 1. Latency: units A and B, a room shared by alice@A and bob@B. Alice sends M messages one at a
//!    time; bob long-polls `/sync` on B. Each sample is the time from starting the `PUT /send`
//!    on A to the event appearing in a `/sync` response on B (one message in flight).
//! 2. Convergence: units A, B, C sharing a room; C is stopped (SIGTERM), A and B send N messages
//!    between them (alternating, or A only with `--one-sender`), C is restarted. Reported: the
//!    time from spawning C to C's `/sync` having delivered all N messages, and to all three units
//!    reporting identical current state.
//!
//! Usage: `cargo run --release -p tests --bin fedbench -- [--messages M] [--partition N]
//! [--one-sender]`. Needs the release homeserver (`cargo build --release -p homeserver`) and
//! 127.0.0.2–4 on the loopback interface. It asserts nothing about speed.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use tests::bench::{ms, percentiles};
use tests::federation::{Federation, share_room, state_ids};
use tests::{Client, json, str_field};

const HELP: &str = "\
fedbench: federation figures for the Outpost homeserver

USAGE:
    cargo run --release -p tests --bin fedbench -- [OPTIONS]

OPTIONS:
    --messages M    messages for the A→B send→sync latency (default 500; 0 skips)
    --partition N   messages sent while C is down (default 1000; 0 skips)
    --one-sender    only A sends during the partition (default: A and B alternate)
    -h, --help      print this help";

/// Parsed command line.
#[derive(Debug, Clone, Copy)]
struct Args {
    messages: usize,
    partition: usize,
    one_sender: bool,
}

impl Args {
    fn parse(mut raw: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
        let mut args = Args {
            messages: 500,
            partition: 1000,
            one_sender: false,
        };
        while let Some(flag) = raw.next() {
            let mut number = |name: &str| -> Result<usize, String> {
                let text = raw.next().ok_or(format!("{name} needs a value"))?;
                text.parse()
                    .map_err(|_| format!("{name}: not a number: {text}"))
            };
            match flag.as_str() {
                "-h" | "--help" => return Ok(None),
                "--messages" => args.messages = number("--messages")?,
                "--partition" => args.partition = number("--partition")?,
                "--one-sender" => args.one_sender = true,
                other => return Err(format!("unknown argument {other:?}; see --help")),
            }
        }
        Ok(Some(args))
    }
}

fn main() -> ExitCode {
    match Args::parse(std::env::args().skip(1)) {
        Ok(Some(args)) => {
            if args.messages > 0 {
                latency(args.messages);
            }
            if args.partition > 0 {
                convergence(args.partition, args.one_sender);
            }
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("{HELP}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("fedbench: {message}");
            ExitCode::from(2)
        }
    }
}

/// Long-polls `/sync` for `client` from `since`, sending `(body, arrival)` for each message
/// body in `room`'s timeline, until `stop` receives a value.
fn watch_bodies(
    client: Client,
    room: String,
    since: String,
    out: mpsc::Sender<(String, Instant)>,
    stop: mpsc::Receiver<()>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let filter = json!({ "room": { "timeline": { "limit": 1000 } } });
        let mut since = since;
        while stop.try_recv().is_err() {
            let sync = client.sync(Some(&since), 1000, Some(&filter));
            let arrived = Instant::now();
            for body in tests::bodies(&tests::timeline(&sync, &room)) {
                if out.send((body, arrived)).is_err() {
                    return;
                }
            }
            since = str_field(&sync, "next_batch");
        }
    })
}

fn latency(messages: usize) {
    println!("== send on A → /sync on B, {messages} messages, one in flight");
    let fed = Federation::start(&["unit-a.test", "unit-b.test"]);
    let alice = fed[0].register("alice");
    let bob = fed[1].register("bob");
    let room = share_room(&alice, &[&bob], &json!({ "preset": "private_chat" }));
    let since = str_field(&bob.sync(None, 0, None), "next_batch");
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel();
    let watcher = watch_bodies(bob.clone(), room.clone(), since, tx, stop_rx);
    let mut delivery = Vec::with_capacity(messages);
    let mut send = Vec::with_capacity(messages);
    for i in 0..messages {
        let body = format!("latency {i}");
        let start = Instant::now();
        alice.send_text(&room, &body);
        send.push(start.elapsed());
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok((seen, at)) if seen == body => {
                    delivery.push(at.duration_since(start));
                    break;
                }
                Ok(_) => {}
                Err(err) => panic!("message {i} never reached B: {err}"),
            }
        }
    }
    let _ = stop_tx.send(());
    let _ = watcher.join();
    println!("PUT /send on A:       {}", percentiles(&mut send));
    println!("send → B's /sync:     {}", percentiles(&mut delivery));
}

fn convergence(partition: usize, one_sender: bool) {
    let senders = if one_sender {
        "A"
    } else {
        "A and B alternating"
    };
    println!("== C converging after a partition of {partition} messages ({senders})");
    let mut fed = Federation::start(&["unit-a.test", "unit-b.test", "unit-c.test"]);
    let alice = fed[0].register("alice");
    let bob = fed[1].register("bob");
    let carol = fed[2].register("carol");
    let room = share_room(
        &alice,
        &[&bob, &carol],
        &json!({ "preset": "private_chat" }),
    );
    let since = str_field(&carol.sync(None, 0, None), "next_batch");
    fed[2].stop();
    let sent_start = Instant::now();
    let mut expected = BTreeSet::new();
    for i in 0..partition {
        let sender = if one_sender || i % 2 == 0 {
            &alice
        } else {
            &bob
        };
        let body = format!("partition {i}");
        sender.send_text(&room, &body);
        expected.insert(body);
    }
    println!(
        "sent {partition} messages in {:.1} s while C was down",
        sent_start.elapsed().as_secs_f64()
    );
    let spawned = Instant::now();
    fed[2].restart();
    let ready = spawned.elapsed();
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel();
    let watcher = watch_bodies(carol.clone(), room.clone(), since, tx, stop_rx);
    let deadline = Duration::from_secs(600);
    let mut missing = expected.clone();
    while !missing.is_empty() {
        match rx.recv_timeout(deadline) {
            Ok((body, _)) => {
                missing.remove(&body);
            }
            Err(err) => panic!(
                "C still misses {} of {partition} messages after {deadline:?}: {err}",
                missing.len()
            ),
        }
        assert!(
            spawned.elapsed() < deadline,
            "C still misses {} of {partition} messages after {deadline:?}",
            missing.len()
        );
    }
    let messages_done = spawned.elapsed();
    let _ = stop_tx.send(());
    let _ = watcher.join();
    loop {
        let maps: Vec<_> = [&alice, &bob, &carol]
            .iter()
            .map(|u| state_ids(u, &room))
            .collect();
        if maps.windows(2).all(|pair| pair[0] == pair[1]) {
            break;
        }
        assert!(
            spawned.elapsed() < deadline,
            "state did not converge within {deadline:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let state_done = spawned.elapsed();
    println!("C ready after restart:           {}", ms(ready));
    println!("all messages in C's /sync after: {}", ms(messages_done));
    println!("identical state on A, B, C after: {}", ms(state_done));
    println!(
        "catch-up rate: {:.0} messages/s (from C ready to last message)",
        partition as f64 / (messages_done - ready).as_secs_f64().max(1e-9)
    );
}
