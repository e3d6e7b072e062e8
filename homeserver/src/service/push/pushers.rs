//! Pushers (`GET /pushers`, `POST /pushers/set`) and the worker that delivers queued
//! notifications to push gateways (`POST /_matrix/push/v1/notify`).
//!
//! Notifications are queued in `push_outbox` in the transaction that stores the event, so a
//! gateway that is down gets them when it is back (within [`MAX_AGE`]). The worker is woken by
//! store commits that queued something, sends the oldest due rows, and on failure postpones
//! every queued row of that pusher with capped exponential backoff, so one dead gateway does
//! not hold up the others.
//!
//! A closed unit resolves no names and holds no public CA roots, so only `http://` URLs whose
//! host is an IP address are delivered to. Other URLs (`https://`, host names) are accepted
//! and listed, because clients expect `/pushers/set` to succeed, but nothing is queued for
//! them.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use ruma::{OwnedDeviceId, OwnedUserId};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::missing;
use crate::error::{Error, Result};
use crate::service::Server;
use crate::store::push::{self as store, Pusher, QueuedPush};
use crate::store::{Store, events, state};
use crate::util::now_ms;

/// The path the spec requires of a push gateway URL.
const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";
/// Longest pushkey (bytes) and app ID (characters) the spec allows.
const MAX_PUSHKEY_BYTES: usize = 512;
const MAX_APP_ID_CHARS: usize = 64;
/// Queued pushes sent per round.
const BATCH: usize = 20;
/// A notification older than this is dropped instead of sent: it would only be noise.
const MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Longest wait between retries of a failing gateway.
const MAX_BACKOFF: Duration = Duration::from_secs(60 * 60);
/// Whole-request timeout for one gateway call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest gateway response we read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A pusher as `GET /pushers` shows it (spec: `Pusher`).
#[derive(Debug, Serialize)]
pub struct ClientPusher {
    /// Routing key at the gateway.
    pub pushkey: String,
    /// `http`.
    pub kind: String,
    /// The application.
    pub app_id: String,
    /// Shown to the user.
    pub app_display_name: String,
    /// Shown to the user.
    pub device_display_name: String,
    /// The device-specific rule set tag, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_tag: Option<String>,
    /// Preferred language.
    pub lang: String,
    /// `url`, `format` and the client's own keys: arbitrary JSON beyond those two.
    pub data: Value,
}

/// `GET /pushers` (spec: `{"pushers": […]}`).
#[derive(Debug, Serialize)]
pub struct PusherList {
    /// The user's pushers.
    pub pushers: Vec<ClientPusher>,
}

fn client_pusher(p: &Pusher) -> ClientPusher {
    ClientPusher {
        pushkey: p.pushkey.clone(),
        kind: p.kind.clone(),
        app_id: p.app_id.clone(),
        app_display_name: p.app_display_name.clone(),
        device_display_name: p.device_display_name.clone(),
        profile_tag: p.profile_tag.clone(),
        lang: p.lang.clone(),
        // Written by `set` from a checked object; `{}` only if the row was damaged.
        data: serde_json::from_str::<Value>(&p.data).unwrap_or_else(|_| json!({})),
    }
}

/// `GET /pushers`.
pub async fn list(server: &Server, user_id: OwnedUserId) -> Result<PusherList> {
    server
        .store
        .read(move |conn| {
            let pushers = store::pushers(conn, user_id.as_str())?;
            Ok(PusherList {
                pushers: pushers.iter().map(client_pusher).collect(),
            })
        })
        .await
}

