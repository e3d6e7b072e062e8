//! Simplified sliding sync (MSC4186), work in progress.

use std::sync::Arc;

use axum::Router;

use crate::service::Server;

/// The routes of this area.
pub fn routes() -> Router<Arc<Server>> {
    Router::new()
}
