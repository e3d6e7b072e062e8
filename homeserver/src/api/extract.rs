//! Request extractors: the access token ([`Auth`]) and JSON bodies ([`JsonBody`]) with the
//! spec's error codes (`M_MISSING_TOKEN`, `M_UNKNOWN_TOKEN`, `M_NOT_JSON`, `M_BAD_JSON`,
//! `M_TOO_LARGE`) instead of axum's plain-text rejections.
//!
//! [`Auth`] is also where an application service's `as_token` is recognised (spec:
//! "Identity assertion"): the request then acts as the appservice's sender, or as the user
//! named by `?user_id=` inside its namespaces, on the device named by `?device_id=` (or
//! MSC3202's `org.matrix.msc3202.device_id`), or on no device at all.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId};
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorCode};
use crate::matrix::appservice::Registration;
use crate::service::timeline::TimestampMatch;
use crate::service::{Server, accounts};

/// The authenticated caller.
#[derive(Clone)]
pub struct Auth {
    /// The user (for an appservice: its sender, or the user it masquerades as).
    pub user_id: OwnedUserId,
    /// The device the token belongs to. `None` for an appservice request that names no
    /// `device_id` (and for an empty device ID, which has always read as none): such a
    /// request has no device, and endpoints that need one ask for it through
    /// [`Auth::device`].
    pub device_id: Option<OwnedDeviceId>,
    /// The application service whose `as_token` authenticated the request, if any.
    pub appservice: Option<Arc<Registration>>,
}

impl std::fmt::Debug for Auth {
    // By hand: a registration holds both of its tokens, which must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("appservice", &self.appservice.as_ref().map(|r| &r.id))
            .finish()
    }
}

impl Auth {
    /// Who asks, for the services that format events for the requester (legacy `/events`,
    /// `/initialSync`, search).
    pub fn viewer(self) -> crate::service::Viewer {
        crate::service::Viewer {
            user_id: self.user_id,
            device_id: self.device_id,
        }
    }

    /// The request's device, for endpoints that act on one (key upload, to-device sending,
    /// logout). An appservice request without `device_id` has none: 400 `M_MISSING_PARAM`
    /// naming the parameter (the spec says such requests "fail", without naming a code).
    pub fn device(&self) -> Result<&DeviceId, Error> {
        self.device_id.as_deref().ok_or_else(|| {
            Error::new(
                ErrorCode::MissingParam,
                "This request needs a device: an application service passes device_id",
            )
        })
    }

    /// Whether the request was made with an application service's `as_token`.
    pub fn is_appservice(&self) -> bool {
        self.appservice.is_some()
    }
}

/// The raw access token of a request, from the header or the deprecated query parameter.
pub fn access_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION)
        && let Ok(value) = value.to_str()
        && let Some(token) = value.strip_prefix("Bearer ")
    {
        return Some(token.trim().to_owned());
    }
    RawQuery::from_uri(&parts.uri)
        .ok()
        .and_then(|query| query.first("access_token"))
}

impl FromRequestParts<Arc<Server>> for Auth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, server: &Arc<Server>) -> Result<Self, Error> {
        if let Some(auth) = parts.extensions.get::<Auth>() {
            return Ok(auth.clone());
        }
        let token = access_token(parts)
            .ok_or_else(|| Error::new(ErrorCode::MissingToken, "Missing access token"))?;
        let auth = match server.appservices.by_as_token(&token) {
            Some(registration) => appservice_auth(parts, server, registration).await?,
            None => {
                let owner = accounts::authenticate(server, &token).await?;
                let user_id = OwnedUserId::try_from(owner.user_id)
                    .map_err(|err| Error::internal(format!("stored user id: {err}")))?;
                Auth {
                    user_id,
                    device_id: device_of(owner.device_id),
                    appservice: None,
                }
            }
        };
        parts.extensions.insert(auth.clone());
        Ok(auth)
    }
}

