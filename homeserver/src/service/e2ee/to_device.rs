//! To-device messages: the per-device inbox, `/sendToDevice`, `m.direct_to_device` EDUs, and
//! what `/sync` hands out and acknowledges.

use super::*; // the parent's imports and shared helpers

/// `PUT /sendToDevice/{type}/{txnId}`: delivers to local devices at once and queues for
/// peers. `txn` makes a retried request a no-op.
pub async fn send_to_device(
    server: &Server,
    sender: &UserId,
    sender_device: &DeviceId,
    event_type: &str,
    txn_id: &str,
    messages: Map<String, Value>,
) -> Result<()> {
    let own = server.server_name().to_string();
    let (sender, sender_device, event_type, txn_id) = (
        sender.to_string(),
        sender_device.to_string(),
        event_type.to_owned(),
        txn_id.to_owned(),
    );
    let allowed: BTreeSet<String> = messages
        .keys()
        .map(|u| server_of(u).to_owned())
        .filter(|s| *s != own && server.peers.get(s).is_some())
        .collect();
    let receivers = crate::service::appservice::ephemeral::receivers(&server.appservices.all());
    let any_receiver = !receivers.is_empty();
    let delivered = server
        .store
        .write(move |tx| {
            if !e2ee::record_to_device_txn(tx, &sender, &sender_device, &txn_id)? {
                return Ok(());
            }
            let mut remote: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
            for (user, devices) in &messages {
                let Some(devices) = devices.as_object() else {
                    continue;
                };
                if server_of(user) != own {
                    if allowed.contains(server_of(user)) {
                        remote
                            .entry(server_of(user).to_owned())
                            .or_default()
                            .insert(user.clone(), Value::Object(devices.clone()));
                    }
                    continue;
                }
                deliver_local_in_tx(tx, (&receivers, &own), &sender, &event_type, user, devices)?;
            }
            for (peer, messages) in remote {
                let edu = json!({
                    "edu_type": "m.direct_to_device",
                    "content": {
                        "sender": sender,
                        "type": event_type,
                        "message_id": format!("{sender_device}_{txn_id}"),
                        "messages": messages,
                    },
                })
                .to_string();
                outbox::enqueue(tx, &peer, "edu", &edu, now_ms())?;
            }
            Ok(())
        })
        .await;
    if any_receiver {
        server.appservice_kicker.kick();
    }
    delivered
}

/// Puts one message per addressed device (or every device for `*`) of a local user in the
/// inbox.
fn deliver_local_in_tx(
    tx: &mut WriteTx<'_>,
    appservices: (
        &[std::sync::Arc<crate::matrix::appservice::Registration>],
        &str,
    ),
    sender: &str,
    event_type: &str,
    user: &str,
    devices: &Map<String, Value>,
) -> Result<()> {
    let existing = e2ee::local_device_ids(tx, user)?;
    for (device, content) in devices {
        let targets: Vec<&String> = if device == "*" {
            existing.iter().collect()
        } else {
            existing.iter().filter(|d| *d == device).collect()
        };
        let text = content.to_string();
        for target in targets {
            let pos = tx.next_stream_pos(Audience::User(user));
            e2ee::push_to_device(tx, pos, user, target, sender, event_type, &text)?;
            // Appservices that receive ephemeral data get messages to their users too.
            let (receivers, own) = appservices;
            crate::service::appservice::ephemeral::to_device_in_tx(
                tx,
                receivers,
                own,
                (sender, event_type, content),
                user,
                target,
            )?;
        }
    }
    Ok(())
}

