//! Homeserver -> appservice: the transaction sender (spec: Application Service API, "Pushing
//! events"). One task per registered appservice with a `url` walks the event stream from its
//! durable cursor ([`crate::store::appservice`]), keeps the events of rooms the appservice is
//! interested in, adds its queued ephemeral items, and forms at most one transaction at a time
//! (ID and body stored before the first attempt), which it `PUT`s to
//! `/_matrix/app/v1/transactions/{txnId}` until acknowledged, with capped exponential backoff.
//! A killed server re-sends the stored transaction with the same ID; the appservice dedupes.
//!
//! Interest (spec: "the homeserver should send ... events the application service is
//! interested in"): the sender, or a member event's `state_key`, in its user namespaces (its
//! own sender included); the room ID in its room namespaces; a current joined member of the
//! room in its user namespaces; a local alias or the canonical alias (and alt aliases) of the
//! room in its alias namespaces. Membership and aliases are read when the event is examined
//! (normally at once; after an outage, as they are then), as Synapse does.
//!
//! MSC3202 (registrations with `org.matrix.msc3202: true`): a transaction covering the stream
//! range `(cursor, new cursor]` carries `org.matrix.msc3202.device_lists` for that range,
//! computed like `/sync`'s: `changed` holds users whose devices changed and who are the
//! appservice's or share a room with it now (a room one of its users is joined to, or in its
//! room namespace), and users who came to share one; `left` holds users who left a room it
//! was in and share none with it now. Queued key changes of its users' devices become
//! `org.matrix.msc3202.device_one_time_keys_count` (also under Synapse's older
//! `device_one_time_key_counts`) and `org.matrix.msc3202.device_unused_fallback_key_types`,
//! user then device, with the counts as they are when the transaction is formed. Both ride in
//! the stored transaction, so they survive a crash like its events.
//!
//! Backoff: after a failed attempt the next one is due `min(2^(failures-1) s, retry_cap_secs)`
//! later (`next_retry_ts`, stored with the failure count, so a restart continues the
//! doubling). A successful ping of the appservice (its own `POST /appservice/{id}/ping` when
//! it starts, or `appliance appservice ping`) ends the wait: the bridge is back, so its queue
//! goes out now rather than up to `retry_cap_secs` later ([`Kicker::retry_now`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::error::Result;
use crate::matrix::appservice::{NamespaceKind, Registration};
use crate::matrix::client_format::{Unsigned, to_client_event};
use crate::matrix::pdu::Pdu;
use crate::service::Server;
use crate::store::{appservice as store, e2ee, misc, state};
use crate::transport::appservice::call;

/// Most events in one transaction.
pub const MAX_EVENTS: usize = 100;
/// Most ephemeral items in one transaction.
const MAX_EPHEMERAL: usize = 100;
/// Most stream rows examined per step (so a long run of uninteresting events moves the cursor
/// in bounded writes).
const SCAN: usize = 1000;

/// Wakes the appservice senders (new ephemeral items, a reload) and ends the backoff of one
/// whose appservice answered a ping.
#[derive(Default)]
pub struct Kicker {
    kick: std::sync::Mutex<Option<watch::Sender<u64>>>,
    retry: std::sync::Mutex<HashSet<String>>,
}