/// Identity assertion for an `as_token`: `?user_id=` (default: the appservice's sender) must
/// be a registered, active local user the appservice may act as (403 `M_FORBIDDEN`
/// otherwise, as `GET /account/whoami` documents); `?device_id=` (or the MSC3202 name) must
/// be one of that user's devices (400 `M_UNKNOWN_DEVICE`, as the spec says since v1.17).
async fn appservice_auth(
    parts: &Parts,
    server: &Arc<Server>,
    registration: Arc<Registration>,
) -> Result<Auth, Error> {
    let query = RawQuery::from_uri(&parts.uri)?;
    let own = server.server_name().to_string();
    let sender = registration.sender(&own);
    let user = query.first("user_id").unwrap_or_else(|| sender.clone());
    let user_id = OwnedUserId::try_from(user.as_str())
        .map_err(|_| Error::invalid_param(format!("{user:?} is not a valid user ID")))?;
    if user_id.server_name() != server.server_name()
        || !registration.may_masquerade_as(user_id.as_str(), &own)
    {
        return Err(Error::forbidden(
            "Application service cannot masquerade as this user",
        ));
    }
    accounts::require_appservice_user(server, &user_id, user == sender).await?;
    let device = query
        .first("device_id")
        .or_else(|| query.first("org.matrix.msc3202.device_id"));
    let device_id = match device {
        Some(device) => {
            if !accounts::has_device(server, &user_id, device.as_str().into()).await? {
                return Err(Error::new(
                    ErrorCode::UnknownDevice,
                    "The user has no device with this ID",
                ));
            }
            device_of(device)
        }
        None => None,
    };
    Ok(Auth {
        user_id,
        device_id,
        appservice: Some(registration),
    })
}

/// A request's device from its stored or named ID. An empty ID (a device `/login` with
/// `"device_id": ""` made) has always read as no device, and still does.
fn device_of(id: String) -> Option<OwnedDeviceId> {
    (!id.is_empty()).then(|| id.into())
}

/// The raw access token of a request, unchecked (`None` without one): for `/register` and
/// `/login`, which look at it only for `m.login.application_service`.
pub struct RawToken(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RawToken {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        Ok(Self(access_token(parts)))
    }
}

/// The appservice whose `as_token` is `token`: 401 `M_MISSING_TOKEN` without a token and
/// 401 `M_UNKNOWN_TOKEN` for any other token, a user's included (spec: `/register` and
/// `/login` with `m.login.application_service` "without a valid `as_token`").
pub fn appservice_of(server: &Server, token: Option<&str>) -> Result<Arc<Registration>, Error> {
    let token = token.ok_or_else(|| {
        Error::new(
            ErrorCode::MissingToken,
            "m.login.application_service needs the appservice's as_token",
        )
    })?;
    server.appservices.by_as_token(token).ok_or_else(|| {
        Error::new(
            ErrorCode::UnknownToken,
            "The access token is not an application service's as_token",
        )
    })
}

/// An optional [`Auth`]: `None` without a token, an error for a bad one.
pub struct MaybeAuth(pub Option<Auth>);

impl FromRequestParts<Arc<Server>> for MaybeAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, server: &Arc<Server>) -> Result<Self, Error> {
        if access_token(parts).is_none() {
            return Ok(Self(None));
        }
        Auth::from_request_parts(parts, server)
            .await
            .map(|a| Self(Some(a)))
    }
}

/// A JSON request body. Not JSON → `M_NOT_JSON`; JSON of the wrong shape → `M_BAD_JSON`;
/// over the configured limit → `M_TOO_LARGE`. An empty body reads as `{}`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<Server>> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, server: &Arc<Server>) -> Result<Self, Error> {
        let limit = server.config.limits.max_body_bytes;
        let body = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| {
                Error::new(
                    ErrorCode::TooLarge,
                    format!("Request body exceeds {limit} bytes"),
                )
            })?;
        parse_json(&body).map(Self)
    }
}

/// An `application/x-www-form-urlencoded` body, as the OAuth 2.0 endpoints and the unit's
/// HTML forms send; a body that does not decode (or repeats a parameter, which RFC 6749
/// section 3.1 forbids) is the OAuth `invalid_request`.
pub struct FormBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<Server>> for FormBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, server: &Arc<Server>) -> Result<Self, Error> {
        let limit = server.config.limits.max_body_bytes;
        let body = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| Error::oauth("invalid_request", format!("Body exceeds {limit} bytes")))?;
        serde_urlencoded::from_bytes(&body)
            .map(Self)
            .map_err(|err| Error::oauth("invalid_request", format!("Bad form body: {err}")))
    }
}

/// A raw body (at most `limits.max_body_bytes`), for endpoints that parse it themselves.
pub struct RawBody(pub Bytes);

