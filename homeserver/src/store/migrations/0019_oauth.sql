-- The built-in OAuth 2.0 authorisation server (spec "OAuth 2.0 API"): what must survive a
-- restart. Browser sign-in sessions, authorisation requests in progress and pending device
-- codes live in memory (service/oauth): losing them costs a user one more sign-in.

-- Clients registered through dynamic client registration (RFC 7591). `metadata` is the
-- registration answer as sent (the validated fields only); the columns are what the consent
-- page, the authorisation endpoint and `appliance oauth clients` read.
CREATE TABLE oauth_clients (
    client_id         TEXT PRIMARY KEY NOT NULL,
    client_name       TEXT,
    client_uri        TEXT NOT NULL,
    application_type  TEXT NOT NULL CHECK (application_type IN ('web', 'native')),
    redirect_uris     TEXT NOT NULL,  -- JSON array of strings
    grant_types       TEXT NOT NULL,  -- JSON array of strings
    metadata          TEXT NOT NULL,  -- JSON object
    created_ts        INTEGER NOT NULL
) STRICT;

-- Authorisation codes, as SHA-256 hashes, kept after use (`used_ts`) until they expire so a
-- second use is recognised and the session it opened is revoked (RFC 6749 section 4.1.2).
CREATE TABLE oauth_codes (
    code_hash       BLOB PRIMARY KEY NOT NULL,
    client_id       TEXT NOT NULL REFERENCES oauth_clients(client_id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    device_id       TEXT NOT NULL,
    scope           TEXT NOT NULL,
    redirect_uri    TEXT NOT NULL,
    code_challenge  TEXT NOT NULL,
    expires_ts      INTEGER NOT NULL,
    used_ts         INTEGER
) STRICT;
CREATE INDEX oauth_codes_expiry ON oauth_codes(expires_ts);

-- Which client opened a device's session and with what scope: the refresh grant checks the
-- client, revocation and `appliance oauth` read it. Gone with the device.
CREATE TABLE oauth_sessions (
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    client_id   TEXT NOT NULL REFERENCES oauth_clients(client_id) ON DELETE CASCADE,
    scope       TEXT NOT NULL,
    created_ts  INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX oauth_sessions_client ON oauth_sessions(client_id);

-- Refresh tokens already swapped for a newer one (hashes), each with its successor: a retry
-- of a swap whose answer was lost (the successor still unused) is served again, a use after
-- the successor was used is reuse and ends the session (spec "Refresh token grant").
CREATE TABLE oauth_rotated_refresh_tokens (
    token_hash      BLOB PRIMARY KEY NOT NULL,
    user_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    successor_hash  BLOB NOT NULL,
    rotated_ts      INTEGER NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX oauth_rotated_device ON oauth_rotated_refresh_tokens(user_id, device_id);
