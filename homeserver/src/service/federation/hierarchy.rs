//! Space hierarchies: the room summary shared by the public directory and both `hierarchy`
//! endpoints, the resident side that answers a peer's `GET /_matrix/federation/v1/hierarchy`,
//! and the requesting side behind the client `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`.
//!
//! The client walk is depth first (spec: "recurses into that space before returning non-space
//! children"), children in the spec's `order` / timestamp / room ID order. Rooms this unit
//! holds are summarised from its own state; a room it does not hold is asked of the
//! allow-listed servers named in the child's `via` (never anyone else: a server that is not on
//! the allow-list is not even dialled), and the answer's `children` fill in the next level
//! without asking again. Peers' answers are kept for a minute in a small cache
//! ([`crate::service::hierarchy_cache`]), so paging
//! through a hierarchy does not ask on every page; a peer that could not be reached is left
//! alone for half a minute and the rooms only it could describe are skipped.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use axum::http::Method;
use ruma::{OwnedRoomId, OwnedUserId};
use rusqlite::Connection;
use serde_json::{Value, json};
use tracing::{debug, instrument, warn};

use super::urlencode;
use crate::error::{Error, Result};
use crate::matrix::client_format::to_stripped_state;
use crate::matrix::join_rules::restricted_allowed_rooms;
use crate::matrix::wire::HierarchyResponse;
use crate::service::Server;
use crate::service::directory::{room_summary, state_content};
use crate::service::hierarchy_cache::Answer;
use crate::store::{dag, events, state};
use crate::transport::client::FedError;

/// Most rooms on one page of the client hierarchy.
pub const MAX_LIMIT: usize = 100;
/// Rooms on a page when the client does not say.
pub const DEFAULT_LIMIT: usize = 50;
/// The deepest level the client walk descends to.
pub const MAX_DEPTH: usize = 10;

/// Most children one federation answer describes (ours and, when we read them, a peer's):
/// keeps one answer, and one cache entry, small.
const MAX_CHILDREN_PER_ANSWER: usize = 100;
/// Most federation requests one client request may make, so a wide space spread over many
/// units cannot hold a client request for long.
const MAX_ASKS_PER_WALK: usize = 32;

/// Whether a `m.space.child` content is a live, wanted link: it names servers in `via` (a
/// child without `via` has been removed, spec "m.space.child") and, for `suggested_only`, is
/// marked suggested.
fn is_wanted_child(content: &Value, suggested_only: bool) -> bool {
    let has_via = content
        .get("via")
        .and_then(Value::as_array)
        .is_some_and(|via| via.iter().any(Value::is_string));
    has_via && (!suggested_only || content.get("suggested") == Some(&json!(true)))
}

/// A valid `order` key (spec: at most 50 characters of printable ASCII).
fn valid_order(child: &Value) -> Option<&str> {
    child["content"]
        .get("order")
        .and_then(Value::as_str)
        .filter(|order| order.len() <= 50 && order.bytes().all(|b| (0x20..=0x7e).contains(&b)))
}

/// The spec's ordering of space children: valid `order` keys first, by code point; then the
/// `origin_server_ts` of the child event; then the room ID.
fn compare_children(a: &Value, b: &Value) -> Ordering {
    let by_order = match (valid_order(a), valid_order(b)) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    let ts = |v: &Value| v["origin_server_ts"].as_i64().unwrap_or(i64::MAX);
    let key = |v: &Value| v["state_key"].as_str().unwrap_or_default().to_owned();
    by_order
        .then_with(|| ts(a).cmp(&ts(b)))
        .then_with(|| key(a).cmp(&key(b)))
}

/// A room's `m.space.child` events as stripped state with `origin_server_ts` (spec:
/// `children_state`), live and wanted ones only, in the spec's order.
fn children_state(conn: &Connection, room: &str, suggested_only: bool) -> Result<Vec<Value>> {
    let mut children = Vec::new();
    for ((kind, _), id) in state::current_state(conn, room)? {
        if kind != "m.space.child" {
            continue;
        }
        let Some(event) = events::get_event(conn, &id)? else {
            continue;
        };
        if !is_wanted_child(&event.pdu.content_value(), suggested_only) {
            continue;
        }
        let mut child = to_stripped_state(&event.pdu);
        child["origin_server_ts"] = json!(i64::from(event.pdu.origin_server_ts.get()));
        children.push(child);
    }
    children.sort_by(compare_children);
    Ok(children)
}

