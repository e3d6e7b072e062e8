//! Power levels as the server needs them outside the auth rules: "may this user redact that
//! event" and "may this user do X" answers for the client API, with the spec's defaults and
//! room v12's infinitely powerful creators.

use serde_json::Value;

/// The power-level facts of a room at some point.
#[derive(Debug, Clone, Default)]
pub struct PowerLevels {
    content: Option<Value>,
    creators: Vec<String>,
    creators_are_infinite: bool,
}

impl PowerLevels {
    /// From the `m.room.power_levels` content (if any), the room's creators (create sender plus
    /// `additional_creators`), and whether the room version gives creators infinite power (v12).
    pub fn new(content: Option<Value>, creators: Vec<String>, creators_are_infinite: bool) -> Self {
        Self {
            content,
            creators,
            creators_are_infinite,
        }
    }

    fn int(&self, path: &[&str]) -> Option<i64> {
        let mut value = self.content.as_ref()?;
        for key in path {
            value = value.get(key)?;
        }
        value
            .as_i64()
            .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
    }

    /// The user's power level.
    pub fn user_level(&self, user_id: &str) -> i64 {
        if self.creators_are_infinite && self.creators.iter().any(|c| c == user_id) {
            return i64::MAX;
        }
        match &self.content {
            Some(_) => self
                .int(&["users", user_id])
                .or_else(|| self.int(&["users_default"]))
                .unwrap_or(0),
            // With no power levels event, the creator has 100 and everyone else 0.
            None if self.creators.iter().any(|c| c == user_id) => 100,
            None => 0,
        }
    }

    /// The level needed to redact others' events.
    pub fn redact_level(&self) -> i64 {
        self.int(&["redact"]).unwrap_or(50)
    }

    /// The level needed to invite (and to authorise a restricted join).
    pub fn invite_level(&self) -> i64 {
        self.int(&["invite"]).unwrap_or(0)
    }

    /// The level needed to send a state event of `kind`.
    pub fn state_level(&self, kind: &str) -> i64 {
        self.int(&["events", kind])
            .or_else(|| self.int(&["state_default"]))
            .unwrap_or(50)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_creators() {
        let pl = PowerLevels::new(
            Some(json!({"users": {"@mod:x": 50}, "users_default": 1})),
            vec!["@c:x".to_owned()],
            true,
        );
        assert_eq!(pl.user_level("@c:x"), i64::MAX);
        assert_eq!(pl.user_level("@mod:x"), 50);
        assert_eq!(pl.user_level("@other:x"), 1);
        assert_eq!(pl.redact_level(), 50);
        let legacy = PowerLevels::new(None, vec!["@c:x".to_owned()], false);
        assert_eq!(legacy.user_level("@c:x"), 100);
    }
}
