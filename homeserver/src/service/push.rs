//! Push rules: the default rule set, per-user overrides, evaluation on every event, notification
//! counts and pushers.
//!
//! The rule set, its editing (`before`/`after`, enable, actions) and the evaluation of
//! conditions are ruma's (`ruma::push::Ruleset`); this module stores a user's set, evaluates
//! each stored event once for the members on the default rules and once per member with rules
//! of their own or named by the event ([`notify_in_tx`], called from `service::persist`, the
//! step every local send and received PDU goes through, inside the event's transaction), and
//! answers unread counts for `/sync`. Pushers and delivery to push gateways live in
//! [`pushers`]; the `/notifications` listing in `service::notifications`.
//!
//! Evaluation runs on the writer thread only, for every event, so parsed
//! rule sets are cached there (`RULES`); each use checks the cached set against the stream
//! position of the user's last change, so nothing has to invalidate it.

pub mod pushers;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use ruma::power_levels::NotificationPowerLevels;
use ruma::push::{
    Action, AnyPushRuleRef, ConditionalPushRule, FlattenedJson, InsertPushRuleError,
    NewConditionalPushRule, NewPatternedPushRule, NewPushRule, NewSimplePushRule,
    PatternedPushRule, PushCondition, PushConditionPowerLevelsCtx, PushConditionRoomCtx,
    RemovePushRuleError, RuleKind, Ruleset, SimplePushRule,
};
use ruma::room_version_rules::{AuthorizationRules, RoomPowerLevelsRules};
use ruma::serde::Raw;
use ruma::{Int, OwnedRoomId, OwnedUserId, UInt, UserId};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Server;
use crate::error::{Error, ErrorCode, Result};
use crate::matrix::pdu::Pdu;
use crate::store::push::{self as store, Member, RuleRow, UnreadCounts};
use crate::store::wake::Audience;
use crate::store::{WriteTx, events, state};
use crate::util::now_ms;

/// The rule kinds in the order the spec evaluates them, as they appear on the wire.
const KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

/// Most parsed rule sets the writer keeps; when full it starts over.
const RULES_CACHE_SIZE: usize = 4096;

/// Parses the `{kind}` path segment.
pub fn parse_kind(kind: &str) -> Result<RuleKind> {
    match kind {
        "override" => Ok(RuleKind::Override),
        "content" => Ok(RuleKind::Content),
        "room" => Ok(RuleKind::Room),
        "sender" => Ok(RuleKind::Sender),
        "underride" => Ok(RuleKind::Underride),
        other => Err(Error::invalid_param(format!(
            "Unknown push rule kind {other:?}"
        ))),
    }
}

fn not_found() -> Error {
    Error::not_found("The push rule was not found.")
}

/// Builds a rule set from stored rows, merging in server-default rules this release has and
/// the stored set lacks (and dropping default rules it no longer has).
fn ruleset_from_rows(user_id: &UserId, rows: &[RuleRow]) -> Result<Ruleset> {
    let mut by_kind = Map::new();
    for row in rows {
        let mut rule = json!({
            "rule_id": row.rule_id,
            "default": row.is_default,
            "enabled": row.enabled,
            "actions": parse_stored(&row.actions)?,
        });
        if let Some(conditions) = &row.conditions {
            rule["conditions"] = parse_stored(conditions)?;
        }
        if let Some(pattern) = &row.pattern {
            rule["pattern"] = json!(pattern);
        }
        by_kind
            .entry(row.kind.clone())
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("kind entries are arrays")
            .push(rule);
    }
    let mut ruleset: Ruleset = serde_json::from_value(Value::Object(by_kind))
        .map_err(|err| Error::internal(format!("stored push rules of {user_id}: {err}")))?;
    ruleset.update_with_server_default(Ruleset::server_default(user_id));
    Ok(ruleset)
}

fn parse_stored(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|err| Error::internal(format!("stored push rule: {err}")))
}

/// The actions of a stored notification (or rule), parsed.
pub(crate) fn parse_stored_actions(text: &str) -> Result<Vec<Action>> {
    serde_json::from_str(text).map_err(|err| Error::internal(format!("stored push actions: {err}")))
}

