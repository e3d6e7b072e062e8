//! Spaces: `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`, the rooms below a space by its
//! `m.space.child` state, depth first, including rooms only allow-listed peers hold (asked
//! over federation). The walk is in [`crate::service::federation::hierarchy`].

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::extract::{Auth, PathParams, QueryParams, room_id};
use crate::error::{Error, Result};
use crate::service::Server;
use crate::service::federation::hierarchy::{
    self, DEFAULT_LIMIT, MAX_DEPTH, MAX_LIMIT, WalkParams,
};

/// The routes of this area.
pub fn routes() -> Router<Arc<Server>> {
    Router::new().route(
        "/_matrix/client/v1/rooms/{room_id}/hierarchy",
        get(space_hierarchy),
    )
}

/// The query of `hierarchy`.
#[derive(Deserialize)]
pub struct HierarchyQuery {
    /// Pagination token from [`next_batch`].
    from: Option<String>,
    limit: Option<usize>,
    max_depth: Option<usize>,
    #[serde(default)]
    suggested_only: bool,
}

/// The pagination token after `skip` rooms of a walk with `max_depth` and `suggested_only`:
/// the two settings travel in it because the spec forbids changing them while paging.
fn next_batch(skip: usize, max_depth: usize, suggested_only: bool) -> String {
    format!("{skip}_{max_depth}_{}", u8::from(suggested_only))
}

/// How many rooms the token `from` passes over; `M_INVALID_PARAM` for a token this server did
/// not make or one made with other `max_depth` / `suggested_only` settings.
fn skip_of(from: &str, max_depth: usize, suggested_only: bool) -> Result<usize> {
    let skip = from
        .split('_')
        .next()
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or_else(|| Error::invalid_param("Unknown pagination token"))?;
    if from != next_batch(skip, max_depth, suggested_only) {
        return Err(Error::invalid_param(
            "suggested_only and max_depth cannot change while paginating",
        ));
    }
    Ok(skip)
}

/// A page of `GET /hierarchy` (spec: 200).
#[derive(Debug, Serialize)]
pub struct HierarchyPage {
    /// Room summaries (`SpaceHierarchyRoomsChunk`). They stay values: a peer's summaries are
    /// passed on with only the spec's fields kept (`service::federation::hierarchy`), and
    /// `children_state` holds stripped events with arbitrary content.
    pub rooms: Vec<Value>,
    /// The token of the next page, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_batch: Option<String>,
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`
pub async fn space_hierarchy(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(room): PathParams<String>,
    QueryParams(q): QueryParams<HierarchyQuery>,
) -> Result<Json<HierarchyPage>> {
    let root = room_id(&room)?;
    let max_depth = q.max_depth.unwrap_or(MAX_DEPTH).min(MAX_DEPTH);
    let skip = match q.from.as_deref() {
        Some(token) => skip_of(token, max_depth, q.suggested_only)?,
        None => 0,
    };
    if q.limit == Some(0) {
        return Err(Error::invalid_param("limit must be greater than zero"));
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let params = WalkParams {
        skip,
        limit,
        max_depth,
        suggested_only: q.suggested_only,
    };
    let page = hierarchy::client_hierarchy(&server, auth.user_id, root, params).await?;
    Ok(Json(HierarchyPage {
        rooms: page.rooms,
        next_batch: page
            .more
            .then(|| next_batch(skip + limit, max_depth, q.suggested_only)),
    }))
}
