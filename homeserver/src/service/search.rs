//! Message search (`/search`, category `room_events`) and the user directory.
//!
//! **Message search.** Client text never reaches FTS5 as syntax: [`parse_term`] turns it into
//! quoted tokens (each a prefix query, `"…"` phrases kept as phrases), so `NEAR(`, `*`, `-`,
//! column filters or an unbalanced quote are just text and can never make the query fail.
//! Which rooms are searched, and up to which stream position, comes from
//! [`rooms::visibility`], the same rule `/messages` applies: joined rooms entirely, rooms the
//! user left up to their leave. Rooms the user forgot are not searched. Pages continue from
//! the last hit (keyset), encoded in an opaque `next_batch`; a group's `next_batch` carries the
//! same position plus the group, so it pages within that room or sender.
//!
//! **User directory.** Outpost is a closed appliance whose local accounts all belong to one
//! organisation, so every active local user is searchable by every local user (Synapse's
//! `user_directory.search_all_users = true`): finding a colleague to talk to is the point of
//! the directory, and a new user who shares no room yet could otherwise find nobody. Users of
//! other units are found only as the spec's minimum requires: when they share a room with the
//! searcher or are joined to a room with a `public` join rule or `world_readable` history.
//! Deactivated local accounts are never listed.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ruma::OwnedUserId;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rooms;
use super::{Server, Viewer};
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::filter::RoomEventFilter;
use crate::matrix::visibility::Visible;
use crate::store::events::{self, StoredEvent, TopoKey};
pub use crate::store::search::Order;
use crate::store::search::{self as store, Cursor, DirectoryEntry, EventQuery, Hit};
use crate::store::state;

/// Results per page when the filter sets no `limit`.
const DEFAULT_LIMIT: usize = 10;
/// Most results one page returns.
const MAX_LIMIT: usize = 100;
/// Most context events on each side of a result.
const MAX_CONTEXT: usize = 100;
/// Most terms of one search; later ones are ignored, so a huge body cannot become a huge
/// FTS5 query.
const MAX_TERMS: usize = 32;
/// Most users one directory search returns.
const MAX_DIRECTORY_LIMIT: usize = 100;

/// Which event keys a search looks at (spec: `keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SearchKey {
    /// `content.body` of `m.room.message`.
    Body,
    /// `content.name` of `m.room.name`.
    Name,
    /// `content.topic` (and the `m.topic` text) of `m.room.topic`.
    Topic,
}

impl SearchKey {
    /// The FTS5 column holding this key's text (see migration 0005).
    fn column(self) -> &'static str {
        match self {
            Self::Body => "body",
            Self::Name => "name",
            Self::Topic => "topic",
        }
    }
}

/// How results are grouped (spec: `groupings.group_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GroupKey {
    /// By room.
    #[serde(rename = "room_id")]
    RoomId,
    /// By sender.
    #[serde(rename = "sender")]
    Sender,
}

/// Context requested around each result (spec: `event_context`).
#[derive(Debug, Clone, Copy)]
pub struct ContextRequest {
    /// Events before each result.
    pub before: usize,
    /// Events after each result.
    pub after: usize,
    /// Whether to add the senders' profiles at the time of the result.
    pub include_profile: bool,
}

/// A `room_events` search, already validated by the handler.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// The client's search text.
    pub term: String,
    /// The keys to search (all when empty).
    pub keys: BTreeSet<SearchKey>,
    /// Rooms, senders, types and page size.
    pub filter: RoomEventFilter,
    /// Result order.
    pub order: Order,
    /// Context around each result, if requested.
    pub context: Option<ContextRequest>,
    /// Whether to return the state of each room with results.
    pub include_state: bool,
    /// Requested groupings.
    pub group_by: Vec<GroupKey>,
    /// The `next_batch` of a previous page.
    pub next_batch: Option<String>,
}

/// A sender's `(displayname, avatar_url)`.
pub type Profile = (Option<String>, Option<String>);

/// Context of one result.
#[derive(Debug, Clone)]
pub struct ResultContext {
    /// Events before the result, newest first.
    pub before: Vec<Value>,
    /// Events after the result, oldest first.
    pub after: Vec<Value>,
    /// `/messages` token of the start of `before`.
    pub start: String,
    /// `/messages` token of the end of `after`.
    pub end: String,
    /// Sender → `(displayname, avatar_url)` as of the result, when requested.
    pub profiles: Option<BTreeMap<String, Profile>>,
}

