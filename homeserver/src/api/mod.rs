//! The HTTP edge: the router, CORS, rate limiting, the 404/405 fallbacks, and the extractors.
//!
//! Wire formats stay here: handlers in [`client`] parse requests into service calls and shape
//! service results into spec responses. Every error leaves through [`crate::error::Error`].

pub mod ca_http;
pub mod client;
pub mod conn;
pub mod extract;
pub mod federation;
pub mod ratelimit;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use crate::error::{Error, ErrorCode};
use crate::service::Server;
use ratelimit::{Key, RateLimiter};

/// Builds the client-facing router.
pub fn router(server: Arc<Server>) -> Router {
    let limiter = Arc::new(RateLimiter::new(server.config.rate_limit.clone()));
    let limited = (limiter, Arc::clone(&server));
    client::routes()
        .fallback(unknown_endpoint)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(limited, rate_limit))
        .layer(middleware::from_fn(long_poll))
        .layer(middleware::from_fn(cors))
        .with_state(server)
}

async fn unknown_endpoint() -> Error {
    Error::new(ErrorCode::Unrecognized, "Unrecognized request")
}

async fn wrong_method() -> Error {
    Error::MethodNotAllowed
}

/// Answers CORS preflights and adds the spec's CORS headers to every response, so browser
/// clients (Element Web) can talk to the unit.
async fn cors(request: Request, next: Next) -> Response {
    let mut response = if request.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With, Content-Type, Authorization"),
    );
    response
}

/// Counts a long-poll request's connection apart from the ordinary connection caps while it
/// waits (see [`conn`]); 429 when `long_poll_max` requests already wait.
async fn long_poll(request: Request, next: Next) -> Response {
    let handle = request
        .extensions()
        .get::<conn::ConnHandle>()
        .filter(|_| client::LONG_POLL_PATHS.contains(&request.uri().path()))
        .cloned();
    let Some(handle) = handle else {
        return next.run(request).await;
    };
    match handle.long_poll() {
        Ok(counted) => {
            let response = next.run(request).await;
            drop(counted);
            response
        }
        Err(err) => err.into_response(),
    }
}

/// Takes one request from its bucket: the access token's, or the client address's without
/// one. An application service's requests count per user it acts as (its `as_token` with the
/// `user_id` parameter), as an ordinary user's do, and not at all when its registration says
/// `rate_limited: false`.
async fn rate_limit(
    State((limiter, server)): State<(Arc<RateLimiter>, Arc<Server>)>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if !rate_limited(request.uri().path()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let key = match extract::access_token(&parts) {
        Some(token) => match server.appservices.by_as_token(&token) {
            Some(registration) if !registration.rate_limited => {
                return next.run(Request::from_parts(parts, body)).await;
            }
            Some(_) => {
                let user = extract::RawQuery::from_uri(&parts.uri)
                    .ok()
                    .and_then(|q| q.first("user_id"))
                    .unwrap_or_default();
                let scoped = format!("{token}\n{user}");
                Key::Token(crate::service::accounts::token_hash(&scoped))
            }
            None => Key::Token(crate::service::accounts::token_hash(&token)),
        },
        None => Key::Ip(peer.unwrap_or(std::net::Ipv4Addr::LOCALHOST.into())),
    };
    if let Err(err) = limiter.check(key) {
        return err.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// Whether the spec rate-limits the endpoint. Long polls (`/sync`, sliding sync) and discovery
/// are not: the spec lists no 429 for them, and a client that syncs in a tight loop after each
/// answer must never be told to back off from its own sync.
fn rate_limited(path: &str) -> bool {
    !(path.ends_with("/sync")
        || path == "/_matrix/client/versions"
        || path == "/.well-known/matrix/client")
}
