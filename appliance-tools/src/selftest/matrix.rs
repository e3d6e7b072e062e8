//! The little of the Matrix client-server API the selftest needs, over plain HTTP with `ureq`,
//! every request bounded by the deadline of the step it belongs to.
//!
//! Errors are one line of text for the step report: which request, and the homeserver's
//! `errcode` and message or the transport error.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The device display name of the temporary devices, so an admin who sees one in a device list
/// knows where it came from.
const DEVICE_NAME: &str = "appliance selftest";

/// How long one `/sync` long poll may wait for news before the step checks its deadline again.
const SYNC_POLL: Duration = Duration::from_secs(5);

/// When the current step must be finished.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    until: Instant,
    limit: Duration,
}

impl Deadline {
    /// A deadline `limit` from now.
    pub fn after(limit: Duration) -> Self {
        Self {
            until: Instant::now() + limit,
            limit,
        }
    }

    /// The time left, or the error that the step ran out of time.
    pub fn remaining(&self) -> Result<Duration, String> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(self.expired())
        } else {
            Ok(left)
        }
    }

    /// The step's time limit in whole seconds, for messages.
    pub fn secs(&self) -> u64 {
        self.limit.as_secs()
    }

    /// The error of a step that ran out of time.
    pub fn expired(&self) -> String {
        format!(
            "no result within the step's time limit of {} s",
            self.secs()
        )
    }
}

/// One homeserver's client API, e.g. `http://127.0.0.1:8008`.
#[derive(Clone)]
pub struct Api {
    agent: ureq::Agent,
    base: String,
}

impl Api {
    /// The client API at `base` (no trailing slash), plain HTTP.
    pub fn new(base: String) -> Self {
        Self::with_tls(base, None)
    }

    /// This unit's own HTTPS client listener at `base` (`https://` and its listen address).
    /// The certificate is not verified: the connection never leaves the box, and the
    /// certificate is for the names users type, which the unit itself need not resolve
    /// (`appliance status` checks the certificate instead).
    pub fn own_https(base: String) -> Self {
        Self::with_tls(base, Some(rustls_tls().disable_verification(true).build()))
    }

    /// A peer's HTTPS client API at `base`, trusting only the CA `ca_pem` (its unit CA, or
    /// the organisation's CA of an imported certificate); the certificate must name the host
    /// of `base`, as it must for the peer's users.
    pub fn https_trusting(base: String, ca_pem: &str) -> Result<Self, String> {
        let roots = ureq::tls::parse_pem(ca_pem.as_bytes())
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                Ok(_) => None,
                Err(err) => Some(Err(err)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| format!("the peer's CA is not PEM: {err}"))?;
        if roots.is_empty() {
            return Err("the peer's CA file holds no certificate".to_owned());
        }
        let tls = rustls_tls()
            .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots)))
            .build();
        Ok(Self::with_tls(base, Some(tls)))
    }

    /// The one agent set-up. Requests never go through a proxy (the selftest checks this unit
    /// and its peers, not the network's middleboxes), follow no redirect, and hand every
    /// status back to the caller.
    fn with_tls(base: String, tls: Option<ureq::tls::TlsConfig>) -> Self {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0);
        if let Some(tls) = tls {
            config = config.tls_config(tls);
        }
        Self {
            agent: config.build().new_agent(),
            base,
        }
    }

    /// The base URL, for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /login` with a password; the new session of a new device.
    pub fn login(
        &self,
        user_id: &str,
        password: &str,
        deadline: &Deadline,
    ) -> Result<Session, String> {
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user_id },
            "password": password,
            "initial_device_display_name": DEVICE_NAME,
        });
        let reply = self.call(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(&body),
            deadline,
        )?;
        let field = |name: &str| {
            reply[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("the login answer for {user_id} has no {name}"))
        };
        Ok(Session {
            api: self.clone(),
            user_id: field("user_id")?,
            device_id: field("device_id")?,
            token: field("access_token")?,
        })
    }

    /// One request; the JSON answer of a 2xx reply, else an error naming the request. A
    /// `429` is retried after the wait the server asks for, while the deadline allows.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        deadline: &Deadline,
    ) -> Result<Value, String> {
        let what = format!("{method} {}", path.split('?').next().unwrap_or(path));
        loop {
            let left = deadline.remaining()?;
            let mut request = ureq::http::Request::builder()
                .method(method)
                .uri(format!("{}{path}", self.base));
            if let Some(token) = token {
                request = request.header("Authorization", format!("Bearer {token}"));
            }
            let bytes = body.map(Value::to_string).unwrap_or_default();
            if body.is_some() {
                request = request.header("Content-Type", "application/json");
            }
            let request = request
                .body(bytes)
                .map_err(|err| format!("{what}: cannot build the request: {err}"))?;
            let request = self
                .agent
                .configure_request(request)
                .timeout_global(Some(left))
                .build();
            let response = self.agent.run(request).map_err(|err| match err {
                ureq::Error::Timeout(_) => format!("{what}: {}", deadline.expired()),
                other => format!("{what}: cannot reach {}: {other}", self.base),
            })?;
            let status = response.status().as_u16();
            let text = response
                .into_body()
                .read_to_string()
                .map_err(|err| format!("{what}: reading the answer: {err}"))?;
            let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if (200..300).contains(&status) {
                return if answer.is_object() {
                    Ok(answer)
                } else {
                    Err(format!("{what}: the answer is not a JSON object"))
                };
            }
            if status == 429 {
                let wait = answer["retry_after_ms"].as_u64().unwrap_or(1000);
                let wait = Duration::from_millis(wait.clamp(1, 5000));
                if wait < deadline.remaining()? {
                    std::thread::sleep(wait);
                    continue;
                }
            }
            let errcode = answer["errcode"].as_str().unwrap_or("no errcode");
            let message = answer["error"].as_str().unwrap_or("no details");
            return Err(format!("{what}: {status} {errcode}: {message}"));
        }
    }
}

