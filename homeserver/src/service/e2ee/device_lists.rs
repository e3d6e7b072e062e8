//! Device-list tracking: recording changes of local users' devices (with
//! `m.device_list_update` EDUs chained by `prev_id`), applying peers' updates to the cache,
//! `user/devices` for peers, and the `changed`/`left` sets of `/sync` and `/keys/changes`.

use super::*; // the parent's imports and shared helpers

/// Records a change to one of a local user's devices and tells the peers who share a room
/// with the user (`m.device_list_update`, chained by `prev_id`).
pub fn device_changed_in_tx(
    tx: &mut WriteTx<'_>,
    own: &str,
    user_id: &str,
    device_id: &str,
    deleted: bool,
) -> Result<()> {
    let prev = e2ee::last_device_list_change(tx, user_id)?;
    let pos = tx.next_stream_pos(Audience::PeersOf(user_id));
    e2ee::record_device_list_change(tx, user_id, pos)?;
    let servers = e2ee::servers_sharing_rooms(tx, user_id, own)?;
    if servers.is_empty() {
        return Ok(());
    }
    let mut content = json!({
        "user_id": user_id,
        "device_id": device_id,
        "stream_id": pos,
        "prev_id": if prev > 0 { json!([prev]) } else { json!([]) },
        "deleted": deleted,
    });
    if !deleted {
        let devices = e2ee::device_keys(tx, user_id)?;
        if let Some(row) = devices.iter().find(|row| row.device_id == device_id) {
            content["keys"] = serde_json::from_str(&row.key_json).unwrap_or(Value::Null);
        }
        if let Some(name) = device_display_name(tx, user_id, device_id)? {
            content["device_display_name"] = json!(name);
        }
    }
    let edu = json!({"edu_type": "m.device_list_update", "content": content}).to_string();
    enqueue_all(tx, &servers, &edu)
}

fn device_display_name(
    conn: &Connection,
    user_id: &str,
    device_id: &str,
) -> Result<Option<String>> {
    Ok(crate::store::accounts::devices(conn, user_id)?
        .into_iter()
        .find(|d| d.device_id == device_id)
        .and_then(|d| d.display_name))
}

/// Records that devices of a local user were removed (logout, deletion, password change).
pub fn devices_deleted_in_tx(
    tx: &mut WriteTx<'_>,
    own: &str,
    user_id: &str,
    device_ids: &[String],
) -> Result<()> {
    for device_id in device_ids {
        e2ee::delete_device_keys(tx, user_id, device_id)?;
        device_changed_in_tx(tx, own, user_id, device_id, true)?;
    }
    Ok(())
}

/// Handles an `m.device_list_update` EDU: applies it to the cached list when it follows
/// the update we hold (`prev_id`), marks the cache stale on a gap, and tells local clients
/// the user's devices changed either way. The caller has checked that the user belongs to
/// the EDU's origin.
pub async fn receive_device_list_update(
    server: &Server,
    update: edu::DeviceListUpdate,
) -> Result<()> {
    let edu::DeviceListUpdate {
        user_id,
        device_id: device,
        device_display_name: name,
        stream_id,
        prev_id: prev,
        deleted,
        keys,
    } = update;
    let user = user_id.to_string();
    let keys = keys
        .filter(|k| check_key_object(k, &user, "keys").is_ok())
        .map(|k| k.to_string());
    server
        .store
        .write(move |tx| {
            if let Some(list) = e2ee::remote_device_list(tx, &user)?
                && !list.stale
                && stream_id > list.stream_id
            {
                let held = list.stream_id;
                if prev.contains(&held) {
                    if deleted {
                        e2ee::delete_device_keys(tx, &user, &device)?;
                    } else if let Some(keys) = &keys {
                        e2ee::set_device_keys(tx, &user, &device, keys, name.as_deref())?;
                    } else {
                        e2ee::mark_remote_stale(tx, &user)?;
                    }
                    e2ee::set_remote_stream_id(tx, &user, stream_id)?;
                } else {
                    e2ee::mark_remote_stale(tx, &user)?;
                }
            }
            let pos = tx.next_stream_pos(Audience::PeersOf(&user));
            e2ee::record_device_list_change(tx, &user, pos)
        })
        .await
}

