//! The outbound federation client: signed (X-Matrix) HTTPS requests to allow-listed peers.
//!
//! Architecture invariant: this is the only code that opens outbound connections, and it only
//! dials endpoints from an allow-listed peer card, verifying the peer's certificate against the
//! CA in that card. Names are never resolved through DNS, SRV or `.well-known`: an endpoint
//! that is not an IP address is resolved by the system resolver of the box (e.g. /etc/hosts),
//! exactly as the admin wrote it on the card.
//!
//! Connections are kept open for a short while after an answer and reused
//! ([`crate::transport::pool`]), so a steady stream of transactions to a peer pays the TCP and
//! TLS handshakes once rather than per request.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::{Error, ErrorCode};
use crate::matrix::keys::Signer;
use crate::matrix::xmatrix::sign_request;
use crate::transport::peers::Allowlist;
use crate::transport::pool::{Conn, Pool};
use crate::transport::tls::server_host;

/// Largest response body we accept from a peer.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Why an outbound request failed.
#[derive(Debug, thiserror::Error)]
pub enum FedError {
    /// The destination is not on the allow-list: nothing was sent.
    #[error("{0} is not an allow-listed peer")]
    NotAllowed(String),
    /// No endpoint of the peer could be reached.
    #[error("cannot reach {server}: {reason}")]
    Unreachable {
        /// The peer.
        server: String,
        /// The last failure.
        reason: String,
    },
    /// The peer answered with an error status.
    #[error("{server} answered {status}: {body}")]
    Status {
        /// The peer.
        server: String,
        /// HTTP status.
        status: StatusCode,
        /// Body (truncated).
        body: String,
    },
    /// The response was not what the API promises.
    #[error("bad response from {server}: {reason}")]
    BadResponse {
        /// The peer.
        server: String,
        /// What was wrong.
        reason: String,
    },
    /// The peer's answer is larger than the caller accepts (see
    /// [`FederationClient::get_raw`]); reading stopped at the limit.
    #[error("{server} answered with more than {limit} bytes")]
    TooLarge {
        /// The peer.
        server: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The caller's deadline passed before the peer answered (see
    /// [`FederationClient::get_raw`]).
    #[error("{server} did not answer within {after:?}")]
    TimedOut {
        /// The peer.
        server: String,
        /// The deadline that passed.
        after: Duration,
    },
}

/// A successful answer of [`FederationClient::get_raw`], kept as bytes with its headers.
#[derive(Debug)]
pub struct RawResponse {
    /// The response headers (`Content-Type` carries a multipart boundary).
    pub headers: HeaderMap,
    /// The whole body, at most the limit the caller gave.
    pub body: Bytes,
}

/// Sends signed requests to peers.
#[derive(Clone)]
pub struct FederationClient {
    signer: Arc<Signer>,
    peers: Arc<Allowlist>,
    timeout: Duration,
    pool: Arc<Pool>,
}

impl FederationClient {
    /// A client signing as `signer` and dialling only `peers`.
    pub fn new(signer: Arc<Signer>, peers: Arc<Allowlist>, timeout: Duration) -> Self {
        Self {
            signer,
            peers,
            timeout,
            pool: Arc::default(),
        }
    }

    /// Our server name, as the `origin` of what we send.
    pub fn origin(&self) -> &str {
        self.signer.server_name.as_str()
    }

    /// The allow-list this client dials.
    pub fn peers(&self) -> &Arc<Allowlist> {
        &self.peers
    }

