//! `--federation N`: unit A → unit B throughput to one peer, and B's catch-up after an outage.
//!
//! Units A and B share a room: K senders on A, one member on B. Live: the K senders send N
//! messages in total as fast as A answers; the figure is N over the time from the first send
//! to the last message stored on B. Outage: B is stopped, the senders send `--outage` messages,
//! B is started again; the figure is the time from B's restart to the last of them stored on
//! B. Arrival is read from B's database (read-only, the count of the room's messages), which
//! follows every event whatever order it arrives in, where a client's `/sync` would skip a
//! gap as `limited`.

use std::thread;
use std::time::{Duration, Instant};

use tests::bench::{ms, row};
use tests::federation::{Federation, Unit, share_room};
use tests::{Client, json, process_cpu_time};

use crate::bigroom::cpu_per;

/// Longest wait for B to hold every message of one phase.
const DELIVERY: Duration = Duration::from_secs(900);

/// Runs the scenario: `messages` live, then `outage` during B's outage, from `senders`
/// senders on A.
pub fn run(messages: usize, outage: usize, senders: usize, config: &str) {
    println!(
        "Outpost federation bench: {senders} senders on A, {messages} messages live to B, \
         then {outage} while B is down"
    );
    let options = tests::federation::UnitOptions {
        extra_toml: config.to_owned(),
        ..tests::federation::UnitOptions::default()
    };
    let mut fed = Federation::start_with(&["unit-a.test", "unit-b.test"], &options);
    let alice = fed[0].register("alice");
    let bob = fed[1].register("bob");
    let room = share_room(&alice, &[&bob], &json!({ "preset": "public_chat" }));
    let mut clients = vec![alice];
    for n in 1..senders {
        let client = fed[0].register(&format!("sender{n}"));
        client.join(&room);
        clients.push(client);
    }

    let on_b = stored_messages(&fed[1], &room);
    let cpu = (
        process_cpu_time(fed[0].pid()),
        process_cpu_time(fed[1].pid()),
    );
    let start = Instant::now();
    send_all(&clients, &room, messages, "live");
    let sent = start.elapsed();
    let arrived = wait_for(&fed[1], &room, on_b + messages, start);
    let elapsed = start.elapsed();
    row(
        "live: sent on A",
        format!(
            "{messages} in {:.2} s -> {:.0} msg/s",
            sent.as_secs_f64(),
            messages as f64 / sent.as_secs_f64()
        ),
    );
    row(
        "live: stored on B",
        format!(
            "{} of {messages} after {:.2} s -> {:.0} events/s",
            arrived - on_b,
            elapsed.as_secs_f64(),
            (arrived - on_b) as f64 / elapsed.as_secs_f64()
        ),
    );
    row(
        "live: server CPU of A / B",
        format!(
            "{} / {}",
            cpu_per(process_cpu_time(fed[0].pid()), cpu.0, messages, "event"),
            cpu_per(process_cpu_time(fed[1].pid()), cpu.1, messages, "event"),
        ),
    );
    if outage == 0 {
        return;
    }

    let on_b = arrived;
    fed[1].stop();
    let start = Instant::now();
    send_all(&clients, &room, outage, "outage");
    row(
        "outage: sent on A while B was down",
        format!("{outage} in {:.1} s", start.elapsed().as_secs_f64()),
    );
    let restarted = Instant::now();
    fed[1].restart();
    let ready = restarted.elapsed();
    let cpu = (
        process_cpu_time(fed[0].pid()),
        process_cpu_time(fed[1].pid()),
    );
    let arrived = wait_for(&fed[1], &room, on_b + outage, restarted);
    let elapsed = restarted.elapsed();
    row("outage: B ready after restart", ms(ready));
    row(
        "outage: caught up on B",
        format!(
            "{} of {outage} after {:.2} s from restart -> {:.0} events/s",
            arrived - on_b,
            elapsed.as_secs_f64(),
            (arrived - on_b) as f64 / (elapsed - ready).as_secs_f64().max(1e-9)
        ),
    );
    row(
        "outage: server CPU of A / B",
        format!(
            "{} / {}",
            cpu_per(process_cpu_time(fed[0].pid()), cpu.0, outage, "event"),
            cpu_per(process_cpu_time(fed[1].pid()), cpu.1, outage, "event"),
        ),
    );
}

/// `total` messages from the `clients` in parallel, split evenly, as fast as A answers.
fn send_all(clients: &[Client], room: &str, total: usize, label: &str) {
    let per = total.div_ceil(clients.len());
    thread::scope(|scope| {
        for (n, client) in clients.iter().enumerate() {
            let count = per.min(total.saturating_sub(n * per));
            scope.spawn(move || {
                for i in 0..count {
                    client.send_text(room, &format!("{label} {n}/{i}"));
                }
            });
        }
    });
}

/// Messages of `room` stored on `unit`.
fn stored_messages(unit: &Unit, room: &str) -> usize {
    unit.db()
        .query_row(
            "SELECT count(*) FROM events WHERE room_id = ?1 AND event_type = 'm.room.message'",
            [room],
            |row| row.get::<_, i64>(0),
        )
        .map_or(0, |count| usize::try_from(count).unwrap_or(0))
}

/// Polls until `unit` stores `want` messages of `room` or [`DELIVERY`] after `start` passed;
/// returns the count reached.
fn wait_for(unit: &Unit, room: &str, want: usize, start: Instant) -> usize {
    loop {
        let count = stored_messages(unit, room);
        if count >= want || start.elapsed() > DELIVERY {
            return count;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