/// The body of `POST /pushers/set` (`pusher.yaml`). Every field is optional to serde so that a
/// missing one is `M_MISSING_PARAM` naming it, as the spec's example answer does ([`set`]
/// checks which are required: `kind`, `app_id` and `pushkey` always, the rest unless `kind`
/// is `null`); a field of the wrong type (`append: "yes"`, `data.format: 1`) is `M_BAD_JSON`.
#[derive(Debug, Deserialize)]
pub struct SetPusherRequest {
    /// Routing key at the gateway (at most 512 bytes).
    #[serde(default)]
    pub pushkey: Option<String>,
    /// `http`, or `null` to delete the pusher; outer `None` when absent.
    #[serde(default, deserialize_with = "present")]
    pub kind: Option<Option<String>>,
    /// Reverse-DNS application ID (at most 64 characters).
    #[serde(default)]
    pub app_id: Option<String>,
    /// Shown to the user.
    #[serde(default)]
    pub app_display_name: Option<String>,
    /// Shown to the user.
    #[serde(default)]
    pub device_display_name: Option<String>,
    /// The device-specific rule set tag.
    #[serde(default)]
    pub profile_tag: Option<String>,
    /// Preferred language.
    #[serde(default)]
    pub lang: Option<String>,
    /// For the pusher implementation: `url`, `format` and the client's own keys.
    #[serde(default)]
    pub data: Option<PusherData>,
    /// Keep other users' pushers with the same app ID and pushkey (default false).
    #[serde(default)]
    pub append: bool,
}

/// A pusher's `data` (`PusherData`): `url` and `format` typed, any other key kept as the client
/// sent it, since the spec has the server forward it to the gateway.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct PusherData {
    /// The gateway's `/notify` URL (required for `http` pushers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `event_id_only`, or absent for full notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The client's own keys.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A present field is `Some`, even `null` (`Some(None)`); with `#[serde(default)]` an absent
/// one is `None`.
fn present<'de, D, T>(deserializer: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Where to deliver for a pusher URL: `Ok(Some(ip:port))` if we can, `Ok(None)` if the URL is
/// valid but not reachable from a closed unit, an error if it is not a push gateway URL.
fn gateway_of(url: &str) -> Result<Option<String>> {
    let uri: Uri = url
        .parse()
        .map_err(|_| Error::invalid_param("'data.url' is not a URL"))?;
    let scheme = uri.scheme_str().unwrap_or_default();
    if !matches!(scheme, "http" | "https") || uri.host().is_none() {
        return Err(Error::invalid_param("'data.url' must be an http(s) URL"));
    }
    if uri.path() != NOTIFY_PATH {
        return Err(Error::invalid_param(format!(
            "'data.url' must have the path {NOTIFY_PATH}"
        )));
    }
    let host = uri.host().unwrap_or_default();
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>();
    Ok(match (scheme, ip) {
        ("http", Ok(ip)) => Some(SocketAddr::new(ip, uri.port_u16().unwrap_or(80)).to_string()),
        _ => None,
    })
}

/// `POST /pushers/set`: creates, replaces or (with `kind: null`) deletes a pusher.
pub async fn set(
    server: &Server,
    user_id: OwnedUserId,
    device_id: Option<OwnedDeviceId>,
    body: SetPusherRequest,
) -> Result<()> {
    let mut absent: Vec<&str> = Vec::new();
    for (name, present) in [
        ("pushkey", body.pushkey.is_some()),
        ("app_id", body.app_id.is_some()),
        ("kind", body.kind.is_some()),
    ] {
        if !present {
            absent.push(name);
        }
    }
    let (Some(pushkey), Some(app_id), Some(kind)) = (body.pushkey, body.app_id, body.kind) else {
        return Err(missing(&absent));
    };
    if pushkey.len() > MAX_PUSHKEY_BYTES {
        return Err(Error::invalid_param("'pushkey' is longer than 512 bytes"));
    }
    if app_id.chars().count() > MAX_APP_ID_CHARS {
        return Err(Error::invalid_param(
            "'app_id' is longer than 64 characters",
        ));
    }
    let user = user_id.to_string();
    let Some(kind) = kind else {
        server
            .store
            .write(move |tx| store::delete_pusher(tx, &user, &app_id, &pushkey).map(|_| ()))
            .await?;
        return Ok(());
    };
    if kind != "http" {
        return Err(Error::invalid_param(format!(
            "Pusher kind {kind:?} is not supported; use \"http\""
        )));
    }
    for (name, present) in [
        ("app_display_name", body.app_display_name.is_some()),
        ("device_display_name", body.device_display_name.is_some()),
        ("lang", body.lang.is_some()),
        ("data", body.data.is_some()),
    ] {
        if !present {
            absent.push(name);
        }
    }
    let (Some(app_display_name), Some(device_display_name), Some(lang), Some(data)) = (
        body.app_display_name,
        body.device_display_name,
        body.lang,
        body.data,
    ) else {
        return Err(missing(&absent));
    };
    let url = data
        .url
        .as_deref()
        .ok_or_else(|| Error::invalid_param("'data.url' is required for http pushers"))?;
    let gateway = gateway_of(url)?;
    if gateway.is_none() {
        tracing::warn!(user = %user_id, url, "pusher URL is not an http:// IP address: it is stored but never delivered to");
    }
    let data = serde_json::to_string(&data).map_err(|e| Error::internal(e.to_string()))?;
    let pusher = Pusher {
        user_id: user,
        app_id,
        pushkey,
        kind,
        app_display_name,
        device_display_name,
        profile_tag: body.profile_tag,
        lang,
        data,
        gateway,
        device_id: crate::service::device_key(device_id.as_deref()).to_owned(),
        pushkey_ts: now_ms(),
    };
    let append = body.append;
    server
        .store
        .write(move |tx| {
            if !append {
                store::delete_pushers_of_others(
                    tx,
                    &pusher.user_id,
                    &pusher.app_id,
                    &pusher.pushkey,
                )?;
            }
            store::upsert_pusher(tx, &pusher)
        })
        .await
}

