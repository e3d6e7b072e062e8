//! Receiving transactions (spec: Server-Server API, "Transactions"): each PDU is checked
//! (`incoming`), missing auth events, prev events or the state before it are fetched from
//! the origin (at most [`MAX_FETCH_ROUNDS`] rounds), and EDUs are handed to `edu`.

use super::*;
use crate::matrix::wire::{
    EventAuthResponse, MissingEventsRequest, MissingEventsResponse, StateResponse, Transaction,
    TransactionResult,
};
use crate::store::WriteTx;
use crate::store::wake::Audience;

/// Most rounds of fetching missing events for one incoming PDU.
pub(super) const MAX_FETCH_ROUNDS: usize = 4;

/// Handles `PUT /send/{txnId}`: every PDU is checked and processed independently; the answer
/// maps each event ID to `{}` or `{"error"}`.
pub async fn receive_transaction(
    server: &Server,
    origin: &str,
    txn_id: &str,
    body: Transaction,
) -> Result<TransactionResult> {
    let (o, t) = (origin.to_owned(), txn_id.to_owned());
    if let Some(previous) = server
        .store
        .read(move |conn| outbox::received_transaction(conn, &o, &t))
        .await?
    {
        return serde_json::from_str(&previous).map_err(|e| Error::internal(e.to_string()));
    }
    if body.origin != origin {
        return Err(Error::forbidden(
            "transaction origin does not match the signed request",
        ));
    }
    let Transaction { pdus, edus, .. } = body;
    if pdus.len() > 50 || edus.len() > 100 {
        return Err(Error::new(
            ErrorCode::TooLarge,
            "a transaction holds at most 50 PDUs and 100 EDUs",
        ));
    }
    // Checks first (no writes): a PDU whose room is unknown or whose signature or hash is bad
    // is refused against its own entry below.
    let mut prepared = Vec::with_capacity(pdus.len());
    for value in pdus {
        // A PDU without a room ID names no room known here: it is reported as refused below,
        // against its own entry, like any other bad PDU of the transaction.
        let room_id = value
            .get("room_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let checked = async {
            let version = version_of(server, &room_id)
                .await?
                .ok_or_else(|| Error::not_found(format!("room {room_id} is not known here")))?;
            verify(server, &version, &value)
        }
        .await;
        prepared.push((room_id, value, checked));
    }
    // The common case, a peer's live traffic whose every event follows what we hold, is placed
    // in ONE write: one commit (one fsync) per transaction instead of one per PDU, which capped a
    // peer at a few hundred events per second while both units idled waiting on the disk.
    // Whatever that write cannot place without fetching takes the per-PDU path below, in order.
    let checked: Vec<Pdu> = prepared
        .iter()
        .filter_map(|(_, _, checked)| checked.as_ref().ok().cloned())
        .collect();
    let mut placed = if checked.is_empty() {
        Vec::new()
    } else {
        // A failed write places nothing: every PDU then takes the per-PDU path below, which
        // reports its own failure against its event.
        match server
            .store
            .write(move |tx| accept_run_in_tx(tx, &checked))
            .await
        {
            Ok(placed) => placed,
            Err(err) => {
                tracing::warn!(
                    origin,
                    txn_id,
                    ?err,
                    "batch write of the transaction's PDUs failed"
                );
                Vec::new()
            }
        }
    }
    .into_iter();
    let mut results = Map::new();
    for (room_id, value, checked) in prepared {
        let outcome = match checked {
            Ok(pdu) => {
                let event_id = pdu.event_id.clone();
                match placed.next() {
                    Some(outcome) => Ok((event_id, outcome)),
                    None => process_pdu(server, origin, pdu)
                        .await
                        .map(|o| (event_id, o)),
                }
            }
            Err(err) => Err(err),
        };
        match outcome {
            Ok((event_id, Outcome::Rejected(reason))) => {
                results.insert(event_id.to_string(), json!({"error": reason}));
            }
            Ok((event_id, _)) => {
                results.insert(event_id.to_string(), json!({}));
            }
            Err(err) => {
                let id = event_id_of(server, &room_id, &value)
                    .await
                    .unwrap_or_else(|| format!("unparsed-{}", results.len()));
                tracing::warn!(origin, event_id = %id, error = %err, "refused PDU in transaction");
                results.insert(id, json!({"error": err.to_string()}));
            }
        }
    }
    for edu in edus {
        // EDUs are best effort: a malformed or refused one is dropped, the rest still count.
        if let Err(err) = receive_edu(server, origin, &edu).await {
            tracing::warn!(origin, edu_type = %edu.edu_type, error = %err, "dropped EDU");
        }
    }
    let response = TransactionResult { pdus: results };
    let stored = serde_json::to_string(&response).map_err(|e| Error::internal(e.to_string()))?;
    let (o, t, r) = (origin.to_owned(), txn_id.to_owned(), stored);
    server
        .store
        .write(move |tx| outbox::record_transaction(tx, &o, &t, &r, now_ms()))
        .await?;
    Ok(response)
}

/// Places the leading run of `pdus` that needs nothing fetched, in order, in the caller's write:
/// the outcomes of `pdus[..n]`. Each PDU gets its own savepoint; the first that misses an auth
/// or prev event, or fails, is rolled back and ends the run, so it and everything after it go
/// through [`process_pdu`] exactly as before (a later PDU may build on the one that stopped).
fn accept_run_in_tx(tx: &mut WriteTx<'_>, pdus: &[Pdu]) -> Result<Vec<Outcome>> {
    let mut placed = Vec::with_capacity(pdus.len());
    for pdu in pdus {
        tx.execute_batch("SAVEPOINT pdu")?;
        match accept_in_tx(tx, pdu, None) {
            Ok(Ok(outcome)) => {
                tx.execute_batch("RELEASE pdu")?;
                placed.push(outcome);
            }
            Ok(Err(_)) | Err(_) => {
                tx.execute_batch("ROLLBACK TO pdu; RELEASE pdu")?;
                // The writer's PDU cache may have taken in what was just rolled back.
                tx.forget_pdu(pdu.event_id.as_str());
                break;
            }
        }
    }
    Ok(placed)
}

