//! Cross-signing: master, self-signing and user-signing keys, signatures over keys, and
//! `m.signing_key_update` EDUs.

use super::*; // the parent's imports and shared helpers

/// `POST /keys/device_signing/upload`: stores cross-signing keys. Returns whether an
/// existing master key would be replaced (the caller then demands UIA first) without
/// storing anything, when `replace_allowed` is false.
pub async fn upload_signing_keys(
    server: &Server,
    user_id: &UserId,
    body: &SigningKeysUpload,
    replace_allowed: bool,
) -> Result<bool> {
    let user_id = user_id.as_str();
    let mut uploads = Vec::new();
    for (field, key, key_type) in [
        ("master_key", &body.master_key, "master"),
        ("self_signing_key", &body.self_signing_key, "self_signing"),
        ("user_signing_key", &body.user_signing_key, "user_signing"),
    ] {
        let usage = key_type;
        let Some(key) = key.as_ref().filter(|v| !v.is_null()) else {
            continue;
        };
        check_key_object(key, user_id, field)?;
        let usage_ok = key
            .get("usage")
            .and_then(Value::as_array)
            .is_some_and(|u| u.iter().any(|x| x.as_str() == Some(usage)));
        if !usage_ok {
            return Err(Error::bad_json(format!(
                "{field}.usage must contain {usage}"
            )));
        }
        if key["keys"].as_object().map(Map::len) != Some(1) {
            return Err(Error::bad_json(format!(
                "{field}.keys must hold exactly one key"
            )));
        }
        uploads.push((key_type, key.to_string()));
    }
    let own = server.server_name().to_string();
    let user = user_id.to_owned();
    server
        .store
        .write(move |tx| {
            let replaces = uploads.iter().any(|(key_type, key)| {
                matches!(e2ee::cross_signing_key(tx, &user, key_type), Ok(Some(old)) if old != *key)
            });
            if replaces && !replace_allowed {
                return Ok(true);
            }
            let mut changed = false;
            for (key_type, key) in &uploads {
                changed |= e2ee::set_cross_signing_key(tx, &user, key_type, key)?;
            }
            if changed {
                signing_keys_changed_in_tx(tx, &own, &user)?;
            }
            Ok(false)
        })
        .await
}

/// Records a change of a local user's cross-signing keys and sends `m.signing_key_update`
/// to the peers sharing a room with them.
fn signing_keys_changed_in_tx(tx: &mut WriteTx<'_>, own: &str, user_id: &str) -> Result<()> {
    let pos = tx.next_stream_pos(Audience::PeersOf(user_id));
    e2ee::record_device_list_change(tx, user_id, pos)?;
    let servers = e2ee::servers_sharing_rooms(tx, user_id, own)?;
    if servers.is_empty() {
        return Ok(());
    }
    let mut content = json!({"user_id": user_id});
    for (field, key_type) in [
        ("master_key", "master"),
        ("self_signing_key", "self_signing"),
    ] {
        if let Some(key) = e2ee::cross_signing_key(tx, user_id, key_type)? {
            content[field] = serde_json::from_str(&key).unwrap_or(Value::Null);
        }
    }
    let edu = json!({"edu_type": "m.signing_key_update", "content": content}).to_string();
    enqueue_all(tx, &servers, &edu)
}

/// `POST /keys/signatures/upload`: stores the uploader's signatures over their own devices
/// and master key, and over other users' master keys (made with their user-signing key).
/// Returns the `failures` map.
pub async fn upload_signatures(
    server: &Server,
    user_id: &UserId,
    body: SignaturesUpload,
) -> Result<SignaturesUploadAnswer> {
    let user_id = user_id.as_str();
    for (target_user, keys) in &body {
        for (key_id, object) in keys {
            check_signed_object(object)
                .map_err(|why| Error::bad_json(format!("{target_user}/{key_id}: {why}")))?;
        }
    }
    let own = server.server_name().to_string();
    let signer = user_id.to_owned();
    server
        .store
        .write(move |tx| {
            let mut answer = SignaturesUploadAnswer::default();
            let mut changed_users = BTreeSet::new();
            for (target_user, keys) in &body {
                let target_user = target_user.as_str();
                for (key_id, object) in keys {
                    let fail = |errcode: &'static str, why: &str| Failure {
                        errcode,
                        error: why.to_owned(),
                    };
                    let known = if target_user == signer {
                        e2ee::device_keys(tx, target_user)?
                            .iter()
                            .any(|row| &row.device_id == key_id)
                            || e2ee::cross_signing_key(tx, target_user, "master")?
                                .and_then(|k| serde_json::from_str::<Value>(&k).ok())
                                .and_then(|k| cross_signing_public_key(&k))
                                .as_deref()
                                == Some(key_id.as_str())
                    } else {
                        e2ee::cross_signing_key(tx, target_user, "master")?
                            .and_then(|k| serde_json::from_str::<Value>(&k).ok())
                            .and_then(|k| cross_signing_public_key(&k))
                            .as_deref()
                            == Some(key_id.as_str())
                    };
                    let signatures = object
                        .get("signatures")
                        .and_then(|s| s.get(&signer))
                        .and_then(Value::as_object);
                    let entry = match (known, signatures) {
                        (false, _) => Some(fail("M_NOT_FOUND", "no such key")),
                        (true, None) => {
                            Some(fail("M_INVALID_SIGNATURE", "no signature by the uploader"))
                        }
                        (true, Some(signatures)) => {
                            // Checked above: every signature is a string.
                            for (signer_key_id, signature) in signatures {
                                if let Some(signature) = signature.as_str() {
                                    e2ee::add_signature(
                                        tx,
                                        target_user,
                                        key_id,
                                        &signer,
                                        signer_key_id,
                                        signature,
                                    )?;
                                }
                            }
                            changed_users.insert(target_user.to_owned());
                            None
                        }
                    };
                    if let Some(entry) = entry {
                        answer
                            .failures
                            .entry(target_user.to_owned())
                            .or_default()
                            .insert(key_id.clone(), entry);
                    }
                }
            }
            for user in changed_users {
                if server_of(&user) == own {
                    signing_keys_changed_in_tx(tx, &own, &user)?;
                } else {
                    let pos = tx.next_stream_pos(Audience::PeersOf(&user));
                    e2ee::record_device_list_change(tx, &user, pos)?;
                }
            }
            Ok(answer)
        })
        .await
}

/// Handles an `m.signing_key_update` EDU: caches the user's new cross-signing keys. The
/// caller has checked that the user belongs to the EDU's origin.
pub async fn receive_signing_key_update(
    server: &Server,
    update: edu::SigningKeyUpdate,
) -> Result<()> {
    let user = update.user_id.to_string();
    let mut keys = Vec::new();
    for (key, field, key_type) in [
        (update.master_key, "master_key", "master"),
        (update.self_signing_key, "self_signing_key", "self_signing"),
    ] {
        if let Some(key) = key
            && check_key_object(&key, &user, field).is_ok()
        {
            keys.push((key_type, key.to_string()));
        }
    }
    server
        .store
        .write(move |tx| {
            for (key_type, key) in &keys {
                e2ee::set_cross_signing_key(tx, &user, key_type, key)?;
            }
            // New cross-signing keys come with new signatures over the user's devices, which
            // this EDU does not carry: resync the device list at the next query.
            e2ee::mark_remote_stale(tx, &user)?;
            let pos = tx.next_stream_pos(Audience::PeersOf(&user));
            e2ee::record_device_list_change(tx, &user, pos)
        })
        .await
}