/// The federation `user/devices/{userId}` answer for a local user.
pub fn user_devices(conn: &Connection, user: &UserId) -> Result<UserDevicesAnswer> {
    let mut keys = local_keys(
        conn,
        None,
        &DeviceQuery::from([(user.to_owned(), Vec::new())]),
    )?;
    let user_id = user.as_str();
    let names: BTreeMap<String, Option<String>> = crate::store::accounts::devices(conn, user_id)?
        .into_iter()
        .map(|d| (d.device_id, d.display_name))
        .collect();
    let mut devices = Vec::new();
    for (device_id, mut device_keys) in keys.device_keys.remove(user_id).unwrap_or_default() {
        if let Some(object) = device_keys.as_object_mut() {
            object.remove("unsigned");
        }
        let device_display_name = names.get(&device_id).cloned().flatten();
        devices.push(UserDevice {
            device_id,
            keys: device_keys,
            device_display_name,
        });
    }
    Ok(UserDevicesAnswer {
        user_id: user_id.to_owned(),
        stream_id: e2ee::last_device_list_change(conn, user_id)?,
        devices,
        master_key: keys.master_keys.remove(user_id),
        self_signing_key: keys.self_signing_keys.remove(user_id),
    })
}

/// Users whose device lists a client must refresh (`changed`) or may forget (`left`) after
/// `(after, upto]`: device-list changes of users sharing a room, users who newly share one,
/// users who no longer share any.
pub fn device_list_delta(
    conn: &Connection,
    user: &UserId,
    after: i64,
    upto: i64,
) -> Result<(Vec<String>, Vec<String>)> {
    let user_id = user.as_str();
    let changed = e2ee::device_list_changes(conn, after, upto)?;
    let others_changed = changed.iter().any(|u| u != user_id);
    let SharingDelta {
        sharing,
        mut joined,
        left,
    } = sharing_delta(conn, user_id, after, upto, others_changed)?;
    // Our own joins list us among the room's members; we are "changed" only when our own
    // devices or keys changed.
    if changed.iter().any(|u| u == user_id) {
        joined.insert(user_id.to_owned());
    }
    joined.extend(
        changed
            .into_iter()
            .filter(|u| sharing.contains(u) && u != user_id),
    );
    Ok((joined.into_iter().collect(), left.into_iter().collect()))
}

/// Users who came to share a room with `user_id` in `(after, upto]` and still do (`/sync`
/// sends them in `presence` too, since the client never had their presence).
pub fn newly_sharing(
    conn: &Connection,
    user: &UserId,
    after: i64,
    upto: i64,
) -> Result<BTreeSet<String>> {
    Ok(sharing_delta(conn, user.as_str(), after, upto, false)?.joined)
}

/// Who shares a room with a user now, and who came to or stopped sharing one in a range.
#[derive(Default)]
struct SharingDelta {
    /// Users sharing a room with the user now.
    sharing: BTreeSet<String>,
    /// Users who newly share one (not the user).
    joined: BTreeSet<String>,
    /// Users who share none any more (not the user).
    left: BTreeSet<String>,
}

/// The delta of `(after, upto]`. Who shares a room now is read only when something must be
/// checked against it: a membership change in the range, or (`others_changed`) another user's
/// device-list change. Most incremental syncs have neither, and reading every member of every
/// room the user is in was a fifth of a busy unit's `/sync` CPU; without it `sharing` is empty.
fn sharing_delta(
    conn: &Connection,
    user_id: &str,
    after: i64,
    upto: i64,
    others_changed: bool,
) -> Result<SharingDelta> {
    let changes = e2ee::member_events_in_shared_rooms(conn, user_id, after, upto)?;
    if changes.is_empty() && !others_changed {
        return Ok(SharingDelta::default());
    }
    let sharing: BTreeSet<String> = e2ee::users_sharing_rooms(conn, user_id)?
        .into_iter()
        .collect();
    let mut joined = BTreeSet::new();
    let mut left = BTreeSet::new();
    for change in changes {
        let (room, member) = (change.room_id, change.user_id);
        let is_join = change.membership == "join";
        if member == user_id {
            let members = crate::store::state::members_with(conn, &room, "join")?;
            if is_join {
                joined.extend(members);
            } else {
                left.extend(members);
            }
        } else if is_join {
            joined.insert(member);
        } else {
            left.insert(member);
        }
    }
    joined.retain(|u| sharing.contains(u) && u != user_id);
    left.retain(|u| !sharing.contains(u) && u != user_id);
    Ok(SharingDelta {
        sharing,
        joined,
        left,
    })
}
