//! Spaces: `/_matrix/client/v1/rooms/{roomId}/hierarchy`, the rooms below a space by its
//! `m.space.child` state, breadth first.
//!
//! Only rooms this unit holds are walked: a child room known only to other units is left out
//! (federation `hierarchy` is not used).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::room_summary;
use crate::api::extract::{Auth, PathParams, QueryParams, room_id};
use crate::error::{Error, Result};
use crate::matrix::client_format::to_stripped_state;
use crate::service::Server;
use crate::store::{events, state};

/// Most rooms per page, and the deepest level walked.
const MAX_LIMIT: usize = 100;
const MAX_DEPTH: usize = 10;

/// The routes of this area.
pub fn routes() -> Router<Arc<Server>> {
    Router::new().route(
        "/_matrix/client/v1/rooms/{room_id}/hierarchy",
        get(hierarchy),
    )
}

#[derive(Deserialize)]
pub struct HierarchyQuery {
    from: Option<String>,
    limit: Option<usize>,
    max_depth: Option<usize>,
    #[serde(default)]
    suggested_only: bool,
}

/// Whether `user` may see `room` in a hierarchy: joined, or the room is public or
/// world-readable.
fn may_see(conn: &rusqlite::Connection, room: &str, user: &str, summary: &Value) -> Result<bool> {
    Ok(
        state::membership(conn, room, user)?.as_deref() == Some("join")
            || summary["join_rule"] == "public"
            || summary["world_readable"] == true,
    )
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`
pub async fn hierarchy(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    QueryParams(q): QueryParams<HierarchyQuery>,
) -> Result<Json<Value>> {
    let root = room_id(&room)?.to_string();
    let skip = match q.from.as_deref() {
        Some(token) => token
            .parse::<usize>()
            .map_err(|_| Error::invalid_param("Unknown pagination token"))?,
        None => 0,
    };
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_LIMIT);
    let max_depth = q.max_depth.unwrap_or(MAX_DEPTH).min(MAX_DEPTH);
    let user = auth.user_id.to_string();
    let (rooms, more) = server
        .store
        .read(move |conn| {
            if state::get_room(conn, &root)?.is_none() {
                return Err(Error::forbidden("You may not see this room"));
            }
            let root_summary = room_summary(conn, &root)?;
            if !may_see(conn, &root, &user, &root_summary)? {
                return Err(Error::forbidden("You may not see this room"));
            }
            let mut out = Vec::new();
            let mut seen = BTreeSet::from([root.clone()]);
            let mut queue = VecDeque::from([(root, 0_usize)]);
            let mut index = 0;
            while let Some((room, depth)) = queue.pop_front() {
                let mut summary = room_summary(conn, &room)?;
                if !may_see(conn, &room, &user, &summary)? {
                    continue;
                }
                let mut children = Vec::new();
                for ((kind, key), id) in state::current_state(conn, &room)? {
                    if kind != "m.space.child" {
                        continue;
                    }
                    let Some(event) = events::get_event(conn, &id)? else {
                        continue;
                    };
                    let content = event.pdu.content_value();
                    // A child without `via` has been removed (spec: "m.space.child").
                    if content
                        .get("via")
                        .and_then(Value::as_array)
                        .is_none_or(Vec::is_empty)
                        || (q.suggested_only && content.get("suggested") != Some(&json!(true)))
                    {
                        continue;
                    }
                    let mut child = to_stripped_state(&event.pdu);
                    child["origin_server_ts"] = json!(i64::from(event.pdu.origin_server_ts.get()));
                    children.push(child);
                    if depth < max_depth
                        && seen.insert(key.clone())
                        && state::get_room(conn, &key)?.is_some()
                    {
                        queue.push_back((key, depth + 1));
                    }
                }
                summary["children_state"] = json!(children);
                if index >= skip {
                    if out.len() == limit {
                        return Ok((out, true));
                    }
                    out.push(summary);
                }
                index += 1;
            }
            Ok((out, false))
        })
        .await?;
    let mut body = json!({"rooms": rooms});
    if more {
        body["next_batch"] = json!((skip + limit).to_string());
    }
    Ok(Json(body))
}
