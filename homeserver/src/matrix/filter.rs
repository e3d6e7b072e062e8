//! Event filters (spec: "Filtering"): parsing the filter JSON and deciding which events pass.

use serde::Deserialize;

use super::pdu::Pdu;

/// A whole sync filter.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filter {
    /// Global account data filter.
    #[serde(default)]
    pub account_data: EventFilter,
    /// Presence filter.
    #[serde(default)]
    pub presence: EventFilter,
    /// Room filters.
    #[serde(default)]
    pub room: RoomFilter,
    /// The format of the events returned (`client` or `federation`).
    #[serde(default)]
    pub event_format: EventFormat,
}

/// The filter's `event_format`: the client format, or the PDU as it travels between servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventFormat {
    /// The client format (the default).
    #[default]
    Client,
    /// The raw PDU, as sent over federation.
    Federation,
}

/// Filter for non-room events.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EventFilter {
    /// Maximum number of events.
    pub limit: Option<u64>,
    /// Allowed types (`*` wildcards).
    pub types: Option<Vec<String>>,
    /// Excluded types.
    #[serde(default)]
    pub not_types: Vec<String>,
}

/// The `room` part of a filter.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RoomFilter {
    /// Allowed rooms.
    #[serde(default, deserialize_with = "ids::some_rooms")]
    pub rooms: Option<Vec<String>>,
    /// Excluded rooms.
    #[serde(default, deserialize_with = "ids::rooms")]
    pub not_rooms: Vec<String>,
    /// Whether left rooms appear in an initial sync.
    #[serde(default)]
    pub include_leave: bool,
    /// Timeline events.
    #[serde(default)]
    pub timeline: RoomEventFilter,
    /// State events.
    #[serde(default)]
    pub state: RoomEventFilter,
    /// Ephemeral events.
    #[serde(default)]
    pub ephemeral: RoomEventFilter,
    /// Room account data.
    #[serde(default)]
    pub account_data: RoomEventFilter,
}

/// A filter on room events (also used by `/messages`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RoomEventFilter {
    /// Maximum number of events.
    pub limit: Option<u64>,
    /// Allowed types (`*` wildcards).
    pub types: Option<Vec<String>>,
    /// Excluded types.
    #[serde(default)]
    pub not_types: Vec<String>,
    /// Allowed senders.
    #[serde(default, deserialize_with = "ids::some_users")]
    pub senders: Option<Vec<String>>,
    /// Excluded senders.
    #[serde(default, deserialize_with = "ids::users")]
    pub not_senders: Vec<String>,
    /// Allowed rooms.
    #[serde(default, deserialize_with = "ids::some_rooms")]
    pub rooms: Option<Vec<String>>,
    /// Excluded rooms.
    #[serde(default, deserialize_with = "ids::rooms")]
    pub not_rooms: Vec<String>,
    /// Only send member events for senders in the timeline.
    #[serde(default)]
    pub lazy_load_members: bool,
    /// Whether to resend member events the client was already sent (lazy loading).
    #[serde(default)]
    pub include_redundant_members: bool,
    /// Only events with (or without) a `url` in content.
    pub contains_url: Option<bool>,
}

/// Room and user ID lists of a filter are checked while parsing, so a filter naming something
/// that is not an ID is refused (400) wherever a filter is accepted, instead of silently
/// matching nothing.
mod ids {
    use serde::Deserialize;
    use serde::de::{Deserializer, Error};

    fn checked<'de, D: Deserializer<'de>>(
        d: D,
        valid: fn(&str) -> bool,
        what: &str,
    ) -> Result<Vec<String>, D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        if let Some(bad) = list.iter().find(|id| !valid(id)) {
            return Err(D::Error::custom(format!("{bad:?} is not a valid {what}")));
        }
        Ok(list)
    }

    fn room(id: &str) -> bool {
        ruma::RoomId::parse(id).is_ok()
    }

    fn user(id: &str) -> bool {
        ruma::UserId::parse(id).is_ok()
    }

    pub fn rooms<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        checked(d, room, "room ID")
    }

    pub fn some_rooms<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
        checked(d, room, "room ID").map(Some)
    }

    pub fn users<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        checked(d, user, "user ID")
    }

    pub fn some_users<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
        checked(d, user, "user ID").map(Some)
    }
}

fn type_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

fn passes_types(types: &Option<Vec<String>>, not_types: &[String], kind: &str) -> bool {
    if not_types.iter().any(|p| type_matches(p, kind)) {
        return false;
    }
    types
        .as_ref()
        .is_none_or(|types| types.iter().any(|p| type_matches(p, kind)))
}

impl EventFilter {
    /// Whether an event type passes.
    pub fn allows_type(&self, kind: &str) -> bool {
        passes_types(&self.types, &self.not_types, kind)
    }
}

impl RoomFilter {
    /// Whether a room passes the top-level room filter.
    pub fn allows_room(&self, room_id: &str) -> bool {
        !self.not_rooms.iter().any(|r| r == room_id)
            && self
                .rooms
                .as_ref()
                .is_none_or(|rooms| rooms.iter().any(|r| r == room_id))
    }
}

impl RoomEventFilter {
    /// Whether an event passes this filter.
    pub fn allows(&self, pdu: &Pdu) -> bool {
        let room = pdu.room_id.as_str();
        let sender = pdu.sender.as_str();
        if !passes_types(&self.types, &self.not_types, &pdu.kind.to_string())
            || self.not_senders.iter().any(|s| s == sender)
            || self
                .senders
                .as_ref()
                .is_some_and(|s| !s.iter().any(|x| x == sender))
            || self.not_rooms.iter().any(|r| r == room)
            || self
                .rooms
                .as_ref()
                .is_some_and(|r| !r.iter().any(|x| x == room))
        {
            return false;
        }
        match self.contains_url {
            Some(wanted) => pdu.content_value().get("url").is_some() == wanted,
            None => true,
        }
    }

    /// Whether only type filtering could reject events (so a state filter can skip loading).
    pub fn allows_type(&self, kind: &str) -> bool {
        passes_types(&self.types, &self.not_types, kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_exclusions() {
        let f: RoomEventFilter =
            serde_json::from_str(r#"{"types": ["m.room.*"], "not_types": ["m.room.member"]}"#)
                .expect("parses");
        assert!(f.allows_type("m.room.message"));
        assert!(!f.allows_type("m.room.member"));
        assert!(!f.allows_type("org.custom"));
    }
}
