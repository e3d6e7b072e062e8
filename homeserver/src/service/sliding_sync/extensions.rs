//! Sliding sync extensions: to-device messages (MSC3885), end-to-end encryption (MSC3884),
//! account data (MSC3959), receipts (MSC3960) and typing (MSC3961). Each reuses what `/sync`
//! computes; only the shape of the answer and the set of rooms covered differ.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::Connection;
use serde_json::Value;

use super::rooms::{Matched, Sent};
use super::{
    AccountDataResponse, E2eeResponse, ExtensionScope, ExtensionsResponse, RoomEvents,
    SlidingSyncRequest, ToDeviceResponse, TypingView,
};
use crate::error::Result;
use crate::service::e2ee::sync_keys;
use crate::service::push::rules_account_data;
use crate::service::sync::{DeviceLists, account_data_event, receipt_event, typing_event};
use crate::store::{e2ee, misc};

/// The `extensions` object and whether it holds nothing new.
pub(super) struct Answer {
    pub response: ExtensionsResponse,
    pub empty: bool,
}

/// Computes every enabled extension for `(since, upto]`.
pub(super) fn compute(
    conn: &Connection,
    req: &SlidingSyncRequest,
    matched: &Matched,
    sent: &Sent,
    since: Option<i64>,
    upto: i64,
    typing: &TypingView,
) -> Result<Answer> {
    let ext = &req.extensions;
    let mut out = ExtensionsResponse::default();
    let mut empty = true;
    let user = req.user_id.as_str();
    let device = req.device_id.as_deref();
    if ext.e2ee || ext.to_device.is_some() {
        let to_device_after = ext.to_device.as_ref().and_then(|t| t.since).unwrap_or(0);
        let mut keys = sync_keys(
            conn,
            &req.user_id,
            device,
            since,
            Some(to_device_after),
            upto,
        )?;
        if let Some(to_device) = &ext.to_device {
            let (events, next) = if to_device.limit < keys.to_device.len() {
                // Fewer than `/sync` hands out: stop at the `limit`-th message.
                let cut = e2ee::to_device_since(
                    conn,
                    user,
                    crate::service::device_key(device),
                    to_device_after,
                    upto,
                    to_device.limit,
                )?
                .last()
                .map_or(to_device_after, |m| m.stream_pos);
                let part = sync_keys(conn, &req.user_id, device, None, Some(to_device_after), cut)?;
                (part.to_device, cut)
            } else {
                let next = keys.to_device_upto.unwrap_or(upto).max(to_device_after);
                (std::mem::take(&mut keys.to_device), next)
            };
            empty &= events.is_empty();
            out.to_device = Some(ToDeviceResponse {
                next_batch: next.to_string(),
                events,
            });
        }
        if ext.e2ee {
            empty &= keys.changed.is_empty() && keys.left.is_empty();
            out.e2ee = Some(E2eeResponse {
                device_lists: DeviceLists {
                    changed: keys.changed,
                    left: keys.left,
                },
                device_one_time_keys_count: keys.one_time_key_counts,
                device_unused_fallback_key_types: keys.unused_fallback_types,
            });
        }
    }
    if let Some(scope) = &ext.account_data {
        let rooms = rooms_in_scope(scope, matched);
        let changed = misc::account_data_since(conn, user, since.unwrap_or(0), upto)?;
        // Rooms new to the connection get all their account data, not just the changes.
        let full = if since.is_none() {
            changed.clone()
        } else if rooms.iter().any(|r| sent.initial.contains_key(r)) {
            misc::account_data_since(conn, user, 0, upto)?
        } else {
            Vec::new()
        };
        let event = |row: &misc::AccountDataRow| account_data_event(row.kind.clone(), &row.content);
        let mut global = Vec::new();
        let mut by_room: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for row in &changed {
            if row.room_id.is_empty() {
                global.push(event(row));
            }
        }
        let room_rows = changed
            .iter()
            .filter(|row| !sent.initial.contains_key(&row.room_id))
            .chain(
                full.iter()
                    .filter(|row| sent.initial.contains_key(&row.room_id)),
            );
        for row in room_rows {
            if !row.room_id.is_empty() && rooms.contains(&row.room_id) {
                by_room
                    .entry(row.room_id.clone())
                    .or_default()
                    .push(event(row));
            }
        }
        if let Some(rules) = rules_account_data(conn, &req.user_id, since, upto)? {
            global.push(rules);
        }
        empty &= global.is_empty() && by_room.is_empty();
        out.account_data = Some(AccountDataResponse {
            global,
            rooms: by_room,
        });
    }
    if let Some(scope) = &ext.receipts {
        let mut rooms = BTreeMap::new();
        for room in rooms_in_scope(scope, matched) {
            let receipts = match sent.initial.get(&room) {
                // A room new to the connection: receipts on the events sent, and the user's own.
                Some(timeline) => misc::receipts_since(conn, &room, 0, upto)?
                    .into_iter()
                    .filter(|r| timeline.contains(&r.event_id) || r.user_id == user)
                    .collect(),
                None => misc::receipts_since(conn, &room, since.unwrap_or(0), upto)?,
            };
            let receipts = receipts
                .into_iter()
                .filter(|r| r.receipt_type != "m.read.private" || r.user_id == user)
                .collect();
            if let Some(event) = receipt_event(receipts) {
                rooms.insert(room, event);
            }
        }
        empty &= rooms.is_empty();
        out.receipts = Some(RoomEvents { rooms });
    }
    if let Some(scope) = &ext.typing {
        let mut rooms = BTreeMap::new();
        for room in rooms_in_scope(scope, matched) {
            let users = if sent.initial.contains_key(&room) || since.is_none() {
                typing.all.get(&room).filter(|users| !users.is_empty())
            } else {
                typing.changed.get(&room)
            };
            if let Some(users) = users {
                rooms.insert(room, typing_event(users));
            }
        }
        empty &= rooms.is_empty();
        out.typing = Some(RoomEvents { rooms });
    }
    Ok(Answer {
        response: out,
        empty,
    })
}

/// The rooms a per-room extension covers this time (see [`ExtensionScope`]).
fn rooms_in_scope(scope: &ExtensionScope, matched: &Matched) -> BTreeSet<String> {
    let mut rooms = BTreeSet::new();
    for (name, selected) in &matched.by_list {
        if scope.lists.as_ref().is_none_or(|l| l.contains(name)) {
            rooms.extend(selected.iter().cloned());
        }
    }
    let all_subscribed = scope
        .rooms
        .as_ref()
        .is_none_or(|r| r.iter().any(|r| r == "*"));
    for room in &matched.subscribed {
        if all_subscribed || scope.rooms.as_ref().is_some_and(|r| r.contains(room)) {
            rooms.insert(room.clone());
        }
    }
    if let Some(named) = &scope.rooms {
        // Rooms named explicitly count when the user may see them (they are in the list).
        for room in named {
            if matched.rooms.contains_key(room) {
                rooms.insert(room.clone());
            }
        }
    }
    rooms
}
