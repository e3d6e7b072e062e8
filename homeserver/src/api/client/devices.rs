//! Devices: `/devices` list, get, rename, delete, and `/delete_devices`.
//!
//! Deleting a device ends its sessions and drops its keys and to-device inbox, so it asks for
//! the password again (user-interactive auth), as the spec requires.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::account::{AuthData, password_stage};
use crate::api::extract::{Auth, JsonBody, PathParams, parse_json};
use crate::error::{Error, Result};
use crate::service::{Server, accounts};
use crate::store::accounts::{self as store, DeviceRow};

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

fn device_json(user_id: &str, row: DeviceRow) -> Value {
    let mut device = json!({"device_id": row.device_id, "user_id": user_id});
    if let Some(name) = row.display_name {
        device["display_name"] = json!(name);
    }
    if let Some(ts) = row.last_seen_ts {
        device["last_seen_ts"] = json!(ts);
    }
    if let Some(ip) = row.last_seen_ip {
        device["last_seen_ip"] = json!(ip);
    }
    device
}

async fn devices_of(server: &Server, user_id: &str) -> Result<Vec<DeviceRow>> {
    let user = user_id.to_owned();
    server
        .store
        .read(move |conn| store::devices(conn, &user))
        .await
}

/// # `GET /_matrix/client/v3/devices`
pub async fn list(State(server): State<Arc<Server>>, auth: Auth) -> Result<Json<Value>> {
    let user = auth.user_id.to_string();
    let devices: Vec<Value> = devices_of(&server, &user)
        .await?
        .into_iter()
        .map(|row| device_json(&user, row))
        .collect();
    Ok(Json(json!({"devices": devices})))
}

/// # `GET /_matrix/client/v3/devices/{deviceId}`
pub async fn get_device(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(device_id): PathParams<String>,
) -> Result<Json<Value>> {
    let user = auth.user_id.to_string();
    devices_of(&server, &user)
        .await?
        .into_iter()
        .find(|row| row.device_id == device_id)
        .map(|row| Json(device_json(&user, row)))
        .ok_or_else(|| Error::not_found("No such device"))
}

#[derive(Deserialize)]
pub struct RenameBody {
    display_name: Option<String>,
}

/// # `PUT /_matrix/client/v3/devices/{deviceId}`
pub async fn rename(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(device_id): PathParams<String>,
    JsonBody(body): JsonBody<RenameBody>,
) -> Result<Json<Value>> {
    if body.display_name.as_ref().is_some_and(|n| n.len() > 512) {
        return Err(Error::invalid_param(
            "display_name is longer than 512 bytes",
        ));
    }
    let user = auth.user_id.to_string();
    let own = server.server_name().to_string();
    let renamed = server
        .store
        .write(move |tx| {
            let renamed =
                store::rename_device(tx, &user, &device_id, body.display_name.as_deref())?;
            if renamed {
                crate::service::e2ee::device_changed_in_tx(tx, &own, &user, &device_id, false)?;
            }
            Ok(renamed)
        })
        .await?;
    if !renamed {
        return Err(Error::not_found("No such device"));
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct DeleteBody {
    auth: Option<AuthData>,
}

/// # `DELETE /_matrix/client/v3/devices/{deviceId}`
pub async fn delete(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams(device_id): PathParams<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>> {
    // The first attempt of a UIA flow may come without a body at all.
    let body: Option<DeleteBody> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(parse_json(&body)?)
    };
    let user = auth.user_id.to_string();
    if !devices_of(&server, &user)
        .await?
        .iter()
        .any(|row| row.device_id == device_id)
    {
        return Err(Error::not_found("No such device"));
    }
    let action = format!("DELETE /devices/{device_id}");
    let data = body.and_then(|b| b.auth);
    let session = password_stage(&server, &auth, action, json!({}), data).await?;
    accounts::delete_devices(&server, &user, vec![device_id]).await?;
    server.uia.finish(&session, None);
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct DeleteManyBody {
    devices: Vec<String>,
    auth: Option<AuthData>,
}

/// # `POST /_matrix/client/v3/delete_devices`
pub async fn delete_many(
    State(server): State<Arc<Server>>,
    auth: Auth,
    JsonBody(body): JsonBody<DeleteManyBody>,
) -> Result<Json<Value>> {
    let action = "POST /delete_devices".to_owned();
    let bound = json!({"devices": body.devices});
    let session = password_stage(&server, &auth, action, bound, body.auth).await?;
    accounts::delete_devices(&server, auth.user_id.as_str(), body.devices).await?;
    server.uia.finish(&session, None);
    Ok(Json(json!({})))
}
