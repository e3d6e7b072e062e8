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

use std::collections::HashMap;
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
use crate::store::{appservice as store, misc, state};
use crate::transport::appservice::call;
use crate::util::now_ms;

/// Most events in one transaction.
pub const MAX_EVENTS: usize = 100;
/// Most ephemeral items in one transaction.
const MAX_EPHEMERAL: usize = 100;
/// Most stream rows examined per step (so a long run of uninteresting events moves the cursor
/// in bounded writes).
const SCAN: usize = 1000;

/// Wakes the appservice senders (new ephemeral items, a reload).
#[derive(Default)]
pub struct Kicker {
    kick: std::sync::Mutex<Option<watch::Sender<u64>>>,
}

impl Kicker {
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

/// Delivers one appservice's queue for as long as it is registered.
async fn deliver_loop(server: Arc<Server>, id: String) {
    let mut positions = server.store.subscribe();
    let mut kicks = server.appservice_kicker.subscribe();
    let mut failures: u32 = 0;
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
        match sent {
            Ok(_) => {
                failures = 0;
                let done = server
                    .store
                    .write_bookkeeping(move |tx| store::delivered(tx, &store_id, now_ms()))
                    .await;
                if let Err(err) = done {
                    tracing::warn!(appservice = %id, error = %err, "could not record a delivery");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                let cap = Duration::from_secs(server.config.appservices.retry_cap_secs.max(1));
                let delay = Duration::from_secs(1u64 << (failures - 1).min(20)).min(cap);
                tracing::warn!(appservice = %id, txn = %txn.txn_id, error = %err, retry_in = ?delay, "appservice transaction failed");
                let reason = err.to_string();
                let next = now_ms() + delay.as_millis() as i64;
                let _ = server
                    .store
                    .write_bookkeeping(move |tx| {
                        store::failed(tx, &store_id, &reason, now_ms(), next)
                    })
                    .await;
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The transaction in flight, or a new one formed from the stream and the ephemeral queue;
/// `None` when there is nothing to send.
async fn next_transaction(
    server: &Arc<Server>,
    reg: &Arc<Registration>,
) -> Result<Option<store::FormedTxn>> {
    let id = reg.id.clone();
    let start = server.store.current_pos();
    let current = {
        let id = id.clone();
        server
            .store
            .write_bookkeeping(move |tx| {
                let st = store::ensure_state(tx, &id, start)?;
                Ok((st, store::in_flight(tx, &id)?))
            })
            .await?
    };
    if let (_, Some(txn)) = current {
        return Ok(Some(txn));
    }
    let mut cursor = current.0.cursor;
    loop {
        let upto = server.store.current_pos();
        let (reg2, server_name) = (Arc::clone(reg), server.server_name().to_string());
        let id2 = id.clone();
        let step = server
            .store
            .read(move |conn| examine(conn, &reg2, &server_name, &id2, cursor, upto))
            .await?;
        if step.events.is_empty() && step.ephemeral.is_empty() {
            if step.new_cursor > cursor {
                let (id, new_cursor) = (id.clone(), step.new_cursor);
                server
                    .store
                    .write_bookkeeping(move |tx| store::set_cursor(tx, &id, new_cursor))
                    .await?;
            }
            if step.new_cursor < upto {
                cursor = step.new_cursor;
                continue;
            }
            return Ok(None);
        }
        let Step {
            events,
            ephemeral,
            ephemeral_up_to,
            new_cursor,
        } = step;
        let items = (events.len() + ephemeral.values().map(Vec::len).sum::<usize>()) as i64;
        let mut body = Map::new();
        body.insert("events".to_owned(), Value::Array(events));
        for (section, list) in ephemeral {
            for key in section_keys(&section) {
                body.insert(key.to_owned(), Value::Array(list.clone()));
            }
        }
        let body = Value::Object(body).to_string();
        let id = id.clone();
        let formed = server
            .store
            .write_bookkeeping(move |tx| {
                let txn_id =
                    store::form(tx, &id, &body, items, new_cursor, ephemeral_up_to, now_ms())?;
                Ok(store::FormedTxn {
                    txn_id,
                    body,
                    items,
                })
            })
            .await?;
        return Ok(Some(formed));
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
    ephemeral: std::collections::BTreeMap<String, Vec<Value>>,
    ephemeral_up_to: Option<i64>,
    new_cursor: i64,
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
        rows.last().map_or(cursor, |r| r.0)
    };
    let mut rooms: HashMap<String, bool> = HashMap::new();
    let mut events = Vec::new();
    for (pos, event_id, json) in rows {
        let Ok(event_id) = ruma::OwnedEventId::try_from(event_id) else {
            continue;
        };
        let Ok(pdu) = Pdu::parse(event_id, json, false) else {
            continue;
        };
        if is_interesting(conn, reg, server_name, &pdu, &mut rooms)? {
            events.push(to_client_event(&pdu, Unsigned::default()));
            if events.len() == MAX_EVENTS {
                new_cursor = pos;
                break;
            }
        }
    }
    let mut ephemeral: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    let mut ephemeral_up_to = None;
    for (row, section, payload) in store::ephemeral_batch(conn, id, MAX_EPHEMERAL)? {
        if let Ok(value) = serde_json::from_str::<Value>(&payload) {
            ephemeral.entry(section).or_default().push(value);
        }
        ephemeral_up_to = Some(row);
    }
    Ok(Step {
        events,
        ephemeral,
        ephemeral_up_to,
        new_cursor,
    })
}

/// Whether `reg` is interested in `pdu` (see the module header); `rooms` caches the per-room
/// part of the answer for one examination.
fn is_interesting(
    conn: &rusqlite::Connection,
    reg: &Registration,
    server_name: &str,
    pdu: &Pdu,
    rooms: &mut HashMap<String, bool>,
) -> Result<bool> {
    let user = |id: &str| reg.may_masquerade_as(id, server_name);
    if user(pdu.sender.as_str()) {
        return Ok(true);
    }
    if pdu.kind.to_string() == "m.room.member"
        && let Some(key) = &pdu.state_key
        && user(key)
    {
        return Ok(true);
    }
    let room_id = pdu.room_id.as_str();
    if let Some(&known) = rooms.get(room_id) {
        return Ok(known);
    }
    let interested = room_is_interesting(conn, reg, server_name, room_id)?;
    rooms.insert(room_id.to_owned(), interested);
    Ok(interested)
}

/// Whether the room as it is now interests `reg`: room ID, a joined member, or an alias.
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
    /// Events and ephemeral items waiting (see [`store::queue_depth`]).
    pub queue_depth: i64,
    /// When a transaction was last acknowledged (unix ms).
    pub last_delivery_ms: Option<i64>,
    /// Why the last attempt failed, while failing.
    pub last_error: Option<String>,
    /// When the next attempt is due (unix ms), while failing.
    pub next_retry_ms: Option<i64>,
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
                let st = store::state(conn, &reg.id)?;
                let depth = if reg.url.is_some() {
                    store::queue_depth(conn, &reg.id)?
                } else {
                    0
                };
                let st = st.unwrap_or_default();
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
                out.push(AppserviceLink {
                    id: reg.id.clone(),
                    url: reg.url.clone(),
                    sender: reg.sender(&server_name),
                    link: link.to_owned(),
                    queue_depth: depth,
                    last_delivery_ms: st.last_success_ts,
                    last_error: if failing { st.last_error } else { None },
                    next_retry_ms: if failing { st.next_retry_ts } else { None },
                });
            }
            Ok(out)
        })
        .await
}

/// Re-reads the registrations and wakes the senders; how many are registered now. A new
/// appservice's stream starts where it is registered: its cursor is stored before it is
/// installed, so every event sent once a client can act through it reaches it.
pub async fn reload(server: &Server) -> usize {
    let registry = Arc::clone(&server.appservices);
    let loaded = tokio::task::spawn_blocking(move || registry.read())
        .await
        .unwrap_or_default();
    if let Err(err) = start_streams(server, &loaded).await {
        tracing::warn!(error = %err, "could not store new appservices' stream positions");
    }
    let count = server.appservices.install(loaded);
    server.appservice_kicker.kick();
    count
}

/// Stores, for each of `registrations` that has none yet, a cursor at the current stream
/// position: events from here on are its to receive. Called at start (before any listener
/// serves) and by [`reload`] (before the registrations are installed); the sender would
/// otherwise start the cursor when it first runs, missing what was sent in between.
pub async fn start_streams(server: &Server, registrations: &[Arc<Registration>]) -> Result<()> {
    let ids: Vec<String> = registrations.iter().map(|r| r.id.clone()).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let start = server.store.current_pos();
    server
        .store
        .write_bookkeeping(move |tx| {
            for id in &ids {
                store::ensure_state(tx, id, start)?;
            }
            Ok(())
        })
        .await
}
