//! Third-party networks: `/thirdparty/protocols`, `/thirdparty/protocol/{protocol}`,
//! `/thirdparty/{location,user}/{protocol}` and the reverse lookups `/thirdparty/location` and
//! `/thirdparty/user`, answered by the appservices that bridge the networks
//! ([`crate::service::appservice::thirdparty`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value};

use crate::api::extract::{Auth, PathParams, RawQuery};
use crate::error::{Error, Result};
use crate::service::Server;
use crate::service::appservice::thirdparty::{self, Lookup};

/// The routes of this area.
pub fn routes() -> Router<Arc<Server>> {
    const P: &str = "/_matrix/client/v3/thirdparty";
    Router::new()
        .route(&format!("{P}/protocols"), get(protocols))
        .route(&format!("{P}/protocol/{{protocol}}"), get(protocol))
        .route(&format!("{P}/location/{{protocol}}"), get(location))
        .route(&format!("{P}/user/{{protocol}}"), get(user))
        .route(&format!("{P}/location"), get(location_by_alias))
        .route(&format!("{P}/user"), get(user_by_id))
}

/// # `GET /_matrix/client/v3/thirdparty/protocols`
/// With no appservice bridging a network, the empty object (browser clients poll this).
async fn protocols(
    State(server): State<Arc<Server>>,
    _auth: Auth,
) -> Result<Json<BTreeMap<String, Map<String, Value>>>> {
    // Each protocol is the bridge's own object (see `thirdparty::protocol`).
    thirdparty::protocols(&server).await.map(Json)
}

/// # `GET /_matrix/client/v3/thirdparty/protocol/{protocol}`
async fn protocol(
    State(server): State<Arc<Server>>,
    _auth: Auth,
    PathParams(protocol): PathParams<String>,
) -> Result<Json<Map<String, Value>>> {
    thirdparty::protocol(&server, &protocol)
        .await?
        .map(Json)
        .ok_or_else(|| Error::not_found(format!("unknown protocol {protocol:?}")))
}

/// The query string to pass on: the client's fields, without its access token, decoded by the
/// one query reader ([`RawQuery`]: a query that does not decode is `M_INVALID_PARAM`) and
/// encoded again.
fn fields(uri: &Uri) -> Result<String> {
    let query = RawQuery::from_uri(uri)?;
    let kept: Vec<&(String, String)> = query
        .pairs()
        .filter(|(name, _)| name != "access_token")
        .collect();
    serde_urlencoded::to_string(kept).map_err(|err| Error::internal(err.to_string()))
}

/// # `GET /_matrix/client/v3/thirdparty/location/{protocol}`
async fn location(
    State(server): State<Arc<Server>>,
    _auth: Auth,
    PathParams(protocol): PathParams<String>,
    uri: Uri,
) -> Result<Json<Vec<Value>>> {
    thirdparty::lookup(&server, Lookup::Location, &protocol, &fields(&uri)?)
        .await
        .map(Json)
}

/// # `GET /_matrix/client/v3/thirdparty/user/{protocol}`
async fn user(
    State(server): State<Arc<Server>>,
    _auth: Auth,
    PathParams(protocol): PathParams<String>,
    uri: Uri,
) -> Result<Json<Vec<Value>>> {
    thirdparty::lookup(&server, Lookup::User, &protocol, &fields(&uri)?)
        .await
        .map(Json)
}

/// # `GET /_matrix/client/v3/thirdparty/location?alias=`
async fn location_by_alias(
    State(server): State<Arc<Server>>,
    _auth: Auth,
    query: RawQuery,
) -> Result<Json<Vec<Value>>> {
    let alias = query.required("alias")?;
    thirdparty::reverse(&server, Lookup::Location, &alias)
        .await
        .map(Json)
}

/// # `GET /_matrix/client/v3/thirdparty/user?userid=`
async fn user_by_id(
    State(server): State<Arc<Server>>,
    _auth: Auth,
    query: RawQuery,
) -> Result<Json<Vec<Value>>> {
    let user = query.required("userid")?;
    thirdparty::reverse(&server, Lookup::User, &user)
        .await
        .map(Json)
}
