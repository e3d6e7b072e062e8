//! `--rooms N`: one account in N rooms, the shape of a member of a real organisation's unit.
//!
//! The owner creates N private rooms, a second account joins each, and the two post five
//! messages per room. Then it times, repeating each call so a warm figure and its spread show:
//! - initial `/sync` with no filter;
//! - initial `/sync` lazy-loading members with a timeline limit of 1;
//! - incremental `/sync` after one new message in one room;
//! - the first sliding-sync window of 20 rooms (simplified MSC3575, as Element X asks).
//!
//! Each line gives p50, min and max wall time, the response size and the server's CPU per call
//! (from `/proc/<pid>/stat`). It asserts nothing about speed. [`scenario`] runs on any
//! [`Target`], so `--compare synapse` repeats it on Synapse; a server that does not serve
//! sliding sync gets that line skipped.

use std::time::{Duration, Instant};

use tests::{TestEnv, enc, json, str_field};

use crate::synapse::Target;
use tests::bench::{mib, ms, row};

/// Messages posted into each room while setting up.
const MESSAGES_PER_ROOM: usize = 5;
/// Calls measured per figure.
const REPEATS: usize = 7;
/// The sliding-sync path Element X uses.
const SLIDING_SYNC: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// Outpost's config for the scenario: open registration, no rate limits, then `extra`.
pub fn server_config(extra: &str) -> String {
    format!("[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n\n{extra}\n")
}

/// Runs the scenario on Outpost with `rooms` rooms; `extra` is appended to the server's
/// config.
pub fn run(rooms: usize, extra: &str) {
    println!("Outpost bench: one account in {rooms} rooms, {MESSAGES_PER_ROOM} messages each");
    let mut env = TestEnv::with_config(&server_config(extra));
    scenario(&Target::Outpost(&env), rooms);
    row(
        "peak RSS (VmHWM)",
        mib(env.proc_status_kib("VmHWM").unwrap_or_default()),
    );
    row("server exit after SIGTERM", env.sigterm());
}

/// The scenario on `target`: prints a row per figure and returns each label with its p50 wall
/// time.
pub fn scenario(target: &Target<'_>, rooms: usize) -> Vec<(String, Duration)> {
    let owner = target.register("owner");
    let other = target.register("other");
    let mut figures = Vec::new();

    let setup = Instant::now();
    let mut room_ids = Vec::with_capacity(rooms);
    for n in 0..rooms {
        let room = owner.create_room(&json!({
            "preset": "private_chat",
            "name": format!("room {n}"),
            "invite": [other.user_id],
        }));
        other.join(&room);
        for m in 0..MESSAGES_PER_ROOM {
            let sender = if m % 2 == 0 { &owner } else { &other };
            sender.send_text(&room, &format!("message {m} in room {n}"));
        }
        room_ids.push(room);
    }
    row(
        "set-up (rooms, joins, messages)",
        format!("{:.1} s", setup.elapsed().as_secs_f64()),
    );

    figures.push(measure(target, "initial /sync, no filter", || {
        Some(owner.sync_raw("timeout=0"))
    }));
    let lazy = json!({
        "room": {
            "timeline": { "limit": 1 },
            "state": { "lazy_load_members": true },
        }
    });
    let lazy_query = format!("timeout=0&filter={}", enc(&lazy.to_string()));
    figures.push(measure(target, "initial /sync, lazy, timeline 1", || {
        Some(owner.sync_raw(&lazy_query))
    }));

    let mut since = str_field(&owner.sync_raw(&lazy_query), "next_batch");
    let mut turn = 0;
    figures.push(measure(target, "incremental /sync, 1 new message", || {
        // The message is sent outside the timing below only in the sense that the server's
        // CPU for it is counted too; the wall time is the sync call's alone.
        other.send_text(&room_ids[turn % room_ids.len()], "one more");
        turn += 1;
        let started = Instant::now();
        let body = owner.sync_raw(&format!("timeout=0&since={}", enc(&since)));
        since = str_field(&body, "next_batch");
        Some((body, started.elapsed()))
    }));

    let window = json!({
        "lists": {
            "all": {
                "ranges": [[0, 19]],
                "timeline_limit": 1,
                "required_state": [["m.room.name", ""], ["m.room.avatar", ""],
                                   ["m.room.encryption", ""], ["m.room.member", "$LAZY"]],
            }
        }
    });
    figures.push(measure(target, "sliding sync, first window of 20", || {
        let (status, body) = owner.post(SLIDING_SYNC, &window);
        (status == 200).then_some(body)
    }));
    figures.into_iter().flatten().collect()
}

/// What one measured call gives back: its body, and optionally its own wall time when the
/// closure does more than the call (the incremental case sends a message first).
trait Measured {
    fn split(self, whole: Duration) -> (tests::Value, Duration);
}

impl Measured for tests::Value {
    fn split(self, whole: Duration) -> (tests::Value, Duration) {
        (self, whole)
    }
}

impl Measured for (tests::Value, Duration) {
    fn split(self, _whole: Duration) -> (tests::Value, Duration) {
        self
    }
}

/// Calls `call` [`REPEATS`] times and prints one row: wall time p50/min/max, response size,
/// server CPU per call; returns the label and p50. A call answering `None` (a request the
/// server does not serve) ends the measurement with a row saying so, and `None`.
fn measure<M: Measured>(
    target: &Target<'_>,
    label: &str,
    mut call: impl FnMut() -> Option<M>,
) -> Option<(String, Duration)> {
    let mut times = Vec::with_capacity(REPEATS);
    let mut bytes = 0;
    let cpu_start = target.cpu_time();
    for _ in 0..REPEATS {
        let started = Instant::now();
        let Some(answer) = call() else {
            row(label, format!("not served by {}", target.label()));
            return None;
        };
        let (body, took) = answer.split(started.elapsed());
        times.push(took);
        bytes = body.to_string().len();
    }
    let cpu = target
        .cpu_time()
        .zip(cpu_start)
        .map(|(end, start)| end.saturating_sub(start) / REPEATS as u32);
    times.sort_unstable();
    row(
        label,
        format!(
            "p50 {}, min {}, max {}, {} KiB, server CPU {} per call",
            ms(times[times.len() / 2]),
            ms(times[0]),
            ms(times[times.len() - 1]),
            bytes / 1024,
            cpu.map_or_else(|| "?".to_owned(), ms),
        ),
    );
    Some((label.to_owned(), times[times.len() / 2]))
}
