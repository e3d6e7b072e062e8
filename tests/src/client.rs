//! Matrix client requests over a shared `ureq` agent, and small JSON helpers for assertions.

use crate::{COUNTER, enc, password_for};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// An HTTP response: status, headers (names lower-cased) and raw body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Response headers, names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The raw response body.
    pub body: Vec<u8>,
}

impl Reply {
    /// Reads a `ureq` response whole: its status, headers with lower-cased names, and body.
    pub fn read(response: ureq::http::Response<ureq::Body>) -> Result<Reply, ureq::Error> {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response.into_body().read_to_vec()?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// The body parsed as JSON, or `Value::Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The shared HTTP agent plus the server's current base URL (which changes on restart). The
/// agent is replaced once a TLS server's CA is known.
#[derive(Debug)]
pub(crate) struct Http {
    pub(crate) agent: RwLock<ureq::Agent>,
    pub(crate) base: RwLock<String>,
}

impl Http {
    pub(crate) fn new(agent: ureq::Agent, base: String) -> Http {
        Http {
            agent: RwLock::new(agent),
            base: RwLock::new(base),
        }
    }

    pub(crate) fn agent(&self) -> ureq::Agent {
        self.agent
            .read()
            .expect("agent lock is never poisoned")
            .clone()
    }

    pub(crate) fn base(&self) -> String {
        self.base
            .read()
            .expect("base URL lock is never poisoned")
            .clone()
    }
}

/// A Matrix client of one test server: anonymous, or logged in as one user on one device.
///
/// Cheap to clone and `Send + Sync`, so concurrent test threads can each hold one. It follows the
/// server across [`TestEnv::restart`](crate::TestEnv::restart).
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) http: Arc<Http>,
    /// `@localpart:server`, empty for an anonymous client.
    pub user_id: String,
    /// The device this client's access token belongs to, empty for an anonymous client.
    pub device_id: String,
    /// The access token sent as `Authorization: Bearer`, if any.
    pub access_token: Option<String>,
    /// The refresh token returned at registration or login, if any.
    pub refresh_token: Option<String>,
}

impl Client {
    /// The server's base URL, e.g. `http://127.0.0.1:40123`.
    pub fn base_url(&self) -> String {
        self.http.base()
    }

    /// The same user and device with another access token (or none).
    pub fn with_token(&self, token: Option<&str>) -> Client {
        Client {
            access_token: token.map(str::to_owned),
            ..self.clone()
        }
    }

