//! Profiles: displayname and avatar, propagated into the member events of joined rooms.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value};

use crate::api::client::wire::Empty;
use crate::api::extract::{Auth, JsonBody, PathParams, user_id};
use crate::error::{Error, Result};
use crate::matrix::wire::ProfileResponse;
use crate::service::Server;
use crate::service::federation::route;
use crate::service::profile::{self, Field};

/// # `GET /_matrix/client/v3/profile/{userId}`
pub async fn get_profile(
    State(server): State<Arc<Server>>,
    PathParams(user): PathParams<String>,
) -> Result<Json<ProfileResponse>> {
    let (displayname, avatar_url) = route::profile(&server, &user_id(&user)?).await?;
    Ok(Json(ProfileResponse {
        displayname,
        avatar_url,
    }))
}

/// # `GET /_matrix/client/v3/profile/{userId}/{keyName}`
pub async fn get_field(
    State(server): State<Arc<Server>>,
    PathParams((user, field)): PathParams<(String, String)>,
) -> Result<Json<BTreeMap<String, String>>> {
    let (name, avatar) = route::profile(&server, &user_id(&user)?).await?;
    let value = match field.as_str() {
        "displayname" => name,
        "avatar_url" => avatar,
        _ => None,
    };
    let value = value.ok_or_else(|| Error::not_found("Profile field not set"))?;
    // `{keyName: value}`: the key is the field asked for.
    Ok(Json(BTreeMap::from([(field, value)])))
}

/// # `PUT /_matrix/client/v3/profile/{userId}/{keyName}`
pub async fn set_field(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((user, field)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Json<Empty>> {
    if user_id(&user)? != auth.user_id {
        return Err(Error::forbidden("You may only change your own profile"));
    }
    let Some(which) = Field::parse(&field) else {
        return Err(Error::bad_json(format!(
            "Profile field {field:?} is not supported"
        )));
    };
    let value = match body.get(&field) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(_) => return Err(Error::bad_json(format!("{field} must be a string"))),
    };
    profile::set_field(&server, &auth.user_id, which, value).await?;
    Ok(Json(Empty {}))
}
