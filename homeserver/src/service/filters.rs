//! Filters uploaded by clients (`/user/{userId}/filter`): validated as a `Filter` when
//! created, stored as the client sent them, and loaded by ID for `/sync`.

use ruma::UserId;
use serde_json::Value;

use super::Server;
use crate::error::{Error, Result};
use crate::matrix::filter::Filter;
use crate::store::misc;

/// Stores a filter after checking it parses (`M_BAD_JSON` otherwise); returns its ID.
pub async fn create(server: &Server, user: &UserId, body: Value) -> Result<i64> {
    let _: Filter = serde_json::from_value(body.clone())
        .map_err(|err| Error::bad_json(format!("Invalid filter: {err}")))?;
    let json = body.to_string();
    let owner = user.to_string();
    server
        .store
        .write(move |tx| misc::create_filter(tx, &owner, &json))
        .await
}

/// A stored filter as the client uploaded it (`M_NOT_FOUND` when the user has none by `id`).
pub async fn get(server: &Server, user: &UserId, id: i64) -> Result<Value> {
    let owner = user.to_string();
    let json = server
        .store
        .read(move |conn| misc::get_filter(conn, &owner, id))
        .await?
        .ok_or_else(|| Error::not_found("Filter not found"))?;
    serde_json::from_str(&json).map_err(|err| Error::internal(format!("stored filter: {err}")))
}

/// A stored filter parsed for `/sync` (`?filter=<id>`).
pub async fn load(server: &Server, user: &UserId, id: &str) -> Result<Filter> {
    let filter_id: i64 = id
        .parse()
        .map_err(|_| Error::invalid_param("Invalid filter ID"))?;
    serde_json::from_value(get(server, user, filter_id).await?)
        .map_err(|err| Error::internal(format!("stored filter: {err}")))
}
