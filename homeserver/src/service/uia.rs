//! User-interactive authentication sessions (spec: "User-Interactive Authentication API").
//!
//! A session is bound to the one operation it was started for: the user, the action (method and
//! path) and, except for registration, a hash of the request body without `auth`. A session
//! started for `DELETE /devices/A` therefore never authorises deleting device B, a password
//! change or a cross-signing reset: such a request is refused with 403 and the session is left
//! as it was. Registration instead remembers the parameters of its first request
//! (`username`, `device_id`, `initial_device_display_name`, `inhibit_login`, …) and fills in
//! what a later request of the session leaves out, as clients expect; and a registration
//! session that completed keeps its answer, so a replay gives the same account again instead
//! of a second one (the spec's "completed stages cannot be retried").
//!
//! Sessions live in memory for ten minutes and are forgotten on restart: a request naming an
//! unknown session gets a fresh challenge, and clients start again.
//!
//! The `m.oauth` stage (spec v1.17 "OAuth authentication", MSC4312) is completed out of band:
//! an operation started with an approval URL advertises it in `params`, with this session's ID
//! in the URL, and the unit's account page calls [`Sessions::approve`] once the session's own
//! user confirmed there. The approval is bound to the session and its user and lasts a limited
//! time; the client's next request naming the session (with or without a `type`) then
//! completes the stage. Until then every retry gets the same 401 challenge.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ruma::UserId;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::util::random_string;

/// How long a session lives after the last request that named it.
const SESSION_LIFETIME: Duration = Duration::from_secs(600);

/// The `m.oauth` stage, under its stable name and MSC4312's unstable one, which the MSC asks
/// servers to keep offering as a second flow for clients that implemented it first.
pub const OAUTH_STAGES: [&str; 2] = ["m.oauth", "org.matrix.cross_signing_reset"];

/// The flows of an operation approved on the account page: `m.oauth`, or its unstable name.
pub const OAUTH_FLOWS: Flows<'static> = &[&[OAUTH_STAGES[0]], &[OAUTH_STAGES[1]]];

/// What a session authorises: who asks, for what, with which request.
pub struct Operation {
    /// The authenticated user, or `None` for registration.
    pub user: Option<String>,
    /// Method and path template, e.g. `DELETE /devices/ABC` or `POST /register`.
    pub action: String,
    /// The request body without `auth`.
    pub body: Value,
    /// Whether the first request's parameters are remembered and merged into later ones
    /// (registration) rather than the body being bound by hash (everything else).
    pub remember_params: bool,
    /// For the `m.oauth` stage: the account page URL where the user approves (the session's
    /// ID is appended as `session=`), and the device that asked, shown on that page.
    pub approval: Option<ApprovalPage>,
}

/// Where and for whom an operation is approved out of band (the `m.oauth` stage).
#[derive(Debug, Clone)]
pub struct ApprovalPage {
    /// The account page URL with its query (`?action=…`), without the session.
    pub url: String,
    /// The device whose request started the session.
    pub device_id: String,
}

/// What the account page shows about a session waiting for approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingApproval {
    /// Method and path of the operation.
    pub action: String,
    /// The device that asked.
    pub device_id: String,
}

impl Operation {
    /// An operation of a logged-in user, bound to its body.
    pub fn of_user(user: &UserId, action: impl Into<String>, mut body: Value) -> Self {
        strip_auth(&mut body);
        Operation {
            user: Some(user.to_string()),
            action: action.into(),
            body,
            remember_params: false,
            approval: None,
        }
    }

    /// The same operation, approved out of band with the `m.oauth` stage on `approval`'s page.
    pub fn approved_on(mut self, approval: ApprovalPage) -> Self {
        self.approval = Some(approval);
        self
    }

    /// Registration: no user yet, parameters remembered across the session.
    pub fn register(mut body: Value) -> Self {
        strip_auth(&mut body);
        Operation {
            user: None,
            action: "POST /register".to_owned(),
            body,
            remember_params: true,
            approval: None,
        }
    }

