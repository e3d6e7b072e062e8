//! OpenID: tokens a client hands to a widget or call service, which checks them with the
//! federation API's `userinfo` (see `service::openid`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use crate::api::client::wire::OpenIdToken;
use crate::api::extract::{Auth, PathParams};
use crate::error::{Error, Result};
use crate::service::{Server, openid};

/// # `POST /_matrix/client/v3/user/{userId}/openid/request_token`
pub async fn request_token(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(user): PathParams<String>,
) -> Result<Json<OpenIdToken>> {
    if user != auth.user_id.as_str() {
        return Err(Error::forbidden(
            "You may only request OpenID tokens for yourself",
        ));
    }
    let token = server.openid.issue(&auth.user_id);
    Ok(Json(OpenIdToken {
        access_token: token,
        token_type: "Bearer",
        matrix_server_name: server.server_name().to_string(),
        expires_in: openid::LIFETIME.as_secs(),
    }))
}