/// One result.
#[derive(Debug, Clone)]
pub struct SearchResult {
    /// Higher is more relevant.
    pub rank: f64,
    /// The event in the client format.
    pub event: Value,
    /// Its context, when requested.
    pub context: Option<ResultContext>,
}

/// One group of results.
#[derive(Debug, Clone)]
pub struct Group {
    /// 1-based position of the group's first result on this page.
    pub order: usize,
    /// The event IDs of the group's results on this page.
    pub results: Vec<String>,
    /// Continues the search within this group.
    pub next_batch: Option<String>,
}

/// A page of `room_events` results.
#[derive(Debug, Clone, Default)]
pub struct SearchResults {
    /// How many visible events match (type and URL filters not counted).
    pub count: i64,
    /// Words to highlight: the search terms and the words of these results they matched.
    pub highlights: Vec<String>,
    /// The results in order.
    pub results: Vec<SearchResult>,
    /// Room → state events, when requested.
    pub state: Option<BTreeMap<String, Vec<Value>>>,
    /// Group key → group value → group.
    pub groups: BTreeMap<GroupKey, BTreeMap<String, Group>>,
    /// Continues the search.
    pub next_batch: Option<String>,
}

/// The parsed search text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedTerm {
    /// FTS5 expression of quoted tokens, without column filter; `None` if nothing searchable.
    pub expression: Option<String>,
    /// Lower-cased words of the query, for highlighting.
    pub words: Vec<String>,
}

fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

fn words_of(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// Turns client search text into an FTS5 expression that cannot be a syntax error: words become
/// quoted prefix queries (`"mars"*`), `"…"` spans become quoted phrases, all ANDed (repeats
/// dropped, at most [`MAX_TERMS`]). Everything else (operators, brackets, `*`, `:`) is only a
/// word separator.
pub fn parse_term(term: &str) -> ParsedTerm {
    let mut parts = Vec::new();
    let mut words = Vec::new();
    for (index, chunk) in term.split('"').enumerate() {
        // Odd chunks sat between a pair of quotes (an unbalanced last quote opens a phrase
        // that runs to the end).
        let in_phrase = index % 2 == 1;
        let chunk_words: Vec<&str> = words_of(chunk).collect();
        if chunk_words.is_empty() {
            continue;
        }
        words.extend(chunk_words.iter().map(|w| w.to_lowercase()));
        if in_phrase {
            parts.push(quote(&chunk_words.join(" ")));
        } else {
            parts.extend(chunk_words.iter().map(|w| format!("{}*", quote(w))));
        }
    }
    let mut seen = BTreeSet::new();
    words.retain(|w| seen.insert(w.clone()));
    let mut seen = BTreeSet::new();
    parts.retain(|p| seen.insert(p.clone()));
    parts.truncate(MAX_TERMS);
    ParsedTerm {
        expression: (!parts.is_empty()).then(|| parts.join(" AND ")),
        words,
    }
}

/// The full MATCH expression: the parsed term restricted to the requested keys' columns.
fn match_expression(expression: &str, keys: &BTreeSet<SearchKey>) -> String {
    if keys.is_empty() {
        return expression.to_owned();
    }
    let columns: Vec<&str> = keys.iter().map(|k| k.column()).collect();
    format!("{{{}}} : ({expression})", columns.join(" "))
}

/// The continuation of a search, opaque to clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Token {
    /// `rank` or `recent`: a token only continues a search in the same order.
    o: String,
    /// bm25 score of the last hit, as its IEEE-754 bits: a decimal float does not always
    /// parse back to the same value, and the keyset comparison needs the exact one.
    s: u64,
    /// Stream position of the last hit.
    p: i64,
    /// Restricts the search to one group: key and value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    g: Option<(GroupKey, String)>,
}

fn order_name(order: Order) -> &'static str {
    match order {
        Order::Rank => "rank",
        Order::Recent => "recent",
    }
}

fn encode_token(order: Order, cursor: Cursor, group: Option<(GroupKey, String)>) -> String {
    let token = Token {
        o: order_name(order).to_owned(),
        s: cursor.score.to_bits(),
        p: cursor.stream_pos,
        g: group,
    };
    let json = serde_json::to_vec(&token).expect("a token of plain fields always serialises");
    URL_SAFE_NO_PAD.encode(json)
}

