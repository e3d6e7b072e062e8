//! Reading `m.room.join_rules` content: the one parser of a restricted join rule's allow list,
//! shared by restricted joins (`service::rooms::restricted_join`) and the space hierarchy.

use serde_json::Value;

/// The rooms a `restricted` or `knock_restricted` join rule admits members of (spec: "Restricted
/// rooms", the `m.room_membership` entries of `allow`); empty for any other join rule.
pub fn restricted_allowed_rooms(join_rules: &Value) -> Vec<String> {
    if !matches!(
        join_rules.get("join_rule").and_then(Value::as_str),
        Some("restricted" | "knock_restricted")
    ) {
        return Vec::new();
    }
    join_rules
        .get("allow")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|rule| rule.get("type").and_then(Value::as_str) == Some("m.room_membership"))
        .filter_map(|rule| rule.get("room_id").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}
