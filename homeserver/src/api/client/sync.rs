//! `/sync` and filters.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::Value;

use crate::api::client::wire::FilterId;
use crate::api::extract::{Auth, JsonBody, PathParams, QueryParams, user_id};
use crate::error::{Error, Result};
use crate::matrix::filter::Filter;
use crate::service::sync::{self, SyncRequest, SyncResponse};
use crate::service::tokens::SyncToken;
use crate::service::{Server, filters, presence};

#[derive(Deserialize)]
pub struct SyncQuery {
    since: Option<String>,
    timeout: Option<u64>,
    #[serde(default)]
    full_state: bool,
    filter: Option<String>,
    set_presence: Option<String>,
    #[serde(default)]
    use_state_after: bool,
}

/// # `GET /_matrix/client/v3/sync`
pub async fn sync(
    State(server): State<Arc<Server>>,
    auth: Auth,
    QueryParams(q): QueryParams<SyncQuery>,
) -> Result<Json<SyncResponse>> {
    if let Some(presence) = &q.set_presence
        && !matches!(presence.as_str(), "online" | "offline" | "unavailable")
    {
        return Err(Error::invalid_param(
            "set_presence must be online, offline or unavailable",
        ));
    }
    let since = q.since.as_deref().map(SyncToken::parse).transpose()?;
    let filter = match q.filter.as_deref() {
        None => Filter::default(),
        Some(raw) if raw.trim_start().starts_with('{') => serde_json::from_str(raw)
            .map_err(|err| Error::bad_json(format!("Invalid filter: {err}")))?,
        Some(id) => Filter::clone(&*filters::load(&server, &auth.user_id, id).await?),
    };
    // Syncing marks the user active unless the client says otherwise (spec: `set_presence`,
    // default `online`; `offline` leaves presence untouched).
    match q.set_presence.as_deref().unwrap_or("online") {
        "offline" => {}
        state => presence::mark_active(&server, &auth.user_id, state).await?,
    }
    let request = SyncRequest {
        user_id: auth.user_id,
        device_id: auth.device_id,
        since: since.map(|t| t.pos),
        typing_since: since.map(|t| t.typing).unwrap_or(0),
        to_device_since: since.and_then(|t| t.to_device),
        full_state: q.full_state,
        filter,
        timeout: Duration::from_millis(q.timeout.unwrap_or(0)),
        use_state_after: q.use_state_after,
        own_server: server.server_name().to_string(),
        ignored: Vec::new(),
        related_rooms: None,
    };
    Ok(Json(sync::sync(&server, request).await?))
}

pub fn check_self(auth: &Auth, raw_user: &str) -> Result<()> {
    let target = user_id(raw_user)?;
    if target != auth.user_id {
        return Err(Error::forbidden(
            "You may only manage your own filters and account data",
        ));
    }
    Ok(())
}

/// # `POST /_matrix/client/v3/user/{userId}/filter`
pub async fn create_filter(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(user): PathParams<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<FilterId>> {
    check_self(&auth, &user)?;
    let id = filters::create(&server, &auth.user_id, body).await?;
    Ok(Json(FilterId {
        filter_id: id.to_string(),
    }))
}

/// # `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
pub async fn get_filter(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((user, id)): PathParams<(String, String)>,
) -> Result<Json<Value>> {
    check_self(&auth, &user)?;
    let filter_id: i64 = id
        .parse()
        .map_err(|_| Error::not_found("Filter not found"))?;
    Ok(Json(filters::get(&server, &auth.user_id, filter_id).await?))
}