/// The rows that store a rule set, grouped by kind in evaluation order.
fn rows_from_ruleset(ruleset: &Ruleset) -> Result<Vec<RuleRow>> {
    let value = serde_json::to_value(ruleset).map_err(|err| Error::internal(err.to_string()))?;
    let mut rows = Vec::new();
    for kind in KINDS {
        for rule in value
            .get(kind)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let text = |key: &str| rule.get(key).map(Value::to_string);
            rows.push(RuleRow {
                kind: kind.to_owned(),
                rule_id: rule["rule_id"].as_str().unwrap_or_default().to_owned(),
                is_default: rule["default"].as_bool().unwrap_or(false),
                enabled: rule["enabled"].as_bool().unwrap_or(true),
                actions: text("actions").unwrap_or_else(|| "[]".to_owned()),
                conditions: text("conditions"),
                pattern: rule
                    .get("pattern")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            });
        }
    }
    Ok(rows)
}

/// A user's rule set: their stored one, or the server defaults.
pub fn ruleset(conn: &Connection, user_id: &UserId) -> Result<Ruleset> {
    match store::rules(conn, user_id.as_str())? {
        Some(rows) => ruleset_from_rows(user_id, &rows),
        None => Ok(Ruleset::server_default(user_id)),
    }
}

/// A rule set as the client API shows it (spec: `Ruleset`): every kind present, empty ones as
/// `[]`, rules in priority order.
#[derive(Debug, Serialize)]
pub struct ClientRuleset {
    /// The highest-priority rules.
    #[serde(rename = "override")]
    pub override_: Vec<ConditionalPushRule>,
    /// Rules matching message bodies.
    pub content: Vec<PatternedPushRule>,
    /// Rules for one room each.
    pub room: Vec<SimplePushRule<OwnedRoomId>>,
    /// Rules for one sender each.
    pub sender: Vec<SimplePushRule<OwnedUserId>>,
    /// The lowest-priority rules.
    pub underride: Vec<ConditionalPushRule>,
}

impl From<&Ruleset> for ClientRuleset {
    fn from(rules: &Ruleset) -> Self {
        Self {
            override_: rules.override_.iter().cloned().collect(),
            content: rules.content.iter().cloned().collect(),
            room: rules.room.iter().cloned().collect(),
            sender: rules.sender.iter().cloned().collect(),
            underride: rules.underride.iter().cloned().collect(),
        }
    }
}

/// The rules of one kind (`GET /pushrules/global/{kind}/`), in priority order.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RulesOfKind {
    /// `override` or `underride` rules.
    Conditional(Vec<ConditionalPushRule>),
    /// `content` rules.
    Patterned(Vec<PatternedPushRule>),
    /// `room` rules.
    Room(Vec<SimplePushRule<OwnedRoomId>>),
    /// `sender` rules.
    Sender(Vec<SimplePushRule<OwnedUserId>>),
}

impl ClientRuleset {
    /// The rules of `kind` (one of [`parse_kind`]'s; another kind has none).
    pub fn of_kind(self, kind: RuleKind) -> RulesOfKind {
        match kind {
            RuleKind::Override => RulesOfKind::Conditional(self.override_),
            RuleKind::Underride => RulesOfKind::Conditional(self.underride),
            RuleKind::Content => RulesOfKind::Patterned(self.content),
            RuleKind::Room => RulesOfKind::Room(self.room),
            RuleKind::Sender => RulesOfKind::Sender(self.sender),
            _ => RulesOfKind::Conditional(Vec::new()),
        }
    }
}

/// One rule as the client API shows it (spec: `PushRule`).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ClientRule {
    /// An `override` or `underride` rule.
    Conditional(ConditionalPushRule),
    /// A `content` rule.
    Patterned(PatternedPushRule),
    /// A `room` rule.
    Room(SimplePushRule<OwnedRoomId>),
    /// A `sender` rule.
    Sender(SimplePushRule<OwnedUserId>),
}

impl ClientRule {
    /// Whether the rule is enabled.
    pub fn enabled(&self) -> bool {
        match self {
            Self::Conditional(r) => r.enabled,
            Self::Patterned(r) => r.enabled,
            Self::Room(r) => r.enabled,
            Self::Sender(r) => r.enabled,
        }
    }

    /// The rule's actions.
    pub fn actions(self) -> Vec<Action> {
        match self {
            Self::Conditional(r) => r.actions,
            Self::Patterned(r) => r.actions,
            Self::Room(r) => r.actions,
            Self::Sender(r) => r.actions,
        }
    }
}