    /// Sends `method path` (path includes any query) with an optional JSON body and returns
    /// the JSON response.
    pub async fn request(
        &self,
        destination: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, FedError> {
        let peer = self
            .peers
            .get(destination)
            .ok_or_else(|| FedError::NotAllowed(destination.to_owned()))?;
        let origin = self.signer.server_name.as_str();
        let authorization = sign_request(
            &self.signer.key,
            origin,
            destination,
            method.as_str(),
            path,
            body.as_ref(),
        )
        .map_err(|err| FedError::BadResponse {
            server: destination.to_owned(),
            reason: err.to_string(),
        })?;
        let payload = match &body {
            Some(body) => Bytes::from(body.to_string()),
            None => Bytes::new(),
        };
        let mut last_error = "no endpoints".to_owned();
        for endpoint in &peer.card.endpoints {
            let attempt = tokio::time::timeout(
                self.timeout,
                self.send_once(
                    endpoint,
                    &peer.tls,
                    destination,
                    &method,
                    path,
                    &authorization,
                    payload.clone(),
                    body.is_some(),
                ),
            )
            .await;
            match attempt {
                Ok(Ok((status, bytes))) => {
                    if !status.is_success() {
                        return Err(FedError::Status {
                            server: destination.to_owned(),
                            status,
                            body: String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
                                .into_owned(),
                        });
                    }
                    return serde_json::from_slice(&bytes).map_err(|err| FedError::BadResponse {
                        server: destination.to_owned(),
                        reason: format!("not JSON: {err}"),
                    });
                }
                Ok(Err(reason)) => last_error = format!("{endpoint}: {reason}"),
                Err(_) => last_error = format!("{endpoint}: timed out after {:?}", self.timeout),
            }
        }
        Err(FedError::Unreachable {
            server: destination.to_owned(),
            reason: last_error,
        })
    }

    /// [`FederationClient::request`], with the answer read as its wire type (`matrix::wire`):
    /// an answer without a field the spec requires is [`FedError::BadResponse`], the peer's
    /// failure, never a default.
    pub async fn request_as<T: serde::de::DeserializeOwned>(
        &self,
        destination: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, FedError> {
        let answer = self.request(destination, method, path, body).await?;
        serde_json::from_value(answer).map_err(|err| FedError::BadResponse {
            server: destination.to_owned(),
            reason: format!("malformed answer to {path}: {err}"),
        })
    }

    /// Sends a signed `GET path` (path includes any query) and returns the answer as bytes
    /// with its headers, for responses that are not JSON (media: `multipart/mixed`).
    ///
    /// Bounded in every direction, because the answer may be large and the peer slow: the
    /// answer must *start* (response headers) within `deadline` overall, each endpoint
    /// getting at most the client's request timeout of it; once it has started, the body must
    /// keep moving (no gap longer than the request timeout) and stop at `max_bytes`
    /// ([`FedError::TooLarge`], checked against `Content-Length` first). A missed `deadline`
    /// is [`FedError::TimedOut`]; an error status is [`FedError::Status`] with the start of
    /// the body. Kept apart from [`FederationClient::request`] so that JSON requests keep
    /// their simpler path.
    pub async fn get_raw(
        &self,
        destination: &str,
        path: &str,
        max_bytes: usize,
        deadline: Duration,
    ) -> Result<RawResponse, FedError> {
        let peer = self
            .peers
            .get(destination)
            .ok_or_else(|| FedError::NotAllowed(destination.to_owned()))?;
        let origin = self.signer.server_name.as_str();
        let authorization = sign_request(&self.signer.key, origin, destination, "GET", path, None)
            .map_err(|err| FedError::BadResponse {
                server: destination.to_owned(),
                reason: err.to_string(),
            })?;
        let give_up = Instant::now() + deadline;
        let mut last_error = "no endpoints".to_owned();
        for endpoint in &peer.card.endpoints {
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let budget = left.min(self.timeout);
            let started = tokio::time::timeout(
                budget,
                self.start_get(endpoint, &peer.tls, destination, path, &authorization),
            )
            .await;
            let (response, conn) = match started {
                Ok(Ok(started)) => started,
                Ok(Err(reason)) => {
                    last_error = format!("{endpoint}: {reason}");
                    continue;
                }
                Err(_) => {
                    last_error = format!("{endpoint}: no answer within {budget:?}");
                    continue;
                }
            };
            let read = self
                .read_raw(destination, response, max_bytes.max(ERROR_BODY_BYTES))
                .await;
            let (status, headers, body) = match read {
                Ok(read) => {
                    self.pool.put(endpoint, &peer.tls, conn);
                    read
                }
                Err(ReadFailure::Fatal(err)) => return Err(err),
                Err(ReadFailure::Endpoint(reason)) => {
                    last_error = format!("{endpoint}: {reason}");
                    continue;
                }
            };
            if !status.is_success() {
                return Err(FedError::Status {
                    server: destination.to_owned(),
                    status,
                    body: String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_BYTES)])
                        .into_owned(),
                });
            }
            if body.len() > max_bytes {
                return Err(FedError::TooLarge {
                    server: destination.to_owned(),
                    limit: max_bytes,
                });
            }
            return Ok(RawResponse { headers, body });
        }
        if Instant::now() >= give_up {
            return Err(FedError::TimedOut {
                server: destination.to_owned(),
                after: deadline,
            });
        }
        Err(FedError::Unreachable {
            server: destination.to_owned(),
            reason: last_error,
        })
    }

