//! What goes to and comes from peers as transactions: the durable outbox (queued PDUs and
//! EDUs per destination), each peer's link state, and the IDs of transactions received (with
//! their answers, so a retried transaction is answered alike and processed once).

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// Queues an item for a peer (and has the sender woken after the commit).
pub fn enqueue(
    conn: &super::WriteTx<'_>,
    destination: &str,
    kind: &str,
    payload: &str,
    now: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO federation_outbox (destination, kind, payload, created_ts) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![destination, kind, payload, now])?;
    conn.mark_outbox();
    Ok(())
}

/// Queues an EDU (its JSON, `edu_type` and `content`) for every server other than `own` with
/// a joined member in `room_id`, in the caller's transaction: how a domain service tells a
/// room's other units about a receipt or a typing notice without knowing federation.
pub fn enqueue_edu_for_room(
    conn: &super::WriteTx<'_>,
    own: &str,
    room_id: &str,
    edu: &str,
    now: i64,
) -> Result<()> {
    let servers: std::collections::BTreeSet<String> =
        super::state::members_with(conn, room_id, "join")?
            .iter()
            .filter_map(|u| u.split_once(':').map(|(_, s)| s.to_owned()))
            .filter(|s| s != own)
            .collect();
    for server in servers {
        enqueue(conn, &server, "edu", edu, now)?;
    }
    Ok(())
}

/// Peers with something queued.
pub fn pending_destinations(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT DISTINCT destination FROM federation_outbox")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A queued item of the outbox.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Its queue position (deleted up to it once delivered).
    pub id: i64,
    /// `pdu` or `edu`.
    pub kind: String,
    /// The event ID of a PDU, or the EDU's JSON.
    pub payload: String,
    /// When it was queued (ms).
    pub created_ts: i64,
}

/// The oldest queued items for a peer.
pub fn outbox_batch(conn: &Connection, destination: &str, limit: usize) -> Result<Vec<OutboxRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, kind, payload, created_ts FROM federation_outbox WHERE destination = ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![destination, limit as i64], |r| {
        Ok(OutboxRow {
            id: r.get(0)?,
            kind: r.get(1)?,
            payload: r.get(2)?,
            created_ts: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Removes delivered items.
pub fn outbox_delete(conn: &Connection, destination: &str, up_to_id: i64) -> Result<()> {
    conn.execute(
        "DELETE FROM federation_outbox WHERE destination = ?1 AND id <= ?2",
        params![destination, up_to_id],
    )?;
    Ok(())
}

/// Link state of one peer (its `peer_links` row and its outbox depth), as `appliance status`
/// and the admin socket show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkState {
    /// When a delivery last succeeded (ms since the epoch).
    pub last_success_ts: Option<i64>,
    /// When a delivery last failed.
    pub last_error_ts: Option<i64>,
    /// What the last failure was.
    pub last_error: Option<String>,
    /// Failures since the last success.
    pub failures: i64,
    /// Items waiting in the peer's outbox.
    pub queue_depth: i64,
}

/// The link state of a peer.
pub fn link_state(conn: &Connection, server: &str) -> Result<LinkState> {
    let depth: i64 = conn.query_row(
        "SELECT count(*) FROM federation_outbox WHERE destination = ?1",
        params![server],
        |r| r.get(0),
    )?;
    let row = conn
        .query_row(
            "SELECT last_success_ts, last_error_ts, last_error, failures FROM peer_links WHERE server_name = ?1",
            params![server],
            |r| {
                Ok(LinkState {
                    last_success_ts: r.get(0)?,
                    last_error_ts: r.get(1)?,
                    last_error: r.get(2)?,
                    failures: r.get(3)?,
                    queue_depth: 0,
                })
            },
        )
        .optional()?;
    Ok(LinkState {
        queue_depth: depth,
        ..row.unwrap_or_default()
    })
}

/// Records a successful delivery.
pub fn link_success(conn: &Connection, server: &str, now: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO peer_links (server_name, last_success_ts, failures) VALUES (?1, ?2, 0)
         ON CONFLICT (server_name) DO UPDATE SET last_success_ts = excluded.last_success_ts, failures = 0",
        params![server, now],
    )?;
    Ok(())
}

/// Records a failed delivery.
pub fn link_failure(conn: &Connection, server: &str, error: &str, now: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO peer_links (server_name, last_error_ts, last_error, failures) VALUES (?1, ?2, ?3, 1)
         ON CONFLICT (server_name) DO UPDATE SET last_error_ts = excluded.last_error_ts,
         last_error = excluded.last_error, failures = failures + 1",
        params![server, now, error],
    )?;
    Ok(())
}

/// The stored response to a transaction already received.
pub fn received_transaction(
    conn: &Connection,
    origin: &str,
    txn_id: &str,
) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT response FROM received_transactions WHERE origin = ?1 AND txn_id = ?2",
            params![origin, txn_id],
            |r| r.get(0),
        )
        .optional()?)
}

/// Remembers a processed transaction and its response.
pub fn record_transaction(
    conn: &Connection,
    origin: &str,
    txn_id: &str,
    response: &str,
    now: i64,
) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO received_transactions (origin, txn_id, received_ts, response) VALUES (?1, ?2, ?3, ?4)",
        params![origin, txn_id, now, response],
    )?;
    Ok(())
}