/// Runs until `shutdown` flips: delivers due pushes, then waits for a commit that queued
/// something, the next retry time, or shutdown.
pub async fn run(store: Store, mut shutdown: watch::Receiver<bool>) {
    let mut commits = store.subscribe_commits();
    loop {
        let round = tokio::select! {
            round = deliver_due(&store) => round,
            _ = crate::util::stopped(&mut shutdown) => break,
        };
        let floor = match round {
            Ok(0) => Duration::from_millis(50),
            // More may be due right away.
            Ok(_) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "push delivery round failed");
                Duration::from_secs(1)
            }
        };
        let wait = match store.read(store::next_push_due).await {
            Ok(Some(due)) => Duration::from_millis(due.saturating_sub(now_ms()).max(0) as u64),
            _ => MAX_BACKOFF,
        }
        .clamp(floor, MAX_BACKOFF);
        tokio::select! {
            changed = commits.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep(wait) => {}
            _ = crate::util::stopped(&mut shutdown) => break,
        }
    }
}

/// Why one gateway call failed.
enum PostError {
    /// Worth retrying (network, timeout, 5xx, 429).
    Transient(String),
    /// The gateway refused the request itself; retrying would not help.
    Permanent(String),
}

/// Sends the due pushes of one round; returns how many it handled.
async fn deliver_due(store: &Store) -> Result<usize> {
    let now = now_ms();
    let cutoff = now - MAX_AGE.as_millis() as i64;
    let work = store
        .read(move |conn| {
            let mut work = Vec::new();
            for queued in store::due_pushes(conn, now, BATCH)? {
                let body = if queued.created_ts < cutoff {
                    None
                } else {
                    notify_body(conn, &queued)?
                };
                work.push((queued, body));
            }
            Ok(work)
        })
        .await?;
    let handled = work.len();
    let mut failing: HashSet<(String, String, String)> = HashSet::new();
    for (queued, body) in work {
        let p = &queued.pusher;
        let key = (p.user_id.clone(), p.app_id.clone(), p.pushkey.clone());
        if failing.contains(&key) {
            continue;
        }
        let id = queued.id;
        let (Some(body), Some(gateway)) = (body, p.gateway.clone()) else {
            // Too old, or the event or notification is gone: nothing to say any more.
            store.write(move |tx| store::delete_push(tx, id)).await?;
            continue;
        };
        match post(&gateway, &p.data, &body).await {
            Ok(rejected) => {
                let reject = rejected.contains(&p.pushkey);
                if reject {
                    tracing::warn!(user = %p.user_id, app_id = %p.app_id, "push gateway rejected the pushkey: removing the pusher");
                }
                let (user, app, pushkey) = key;
                store
                    .write(move |tx| {
                        store::delete_push(tx, id)?;
                        if reject {
                            store::delete_pusher(tx, &user, &app, &pushkey)?;
                        }
                        Ok(())
                    })
                    .await?;
            }
            Err(PostError::Permanent(reason)) => {
                tracing::warn!(user = %p.user_id, gateway = %gateway, error = %reason, "push gateway refused a notification: dropping it");
                store.write(move |tx| store::delete_push(tx, id)).await?;
            }
            Err(PostError::Transient(reason)) => {
                let exponent = queued.attempts.clamp(0, 16) as u32;
                let delay = Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF);
                tracing::warn!(user = %p.user_id, gateway = %gateway, error = %reason, retry_in = ?delay, "push delivery failed");
                failing.insert(key.clone());
                let (user, app, pushkey) = key;
                let next = now_ms() + delay.as_millis() as i64;
                store
                    .write(move |tx| store::postpone_pusher(tx, &user, &app, &pushkey, next))
                    .await?;
            }
        }
    }
    Ok(handled)
}