    /// Sends one request and returns the whole reply. `path` starts with `/` and is already
    /// percent-encoded; `body` is sent verbatim, as `application/json` unless `headers` name
    /// another `Content-Type`.
    ///
    /// Panics on transport errors (connection refused, timeout); use [`Client::try_request`] to
    /// observe those.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|err| panic!("{method} {path}: transport error: {err}"))
    }

    /// Like [`Client::request`] but returns transport errors instead of panicking.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Reply, ureq::Error> {
        let url = format!("{}{path}", self.http.base());
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(token) = &self.access_token {
            builder = builder.header("Authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = match body {
            Some(bytes) => {
                let has_type = headers
                    .iter()
                    .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
                if !has_type {
                    builder = builder.header("Content-Type", "application/json");
                }
                let request = builder.body(bytes).map_err(ureq::Error::Http)?;
                self.http.agent().run(request)?
            }
            None => {
                let request = builder.body(()).map_err(ureq::Error::Http)?;
                self.http.agent().run(request)?
            }
        };
        Reply::read(response)
    }

    /// Sends a JSON request (or none) and returns `(status, body as JSON)`.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let bytes = body.map(|value| value.to_string().into_bytes());
        let reply = self.request(method, path, &[], bytes.as_deref());
        (reply.status, reply.json())
    }

    /// Like [`Client::call`] but returns transport errors instead of panicking.
    pub fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ureq::Error> {
        let bytes = body.map(|value| value.to_string().into_bytes());
        let reply = self.try_request(method, path, &[], bytes.as_deref())?;
        Ok((reply.status, reply.json()))
    }

    /// `GET path` -> `(status, json)`.
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None)
    }

    /// `POST path` with a JSON body -> `(status, json)`.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call("POST", path, Some(body))
    }

    /// `PUT path` with a JSON body -> `(status, json)`.
    pub fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call("PUT", path, Some(body))
    }

    /// `DELETE path` -> `(status, json)`.
    pub fn delete(&self, path: &str) -> (u16, Value) {
        self.call("DELETE", path, None)
    }

    /// `GET path` asserting 200; returns the body.
    pub fn get_ok(&self, path: &str) -> Value {
        ok(self.get(path), &format!("GET {path}"))
    }

    /// `POST path` asserting 200; returns the body.
    pub fn post_ok(&self, path: &str, body: &Value) -> Value {
        ok(self.post(path, body), &format!("POST {path}"))
    }

    /// `PUT path` asserting 200; returns the body.
    pub fn put_ok(&self, path: &str, body: &Value) -> Value {
        ok(self.put(path, body), &format!("PUT {path}"))
    }

    /// `POST /createRoom` asserting 200; returns the room ID.
    pub fn create_room(&self, body: &Value) -> String {
        let reply = self.post_ok("/_matrix/client/v3/createRoom", body);
        str_field(&reply, "room_id")
    }

    /// `POST /join/{room_or_alias}` asserting 200; returns the room ID.
    pub fn join(&self, room_or_alias: &str) -> String {
        let reply = self.post_ok(
            &format!("/_matrix/client/v3/join/{}", enc(room_or_alias)),
            &json!({}),
        );
        str_field(&reply, "room_id")
    }

    /// `POST /rooms/{room}/{action}` (invite, kick, ban, unban, leave, forget, join) with a body.
    pub fn membership(&self, room: &str, action: &str, body: &Value) -> (u16, Value) {
        self.post(
            &format!("/_matrix/client/v3/rooms/{}/{action}", enc(room)),
            body,
        )
    }

    /// Invites `user_id` into `room`, asserting 200.
    pub fn invite(&self, room: &str, user_id: &str) {
        let reply = self.membership(room, "invite", &json!({ "user_id": user_id }));
        ok(reply, &format!("invite {user_id} to {room}"));
    }

    /// `PUT /rooms/{room}/send/{type}/{txn}` -> `(status, json)`.
    pub fn send_event(
        &self,
        room: &str,
        event_type: &str,
        txn: &str,
        content: &Value,
    ) -> (u16, Value) {
        self.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/{}/{}",
                enc(room),
                enc(event_type),
                enc(txn)
            ),
            content,
        )
    }

    /// Sends an `m.text` message with a fresh transaction ID, asserting 200; returns the event ID.
    pub fn send_text(&self, room: &str, body: &str) -> String {
        let txn = format!("txn-{}", COUNTER.fetch_add(1, Ordering::Relaxed));
        let reply = self.send_event(
            room,
            "m.room.message",
            &txn,
            &json!({ "msgtype": "m.text", "body": body }),
        );
        str_field(&ok(reply, &format!("send {body:?} to {room}")), "event_id")
    }

    /// Path of `/rooms/{room}/state/{type}/{key}` (key may be empty).
    pub fn state_path(room: &str, event_type: &str, state_key: &str) -> String {
        format!(
            "/_matrix/client/v3/rooms/{}/state/{}/{}",
            enc(room),
            enc(event_type),
            enc(state_key)
        )
    }

    /// `PUT` a state event, asserting 200; returns its event ID.
    pub fn put_state(
        &self,
        room: &str,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) -> String {
        let path = Client::state_path(room, event_type, state_key);
        str_field(&self.put_ok(&path, content), "event_id")
    }

    /// One `GET /sync` with the given raw (already encoded) query string, asserting 200.
    pub fn sync_raw(&self, query: &str) -> Value {
        self.get_ok(&format!("/_matrix/client/v3/sync?{query}"))
    }

    /// One `GET /sync`: `since` token, long-poll `timeout_ms`, optional inline filter.
    pub fn sync(&self, since: Option<&str>, timeout_ms: u64, filter: Option<&Value>) -> Value {
        self.sync_raw(&sync_query(since, timeout_ms, filter))
    }

    /// Long-polls `/sync` from `since` until a response satisfies `done`, and returns that
    /// response. Panics after `deadline`.
    pub fn sync_until(
        &self,
        since: Option<&str>,
        filter: Option<&Value>,
        deadline: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        let mut since = since.map(str::to_owned);
        loop {
            let response = self.sync(since.as_deref(), 1000, filter);
            if done(&response) {
                return response;
            }
            assert!(
                start.elapsed() < deadline,
                "sync did not reach the expected state within {deadline:?}; last response: {response:#}"
            );
            since = Some(str_field(&response, "next_batch"));
        }
    }

    /// Every event of `/rooms/{room}/messages` in direction `dir` (`b` from the newest, `f` from
    /// the oldest), following `end` tokens until the server reports no more events.
    pub fn all_messages(&self, room: &str, dir: &str, filter: Option<&Value>) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from: Option<String> = None;
        for _ in 0..10_000 {
            let mut path = format!(
                "/_matrix/client/v3/rooms/{}/messages?dir={dir}&limit=100",
                enc(room)
            );
            if let Some(from) = &from {
                write!(path, "&from={}", enc(from)).expect("writing to a String cannot fail");
            }
            if let Some(filter) = filter {
                write!(path, "&filter={}", enc(&filter.to_string()))
                    .expect("writing to a String cannot fail");
            }
            let page = self.get_ok(&path);
            let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
            let end = page["end"].as_str().map(str::to_owned);
            if chunk.is_empty() || end.is_none() || end == from {
                events.extend(chunk);
                return events;
            }
            events.extend(chunk);
            from = end;
        }
        panic!("/messages pagination of {room} did not terminate");
    }
}