fn decode_token(raw: &str, order: Order) -> Result<(Cursor, Option<(GroupKey, String)>)> {
    let bad = || Error::invalid_param("Unknown next_batch token");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
    let token: Token = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if token.o != order_name(order) {
        return Err(Error::invalid_param(
            "next_batch belongs to a search with another order_by",
        ));
    }
    Ok((
        Cursor {
            score: f64::from_bits(token.s),
            stream_pos: token.p,
        },
        token.g,
    ))
}

/// The rooms the user may search with the stream-position ranges visible in each, after the
/// filter's room lists. Visibility is [`rooms::visibility`]'s decision; forgotten rooms are
/// left out.
fn searchable_rooms(
    conn: &Connection,
    user: &str,
    filter: &RoomEventFilter,
) -> Result<Vec<(String, Visible)>> {
    let mut out = Vec::new();
    for state::MembershipRow { room_id: room, .. } in
        state::memberships_as_of(conn, user, i64::MAX)?
    {
        let listed = filter.rooms.as_ref().is_none_or(|r| r.contains(&room));
        if !listed || filter.not_rooms.contains(&room) || state::is_forgotten(conn, user, &room)? {
            continue;
        }
        match rooms::visibility(conn, &room, user) {
            Ok(visible) => out.push((room, visible)),
            Err(Error::Matrix {
                code: ErrorCode::Forbidden,
                ..
            }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(out)
}

/// Visible events of a room next to `from` in topological order (backwards: before it, newest
/// first; forwards: from it on, oldest first), at most `limit`.
fn neighbours(
    conn: &Connection,
    room: &str,
    from: TopoKey,
    backwards: bool,
    visible: &Visible,
    limit: usize,
) -> Result<Vec<StoredEvent>> {
    const BATCH: usize = 50;
    let mut out = Vec::new();
    let mut cursor = from;
    while out.len() < limit {
        let batch = events::room_events_topo(conn, room, cursor, backwards, BATCH)?;
        let exhausted = batch.len() < BATCH;
        for event in batch {
            cursor = TopoKey {
                depth: event.pdu.depth as i64,
                stream_pos: event.stream_pos + i64::from(!backwards),
            };
            if visible.allows(event.stream_pos) && out.len() < limit {
                out.push(event);
            }
        }
        if exhausted {
            break;
        }
    }
    Ok(out)
}

fn topo_key(event: &StoredEvent) -> TopoKey {
    TopoKey {
        depth: event.pdu.depth as i64,
        stream_pos: event.stream_pos,
    }
}

fn topo_token(key: TopoKey) -> String {
    format!("t{}_{}", key.depth, key.stream_pos)
}

/// A sender's displayname and avatar from their member event in a state group.
fn profile_at(conn: &Connection, group: Option<i64>, room: &str, user: &str) -> Result<Profile> {
    let member = match group {
        Some(group) => state::state_entry_at_group(conn, group, "m.room.member", user)?,
        None => state::current_state_id(conn, room, "m.room.member", user)?,
    };
    let content = match member {
        Some(id) => events::get_event(conn, &id)?
            .map(|e| e.pdu.content_value())
            .unwrap_or_default(),
        None => Value::Null,
    };
    let field = |name: &str| content.get(name).and_then(Value::as_str).map(str::to_owned);
    Ok((field("displayname"), field("avatar_url")))
}

fn context_of(
    conn: &Connection,
    viewer: &Viewer,
    event: &StoredEvent,
    visible: &Visible,
    request: ContextRequest,
) -> Result<ResultContext> {
    let room = event.pdu.room_id.as_str();
    let key = topo_key(event);
    let before = neighbours(conn, room, key, true, visible, request.before)?;
    let after_start = TopoKey {
        depth: key.depth,
        stream_pos: key.stream_pos + 1,
    };
    let after = neighbours(conn, room, after_start, false, visible, request.after)?;
    let start = before.last().map(topo_key).unwrap_or(key);
    let end = after
        .last()
        .map(|e| TopoKey {
            depth: e.pdu.depth as i64,
            stream_pos: e.stream_pos + 1,
        })
        .unwrap_or(after_start);
    let profiles = if request.include_profile {
        let mut senders: BTreeSet<&str> = BTreeSet::from([event.pdu.sender.as_str()]);
        senders.extend(before.iter().chain(&after).map(|e| e.pdu.sender.as_str()));
        let mut profiles = BTreeMap::new();
        for sender in senders {
            let profile = profile_at(conn, event.state_group, room, sender)?;
            profiles.insert(sender.to_owned(), profile);
        }
        Some(profiles)
    } else {
        None
    };
    let format = |list: &[StoredEvent]| -> Result<Vec<Value>> {
        list.iter()
            .map(|e| rooms::client_event(conn, e, Some(viewer.pair())))
            .collect()
    };
    Ok(ResultContext {
        before: format(&before)?,
        after: format(&after)?,
        start: topo_token(start),
        end: topo_token(end),
        profiles,
    })
}

/// The state a searcher may see of a room: current state if joined, else the state right
/// after the last event they could see.
fn visible_state(conn: &Connection, viewer: &Viewer, room: &str, upto: i64) -> Result<Vec<Value>> {
    let map = if upto == i64::MAX {
        state::current_state(conn, room)?
    } else {
        match state::state_group_before(conn, room, upto.saturating_add(1))? {
            Some(group) => state::state_at_group(conn, group)?,
            None => state::StateMap::new(),
        }
    };
    rooms::load_state_events(conn, &map, |_, _| true)?
        .iter()
        .map(|e| rooms::client_event(conn, e, Some(viewer.pair())))
        .collect()
}

/// Adds to `out` the words of `text` that start with one of the query's words.
fn matched_words(text: &str, query_words: &[String], out: &mut BTreeSet<String>) {
    for word in words_of(text) {
        let lower = word.to_lowercase();
        if query_words.iter().any(|q| lower.starts_with(q.as_str())) {
            out.insert(lower);
        }
    }
}

fn searchable_text(event: &Value) -> Vec<&str> {
    let content = &event["content"];
    ["body", "name", "topic"]
        .iter()
        .filter_map(|k| content.get(*k).and_then(Value::as_str))
        .collect()
}

/// Runs one page of a `room_events` search for `viewer`.
#[tracing::instrument(skip(server, request), fields(user = %viewer.user_id))]
pub async fn search_events(
    server: &Server,
    viewer: Viewer,
    request: SearchRequest,
) -> Result<SearchResults> {
    let parsed = parse_term(&request.term);
    let continuation = request
        .next_batch
        .as_deref()
        .map(|raw| decode_token(raw, request.order))
        .transpose()?;
    let Some(expression) = parsed.expression.clone() else {
        return Ok(SearchResults {
            highlights: parsed.words,
            ..SearchResults::default()
        });
    };
    let fts = match_expression(&expression, &request.keys);
    let mut request = request;
    request.context = request.context.map(|c| ContextRequest {
        before: c.before.min(MAX_CONTEXT),
        after: c.after.min(MAX_CONTEXT),
        include_profile: c.include_profile,
    });
    server
        .store
        .read(move |conn| run_search(conn, &viewer, &request, fts, parsed, continuation))
        .await
}

fn run_search(
    conn: &Connection,
    viewer: &Viewer,
    request: &SearchRequest,
    fts: String,
    parsed: ParsedTerm,
    continuation: Option<(Cursor, Option<(GroupKey, String)>)>,
) -> Result<SearchResults> {
    let (mut cursor, group) = match continuation {
        Some((cursor, group)) => (Some(cursor), group),
        None => (None, None),
    };
    let mut rooms = searchable_rooms(conn, viewer.user_id.as_str(), &request.filter)?;
    let nothing = Visible::nothing();
    let mut senders = request.filter.senders.clone();
    match &group {
        Some((GroupKey::RoomId, room)) => rooms.retain(|(r, _)| r == room),
        Some((GroupKey::Sender, sender)) => {
            if senders.as_ref().is_none_or(|s| s.contains(sender)) {
                senders = Some(vec![sender.clone()]);
            } else {
                senders = Some(Vec::new());
            }
        }
        None => {}
    }
    let query = EventQuery {
        fts,
        rooms: rooms
            .iter()
            .map(|(room, visible)| (room.clone(), visible.ranges().to_vec()))
            .collect(),
        senders,
        not_senders: request.filter.not_senders.clone(),
    };
    let limit = request
        .filter
        .limit
        .map_or(DEFAULT_LIMIT, |l| l as usize)
        .clamp(1, MAX_LIMIT);
    let batch = (limit + 1).max(50);
    let mut page: Vec<(Hit, StoredEvent)> = Vec::new();
    let mut more = false;
    'pages: loop {
        let hits = store::search_events(conn, &query, request.order, cursor, batch)?;
        let exhausted = hits.len() < batch;
        for hit in hits {
            cursor = Some(Cursor {
                score: hit.score,
                stream_pos: hit.stream_pos,
            });
            let Some(event) = events::get_event(conn, &hit.event_id)? else {
                continue;
            };
            if !request.filter.allows(&event.pdu) {
                continue;
            }
            if page.len() == limit {
                more = true;
                break 'pages;
            }
            page.push((hit, event));
        }
        if exhausted {
            break;
        }
    }
    let count = store::count_events(conn, &query)?;
    let last = page.last().map(|(hit, _)| Cursor {
        score: hit.score,
        stream_pos: hit.stream_pos,
    });
    let next = |group: Option<(GroupKey, String)>| -> Option<String> {
        match (more, last) {
            (true, Some(last)) => Some(encode_token(request.order, last, group)),
            _ => None,
        }
    };
    let mut out = SearchResults {
        count,
        next_batch: next(group.clone()),
        ..SearchResults::default()
    };
    let mut highlights: BTreeSet<String> = parsed.words.iter().cloned().collect();
    let mut rooms_seen: Vec<String> = Vec::new();
    // The results with their bundled aggregations, in one batch.
    let page_events: Vec<StoredEvent> = page.iter().map(|(_, e)| e.clone()).collect();
    let page_formatted =
        super::aggregations::format_events(conn, &page_events, Some(viewer.pair()))?;
    for ((hit, event), formatted) in page.iter().zip(page_formatted) {
        let room = event.pdu.room_id.to_string();
        let room_visible = rooms
            .iter()
            .find(|(r, _)| *r == room)
            .map_or(&nothing, |(_, v)| v);
        for text in searchable_text(&formatted) {
            matched_words(text, &parsed.words, &mut highlights);
        }
        let context = request
            .context
            .map(|c| context_of(conn, viewer, event, room_visible, c))
            .transpose()?;
        for key in &request.group_by {
            let value = match key {
                GroupKey::RoomId => room.clone(),
                GroupKey::Sender => event.pdu.sender.to_string(),
            };
            let groups = out.groups.entry(*key).or_default();
            let order = groups.len() + 1;
            let entry = groups.entry(value.clone()).or_insert_with(|| Group {
                order,
                results: Vec::new(),
                next_batch: next(Some((*key, value))),
            });
            entry.results.push(event.pdu.event_id.to_string());
        }
        if !rooms_seen.contains(&room) {
            rooms_seen.push(room);
        }
        out.results.push(SearchResult {
            rank: -hit.score,
            event: formatted,
            context,
        });
    }
    if request.include_state {
        let mut states = BTreeMap::new();
        for room in rooms_seen {
            // The state after the last event they may see: today's while that is the newest.
            let room_upto = rooms
                .iter()
                .find(|(r, _)| *r == room)
                .and_then(|(_, v)| v.last_at_or_before(i64::MAX))
                .unwrap_or(i64::MIN);
            states.insert(room.clone(), visible_state(conn, viewer, &room, room_upto)?);
        }
        out.state = Some(states);
    }
    out.highlights = highlights.into_iter().collect();
    Ok(out)
}

/// A page of the user directory.
#[derive(Debug, Clone)]
pub struct DirectoryResults {
    /// Matching users, best first.
    pub results: Vec<DirectoryEntry>,
    /// Whether more users matched than `limit`.
    pub limited: bool,
}

/// How well an entry matches a lower-cased term: 0 exact, 1 a word starts with it,
/// 2 contained anywhere, `None` no match.
fn match_rank(entry: &DirectoryEntry, term: &str) -> Option<u8> {
    let id = entry.user_id.to_lowercase();
    let localpart = id
        .strip_prefix('@')
        .and_then(|rest| rest.split(':').next())
        .unwrap_or(&id)
        .to_owned();
    let name = entry
        .displayname
        .as_deref()
        .unwrap_or_default()
        .to_lowercase();
    if term.is_empty() {
        return Some(2);
    }
    if localpart == term || name == term || id == term {
        return Some(0);
    }
    let word_start = localpart.starts_with(term)
        || words_of(&name).any(|w| w.starts_with(term))
        || name.starts_with(term);
    if word_start {
        return Some(1);
    }
    (id.contains(term) || name.contains(term)).then_some(2)
}

/// Searches the user directory for `requester` (see the module docs for who is listed).
#[tracing::instrument(skip(server))]
pub async fn search_users(
    server: &Server,
    requester: OwnedUserId,
    term: String,
    limit: Option<usize>,
) -> Result<DirectoryResults> {
    let limit = limit.unwrap_or(10).clamp(1, MAX_DIRECTORY_LIMIT);
    let local_suffix = format!(":{}", server.server_name());
    let term = term.trim().to_lowercase();
    server
        .store
        .read(move |conn| {
            let mut candidates: BTreeMap<String, DirectoryEntry> = store::local_users(conn)?
                .into_iter()
                .map(|e| (e.user_id.clone(), e))
                .collect();
            for member in store::visible_room_members(conn, requester.as_str())? {
                // Local users' global profiles are authoritative; a local user missing from
                // `users` does not exist (or never did).
                if member.user_id.ends_with(&local_suffix) {
                    continue;
                }
                let entry =
                    candidates
                        .entry(member.user_id.clone())
                        .or_insert_with(|| DirectoryEntry {
                            user_id: member.user_id.clone(),
                            displayname: None,
                            avatar_url: None,
                        });
                if entry.displayname.is_none() {
                    entry.displayname = member.displayname;
                }
                if entry.avatar_url.is_none() {
                    entry.avatar_url = member.avatar_url;
                }
            }
            let mut ranked: Vec<(u8, bool, DirectoryEntry)> = candidates
                .into_values()
                .filter_map(|e| match_rank(&e, &term).map(|r| (r, e.displayname.is_none(), e)))
                .collect();
            ranked.sort_by(|a, b| (a.0, a.1, &a.2.user_id).cmp(&(b.0, b.1, &b.2.user_id)));
            let limited = ranked.len() > limit;
            Ok(DirectoryResults {
                results: ranked.into_iter().take(limit).map(|(_, _, e)| e).collect(),
                limited,
            })
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(term: &str) -> Option<String> {
        parse_term(term).expression
    }

    #[test]
    fn search_text_becomes_quoted_tokens_only() {
        assert_eq!(
            expr("martians and men"),
            Some("\"martians\"* AND \"and\"* AND \"men\"*".to_owned())
        );
        assert_eq!(
            expr("say \"hello world\" now"),
            Some("\"say\"* AND \"hello world\" AND \"now\"*".to_owned())
        );
        assert_eq!(
            expr("NEAR(a b"),
            Some("\"NEAR\"* AND \"a\"* AND \"b\"*".to_owned())
        );
        assert_eq!(
            expr("unbalanced \"quote here"),
            Some("\"unbalanced\"* AND \"quote here\"".to_owned())
        );
        assert_eq!(
            expr("body:secret"),
            Some("\"body\"* AND \"secret\"*".to_owned())
        );
        assert_eq!(expr("* ) ( \" - ^"), None);
        assert_eq!(expr(""), None);
        assert_eq!(parse_term("Café CAFÉ").words, vec!["café".to_owned()]);
    }

    #[test]
    fn keys_restrict_columns() {
        let keys = BTreeSet::from([SearchKey::Body, SearchKey::Topic]);
        assert_eq!(match_expression("\"a\"*", &keys), "{body topic} : (\"a\"*)");
        assert_eq!(match_expression("\"a\"*", &BTreeSet::new()), "\"a\"*");
    }

    #[test]
    fn tokens_round_trip_and_belong_to_one_order() {
        let cursor = Cursor {
            score: -1.234_567_890_123e-6,
            stream_pos: -42,
        };
        let group = Some((GroupKey::RoomId, "!room:x".to_owned()));
        let token = encode_token(Order::Rank, cursor, group.clone());
        assert_eq!(
            decode_token(&token, Order::Rank).expect("decodes"),
            (cursor, group)
        );
        assert!(decode_token(&token, Order::Recent).is_err());
        assert!(decode_token("not a token", Order::Rank).is_err());
    }

    #[test]
    fn directory_ranks_exact_then_prefix_then_substring() {
        let entry = |id: &str, name: Option<&str>| DirectoryEntry {
            user_id: id.to_owned(),
            displayname: name.map(str::to_owned),
            avatar_url: None,
        };
        assert_eq!(match_rank(&entry("@bob:x", None), "bob"), Some(0));
        assert_eq!(
            match_rank(&entry("@robert:x", Some("Bob Smith")), "smi"),
            Some(1)
        );
        assert_eq!(match_rank(&entry("@jacob:x", None), "cob"), Some(2));
        assert_eq!(match_rank(&entry("@jacob:x", None), "zed"), None);
    }
}
