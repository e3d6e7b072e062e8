//! Federation spaces: `GET /_matrix/federation/v1/hierarchy/{roomId}`, a room this unit holds
//! with its `m.space.child` links and the summaries of the children the requesting peer may
//! see. The behaviour is in [`crate::service::federation::hierarchy`].

use std::sync::Arc;

use crate::matrix::wire::HierarchyResponse;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::Signed;
use crate::api::extract::{PathParams, QueryParams, room_id};
use crate::error::Result;
use crate::service::Server;
use crate::service::federation::hierarchy;

/// The routes of this area.
pub fn routes() -> Router<Arc<Server>> {
    Router::new().route(
        "/_matrix/federation/v1/hierarchy/{room_id}",
        get(space_hierarchy),
    )
}

/// The query of `hierarchy`.
#[derive(Deserialize)]
pub struct HierarchyQuery {
    /// Consider only children marked `suggested` (default `false`).
    #[serde(default)]
    suggested_only: bool,
}

/// # `GET /_matrix/federation/v1/hierarchy/{roomId}`
/// The space and the children the signed origin could peek or join; `M_NOT_FOUND` for a
/// room this unit does not hold or the origin may not see.
pub async fn space_hierarchy(
    State(server): State<Arc<Server>>,
    PathParams(room): PathParams<String>,
    QueryParams(query): QueryParams<HierarchyQuery>,
    signed: Signed,
) -> Result<Json<HierarchyResponse>> {
    let room = room_id(&room)?;
    hierarchy::answer_peer(&server, signed.origin, room, query.suggested_only)
        .await
        .map(Json)
}
