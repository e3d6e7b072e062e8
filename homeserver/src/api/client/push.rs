//! Push: `/pushrules/*`, `/notifications`, `/pushers`.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use ruma::push::RuleKind;
use serde::Deserialize;
use serde_json::Value;

use crate::api::client::wire::{Empty, PushRules, RuleActions, RuleEnabled};
use crate::api::extract::{Auth, JsonBody, PathParams, QueryParams};
use crate::error::{Error, Result};
use crate::service::{Server, notifications, push};

/// The routes of this area.
pub fn routes() -> Router<Arc<Server>> {
    const V3: &str = "/_matrix/client/v3";
    let r = |path: &str| format!("{V3}{path}");
    Router::new()
        .route(&r("/pushrules/"), get(get_all))
        .route(&r("/pushrules"), get(get_all))
        .route(&r("/pushrules/global/"), get(get_global))
        .route(&r("/pushrules/global"), get(get_global))
        .route(&r("/pushrules/{scope}/{kind}/"), get(get_kind))
        .route(
            &r("/pushrules/{scope}/{kind}/{rule_id}"),
            get(get_rule).put(put_rule).delete(delete_rule),
        )
        .route(
            &r("/pushrules/{scope}/{kind}/{rule_id}/enabled"),
            get(get_enabled).put(put_enabled),
        )
        .route(
            &r("/pushrules/{scope}/{kind}/{rule_id}/actions"),
            get(get_actions).put(put_actions),
        )
        .route(&r("/notifications"), get(notifications))
        .route(&r("/pushers"), get(get_pushers))
        .route(&r("/pushers/set"), post(set_pusher))
}

/// # `GET /_matrix/client/v3/pushrules/`
async fn get_all(State(server): State<Arc<Server>>, auth: Auth) -> Result<Json<PushRules>> {
    let global = push::get_rules(&server, auth.user_id).await?;
    Ok(Json(PushRules { global }))
}

/// # `GET /_matrix/client/v3/pushrules/global/`
async fn get_global(
    State(server): State<Arc<Server>>,
    auth: Auth,
) -> Result<Json<push::ClientRuleset>> {
    Ok(Json(push::get_rules(&server, auth.user_id).await?))
}

/// The scope, kind and rule ID of a path, checked: only the `global` scope exists, and the ID
/// of a `room` rule must be a room ID and that of a `sender` rule a user ID (the rule matches
/// on them). Every malformed part is the client's error, 400.
fn rule_path((scope, kind, rule_id): (String, String, String)) -> Result<(RuleKind, String)> {
    check_scope(&scope)?;
    let kind = push::parse_kind(&kind)?;
    let valid = match kind {
        RuleKind::Room => ruma::RoomId::parse(&rule_id).is_ok(),
        RuleKind::Sender => ruma::UserId::parse(&rule_id).is_ok(),
        _ => !rule_id.is_empty(),
    };
    if !valid {
        return Err(Error::invalid_param(format!(
            "{rule_id:?} is not a valid rule ID for {} rules",
            kind.as_str()
        )));
    }
    Ok((kind, rule_id))
}

fn check_scope(scope: &str) -> Result<()> {
    if scope != "global" {
        return Err(Error::invalid_param(format!(
            "Unknown push rule scope {scope:?}; only \"global\" exists"
        )));
    }
    Ok(())
}

/// # `GET /_matrix/client/v3/pushrules/{scope}/{kind}/`
/// The rules of one kind, in priority order.
async fn get_kind(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((scope, kind)): PathParams<(String, String)>,
) -> Result<Json<push::RulesOfKind>> {
    check_scope(&scope)?;
    let kind = push::parse_kind(&kind)?;
    let rules = push::get_rules(&server, auth.user_id).await?;
    Ok(Json(rules.of_kind(kind)))
}

/// # `GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}`
async fn get_rule(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(path): PathParams<(String, String, String)>,
) -> Result<Json<push::ClientRule>> {
    let (kind, rule_id) = rule_path(path)?;
    Ok(Json(
        push::get_rule(&server, auth.user_id, kind, rule_id).await?,
    ))
}