/// A logged-in device (cloned for the logout that an interruption does).
#[derive(Clone)]
pub struct Session {
    api: Api,
    /// The user ID.
    pub user_id: String,
    /// The device ID of this login.
    pub device_id: String,
    token: String,
}

impl Session {
    /// `GET path` as this device.
    pub fn get(&self, path: &str, deadline: &Deadline) -> Result<Value, String> {
        self.api
            .call("GET", path, Some(&self.token), None, deadline)
    }

    /// `POST path` with a JSON body as this device.
    pub fn post(&self, path: &str, body: &Value, deadline: &Deadline) -> Result<Value, String> {
        self.api
            .call("POST", path, Some(&self.token), Some(body), deadline)
    }

    /// `PUT path` with a JSON body as this device.
    pub fn put(&self, path: &str, body: &Value, deadline: &Deadline) -> Result<Value, String> {
        self.api
            .call("PUT", path, Some(&self.token), Some(body), deadline)
    }

    /// One `/sync` from `since` (none: an initial sync that does not wait), long-polling for
    /// at most [`SYNC_POLL`] and never past the deadline.
    pub fn sync(
        &self,
        since: Option<&str>,
        filter: &Value,
        deadline: &Deadline,
    ) -> Result<Value, String> {
        let mut path = format!(
            "/_matrix/client/v3/sync?filter={}",
            encode(&filter.to_string())
        );
        if let Some(since) = since {
            // Leave a second for the answer to travel back before the deadline.
            let wait = deadline
                .remaining()?
                .saturating_sub(Duration::from_secs(1))
                .min(SYNC_POLL);
            path.push_str(&format!(
                "&timeout={}&since={}",
                wait.as_millis(),
                encode(since)
            ));
        } else {
            path.push_str("&timeout=0");
        }
        self.get(&path, deadline)
    }

    /// `POST /logout`: ends this session and deletes its device (with its keys and inbox).
    pub fn logout(&self, deadline: &Deadline) -> Result<(), String> {
        self.post("/_matrix/client/v3/logout", &json!({}), deadline)
            .map(drop)
    }
}

/// TLS through rustls with ring, the stack the rest of the unit uses.
fn rustls_tls() -> ureq::tls::TlsConfigBuilder {
    ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
}

/// Percent-encodes `raw` for a URL path segment or query value (the homeserver's one encoder).
pub use homeserver::util::urlencode as encode;

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn encodes_room_ids_and_filters() {
        assert_eq!(encode("!abc:unit-a.test"), "%21abc%3Aunit-a.test");
        assert_eq!(encode("{\"a\":[]}"), "%7B%22a%22%3A%5B%5D%7D");
    }
}
