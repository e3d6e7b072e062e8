//! User and alias queries (spec: Application Service API, "Querying"): when a client names a
//! local user or alias that does not exist and an appservice's namespace covers it, the
//! homeserver asks that appservice (`GET /_matrix/app/v1/users/{userId}`,
//! `GET /_matrix/app/v1/rooms/{roomAlias}`). A 200 means the appservice has now created the
//! user (or the room with the alias) through the Client-Server API, so the caller looks again;
//! anything else means it does not exist. Only appservices with a `url` are asked, the ones
//! claiming the ID exclusively first.

use std::time::Duration;

use axum::http::Method;
use ruma::UserId;

use crate::matrix::appservice::NamespaceKind;
use crate::service::Server;
use crate::transport::appservice::call;

use crate::util::urlencode as enc;

/// Asks the appservices interested in `id` (a user ID or a room alias) whether it exists;
/// `true` when one answered 200 (it has created it).
async fn ask(server: &Server, kind: NamespaceKind, id: &str) -> bool {
    let mut regs = server.appservices.interested(kind, id);
    regs.sort_by_key(|r| !r.claims_exclusively(kind, id));
    let segment = match kind {
        NamespaceKind::Users => "users",
        _ => "rooms",
    };
    let path = format!("/_matrix/app/v1/{segment}/{}", enc(id));
    let timeout = Duration::from_secs(server.config.appservices.request_timeout_secs);
    for reg in regs {
        let Some(url) = reg.url.as_deref() else {
            continue;
        };
        match call(url, &reg.hs_token, Method::GET, &path, None, timeout).await {
            Ok(_) => return true,
            Err(err) => {
                tracing::debug!(appservice = %reg.id, %id, error = %err, "appservice query: not found");
            }
        }
    }
    false
}

/// Whether an appservice has (now) created the local user `user_id` it was asked about.
pub async fn user_exists(server: &Server, user_id: &UserId) -> bool {
    ask(server, NamespaceKind::Users, user_id.as_str()).await
}

/// Whether an appservice has (now) created a room with the local alias `alias`.
pub async fn alias_exists(server: &Server, alias: &str) -> bool {
    ask(server, NamespaceKind::Aliases, alias).await
}
