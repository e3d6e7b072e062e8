//! A small application service for black-box tests: an HTTP/1.1 server on 127.0.0.1 that
//! speaks the homeserver -> appservice half of the Application Service API.
//!
//! It records every transaction (`PUT /_matrix/app/v1/transactions/{txnId}`) with its txn ID in
//! the order received (a re-sent txn ID is recorded again, and [`TestAppservice::events`]
//! dedupes by txn ID as the spec tells an appservice to), answers `/ping`, user and alias
//! queries (through handlers a test sets) and third-party lookups (from tables a test fills),
//! and can be told to answer 500, garbage (bytes that are not HTTP), to hang until told
//! otherwise, or to refuse only transactions. Every request must carry `Authorization: Bearer
//! <hs_token>`; one that does not is answered 403 and counted in [`TestAppservice::bad_auth`].
//!
//! Each connection is answered once and closed (`Connection: close`), which keeps the server
//! a few dozen lines and lets a test count connections as requests.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How the appservice answers requests (every request, queries and ping included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers as an appservice should.
    Normal,
    /// `500 Internal Server Error` with a JSON error body.
    Error500,
    /// Writes bytes that are not an HTTP response and closes the connection.
    Garbage,
    /// Reads the request (a transaction is recorded) and answers nothing until the behaviour
    /// changes, then closes.
    Hang,
    /// Answers transactions `500` (not recorded) and everything else normally: an appservice
    /// that is up (it answers pings) and cannot take transactions yet.
    RejectTransactions,
}

/// One request the appservice received.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `PUT`, `POST`.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string (without `?`), percent-encoded as sent.
    pub query: String,
    /// The JSON body, `Null` if none or not JSON.
    pub body: Value,
    /// Whether `Authorization: Bearer <hs_token>` was present and right.
    pub authorised: bool,
}

type Handler = Box<dyn Fn(&str) -> bool + Send + Sync>;

struct State {
    behaviour: Behaviour,
    requests: Vec<Request>,
    transactions: Vec<(String, Value)>,
    /// When each entry of `transactions` arrived.
    arrived: Vec<Instant>,
    bad_auth: usize,
    user_handler: Option<Handler>,
    alias_handler: Option<Handler>,
    /// Answers of `GET /thirdparty/{kind}/{protocol}` (kind `protocol`, `location`, `user`)
    /// and of `GET /thirdparty/{kind}` (protocol `""`).
    thirdparty: BTreeMap<(String, String), Value>,
}

/// The running test appservice; dropping it stops the server.
pub struct TestAppservice {
    addr: SocketAddr,
    hs_token: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl TestAppservice {
    /// Starts the appservice on a free 127.0.0.1 port; it accepts `hs_token` from the server.
    pub fn start(hs_token: &str) -> TestAppservice {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the test appservice");
        let addr = listener.local_addr().expect("a bound address");
        let state = Arc::new(Mutex::new(State {
            behaviour: Behaviour::Normal,
            requests: Vec::new(),
            transactions: Vec::new(),
            arrived: Vec::new(),
            bad_auth: 0,
            user_handler: None,
            alias_handler: None,
            thirdparty: BTreeMap::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stp, token) = (Arc::clone(&state), Arc::clone(&stop), hs_token.to_owned());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (st, stp, token) = (Arc::clone(&st), Arc::clone(&stp), token.clone());
                thread::spawn(move || serve(stream, &st, &stp, &token));
            }
        });
        TestAppservice {
            addr,
            hs_token: hs_token.to_owned(),
            state,
            stop,
        }
    }

    /// `http://127.0.0.1:<port>`, the registration's `url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A registration file for this appservice: `id`, `as_token`, `sender_localpart`, the
    /// (non-exclusive unless written `exclusive:<regex>`) user, alias and room regexes, and
    /// `extra` YAML lines appended as written (`receive_ephemeral: true`, `protocols: [irc]`).
    pub fn registration(
        &self,
        id: &str,
        as_token: &str,
        sender_localpart: &str,
        namespaces: [&[&str]; 3],
        extra: &str,
    ) -> String {
        let list = |regexes: &[&str]| {
            if regexes.is_empty() {
                return " []\n".to_owned();
            }
            let mut out = String::from("\n");
            for re in regexes {
                let (exclusive, re) = match re.strip_prefix("exclusive:") {
                    Some(re) => (true, re),
                    None => (false, *re),
                };
                out.push_str(&format!(
                    "    - exclusive: {exclusive}\n      regex: {}\n",
                    json!(re)
                ));
            }
            out
        };
        format!(
            "id: {id}\nurl: {}\nas_token: {as_token}\nhs_token: {}\nsender_localpart: {sender_localpart}\n\
             rate_limited: false\nnamespaces:\n  users:{}  aliases:{}  rooms:{}{extra}\n",
            self.url(),
            self.hs_token,
            list(namespaces[0]),
            list(namespaces[1]),
            list(namespaces[2]),
        )
    }