    /// Reads a started response's body, frame by frame, within `limit` bytes and with no gap
    /// longer than the request timeout.
    async fn read_raw(
        &self,
        destination: &str,
        response: hyper::Response<hyper::body::Incoming>,
        limit: usize,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ReadFailure> {
        let too_large = || {
            ReadFailure::Fatal(FedError::TooLarge {
                server: destination.to_owned(),
                limit,
            })
        };
        let (parts, mut body) = response.into_parts();
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(too_large());
        }
        let mut collected: Vec<u8> = Vec::new();
        loop {
            let frame = match tokio::time::timeout(self.timeout, body.frame()).await {
                Err(_) => {
                    return Err(ReadFailure::Endpoint(format!(
                        "the body stalled for {:?}",
                        self.timeout
                    )));
                }
                Ok(None) => break,
                Ok(Some(Err(err))) => {
                    return Err(ReadFailure::Endpoint(format!("reading response: {err}")));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                if collected.len().saturating_add(data.len()) > limit {
                    return Err(too_large());
                }
                collected.extend_from_slice(&data);
            }
        }
        Ok((parts.status, parts.headers, Bytes::from(collected)))
    }
}

/// How much of an error answer [`FederationClient::get_raw`] reads and reports.
const ERROR_BODY_BYTES: usize = 4096;

/// Why reading a raw answer stopped: give up on the request, or try the next endpoint.
enum ReadFailure {
    Fatal(FedError),
    Endpoint(String),
}

/// Opens a connection to `endpoint`: TCP, TLS verified against the peer card's anchor (`tls`),
/// then the HTTP/1.1 handshake. The connection's task runs until the [`Conn`] is dropped or
/// the peer closes it.
async fn connect(
    endpoint: &str,
    tls: &Arc<rustls::ClientConfig>,
    destination: &str,
) -> Result<Conn, String> {
    let stream = TcpStream::connect(endpoint)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server_host(destination).to_owned())
        .map_err(|e| format!("server name: {e}"))?;
    let tls_stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls_stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let driver = tokio::spawn(connection).abort_handle();
    Ok(Conn::new(sender, driver))
}

impl FederationClient {
    /// Sends the request `build` makes on an idle connection to `endpoint` when there is one,
    /// else on a new one, and returns the answer (headers read) with its connection, to be put
    /// back into the pool once the body is read to the end. A reused connection that fails
    /// before answering (the peer closed it while idle) is replaced by a new one, once; the
    /// request may then reach the peer twice, which every federation request tolerates
    /// (transactions are idempotent by ID, the rest are reads or idempotent writes).
    async fn exchange(
        &self,
        endpoint: &str,
        tls: &Arc<rustls::ClientConfig>,
        destination: &str,
        build: impl Fn() -> Result<Request<Full<Bytes>>, String>,
    ) -> Result<(hyper::Response<hyper::body::Incoming>, Conn), String> {
        if let Some(mut conn) = self.pool.take(endpoint, tls) {
            debug_assert!(conn.reused());
            if conn.sender.ready().await.is_ok() {
                match conn.sender.send_request(build()?).await {
                    Ok(response) => return Ok((response, conn)),
                    Err(err) => {
                        tracing::debug!(%endpoint, error = %err, "idle federation connection failed; opening a new one");
                    }
                }
            }
        }
        let mut conn = connect(endpoint, tls, destination).await?;
        let response = conn
            .sender
            .send_request(build()?)
            .await
            .map_err(|e| format!("request: {e}"))?;
        Ok((response, conn))
    }