/// A rule set as the `m.push_rules` account data content holds it ([`ClientRuleset`]).
pub fn ruleset_json(ruleset: &Ruleset) -> Result<Value> {
    serde_json::to_value(ClientRuleset::from(ruleset))
        .map_err(|err| Error::internal(err.to_string()))
}

/// The `m.push_rules` account data event for `/sync`: always in an initial sync, and in an
/// incremental one when the user's rules changed in `(since, upto]`.
pub fn rules_account_data(
    conn: &Connection,
    user: &UserId,
    since: Option<i64>,
    upto: i64,
) -> Result<Option<Value>> {
    if let Some(since) = since {
        match store::rules_pos(conn, user.as_str())? {
            Some(pos) if pos > since && pos <= upto => {}
            _ => return Ok(None),
        }
    }
    let rules = ruleset_json(&ruleset(conn, user)?)?;
    Ok(Some(
        json!({"type": "m.push_rules", "content": {"global": rules}}),
    ))
}

/// The unread counts of a room for `/sync`: notifications after the
/// user's read receipt (the newer of `m.read` and `m.read.private`) or their own last event.
pub fn unread_counts(conn: &Connection, room_id: &str, user: &UserId) -> Result<UnreadCounts> {
    store::unread_counts(conn, user.as_str(), room_id)
}

// Rule CRUD.

/// Applies one edit to a user's rules: loads the set, lets ruma edit it, and stores the whole
/// set at a new stream position (so `/sync` sends `m.push_rules` again).
async fn modify<T: Send + 'static>(
    server: &Server,
    user_id: OwnedUserId,
    edit: impl FnOnce(&mut Ruleset) -> Result<T> + Send + 'static,
) -> Result<T> {
    server
        .store
        .write(move |tx| {
            let mut rules = ruleset(tx, &user_id)?;
            let answer = edit(&mut rules)?;
            let pos = tx.next_stream_pos(Audience::User(user_id.as_str()));
            store::replace_rules(tx, user_id.as_str(), &rows_from_ruleset(&rules)?, pos)?;
            // The push rule tables are not among those the writer scans for the newest
            // position at start-up: record it so positions never go backwards.
            events::record_stream_pos(tx, pos)?;
            Ok(answer)
        })
        .await
}

/// The user's whole rule set (`GET /pushrules/global/`).
pub async fn get_rules(server: &Server, user_id: OwnedUserId) -> Result<ClientRuleset> {
    server
        .store
        .read(move |conn| Ok(ClientRuleset::from(&ruleset(conn, &user_id)?)))
        .await
}

/// One rule as the client API shows it.
pub async fn get_rule(
    server: &Server,
    user_id: OwnedUserId,
    kind: RuleKind,
    rule_id: String,
) -> Result<ClientRule> {
    server
        .store
        .read(move |conn| {
            let rules = ruleset(conn, &user_id)?;
            let rule = rules.get(kind, &rule_id).ok_or_else(not_found)?;
            client_rule(rule)
        })
        .await
}

fn client_rule(rule: AnyPushRuleRef<'_>) -> Result<ClientRule> {
    Ok(match rule {
        AnyPushRuleRef::Override(r) | AnyPushRuleRef::Underride(r) => {
            ClientRule::Conditional(r.clone())
        }
        AnyPushRuleRef::Content(r) => ClientRule::Patterned(r.clone()),
        AnyPushRuleRef::Room(r) => ClientRule::Room(r.clone()),
        AnyPushRuleRef::Sender(r) => ClientRule::Sender(r.clone()),
        _ => return Err(not_found()),
    })
}

/// The body of `PUT /pushrules/global/{kind}/{ruleId}`.
#[derive(Debug, Deserialize)]
pub struct RuleBody {
    actions: Vec<Action>,
    #[serde(default)]
    conditions: Vec<PushCondition>,
    pattern: Option<String>,
}

/// Parses a rule body; wrong shapes are `M_BAD_JSON`.
pub fn parse_rule_body(body: Value) -> Result<RuleBody> {
    serde_json::from_value(body).map_err(|err| Error::bad_json(format!("Invalid push rule: {err}")))
}

/// Parses an `actions` array; wrong shapes are `M_BAD_JSON`.
pub fn parse_actions(body: &Value) -> Result<Vec<Action>> {
    let actions = body
        .get("actions")
        .ok_or_else(|| Error::bad_json("Missing 'actions'"))?;
    serde_json::from_value(actions.clone())
        .map(strip_historical)
        .map_err(|err| Error::bad_json(format!("Invalid actions: {err}")))
}

