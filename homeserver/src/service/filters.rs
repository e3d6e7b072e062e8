//! Filters uploaded by clients (`/user/{userId}/filter`): validated as a `Filter` when
//! created, stored as the client sent them, and loaded by ID for `/sync`, through a small
//! in-memory cache of parsed filters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

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
pub async fn load(server: &Server, user: &UserId, id: &str) -> Result<Arc<Filter>> {
    let filter_id: i64 = id
        .parse()
        .map_err(|_| Error::invalid_param("Invalid filter ID"))?;
    let key = (user.to_string(), filter_id);
    if let Some(filter) = server.filters.get(&key) {
        return Ok(filter);
    }
    let filter: Arc<Filter> = Arc::new(
        serde_json::from_value(get(server, user, filter_id).await?)
            .map_err(|err| Error::internal(format!("stored filter: {err}")))?,
    );
    server.filters.insert(key, filter.clone());
    Ok(filter)
}

/// How many parsed filters [`Cache`] keeps before it starts again empty.
const CACHE_ENTRIES: usize = 4096;

/// Parsed filters by owner and ID. A stored filter never changes, and a client names the same
/// one on every `/sync` long poll, so each is read and parsed once rather than per request (a
/// database read on the blocking pool and a JSON parse, 2% of a busy unit's CPU). Bounded:
/// when full it is emptied, and the filters in use come back on their next poll.
#[derive(Default)]
pub struct Cache {
    inner: Mutex<HashMap<(String, i64), Arc<Filter>>>,
}

impl Cache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i64), Arc<Filter>>> {
        // The map holds no invariant a panicking holder could break.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, key: &(String, i64)) -> Option<Arc<Filter>> {
        self.lock().get(key).cloned()
    }

    fn insert(&self, key: (String, i64), filter: Arc<Filter>) {
        let mut map = self.lock();
        if map.len() >= CACHE_ENTRIES {
            map.clear();
        }
        map.insert(key, filter);
    }
}
