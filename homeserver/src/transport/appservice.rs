//! The outbound HTTP client for application services: plain HTTP/1.1 to the registration's
//! `url` (an IP literal or `localhost`, never a name to resolve), `Authorization: Bearer
//! <hs_token>`, one connection per request, every request bounded by a timeout and its answer
//! by a size cap.
//!
//! Deviation, by design: `https://` appservice URLs are refused when a registration is loaded
//! (`matrix::appservice`): a unit has no public CA to check an appservice's certificate
//! against, and appservices run beside the homeserver on loopback or the unit's own network.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// Largest answer read from an appservice (third-party lookups return lists).
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// Why a call to an appservice did not get a 2xx answer.
#[derive(Debug, Clone)]
pub enum CallError {
    /// The connection could not be made or broke before a full answer (or the answer was not
    /// HTTP).
    Connection(String),
    /// No full answer within the timeout.
    Timeout,
    /// It answered with a non-2xx status; the body as text (cut at 1 KiB).
    Status {
        /// The HTTP status.
        status: u16,
        /// The body.
        body: String,
    },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connection(why) => write!(f, "connection failed: {why}"),
            Self::Timeout => write!(f, "timed out"),
            Self::Status { status, body } => write!(f, "answered {status}: {body}"),
        }
    }
}

/// Calls `method {base_url}{path_and_query}` with `hs_token` and an optional JSON body;
/// returns the 2xx answer's body (not parsed: a transaction's answer need not be JSON).
pub async fn call(
    base_url: &str,
    hs_token: &str,
    method: Method,
    path_and_query: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Bytes, CallError> {
    let payload = body.map(|b| Bytes::from(b.to_string()));
    tokio::time::timeout(
        timeout,
        exchange(base_url, hs_token, method, path_and_query, payload),
    )
    .await
    .map_err(|_| CallError::Timeout)?
}

/// `host:port` and the path prefix of an `http://` base URL.
fn split_base(base_url: &str) -> Result<(String, &str), CallError> {
    let rest = base_url.strip_prefix("http://").ok_or_else(|| {
        CallError::Connection(format!(
            "{base_url} is not an http:// URL (https:// appservices are not supported)"
        ))
    })?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let has_port = match authority.rfind(']') {
        Some(end) => authority[end..].contains(':'),
        None => authority.contains(':'),
    };
    let addr = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((addr, prefix.trim_end_matches('/')))
}

async fn exchange(
    base_url: &str,
    hs_token: &str,
    method: Method,
    path_and_query: &str,
    payload: Option<Bytes>,
) -> Result<Bytes, CallError> {
    let (addr, prefix) = split_base(base_url)?;
    let host = addr.clone();
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| CallError::Connection(format!("connect: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| CallError::Connection(format!("HTTP handshake: {e}")))?;
    let driver = tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{prefix}{path_and_query}"))
        .header(header::HOST, host)
        .header(header::AUTHORIZATION, format!("Bearer {hs_token}"));
    if payload.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(payload.unwrap_or_default()))
        .map_err(|e| CallError::Connection(format!("request: {e}")))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| CallError::Connection(e.to_string()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| CallError::Connection(format!("reading the answer: {e}")))?
            .to_bytes();
        if status.is_success() {
            Ok(body)
        } else {
            let text = String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned();
            Err(CallError::Status {
                status: status.as_u16(),
                body: text,
            })
        }
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_split_into_address_and_prefix() {
        let (a, p) = split_base("http://127.0.0.1:9898").expect("ok");
        assert_eq!((a.as_str(), p), ("127.0.0.1:9898", ""));
        let (a, p) = split_base("http://localhost/bridge/").expect("ok");
        assert_eq!((a.as_str(), p), ("localhost:80", "/bridge"));
        let (a, _) = split_base("http://[::1]:8008").expect("ok");
        assert_eq!(a, "[::1]:8008");
        let (a, _) = split_base("http://[::1]").expect("ok");
        assert_eq!(a, "[::1]:80");
        assert!(split_base("https://127.0.0.1").is_err());
    }
}
