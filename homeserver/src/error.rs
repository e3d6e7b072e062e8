//! The homeserver's one error type and its mapping to Matrix `errcode` + HTTP status.
//!
//! Every failure a client can see is an [`Error`]; [`Error::into_response`] is the single place
//! where a failure becomes `{"errcode", "error"}` with a status code, so the mapping cannot drift
//! between handlers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A Matrix error code, as listed in the spec's "Standard error response" section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request was not permitted.
    Forbidden,
    /// No access token was supplied.
    MissingToken,
    /// The access token was not recognised.
    UnknownToken,
    /// The body was not valid JSON.
    NotJson,
    /// The JSON was valid but had the wrong shape.
    BadJson,
    /// The resource does not exist.
    NotFound,
    /// Too many requests.
    LimitExceeded,
    /// Federation request authentication missing or wrong.
    Unauthorized,
    /// Unknown endpoint or wrong method.
    Unrecognized,
    /// Anything else.
    Unknown,
    /// `M_UNKNOWN` for a request the client got wrong in a way no other code names (an
    /// unsupported login type or identifier): the spec's 400, not a server fault.
    UnknownRequest,
    /// An alias in `m.room.canonical_alias` does not point at the room (spec: 400).
    BadAlias,
    /// The body is too large.
    TooLarge,
    /// The desired user ID is already taken.
    UserInUse,
    /// The desired user ID is not valid.
    InvalidUsername,
    /// A room alias that already exists.
    RoomInUse,
    /// A parameter had a bad value.
    InvalidParam,
    /// A required parameter was missing.
    MissingParam,
    /// The requested room version is not supported.
    UnsupportedRoomVersion,
    /// The server does not support the room's version.
    IncompatibleRoomVersion,
    /// Registration is closed on this server.
    RegistrationDisabled,
    /// The user has been deactivated.
    UserDeactivated,
    /// The password was rejected by policy.
    WeakPassword,
    /// The homeserver does not offer 3PID or identity-server features.
    ThreepidDenied,
    /// A guest tried something only users may do.
    GuestAccessForbidden,
    /// A media ID was already filled by an upload (409).
    CannotOverwriteMedia,
    /// A media ID was created but its content is not uploaded yet (504).
    NotYetUploaded,
    /// Another unit's media is larger than this unit proxies (502 `M_TOO_LARGE`).
    RemoteTooLarge,
    /// A peer needed for the answer could not be reached or answered nonsense (502).
    BadGateway,
    /// A peer needed for the answer did not answer in time (504).
    GatewayTimeout,
    /// A resident unit cannot check the conditions of a restricted join (it holds none of the
    /// allowed rooms), so the joining server should ask another.
    UnableToAuthoriseJoin,
    /// A resident unit sees that the user qualifies for a restricted join but has no local
    /// member who may invite, so the joining server should ask another.
    UnableToGrantJoin,
    /// A sliding sync `pos` the server does not know (any more): the client starts afresh.
    UnknownPos,
    /// A user ID or alias in an application service's exclusive namespace, or an appservice
    /// acting outside its own namespaces (400).
    Exclusive,
    /// A masqueraded `device_id` that is not one of the user's devices (400).
    UnknownDevice,
    /// An application service asked for a login its registration rules out (400).
    AppserviceLoginUnsupported,
}

