//! Durability: concurrent senders are cut off by `kill -9` (or `SIGTERM`) mid-stream; after a
//! restart every event that got a 200 is readable via `/event` and `/messages`, in per-sender
//! order; transaction IDs still deduplicate; sync tokens from before the restart still work;
//! and the SQLite file passes `PRAGMA integrity_check` once the server has stopped.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;
use tests::{Client, TestEnv, enc, event_ids, json, ok, poll_until, str_field, timeline};

const SENDERS: usize = 4;
const DEADLINE: Duration = Duration::from_secs(60);

/// One message the server acknowledged with 200.
#[derive(Debug, Clone)]
struct Ack {
    sender: usize,
    txn: String,
    body: String,
    event_id: String,
    /// The send started after the mid-run sync token was handed out.
    after_token: bool,
}

/// Senders, their room, and what the server acknowledged while they ran.
struct Run {
    room: String,
    observer: Client,
    senders: Vec<Client>,
    /// `next_batch` from before any message was sent.
    token_before: String,
    /// `next_batch` taken mid-run.
    token_mid: String,
    /// How many acks existed before `token_mid` was requested (all precede it).
    acked_before_mid: usize,
    acks: Vec<Ack>,
}

/// Starts [`SENDERS`] threads sending messages as fast as the server acks them, takes a sync
/// token mid-run, and calls `stop` (kill or terminate) once at least `after_mid` messages were
/// acknowledged after that token. Returns once every sender thread has ended.
fn run_senders(env: &mut TestEnv, after_mid: usize, stop: impl FnOnce(&mut TestEnv)) -> Run {
    let observer = env.register("observer");
    let room = observer.create_room(&json!({ "preset": "public_chat" }));
    let senders: Vec<Client> = (0..SENDERS)
        .map(|i| {
            let client = env.register(&format!("sender{i}"));
            client.join(&room);
            client
        })
        .collect();
    let token_before = str_field(&observer.sync(None, 0, None), "next_batch");

    let acks = Arc::new(Mutex::new(Vec::<Ack>::new()));
    let token_taken = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = senders
        .iter()
        .enumerate()
        .map(|(sender, client)| {
            let (client, room) = (client.clone(), room.clone());
            let (acks, token_taken) = (Arc::clone(&acks), Arc::clone(&token_taken));
            thread::spawn(move || {
                for i in 0..5_000 {
                    let txn = format!("s{sender}-{i}");
                    let body = format!("sender {sender} message {i}");
                    let after_token = token_taken.load(Ordering::SeqCst);
                    let path = format!(
                        "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
                        enc(&room),
                        enc(&txn)
                    );
                    let content = json!({ "msgtype": "m.text", "body": body });
                    match client.try_call("PUT", &path, Some(&content)) {
                        Ok((200, reply)) => acks.lock().expect("acks lock").push(Ack {
                            sender,
                            txn,
                            body,
                            event_id: str_field(&reply, "event_id"),
                            after_token,
                        }),
                        // A 5xx while shutting down is not an acknowledgement.
                        Ok((status, _)) if status >= 500 => return,
                        Ok((status, reply)) => panic!("sender {sender}: {status} {reply:#}"),
                        // The server went away.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();

    let count = |pred: &dyn Fn(&Ack) -> bool| {
        acks.lock()
            .expect("acks lock")
            .iter()
            .filter(|ack| pred(ack))
            .count()
    };
    poll_until("the first acknowledgements", DEADLINE, || {
        (count(&|_| true) >= 40).then_some(())
    });
    let acked_before_mid = count(&|_| true);
    let token_mid = str_field(&observer.sync(Some(&token_before), 0, None), "next_batch");
    token_taken.store(true, Ordering::SeqCst);
    poll_until("acknowledgements after the mid-run token", DEADLINE, || {
        (count(&|ack| ack.after_token) >= after_mid).then_some(())
    });

    stop(env);
    for thread in threads {
        thread.join().expect("sender thread panicked");
    }
    let acks = acks.lock().expect("acks lock").clone();
    eprintln!(
        "{} messages acknowledged, {acked_before_mid} before the mid-run token, {} sent after it",
        acks.len(),
        acks.iter().filter(|ack| ack.after_token).count()
    );
    Run {
        room,
        observer,
        senders,
        token_before,
        token_mid,
        acked_before_mid,
        acks,
    }
}

/// After a restart: every ack readable by ID and in `/messages`, once, in per-sender order.
fn assert_all_acks_present(run: &Run) {
    for ack in &run.acks {
        let event = ok(
            run.observer.get(&format!(
                "/_matrix/client/v3/rooms/{}/event/{}",
                enc(&run.room),
                enc(&ack.event_id)
            )),
            &format!("acknowledged event {} ({})", ack.event_id, ack.body),
        );
        assert_eq!(event["content"]["body"], ack.body.as_str());
        assert_eq!(event["sender"], run.senders[ack.sender].user_id.as_str());
    }

    let messages = run.observer.all_messages(
        &run.room,
        "f",
        Some(&json!({ "types": ["m.room.message"] })),
    );
    let ids = event_ids(&messages);
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "an event appears twice in /messages"
    );
    let position: HashMap<&String, usize> = ids.iter().enumerate().map(|(i, id)| (id, i)).collect();
    let mut last_position = [None::<usize>; SENDERS];
    for ack in &run.acks {
        let at = *position
            .get(&ack.event_id)
            .unwrap_or_else(|| panic!("acknowledged {} missing from /messages", ack.event_id));
        if let Some(previous) = last_position[ack.sender] {
            assert!(
                at > previous,
                "sender {} reordered at {}",
                ack.sender,
                ack.body
            );
        }
        last_position[ack.sender] = Some(at);
    }
}

/// Sync tokens from before the restart: the mid-run one yields exactly what came after it.
fn assert_old_tokens_work(run: &Run) {
    let after_restart = run.observer.send_text(&run.room, "after restart");
    let big = json!({ "room": { "timeline": { "limit": 5000 } } });
    let sync = run.observer.sync(Some(&run.token_mid), 0, Some(&big));
    let events = timeline(&sync, &run.room);
    let ids: HashSet<String> = event_ids(&events).into_iter().collect();
    assert!(
        ids.contains(&after_restart),
        "post-restart event via the old token: {sync:#}"
    );
    for ack in &run.acks[..run.acked_before_mid] {
        assert!(
            !ids.contains(&ack.event_id),
            "{} predates the token",
            ack.body
        );
    }
    for ack in run.acks.iter().filter(|ack| ack.after_token) {
        assert!(
            ids.contains(&ack.event_id),
            "{} follows the token but is missing",
            ack.body
        );
    }
    assert_eq!(
        event_ids(&events).last(),
        Some(&after_restart),
        "the newest event is last"
    );

    let small = json!({ "room": { "timeline": { "limit": 3 } } });
    let oldest = run.observer.sync(Some(&run.token_before), 0, Some(&small));
    let section = &oldest["rooms"]["join"][&run.room]["timeline"];
    assert_eq!(section["limited"], true, "{oldest:#}");
    assert_eq!(
        event_ids(&timeline(&oldest, &run.room)).last(),
        Some(&after_restart)
    );
}

/// The last acknowledged transaction of each sender still maps to its event.
fn assert_transactions_remembered(run: &Run) {
    for (sender, client) in run.senders.iter().enumerate() {
        let Some(last) = run.acks.iter().rev().find(|ack| ack.sender == sender) else {
            continue;
        };
        let reply = ok(
            client.send_event(
                &run.room,
                "m.room.message",
                &last.txn,
                &json!({ "msgtype": "m.text", "body": last.body }),
            ),
            "retry of an acknowledged transaction",
        );
        assert_eq!(
            reply["event_id"],
            last.event_id.as_str(),
            "txn {} after restart",
            last.txn
        );
    }
}

fn integrity_check(env: &TestEnv) {
    let db = rusqlite::Connection::open(env.db_path()).expect("opening homeserver.db");
    let result: String = db
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity_check");
    assert_eq!(result, "ok");
    let mode: String = db
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal", "the database runs in WAL mode");
}

#[test]
fn kill_9_mid_stream_loses_no_acknowledged_event() {
    let mut env = TestEnv::unlimited();
    let run = run_senders(&mut env, 150, TestEnv::kill9);
    assert!(run.acks.len() >= 190, "acks: {}", run.acks.len());
    env.restart();

    assert_all_acks_present(&run);
    assert_transactions_remembered(&run);
    assert_old_tokens_work(&run);
    env.stop();
    integrity_check(&env);
}

#[test]
fn sigterm_mid_stream_finishes_in_flight_writes() {
    let mut env = TestEnv::unlimited();
    let run = run_senders(&mut env, 100, |env| {
        let status = env.sigterm();
        assert_eq!(status.code(), Some(0), "SIGTERM under load: {status}");
    });
    integrity_check(&env);
    env.restart();

    assert_all_acks_present(&run);
    assert_old_tokens_work(&run);
    env.stop();
    integrity_check(&env);
}

#[test]
fn repeated_crashes_keep_the_database_consistent() {
    let mut env = TestEnv::unlimited();
    let alice = env.register("alice");
    let room = alice.create_room(&json!({}));
    let mut sent = Vec::new();
    for round in 0..3 {
        for i in 0..10 {
            sent.push(alice.send_text(&room, &format!("round {round} message {i}")));
        }
        env.kill9();
        env.restart();
    }
    let messages = alice.all_messages(&room, "f", Some(&json!({ "types": ["m.room.message"] })));
    assert_eq!(event_ids(&messages), sent);
    env.stop();
    integrity_check(&env);
}