/// Drops `dont_notify` and `coalesce`, which the spec says to ignore.
fn strip_historical(actions: Vec<Action>) -> Vec<Action> {
    actions
        .into_iter()
        .filter(|action| {
            !matches!(
                serde_json::to_value(action)
                    .ok()
                    .as_ref()
                    .and_then(Value::as_str),
                Some("dont_notify" | "coalesce")
            )
        })
        .collect()
}

fn new_rule(kind: &RuleKind, rule_id: String, body: RuleBody) -> Result<NewPushRule> {
    let actions = strip_historical(body.actions);
    Ok(match kind {
        RuleKind::Override => NewPushRule::Override(NewConditionalPushRule::new(
            rule_id,
            body.conditions,
            actions,
        )),
        RuleKind::Underride => NewPushRule::Underride(NewConditionalPushRule::new(
            rule_id,
            body.conditions,
            actions,
        )),
        RuleKind::Content => {
            let pattern = body
                .pattern
                .ok_or_else(|| Error::bad_json("A content rule needs a 'pattern'"))?;
            NewPushRule::Content(NewPatternedPushRule::new(rule_id, pattern, actions))
        }
        RuleKind::Room => {
            let room = OwnedRoomId::try_from(rule_id.as_str()).map_err(|_| {
                Error::invalid_param("The rule ID of a room rule must be a room ID")
            })?;
            NewPushRule::Room(NewSimplePushRule::new(room, actions))
        }
        RuleKind::Sender => {
            let user = OwnedUserId::try_from(rule_id.as_str()).map_err(|_| {
                Error::invalid_param("The rule ID of a sender rule must be a user ID")
            })?;
            NewPushRule::Sender(NewSimplePushRule::new(user, actions))
        }
        _ => return Err(Error::invalid_param("Unknown push rule kind")),
    })
}

fn map_insert_error(err: InsertPushRuleError, before: Option<&str>, after: Option<&str>) -> Error {
    match err {
        InsertPushRuleError::UnknownRuleId => Error::invalid_param(format!(
            "before/after rule not found: {}",
            before.or(after).unwrap_or_default()
        )),
        other => Error::invalid_param(other.to_string()),
    }
}

/// Creates or replaces a user-defined rule, placed by `before`/`after` (spec: "Add or change a
/// push rule").
pub async fn put_rule(
    server: &Server,
    user_id: OwnedUserId,
    kind: RuleKind,
    rule_id: String,
    body: RuleBody,
    before: Option<String>,
    after: Option<String>,
) -> Result<()> {
    let rule = new_rule(&kind, rule_id.clone(), body)?;
    modify(server, user_id, move |rules| {
        let (before, after) = (before.as_deref(), after.as_deref());
        // ruma moves an existing rule relative to indices taken while it is still in place,
        // which lands one slot off when it moves down: take it out first, then place it anew.
        let kept_enabled = match rules.get(kind.clone(), &rule_id) {
            Some(existing)
                if (before.is_some() || after.is_some()) && !rule_id.starts_with('.') =>
            {
                let enabled = existing.enabled();
                rules
                    .remove(kind.clone(), &rule_id)
                    .map_err(|_| not_found())?;
                Some(enabled)
            }
            _ => None,
        };
        rules
            .insert(rule, after, before)
            .map_err(|err| map_insert_error(err, before, after))?;
        if let Some(enabled) = kept_enabled {
            rules
                .set_enabled(kind, &rule_id, enabled)
                .map_err(|_| not_found())?;
        }
        Ok(())
    })
    .await
}

/// Deletes a user-defined rule; server-default rules cannot be deleted (`M_NOT_FOUND`, as the
/// spec lists no other error for this endpoint).
pub async fn delete_rule(
    server: &Server,
    user_id: OwnedUserId,
    kind: RuleKind,
    rule_id: String,
) -> Result<()> {
    modify(server, user_id, move |rules| {
        rules.remove(kind, &rule_id).map_err(|err| match err {
            RemovePushRuleError::ServerDefault => Error::not_found(
                "Server-default push rules cannot be deleted; disable them instead.",
            ),
            _ => not_found(),
        })
    })
    .await
}

