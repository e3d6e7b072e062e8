//! The outbound federation client: signed (X-Matrix) HTTPS requests to allow-listed peers.
//!
//! Architecture invariant: this is the only code that opens outbound connections, and it only
//! dials endpoints from an allow-listed peer card, verifying the peer's certificate against the
//! CA in that card. Names are never resolved through DNS, SRV or `.well-known`: an endpoint
//! that is not an IP address is resolved by the system resolver of the box (e.g. /etc/hosts),
//! exactly as the admin wrote it on the card.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::federation::peers::Allowlist;
use crate::federation::tls::server_host;
use crate::matrix::xmatrix::sign_request;
use crate::service::Signer;

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
}

/// Sends signed requests to peers.
#[derive(Clone)]
pub struct FederationClient {
    signer: Arc<Signer>,
    peers: Arc<Allowlist>,
    timeout: Duration,
}

impl FederationClient {
    /// A client signing as `signer` and dialling only `peers`.
    pub fn new(signer: Arc<Signer>, peers: Arc<Allowlist>, timeout: Duration) -> Self {
        Self {
            signer,
            peers,
            timeout,
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
                send_once(
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
}

#[allow(clippy::too_many_arguments)]
async fn send_once(
    endpoint: &str,
    tls: &Arc<rustls::ClientConfig>,
    destination: &str,
    method: &Method,
    path: &str,
    authorization: &str,
    payload: Bytes,
    has_body: bool,
) -> Result<(StatusCode, Bytes), String> {
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
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls_stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let driver = tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::HOST, destination)
        .header(header::AUTHORIZATION, authorization);
    if has_body {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request
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
    Ok((status, bytes))
}