/// Handles an `m.direct_to_device` EDU from a peer: messages from its users to ours. The
/// caller has checked that the sender belongs to the EDU's origin.
pub async fn receive_to_device(server: &Server, message: edu::DirectToDevice) -> Result<()> {
    let own = server.server_name().to_string();
    let edu::DirectToDevice {
        sender,
        event_type,
        messages,
        ..
    } = message;
    let sender = sender.to_string();
    let receivers = crate::service::appservice::ephemeral::receivers(&server.appservices.all());
    let any_receiver = !receivers.is_empty();
    let delivered = server
        .store
        .write(move |tx| {
            for (user, devices) in messages {
                if user.server_name().as_str() == own {
                    // Each content is an object passed on as it came.
                    let devices: Map<String, Value> = devices
                        .into_iter()
                        .map(|(device, content)| (device, Value::Object(content)))
                        .collect();
                    deliver_local_in_tx(
                        tx,
                        (&receivers, &own),
                        &sender,
                        &event_type,
                        user.as_str(),
                        &devices,
                    )?;
                }
            }
            Ok(())
        })
        .await;
    if any_receiver {
        server.appservice_kicker.kick();
    }
    delivered
}

/// What `/sync` carries for end-to-end encryption.
#[derive(Debug, Default)]
pub struct SyncKeys {
    /// To-device messages for this device, oldest first.
    pub to_device: Vec<Value>,
    /// When the messages were cut short: the position of the last one handed out.
    pub to_device_upto: Option<i64>,
    /// Users whose devices changed (or who newly share a room).
    pub changed: Vec<String>,
    /// Users who no longer share any room.
    pub left: Vec<String>,
    /// Unclaimed one-time keys of this device, per algorithm.
    pub one_time_key_counts: Value,
    /// Algorithms of this device's fallback keys never handed out.
    pub unused_fallback_types: Vec<String>,
}

/// Computes the end-to-end encryption part of a sync for `(since, upto]`; to-device
/// messages from `to_device_since` (the same as `since` unless a previous sync was cut short).
/// A device-less request (`None`) reads the rows kept under `""` ([`crate::service::device_key`]).
pub fn sync_keys(
    conn: &Connection,
    user: &UserId,
    device_id: Option<&DeviceId>,
    since: Option<i64>,
    to_device_since: Option<i64>,
    upto: i64,
) -> Result<SyncKeys> {
    let user_id = user.as_str();
    let device_id = crate::service::device_key(device_id);
    let after = to_device_since.or(since).unwrap_or(0);
    let messages =
        e2ee::to_device_since(conn, user_id, device_id, after, upto, TO_DEVICE_PER_SYNC)?;
    let to_device_upto = (messages.len() == TO_DEVICE_PER_SYNC)
        .then(|| messages.last().map(|m| m.stream_pos))
        .flatten();
    let to_device = messages.into_iter().map(to_device_event).collect();
    let (changed, left) = match since {
        Some(since) => device_list_delta(conn, user, since, upto)?,
        None => (Vec::new(), Vec::new()),
    };
    Ok(SyncKeys {
        to_device,
        to_device_upto,
        changed,
        left,
        one_time_key_counts: json!(counts_map(e2ee::one_time_key_counts(
            conn, user_id, device_id,
        )?)),
        unused_fallback_types: e2ee::unused_fallback_types(conn, user_id, device_id)?,
    })
}

/// Deletes the to-device messages a device acknowledged by syncing with a later token (for a
/// device-less request, those kept under `""`).
pub async fn ack_to_device(
    server: &Server,
    user_id: &UserId,
    device_id: Option<&DeviceId>,
    upto: i64,
) -> Result<()> {
    let device_id = crate::service::device_key(device_id);
    let (user, device) = (user_id.to_string(), device_id.to_owned());
    let pending = server
        .store
        .read(move |conn| e2ee::has_to_device_upto(conn, &user, &device, upto))
        .await?;
    if pending {
        let (user, device) = (user_id.to_string(), device_id.to_owned());
        server
            .store
            // Deletes delivered rows: allowed below the free-space watermark, so /sync works.
            .write_bookkeeping(move |tx| e2ee::ack_to_device(tx, &user, &device, upto).map(|_| ()))
            .await?;
    }
    Ok(())
}

/// A stored inbox row as the client sees it.
pub(super) fn to_device_event(message: e2ee::ToDeviceRow) -> Value {
    json!({
        "sender": message.sender,
        "type": message.event_type,
        "content": serde_json::from_str::<Value>(&message.content).unwrap_or(Value::Null),
    })
}