/// Enables or disables a rule (server-default ones included).
pub async fn set_enabled(
    server: &Server,
    user_id: OwnedUserId,
    kind: RuleKind,
    rule_id: String,
    enabled: bool,
) -> Result<()> {
    modify(server, user_id, move |rules| {
        rules
            .set_enabled(kind, &rule_id, enabled)
            .map_err(|_| not_found())
    })
    .await
}

/// Replaces a rule's actions (server-default ones included).
pub async fn set_actions(
    server: &Server,
    user_id: OwnedUserId,
    kind: RuleKind,
    rule_id: String,
    actions: Vec<Action>,
) -> Result<()> {
    modify(server, user_id, move |rules| {
        rules
            .set_actions(kind, &rule_id, actions)
            .map_err(|_| not_found())
    })
    .await
}

// Evaluation.

/// A user's parsed rules as the evaluator caches them.
struct CachedRules {
    /// Stream position of the user's last change (`None`: server defaults).
    pos: Option<i64>,
    rules: Ruleset,
    /// Some rule tests `contains_display_name`, so the member's display name is needed.
    needs_display_name: bool,
    /// A user-defined rule tests `sender_notification_permission`. (The only default rule
    /// that does, `.m.rule.is_room_mention`, first requires `m.mentions.room`, and default
    /// rules' conditions cannot be edited.)
    custom_needs_power: bool,
    /// A user-defined rule tests `room_member_count` (the default rules only ask whether it is
    /// 2, so for them the count of a big room need not be read in full).
    custom_needs_count: bool,
}

impl CachedRules {
    fn new(pos: Option<i64>, rules: Ruleset) -> Self {
        let conditions = |rule: AnyPushRuleRef<'_>| -> Vec<PushCondition> {
            match rule {
                AnyPushRuleRef::Override(r) | AnyPushRuleRef::Underride(r) => r.conditions.clone(),
                _ => Vec::new(),
            }
        };
        let mut needs_display_name = false;
        let mut custom_needs_power = false;
        let mut custom_needs_count = false;
        for rule in &rules {
            for condition in conditions(rule) {
                #[allow(deprecated)]
                if matches!(condition, PushCondition::ContainsDisplayName) {
                    needs_display_name = true;
                }
                if matches!(condition, PushCondition::SenderNotificationPermission(_))
                    && !rule.is_server_default()
                {
                    custom_needs_power = true;
                }
                if matches!(condition, PushCondition::RoomMemberCount(_))
                    && !rule.is_server_default()
                {
                    custom_needs_count = true;
                }
            }
        }
        Self {
            pos,
            rules,
            needs_display_name,
            custom_needs_power,
            custom_needs_count,
        }
    }
}

thread_local! {
    /// Parsed rule sets by user, on the writer thread (the only thread that evaluates). Each
    /// store has its own writer thread, so this is a per-database cache without a lock.
    static RULES: RefCell<HashMap<String, Rc<CachedRules>>> = RefCell::new(HashMap::new());
}

/// The member's rules, from the cache when its entry matches their last change.
fn rules_for(conn: &Connection, member: &Member) -> Result<Rc<CachedRules>> {
    let hit = RULES.with(|cache| {
        cache
            .borrow()
            .get(&member.user_id)
            .filter(|cached| cached.pos == member.rules_pos)
            .cloned()
    });
    if let Some(hit) = hit {
        return Ok(hit);
    }
    let user = OwnedUserId::try_from(member.user_id.as_str())
        .map_err(|e| Error::internal(e.to_string()))?;
    let loaded = Rc::new(CachedRules::new(member.rules_pos, ruleset(conn, &user)?));
    RULES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() >= RULES_CACHE_SIZE {
            cache.clear();
        }
        cache.insert(member.user_id.clone(), Rc::clone(&loaded));
    });
    Ok(loaded)
}

/// Runs a future that cannot wait to completion. ruma's rule evaluation is `async` only for a
/// condition behind a feature we do not enable (MSC4306 thread subscriptions); everything we
/// evaluate is ready on first poll, and a future that is not counts as "no match".
fn ready<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => Some(value),
        Poll::Pending => None,
    }
}

/// The actions of the first rule that matches, or none.
fn actions_for<'a>(
    rules: &'a Ruleset,
    event: &FlattenedJson,
    ctx: &PushConditionRoomCtx,
) -> &'a [Action] {
    for rule in rules {
        if ready(rule.applies(event, ctx)).unwrap_or(false) {
            return rule.actions();
        }
    }
    &[]
}