    /// Writes `yaml` as `<data_dir>/appservices/<id>.yaml` (the server loads it at start or
    /// on reload).
    pub fn install(data_dir: &Path, id: &str, yaml: &str) {
        let dir = data_dir.join("appservices");
        std::fs::create_dir_all(&dir).expect("creating the appservices dir");
        std::fs::write(dir.join(format!("{id}.yaml")), yaml).expect("writing the registration");
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("test appservice state")
    }

    /// Changes how it answers from the next request on (a hanging request ends too).
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.state().behaviour = behaviour;
    }

    /// Every transaction received, in order, with its txn ID (re-sent ones again).
    pub fn transactions(&self) -> Vec<(String, Value)> {
        self.state().transactions.clone()
    }

    /// Each event ID of the unique transactions with when its transaction first arrived.
    pub fn event_arrivals(&self) -> Vec<(String, Instant)> {
        let st = self.state();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for ((txn, body), at) in st.transactions.iter().zip(&st.arrived) {
            if !seen.insert(txn.clone()) {
                continue;
            }
            for event in body
                .get("events")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(id) = event["event_id"].as_str() {
                    out.push((id.to_owned(), *at));
                }
            }
        }
        out
    }

    /// How many distinct transactions arrived.
    pub fn transaction_count(&self) -> usize {
        self.unique_transactions().len()
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.state().requests.clone()
    }

    /// Requests that came without the right `hs_token`.
    pub fn bad_auth(&self) -> usize {
        self.state().bad_auth
    }

    /// The transactions deduplicated by txn ID (first copy kept), in order.
    pub fn unique_transactions(&self) -> Vec<(String, Value)> {
        let mut seen = HashSet::new();
        self.transactions()
            .into_iter()
            .filter(|(id, _)| seen.insert(id.clone()))
            .collect()
    }

    /// The events of the unique transactions, in order.
    pub fn events(&self) -> Vec<Value> {
        self.section("events")
    }

    /// Every item of `key` (`events`, `ephemeral`, `de.sorunome.msc2409.to_device`, ...)
    /// across the unique transactions, in order.
    pub fn section(&self, key: &str) -> Vec<Value> {
        self.unique_transactions()
            .into_iter()
            .flat_map(|(_, body)| body.get(key).and_then(Value::as_array).cloned())
            .flatten()
            .collect()
    }

    /// The event IDs of [`TestAppservice::events`], in order.
    pub fn event_ids(&self) -> Vec<String> {
        self.events()
            .iter()
            .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Answers `GET /users/{userId}` with 200 when `handler` returns true (after it ran: it
    /// may create the user first), else 404.
    pub fn on_user_query(&self, handler: impl Fn(&str) -> bool + Send + Sync + 'static) {
        self.state().user_handler = Some(Box::new(handler));
    }

    /// Answers `GET /rooms/{alias}` like [`TestAppservice::on_user_query`].
    pub fn on_alias_query(&self, handler: impl Fn(&str) -> bool + Send + Sync + 'static) {
        self.state().alias_handler = Some(Box::new(handler));
    }

    /// Sets the answer of `GET /_matrix/app/v1/thirdparty/{kind}/{protocol}` (`kind` one of
    /// `protocol`, `location`, `user`; `protocol` empty for the `/thirdparty/{kind}` reverse
    /// lookups). Unset lookups answer 404.
    pub fn set_thirdparty(&self, kind: &str, protocol: &str, answer: Value) {
        self.state()
            .thirdparty
            .insert((kind.to_owned(), protocol.to_owned()), answer);
    }
}

impl Drop for TestAppservice {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Reads one request, records it, answers it, closes.
fn serve(stream: TcpStream, state: &Mutex<State>, stop: &AtomicBool, hs_token: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut length = 0usize;
    let mut authorised = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 {
            return;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().unwrap_or(0),
            "authorization" => authorised = value == format!("Bearer {hs_token}"),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target.clone(), String::new()),
    };
    let request = Request {
        method,
        path,
        query,
        body,
        authorised,
    };
    let behaviour = {
        let mut st = state.lock().expect("test appservice state");
        st.requests.push(request.clone());
        if !authorised {
            st.bad_auth += 1;
        }
        st.behaviour
    };
    let mut stream = stream;
    match behaviour {
        Behaviour::Garbage => {
            let _ = stream.write_all(b"\x00\x01 this is not HTTP \xff\r\n\r\n");
            return;
        }
        Behaviour::Hang => {
            // A transaction is taken in, and only its answer is lost: what a server that dies
            // or times out mid-request sees, so the re-send must carry the same txnId.
            if authorised
                && request.method == "PUT"
                && let Some(txn) = request.path.strip_prefix("/_matrix/app/v1/transactions/")
            {
                let mut st = state.lock().expect("test appservice state");
                st.transactions.push((decode(txn), request.body.clone()));
                st.arrived.push(Instant::now());
            }
            while !stop.load(Ordering::SeqCst)
                && state.lock().expect("test appservice state").behaviour == Behaviour::Hang
            {
                thread::sleep(Duration::from_millis(10));
            }
            return;
        }
        Behaviour::Error500 => {
            respond(
                &mut stream,
                500,
                &json!({"errcode": "M_UNKNOWN", "error": "told to fail"}),
            );
            return;
        }
        Behaviour::RejectTransactions
            if request.method == "PUT"
                && request.path.starts_with("/_matrix/app/v1/transactions/") =>
        {
            respond(
                &mut stream,
                500,
                &json!({"errcode": "M_UNKNOWN", "error": "not taking transactions"}),
            );
            return;
        }
        Behaviour::Normal | Behaviour::RejectTransactions => {}
    }
    if !authorised {
        respond(
            &mut stream,
            403,
            &json!({"errcode": "M_FORBIDDEN", "error": "bad hs_token"}),
        );
        return;
    }
    let (status, answer) = answer(state, &request);
    respond(&mut stream, status, &answer);
}

fn not_found() -> (u16, Value) {
    (404, json!({"errcode": "M_NOT_FOUND", "error": "not here"}))
}

/// What a well-behaved appservice answers to `request`.
fn answer(state: &Mutex<State>, request: &Request) -> (u16, Value) {
    let path = request.path.as_str();
    let lock = || state.lock().expect("test appservice state");
    if let Some(txn) = path.strip_prefix("/_matrix/app/v1/transactions/")
        && request.method == "PUT"
    {
        let mut st = lock();
        st.transactions.push((decode(txn), request.body.clone()));
        st.arrived.push(Instant::now());
        return (200, json!({}));
    }
    if path == "/_matrix/app/v1/ping" && request.method == "POST" {
        return (200, json!({}));
    }
    if let Some(user) = path.strip_prefix("/_matrix/app/v1/users/") {
        return query(state, &decode(user), true);
    }
    if let Some(alias) = path.strip_prefix("/_matrix/app/v1/rooms/") {
        return query(state, &decode(alias), false);
    }
    if let Some(rest) = path.strip_prefix("/_matrix/app/v1/thirdparty/") {
        let (kind, protocol) = rest.split_once('/').unwrap_or((rest, ""));
        let found = lock()
            .thirdparty
            .get(&(kind.to_owned(), decode(protocol)))
            .cloned();
        return found.map_or_else(not_found, |v| (200, v));
    }
    (
        404,
        json!({"errcode": "M_UNRECOGNIZED", "error": "unknown endpoint"}),
    )
}

/// Runs a query handler without holding the lock (it may call the homeserver, which may
/// query the appservice again).
fn query(state: &Mutex<State>, id: &str, users: bool) -> (u16, Value) {
    let taken = {
        let mut st = state.lock().expect("test appservice state");
        if users {
            st.user_handler.take()
        } else {
            st.alias_handler.take()
        }
    };
    let Some(handler) = taken else {
        return not_found();
    };
    let found = handler(id);
    {
        let mut st = state.lock().expect("test appservice state");
        let slot = if users {
            &mut st.user_handler
        } else {
            &mut st.alias_handler
        };
        slot.get_or_insert(handler);
    }
    if found { (200, json!({})) } else { not_found() }
}

fn respond(stream: &mut TcpStream, status: u16, body: &Value) {
    let body = body.to_string();
    let _ = stream.write_all(
        format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let _ = stream.flush();
}

/// Percent-decodes a path segment.
fn decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
