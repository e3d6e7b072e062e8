//! `/notifications`: the events that notified a user (their own rows and the shared default
//! outcomes written by push evaluation, `service::push::notify_in_tx`), newest first, filtered by history visibility like every
//! path that returns events, in the client format.

use std::collections::HashMap;

use ruma::OwnedUserId;
use ruma::push::Action;
use serde::Serialize;
use serde_json::Value;

use super::Server;
use crate::error::{Error, Result};
use crate::matrix::visibility::Visible;
use crate::store::events;
use crate::store::push as store;

/// One notification (spec: `GET /notifications` 200, `Notification`).
#[derive(Debug, Serialize)]
pub struct Notification {
    /// The actions of the push rule that matched.
    pub actions: Vec<Action>,
    /// The event, client-format event JSON (its content is arbitrary).
    pub event: Value,
    /// Whether the user has read past it.
    pub read: bool,
    /// The room it is in.
    pub room_id: String,
    /// When it was sent (ms since the epoch).
    pub ts: i64,
}

/// A page of notifications.
#[derive(Debug, Serialize)]
pub struct Notifications {
    /// Newest first.
    pub notifications: Vec<Notification>,
    /// Where the next page starts, when there may be one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `GET /notifications`: the user's notifications, newest first, from the `from` token (a
/// stream position), optionally only the highlighted ones.
pub async fn list_notifications(
    server: &Server,
    user_id: OwnedUserId,
    from: Option<String>,
    limit: Option<u64>,
    only_highlight: bool,
) -> Result<Notifications> {
    let before = match from.as_deref() {
        Some(token) => token
            .parse::<i64>()
            .map_err(|_| Error::invalid_param("Unknown 'from' token"))?,
        None => i64::MAX,
    };
    let limit = limit.unwrap_or(20).clamp(1, 100) as usize;
    server
        .store
        .read(move |conn| {
            let user = user_id.as_str();
            let rows = store::notifications(conn, user, before, limit, only_highlight)?;
            let mut read_upto: HashMap<String, i64> = HashMap::new();
            let mut visible: HashMap<String, Visible> = HashMap::new();
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let Some(stored) = events::get_event(conn, &row.event_id)? else {
                    continue;
                };
                // Notifications are written for members when the event arrives; history
                // visibility still has the last word, as on every path that returns events.
                let room_visible = match visible.get(&row.room_id) {
                    Some(v) => v,
                    None => {
                        let v = super::rooms::user_visibility(conn, &row.room_id, user)?;
                        visible.entry(row.room_id.clone()).or_insert(v)
                    }
                };
                if !room_visible.allows(stored.stream_pos) {
                    continue;
                }
                let read = match read_upto.get(&row.room_id) {
                    Some(pos) => *pos,
                    None => {
                        let pos = store::read_pos(conn, user, &row.room_id)?;
                        read_upto.insert(row.room_id.clone(), pos);
                        pos
                    }
                };
                out.push(Notification {
                    actions: super::push::parse_stored_actions(&row.actions)?,
                    event: super::rooms::client_event(conn, &stored, None)?,
                    read: row.stream_pos <= read,
                    room_id: row.room_id.clone(),
                    ts: i64::from(stored.pdu.origin_server_ts.get()),
                });
            }
            let next_token = match rows.last() {
                Some(last) if rows.len() == limit => Some(last.stream_pos.to_string()),
                _ => None,
            };
            Ok(Notifications {
                notifications: out,
                next_token,
            })
        })
        .await
}
