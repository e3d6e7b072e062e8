//! User-interactive authentication sessions (spec: "User-Interactive Authentication API").
//!
//! Every flow we offer has a single stage, so a session only needs to exist to be named; they
//! are kept in memory for ten minutes and forgotten on restart, which clients handle by
//! starting again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::Error;
use crate::util::random_string;

const SESSION_LIFETIME: Duration = Duration::from_secs(600);

/// The live UIA sessions.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    /// Starts a session and returns the 401 body offering `stages` as one flow each.
    pub fn challenge(&self, stages: &[&str], params: Value) -> Error {
        let session = random_string(24);
        if let Ok(mut live) = self.live.lock() {
            let now = Instant::now();
            live.retain(|_, started| now.duration_since(*started) < SESSION_LIFETIME);
            live.insert(session.clone(), now);
        }
        let flows: Vec<Value> = stages.iter().map(|s| json!({"stages": [s]})).collect();
        Error::Uia(json!({"flows": flows, "params": params, "session": session}))
    }

    /// The same 401 body plus an error, for a failed stage (keeps the session).
    pub fn failed(
        &self,
        stages: &[&str],
        session: Option<&str>,
        errcode: &str,
        error: &str,
    ) -> Error {
        let flows: Vec<Value> = stages.iter().map(|s| json!({"stages": [s]})).collect();
        let mut body = json!({"flows": flows, "params": {}, "errcode": errcode, "error": error});
        if let Some(session) = session {
            body["session"] = json!(session);
        }
        Error::Uia(body)
    }

    /// Ends a session once its operation completed.
    pub fn finish(&self, session: Option<&str>) {
        if let (Some(session), Ok(mut live)) = (session, self.live.lock()) {
            live.remove(session);
        }
    }
}
