//! Bundled aggregations (spec: client-server API, "Aggregations of child events"): the
//! `unsigned.m.relations` a viewer gets on the events it is served.
//!
//! One place decorates a batch of events for a viewer, so every path that serves events
//! (`/event`, `/messages`, `/context`, `/sync` and sliding-sync timelines, `/relations`,
//! `/threads`, search results) bundles alike: [`format_events`] formats and decorates,
//! [`bundle`] decorates events already formatted. Per room of the batch it reads the
//! viewer's visibility (two indexed reads) and then three queries for all the batch's events
//! at once: thread summaries (`m.thread`: `latest_event`, `count`,
//! `current_user_participated`), the latest valid edit (`m.replace`) and references
//! (`m.reference`). Children count only when the viewer may see them (history visibility)
//! and their sender is not ignored; a redacted child has left the relations index, and a
//! redacted original bundles no edit. State events get no bundled aggregations (spec).
//! A thread's `latest_event` and an edit are served in the same form as the event itself,
//! the latest event with its own edits and references.

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::rooms;
use crate::error::Result;
use crate::store::events::{self, StoredEvent};
use crate::store::search::{self as index, ChildFilter};

/// Formats events for a viewer (`(user, device)`, see [`rooms::client_event`]) with their
/// bundled aggregations; without a viewer (push, admin paths) only the plain format.
pub fn format_events(
    conn: &Connection,
    list: &[StoredEvent],
    viewer: Option<(&str, &str)>,
) -> Result<Vec<Value>> {
    format_events_known(conn, list, viewer, Known::default())
}

/// What a caller serving many rooms in one answer (`/sync`, sliding sync) has already read
/// once, so bundling does not read it again for every room.
#[derive(Debug, Default, Clone, Copy)]
pub struct Known<'a> {
    /// The viewer's ignored users (`m.ignored_user_list`); `None`: read them when needed.
    pub ignored: Option<&'a [String]>,
    /// Rooms holding any relation at all ([`index::rooms_with_relations`]); a room outside
    /// it bundles nothing. `None`: probe each room's events.
    pub related_rooms: Option<&'a HashSet<String>>,
}

/// [`format_events`] with what the caller already knows (see [`Known`]).
pub fn format_events_known(
    conn: &Connection,
    list: &[StoredEvent],
    viewer: Option<(&str, &str)>,
    known: Known<'_>,
) -> Result<Vec<Value>> {
    let mut out = list
        .iter()
        .map(|e| rooms::client_event(conn, e, viewer))
        .collect::<Result<Vec<_>>>()?;
    if let Some(viewer) = viewer {
        bundle_at(conn, viewer, list, &mut out, true, known)?;
    }
    Ok(out)
}

/// Adds `unsigned.m.relations` to `formatted[i]`, the client form of `list[i]`, for the
/// viewer.
pub fn bundle(
    conn: &Connection,
    viewer: (&str, &str),
    list: &[StoredEvent],
    formatted: &mut [Value],
) -> Result<()> {
    bundle_at(conn, viewer, list, formatted, true, Known::default())
}

/// [`bundle`]; `threads` is false for a thread's latest event, which cannot be a thread root
/// (an `m.thread` may not target an event with `m.relates_to`), saving the query and any loop.
fn bundle_at(
    conn: &Connection,
    viewer: (&str, &str),
    list: &[StoredEvent],
    formatted: &mut [Value],
    threads: bool,
    known: Known<'_>,
) -> Result<()> {
    let (user, _) = viewer;
    // Parents by room; state events and rejected events get nothing.
    let mut by_room: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for event in list {
        if event.pdu.state_key.is_none() && !event.pdu.rejected {
            by_room
                .entry(event.pdu.room_id.as_str())
                .or_default()
                .push(event.pdu.event_id.to_string());
        }
    }
    if by_room.is_empty() {
        return Ok(());
    }
    // Read on the first room that has relations, unless the caller knows them already.
    let mut read_ignored: Option<Vec<String>> = None;
    let mut relations: HashMap<String, Map<String, Value>> = HashMap::new();
    for (room, parents) in &by_room {
        if known
            .related_rooms
            .is_some_and(|related| !related.contains(*room))
            || !index::any_relations(conn, parents)?
        {
            continue;
        }
        let ignored: &[String] = match known.ignored {
            Some(ignored) => ignored,
            None => {
                if read_ignored.is_none() {
                    read_ignored = Some(super::account_data::ignored_users(conn, user)?);
                }
                read_ignored.as_deref().unwrap_or_default()
            }
        };
        let visible = rooms::user_visibility(conn, room, user)?;
        let filter = ChildFilter {
            room_id: room,
            parents,
            visible: visible.ranges(),
            not_senders: ignored,
        };
        if threads {
            let summaries = index::thread_summaries(conn, &filter, user)?;
            let latest: Vec<StoredEvent> = summaries
                .iter()
                .filter_map(|s| events::get_event(conn, &s.latest_event).transpose())
                .collect::<Result<_>>()?;
            let mut latest_formatted = latest
                .iter()
                .map(|e| rooms::client_event(conn, e, Some(viewer)))
                .collect::<Result<Vec<_>>>()?;
            bundle_at(conn, viewer, &latest, &mut latest_formatted, false, known)?;
            let mut latest_by_id: HashMap<String, Value> = latest
                .iter()
                .map(|e| e.pdu.event_id.to_string())
                .zip(latest_formatted)
                .collect();
            for summary in summaries {
                let Some(latest_event) = latest_by_id.remove(&summary.latest_event) else {
                    continue;
                };
                let root_sender = list
                    .iter()
                    .find(|e| e.pdu.event_id.as_str() == summary.root)
                    .is_some_and(|e| e.pdu.sender.as_str() == user);
                relations.entry(summary.root).or_default().insert(
                    "m.thread".to_owned(),
                    json!({
                        "latest_event": latest_event,
                        "count": summary.count,
                        "current_user_participated": summary.user_posted || root_sender,
                    }),
                );
            }
        }
        for found in index::latest_edits(conn, &filter)? {
            if let Some(edit) = events::get_event(conn, &found.child)? {
                relations.entry(found.parent).or_default().insert(
                    "m.replace".to_owned(),
                    rooms::client_event(conn, &edit, Some(viewer))?,
                );
            }
        }
        let mut references: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for found in index::references(conn, &filter)? {
            references
                .entry(found.parent)
                .or_default()
                .push(json!({ "event_id": found.child }));
        }
        for (parent, chunk) in references {
            relations
                .entry(parent)
                .or_default()
                .insert("m.reference".to_owned(), json!({ "chunk": chunk }));
        }
    }
    if relations.is_empty() {
        return Ok(());
    }
    for (event, value) in list.iter().zip(formatted.iter_mut()) {
        let Some(found) = relations.get(event.pdu.event_id.as_str()) else {
            continue;
        };
        let Some(object) = value.as_object_mut() else {
            continue;
        };
        let unsigned = object
            .entry("unsigned")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(unsigned) = unsigned.as_object_mut() {
            unsigned.insert("m.relations".to_owned(), Value::Object(found.clone()));
        }
    }
    Ok(())
}