    fn binding(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.user.as_deref().unwrap_or("").as_bytes());
        hasher.update([0]);
        hasher.update(self.action.as_bytes());
        if !self.remember_params {
            hasher.update([0]);
            hasher.update(canonical(&self.body).as_bytes());
        }
        hasher.finalize().into()
    }
}

fn strip_auth(body: &mut Value) {
    if let Value::Object(map) = body {
        map.remove("auth");
    } else {
        *body = Value::Object(Map::new());
    }
}

/// Object keys sorted at every level, so two bodies that differ only in key order bind alike.
fn canonical(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&map[k])))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// The flows an endpoint offers, each a list of stages to complete in order.
pub type Flows<'a> = &'a [&'a [&'a str]];

/// Where a request stands in its session.
#[derive(Debug)]
pub enum Step {
    /// Every stage of a flow is complete: perform the operation with `params` (the request's
    /// own body, or for registration the remembered parameters merged with it) and `proof`
    /// (what a stage handed over for the operation itself, e.g. the registration token that
    /// the registration must consume).
    Authorised {
        session: String,
        params: Value,
        proof: Option<String>,
    },
    /// The client attempts `stage`: check its credentials, then call [`Sessions::passed`] or
    /// [`Sessions::failed`].
    Attempt {
        session: String,
        stage: String,
        params: Value,
    },
    /// The operation already completed in this session (registration): answer this again.
    Replay(Value),
}

struct Session {
    binding: [u8; 32],
    /// The user the operation is for (`None`: registration).
    user: Option<String>,
    /// Method and path, for the account page to say what it approves.
    action: String,
    approval: Option<ApprovalPage>,
    /// Until when an approval given on the account page counts.
    approved_until: Option<Instant>,
    params: Value,
    proof: Option<String>,
    completed: Vec<String>,
    result: Option<Value>,
    touched: Instant,
}

/// The live UIA sessions.
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
    clock: Arc<dyn Clock>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(crate::clock::system())
    }
}