/// The tweaks of a rule's actions, as the gateway wants them (`highlight` without a value is
/// `true`).
fn tweaks(actions: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for action in actions.as_array().into_iter().flatten() {
        if let Some(name) = action.get("set_tweak").and_then(Value::as_str) {
            out.insert(
                name.to_owned(),
                action.get("value").cloned().unwrap_or(Value::Bool(true)),
            );
        }
    }
    out
}

/// A state event's content field in the room's current state.
fn state_field(
    conn: &Connection,
    room_id: &str,
    kind: &str,
    key: &str,
    field: &str,
) -> Result<Option<String>> {
    let Some(id) = state::current_state_id(conn, room_id, kind, key)? else {
        return Ok(None);
    };
    Ok(events::get_event(conn, &id)?.and_then(|event| {
        event
            .pdu
            .content_value()
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }))
}

/// The `/notify` body for one queued push, or `None` if there is nothing to say any more.
fn notify_body(conn: &Connection, queued: &QueuedPush) -> Result<Option<Value>> {
    let p = &queued.pusher;
    let Some(event_id) = store::event_at(conn, queued.stream_pos)? else {
        return Ok(None);
    };
    let Some(event) = events::get_event(conn, &event_id)? else {
        return Ok(None);
    };
    let Some(actions) = store::notification_actions(
        conn,
        &p.user_id,
        event.pdu.room_id.as_str(),
        queued.stream_pos,
    )?
    else {
        return Ok(None);
    };
    let actions: Value = serde_json::from_str(&actions).unwrap_or(Value::Null);
    let tweaks = tweaks(&actions);
    // Written by `set` from a checked body; a damaged row still delivers, in full format.
    let data: PusherData = serde_json::from_str(&p.data).unwrap_or_else(|err| {
        tracing::warn!(user = %p.user_id, app_id = %p.app_id, %err, "stored pusher data does not parse");
        PusherData::default()
    });
    let event_id_only = data.format.as_deref() == Some("event_id_only");
    // The spec: everything but `url` is passed on to the gateway.
    let data = PusherData { url: None, ..data };
    let pdu = &event.pdu;
    let room_id = pdu.room_id.as_str();
    let unread = store::total_unread(conn, &p.user_id)?;
    let mut counts = Map::new();
    if unread > 0 {
        counts.insert("unread".to_owned(), json!(unread));
    }
    let prio = if tweaks.contains_key("sound") || tweaks.get("highlight") == Some(&json!(true)) {
        "high"
    } else {
        "low"
    };
    let mut notification = json!({
        "event_id": pdu.event_id,
        "room_id": room_id,
        "counts": counts,
        "prio": prio,
        "devices": [{
            "app_id": p.app_id,
            "pushkey": p.pushkey,
            "pushkey_ts": p.pushkey_ts / 1000,
            "data": data,
            "tweaks": tweaks,
        }],
    });
    if !event_id_only {
        notification["type"] = json!(pdu.kind.to_string());
        notification["sender"] = json!(pdu.sender);
        notification["content"] = pdu.content_value();
        if let Some(name) = state_field(
            conn,
            room_id,
            "m.room.member",
            pdu.sender.as_str(),
            "displayname",
        )? {
            notification["sender_display_name"] = json!(name);
        }
        if let Some(name) = state_field(conn, room_id, "m.room.name", "", "name")? {
            notification["room_name"] = json!(name);
        }
        if let Some(alias) = state_field(conn, room_id, "m.room.canonical_alias", "", "alias")? {
            notification["room_alias"] = json!(alias);
        }
        if pdu.state_key.as_deref() == Some(p.user_id.as_str()) {
            notification["user_is_target"] = json!(true);
        }
    }
    Ok(Some(json!({"notification": notification})))
}

