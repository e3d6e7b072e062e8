//! Response bodies shared by several client endpoints, as typed structs (serialised once,
//! here) rather than `serde_json::Value`s built in each handler. Bodies used by one endpoint
//! only are defined next to it.

use serde::Serialize;

/// `{}`: the answer of endpoints that only acknowledge.
#[derive(Debug, Default, Serialize)]
pub struct Empty {}

/// `{"room_id": …}`: the answer of createRoom, join and knock.
#[derive(Debug, Serialize)]
pub struct RoomIdResponse {
    /// The room joined, knocked on or created.
    pub room_id: ruma::OwnedRoomId,
}

/// `{"chunk": […]}`: a list answer without pagination.
#[derive(Debug, Serialize)]
pub struct Chunk<T> {
    /// The items.
    pub chunk: Vec<T>,
}

/// `{"event_id": …}`: the answer of `/send`, `/state` and `/redact`.
#[derive(Debug, Serialize)]
pub struct EventIdResponse {
    /// The event sent.
    pub event_id: ruma::OwnedEventId,
}

/// The answer of `/send` and `/state`: the event sent, or with MSC4140's
/// `?org.matrix.msc4140.delay=` the delayed event scheduled (`{"delay_id": …}`).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum SendResponse {
    /// Sent now.
    Sent(EventIdResponse),
    /// Scheduled to be sent later.
    Scheduled {
        /// The delayed event's ID, for managing it.
        delay_id: String,
    },
}

/// The session of a login or a refresh (`POST /login`, `POST /refresh`).
#[derive(Debug, Serialize)]
pub struct LoginResponse {
    /// The user logged in.
    pub user_id: ruma::OwnedUserId,
    /// The new access token.
    pub access_token: String,
    /// The device it belongs to.
    pub device_id: String,
    /// A refresh token, when the client asked for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The access token's lifetime, when it is refreshable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<i64>,
    /// This server's name (deprecated in the spec, still read by older clients).
    pub home_server: String,
}

/// `POST /refresh`.
#[derive(Debug, Serialize)]
pub struct RefreshResponse {
    /// The new access token.
    pub access_token: String,
    /// The new refresh token (the old one is spent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The new access token's lifetime.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<i64>,
}

/// `GET /account/whoami`.
#[derive(Debug, Serialize)]
pub struct WhoAmI {
    /// The token's user.
    pub user_id: ruma::OwnedUserId,
    /// The token's device; absent for an application service request without a device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Always false: a unit has no guest accounts.
    pub is_guest: bool,
}

/// `GET /register/available`.
#[derive(Debug, Serialize)]
pub struct Available {
    /// Whether the name may be registered.
    pub available: bool,
}

/// `GET /register/m.login.registration_token/validity`.
#[derive(Debug, Serialize)]
pub struct TokenValidity {
    /// Whether the registration token may be used.
    pub valid: bool,
}

/// `GET /login`.
#[derive(Debug, Serialize)]
pub struct LoginFlows {
    /// The login types offered.
    pub flows: Vec<LoginFlow>,
}