impl Sessions {
    /// No sessions yet; expiry reads time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            live: Mutex::default(),
            clock,
        }
    }

    /// Places a request in its session: a new session (answered with the 401 challenge) when
    /// the request names none or an unknown one; 403 when it names one started for another
    /// operation; otherwise the stage the client attempts, or the grant when a flow is already
    /// complete.
    pub fn step(
        &self,
        op: &Operation,
        flows: Flows<'_>,
        session: Option<&str>,
        stage: Option<&str>,
    ) -> Result<Step> {
        let mut live = self.lock();
        let now = self.clock.now();
        live.retain(|_, s| now.duration_since(s.touched) < SESSION_LIFETIME);
        let binding = op.binding();
        let Some(id) = session.filter(|id| live.contains_key(*id)) else {
            let id = random_string(24);
            live.insert(
                id.clone(),
                Session {
                    binding,
                    user: op.user.clone(),
                    action: op.action.clone(),
                    approval: op.approval.clone(),
                    approved_until: None,
                    params: op.body.clone(),
                    proof: None,
                    completed: Vec::new(),
                    result: None,
                    touched: now,
                },
            );
            let session = &live[&id];
            return match stage {
                // `m.oauth` cannot pass before the page approved it, which needs this session.
                Some(stage) if session.approval.is_some() && OAUTH_STAGES.contains(&stage) => {
                    Err(challenge(flows, &id, session, None))
                }
                // A first request may already attempt a stage (a password straight away).
                Some(stage) => Ok(Step::Attempt {
                    session: id.clone(),
                    stage: stage.to_owned(),
                    params: session.params.clone(),
                }),
                None => Err(challenge(flows, &id, session, None)),
            };
        };
        let id = id.to_owned();
        let entry = live
            .get_mut(&id)
            .expect("looked up above under the same lock");
        if entry.binding != binding {
            return Err(Error::forbidden(
                "Requested operation has changed during the UI authentication session",
            ));
        }
        entry.touched = now;
        if let Some(result) = &entry.result {
            return Ok(Step::Replay(result.clone()));
        }
        if op.remember_params {
            merge(&mut entry.params, &op.body);
        } else {
            entry.params = op.body.clone();
        }
        if let Some(until) = entry.approved_until.take()
            && now < until
        {
            // Approved on the account page: whichever name of `m.oauth` a flow offers next.
            let done = entry.completed.len();
            let next = flows.iter().find_map(|flow| {
                (flow.len() > done
                    && flow[..done] == entry.completed[..]
                    && OAUTH_STAGES.contains(&flow[done]))
                .then_some(flow[done])
            });
            if let Some(next) = next {
                entry.completed.push(next.to_owned());
            }
        }
        if flow_complete(flows, &entry.completed) {
            return Ok(Step::Authorised {
                session: id,
                params: entry.params.clone(),
                proof: entry.proof.clone(),
            });
        }
        match stage {
            Some(stage) if entry.completed.iter().any(|done| done == stage) => {
                Err(challenge(flows, &id, entry, None))
            }
            // Not approved (or no longer): the same challenge, for the client to poll.
            Some(stage) if entry.approval.is_some() && OAUTH_STAGES.contains(&stage) => {
                Err(challenge(flows, &id, entry, None))
            }
            Some(stage) => Ok(Step::Attempt {
                session: id.clone(),
                stage: stage.to_owned(),
                params: entry.params.clone(),
            }),
            None => Err(challenge(flows, &id, entry, None)),
        }
    }

    /// Records that `stage` passed, keeping `proof` for the operation. Returns the grant when
    /// that completes a flow, or the 401 listing what is completed when more stages remain; a
    /// stage that no flow offers next is a failed attempt.
    pub fn passed(
        &self,
        flows: Flows<'_>,
        session: &str,
        stage: &str,
        proof: Option<String>,
    ) -> Result<Step> {
        let mut live = self.lock();
        let Some(entry) = live.get_mut(session) else {
            return Err(Error::forbidden("The UI authentication session expired"));
        };
        let next_ok = flows.iter().any(|flow| {
            flow.len() > entry.completed.len()
                && flow[..entry.completed.len()] == entry.completed[..]
                && flow[entry.completed.len()] == stage
        });
        if !next_ok {
            let err = (
                "M_UNKNOWN",
                "This stage is not the next of any offered flow",
            );
            return Err(challenge(flows, session, entry, Some(err)));
        }
        entry.completed.push(stage.to_owned());
        if proof.is_some() {
            entry.proof = proof;
        }
        if flow_complete(flows, &entry.completed) {
            Ok(Step::Authorised {
                session: session.to_owned(),
                params: entry.params.clone(),
                proof: entry.proof.clone(),
            })
        } else {
            Err(challenge(flows, session, entry, None))
        }
    }

    /// The 401 for a failed attempt: the session (kept), what it completed, the flows, the
    /// params and the stage's error.
    pub fn failed(&self, flows: Flows<'_>, session: &str, errcode: &str, error: &str) -> Error {
        let live = self.lock();
        match live.get(session) {
            Some(entry) => challenge(flows, session, entry, Some((errcode, error))),
            None => Error::forbidden("The UI authentication session expired"),
        }
    }

    /// The operation a live session of `user` waits to have approved on the account page;
    /// `None` for an unknown or expired session, another user's, or one without `m.oauth`.
    pub fn pending_approval(&self, session: &str, user: &str) -> Option<PendingApproval> {
        let live = self.lock();
        let entry = live.get(session)?;
        let approval = entry.approval.as_ref()?;
        let alive = self.clock.now().duration_since(entry.touched) < SESSION_LIFETIME;
        (alive && entry.user.as_deref() == Some(user)).then(|| PendingApproval {
            action: entry.action.clone(),
            device_id: approval.device_id.clone(),
        })
    }

    /// Records that `user` approved `session` on the account page, for `valid_for`: the
    /// client's next request naming the session within that time completes `m.oauth`. Refused
    /// (`false`, nothing recorded) for what [`Sessions::pending_approval`] would not show.
    pub fn approve(&self, session: &str, user: &str, valid_for: Duration) -> bool {
        if self.pending_approval(session, user).is_none() {
            return false;
        }
        let mut live = self.lock();
        match live.get_mut(session) {
            Some(entry) => {
                entry.approved_until = Some(self.clock.now() + valid_for);
                true
            }
            None => false,
        }
    }

    /// Ends a session once its operation completed. With `result`, the session stays (for its
    /// lifetime) to answer a replay with the same result; without, it is gone.
    pub fn finish(&self, session: &str, result: Option<Value>) {
        let mut live = self.lock();
        match result {
            Some(result) => {
                if let Some(entry) = live.get_mut(session) {
                    entry.result = Some(result);
                }
            }
            None => {
                live.remove(session);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding this lock leaves only a map of sessions, still consistent.
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn flow_complete(flows: Flows<'_>, completed: &[String]) -> bool {
    flows.iter().any(|flow| flow[..] == completed[..])
}

/// Remembered parameters win where a later request leaves them out; what it names replaces.
fn merge(stored: &mut Value, later: &Value) {
    if let (Value::Object(stored), Value::Object(later)) = (stored, later) {
        for (key, value) in later {
            stored.insert(key.clone(), value.clone());
        }
    }
}

fn challenge(flows: Flows<'_>, id: &str, session: &Session, error: Option<(&str, &str)>) -> Error {
    let flows: Vec<Value> = flows.iter().map(|f| json!({"stages": f})).collect();
    let mut params = Map::new();
    if let Some(approval) = &session.approval {
        // The session ID is not a secret on its own: the page approves it only for its user.
        let url = json!({"url": format!("{}&session={id}", approval.url)});
        for stage in OAUTH_STAGES {
            params.insert(stage.to_owned(), url.clone());
        }
    }
    let mut body = json!({
        "flows": flows,
        "params": params,
        "session": id,
        "completed": session.completed,
    });
    if let Some((errcode, error)) = error {
        body["errcode"] = json!(errcode);
        body["error"] = json!(error);
    }
    Error::Uia(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::error::ErrorCode;

    const FLOWS: Flows<'static> = &[&["m.login.password"]];

    fn delete(device: &str) -> Operation {
        Operation::of_user(
            ruma::user_id!("@a:x"),
            format!("DELETE /devices/{device}"),
            json!({}),
        )
    }

    fn session_of(err: Error) -> String {
        let Error::Uia(body) = err else {
            panic!("not a UIA 401: {err:?}")
        };
        body["session"].as_str().expect("session").to_owned()
    }

    #[test]
    fn a_session_authorises_only_its_own_operation() {
        let uia = Sessions::default();
        let id = session_of(uia.step(&delete("A"), FLOWS, None, None).unwrap_err());
        let other = uia.step(&delete("B"), FLOWS, Some(&id), Some("m.login.password"));
        assert!(matches!(
            other,
            Err(Error::Matrix {
                code: ErrorCode::Forbidden,
                ..
            })
        ));
        let attempt = uia.step(&delete("A"), FLOWS, Some(&id), Some("m.login.password"));
        assert!(matches!(attempt, Ok(Step::Attempt { .. })));
        let granted = uia.passed(FLOWS, &id, "m.login.password", None);
        assert!(matches!(granted, Ok(Step::Authorised { .. })));
        // Completed for A: still refused for B.
        let other = uia.step(&delete("B"), FLOWS, Some(&id), None);
        assert!(matches!(
            other,
            Err(Error::Matrix {
                code: ErrorCode::Forbidden,
                ..
            })
        ));
    }

    #[test]
    fn a_session_lives_for_its_lifetime_after_the_last_request() {
        let clock = FakeClock::at(0);
        let uia = Sessions::new(clock.clone());
        let op = delete("A");
        let id = session_of(uia.step(&op, FLOWS, None, None).unwrap_err());
        clock.advance(SESSION_LIFETIME - Duration::from_millis(1));
        // Still alive, and naming it keeps it alive for another lifetime.
        assert_eq!(
            session_of(uia.step(&op, FLOWS, Some(&id), None).unwrap_err()),
            id
        );
        clock.advance(SESSION_LIFETIME - Duration::from_millis(1));
        assert_eq!(
            session_of(uia.step(&op, FLOWS, Some(&id), None).unwrap_err()),
            id
        );
        clock.advance(SESSION_LIFETIME);
        // Expired at the boundary: a fresh session, and the old one cannot pass a stage.
        let fresh = session_of(uia.step(&op, FLOWS, Some(&id), None).unwrap_err());
        assert_ne!(fresh, id);
        assert!(matches!(
            uia.passed(FLOWS, &id, "m.login.password", None),
            Err(Error::Matrix {
                code: ErrorCode::Forbidden,
                ..
            })
        ));
    }

    #[test]
    fn registration_remembers_its_first_parameters_and_replays_its_result() {
        let uia = Sessions::default();
        let first = Operation::register(json!({"username": "a", "inhibit_login": true}));
        let id = session_of(
            uia.step(&first, &[&["m.login.dummy"]], None, None)
                .unwrap_err(),
        );
        let later = Operation::register(json!({"auth": {"session": id}}));
        let step = uia.step(
            &later,
            &[&["m.login.dummy"]],
            Some(&id),
            Some("m.login.dummy"),
        );
        let Ok(Step::Attempt { params, .. }) = step else {
            panic!("{step:?}")
        };
        assert_eq!(params["username"], "a");
        assert_eq!(params["inhibit_login"], true);
        uia.finish(&id, Some(json!({"user_id": "@a:x"})));
        let replay = uia.step(
            &later,
            &[&["m.login.dummy"]],
            Some(&id),
            Some("m.login.dummy"),
        );
        assert!(matches!(replay, Ok(Step::Replay(v)) if v["user_id"] == "@a:x"));
    }
    fn reset(user: &str) -> Operation {
        let user = <&UserId>::try_from(user).expect("a valid test user ID");
        Operation::of_user(user, "POST /keys/device_signing/upload", json!({"k": 1})).approved_on(
            ApprovalPage {
                url: "https://unit/_outpost/account?action=org.matrix.cross_signing_reset"
                    .to_owned(),
                device_id: "DEV".to_owned(),
            },
        )
    }

    fn is_challenge(step: Result<Step>) -> bool {
        matches!(step, Err(Error::Uia(body)) if body["errcode"].is_null())
    }

    #[test]
    fn oauth_stage_completes_only_after_its_user_approved_in_time() {
        let clock = FakeClock::at(0);
        let uia = Sessions::new(clock.clone());
        let Err(Error::Uia(body)) = uia.step(&reset("@a:x"), OAUTH_FLOWS, None, None) else {
            panic!("no challenge")
        };
        let id = body["session"].as_str().expect("session").to_owned();
        assert_eq!(
            body["params"]["m.oauth"]["url"],
            format!(
                "https://unit/_outpost/account?action=org.matrix.cross_signing_reset&session={id}"
            )
        );
        assert_eq!(
            body["params"]["m.oauth"],
            body["params"]["org.matrix.cross_signing_reset"]
        );
        // Not approved: polling, with or without the type, gets the challenge again.
        assert!(is_challenge(uia.step(
            &reset("@a:x"),
            OAUTH_FLOWS,
            Some(&id),
            None
        )));
        assert!(is_challenge(uia.step(
            &reset("@a:x"),
            OAUTH_FLOWS,
            Some(&id),
            Some("m.oauth")
        )));
        // Another user cannot see or approve it.
        assert_eq!(uia.pending_approval(&id, "@b:x"), None);
        assert!(!uia.approve(&id, "@b:x", Duration::from_secs(60)));
        assert!(is_challenge(uia.step(
            &reset("@a:x"),
            OAUTH_FLOWS,
            Some(&id),
            None
        )));
        // Its user's approval, once expired, does not count.
        assert!(uia.pending_approval(&id, "@a:x").is_some());
        assert!(uia.approve(&id, "@a:x", Duration::from_secs(60)));
        clock.advance(Duration::from_secs(60));
        assert!(is_challenge(uia.step(
            &reset("@a:x"),
            OAUTH_FLOWS,
            Some(&id),
            None
        )));
        // In time, it does.
        assert!(uia.approve(&id, "@a:x", Duration::from_secs(60)));
        clock.advance(Duration::from_secs(59));
        let step = uia.step(&reset("@a:x"), OAUTH_FLOWS, Some(&id), None);
        assert!(matches!(step, Ok(Step::Authorised { .. })), "{step:?}");
    }
}