/// The sender's power against the room's `notifications` levels, for
/// `sender_notification_permission`.
fn power_ctx(
    tx: &WriteTx<'_>,
    room_id: &str,
    sender: &UserId,
) -> Result<PushConditionPowerLevelsCtx> {
    let level = state::power_levels(tx, room_id)?.user_level(sender.as_str());
    let level = Int::new_saturating(level);
    let mut notifications = NotificationPowerLevels::new();
    if let Some(id) = state::current_state_id(tx, room_id, "m.room.power_levels", "")?
        && let Some(pdu) = tx.pdu(&id)?
        && let Some(room) = pdu
            .content_value()
            .pointer("/notifications/room")
            .and_then(|v| {
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
    {
        notifications.room = Int::new_saturating(room);
    }
    // The sender's level is already resolved (room v12 creators included), so no creator
    // rule is needed here.
    Ok(PushConditionPowerLevelsCtx::new(
        BTreeMap::from([(sender.to_owned(), level)]),
        level,
        notifications,
        RoomPowerLevelsRules::new(&AuthorizationRules::V1, std::iter::empty()),
    ))
}

/// The member's display name in the room (their user ID when they have none, so an empty
/// name never matches every message).
fn display_name(tx: &WriteTx<'_>, room_id: &str, user_id: &str) -> Result<String> {
    if let Some(id) = state::current_state_id(tx, room_id, "m.room.member", user_id)?
        && let Some(pdu) = tx.pdu(&id)?
        && let Some(name) = pdu
            .content_value()
            .get("displayname")
            .and_then(Value::as_str)
            .filter(|name| !name.is_empty())
    {
        return Ok(name.to_owned());
    }
    Ok(user_id.to_owned())
}

/// The event as rules see it: the fields of the client format (not the PDU's hashes,
/// signatures and DAG references, which clients never see and flattening would only waste time
/// on).
fn flatten(pdu: &Pdu) -> Result<FlattenedJson> {
    let mut event = json!({
        "event_id": pdu.event_id,
        "room_id": pdu.room_id,
        "sender": pdu.sender,
        "type": pdu.kind.to_string(),
        "origin_server_ts": pdu.origin_server_ts,
        "content": pdu.content_value(),
    });
    if let Some(key) = &pdu.state_key {
        event["state_key"] = json!(key);
    }
    if let Some(redacts) = &pdu.redacts {
        event["redacts"] = json!(redacts);
    }
    let raw =
        serde_json::value::to_raw_value(&event).map_err(|e| Error::internal(e.to_string()))?;
    Ok(FlattenedJson::from_raw(&Raw::<Value>::from_json(raw)))
}

/// What the rules decided for one user, when the event notifies them.
#[derive(Debug, Clone)]
struct Outcome {
    /// The matching rule sets the `highlight` tweak.
    highlight: bool,
    /// The matching rule's actions, as JSON.
    actions: String,
}

/// What evaluating one event for its room's members needs.
struct Evaluation<'a, 'tx> {
    tx: &'a WriteTx<'tx>,
    pdu: &'a Pdu,
    event: &'a FlattenedJson,
    member_count: UInt,
    /// The event is an `@room` mention (`m.mentions.room`).
    room_mention: bool,
}

impl Evaluation<'_, '_> {
    /// Runs one member's rules; `power` is computed on first need and shared.
    fn run(
        &self,
        user_id: &str,
        cached: &CachedRules,
        power: &mut Option<PushConditionPowerLevelsCtx>,
    ) -> Result<Option<Outcome>> {
        let room_id = self.pdu.room_id.as_str();
        let user =
            OwnedUserId::try_from(user_id).map_err(|err| Error::internal(err.to_string()))?;
        let name = if cached.needs_display_name {
            display_name(self.tx, room_id, user_id)?
        } else {
            String::new()
        };
        let mut ctx =
            PushConditionRoomCtx::new(self.pdu.room_id.clone(), self.member_count, user, name);
        if self.room_mention || cached.custom_needs_power {
            if power.is_none() {
                *power = Some(power_ctx(self.tx, room_id, &self.pdu.sender)?);
            }
            if let Some(power) = power {
                ctx = ctx.with_power_levels(power.clone());
            }
        }
        let actions = actions_for(&cached.rules, self.event, &ctx);
        if !actions.iter().any(Action::should_notify) {
            return Ok(None);
        }
        Ok(Some(Outcome {
            highlight: actions.iter().any(Action::is_highlight),
            actions: serde_json::to_string(actions).map_err(|e| Error::internal(e.to_string()))?,
        }))
    }
}

/// The ID the shared default outcome is evaluated for: a user no event can be about unless it
/// names it (then the next candidate is taken). The default rules differ between users only
/// in the rules that name them, so this user's outcome is every unnamed member's.
fn default_user(sender: &str, named: &[String]) -> Result<OwnedUserId> {
    (0u32..)
        .map(|n| format!("@outpost-push-defaults-{n}:outpost.invalid"))
        .find(|id| id != sender && !named.iter().any(|name| name == id))
        .map(|id| OwnedUserId::try_from(id).map_err(|err| Error::internal(err.to_string())))
        .unwrap_or_else(|| {
            Err(Error::internal(
                "no free user ID for the default push rules",
            ))
        })
}

thread_local! {
    /// The server-default rules of [`default_user`]'s usual ID, parsed once per writer thread.
    static DEFAULTS: RefCell<Option<(OwnedUserId, Rc<CachedRules>)>> = const { RefCell::new(None) };
}

/// The server-default rules of `user`, cached for the usual one.
fn default_rules(user: &UserId) -> Rc<CachedRules> {
    DEFAULTS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((id, rules)) = cache.as_ref()
            && id == user
        {
            return Rc::clone(rules);
        }
        let rules = Rc::new(CachedRules::new(None, Ruleset::server_default(user)));
        *cache = Some((user.to_owned(), Rc::clone(&rules)));
        rules
    })
}

