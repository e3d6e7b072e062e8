//! Search: `POST /search` (category `room_events`) and `POST /user_directory/search`.
//!
//! The handlers only translate between the wire format and
//! [`crate::service::search`], which holds the rules (what is searchable, by whom, and how
//! client text becomes a safe FTS5 query).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::client::wire::{UserDirectory, UserDirectoryEntry};
use crate::api::extract::{Auth, JsonBody, QueryParams};
use crate::error::{Error, Result};
use crate::matrix::filter::RoomEventFilter;
use crate::service::Server;
use crate::service::search::{
    self, ContextRequest, GroupKey, Order, ResultContext, SearchKey, SearchRequest, SearchResults,
    Viewer,
};

/// The routes of this area.
pub fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/_matrix/client/v3/search", post(search_events))
        .route(
            "/_matrix/client/v3/user_directory/search",
            post(search_users),
        )
}

/// The `/search` request body.
#[derive(Deserialize)]
pub struct SearchBody {
    search_categories: Categories,
}

/// `search_categories`: only `room_events` is specified.
#[derive(Deserialize)]
pub struct Categories {
    room_events: Option<RoomEventsCriteria>,
}

/// The `room_events` criteria.
#[derive(Deserialize)]
pub struct RoomEventsCriteria {
    search_term: String,
    keys: Option<Vec<String>>,
    filter: Option<RoomEventFilter>,
    order_by: Option<String>,
    event_context: Option<EventContext>,
    #[serde(default)]
    include_state: bool,
    groupings: Option<Groupings>,
}

/// `event_context`: how much context to return around each result.
#[derive(Deserialize)]
pub struct EventContext {
    before_limit: Option<usize>,
    after_limit: Option<usize>,
    #[serde(default)]
    include_profile: bool,
}

/// `groupings`: how to partition the results.
#[derive(Deserialize)]
pub struct Groupings {
    #[serde(default)]
    group_by: Vec<GroupBy>,
}

/// One `group_by` entry.
#[derive(Deserialize)]
pub struct GroupBy {
    key: String,
}

/// Query parameters of `/search`.
#[derive(Deserialize)]
pub struct SearchQuery {
    next_batch: Option<String>,
}

fn search_key(raw: &str) -> Result<SearchKey> {
    match raw {
        "content.body" => Ok(SearchKey::Body),
        "content.name" => Ok(SearchKey::Name),
        "content.topic" => Ok(SearchKey::Topic),
        other => Err(Error::invalid_param(format!(
            "Unknown search key {other:?}"
        ))),
    }
}

fn order(raw: Option<&str>) -> Result<Order> {
    match raw {
        None | Some("rank") => Ok(Order::Rank),
        Some("recent") => Ok(Order::Recent),
        Some(other) => Err(Error::invalid_param(format!("Unknown order_by {other:?}"))),
    }
}

fn group_key(raw: &str) -> Result<GroupKey> {
    match raw {
        "room_id" => Ok(GroupKey::RoomId),
        "sender" => Ok(GroupKey::Sender),
        other => Err(Error::invalid_param(format!(
            "Unknown group_by key {other:?}"
        ))),
    }
}

fn request_of(criteria: RoomEventsCriteria, next_batch: Option<String>) -> Result<SearchRequest> {
    let keys = criteria
        .keys
        .unwrap_or_default()
        .iter()
        .map(|k| search_key(k))
        .collect::<Result<BTreeSet<_>>>()?;
    let mut group_by = Vec::new();
    for group in criteria.groupings.map(|g| g.group_by).unwrap_or_default() {
        let key = group_key(&group.key)?;
        if !group_by.contains(&key) {
            group_by.push(key);
        }
    }
    Ok(SearchRequest {
        term: criteria.search_term,
        keys,
        filter: criteria.filter.unwrap_or_default(),
        order: order(criteria.order_by.as_deref())?,
        context: criteria.event_context.map(|c| ContextRequest {
            before: c.before_limit.unwrap_or(5),
            after: c.after_limit.unwrap_or(5),
            include_profile: c.include_profile,
        }),
        include_state: criteria.include_state,
        group_by,
        next_batch,
    })
}