/// A gateway's answer to `/notify` (push gateway API: `rejected` required).
#[derive(Deserialize)]
struct NotifyResponse {
    /// Pushkeys the gateway no longer accepts: their pushers are deleted.
    rejected: Vec<String>,
}

/// POSTs a notification to a gateway; returns the pushkeys it rejected.
async fn post(gateway: &str, data: &str, body: &Value) -> Result<Vec<String>, PostError> {
    let url = serde_json::from_str::<PusherData>(data)
        .ok()
        .and_then(|d| d.url)
        .ok_or_else(|| PostError::Permanent("pusher has no URL".to_owned()))?;
    let uri: Uri = url
        .parse()
        .map_err(|_| PostError::Permanent(format!("bad URL {url}")))?;
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_else(|| gateway.to_owned());
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| NOTIFY_PATH.to_owned());
    let payload = Bytes::from(body.to_string());
    let attempt = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let stream = TcpStream::connect(gateway)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        let driver = tokio::spawn(connection);
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(payload))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading response: {e}"))?
            .to_bytes();
        driver.abort();
        Ok::<_, String>((status, bytes))
    })
    .await;
    let (status, bytes) = match attempt {
        Ok(Ok(answer)) => answer,
        Ok(Err(reason)) => return Err(PostError::Transient(reason)),
        Err(_) => {
            return Err(PostError::Transient(format!(
                "timed out after {REQUEST_TIMEOUT:?}"
            )));
        }
    };
    if status.is_success() {
        // A gateway's 200 without a readable `rejected` list rejects nothing: the pusher is
        // kept rather than deleted on a gateway's malformed answer.
        return Ok(match serde_json::from_slice::<NotifyResponse>(&bytes) {
            Ok(answer) => answer.rejected,
            Err(err) => {
                tracing::warn!(gateway, %err, "push gateway's answer has no valid 'rejected' list");
                Vec::new()
            }
        });
    }
    let reason = format!(
        "{status}: {}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
    );
    if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
        Err(PostError::Permanent(reason))
    } else {
        Err(PostError::Transient(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls() {
        assert_eq!(
            gateway_of("http://10.0.0.5:5000/_matrix/push/v1/notify").expect("valid"),
            Some("10.0.0.5:5000".to_owned())
        );
        assert_eq!(
            gateway_of("http://[::1]/_matrix/push/v1/notify").expect("valid"),
            Some("[::1]:80".to_owned())
        );
        assert_eq!(
            gateway_of("https://push.example.org/_matrix/push/v1/notify").expect("valid"),
            None
        );
        assert!(gateway_of("http://10.0.0.5/other").is_err());
        assert!(gateway_of("ftp://10.0.0.5/_matrix/push/v1/notify").is_err());
        assert!(gateway_of("not a url").is_err());
    }

    #[test]
    fn highlight_without_value_is_true() {
        let t = tweaks(
            &json!(["notify", {"set_tweak": "highlight"}, {"set_tweak": "sound", "value": "default"}]),
        );
        assert_eq!(t.get("highlight"), Some(&json!(true)));
        assert_eq!(t.get("sound"), Some(&json!("default")));
    }
}
