//! Backfill (spec: Server-Server API, "Backfilling and retrieving missing events"): history
//! from before this unit's first event in a room, fetched from a peer in the room.

use super::*;
use crate::matrix::wire::PduTransaction;

/// Fetches history from before this unit's first event in a room from a peer in the room, so
/// back-pagination reaches the room's beginning. Returns how many events were added.
///
/// Backfilled events are checked for format, allow-listed servers, signatures and content
/// hash; they are not re-authorised against the state at their place in the DAG, which this
/// unit does not hold.
pub async fn backfill(server: &Server, room_id: &RoomId, limit: usize) -> Result<usize> {
    let room = room_id.to_string();
    let point = server
        .store
        .read(move |conn| dag::backfill_point(conn, &room))
        .await?;
    let Some(from) = point else { return Ok(0) };
    let room = room_id.to_string();
    let own = server.server_name().to_string();
    let servers: BTreeSet<String> = server
        .store
        .read(move |conn| state::members_with(conn, &room, "join"))
        .await?
        .iter()
        .filter_map(|u| u.split_once(':').map(|(_, s)| s.to_owned()))
        .filter(|s| *s != own && server.peers.contains(s))
        .collect();
    let Some(version) = version_of(server, room_id.as_str()).await? else {
        return Ok(0);
    };
    let query: Vec<String> = from
        .iter()
        .map(|id| format!("v={}", urlencode(id)))
        .collect();
    let path = format!(
        "/_matrix/federation/v1/backfill/{}?limit={}&{}",
        urlencode(room_id.as_str()),
        limit.min(100),
        query.join("&")
    );
    let (path, version) = (&path, &version);
    let added = try_each_resident(
        room_id,
        servers.into_iter().collect(),
        "backfill",
        "no peer in the room to backfill from",
        |peer| async move {
            let response: PduTransaction = server
                .federation
                .request_as(&peer, Method::GET, path, None)
                .await
                .map_err(fed_error)?;
            let mut pdus = Vec::new();
            for value in response.pdus {
                match verify(server, version, &value) {
                    Ok(pdu) if pdu.room_id == room_id => pdus.push(pdu),
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(room = %room_id, peer = %peer, error = %err, "refused backfilled event")
                    }
                }
            }
            if pdus.is_empty() {
                return Err(Error::not_found("the peer sent no event this unit could keep"));
            }
            pdus.sort_by_key(|p| std::cmp::Reverse(p.depth));
            server
                .store
                .write(move |tx| {
                    let mut added = 0;
                    for pdu in &pdus {
                        if dag::store_backfilled(tx, pdu)? {
                            added += 1;
                        }
                    }
                    Ok(added)
                })
                .await
        },
    )
    .await;
    // Best effort: each peer's failure was logged by the loop; with none able to help, back
    // pagination simply stops where this unit's history does.
    Ok(added.unwrap_or(0))
}
