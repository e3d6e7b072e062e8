//! Discovery: `/versions`, `/.well-known/matrix/client` and `/capabilities`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use crate::api::client::wire::{
    BaseUrl, Capabilities, CapabilityList, DelayedEventLimits, Enabled, RoomVersions, TurnServer,
    Versions, WellKnown,
};
use crate::api::extract::Auth;
use crate::error::{Error, Result};
use crate::matrix::{DEFAULT_ROOM_VERSION, SUPPORTED_ROOM_VERSIONS};
use crate::service::Server;

/// # `GET /_matrix/client/versions`
/// The spec versions we implement; the first call every client makes.
pub async fn versions() -> Json<Versions> {
    Json(Versions {
        versions: &[
            "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
            "v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18", "v1.19",
        ],
        // Only what is implemented. `e2e_cross_signing` is what browser clients of the v1.11
        // generation look for before they bootstrap cross-signing after registration.
        unstable_features: [
            "org.matrix.e2e_cross_signing",
            "org.matrix.msc3814",
            "org.matrix.msc4140",
            "org.matrix.simplified_msc3575",
            "io.element.msc4190",
        ]
        .into_iter()
        .map(|feature| (feature, true))
        .collect(),
    })
}

/// # `GET /_matrix/client/v3/voip/turnServer`
/// No TURN server is configured on this unit: the answer carries no URIs, which clients read as
/// "no TURN" (calls then use direct candidates on the local network).
pub async fn turn_server(_auth: Auth) -> Json<TurnServer> {
    Json(TurnServer {
        username: String::new(),
        password: String::new(),
        uris: Vec::new(),
        ttl: 86400,
    })
}

/// # `GET /.well-known/matrix/client`
/// Points clients at the unit's public base URL (`listen.public_base_url`, set by `appliance
/// setup`), never at the bind address: `http://0.0.0.0:8008` is no address a client can use.
/// Without one (a wildcard listener and no URL configured) there is nothing true to say, so
/// the answer is the spec's 404 and clients use the URL they were given.
pub async fn well_known(State(server): State<Arc<Server>>) -> Result<Json<WellKnown>> {
    let base = server.config.public_base_url.as_ref().ok_or_else(|| {
        Error::not_found("This unit has no public base URL configured (listen.public_base_url)")
    })?;
    Ok(Json(WellKnown {
        homeserver: BaseUrl {
            base_url: base.clone(),
        },
    }))
}

/// # `GET /_matrix/client/v3/capabilities`
pub async fn capabilities(State(server): State<Arc<Server>>, _auth: Auth) -> Json<Capabilities> {
    let available = SUPPORTED_ROOM_VERSIONS
        .iter()
        .map(|v| (v.to_string(), "stable"))
        .collect();
    let on = |enabled| Enabled { enabled };
    Json(Capabilities {
        capabilities: CapabilityList {
            room_versions: RoomVersions {
                default: DEFAULT_ROOM_VERSION.to_string(),
                available,
            },
            change_password: on(true),
            set_displayname: on(true),
            set_avatar_url: on(true),
            threepid_changes: on(false),
            get_login_token: on(false),
            delayed_events: DelayedEventLimits {
                max_delay_ms: server.config.limits.delayed_event_max_delay_ms,
                max_scheduled: server.config.limits.delayed_events_per_user,
            },
        },
    })
}
