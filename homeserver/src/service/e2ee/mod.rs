//! End-to-end encryption support: devices' identity keys, one-time and fallback keys,
//! cross-signing, to-device messages and device-list tracking, locally and across peers.
//!
//! The server never decrypts and never judges a client's signatures (clients verify them);
//! it checks only that key objects are well formed and belong to the uploader.
//!
//! Remote users' device lists are cached (`device_keys` + `remote_device_lists`) from
//! `user/devices` resyncs and `m.device_list_update` EDUs applied in `prev_id` order; a gap
//! marks the cache stale and the next query resyncs. A query falls back to the cache when the
//! peer is unreachable, so a client can still encrypt to a partitioned unit's users; to-device
//! messages to them wait in the durable federation outbox.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::http::Method;
use ruma::{DeviceId, OwnedDeviceId, UserId};
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::Server;
use super::appservice::ephemeral as appservice_keys;
use crate::error::{Error, Result};
use crate::matrix::edu;
use crate::store::wake::Audience;
use crate::store::{WriteTx, e2ee, outbox};
use crate::util::now_ms;
use crate::util::urlencode;

/// Most to-device messages handed out by one `/sync`; the rest follow in the next.
const TO_DEVICE_PER_SYNC: usize = 100;
/// Longest a key query or claim waits for a peer.
const MAX_FEDERATION_WAIT: Duration = Duration::from_secs(10);

mod answers;
mod cross_signing;
mod dehydrated;
mod device_lists;
mod requests;
mod to_device;

pub use answers::{
    ClaimedKeys, DehydratedDevice, DehydratedEvents, Failure, KeyCounts, KeysByUser,
    KeysClaimAnswer, KeysQueryAnswer, SignaturesUploadAnswer, UserDevice, UserDevicesAnswer,
};
pub use cross_signing::{receive_signing_key_update, upload_signatures, upload_signing_keys};
pub use dehydrated::{
    dehydrated_events, delete_dehydrated_device, get_dehydrated_device, put_dehydrated_device,
};
pub use device_lists::{
    device_changed_in_tx, device_list_delta, devices_deleted_in_tx, newly_sharing,
    receive_device_list_update, user_devices,
};
pub use requests::{
    ClaimRequest, DehydratedDeviceBody, DeviceQuery, KeysClaimBody, KeysQueryBody, KeysUploadBody,
    SignaturesUpload, SignaturesUploadBody, SigningKeysUpload, typed_users,
};
pub use to_device::{SyncKeys, ack_to_device, receive_to_device, send_to_device, sync_keys};

fn server_of(user_id: &str) -> &str {
    user_id.split_once(':').map(|(_, s)| s).unwrap_or_default()
}

/// Checks the shape of a signed key object (`DeviceKeys` or `CrossSigningKey`): the owner, a
/// `keys` map of strings and a `signatures` map of maps of strings.
fn check_key_object(value: &Value, user_id: &str, what: &str) -> Result<()> {
    let object = value
        .as_object()
        .ok_or_else(|| Error::bad_json(format!("{what} must be an object")))?;
    if object.get("user_id").and_then(Value::as_str) != Some(user_id) {
        return Err(Error::bad_json(format!("{what}.user_id must be {user_id}")));
    }
    let keys = object
        .get("keys")
        .and_then(Value::as_object)
        .filter(|keys| !keys.is_empty() && keys.values().all(Value::is_string))
        .ok_or_else(|| Error::bad_json(format!("{what}.keys must map key IDs to keys")))?;
    if keys.keys().any(|id| !id.contains(':')) {
        return Err(Error::bad_json(format!(
            "{what}.keys IDs must be <algorithm>:<id>"
        )));
    }
    check_signed_object(value).map_err(|why| Error::bad_json(format!("{what}: {why}")))
}

/// Checks the part every signed object shares: an object whose `signatures`, when present,
/// map users to key IDs to signature strings. Returns why not.
fn check_signed_object(value: &Value) -> std::result::Result<(), &'static str> {
    let object = value.as_object().ok_or("must be an object")?;
    if let Some(signatures) = object.get("signatures") {
        let well_formed = signatures.as_object().is_some_and(|by_user| {
            by_user.values().all(|sigs| {
                sigs.as_object()
                    .is_some_and(|sigs| sigs.values().all(Value::is_string))
            })
        });
        if !well_formed {
            return Err("signatures must map users to key IDs to signatures");
        }
    }
    Ok(())
}