/// One login type.
#[derive(Debug, Serialize)]
pub struct LoginFlow {
    /// `m.login.password`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// The answer of `/account/deactivate` and `/account/3pid/delete`.
#[derive(Debug, Serialize)]
pub struct IdServerUnbind {
    /// Always `no-support`: a unit talks to no identity server.
    pub id_server_unbind_result: &'static str,
}

/// `POST /rooms/{roomId}/upgrade`.
#[derive(Debug, Serialize)]
pub struct UpgradeResponse {
    /// The new room.
    pub replacement_room: ruma::OwnedRoomId,
}

/// `POST /user/{userId}/openid/request_token`.
#[derive(Debug, Serialize)]
pub struct OpenIdToken {
    /// The token a third party presents to `openid/userinfo`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// The server to ask about the token.
    pub matrix_server_name: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// `GET /voip/turnServer`.
#[derive(Debug, Serialize)]
pub struct TurnServer {
    /// TURN user name (empty: none configured).
    pub username: String,
    /// TURN password (empty).
    pub password: String,
    /// TURN URIs (none).
    pub uris: Vec<String>,
    /// How long the answer holds, in seconds.
    pub ttl: u64,
}

/// `GET /.well-known/matrix/client`.
#[derive(Debug, Serialize)]
pub struct WellKnown {
    /// Where the client API is.
    #[serde(rename = "m.homeserver")]
    pub homeserver: BaseUrl,
}

/// The `m.homeserver` of [`WellKnown`].
#[derive(Debug, Serialize)]
pub struct BaseUrl {
    /// The client API's base URL.
    pub base_url: String,
}

/// `GET /keys/changes`.
#[derive(Debug, Serialize)]
pub struct KeyChanges {
    /// Users whose devices changed in the range.
    pub changed: Vec<String>,
    /// Users who no longer share a room with the caller.
    pub left: Vec<String>,
}

/// `{"device_id": …}`: the answer of storing or deleting a dehydrated device (MSC3814).
#[derive(Debug, Serialize)]
pub struct DeviceIdResponse {
    /// The dehydrated device.
    pub device_id: ruma::OwnedDeviceId,
}

/// `POST /room_keys/version`.
#[derive(Debug, Serialize)]
pub struct BackupVersion {
    /// The new backup version.
    pub version: String,
}

/// `POST /media/v3/upload`.
#[derive(Debug, Serialize)]
pub struct ContentUri {
    /// The `mxc://` URI of the upload.
    pub content_uri: String,
}

/// `POST /media/v1/create`.
#[derive(Debug, Serialize)]
pub struct CreatedMedia {
    /// The `mxc://` URI reserved for the upload.
    pub content_uri: String,
    /// When the reservation lapses unused (ms since the epoch).
    pub unused_expires_at: i64,
}

/// `GET /media/config`.
#[derive(Debug, Serialize)]
pub struct MediaConfig {
    /// The largest upload accepted, in bytes.
    #[serde(rename = "m.upload.size")]
    pub upload_size: u64,
}

/// `POST /user/{userId}/filter`.
#[derive(Debug, Serialize)]
pub struct FilterId {
    /// The stored filter's ID.
    pub filter_id: String,
}

/// `GET /user/{userId}/rooms/{roomId}/tags`.
#[derive(Debug, Serialize)]
pub struct Tags {
    /// Tag name → its content (`order`).
    pub tags: serde_json::Map<String, serde_json::Value>,
}

/// `POST /user_directory/search`.
#[derive(Debug, Serialize)]
pub struct UserDirectory {
    /// Matching users, best first.
    pub results: Vec<UserDirectoryEntry>,
    /// Whether more users matched than the limit.
    pub limited: bool,
}

/// One user of [`UserDirectory`].
#[derive(Debug, Serialize)]
pub struct UserDirectoryEntry {
    /// The user.
    pub user_id: String,
    /// Their display name, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Their avatar, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

/// `GET /versions`.
#[derive(Debug, Serialize)]
pub struct Versions {
    /// The spec versions implemented.
    pub versions: &'static [&'static str],
    /// The unstable features implemented, each `true`.
    pub unstable_features: std::collections::BTreeMap<&'static str, bool>,
}

/// `GET /account/3pid`.
#[derive(Debug, Serialize)]
pub struct ThreePids {
    /// Always empty: a unit binds no email addresses or phone numbers.
    pub threepids: Vec<serde_json::Value>,
}

/// `GET …/delayed_events` (MSC4140).
#[derive(Debug, Serialize)]
pub struct DelayedEvents {
    /// The caller's scheduled events, soonest due first.
    pub delayed_events: Vec<crate::service::delayed_events::ClientDelayedEvent>,
}

/// `GET /pushrules/{scope}/{kind}/{ruleId}/enabled`.
#[derive(Debug, Serialize)]
pub struct RuleEnabled {
    /// Whether the rule is enabled, as the rule set holds it.
    pub enabled: bool,
}

/// `GET /pushrules/{scope}/{kind}/{ruleId}/actions`.
#[derive(Debug, Serialize)]
pub struct RuleActions {
    /// The rule's actions, as the rule set holds them.
    pub actions: Vec<ruma::push::Action>,
}

/// `GET /pushrules/`: the one scope there is.
#[derive(Debug, Serialize)]
pub struct PushRules {
    /// The user's rules.
    pub global: crate::service::push::ClientRuleset,
}

/// `GET /capabilities`.
#[derive(Debug, Serialize)]
pub struct Capabilities {
    /// What this server lets clients do.
    pub capabilities: CapabilityList,
}

/// The capabilities this unit announces.
#[derive(Debug, Serialize)]
pub struct CapabilityList {
    /// The room versions it can create and join.
    #[serde(rename = "m.room_versions")]
    pub room_versions: RoomVersions,
    /// Whether users may change their password.
    #[serde(rename = "m.change_password")]
    pub change_password: Enabled,
    /// Whether users may change their display name.
    #[serde(rename = "m.set_displayname")]
    pub set_displayname: Enabled,
    /// Whether users may change their avatar.
    #[serde(rename = "m.set_avatar_url")]
    pub set_avatar_url: Enabled,
    /// Third-party identifiers: a unit binds none.
    #[serde(rename = "m.3pid_changes")]
    pub threepid_changes: Enabled,
    /// `POST /login/get_token`: not offered.
    #[serde(rename = "m.get_login_token")]
    pub get_login_token: Enabled,
    /// MSC4140's limits.
    #[serde(rename = "org.matrix.msc4140.delayed_events")]
    pub delayed_events: DelayedEventLimits,
}

/// `m.room_versions`.
#[derive(Debug, Serialize)]
pub struct RoomVersions {
    /// The version `/createRoom` uses by default.
    pub default: String,
    /// Every version, with its stability.
    pub available: std::collections::BTreeMap<String, &'static str>,
}

/// A capability that is only on or off.
#[derive(Debug, Serialize)]
pub struct Enabled {
    /// Whether it is on.
    pub enabled: bool,
}

/// The limits on delayed events (MSC4140).
#[derive(Debug, Serialize)]
pub struct DelayedEventLimits {
    /// The longest delay a client may ask for (ms).
    pub max_delay_ms: u64,
    /// How many events one user may have scheduled.
    pub max_scheduled: u64,
}