impl ErrorCode {
    /// The wire name of this code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forbidden => "M_FORBIDDEN",
            Self::MissingToken => "M_MISSING_TOKEN",
            Self::UnknownToken => "M_UNKNOWN_TOKEN",
            Self::NotJson => "M_NOT_JSON",
            Self::BadJson => "M_BAD_JSON",
            Self::NotFound => "M_NOT_FOUND",
            Self::LimitExceeded => "M_LIMIT_EXCEEDED",
            Self::Unrecognized => "M_UNRECOGNIZED",
            Self::Unauthorized => "M_UNAUTHORIZED",
            Self::Unknown | Self::UnknownRequest => "M_UNKNOWN",
            Self::TooLarge => "M_TOO_LARGE",
            Self::UserInUse => "M_USER_IN_USE",
            Self::InvalidUsername => "M_INVALID_USERNAME",
            Self::RoomInUse => "M_ROOM_IN_USE",
            Self::InvalidParam => "M_INVALID_PARAM",
            Self::BadAlias => "M_BAD_ALIAS",
            Self::MissingParam => "M_MISSING_PARAM",
            Self::UnsupportedRoomVersion => "M_UNSUPPORTED_ROOM_VERSION",
            Self::RegistrationDisabled => "M_FORBIDDEN",
            Self::IncompatibleRoomVersion => "M_INCOMPATIBLE_ROOM_VERSION",
            Self::UserDeactivated => "M_USER_DEACTIVATED",
            Self::WeakPassword => "M_WEAK_PASSWORD",
            Self::ThreepidDenied => "M_THREEPID_DENIED",
            Self::GuestAccessForbidden => "M_GUEST_ACCESS_FORBIDDEN",
            Self::CannotOverwriteMedia => "M_CANNOT_OVERWRITE_MEDIA",
            Self::NotYetUploaded => "M_NOT_YET_UPLOADED",
            Self::RemoteTooLarge => "M_TOO_LARGE",
            Self::BadGateway | Self::GatewayTimeout => "M_UNKNOWN",
            Self::UnableToAuthoriseJoin => "M_UNABLE_TO_AUTHORISE_JOIN",
            Self::UnableToGrantJoin => "M_UNABLE_TO_GRANT_JOIN",
            Self::UnknownPos => "M_UNKNOWN_POS",
            Self::Exclusive => "M_EXCLUSIVE",
            Self::UnknownDevice => "M_UNKNOWN_DEVICE",
            Self::AppserviceLoginUnsupported => "M_APPSERVICE_LOGIN_UNSUPPORTED",
        }
    }

    /// The HTTP status the spec pairs with this code.
    fn status(self) -> StatusCode {
        match self {
            Self::Forbidden
            | Self::RegistrationDisabled
            | Self::UserDeactivated
            | Self::ThreepidDenied
            | Self::GuestAccessForbidden => StatusCode::FORBIDDEN,
            Self::MissingToken | Self::UnknownToken | Self::Unauthorized => {
                StatusCode::UNAUTHORIZED
            }
            Self::NotFound | Self::Unrecognized => StatusCode::NOT_FOUND,
            Self::LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
            Self::CannotOverwriteMedia => StatusCode::CONFLICT,
            Self::NotYetUploaded | Self::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::RemoteTooLarge | Self::BadGateway => StatusCode::BAD_GATEWAY,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A client-facing Matrix error with its code and a human-readable reason.
    #[error("{code:?}: {message}")]
    Matrix {
        /// The Matrix error code.
        code: ErrorCode,
        /// Human-readable explanation sent as `error`.
        message: String,
    },
    /// The client must wait before retrying.
    #[error("rate limited for {retry_after_ms} ms")]
    RateLimited {
        /// Milliseconds until the next request would be accepted.
        retry_after_ms: u64,
    },
    /// User-interactive auth must continue: the body is the UIA state to send with 401.
    #[error("user-interactive authentication required")]
    Uia(serde_json::Value),
    /// The resource already exists (409, `M_UNKNOWN`), e.g. a taken room alias.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A wrong HTTP method on a known path.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The unit has reached a resource limit (its disk is nearly full): `M_RESOURCE_LIMIT_EXCEEDED`
    /// with the `admin_contact` the spec requires. Sent as 403, as Synapse does for this code
    /// and as clients (Element's "this homeserver has exceeded a resource limit" banner) expect;
    /// the spec names no status. Not a 5xx: nothing failed, the unit refuses on purpose until
    /// its administrator frees space, and reads keep working.
    #[error("resource limit reached: {message}")]
    ResourceLimit {
        /// A URI where users reach the administrator.
        admin_contact: String,
        /// What is refused and why.
        message: String,
    },
    /// The database failed; details are logged, never sent.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// A file write failed with `ENOSPC`; the store turns it into [`Error::ResourceLimit`].
    #[error("no space left on the data partition")]
    DiskFull,
    /// The storage writer is gone (shutting down).
    #[error("storage writer unavailable")]
    WriterGone,
    /// A bug or unexpected state; details are logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
    /// An OAuth 2.0 endpoint's error (RFC 6749 section 5.2, RFC 7591 section 3.2.2): the body
    /// is `{"error", "error_description"}`, not a Matrix error.
    #[error("{error}: {description}")]
    OAuth {
        /// HTTP status (400, or 401 for `invalid_client`).
        status: StatusCode,
        /// The RFC error code (`invalid_request`, `invalid_grant`, ...).
        error: &'static str,
        /// What was wrong, for the developer.
        description: String,
    },
}

/// Shorthand for results in the homeserver.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A Matrix error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Matrix {
            code,
            message: message.into(),
        }
    }
    /// `M_FORBIDDEN` with a reason.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    /// `M_BAD_JSON` with a reason.
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadJson, message)
    }
    /// `M_NOT_FOUND` with a reason.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    /// `M_INVALID_PARAM` with a reason.
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParam, message)
    }
    /// An OAuth error answered with 400 (401 for `invalid_client`, as RFC 6749 section 5.2
    /// allows for a client that cannot be identified).
    pub fn oauth(error: &'static str, description: impl Into<String>) -> Self {
        let status = if error == "invalid_client" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        Self::OAuth {
            status,
            error,
            description: description.into(),
        }
    }
    /// An internal error with context for the log.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }
    /// Whether this is the disk (or SQLite's file) being full: such a failure becomes the
    /// store's `M_RESOURCE_LIMIT_EXCEEDED`, never a 500.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Database(err) => crate::util::is_disk_full(err),
            Error::DiskFull => true,
            _ => false,
        }
    }
}