/// Checks a one-time or fallback key: an unpadded key string, or a signed key object.
fn check_one_time_key(key_id: &str, value: &Value) -> Result<()> {
    if !key_id.contains(':') {
        return Err(Error::bad_json(format!(
            "one-time key ID {key_id} must be <algorithm>:<id>"
        )));
    }
    let ok = match value {
        Value::String(_) => true,
        Value::Object(object) => object.get("key").is_some_and(Value::is_string),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::bad_json(format!(
            "one-time key {key_id} must be a key string or an object with a key"
        )))
    }
}

/// The public key of a cross-signing key object (its only `keys` entry).
fn cross_signing_public_key(value: &Value) -> Option<String> {
    value
        .get("keys")?
        .as_object()?
        .iter()
        .next()
        .and_then(|(id, _)| id.split_once(':').map(|(_, key)| key.to_owned()))
}

/// A checked `/keys/upload` body.
#[derive(Debug, Default)]
pub struct KeyUpload {
    device_keys: Option<Value>,
    one_time: Vec<(String, Value)>,
    fallback: Vec<(String, Value)>,
}

impl KeyUpload {
    /// Checks an upload body for `user_id`'s device `device_id`: well-formed key objects
    /// owned by that device (signatures are the clients' business, not checked here).
    pub fn parse(
        body: KeysUploadBody,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<KeyUpload> {
        let (user_id, device_id) = (user_id.as_str(), device_id.as_str());
        let device_keys = body.device_keys.filter(|v| !v.is_null());
        if let Some(keys) = &device_keys {
            check_key_object(keys, user_id, "device_keys")?;
            if keys.get("device_id").and_then(Value::as_str) != Some(device_id) {
                return Err(Error::bad_json(format!(
                    "device_keys.device_id must be {device_id}"
                )));
            }
            if !keys.get("algorithms").is_some_and(Value::is_array) {
                return Err(Error::bad_json("device_keys.algorithms must be a list"));
            }
        }
        Ok(KeyUpload {
            device_keys,
            one_time: checked_keys(body.one_time_keys)?,
            fallback: checked_keys(body.fallback_keys.or(body.unstable_fallback_keys))?,
        })
    }

    /// Stores the keys for the device; returns its one-time key counts.
    pub fn store_in_tx(
        self,
        tx: &mut WriteTx<'_>,
        own: &str,
        user: &str,
        device: &str,
    ) -> Result<KeyCounts> {
        if let Some(mut keys) = self.device_keys {
            if let Some(object) = keys.as_object_mut() {
                // `unsigned` is the server's to fill, never the client's.
                object.remove("unsigned");
            }
            if e2ee::set_device_keys(tx, user, device, &keys.to_string(), None)? {
                device_changed_in_tx(tx, own, user, device, false)?;
            }
        }
        for (key_id, key) in &self.one_time {
            let (algorithm, _) = key_id.split_once(':').unwrap_or((key_id, ""));
            let json = key.to_string();
            if let Some(existing) =
                e2ee::add_one_time_key(tx, user, device, algorithm, key_id, &json)?
                && existing != json
            {
                return Err(Error::invalid_param(format!(
                    "one-time key {key_id} already exists with different content"
                )));
            }
        }
        for (key_id, key) in &self.fallback {
            let (algorithm, _) = key_id.split_once(':').unwrap_or((key_id, ""));
            e2ee::set_fallback_key(tx, user, device, algorithm, key_id, &key.to_string())?;
        }
        let counts = e2ee::one_time_key_counts(tx, user, device)?;
        Ok(KeyCounts {
            one_time_key_counts: counts_map(counts),
        })
    }
}

/// `POST /keys/upload`: stores device keys, one-time keys and fallback keys; returns the
/// device's one-time key counts.
pub async fn upload_keys(
    server: &Server,
    user_id: &UserId,
    device_id: &DeviceId,
    body: KeysUploadBody,
) -> Result<KeyCounts> {
    let upload = KeyUpload::parse(body, user_id, device_id)?;
    let own = server.server_name().to_string();
    let (user, device) = (user_id.to_string(), device_id.to_string());
    // Encrypted appservices (MSC3202) learn their users' new key counts.
    let receivers = if upload.one_time.is_empty() && upload.fallback.is_empty() {
        Vec::new()
    } else {
        appservice_keys::msc3202_receivers(&server.appservices.all())
    };
    let (counts, queued) = server
        .store
        .write(move |tx| {
            let counts = upload.store_in_tx(tx, &own, &user, &device)?;
            let queued = appservice_keys::keys_changed_in_tx(tx, &receivers, &own, &user, &device)?;
            Ok((counts, queued))
        })
        .await?;
    if queued {
        server.appservice_kicker.kick();
    }
    Ok(counts)
}

/// Checks every one-time or fallback key of an upload body's map.
fn checked_keys(map: Option<BTreeMap<String, Value>>) -> Result<Vec<(String, Value)>> {
    map.unwrap_or_default()
        .into_iter()
        .map(|(id, key)| check_one_time_key(&id, &key).map(|()| (id, key)))
        .collect()
}

fn counts_map(counts: Vec<e2ee::KeyCount>) -> BTreeMap<String, i64> {
    let mut map: BTreeMap<String, i64> =
        counts.into_iter().map(|c| (c.algorithm, c.count)).collect();
    // Clients treat a missing signed_curve25519 count as "unknown"; 0 says "upload more".
    map.entry("signed_curve25519".to_owned()).or_insert(0);
    map
}

fn enqueue_all(tx: &WriteTx<'_>, servers: &[String], edu: &str) -> Result<()> {
    let now = now_ms();
    for server in servers {
        outbox::enqueue(tx, server, "edu", edu, now)?;
    }
    Ok(())
}

/// The keys a `/keys/query` (or federation `user/keys/query`) answers for local users.
/// `requester` is the asking local user (who alone sees their user-signing key and the
/// signatures they made with it); `None` for a peer.
pub fn local_keys(
    conn: &Connection,
    requester: Option<&str>,
    users: &DeviceQuery,
) -> Result<KeysQueryAnswer> {
    let mut device_keys = BTreeMap::new();
    let mut master_keys = KeysByUser::new();
    let mut self_signing_keys = KeysByUser::new();
    let mut user_signing_keys = KeysByUser::new();
    for (user, wanted) in users {
        let user = user.as_str();
        // An empty list asks for every device, as the spec says.
        let wanted: BTreeSet<&str> = wanted.iter().map(|id| id.as_str()).collect();
        let names: BTreeMap<String, Option<String>> = crate::store::accounts::devices(conn, user)?
            .into_iter()
            .map(|d| (d.device_id, d.display_name))
            .collect();
        let mut devices = KeysByUser::new();
        for row in e2ee::device_keys(conn, user)? {
            let device_id = row.device_id;
            if !wanted.is_empty() && !wanted.contains(device_id.as_str()) {
                continue;
            }
            let mut keys: Value = serde_json::from_str(&row.key_json).unwrap_or(Value::Null);
            merge_signatures(conn, requester, user, &device_id, &mut keys)?;
            let name = names
                .get(&device_id)
                .cloned()
                .flatten()
                .or(row.display_name);
            if let Some(name) = name {
                keys["unsigned"] = json!({"device_display_name": name});
            }
            devices.insert(device_id, keys);
        }
        device_keys.insert(user.to_owned(), devices);
        for (key_type, out) in [
            ("master", &mut master_keys),
            ("self_signing", &mut self_signing_keys),
        ] {
            if let Some(key) = e2ee::cross_signing_key(conn, user, key_type)? {
                let mut key: Value = serde_json::from_str(&key).unwrap_or(Value::Null);
                if let Some(public) = cross_signing_public_key(&key) {
                    merge_signatures(conn, requester, user, &public, &mut key)?;
                }
                out.insert(user.to_owned(), key);
            }
        }
        if requester == Some(user)
            && let Some(key) = e2ee::cross_signing_key(conn, user, "user_signing")?
        {
            user_signing_keys.insert(
                user.to_owned(),
                serde_json::from_str(&key).unwrap_or(Value::Null),
            );
        }
    }
    Ok(KeysQueryAnswer {
        device_keys,
        master_keys,
        self_signing_keys,
        user_signing_keys: requester.is_some().then_some(user_signing_keys),
        failures: None,
    })
}

/// Adds stored signatures over `target_key` to a key object. Signatures by another user
/// (made with their user-signing key) are shown to that user only.
fn merge_signatures(
    conn: &Connection,
    requester: Option<&str>,
    user: &str,
    target_key: &str,
    key: &mut Value,
) -> Result<()> {
    for found in e2ee::signatures(conn, user, target_key)? {
        let (signer, key_id, signature) = (found.signer_user, found.signer_key_id, found.signature);
        if signer != user && requester != Some(signer.as_str()) {
            continue;
        }
        if !key["signatures"].is_object() {
            key["signatures"] = json!({});
        }
        if !key["signatures"][&signer].is_object() {
            key["signatures"][&signer] = json!({});
        }
        key["signatures"][&signer][&key_id] = json!(signature);
    }
    Ok(())
}

/// `POST /keys/query`: local users from the database, remote users from their unit (or the
/// cache when it is current or the unit is unreachable).
pub async fn query_keys(
    server: &Server,
    requester: &UserId,
    users: DeviceQuery,
    timeout: Duration,
) -> Result<KeysQueryAnswer> {
    let requester = requester.as_str();
    let (local, remote): (DeviceQuery, DeviceQuery) = users
        .into_iter()
        .partition(|(user, _)| user.server_name() == server.server_name());
    let requester_owned = requester.to_owned();
    let mut out = server
        .store
        .read(move |conn| local_keys(conn, Some(&requester_owned), &local))
        .await?;
    let mut failures = BTreeMap::new();
    let mut by_server: BTreeMap<String, DeviceQuery> = BTreeMap::new();
    for (user, devices) in remote {
        by_server
            .entry(user.server_name().to_string())
            .or_default()
            .insert(user, devices);
    }
    let wait = timeout.min(MAX_FEDERATION_WAIT);
    for (peer, users) in by_server {
        if server.peers.get(&peer).is_none() {
            failures.insert(
                peer,
                Failure {
                    errcode: "M_FORBIDDEN",
                    error: "not an allow-listed peer".to_owned(),
                },
            );
            continue;
        }
        let mut reached = true;
        for user in users.keys() {
            if let Err(err) = refresh_remote_devices(server, user.as_str(), wait).await {
                tracing::debug!(%user, error = %err, "device list resync failed; using the cache");
                reached = false;
            }
        }
        if !reached {
            failures.insert(
                peer.clone(),
                Failure::unknown("peer unreachable; cached keys returned"),
            );
        }
        let requester_owned = requester.to_owned();
        let cached = server
            .store
            .read(move |conn| local_keys(conn, Some(&requester_owned), &users))
            .await?;
        out.device_keys.extend(cached.device_keys);
        out.master_keys.extend(cached.master_keys);
        out.self_signing_keys.extend(cached.self_signing_keys);
    }
    out.failures = Some(failures);
    Ok(out)
}

/// Resyncs a remote user's device list through `user/devices` unless the cache is current
/// (present, not stale, and the user still shares a room with one of ours, so updates reach
/// us).
async fn refresh_remote_devices(server: &Server, user_id: &str, wait: Duration) -> Result<()> {
    let user = user_id.to_owned();
    let own = server.server_name().to_string();
    let current = server
        .store
        .read(move |conn| {
            let tracked = e2ee::remote_device_list(conn, &user)?;
            let shared = remote_user_shares_room(conn, &user, &own)?
                && !e2ee::joined_shared_room_since(
                    conn,
                    &user,
                    &own,
                    e2ee::remote_fetched_pos(conn, &user)?,
                )?;
            Ok(tracked.is_some_and(|list| !list.stale) && shared)
        })
        .await?;
    if current {
        return Ok(());
    }
    let path = format!("/_matrix/federation/v1/user/devices/{}", urlencode(user_id));
    let response = tokio::time::timeout(
        wait,
        server
            .federation
            .request(server_of(user_id), Method::GET, &path, None),
    )
    .await
    .map_err(|_| {
        Error::new(
            crate::error::ErrorCode::Unknown,
            "peer did not answer in time",
        )
    })?
    .map_err(crate::transport::client::fed_error)?;
    store_remote_devices(server, user_id, &response).await
}

/// Whether a remote user is joined to a room that one of our users is joined to (only then
/// does their unit send us updates, so only then is the cache kept current).
fn remote_user_shares_room(conn: &Connection, user_id: &str, own: &str) -> Result<bool> {
    Ok(e2ee::users_sharing_rooms(conn, user_id)?
        .iter()
        .any(|u| server_of(u) == own))
}

/// Caches a `user/devices` answer (devices, master and self-signing keys).
async fn store_remote_devices(server: &Server, user_id: &str, response: &Value) -> Result<()> {
    if response.get("user_id").and_then(Value::as_str) != Some(user_id) {
        return Err(Error::bad_json("user/devices answered for another user"));
    }
    let stream_id = response
        .get("stream_id")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let mut devices = Vec::new();
    for device in response
        .get("devices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(device_id), Some(keys)) = (
            device.get("device_id").and_then(Value::as_str),
            device.get("keys"),
        ) else {
            continue;
        };
        if check_key_object(keys, user_id, "keys").is_err()
            || keys.get("device_id").and_then(Value::as_str) != Some(device_id)
        {
            continue;
        }
        let name = device
            .get("device_display_name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        devices.push((device_id.to_owned(), keys.to_string(), name));
    }
    let mut cross = Vec::new();
    for (field, key_type) in [
        ("master_key", "master"),
        ("self_signing_key", "self_signing"),
    ] {
        if let Some(key) = response.get(field)
            && check_key_object(key, user_id, field).is_ok()
        {
            cross.push((key_type, key.to_string()));
        }
    }
    let user = user_id.to_owned();
    server
        .store
        .write(move |tx| {
            let fetched_pos = tx.next_stream_pos(Audience::PeersOf(&user));
            e2ee::replace_remote_devices(tx, &user, stream_id, fetched_pos, &devices)?;
            for (key_type, key) in &cross {
                e2ee::set_cross_signing_key(tx, &user, key_type, key)?;
            }
            Ok(())
        })
        .await
}

/// `POST /keys/claim`: one key per requested device, one-time key first, fallback key after.
pub async fn claim_keys(
    server: &Server,
    wanted: ClaimRequest,
    timeout: Duration,
) -> Result<KeysClaimAnswer> {
    let (local, remote): (ClaimRequest, ClaimRequest) = wanted
        .into_iter()
        .partition(|(user, _)| user.server_name() == server.server_name());
    let mut out = claim_local(server, local).await?;
    let mut by_server: BTreeMap<String, ClaimRequest> = BTreeMap::new();
    for (user, devices) in remote {
        by_server
            .entry(user.server_name().to_string())
            .or_default()
            .insert(user, devices);
    }
    let mut failures = BTreeMap::new();
    let wait = timeout.min(MAX_FEDERATION_WAIT);
    for (peer, users) in by_server {
        let answer = tokio::time::timeout(
            wait,
            server.federation.request(
                &peer,
                Method::POST,
                "/_matrix/federation/v1/user/keys/claim",
                Some(json!({"one_time_keys": users})),
            ),
        )
        .await;
        match answer {
            Ok(Ok(answer)) => match serde_json::from_value::<PeerClaimAnswer>(answer) {
                Ok(answer) => {
                    for (user, keys) in answer.one_time_keys {
                        if server_of(&user) == peer
                            && users.keys().any(|asked| asked.as_str() == user)
                        {
                            out.one_time_keys.insert(user, keys);
                        }
                    }
                }
                Err(err) => {
                    failures.insert(peer, Failure::unknown(format!("malformed answer: {err}")));
                }
            },
            Ok(Err(err)) => {
                failures.insert(peer, Failure::unknown(err.to_string()));
            }
            Err(_) => {
                failures.insert(peer, Failure::unknown("timed out"));
            }
        }
    }
    out.failures = Some(failures);
    Ok(out)
}

/// A peer's `user/keys/claim` answer (`user_keys.yaml`): `one_time_keys` is required.
#[derive(serde::Deserialize)]
struct PeerClaimAnswer {
    one_time_keys: ClaimedKeys,
}

/// Claims keys of local users for a client or a peer (see [`local_claim`]), telling encrypted
/// appservices (MSC3202) the new key counts of their users' devices.
pub async fn claim_local(server: &Server, wanted: ClaimRequest) -> Result<KeysClaimAnswer> {
    let receivers = appservice_keys::msc3202_receivers(&server.appservices.all());
    let own = server.server_name().to_string();
    let (answer, queued) = server
        .store
        .write(move |tx| {
            let answer = local_claim(tx, &wanted)?;
            let mut queued = false;
            for (user, devices) in &answer.one_time_keys {
                for device in devices.keys() {
                    queued |=
                        appservice_keys::keys_changed_in_tx(tx, &receivers, &own, user, device)?;
                }
            }
            Ok((answer, queued))
        })
        .await?;
    if queued {
        server.appservice_kicker.kick();
    }
    Ok(answer)
}

/// Claims keys of local users: `{user: {device: algorithm}}` → `{one_time_keys: …}`.
/// Unknown users, devices and algorithms are simply absent from the answer.
pub fn local_claim(tx: &WriteTx<'_>, wanted: &ClaimRequest) -> Result<KeysClaimAnswer> {
    let mut keys = ClaimedKeys::new();
    for (user, devices) in wanted {
        let user = user.as_str();
        let mut per_user = BTreeMap::new();
        for (device, algorithm) in devices {
            let device = device.as_str();
            let claimed = match e2ee::claim_one_time_key(tx, user, device, algorithm)? {
                Some(key) => Some(key),
                None => e2ee::claim_fallback_key(tx, user, device, algorithm)?,
            };
            if let Some(claimed) = claimed {
                let key = serde_json::from_str::<Value>(&claimed.key_json).unwrap_or(Value::Null);
                per_user.insert(device.to_owned(), BTreeMap::from([(claimed.key_id, key)]));
            }
        }
        if !per_user.is_empty() {
            keys.insert(user.to_owned(), per_user);
        }
    }
    Ok(KeysClaimAnswer {
        one_time_keys: keys,
        failures: None,
    })
}