/// The local users the event names, whose default rules may decide differently from the
/// shared outcome: those in `m.mentions.user_ids` (`.m.rule.is_user_mention`) and the target
/// of an invite (`.m.rule.invite_for_me`).
fn named_users(pdu: &Pdu, event: &FlattenedJson) -> (Vec<String>, Option<String>) {
    let mut named: Vec<String> = Vec::new();
    let mentions = pdu.content_value();
    if let Some(ids) = mentions
        .get("m.mentions")
        .and_then(|m| m.get("user_ids"))
        .and_then(Value::as_array)
    {
        named.extend(ids.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    let invitee = (pdu.kind == ruma::events::TimelineEventType::RoomMember
        && event.get_str("content.membership") == Some("invite"))
    .then(|| pdu.state_key.clone())
    .flatten();
    if let Some(invitee) = &invitee {
        named.push(invitee.clone());
    }
    named.sort();
    named.dedup();
    (named, invitee)
}

/// Evaluates the push rules for the event's room and stores the outcome in the event's
/// transaction (see migration 0022): one shared outcome for every local member on the default
/// rules whom the event does not name (`room_notifications`, counted at read time), one row
/// per member evaluated on their own (their own rules, or named by the event: an `@`-mention
/// or the invitee), and a queued push per pusher of every member it notifies. The sender is
/// never notified. `pos` is where the event was just stored; an event that kept an older
/// position (a de-outliered one) is history, not news, and notifies nobody.
pub fn notify_in_tx(tx: &WriteTx<'_>, pdu: &Pdu, pos: i64) -> Result<()> {
    if pdu.rejected || store::event_pos(tx, pdu.event_id.as_str())? != Some(pos) {
        return Ok(());
    }
    let room_id = pdu.room_id.as_str();
    let sender = pdu.sender.as_str();
    if store::local_member(tx, sender, Some(room_id))?.is_some() {
        store::set_own_last_event(tx, sender, room_id, pos)?;
    }
    let event = flatten(pdu)?;
    let (named, invitee) = named_users(pdu, &event);
    // Members who cannot just take the shared outcome: their own rules, a pusher, or named.
    let mut members: Vec<Member> = store::special_members(tx, room_id)?;
    for name in &named {
        if members.iter().any(|m| &m.user_id == name) {
            continue;
        }
        // The invitee is not joined; anyone else named must be.
        let joined_to = (invitee.as_deref() != Some(name.as_str())).then_some(room_id);
        if let Some(member) = store::local_member(tx, name, joined_to)? {
            members.push(member);
        }
    }
    members.retain(|m| m.user_id != sender);

    let mut own_rules = Vec::with_capacity(members.len());
    for member in &members {
        let individual = member.rules_pos.is_some() || named.contains(&member.user_id);
        own_rules.push(if individual {
            Some(rules_for(tx, member)?)
        } else {
            None
        });
    }
    // The default rules only ask whether the room has 2 members; a user's own rule may ask more.
    let full_count = own_rules.iter().flatten().any(|r| r.custom_needs_count);
    let count = store::joined_count(tx, room_id, (!full_count).then_some(3))?;
    let member_count = UInt::try_from(count.max(0) as u64).unwrap_or(UInt::MAX);
    let room_mention = event
        .get("content.m\\.mentions.room")
        .and_then(|value| value.as_bool())
        == Some(true);
    let ctx = Evaluation {
        tx,
        pdu,
        event: &event,
        member_count,
        room_mention,
    };
    let mut power: Option<PushConditionPowerLevelsCtx> = None;
    let anyone = default_user(sender, &named)?;
    let shared = ctx.run(anyone.as_str(), &default_rules(&anyone), &mut power)?;
    if let Some(outcome) = &shared {
        store::insert_room_notification(tx, room_id, pos, outcome.highlight, &outcome.actions)?;
    }

    let now = now_ms();
    let mut queued = false;
    for (member, rules) in members.iter().zip(&own_rules) {
        let outcome = match rules {
            Some(rules) => {
                let outcome = ctx.run(&member.user_id, rules, &mut power)?;
                if let Some(Outcome { highlight, actions }) = &outcome {
                    store::insert_notification(
                        tx,
                        &member.user_id,
                        pos,
                        room_id,
                        *highlight,
                        actions,
                    )?;
                }
                outcome
            }
            None => shared.clone(),
        };
        if outcome.is_some() && member.has_pushers {
            queued |= store::enqueue_push(tx, &member.user_id, pos, now)? > 0;
        }
    }
    store::fold_notifications(tx, pos)?;
    if queued {
        // Wakes the push worker after the commit (it shares the "something queued" signal with
        // the federation sender).
        tx.mark_outbox();
    }
    Ok(())
}

/// Maps "this endpoint needs a field" to the spec's `M_MISSING_PARAM`.
pub fn missing(names: &[&str]) -> Error {
    Error::new(
        ErrorCode::MissingParam,
        format!("Missing parameters: {}", names.join(", ")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> OwnedUserId {
        OwnedUserId::try_from("@alice:unit.test").expect("valid user id")
    }

    #[test]
    fn default_rules_survive_a_round_trip_through_rows() {
        let rules = Ruleset::server_default(&user());
        let rows = rows_from_ruleset(&rules).expect("rows");
        assert!(
            rows.iter()
                .any(|r| r.rule_id == ".m.rule.master" && !r.enabled)
        );
        let back = ruleset_from_rows(&user(), &rows).expect("ruleset");
        assert_eq!(
            ruleset_json(&back).expect("json"),
            ruleset_json(&rules).expect("json")
        );
    }

    #[test]
    fn stored_sets_gain_new_default_rules() {
        let mut rows = rows_from_ruleset(&Ruleset::server_default(&user())).expect("rows");
        rows.retain(|r| r.rule_id != ".m.rule.reaction");
        let back = ruleset_from_rows(&user(), &rows).expect("ruleset");
        assert!(back.get(RuleKind::Override, ".m.rule.reaction").is_some());
    }

    #[test]
    fn historical_actions_are_dropped() {
        let actions = parse_actions(&json!({"actions": ["notify", "dont_notify", "coalesce"]}))
            .expect("actions");
        assert_eq!(actions.len(), 1);
        assert!(actions[0].should_notify());
    }

    #[test]
    fn ready_evaluates_the_default_message_rule() {
        let rules = Ruleset::server_default(&user());
        let raw = serde_json::value::RawValue::from_string(
            json!({
                "type": "m.room.message", "sender": "@bob:unit.test", "room_id": "!r:unit.test",
                "content": {"msgtype": "m.text", "body": "hi"}
            })
            .to_string(),
        )
        .expect("raw");
        let event = FlattenedJson::from_raw(&Raw::<Value>::from_json(raw));
        let room = OwnedRoomId::try_from("!r:unit.test").expect("room id");
        let ctx = PushConditionRoomCtx::new(room, UInt::from(3u32), user(), String::new());
        let actions = actions_for(&rules, &event, &ctx);
        assert!(actions.iter().any(Action::should_notify));
        assert!(!actions.iter().any(Action::is_highlight));
    }
}