/// The summary of a room this unit holds as both hierarchy endpoints give it: the directory
/// summary plus `room_version`, `encryption`, `allowed_room_ids` and `children_state`.
fn space_summary(conn: &Connection, room: &str, suggested_only: bool) -> Result<Value> {
    let mut summary = serde_json::to_value(room_summary(conn, room)?)
        .map_err(|e| Error::internal(e.to_string()))?;
    if let Some(row) = state::get_room(conn, room)? {
        summary["room_version"] = json!(row.room_version);
    }
    if let Some(algorithm) = state_content(conn, room, "m.room.encryption")?.get("algorithm") {
        summary["encryption"] = algorithm.clone();
    }
    let allowed = restricted_allowed_rooms(&state_content(conn, room, "m.room.join_rules")?);
    if !allowed.is_empty() {
        summary["allowed_room_ids"] = json!(allowed);
    }
    summary["children_state"] = json!(children_state(conn, room, suggested_only)?);
    Ok(summary)
}

/// The server part of a user ID.
fn server_of(user: &str) -> Option<&str> {
    user.split_once(':').map(|(_, server)| server)
}

/// Whether this unit holds the room: it has the room's current state and one of its own users
/// is joined (a room all local users left, or one we were only invited to, is not held).
fn held(conn: &Connection, room: &str, own: &str) -> Result<bool> {
    Ok(dag::participating(conn, room)?
        && state::members_with(conn, room, "join")?
            .iter()
            .any(|user| server_of(user) == Some(own)))
}

/// Whether anyone may peek or join by a summary alone: public, knockable or world-readable.
fn open_to_all(summary: &Value) -> bool {
    matches!(
        summary["join_rule"].as_str(),
        Some("public" | "knock" | "knock_restricted")
    ) || summary["world_readable"] == true
}

