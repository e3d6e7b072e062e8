-- 0003: end-to-end encryption support.
--
-- The server never decrypts; it stores and forwards what Olm/Megolm clients publish.
-- * `device_keys` holds the signed identity keys of local devices, and a cache of remote
--   users' devices (so a client can still encrypt to a peer's users while the link is down).
-- * `remote_device_lists` remembers, per remote user, the device-list stream ID we hold and
--   whether the cache is stale (a gap in the `prev_id` chain), which forces a resync.
-- * `one_time_keys` are handed out once each; `fallback_keys` are reused until replaced.
-- * `cross_signing_keys` and `key_signatures` hold cross-signing: signatures are kept apart
--   from the keys they sign because a user-signing signature is visible to its signer only.
-- * `device_list_changes` is the device-list stream: one row per change of a user's devices
--   or cross-signing keys, at a stream position, feeding `/sync` `device_lists` and `/keys/changes`.
-- * `to_device` is the per-device inbox, deleted once the client acknowledges a later token;
--   `to_device_txns` makes a retried `/sendToDevice` a no-op.
-- * `dehydrated_devices` marks the one device per user that is kept offline (MSC3814) and
--   holds its client-encrypted data; the device itself is an ordinary `devices` row.
-- * A trigger drops a device's keys and inbox with the device, whichever path deletes it
--   (logout, deletion, password change, deactivation).

CREATE TABLE device_keys (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    -- The DeviceKeys object as signed by the device.
    key_json   TEXT NOT NULL,
    -- Remote devices only: the display name their server published.
    display_name TEXT,
    PRIMARY KEY (user_id, device_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE remote_device_lists (
    user_id    TEXT PRIMARY KEY NOT NULL,
    stream_id  INTEGER NOT NULL,
    stale      INTEGER NOT NULL DEFAULT 0,
    -- Our stream position when the list was last fetched whole: a join into a shared room
    -- after it may end a time when no update reached us, so it forces a resync.
    fetched_pos INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE one_time_keys (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    algorithm  TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    key_json   TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE fallback_keys (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    algorithm  TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    key_json   TEXT NOT NULL,
    used       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
) STRICT, WITHOUT ROWID;

CREATE TABLE cross_signing_keys (
    user_id    TEXT NOT NULL,
    key_type   TEXT NOT NULL CHECK (key_type IN ('master', 'self_signing', 'user_signing')),
    -- The CrossSigningKey object as uploaded.
    key_json   TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
) STRICT, WITHOUT ROWID;

CREATE TABLE key_signatures (
    -- Whose key is signed, and which one: a device ID or a cross-signing public key.
    target_user    TEXT NOT NULL,
    target_key     TEXT NOT NULL,
    signer_user    TEXT NOT NULL,
    -- e.g. `ed25519:<self-signing public key>`.
    signer_key_id  TEXT NOT NULL,
    signature      TEXT NOT NULL,
    PRIMARY KEY (target_user, target_key, signer_user, signer_key_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE device_list_changes (
    stream_pos  INTEGER PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL
) STRICT;
CREATE INDEX device_list_changes_user ON device_list_changes(user_id, stream_pos);

CREATE TABLE to_device (
    stream_pos  INTEGER PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    sender      TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    content     TEXT NOT NULL
) STRICT;
CREATE INDEX to_device_inbox ON to_device(user_id, device_id, stream_pos);

CREATE TABLE to_device_txns (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    txn_id     TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

CREATE TRIGGER devices_delete_keys AFTER DELETE ON devices BEGIN
    DELETE FROM device_keys WHERE user_id = OLD.user_id AND device_id = OLD.device_id;
    DELETE FROM one_time_keys WHERE user_id = OLD.user_id AND device_id = OLD.device_id;
    DELETE FROM fallback_keys WHERE user_id = OLD.user_id AND device_id = OLD.device_id;
    DELETE FROM to_device WHERE user_id = OLD.user_id AND device_id = OLD.device_id;
END;

CREATE TABLE dehydrated_devices (
    user_id      TEXT PRIMARY KEY NOT NULL,
    device_id    TEXT NOT NULL,
    device_data  TEXT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT;