impl FromRequest<Arc<Server>> for RawBody {
    type Rejection = Error;

    async fn from_request(req: Request, server: &Arc<Server>) -> Result<Self, Error> {
        let limit = server.config.limits.max_body_bytes;
        axum::body::to_bytes(req.into_body(), limit)
            .await
            .map(Self)
            .map_err(|_| {
                Error::new(
                    ErrorCode::TooLarge,
                    format!("Request body exceeds {limit} bytes"),
                )
            })
    }
}

/// Parses a body with the spec's error codes.
pub fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, Error> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|err| Error::new(ErrorCode::NotJson, format!("Body is not valid JSON: {err}")))?;
    if !value.is_object() {
        return Err(Error::bad_json("Body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|err| Error::bad_json(err.to_string()))
}

/// Query parameters with `M_INVALID_PARAM` on a bad value (instead of axum's plain text).
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(Self)
            .map_err(|err| Error::invalid_param(format!("Bad query parameter: {err}")))
    }
}

/// The query string as decoded `(name, value)` pairs in order: the one reader of repeated
/// parameters (`via`, `server_name`, `ver`), which a struct for [`QueryParams`] cannot hold.
/// A query that does not decode is `M_INVALID_PARAM`.
pub struct RawQuery(pub Vec<(String, String)>);

impl RawQuery {
    /// Decodes a URI's query (none: no pairs).
    pub fn from_uri(uri: &axum::http::Uri) -> Result<Self, Error> {
        serde_urlencoded::from_str(uri.query().unwrap_or_default())
            .map(Self)
            .map_err(|err| Error::invalid_param(format!("Bad query string: {err}")))
    }

    /// Every pair, in order.
    pub fn pairs(&self) -> impl Iterator<Item = &(String, String)> {
        self.0.iter()
    }

    /// All values of parameter `name`, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.pairs()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The first value of parameter `name`, if given.
    pub fn first(&self, name: &str) -> Option<String> {
        self.pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// The first value of a parameter the endpoint requires: absent is `M_MISSING_PARAM`.
    pub fn required(&self, name: &str) -> Result<String, Error> {
        self.first(name).ok_or_else(|| {
            Error::new(
                ErrorCode::MissingParam,
                format!("{name} is a required parameter"),
            )
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RawQuery {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        Self::from_uri(&parts.uri)
    }
}

/// Path parameters with `M_INVALID_PARAM` on a bad value.
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|err| Error::invalid_param(format!("Bad path parameter: {err}")))
    }
}

/// Parses a room ID path parameter.
pub fn room_id(raw: &str) -> Result<ruma::OwnedRoomId, Error> {
    ruma::OwnedRoomId::try_from(raw)
        .map_err(|_| Error::invalid_param(format!("{raw:?} is not a valid room ID")))
}

/// Parses a user ID parameter.
pub fn user_id(raw: &str) -> Result<OwnedUserId, Error> {
    OwnedUserId::try_from(raw)
        .map_err(|_| Error::invalid_param(format!("{raw:?} is not a valid user ID")))
}

/// Parses an event ID parameter.
pub fn event_id(raw: &str) -> Result<ruma::OwnedEventId, Error> {
    ruma::OwnedEventId::try_from(raw)
        .map_err(|_| Error::invalid_param(format!("{raw:?} is not a valid event ID")))
}

/// `?ts=&dir=` of `timestamp_to_event`, client and federation alike.
#[derive(Debug, serde::Deserialize)]
pub struct TimestampQuery {
    /// The time to look from (ms since the epoch).
    pub ts: i64,
    dir: String,
}

impl TimestampQuery {
    /// Whether to look forward (`f`) or backward (`b`) from `ts`.
    pub fn forward(&self) -> Result<bool, Error> {
        match self.dir.as_str() {
            "f" => Ok(true),
            "b" => Ok(false),
            _ => Err(Error::invalid_param("dir must be f or b")),
        }
    }
}

/// The answer of `timestamp_to_event` for what the store found.
pub fn timestamp_answer(
    found: Option<TimestampMatch>,
) -> Result<axum::Json<TimestampMatch>, Error> {
    found
        .map(axum::Json)
        .ok_or_else(|| Error::not_found("No event found on that side of the timestamp"))
}
