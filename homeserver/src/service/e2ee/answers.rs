//! The typed answers of the key endpoints, shared by the client API (`/keys/*`, MSC3814's
//! dehydrated device) and the federation API (`user/devices`, `user/keys/query`,
//! `user/keys/claim`): their wire shape as the spec's `keys.yaml`, `cross_signing.yaml`,
//! `user_keys.yaml` and `user_devices.yaml` define it.
//!
//! Key objects themselves (`DeviceKeys`, `CrossSigningKey`, one-time keys) stay
//! [`Value`]s: they are signed JSON a client uploaded, and are handed on exactly as stored
//! (with only the server's `unsigned` and the signatures it collected merged in), never
//! re-shaped through a struct that could drop or reorder a signed field.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// Signed key objects by user ID.
pub type KeysByUser = BTreeMap<String, Value>;

/// One-time keys claimed: `{user: {device: {"<algorithm>:<key id>": key}}}`.
pub type ClaimedKeys = BTreeMap<String, BTreeMap<String, BTreeMap<String, Value>>>;

/// Why a peer's keys are missing from an answer (a `failures` entry).
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The Matrix error code.
    pub errcode: &'static str,
    /// Human-readable detail.
    pub error: String,
}

impl Failure {
    /// `M_UNKNOWN` with `error`.
    pub fn unknown(error: impl Into<String>) -> Failure {
        Failure {
            errcode: "M_UNKNOWN",
            error: error.into(),
        }
    }
}

/// `POST /keys/upload`: the device's unclaimed one-time keys per algorithm.
#[derive(Debug, Serialize)]
pub struct KeyCounts {
    /// Always holds `signed_curve25519` (0 when none are left: "upload more").
    pub one_time_key_counts: BTreeMap<String, i64>,
}

/// `POST /keys/query` (client) and `POST user/keys/query` (federation).
#[derive(Debug, Default, Serialize)]
pub struct KeysQueryAnswer {
    /// `{user: {device: DeviceKeys}}`.
    pub device_keys: BTreeMap<String, KeysByUser>,
    /// Master keys by user.
    pub master_keys: KeysByUser,
    /// Self-signing keys by user.
    pub self_signing_keys: KeysByUser,
    /// The requester's own user-signing key; absent in a peer's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_signing_keys: Option<KeysByUser>,
    /// Peers that could not (fully) answer; absent in a peer's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<BTreeMap<String, Failure>>,
}

/// `POST /keys/claim` (client) and `POST user/keys/claim` (federation).
#[derive(Debug, Default, Serialize)]
pub struct KeysClaimAnswer {
    /// The claimed keys; unknown users, devices and algorithms are absent.
    pub one_time_keys: ClaimedKeys,
    /// Peers that could not answer; absent in a peer's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<BTreeMap<String, Failure>>,
}

/// `POST /keys/signatures/upload`: `{user: {key id: failure}}` for signatures not stored.
#[derive(Debug, Default, Serialize)]
pub struct SignaturesUploadAnswer {
    /// Always present, empty when every signature was stored.
    pub failures: BTreeMap<String, BTreeMap<String, Failure>>,
}

/// One device of a `user/devices` answer.
#[derive(Debug, Serialize)]
pub struct UserDevice {
    /// The device.
    pub device_id: String,
    /// Its identity keys, as signed by the device.
    pub keys: Value,
    /// Its display name, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_display_name: Option<String>,
}

/// `GET /_matrix/federation/v1/user/devices/{userId}`.
#[derive(Debug, Serialize)]
pub struct UserDevicesAnswer {
    /// The user asked about.
    pub user_id: String,
    /// The position of the user's latest device-list change (`m.device_list_update`'s
    /// `stream_id` continues from it).
    pub stream_id: i64,
    /// Devices that uploaded keys.
    pub devices: Vec<UserDevice>,
    /// The master key, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_key: Option<Value>,
    /// The self-signing key, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_signing_key: Option<Value>,
}

/// `GET …/dehydrated_device` (MSC3814).
#[derive(Debug, Serialize)]
pub struct DehydratedDevice {
    /// The dehydrated device.
    pub device_id: String,
    /// Its opaque data, as the client stored it.
    pub device_data: Value,
}

/// `…/dehydrated_device/{deviceId}/events` (MSC3814): one batch of to-device messages.
#[derive(Debug, Serialize)]
pub struct DehydratedEvents {
    /// To-device events, oldest first.
    pub events: Vec<Value>,
    /// Token of the next batch; absent when this one is the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_batch: Option<String>,
}
