//! Dehydrated devices (MSC3814, under its unstable prefix): one offline device per user that
//! collects room keys for a later login to read.

use super::*; // the parent's imports and shared helpers

/// `PUT /dehydrated_device` (MSC3814): replaces the user's dehydrated device with a new one,
/// its keys uploaded in the same transaction so it never exists without them.
pub async fn put_dehydrated_device(
    server: &Server,
    user_id: &UserId,
    body: DehydratedDeviceBody,
) -> Result<OwnedDeviceId> {
    let device_id = body.device_id;
    if device_id.as_str().is_empty() {
        return Err(Error::invalid_param("device_id must not be empty"));
    }
    if !body
        .device_data
        .get("algorithm")
        .is_some_and(Value::is_string)
    {
        return Err(Error::bad_json("device_data with an algorithm is required"));
    }
    let data = body.device_data.to_string();
    if body.keys.device_keys.as_ref().is_none_or(Value::is_null) {
        return Err(Error::bad_json("device_keys are required"));
    }
    let upload = KeyUpload::parse(body.keys, user_id, &device_id)?;
    let name = body.initial_device_display_name;
    let own = server.server_name().to_string();
    let user = user_id.to_string();
    let id = device_id.to_string();
    server
        .store
        .write(move |tx| {
            if let Some(old) = e2ee::dehydrated_device(tx, &user)? {
                crate::store::accounts::delete_device(tx, &user, &old.device_id)?;
                devices_deleted_in_tx(tx, &own, &user, &[old.device_id])?;
            }
            if crate::store::accounts::devices(tx, &user)?
                .iter()
                .any(|d| d.device_id == id)
            {
                return Err(Error::invalid_param("a device with that ID exists already"));
            }
            crate::store::accounts::upsert_device(tx, &user, &id, name.as_deref(), now_ms())?;
            e2ee::set_dehydrated_device(tx, &user, &id, &data)?;
            upload.store_in_tx(tx, &own, &user, &id).map(|_| ())
        })
        .await?;
    Ok(device_id)
}

/// `GET /dehydrated_device`: the user's dehydrated device and its data.
pub async fn get_dehydrated_device(server: &Server, user_id: &UserId) -> Result<DehydratedDevice> {
    let user = user_id.to_string();
    let row = server
        .store
        .read(move |conn| e2ee::dehydrated_device(conn, &user))
        .await?
        .ok_or_else(|| Error::not_found("No dehydrated device"))?;
    Ok(DehydratedDevice {
        device_id: row.device_id,
        device_data: serde_json::from_str(&row.device_data).unwrap_or(Value::Null),
    })
}

/// `DELETE /dehydrated_device`: removes it (no UIA: it holds no session); returns its ID.
pub async fn delete_dehydrated_device(server: &Server, user_id: &UserId) -> Result<OwnedDeviceId> {
    let own = server.server_name().to_string();
    let user = user_id.to_string();
    server
        .store
        .write(move |tx| {
            let id = e2ee::dehydrated_device(tx, &user)?
                .ok_or_else(|| Error::not_found("No dehydrated device"))?
                .device_id;
            crate::store::accounts::delete_device(tx, &user, &id)?;
            devices_deleted_in_tx(tx, &own, &user, std::slice::from_ref(&id))?;
            Ok(OwnedDeviceId::from(id))
        })
        .await
}

/// `/dehydrated_device/{deviceId}/events`: the dehydrated device's to-device messages after
/// `from`, in batches; unlike `/sync` nothing is deleted (a rehydration that is cut short can
/// start over). Returns the events and the token of the next batch when there is more.
pub async fn dehydrated_events(
    server: &Server,
    user_id: &UserId,
    device_id: &DeviceId,
    from: Option<&str>,
) -> Result<DehydratedEvents> {
    let user_id = user_id.as_str();
    let after = match from {
        Some(token) => token
            .parse::<i64>()
            .map_err(|_| Error::invalid_param("Unknown next_batch token"))?,
        None => 0,
    };
    let (user, device) = (user_id.to_owned(), device_id.to_string());
    server
        .store
        .read(move |conn| {
            if e2ee::dehydrated_device(conn, &user)?.map(|d| d.device_id) != Some(device.clone()) {
                return Err(Error::forbidden("That is not your dehydrated device"));
            }
            let mut messages = e2ee::to_device_since(
                conn,
                &user,
                &device,
                after,
                i64::MAX,
                TO_DEVICE_PER_SYNC + 1,
            )?;
            let more = messages.len() > TO_DEVICE_PER_SYNC;
            messages.truncate(TO_DEVICE_PER_SYNC);
            let next_batch = more
                .then(|| messages.last().map(|m| m.stream_pos.to_string()))
                .flatten();
            let events = messages
                .into_iter()
                .map(super::to_device::to_device_event)
                .collect();
            Ok(DehydratedEvents { events, next_batch })
        })
        .await
}