/// Accepts one verified PDU, fetching missing auth events and history from `origin` first.
pub async fn process_pdu(server: &Server, origin: &str, pdu: Pdu) -> Result<Outcome> {
    let mut supplied: Option<StateMap> = None;
    for _ in 0..MAX_FETCH_ROUNDS {
        let event = pdu.clone();
        let state = supplied.clone();
        let result = server
            .store
            .write(move |tx| accept_in_tx(tx, &event, state))
            .await?;
        match result {
            Ok(outcome) => return Ok(outcome),
            Err(Missing::AuthEvent(_)) => fetch_auth_chain(server, origin, &pdu).await?,
            Err(Missing::PrevEvent(_)) => {
                if !fetch_missing_events(server, origin, &pdu).await? {
                    supplied = Some(fetch_state_before(server, origin, &pdu).await?);
                }
            }
        }
    }
    Err(Error::forbidden(format!(
        "cannot place event {} in its room",
        pdu.event_id
    )))
}

/// Fetches and stores (as outliers) the auth chain of `pdu` from `origin`.
pub(super) async fn fetch_auth_chain(server: &Server, origin: &str, pdu: &Pdu) -> Result<()> {
    let path = format!(
        "/_matrix/federation/v1/event_auth/{}/{}",
        pdu.room_id, pdu.event_id
    );
    let response: EventAuthResponse = server
        .federation
        .request_as(origin, Method::GET, &path, None)
        .await
        .map_err(fed_error)?;
    store_outliers(server, &pdu.room_id, response.auth_chain).await
}

/// Verifies `values` and stores them as outliers, oldest first.
pub(super) async fn store_outliers(
    server: &Server,
    room_id: &RoomId,
    values: Vec<Value>,
) -> Result<()> {
    let version = version_of(server, room_id.as_str())
        .await?
        .ok_or_else(|| Error::not_found("unknown room"))?;
    let mut pdus = Vec::new();
    for value in &values {
        pdus.push(verify(server, &version, value)?);
    }
    pdus.sort_by_key(|p| p.depth);
    server
        .store
        .write(move |tx| {
            for pdu in &pdus {
                if !dag::have_event(tx, pdu.event_id.as_str())? {
                    let pos = tx.next_stream_pos(Audience::Room(pdu.room_id.as_str()));
                    dag::insert_outlier(tx, pdu, pos)?;
                }
            }
            Ok(())
        })
        .await
}

/// Asks `origin` for the events between our forward extremities and `pdu`; returns whether it
/// filled the gap.
pub(super) async fn fetch_missing_events(server: &Server, origin: &str, pdu: &Pdu) -> Result<bool> {
    let room = pdu.room_id.to_string();
    let earliest: Vec<String> = server
        .store
        .read(move |conn| {
            Ok(events::forward_extremities(conn, &room)?
                .into_iter()
                .map(|e| e.event_id.to_string())
                .collect())
        })
        .await?;
    let path = format!("/_matrix/federation/v1/get_missing_events/{}", pdu.room_id);
    let body = MissingEventsRequest {
        earliest_events: earliest,
        latest_events: vec![pdu.event_id.to_string()],
        limit: 50,
        min_depth: 0,
    };
    let body = serde_json::to_value(body).map_err(|e| Error::internal(e.to_string()))?;
    let response: MissingEventsResponse = server
        .federation
        .request_as(origin, Method::POST, &path, Some(body))
        .await
        .map_err(fed_error)?;
    let mut missing = Vec::new();
    let version = version_of(server, pdu.room_id.as_str())
        .await?
        .ok_or_else(|| Error::not_found("unknown room"))?;
    for value in response.events {
        missing.push(verify(server, &version, &value)?);
    }
    if missing.is_empty() {
        return Ok(false);
    }
    missing.sort_by_key(|p| p.depth);
    for event in missing {
        let candidate = event.clone();
        let result = server
            .store
            .write(move |tx| accept_in_tx(tx, &candidate, None))
            .await?;
        if let Err(Missing::AuthEvent(_)) = result {
            fetch_auth_chain(server, origin, &event).await?;
            let candidate = event.clone();
            if server
                .store
                .write(move |tx| accept_in_tx(tx, &candidate, None))
                .await?
                .is_err()
            {
                return Ok(false);
            }
        } else if result.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Gets the state before `pdu` from `origin` (`/state_ids`, then the events we lack).
pub(super) async fn fetch_state_before(
    server: &Server,
    origin: &str,
    pdu: &Pdu,
) -> Result<StateMap> {
    let path = format!(
        "/_matrix/federation/v1/state/{}?event_id={}",
        pdu.room_id,
        urlencode(pdu.event_id.as_str())
    );
    let StateResponse {
        pdus,
        auth_chain: mut all,
    } = server
        .federation
        .request_as(origin, Method::GET, &path, None)
        .await
        .map_err(fed_error)?;
    all.extend(pdus.iter().cloned());
    store_outliers(server, &pdu.room_id, all).await?;
    let version = version_of(server, pdu.room_id.as_str())
        .await?
        .ok_or_else(|| Error::not_found("unknown room"))?;
    let mut map = StateMap::new();
    for value in pdus {
        let event = verify(server, &version, &value)?;
        if let Some(key) = &event.state_key {
            map.insert(
                (event.kind.to_string(), key.clone()),
                event.event_id.to_string(),
            );
        }
    }
    Ok(map)
}