impl Error {
    /// The standard error response body a client gets for this error (without the status),
    /// for errors that are stored and shown later (a delayed event that could not be sent).
    pub fn client_body(&self) -> serde_json::Value {
        match self {
            Error::Matrix { code, message } => json!({"errcode": code.as_str(), "error": message}),
            Error::RateLimited { .. } => {
                json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests"})
            }
            Error::Conflict(message) => json!({"errcode": "M_UNKNOWN", "error": message}),
            Error::ResourceLimit {
                admin_contact,
                message,
            } => json!({
                "errcode": "M_RESOURCE_LIMIT_EXCEEDED",
                "error": message,
                "admin_contact": admin_contact,
            }),
            Error::MethodNotAllowed => {
                json!({"errcode": "M_UNRECOGNIZED", "error": "Method not allowed on this path"})
            }
            Error::Uia(_) => json!({"errcode": "M_FORBIDDEN", "error": "Authentication required"}),
            Error::OAuth {
                error, description, ..
            } => json!({"error": error, "error_description": description}),
            Error::Database(_) | Error::DiskFull | Error::WriterGone | Error::Internal(_) => {
                json!({"errcode": "M_UNKNOWN", "error": "Internal server error"})
            }
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let retry_after_ms = match &self {
            Error::RateLimited { retry_after_ms } => Some(*retry_after_ms),
            _ => None,
        };
        let (status, body) = match self {
            Error::Matrix { code, message } => (
                code.status(),
                json!({"errcode": code.as_str(), "error": message}),
            ),
            Error::RateLimited { retry_after_ms } => (
                StatusCode::TOO_MANY_REQUESTS,
                json!({
                    "errcode": "M_LIMIT_EXCEEDED",
                    "error": "Too many requests",
                    "retry_after_ms": retry_after_ms,
                }),
            ),
            Error::Uia(body) => (StatusCode::UNAUTHORIZED, body),
            Error::OAuth {
                status,
                error,
                description,
            } => (
                status,
                json!({"error": error, "error_description": description}),
            ),
            Error::Conflict(message) => (
                StatusCode::CONFLICT,
                json!({"errcode": "M_UNKNOWN", "error": message}),
            ),
            Error::ResourceLimit {
                admin_contact,
                message,
            } => (
                StatusCode::FORBIDDEN,
                json!({
                    "errcode": "M_RESOURCE_LIMIT_EXCEEDED",
                    "error": message,
                    "admin_contact": admin_contact,
                    "limit_type": "disk_space",
                }),
            ),
            Error::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"errcode": "M_UNRECOGNIZED", "error": "Method not allowed on this path"}),
            ),
            err @ (Error::Database(_)
            | Error::DiskFull
            | Error::WriterGone
            | Error::Internal(_)) => {
                tracing::error!(error = %err, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"errcode": "M_UNKNOWN", "error": "Internal server error"}),
                )
            }
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let StatusCode::TOO_MANY_REQUESTS = status {
            // Whole seconds, rounded up, never less than one.
            let seconds = retry_after_ms.map_or(1, |ms| ms.div_ceil(1000).max(1));
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        response
    }
}