/// The `allowed_room_ids` of a summary.
fn summary_allowed(summary: &Value) -> impl Iterator<Item = &str> {
    summary["allowed_room_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// Whether `user` may see a room in a hierarchy (spec, client `hierarchy`): joined or
/// invited, the room is public, knockable or world-readable, or it is restricted to a room the
/// user has joined. Works for a remote summary too: memberships are what this unit knows.
fn user_may_see(conn: &Connection, room: &str, user: &str, summary: &Value) -> Result<bool> {
    if matches!(
        state::membership(conn, room, user)?.as_deref(),
        Some("join" | "invite")
    ) || open_to_all(summary)
    {
        return Ok(true);
    }
    for allowed in summary_allowed(summary) {
        if state::membership(conn, allowed, user)?.as_deref() == Some("join") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether server `origin` has a user with one of `memberships` in `room`.
fn server_has_member(
    conn: &Connection,
    room: &str,
    origin: &str,
    memberships: &[&str],
) -> Result<bool> {
    for membership in memberships {
        if state::members_with(conn, room, membership)?
            .iter()
            .any(|user| server_of(user) == Some(origin))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether server `origin` could feasibly peek or join a room (spec, federation `hierarchy`):
/// the room is public, knockable or world-readable, the server has a joined or invited user in
/// it, or the room is restricted to a room the server has a joined user in.
fn server_may_see(conn: &Connection, room: &str, origin: &str, summary: &Value) -> Result<bool> {
    if open_to_all(summary) || server_has_member(conn, room, origin, &["join", "invite"])? {
        return Ok(true);
    }
    for allowed in summary_allowed(summary) {
        if server_has_member(conn, allowed, origin, &["join"])? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Answers a peer's `GET /_matrix/federation/v1/hierarchy/{roomId}`: the room with its
/// `children_state`, the summaries of the children this unit holds that `origin` may see, and
/// the IDs of those it may not. Children this unit does not hold are left out (spec: "Rooms
/// which the responding server cannot provide details on will be outright excluded").
/// `M_NOT_FOUND` when this unit does not hold the room or `origin` may not see it.
#[instrument(skip(server))]
pub async fn answer_peer(
    server: &Server,
    origin: String,
    room: OwnedRoomId,
    suggested_only: bool,
) -> Result<HierarchyResponse> {
    let own = server.server_name().to_string();
    server
        .store
        .read(move |conn| {
            let room = room.as_str();
            let not_found = || Error::not_found("Room does not exist.");
            if !held(conn, room, &own)? {
                return Err(not_found());
            }
            let summary = space_summary(conn, room, suggested_only)?;
            if !server_may_see(conn, room, &origin, &summary)? {
                return Err(not_found());
            }
            let mut children = Vec::new();
            let mut inaccessible = Vec::new();
            for link in child_links(&summary, suggested_only)
                .into_iter()
                .take(MAX_CHILDREN_PER_ANSWER)
            {
                if link.room_id == room || !held(conn, &link.room_id, &own)? {
                    continue;
                }
                let child = space_summary(conn, &link.room_id, suggested_only)?;
                if server_may_see(conn, &link.room_id, &origin, &child)? {
                    children.push(child);
                } else {
                    inaccessible.push(link.room_id);
                }
            }
            Ok(HierarchyResponse {
                room: summary,
                children,
                inaccessible_children: inaccessible,
            })
        })
        .await
}

/// One `m.space.child` link of a summary: the child and the servers that may know it.
struct ChildLink {
    room_id: String,
    via: Vec<String>,
}

/// The live (and, for `suggested_only`, suggested) links of a summary's `children_state`, in
/// the spec's order. Entries that are not valid room IDs are skipped: a peer's answer is not
/// trusted to be well formed.
fn child_links(summary: &Value, suggested_only: bool) -> Vec<ChildLink> {
    let mut events: Vec<&Value> = summary["children_state"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|child| {
            child["type"] == "m.space.child" && is_wanted_child(&child["content"], suggested_only)
        })
        .collect();
    events.sort_by(|a, b| compare_children(a, b));
    events
        .into_iter()
        .filter_map(|child| {
            let room_id = child["state_key"].as_str()?;
            <&ruma::RoomId>::try_from(room_id).ok()?;
            let via: Vec<String> = child["content"]["via"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            (!via.is_empty()).then(|| ChildLink {
                room_id: room_id.to_owned(),
                via,
            })
        })
        .collect()
}

/// The fields of a hierarchy room summary (spec: `RoomSummary` plus `children_state`): all a
/// peer's summary may pass on to our clients.
const SUMMARY_FIELDS: [&str; 14] = [
    "room_id",
    "name",
    "topic",
    "avatar_url",
    "canonical_alias",
    "num_joined_members",
    "world_readable",
    "guest_can_join",
    "join_rule",
    "room_type",
    "room_version",
    "encryption",
    "allowed_room_ids",
    "children_state",
];

/// A peer's summary reduced to [`SUMMARY_FIELDS`] (`Null` when it is not an object).
fn known_fields(summary: Value) -> Value {
    match summary {
        Value::Object(mut fields) => {
            fields.retain(|key, _| SUMMARY_FIELDS.contains(&key.as_str()));
            Value::Object(fields)
        }
        _ => Value::Null,
    }
}

/// Checks the shape of a peer's answer for `room`: `room` must be the room asked about, with
/// the `children_state` list the spec requires of it (an answer without one is refused, not
/// read as a room without children); children without a room ID are dropped; summaries keep
/// only the spec's fields.
fn check_answer(
    peer: &str,
    room: &str,
    body: HierarchyResponse,
) -> std::result::Result<Answer, String> {
    let summary = known_fields(body.room);
    if !summary.is_object() || summary["room_id"] != room {
        return Err("the answer does not describe the room asked for".to_owned());
    }
    if !summary["children_state"].is_array() {
        return Err("the room's summary has no children_state list".to_owned());
    }
    let children = body
        .children
        .into_iter()
        .map(known_fields)
        .filter(|child| child["room_id"].is_string())
        .take(MAX_CHILDREN_PER_ANSWER)
        .collect();
    let inaccessible = body
        .inaccessible_children
        .into_iter()
        .take(MAX_CHILDREN_PER_ANSWER)
        .collect();
    Ok(Answer {
        peer: peer.to_owned(),
        room: summary,
        children,
        inaccessible,
    })
}

/// What a client asked of `/hierarchy`, already validated.
#[derive(Debug, Clone, Copy)]
pub struct WalkParams {
    /// Rooms of the walk to pass over (from the pagination token).
    pub skip: usize,
    /// Most rooms to return.
    pub limit: usize,
    /// Deepest level to descend to (0: the root only).
    pub max_depth: usize,
    /// Follow only children marked `suggested`.
    pub suggested_only: bool,
}

/// One page of a client hierarchy.
#[derive(Debug)]
pub struct Page {
    /// The rooms, each a summary with `children_state`.
    pub rooms: Vec<Value>,
    /// Whether more rooms follow this page.
    pub more: bool,
}

/// The state of one client walk.
struct Walk<'a> {
    server: &'a Server,
    user: String,
    suggested_only: bool,
    /// Summaries of rooms other units hold, from the `children` of answers met so far.
    remote: HashMap<String, Value>,
    /// Rooms an answering peer said this unit cannot reach (spec: "should not be re-requested").
    inaccessible: HashSet<String>,
    /// Peers that failed during this walk.
    failed: HashSet<String>,
    asks: usize,
}

impl Walk<'_> {
    /// The summary of `room` if the user may see it: from this unit's state when it holds the
    /// room, else from a peer's answer. `need_children`: the walk descends below this room, so
    /// a space known only as a bare child summary is asked about in full.
    async fn visit(
        &mut self,
        room: &str,
        via: &[String],
        need_children: bool,
    ) -> Result<Option<Value>> {
        let own = self.server.server_name().to_string();
        let (r, user, suggested_only) = (room.to_owned(), self.user.clone(), self.suggested_only);
        // Local data comes first (spec: "the local data should be used instead of the remote
        // server's data").
        let local = self
            .server
            .store
            .read(move |conn| {
                if !held(conn, &r, &own)? {
                    return Ok(None);
                }
                let summary = space_summary(conn, &r, suggested_only)?;
                Ok(Some(
                    user_may_see(conn, &r, &user, &summary)?.then_some(summary),
                ))
            })
            .await?;
        if let Some(found) = local {
            return Ok(found);
        }
        let known = self.remote.get(room).filter(|summary| {
            !need_children
                || summary["children_state"].is_array()
                || summary["room_type"] != "m.space"
        });
        let mut summary = match known {
            Some(summary) => summary.clone(),
            None => match self.ask(room, via).await {
                Some(summary) => summary,
                None => return Ok(None),
            },
        };
        if !summary["children_state"].is_array() {
            summary["children_state"] = json!([]);
        }
        let (r, user) = (room.to_owned(), self.user.clone());
        self.server
            .store
            .read(move |conn| Ok(user_may_see(conn, &r, &user, &summary)?.then_some(summary)))
            .await
    }

    /// Asks the allow-listed servers of `via`, in order, about `room`, taking a cached answer
    /// first. `None` when no peer could describe it.
    async fn ask(&mut self, room: &str, via: &[String]) -> Option<Value> {
        if self.inaccessible.contains(room) {
            return None;
        }
        let cache = &self.server.hierarchy_cache;
        if let Some(answer) = cache.answer(room, self.suggested_only)
            && self.server.peers.contains(&answer.peer)
        {
            return Some(self.take(answer));
        }
        let own = self.server.server_name().as_str();
        let mut tried = HashSet::new();
        for peer in via {
            // Closed federation: only allow-listed peers are asked; any other name in `via`
            // is ignored without a connection attempt.
            if peer == own
                || !self.server.peers.contains(peer)
                || !tried.insert(peer.as_str())
                || self.failed.contains(peer)
                || cache.is_down(peer)
            {
                continue;
            }
            if self.asks >= MAX_ASKS_PER_WALK {
                debug!(room, "too many federation requests in one walk; skipping");
                return None;
            }
            self.asks += 1;
            let path = format!(
                "/_matrix/federation/v1/hierarchy/{}?suggested_only={}",
                urlencode(room),
                self.suggested_only
            );
            match self
                .server
                .federation
                .request_as(peer, Method::GET, &path, None)
                .await
            {
                Ok(body) => match check_answer(peer, room, body) {
                    Ok(answer) => {
                        cache.store(room, self.suggested_only, answer.clone());
                        return Some(self.take(answer));
                    }
                    Err(why) => warn!(peer, room, why, "unusable hierarchy answer"),
                },
                Err(err @ FedError::Unreachable { .. }) => {
                    debug!(peer, room, %err, "peer unreachable; its rooms are skipped");
                    self.failed.insert(peer.clone());
                    cache.mark_down(peer);
                }
                Err(err) => debug!(peer, room, %err, "peer cannot describe the room"),
            }
        }
        None
    }

    /// Remembers an answer's children for the next level and returns its room.
    fn take(&mut self, answer: Answer) -> Value {
        for child in answer.children {
            if let Some(id) = child["room_id"].as_str() {
                self.remote.entry(id.to_owned()).or_insert(child);
            }
        }
        self.inaccessible.extend(answer.inaccessible);
        answer.room
    }
}

/// Walks the space `root` for `user` depth first, across this unit's rooms and rooms only
/// allow-listed peers hold, and returns the page `params` asks for. Rooms the user may not
/// see, and rooms no reachable peer describes, are left out with their subtrees;
/// `M_FORBIDDEN` when that is the root itself.
#[instrument(skip(server))]
pub async fn client_hierarchy(
    server: &Server,
    user: OwnedUserId,
    root: OwnedRoomId,
    params: WalkParams,
) -> Result<Page> {
    let root = root.to_string();
    let mut walk = Walk {
        server,
        user: user.to_string(),
        suggested_only: params.suggested_only,
        remote: HashMap::new(),
        inaccessible: HashSet::new(),
        failed: HashSet::new(),
        asks: 0,
    };
    // Only a room ID of the older `!opaque:server` form names a server to ask about a root this
    // unit does not hold; it is asked only if allow-listed, like any `via`.
    let root_via: Vec<String> = server_of(&root).map(str::to_owned).into_iter().collect();
    let mut seen = HashSet::from([root.clone()]);
    let mut stack = vec![(root, root_via, 0_usize)];
    let mut rooms = Vec::new();
    let mut index = 0;
    while let Some((room, via, depth)) = stack.pop() {
        let descend = depth < params.max_depth;
        let Some(summary) = walk.visit(&room, &via, descend).await? else {
            if depth == 0 {
                return Err(Error::forbidden("You may not see this room"));
            }
            continue;
        };
        if descend {
            for link in child_links(&summary, params.suggested_only)
                .into_iter()
                .rev()
            {
                if seen.insert(link.room_id.clone()) {
                    stack.push((link.room_id, link.via, depth + 1));
                }
            }
        }
        if index >= params.skip {
            if rooms.len() == params.limit {
                return Ok(Page { rooms, more: true });
            }
            rooms.push(summary);
        }
        index += 1;
    }
    Ok(Page { rooms, more: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's own example of ordering space children ("m.space.child" ordering).
    #[test]
    fn children_sort_as_the_spec_example() {
        let child = |key: &str, ts: i64, order: Option<&str>| {
            let mut content = json!({ "via": ["example.org"] });
            if let Some(order) = order {
                content["order"] = json!(order);
            }
            json!({
                "type": "m.space.child", "state_key": key,
                "origin_server_ts": ts, "content": content,
            })
        };
        let summary = json!({ "children_state": [
            child("!b:example.org", 1640341000000, Some(" ")),
            child("!a:example.org", 1640141000000, Some("aaaa")),
            child("!c:example.org", 1640841000000, Some("first")),
            child("!e:example.org", 1640641000000, None),
            child("!d:example.org", 1640741000000, None),
            // An invalid order key (not printable ASCII) counts as none; equal timestamps
            // fall back to the room ID.
            child("!g:example.org", 1640741000000, Some("\u{7f}")),
            // Removed (no via) and malformed children are not links.
            json!({ "type": "m.space.child", "state_key": "!f:example.org",
                    "origin_server_ts": 1, "content": {} }),
            json!({ "type": "m.space.child", "state_key": "not a room",
                    "origin_server_ts": 1, "content": { "via": ["example.org"] } }),
        ] });
        let mut shuffled = summary.clone();
        if let Some(children) = shuffled["children_state"].as_array_mut() {
            children.reverse();
        }
        for summary in [summary, shuffled] {
            let order: Vec<String> = child_links(&summary, false)
                .into_iter()
                .map(|link| link.room_id)
                .collect();
            assert_eq!(
                order,
                ["!b", "!a", "!c", "!e", "!d", "!g"]
                    .map(|id| format!("{id}:example.org"))
                    .to_vec()
            );
        }
    }

    #[test]
    fn peer_answers_are_checked_and_trimmed() {
        let parse = |body: Value| serde_json::from_value::<HierarchyResponse>(body);
        let body = json!({
            "room": { "room_id": "!s:b.test", "name": "S", "evil": true, "children_state": [] },
            "children": [{ "room_id": "!c:b.test", "x": 1 }, { "name": "no id" }, 7],
            "inaccessible_children": ["!i:b.test"],
        });
        let answer = check_answer("b.test", "!s:b.test", parse(body.clone()).expect("typed"))
            .expect("a good answer");
        assert_eq!(
            answer.room,
            json!({ "room_id": "!s:b.test", "name": "S", "children_state": [] })
        );
        assert_eq!(answer.children, vec![json!({ "room_id": "!c:b.test" })]);
        assert_eq!(answer.inaccessible, vec!["!i:b.test".to_owned()]);
        assert!(
            check_answer(
                "b.test",
                "!other:b.test",
                parse(body.clone()).expect("typed")
            )
            .is_err()
        );
        // `children_state` is required of the room: without it the peer has failed.
        let mut without = body;
        without["room"]
            .as_object_mut()
            .expect("room")
            .remove("children_state");
        assert!(check_answer("b.test", "!s:b.test", parse(without).expect("typed")).is_err());
        // Malformed answers are refused whole, not read as empty lists.
        assert!(parse(json!([])).is_err());
        assert!(parse(json!({ "room": {}, "inaccessible_children": [] })).is_err());
        assert!(
            parse(json!({ "room": {}, "children": [], "inaccessible_children": [3] })).is_err()
        );
    }
}
