//! The typed request bodies of the key endpoints, shared by the client API (`/keys/upload`,
//! `/keys/query`, `/keys/claim`, `/keys/signatures/upload`, `/keys/device_signing/upload`,
//! MSC3814's dehydrated device) and the federation API (`user/keys/query`, `user/keys/claim`),
//! shaped as the spec's `keys.yaml`, `cross_signing.yaml` and `user_keys.yaml` define them.
//!
//! A body of the wrong shape is refused whole (400 `M_BAD_JSON`, by the extractor's serde
//! error) and a malformed user ID as a map key is refused by [`typed_users`] (400
//! `M_INVALID_PARAM`), both before anything is read or stored: no part of a malformed request
//! is acted on. Signed key objects stay [`Value`]s, checked by the services: their bytes are
//! signed by a client and handed on as stored.

use std::collections::BTreeMap;

use ruma::{OwnedDeviceId, OwnedUserId};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// Device IDs asked for, per user (`/keys/query`, `user/keys/query`): an empty list asks for
/// every device of the user, as the spec says.
pub type DeviceQuery = BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>;

/// The key algorithm to claim, per device, per user (`/keys/claim`, `user/keys/claim`).
pub type ClaimRequest = BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>;

/// Signed objects (device keys or a master key) by key ID (a device ID or a master key's
/// public key), per user: the body of `/keys/signatures/upload`.
pub type SignaturesUpload = BTreeMap<OwnedUserId, BTreeMap<String, Value>>;

/// `POST /keys/signatures/upload` as sent: user ID → key ID → signed object (checked into a
/// [`SignaturesUpload`] by [`typed_users`]).
pub type SignaturesUploadBody = BTreeMap<String, BTreeMap<String, Value>>;

/// Turns the user-ID keys of a request map into ruma's `UserId`s: a malformed one is 400
/// `M_INVALID_PARAM` for the whole request (a map key is not a JSON shape serde could refuse
/// with a useful message).
pub fn typed_users<T>(map: BTreeMap<String, T>) -> Result<BTreeMap<OwnedUserId, T>> {
    map.into_iter()
        .map(|(user, value)| match OwnedUserId::try_from(user.as_str()) {
            Ok(user) => Ok((user, value)),
            Err(_) => Err(Error::invalid_param(format!(
                "{user:?} is not a valid user ID"
            ))),
        })
        .collect()
}

/// The keys of `POST /keys/upload` (and of a dehydrated device): every part optional.
#[derive(Debug, Default, Deserialize)]
pub struct KeysUploadBody {
    /// The device's identity keys (`DeviceKeys`, signed by the device).
    #[serde(default)]
    pub device_keys: Option<Value>,
    /// One-time keys by `<algorithm>:<key ID>`: an unpadded key string or a signed key object.
    #[serde(default)]
    pub one_time_keys: Option<BTreeMap<String, Value>>,
    /// Fallback keys by `<algorithm>:<key ID>`, as one-time keys.
    #[serde(default)]
    pub fallback_keys: Option<BTreeMap<String, Value>>,
    /// MSC2732's unstable name of `fallback_keys`, read when the stable one is absent.
    #[serde(default, rename = "org.matrix.msc2732.fallback_keys")]
    pub unstable_fallback_keys: Option<BTreeMap<String, Value>>,
}

/// `POST /keys/query` (`device_keys` required).
#[derive(Debug, Deserialize)]
pub struct KeysQueryBody {
    /// User ID → device IDs (checked into a [`DeviceQuery`] by [`typed_users`]).
    pub device_keys: BTreeMap<String, Vec<OwnedDeviceId>>,
    /// How long to wait for other units, in milliseconds (default 10 s).
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// `POST /keys/claim` (`one_time_keys` required).
#[derive(Debug, Deserialize)]
pub struct KeysClaimBody {
    /// User ID → device ID → algorithm (checked into a [`ClaimRequest`] by [`typed_users`]).
    pub one_time_keys: BTreeMap<String, BTreeMap<OwnedDeviceId, String>>,
    /// How long to wait for other units, in milliseconds (default 10 s).
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// The keys of `POST /keys/device_signing/upload`, each a signed `CrossSigningKey` and each
/// optional (the UIA `auth` part is the HTTP layer's).
#[derive(Debug, Default, Deserialize)]
pub struct SigningKeysUpload {
    /// The user's master key.
    #[serde(default)]
    pub master_key: Option<Value>,
    /// The self-signing key, signed by the master key.
    #[serde(default)]
    pub self_signing_key: Option<Value>,
    /// The user-signing key, signed by the master key.
    #[serde(default)]
    pub user_signing_key: Option<Value>,
}

/// `PUT /dehydrated_device` (MSC3814): the device, its data, and its keys.
#[derive(Debug, Deserialize)]
pub struct DehydratedDeviceBody {
    /// The dehydrated device's ID, chosen by the client.
    pub device_id: OwnedDeviceId,
    /// The pickled device, opaque to the server (an object with an `algorithm`).
    pub device_data: Value,
    /// The device's display name.
    #[serde(default)]
    pub initial_device_display_name: Option<String>,
    /// Its keys, as `/keys/upload` takes them (`device_keys` required here).
    #[serde(flatten)]
    pub keys: KeysUploadBody,
}
