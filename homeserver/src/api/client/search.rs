//! Search: `POST /search` (category `room_events`) and `POST /user_directory/search`.
//!
//! The handlers only translate between the wire format and
//! [`crate::service::search`], which holds the rules (what is searchable, by whom, and how
//! client text becomes a safe FTS5 query).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::client::wire::{UserDirectory, UserDirectoryEntry};
use crate::api::extract::{Auth, JsonBody, QueryParams};
use crate::error::{Error, Result};
use crate::matrix::filter::RoomEventFilter;
use crate::matrix::wire::ProfileResponse;
use crate::service::Server;
use crate::service::search::{
    self, ContextRequest, GroupKey, Order, ResultContext, SearchKey, SearchRequest, SearchResults,
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

/// The answer of `POST /search`: only the `room_events` category exists.
#[derive(Debug, Serialize)]
pub struct SearchResponse {
    /// The results by category.
    pub search_categories: SearchCategories,
}

/// The categories searched.
#[derive(Debug, Serialize)]
pub struct SearchCategories {
    /// Results of the `room_events` category, when it was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_events: Option<RoomEventResults>,
}

/// The `room_events` results (spec: `ResultRoomEvents`).
#[derive(Debug, Serialize)]
pub struct RoomEventResults {
    /// How many events match.
    pub count: i64,
    /// Words to highlight.
    pub highlights: Vec<String>,
    /// The results in order.
    pub results: Vec<ResultItem>,
    /// Room → current state events (client-format event JSON), when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<BTreeMap<String, Vec<Value>>>,
    /// Group key (`room_id`, `sender`) → group value → group, when asked for.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<&'static str, BTreeMap<String, GroupJson>>,
    /// Continues the search.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_batch: Option<String>,
}

/// One result.
#[derive(Debug, Serialize)]
pub struct ResultItem {
    /// Higher is more relevant.
    pub rank: f64,
    /// The event, client-format event JSON (arbitrary content).
    pub result: Value,
    /// Events around it, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<ContextJson>,
}

/// The context of a result (spec: `EventContext`).
#[derive(Debug, Serialize)]
pub struct ContextJson {
    /// `/messages` token of the start of `events_before`.
    pub start: String,
    /// `/messages` token of the end of `events_after`.
    pub end: String,
    /// Events before the result, newest first (client-format event JSON).
    pub events_before: Vec<Value>,
    /// Events after the result, oldest first (client-format event JSON).
    pub events_after: Vec<Value>,
    /// The senders' profiles as of the result, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_info: Option<BTreeMap<String, ProfileResponse>>,
}

/// One group of results.
#[derive(Debug, Serialize)]
pub struct GroupJson {
    /// 1-based position of the group's first result on this page.
    pub order: usize,
    /// The event IDs of the group's results on this page.
    pub results: Vec<String>,
    /// Continues the search within this group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_batch: Option<String>,
}

fn context_json(context: ResultContext) -> ContextJson {
    ContextJson {
        start: context.start,
        end: context.end,
        events_before: context.before,
        events_after: context.after,
        profile_info: context.profiles.map(|profiles| {
            profiles
                .into_iter()
                .map(|(user, (displayname, avatar_url))| {
                    let profile = ProfileResponse {
                        displayname,
                        avatar_url,
                    };
                    (user, profile)
                })
                .collect()
        }),
    }
}

fn results_json(found: SearchResults) -> RoomEventResults {
    let results = found
        .results
        .into_iter()
        .map(|r| ResultItem {
            rank: r.rank,
            result: r.event,
            context: r.context.map(context_json),
        })
        .collect();
    let groups = found
        .groups
        .into_iter()
        .map(|(key, values)| {
            let values = values
                .into_iter()
                .map(|(value, group)| {
                    let entry = GroupJson {
                        order: group.order,
                        results: group.results,
                        next_batch: group.next_batch,
                    };
                    (value, entry)
                })
                .collect();
            (group_name(key), values)
        })
        .collect();
    RoomEventResults {
        count: found.count,
        highlights: found.highlights,
        results,
        state: found.state,
        groups,
        next_batch: found.next_batch,
    }
}

/// # `POST /_matrix/client/v3/search`
pub async fn search_events(
    State(server): State<Arc<Server>>,
    auth: Auth,
    QueryParams(query): QueryParams<SearchQuery>,
    JsonBody(body): JsonBody<SearchBody>,
) -> Result<Json<SearchResponse>> {
    let Some(criteria) = body.search_categories.room_events else {
        return Ok(Json(SearchResponse {
            search_categories: SearchCategories { room_events: None },
        }));
    };
    let request = request_of(criteria, query.next_batch)?;
    let found = search::search_events(&server, auth.viewer(), request).await?;
    Ok(Json(SearchResponse {
        search_categories: SearchCategories {
            room_events: Some(results_json(found)),
        },
    }))
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
    let found = search::search_users(&server, auth.user_id, body.search_term, body.limit).await?;
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