fn group_name(key: GroupKey) -> &'static str {
    match key {
        GroupKey::RoomId => "room_id",
        GroupKey::Sender => "sender",
    }
}

fn context_json(context: ResultContext) -> Value {
    let mut out = json!({
        "start": context.start,
        "end": context.end,
        "events_before": context.before,
        "events_after": context.after,
    });
    if let Some(profiles) = context.profiles {
        let info: Map<String, Value> = profiles
            .into_iter()
            .map(|(user, (name, avatar))| {
                let mut profile = Map::new();
                if let Some(name) = name {
                    profile.insert("displayname".to_owned(), json!(name));
                }
                if let Some(avatar) = avatar {
                    profile.insert("avatar_url".to_owned(), json!(avatar));
                }
                (user, Value::Object(profile))
            })
            .collect();
        out["profile_info"] = Value::Object(info);
    }
    out
}

fn results_json(found: SearchResults) -> Value {
    let results: Vec<Value> = found
        .results
        .into_iter()
        .map(|r| {
            let mut item = json!({"rank": r.rank, "result": r.event});
            if let Some(context) = r.context {
                item["context"] = context_json(context);
            }
            item
        })
        .collect();
    let mut out = json!({
        "count": found.count,
        "highlights": found.highlights,
        "results": results,
    });
    if let Some(state) = found.state {
        out["state"] = json!(state);
    }
    if !found.groups.is_empty() {
        let groups: Map<String, Value> = found
            .groups
            .into_iter()
            .map(|(key, values)| {
                let values: Map<String, Value> = values
                    .into_iter()
                    .map(|(value, group)| {
                        let mut entry = json!({"order": group.order, "results": group.results});
                        if let Some(next) = group.next_batch {
                            entry["next_batch"] = json!(next);
                        }
                        (value, entry)
                    })
                    .collect();
                (group_name(key).to_owned(), Value::Object(values))
            })
            .collect();
        out["groups"] = Value::Object(groups);
    }
    if let Some(next) = found.next_batch {
        out["next_batch"] = json!(next);
    }
    out
}

/// # `POST /_matrix/client/v3/search`
pub async fn search_events(
    State(server): State<Arc<Server>>,
    auth: Auth,
    QueryParams(query): QueryParams<SearchQuery>,
    JsonBody(body): JsonBody<SearchBody>,
) -> Result<Json<Value>> {
    let Some(criteria) = body.search_categories.room_events else {
        return Ok(Json(json!({"search_categories": {}})));
    };
    let request = request_of(criteria, query.next_batch)?;
    let viewer = Viewer {
        user_id: auth.user_id.to_string(),
        device_id: auth.device_id,
    };
    let found = search::search_events(&server, viewer, request).await?;
    Ok(Json(
        json!({"search_categories": {"room_events": results_json(found)}}),
    ))
}

/// The `/user_directory/search` request body.
#[derive(Deserialize)]
pub struct DirectoryBody {
    search_term: String,
    limit: Option<usize>,
}

/// # `POST /_matrix/client/v3/user_directory/search`
pub async fn search_users(
    State(server): State<Arc<Server>>,
    auth: Auth,
    JsonBody(body): JsonBody<DirectoryBody>,
) -> Result<Json<UserDirectory>> {
    let found = search::search_users(
        &server,
        auth.user_id.to_string(),
        body.search_term,
        body.limit,
    )
    .await?;
    let results = found
        .results
        .into_iter()
        .map(|user| UserDirectoryEntry {
            user_id: user.user_id,
            display_name: user.displayname,
            avatar_url: user.avatar_url,
        })
        .collect();
    Ok(Json(UserDirectory {
        results,
        limited: found.limited,
    }))
}