/// Builds a `/sync` query string.
pub fn sync_query(since: Option<&str>, timeout_ms: u64, filter: Option<&Value>) -> String {
    let mut query = format!("timeout={timeout_ms}");
    if let Some(since) = since {
        write!(query, "&since={}", enc(since)).expect("writing to a String cannot fail");
    }
    if let Some(filter) = filter {
        write!(query, "&filter={}", enc(&filter.to_string()))
            .expect("writing to a String cannot fail");
    }
    query
}

/// The tests' one registration: `localpart` (password [`password_for`]) through `anon`'s server
/// with user-interactive auth `m.login.dummy`, asserting success. The first request already
/// carries the dummy stage, which completes registration in one request on a unit; a server
/// that first wants a UIA session (Synapse) answers 401 with one, and the request is repeated
/// with it.
pub fn register_on(anon: &Client, localpart: &str) -> Client {
    let mut request = json!({
        "username": localpart,
        "password": password_for(localpart),
        "auth": { "type": "m.login.dummy" },
    });
    let (status, body) = anon.post("/_matrix/client/v3/register", &request);
    let (status, body) = if status == 401 && body["session"].is_string() {
        request["auth"] = json!({ "type": "m.login.dummy", "session": body["session"] });
        anon.post("/_matrix/client/v3/register", &request)
    } else {
        (status, body)
    };
    assert_eq!(
        status,
        200,
        "register {localpart} at {}: {body:#}",
        anon.base_url()
    );
    Client {
        http: Arc::clone(&anon.http),
        user_id: str_field(&body, "user_id"),
        device_id: str_field(&body, "device_id"),
        access_token: Some(str_field(&body, "access_token")),
        refresh_token: body["refresh_token"].as_str().map(str::to_owned),
    }
}

/// Asserts a 200 reply and returns its body; `what` names the request in the panic message.
pub fn ok((status, body): (u16, Value), what: &str) -> Value {
    assert_eq!(status, 200, "{what}: expected 200, got {status}: {body:#}");
    body
}

/// Asserts a reply has `status` and `errcode`, with the whole body in the panic message.
pub fn assert_error((status, body): &(u16, Value), want_status: u16, want_errcode: &str) {
    assert_eq!(
        (*status, body["errcode"].as_str()),
        (want_status, Some(want_errcode)),
        "expected {want_status} {want_errcode}, got {status}: {body:#}"
    );
    assert!(
        body["error"].is_string(),
        "error body must carry a human-readable `error` string: {body:#}"
    );
}

/// A string field of a JSON object; panics naming the field when it is missing.
pub fn str_field(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("expected string field `{field}` in {value:#}"))
        .to_owned()
}

/// The `rooms.join[room].timeline.events` of a sync response (empty when absent).
pub fn timeline(sync: &Value, room: &str) -> Vec<Value> {
    section_events(sync, "join", room, "timeline")
}

/// `rooms.<membership>[room].<part>.events` of a sync response (empty when absent); `part` is
/// `timeline`, `state`, `invite_state` or `ephemeral`.
pub fn section_events(sync: &Value, membership: &str, room: &str, part: &str) -> Vec<Value> {
    sync["rooms"][membership][room][part]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The `event_id`s of a list of events.
pub fn event_ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| event["event_id"].as_str().map(str::to_owned))
        .collect()
}

/// The `content.body`s of the `m.room.message` events in a list.
pub fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|event| event["type"] == "m.room.message")
        .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
        .collect()
}
