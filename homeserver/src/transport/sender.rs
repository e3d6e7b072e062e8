//! The durable per-peer sender: delivers the outbox to each peer as transactions, in order,
//! one transaction in flight per peer, retrying with capped exponential backoff.
//!
//! The outbox rows are written in the same database transaction as the events they carry, so
//! a peer that is unreachable for days gets everything when it comes back. A transaction ID is
//! derived from the outbox rows it carries, so a retry after a lost response reuses it and the
//! peer's `/send` idempotency drops the duplicate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use serde_json::Value;
use tokio::sync::{Notify, watch};

use crate::matrix::wire::{Edu, Transaction};
use crate::store::{Store, events, outbox};
use crate::transport::client::FederationClient;
use crate::util::now_ms;

/// Most outbox rows in one transaction (the spec allows 50 PDUs and 100 EDUs).
const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;

/// Runs until `shutdown` flips, waking on every commit of the store.
pub async fn run(
    store: Store,
    client: FederationClient,
    retry_cap: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut commits = store.subscribe_commits();
    let mut workers: HashMap<String, (Arc<Notify>, tokio::task::JoinHandle<()>)> = HashMap::new();
    loop {
        let pending = store
            .read(outbox::pending_destinations)
            .await
            .unwrap_or_default();
        for destination in pending {
            let (notify, _) = workers.entry(destination.clone()).or_insert_with(|| {
                let notify = Arc::new(Notify::new());
                let task = tokio::spawn(deliver_loop(
                    store.clone(),
                    client.clone(),
                    destination.clone(),
                    Arc::clone(&notify),
                    retry_cap,
                ));
                (notify, task)
            });
            notify.notify_one();
        }
        tokio::select! {
            changed = commits.changed() => if changed.is_err() { break },
            _ = crate::util::stopped(&mut shutdown) => break,
        }
    }
    for (_, (_, task)) in workers {
        task.abort();
    }
}

/// Delivers one peer's queue until it is empty, then waits to be notified.
async fn deliver_loop(
    store: Store,
    client: FederationClient,
    destination: String,
    notify: Arc<Notify>,
    retry_cap: Duration,
) {
    let mut failures: u32 = 0;
    loop {
        match deliver_one(&store, &client, &destination).await {
            Ok(true) => {
                failures = 0;
                continue;
            }
            Ok(false) => {
                failures = 0;
                notify.notified().await;
            }
            Err(reason) => {
                failures = failures.saturating_add(1);
                let delay = Duration::from_secs(1u64 << failures.min(16)).min(retry_cap);
                tracing::warn!(peer = %destination, error = %reason, retry_in = ?delay, "federation delivery failed");
                let error = reason.clone();
                let peer = destination.clone();
                let _ = store
                    .write(move |tx| outbox::link_failure(tx, &peer, &error, now_ms()))
                    .await;
                // New events do not shorten the backoff: the link is what failed.
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Sends the oldest batch; `Ok(true)` if something was delivered, `Ok(false)` if the queue was
/// empty.
async fn deliver_one(
    store: &Store,
    client: &FederationClient,
    destination: &str,
) -> Result<bool, String> {
    let dest = destination.to_owned();
    let batch = store
        .read(move |conn| {
            let rows = outbox::outbox_batch(conn, &dest, MAX_PDUS + MAX_EDUS)?;
            let mut pdus = Vec::new();
            let mut edus = Vec::new();
            let mut last_id = None;
            let mut last_ts = 0;
            for row in rows {
                match row.kind.as_str() {
                    "pdu" if pdus.len() < MAX_PDUS => {
                        if let Some(event) = events::get_event(conn, &row.payload)? {
                            pdus.push(
                                serde_json::from_str::<Value>(&event.pdu.json)
                                    .unwrap_or(Value::Null),
                            );
                        }
                    }
                    "edu" if edus.len() < MAX_EDUS => {
                        // An EDU without `edu_type` and `content` would make the peer refuse
                        // the whole transaction (`matrix::wire::Edu`), so a damaged row is
                        // dropped here rather than blocking the queue.
                        match serde_json::from_str::<Edu>(&row.payload) {
                            Ok(edu) => edus.push(edu),
                            Err(err) => {
                                tracing::warn!(id = row.id, %err, "dropped a malformed queued EDU")
                            }
                        }
                    }
                    _ => break,
                }
                last_id = Some(row.id);
                last_ts = row.created_ts;
            }
            Ok((pdus, edus, last_id, last_ts))
        })
        .await
        .map_err(|e| e.to_string())?;
    let (pdus, edus, Some(last_id), last_ts) = batch else {
        return Ok(false);
    };
    // The same rows always make the same ID (a retry after a lost answer is recognised), and
    // rows are never reused, so different batches never share an ID.
    let txn_id = format!("{last_ts}-{last_id}-{}", pdus.len() + edus.len());
    let body = Transaction {
        origin: client_origin(client),
        origin_server_ts: now_ms(),
        pdus,
        edus,
    };
    let body = serde_json::to_value(body).map_err(|e| e.to_string())?;
    let path = format!("/_matrix/federation/v1/send/{txn_id}");
    client
        .request(destination, Method::PUT, &path, Some(body))
        .await
        .map_err(|e| e.to_string())?;
    let dest = destination.to_owned();
    // Deletes what the peer acknowledged: allowed below the free-space watermark, or a
    // read-only unit would send the same transaction again and again.
    store
        .write_bookkeeping(move |tx| {
            outbox::outbox_delete(tx, &dest, last_id)?;
            outbox::link_success(tx, &dest, now_ms())
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(true)
}

fn client_origin(client: &FederationClient) -> String {
    client.origin().to_owned()
}