impl Kicker {
    /// Asks the sender of appservice `id` to retry now if it is waiting out a backoff (the
    /// appservice answered a ping, so it is up again).
    pub fn retry_now(&self, id: &str) {
        self.retry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned());
        self.kick();
    }

    /// Whether a retry of `id` was asked for since the last call (and forgets it).
    fn take_retry(&self, id: &str) -> bool {
        self.retry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        let mut slot = self.kick.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| watch::channel(0).0).subscribe()
    }

    /// Wakes every sender so it looks for work now.
    pub fn kick(&self) {
        let slot = self.kick.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = slot.as_ref() {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// Runs the senders until `shutdown` flips: one task per registered appservice with a URL,
/// started and stopped as the registry changes.
pub async fn run(server: Arc<Server>, mut shutdown: watch::Receiver<bool>) {
    let mut kicks = server.appservice_kicker.subscribe();
    let mut tasks: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        let registered = server.appservices.all();
        tasks.retain(|id, task| {
            let keep =
                registered.iter().any(|r| &r.id == id && r.url.is_some()) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for reg in registered.iter().filter(|r| r.url.is_some()) {
            if !tasks.contains_key(&reg.id) {
                let task = tokio::spawn(deliver_loop(Arc::clone(&server), reg.id.clone()));
                tasks.insert(reg.id.clone(), task);
            }
        }
        tokio::select! {
            _ = kicks.changed() => {}
            // A reload through SIGHUP does not kick; look again now and then.
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = crate::util::stopped(&mut shutdown) => break,
        }
    }
    for (_, task) in tasks {
        task.abort();
    }
}

/// How long to wait after the `failures`-th failure in a row: doubling from one second, at
/// most `cap_secs`.
pub fn backoff(failures: i64, cap_secs: u64) -> Duration {
    let doublings = failures.saturating_sub(1).clamp(0, 30) as u32;
    Duration::from_secs((1u64 << doublings).min(cap_secs.max(1)))
}

/// Delivers one appservice's queue for as long as it is registered.
async fn deliver_loop(server: Arc<Server>, id: String) {
    let mut positions = server.store.subscribe();
    let mut kicks = server.appservice_kicker.subscribe();
    loop {
        let Some(reg) = server.appservices.by_id(&id) else {
            return;
        };
        let Some(url) = reg.url.clone() else {
            return;
        };
        let formed = match next_transaction(&server, &reg).await {
            Ok(formed) => formed,
            Err(err) => {
                tracing::warn!(appservice = %id, error = %err, "could not form an appservice transaction");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(txn) = formed else {
            // Nothing to send: wait for a new event or ephemeral item.
            tokio::select! {
                _ = positions.changed() => {}
                _ = kicks.changed() => {}
            }
            continue;
        };
        let body: Value = serde_json::from_str(&txn.body).unwrap_or_else(|_| json!({}));
        let path = format!(
            "/_matrix/app/v1/transactions/{}",
            crate::util::urlencode(&txn.txn_id)
        );
        let timeout = Duration::from_secs(server.config.appservices.request_timeout_secs);
        let sent = call(
            &url,
            &reg.hs_token,
            Method::PUT,
            &path,
            Some(&body),
            timeout,
        )
        .await;
        let store_id = id.clone();
        let now = server.clock.now_ms();
        match sent {
            Ok(_) => {
                // A ping that asked for a retry is answered by this delivery.
                server.appservice_kicker.take_retry(&id);
                let done = server
                    .store
                    .write_bookkeeping(move |tx| store::delivered(tx, &store_id, now))
                    .await;
                if let Err(err) = done {
                    tracing::warn!(appservice = %id, error = %err, "could not record a delivery");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            Err(err) => {
                let cap = server.config.appservices.retry_cap_secs;
                let reason = err.to_string();
                let recorded = server
                    .store
                    .write_bookkeeping(move |tx| {
                        store::failed(tx, &store_id, &reason, now, |failures| {
                            now.saturating_add(backoff(failures, cap).as_millis() as i64)
                        })
                    })
                    .await;
                match recorded {
                    Ok(failures) => {
                        let retry_in = backoff(failures, cap);
                        tracing::warn!(appservice = %id, txn = %txn.txn_id, error = %err, ?retry_in, "appservice transaction failed");
                        wait_for_retry(&server, &id, &mut kicks).await;
                    }
                    Err(record_err) => {
                        tracing::warn!(appservice = %id, txn = %txn.txn_id, error = %err, record_error = %record_err, "appservice transaction failed");
                        tokio::time::sleep(backoff(1, cap)).await;
                    }
                }
            }
        }
    }
}

/// Waits until the next attempt of `id` is due (the stored `next_retry_ts`), a retry is asked
/// for ([`Kicker::retry_now`]), or it is no longer failing. Kicks wake it to look again.
async fn wait_for_retry(server: &Server, id: &str, kicks: &mut watch::Receiver<u64>) {
    let cap_ms = server.config.appservices.retry_cap_secs.max(1) as i64 * 1000;
    loop {
        if server.appservice_kicker.take_retry(id) {
            return;
        }
        let key = id.to_owned();
        let due = match server
            .store
            .read(move |conn| store::state(conn, &key))
            .await
        {
            Ok(Some(st)) if st.failures > 0 && st.removed_ts.is_none() => {
                st.next_retry_ts.unwrap_or(0)
            }
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(appservice = %id, error = %err, "could not read an appservice's retry time");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
        };
        let remaining = due.saturating_sub(server.clock.now_ms());
        if remaining <= 0 {
            return;
        }
        // The wall clock may be stepped: never wait longer than the cap.
        let wait = Duration::from_millis(remaining.min(cap_ms) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => return,
            _ = kicks.changed() => {}
        }
    }
}

/// The transaction in flight, or a new one formed from the stream and the ephemeral queue;
/// `None` when there is nothing to send (or the appservice was removed meanwhile).
async fn next_transaction(
    server: &Arc<Server>,
    reg: &Arc<Registration>,
) -> Result<Option<store::FormedTxn>> {
    let id = reg.id.clone();
    let start = server.store.current_pos();
    let (st, in_flight) = {
        let id = id.clone();
        server
            .store
            .write_bookkeeping(move |tx| {
                let st = store::ensure_state(tx, &id, start)?;
                Ok((st, store::in_flight(tx, &id)?))
            })
            .await?
    };
    if st.removed_ts.is_some() {
        return Ok(None);
    }
    if let Some(txn) = in_flight {
        return Ok(Some(txn));
    }
    let mut cursor = st.cursor;
    loop {
        let upto = server.store.current_pos();
        let (reg2, server_name) = (Arc::clone(reg), server.server_name().to_string());
        let id2 = id.clone();
        let step = server
            .store
            .read(move |conn| examine(conn, &reg2, &server_name, &id2, cursor, upto))
            .await?;
        if step.is_empty() {
            if step.new_cursor > cursor {
                let (id, new_cursor) = (id.clone(), step.new_cursor);
                server
                    .store
                    .write_bookkeeping(move |tx| {
                        // Keys-section items of an appservice that no longer asks for them.
                        if let Some(up_to) = step.ephemeral_up_to {
                            store::drop_ephemeral(tx, &id, up_to)?;
                        }
                        store::set_cursor(tx, &id, new_cursor)
                    })
                    .await?;
            } else if let Some(up_to) = step.ephemeral_up_to {
                let id = id.clone();
                server
                    .store
                    .write_bookkeeping(move |tx| store::drop_ephemeral(tx, &id, up_to))
                    .await?;
            }
            if step.new_cursor < upto {
                cursor = step.new_cursor;
                continue;
            }
            return Ok(None);
        }
        let items = step.items();
        let Step {
            events,
            ephemeral,
            ephemeral_up_to,
            msc3202,
            new_cursor,
            ..
        } = step;
        let mut body = Map::new();
        body.insert("events".to_owned(), Value::Array(events));
        for (section, list) in ephemeral {
            for key in section_keys(&section) {
                body.insert(key.to_owned(), Value::Array(list.clone()));
            }
        }
        body.extend(msc3202);
        let body = Value::Object(body).to_string();
        let id = id.clone();
        let now = server.clock.now_ms();
        let formed = server
            .store
            .write_bookkeeping(move |tx| {
                let txn_id = store::form(tx, &id, &body, items, new_cursor, ephemeral_up_to, now)?;
                Ok(txn_id.map(|txn_id| store::FormedTxn {
                    txn_id,
                    body,
                    items,
                }))
            })
            .await?;
        return Ok(formed);
    }
}

/// The keys an ephemeral section is sent under: the stable name and the MSC2409 unstable one
/// (bridges of both generations read one or the other).
fn section_keys(section: &str) -> Vec<&str> {
    match section {
        "ephemeral" => vec!["ephemeral", "de.sorunome.msc2409.ephemeral"],
        "to_device" => vec!["to_device", "de.sorunome.msc2409.to_device"],
        other => vec![other],
    }
}

/// What one examination of the stream found.
struct Step {
    events: Vec<Value>,
    ephemeral: BTreeMap<String, Vec<Value>>,
    /// Devices whose key counts are in `msc3202`.
    key_devices: usize,
    /// The MSC3202 keys of the body (device lists, key counts), empty when none.
    msc3202: Map<String, Value>,
    ephemeral_up_to: Option<i64>,
    new_cursor: i64,
}

impl Step {
    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.ephemeral.is_empty() && self.msc3202.is_empty()
    }

    /// Events, ephemeral items and devices with key counts it carries (the queue depth's
    /// units; device-list entries are read from the stream, not queued, and not counted).
    fn items(&self) -> i64 {
        (self.events.len()
            + self.ephemeral.values().map(Vec::len).sum::<usize>()
            + self.key_devices) as i64
    }
}

/// Examines events after `cursor` (up to `upto`) and the queued ephemeral items.
fn examine(
    conn: &rusqlite::Connection,
    reg: &Registration,
    server_name: &str,
    id: &str,
    cursor: i64,
    upto: i64,
) -> Result<Step> {
    let rows = store::events_between(conn, cursor, upto, SCAN)?;
    let mut new_cursor = if rows.len() < SCAN {
        upto.max(cursor)
    } else {
        rows.last().map_or(cursor, |r| r.stream_pos)
    };
    let mut rooms: HashMap<String, bool> = HashMap::new();
    let mut events = Vec::new();
    for row in rows {
        let pos = row.stream_pos;
        let Ok(event_id) = ruma::OwnedEventId::try_from(row.event_id) else {
            continue;
        };
        let Ok(pdu) = Pdu::parse(event_id, row.json, false) else {
            continue;
        };
        let head = store::EventHead {
            room_id: pdu.room_id.to_string(),
            sender: pdu.sender.to_string(),
            event_type: pdu.kind.to_string(),
            state_key: pdu.state_key.clone(),
        };
        if is_interesting(conn, reg, server_name, &head, &mut rooms)? {
            events.push(to_client_event(&pdu, Unsigned::default()));
            if events.len() == MAX_EVENTS {
                new_cursor = pos;
                break;
            }
        }
    }
    let mut ephemeral: BTreeMap<String, Vec<Value>> = Default::default();
    let mut key_changes: BTreeSet<(String, String)> = BTreeSet::new();
    let mut ephemeral_up_to = None;
    for item in store::ephemeral_batch(conn, id, MAX_EPHEMERAL)? {
        if let Ok(value) = serde_json::from_str::<Value>(&item.payload) {
            if item.section == store::KEYS_SECTION {
                if let (Some(user), Some(device)) =
                    (value["user_id"].as_str(), value["device_id"].as_str())
                {
                    key_changes.insert((user.to_owned(), device.to_owned()));
                }
            } else {
                ephemeral.entry(item.section).or_default().push(value);
            }
        }
        ephemeral_up_to = Some(item.id);
    }
    let mut msc3202 = Map::new();
    let mut key_devices = 0;
    if reg.msc3202 {
        let (changed, left) = device_lists(conn, reg, server_name, cursor, new_cursor)?;
        if !changed.is_empty() || !left.is_empty() {
            msc3202.insert(
                "org.matrix.msc3202.device_lists".to_owned(),
                json!({"changed": changed, "left": left}),
            );
        }
        key_devices = key_counts(conn, &key_changes, &mut msc3202)?;
    }
    Ok(Step {
        events,
        ephemeral,
        key_devices,
        msc3202,
        ephemeral_up_to,
        new_cursor,
    })
}

/// MSC3202's `device_lists` for the stream range `(after, upto]` (see the module header).
fn device_lists(
    conn: &rusqlite::Connection,
    reg: &Registration,
    server_name: &str,
    after: i64,
    upto: i64,
) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
    let ours = |user: &str| reg.may_masquerade_as(user, server_name);
    let mut changed = BTreeSet::new();
    let mut left = BTreeSet::new();
    let device_changes = e2ee::device_list_changes(conn, after, upto)?;
    let member_changes = store::member_changes(conn, after, upto)?;
    if device_changes.is_empty() && member_changes.is_empty() {
        return Ok((changed, left));
    }
    // Per room: whether one of its users is joined (or the room is in its namespace) now;
    // whether one ever had a membership there. Per user: whether they share such a room now.
    let mut joined_rooms: HashMap<String, bool> = HashMap::new();
    let mut sharing: HashMap<String, bool> = HashMap::new();
    let mut shares = |user: &str| -> Result<bool> {
        if ours(user) {
            return Ok(true);
        }
        if let Some(&known) = sharing.get(user) {
            return Ok(known);
        }
        let mut found = false;
        for room in state::rooms_with_membership(conn, user, "join")? {
            let hit = match joined_rooms.get(&room) {
                Some(&hit) => hit,
                None => {
                    let hit = reg.is_interested(NamespaceKind::Rooms, &room)
                        || state::members_with(conn, &room, "join")?
                            .iter()
                            .any(|m| ours(m));
                    joined_rooms.insert(room, hit);
                    hit
                }
            };
            if hit {
                found = true;
                break;
            }
        }
        sharing.insert(user.to_owned(), found);
        Ok(found)
    };
    for user in device_changes {
        if shares(&user)? {
            changed.insert(user);
        }
    }
    let mut ever_ours: HashMap<String, bool> = HashMap::new();
    for change in member_changes {
        let (room, member) = (change.room_id, change.user_id);
        let joined = change.membership == "join";
        let others = if ours(&member) {
            // One of its users joined or left: every member is new to it, or may be gone.
            state::members_with(conn, &room, "join")?
        } else {
            let was_ours = match ever_ours.get(&room) {
                Some(&known) => known,
                None => {
                    let mut known = reg.is_interested(NamespaceKind::Rooms, &room);
                    for kind in ["join", "leave", "ban", "invite", "knock"] {
                        if known {
                            break;
                        }
                        known = state::members_with(conn, &room, kind)?
                            .iter()
                            .any(|m| ours(m));
                    }
                    ever_ours.insert(room.clone(), known);
                    known
                }
            };
            if !was_ours {
                continue;
            }
            vec![member]
        };
        for user in others.into_iter().filter(|u| !ours(u)) {
            if shares(&user)? {
                if joined {
                    changed.insert(user);
                }
            } else {
                left.insert(user);
            }
        }
    }
    Ok((changed, left))
}

/// Puts the one-time key counts and unused fallback key types of `devices` (those of them
/// that still exist) into `body` under MSC3202's keys; returns how many devices.
fn key_counts(
    conn: &rusqlite::Connection,
    devices: &BTreeSet<(String, String)>,
    body: &mut Map<String, Value>,
) -> Result<usize> {
    let mut counts: Map<String, Value> = Map::new();
    let mut fallback: Map<String, Value> = Map::new();
    let mut known: HashMap<String, Vec<String>> = HashMap::new();
    let mut found = 0;
    for (user, device) in devices {
        if !known.contains_key(user) {
            known.insert(user.clone(), e2ee::local_device_ids(conn, user)?);
        }
        if !known.get(user).is_some_and(|ids| ids.contains(device)) {
            continue;
        }
        let mut per_device: Map<String, Value> = e2ee::one_time_key_counts(conn, user, device)?
            .into_iter()
            .map(|c| (c.algorithm, json!(c.count)))
            .collect();
        // As in `/sync`: 0 says "upload more", a missing count says nothing.
        per_device
            .entry("signed_curve25519".to_owned())
            .or_insert(json!(0));
        let entry = counts.entry(user.clone()).or_insert_with(|| json!({}));
        entry[device.as_str()] = Value::Object(per_device);
        let entry = fallback.entry(user.clone()).or_insert_with(|| json!({}));
        entry[device.as_str()] = json!(e2ee::unused_fallback_types(conn, user, device)?);
        found += 1;
    }
    if found > 0 {
        let counts = Value::Object(counts);
        body.insert(
            "org.matrix.msc3202.device_one_time_keys_count".to_owned(),
            counts.clone(),
        );
        // Synapse before 1.73 sent this name, and bridges of that time read it.
        body.insert(
            "org.matrix.msc3202.device_one_time_key_counts".to_owned(),
            counts,
        );
        body.insert(
            "org.matrix.msc3202.device_unused_fallback_key_types".to_owned(),
            Value::Object(fallback),
        );
    }
    Ok(found)
}

/// Whether `reg` is interested in the event `head` (see the module header); `rooms` caches
/// the per-room part of the answer for one examination.
fn is_interesting(
    conn: &rusqlite::Connection,
    reg: &Registration,
    server_name: &str,
    head: &store::EventHead,
    rooms: &mut HashMap<String, bool>,
) -> Result<bool> {
    let user = |id: &str| reg.may_masquerade_as(id, server_name);
    if user(&head.sender) {
        return Ok(true);
    }
    if head.event_type == "m.room.member"
        && let Some(key) = &head.state_key
        && user(key)
    {
        return Ok(true);
    }
    if let Some(&known) = rooms.get(&head.room_id) {
        return Ok(known);
    }
    let interested = room_is_interesting(conn, reg, server_name, &head.room_id)?;
    rooms.insert(head.room_id.clone(), interested);
    Ok(interested)
}

pub fn room_is_interesting(
    conn: &rusqlite::Connection,
    reg: &Registration,
    server_name: &str,
    room_id: &str,
) -> Result<bool> {
    if reg.is_interested(NamespaceKind::Rooms, room_id) {
        return Ok(true);
    }
    if state::members_with(conn, room_id, "join")?
        .iter()
        .any(|m| reg.may_masquerade_as(m, server_name))
    {
        return Ok(true);
    }
    if reg.namespaces.aliases.is_empty() {
        return Ok(false);
    }
    let mut aliases = misc::room_aliases(conn, room_id)?;
    if let Some(event_id) = state::current_state_id(conn, room_id, "m.room.canonical_alias", "")?
        && let Some(event) = crate::store::events::get_event(conn, &event_id)?
    {
        let content = event.pdu.content_value();
        aliases.extend(content["alias"].as_str().map(str::to_owned));
        aliases.extend(
            content["alt_aliases"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned)),
        );
    }
    Ok(aliases
        .iter()
        .any(|a| reg.is_interested(NamespaceKind::Aliases, a)))
}

/// One appservice's link as the admin socket (`GET /v1/appservices`) shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AppserviceLink {
    /// The registration's `id`.
    pub id: String,
    /// Where transactions go; `None` for a send-only appservice.
    pub url: Option<String>,
    /// Its own user.
    pub sender: String,
    /// `up` (last attempt succeeded), `down` (last attempt failed; retrying), `send-only`
    /// (no `url`), `idle` (nothing ever sent).
    pub link: String,
    /// Events and ephemeral items waiting: those of the transaction in flight, the events
    /// after its cursor that interest it (judged as the sender would judge them now) and its
    /// queued ephemeral items (a device with changed key counts once).
    pub queue_depth: i64,
    /// When a transaction was last acknowledged (unix ms).
    pub last_delivery_ms: Option<i64>,
    /// Why the last attempt failed, while failing.
    pub last_error: Option<String>,
    /// When the next attempt is due (unix ms), while failing.
    pub next_retry_ms: Option<i64>,
    /// Failed attempts since the last success.
    #[serde(default)]
    pub failures: i64,
    /// The wait after the last failed attempt (ms), while failing: doubling from one second
    /// to `[appservices] retry_cap_secs`.
    #[serde(default)]
    pub backoff_ms: Option<i64>,
}

/// The link of every registered appservice, in registry order.
pub async fn links(server: &Server) -> Result<Vec<AppserviceLink>> {
    let regs = server.appservices.all();
    let server_name = server.server_name().to_string();
    server
        .store
        .read(move |conn| {
            let mut out = Vec::new();
            for reg in regs.iter() {
                let st = store::state(conn, &reg.id)?.unwrap_or_default();
                let depth = if reg.url.is_some() {
                    queue_depth(conn, reg, &server_name, &st)?
                } else {
                    0
                };
                let failing = st.failures > 0;
                let link = if reg.url.is_none() {
                    "send-only"
                } else if failing {
                    "down"
                } else if st.last_success_ts.is_some() {
                    "up"
                } else {
                    "idle"
                };
                let backoff_ms = match (st.last_error_ts, st.next_retry_ts) {
                    (Some(failed), Some(next)) if failing => Some(next - failed),
                    _ => None,
                };
                out.push(AppserviceLink {
                    id: reg.id.clone(),
                    url: reg.url.clone(),
                    sender: reg.sender(&server_name),
                    link: link.to_owned(),
                    queue_depth: depth,
                    last_delivery_ms: st.last_success_ts,
                    last_error: if failing { st.last_error } else { None },
                    next_retry_ms: if failing { st.next_retry_ts } else { None },
                    failures: st.failures,
                    backoff_ms,
                });
            }
            Ok(out)
        })
        .await
}

/// The exact queue depth of `reg` (see [`AppserviceLink::queue_depth`]): the events after its
/// cursor are judged by their room, sender and state key, without reading their JSON.
fn queue_depth(
    conn: &rusqlite::Connection,
    reg: &Registration,
    server_name: &str,
    st: &store::AsState,
) -> Result<i64> {
    let mut depth = store::queued_items(conn, &reg.id)?;
    if st.removed_ts.is_some() {
        return Ok(depth);
    }
    let mut rooms = HashMap::new();
    for head in store::event_heads_after(conn, st.cursor)? {
        if is_interesting(conn, reg, server_name, &head, &mut rooms)? {
            depth += 1;
        }
    }
    Ok(depth)
}

/// Re-reads the registrations and wakes the senders; how many are registered now. A new
/// appservice's stream starts where it is registered: its cursor is stored before it is
/// installed, so every event sent once a client can act through it reaches it.
pub async fn reload(server: &Server) -> usize {
    let registry = Arc::clone(&server.appservices);
    let loaded = match tokio::task::spawn_blocking(move || registry.read()).await {
        Ok(loaded) => loaded,
        Err(err) => {
            // Installing nothing would unregister every appservice: keep the current set.
            tracing::error!(
                ?err,
                "reading the appservice folder failed; registrations unchanged"
            );
            return server.appservices.all().len();
        }
    };
    if let Err(err) = start_streams(server, &loaded).await {
        tracing::warn!(error = %err, "could not store new appservices' stream positions");
    }
    let count = server.appservices.install(loaded);
    server.appservice_kicker.kick();
    count
}

/// Makes the stored streams match `registered`, the whole set about to be installed: each of
/// them that has no stream, or whose appservice had been removed, starts at the current
/// stream position (events from here on are its to receive); every other stream is marked
/// removed, its transaction in flight and queued items dropped. Called at start (before any
/// listener serves) and by [`reload`] (before the registrations are installed); the sender
/// would otherwise start the cursor when it first runs, missing what was sent in between.
///
/// **Decision** (an appservice removed and added again with the same id): it starts at the
/// current position, as a new appservice does, not at its old cursor. Its registration was
/// gone meanwhile (no `as_token`, no namespace), so the events of that time were never its
/// to receive, and a cursor left behind would hand it the whole gap at once: events it did
/// not ask for, possibly from before it was last acknowledged. What was formed and not
/// acknowledged when it was removed is dropped with it; the spec's "each event once" is
/// kept by its transaction IDs going on counting where they stopped, so an appservice that
/// remembers the txnIds it processed never takes a new transaction for an old one.
pub async fn start_streams(server: &Server, registered: &[Arc<Registration>]) -> Result<()> {
    let ids: Vec<String> = registered.iter().map(|r| r.id.clone()).collect();
    let start = server.store.current_pos();
    let now = server.clock.now_ms();
    let removed = server
        .store
        .write_bookkeeping(move |tx| {
            let removed = store::mark_removed(tx, &ids, now)?;
            for id in &ids {
                store::start_stream(tx, id, start)?;
            }
            Ok(removed)
        })
        .await?;
    for id in removed {
        tracing::info!(appservice = %id, "appservice removed: its queue is dropped");
    }
    Ok(())
}