    /// Sends a signed `GET` to `endpoint`, returning the response once its headers arrived,
    /// with the connection it came on.
    async fn start_get(
        &self,
        endpoint: &str,
        tls: &Arc<rustls::ClientConfig>,
        destination: &str,
        path: &str,
        authorization: &str,
    ) -> Result<(hyper::Response<hyper::body::Incoming>, Conn), String> {
        self.exchange(endpoint, tls, destination, || {
            Request::builder()
                .method(Method::GET)
                .uri(path)
                .header(header::HOST, destination)
                .header(header::AUTHORIZATION, authorization)
                .body(Full::new(Bytes::new()))
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// One signed request to `endpoint` with a JSON body (or none), read whole.
    #[allow(clippy::too_many_arguments)]
    async fn send_once(
        &self,
        endpoint: &str,
        tls: &Arc<rustls::ClientConfig>,
        destination: &str,
        method: &Method,
        path: &str,
        authorization: &str,
        payload: Bytes,
        has_body: bool,
    ) -> Result<(StatusCode, Bytes), String> {
        let (response, conn) = self
            .exchange(endpoint, tls, destination, || {
                let mut request = Request::builder()
                    .method(method.clone())
                    .uri(path)
                    .header(header::HOST, destination)
                    .header(header::AUTHORIZATION, authorization);
                if has_body {
                    request = request.header(header::CONTENT_TYPE, "application/json");
                }
                request
                    .body(Full::new(payload.clone()))
                    .map_err(|e| e.to_string())
            })
            .await?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading response: {e}"))?
            .to_bytes();
        self.pool.put(endpoint, tls, conn);
        Ok((status, bytes))
    }
}

/// Maps an outbound failure to a client-facing error.
pub fn fed_error(err: FedError) -> Error {
    use FedError as F;
    match err {
        F::NotAllowed(server) => {
            Error::forbidden(format!("{server} is not an allow-listed peer of this unit"))
        }
        F::Status {
            server,
            status,
            body,
        } => {
            let parsed = serde_json::from_str::<Value>(&body).ok();
            let errcode = parsed
                .as_ref()
                .and_then(|v| v.get("errcode").and_then(Value::as_str).map(str::to_owned));
            let detail = parsed
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or(body);
            // Codes that tell the client what to do next keep their meaning across the hop.
            let passed = match errcode.as_deref() {
                Some("M_UNABLE_TO_AUTHORISE_JOIN") => Some(ErrorCode::UnableToAuthoriseJoin),
                Some("M_UNABLE_TO_GRANT_JOIN") => Some(ErrorCode::UnableToGrantJoin),
                Some("M_INCOMPATIBLE_ROOM_VERSION") => Some(ErrorCode::IncompatibleRoomVersion),
                _ => None,
            };
            if let Some(code) = passed {
                Error::new(code, format!("{server}: {detail}"))
            } else if status == StatusCode::FORBIDDEN {
                Error::forbidden(format!("{server} refused: {detail}"))
            } else if status == StatusCode::NOT_FOUND {
                Error::not_found(format!("{server}: {detail}"))
            } else {
                Error::new(
                    ErrorCode::Unknown,
                    format!("{server} answered {status}: {detail}"),
                )
            }
        }
        // A peer that answers what the API does not promise is a bad gateway, not our fault.
        err @ F::BadResponse { .. } => Error::new(ErrorCode::BadGateway, err.to_string()),
        other => Error::new(ErrorCode::Unknown, other.to_string()),
    }
}