#[derive(Deserialize)]
struct Placement {
    before: Option<String>,
    after: Option<String>,
}

/// # `PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}`
async fn put_rule(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(path): PathParams<(String, String, String)>,
    QueryParams(place): QueryParams<Placement>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Empty>> {
    let (kind, rule_id) = rule_path(path)?;
    let body = push::parse_rule_body(body)?;
    push::put_rule(
        &server,
        auth.user_id,
        kind,
        rule_id,
        body,
        place.before,
        place.after,
    )
    .await?;
    Ok(Json(Empty {}))
}

/// # `DELETE /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}`
async fn delete_rule(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(path): PathParams<(String, String, String)>,
) -> Result<Json<Empty>> {
    let (kind, rule_id) = rule_path(path)?;
    push::delete_rule(&server, auth.user_id, kind, rule_id).await?;
    Ok(Json(Empty {}))
}

/// # `GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/enabled`
async fn get_enabled(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(path): PathParams<(String, String, String)>,
) -> Result<Json<RuleEnabled>> {
    let (kind, rule_id) = rule_path(path)?;
    let rule = push::get_rule(&server, auth.user_id, kind, rule_id).await?;
    Ok(Json(RuleEnabled {
        enabled: rule.enabled(),
    }))
}

#[derive(Deserialize)]
struct EnabledBody {
    enabled: bool,
}

/// # `PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/enabled`
async fn put_enabled(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(path): PathParams<(String, String, String)>,
    JsonBody(body): JsonBody<EnabledBody>,
) -> Result<Json<Empty>> {
    let (kind, rule_id) = rule_path(path)?;
    push::set_enabled(&server, auth.user_id, kind, rule_id, body.enabled).await?;
    Ok(Json(Empty {}))
}

/// # `GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/actions`
async fn get_actions(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(path): PathParams<(String, String, String)>,
) -> Result<Json<RuleActions>> {
    let (kind, rule_id) = rule_path(path)?;
    let rule = push::get_rule(&server, auth.user_id, kind, rule_id).await?;
    Ok(Json(RuleActions {
        actions: rule.actions(),
    }))
}

/// # `PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/actions`
async fn put_actions(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(path): PathParams<(String, String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Empty>> {
    let (kind, rule_id) = rule_path(path)?;
    let actions = push::parse_actions(&body)?;
    push::set_actions(&server, auth.user_id, kind, rule_id, actions).await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
struct NotificationsQuery {
    from: Option<String>,
    limit: Option<u64>,
    only: Option<String>,
}

/// # `GET /_matrix/client/v3/notifications`
async fn notifications(
    State(server): State<Arc<Server>>,
    auth: Auth,
    QueryParams(query): QueryParams<NotificationsQuery>,
) -> Result<Json<notifications::Notifications>> {
    let only_highlight = match query.only.as_deref() {
        None => false,
        Some("highlight") => true,
        Some(other) => {
            return Err(Error::invalid_param(format!(
                "Unknown 'only' filter {other:?}"
            )));
        }
    };
    Ok(Json(
        notifications::list_notifications(
            &server,
            auth.user_id,
            query.from,
            query.limit,
            only_highlight,
        )
        .await?,
    ))
}

/// # `GET /_matrix/client/v3/pushers`
async fn get_pushers(
    State(server): State<Arc<Server>>,
    auth: Auth,
) -> Result<Json<push::pushers::PusherList>> {
    Ok(Json(push::pushers::list(&server, auth.user_id).await?))
}

/// # `POST /_matrix/client/v3/pushers/set`
async fn set_pusher(
    State(server): State<Arc<Server>>,
    auth: Auth,
    JsonBody(body): JsonBody<push::pushers::SetPusherRequest>,
) -> Result<Json<Empty>> {
    push::pushers::set(&server, auth.user_id, auth.device_id, body).await?;
    Ok(Json(Empty {}))
}
