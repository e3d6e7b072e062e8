//! Devices: `/devices` list, get, rename, delete, and `/delete_devices`.
//!
//! Deleting a device ends its sessions and drops its keys and to-device inbox, so it asks for
//! the password again (user-interactive auth), as the spec requires.
//!
//! Application services (spec v1.17 "Device management", MSC4190) create their users'
//! devices with `PUT /devices/{deviceId}` and delete them without user-interactive auth.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use ruma::OwnedDeviceId;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::account::{AuthData, password_stage};
use crate::api::client::wire::Empty;
use crate::api::extract::{Auth, JsonBody, PathParams, parse_json};
use crate::error::{Error, Result};
use crate::service::Server;
use crate::service::accounts::{self, DeviceRow};

/// The routes of this area.
pub fn routes() -> Router<Arc<Server>> {
    const V3: &str = "/_matrix/client/v3";
    Router::new()
        .route(&format!("{V3}/devices"), get(list))
        .route(
            &format!("{V3}/devices/{{device_id}}"),
            get(get_device).put(rename).delete(delete),
        )
        .route(&format!("{V3}/delete_devices"), post(delete_many))
}

/// One device (spec: `Device`).
#[derive(Serialize)]
pub struct Device {
    device_id: String,
    user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen_ts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen_ip: Option<String>,
}

impl Device {
    fn of(user_id: &str, row: DeviceRow) -> Device {
        Device {
            device_id: row.device_id,
            user_id: user_id.to_owned(),
            display_name: row.display_name,
            last_seen_ts: row.last_seen_ts,
            last_seen_ip: row.last_seen_ip,
        }
    }
}

/// `{"devices": […]}`.
#[derive(Serialize)]
pub struct Devices {
    devices: Vec<Device>,
}

/// # `GET /_matrix/client/v3/devices`
pub async fn list(State(server): State<Arc<Server>>, auth: Auth) -> Result<Json<Devices>> {
    let user = auth.user_id.to_string();
    let devices = accounts::devices(&server, &auth.user_id)
        .await?
        .into_iter()
        .map(|row| Device::of(&user, row))
        .collect();
    Ok(Json(Devices { devices }))
}

/// # `GET /_matrix/client/v3/devices/{deviceId}`
pub async fn get_device(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(device_id): PathParams<OwnedDeviceId>,
) -> Result<Json<Device>> {
    let user = auth.user_id.to_string();
    accounts::devices(&server, &auth.user_id)
        .await?
        .into_iter()
        .find(|row| row.device_id == device_id.as_str())
        .map(|row| Json(Device::of(&user, row)))
        .ok_or_else(|| Error::not_found("No such device"))
}

#[derive(Deserialize)]
pub struct RenameBody {
    display_name: Option<String>,
}

/// # `PUT /_matrix/client/v3/devices/{deviceId}`
/// Renames a device; for an application service it also creates a device that does not
/// exist yet (a user's device with no session: the appservice authenticates as the user).
pub async fn rename(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(device_id): PathParams<OwnedDeviceId>,
    JsonBody(body): JsonBody<RenameBody>,
) -> Result<Json<Empty>> {
    if body.display_name.as_ref().is_some_and(|n| n.len() > 512) {
        return Err(Error::invalid_param(
            "display_name is longer than 512 bytes",
        ));
    }
    if auth.is_appservice() {
        accounts::create_or_rename_device(&server, &auth.user_id, &device_id, body.display_name)
            .await?;
    } else {
        accounts::rename_device(&server, &auth.user_id, &device_id, body.display_name).await?;
    }
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
pub struct DeleteBody {
    auth: Option<AuthData>,
}

/// # `DELETE /_matrix/client/v3/devices/{deviceId}`
pub async fn delete(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(device_id): PathParams<OwnedDeviceId>,
    body: axum::body::Bytes,
) -> Result<Json<Empty>> {
    // The first attempt of a UIA flow may come without a body at all.
    let body: Option<DeleteBody> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(parse_json(&body)?)
    };
    if !accounts::devices(&server, &auth.user_id)
        .await?
        .iter()
        .any(|row| row.device_id == device_id.as_str())
    {
        return Err(Error::not_found("No such device"));
    }
    if auth.is_appservice() {
        // Spec v1.17: no user-interactive auth for an application service.
        accounts::delete_devices(&server, &auth.user_id, vec![device_id]).await?;
        return Ok(Json(Empty {}));
    }
    let action = format!("DELETE /devices/{device_id}");
    let data = body.and_then(|b| b.auth);
    let session = password_stage(&server, &auth, action, json!({}), data).await?;
    accounts::delete_devices(&server, &auth.user_id, vec![device_id]).await?;
    server.uia.finish(&session, None);
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
pub struct DeleteManyBody {
    devices: Vec<OwnedDeviceId>,
    auth: Option<AuthData>,
}

/// # `POST /_matrix/client/v3/delete_devices`
pub async fn delete_many(
    State(server): State<Arc<Server>>,
    auth: Auth,
    JsonBody(body): JsonBody<DeleteManyBody>,
) -> Result<Json<Empty>> {
    if auth.is_appservice() {
        // Spec v1.17: no user-interactive auth for an application service.
        accounts::delete_devices(&server, &auth.user_id, body.devices).await?;
        return Ok(Json(Empty {}));
    }
    let action = "POST /delete_devices".to_owned();
    let bound = json!({"devices": body.devices});
    let session = password_stage(&server, &auth, action, bound, body.auth).await?;
    accounts::delete_devices(&server, &auth.user_id, body.devices).await?;
    server.uia.finish(&session, None);
    Ok(Json(Empty {}))
}
