-- 0001: the initial schema.
--
-- Why this shape: every table is relational with real keys so that federation (remote events,
-- outliers, backfill, state resolution) can be added without a rewrite.
--
-- * One global stream position (`stream_pos`) orders everything a client syncs: events,
--   account data, receipts. A sync token is a position; because positions are allocated by the
--   single writer inside the committing transaction, readers never observe gaps.
-- * Events are stored as signed PDU JSON. State is kept as state groups with deltas
--   (`state_groups` + `state_group_entries`), one group per distinct state, each event pointing
--   at the group of the state *after* it. `current_state` is the materialised state of each room.
-- * The DAG is kept in `event_edges` (prev_events) and `event_auth` (auth_events), which is what
--   auth-chain lookups, backfill and get_missing_events need.

CREATE TABLE users (
    user_id        TEXT PRIMARY KEY NOT NULL,
    password_hash  TEXT,
    created_ts     INTEGER NOT NULL,
    is_admin       INTEGER NOT NULL DEFAULT 0,
    deactivated    INTEGER NOT NULL DEFAULT 0,
    displayname    TEXT,
    avatar_url     TEXT
) STRICT;

CREATE TABLE devices (
    user_id       TEXT NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    device_id     TEXT NOT NULL,
    display_name  TEXT,
    last_seen_ts  INTEGER,
    last_seen_ip  TEXT,
    PRIMARY KEY (user_id, device_id)
) STRICT;

-- Tokens are stored as SHA-256 hashes: a copied database file does not hand out sessions.
CREATE TABLE access_tokens (
    token_hash   BLOB PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    expires_ts   INTEGER,
    created_ts   INTEGER NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX access_tokens_device ON access_tokens(user_id, device_id);

CREATE TABLE refresh_tokens (
    token_hash   BLOB PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    created_ts   INTEGER NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX refresh_tokens_device ON refresh_tokens(user_id, device_id);

-- A registration token an admin handed out; `uses_allowed` NULL means unlimited.
CREATE TABLE registration_tokens (
    token         TEXT PRIMARY KEY NOT NULL,
    uses_allowed  INTEGER,
    completed     INTEGER NOT NULL DEFAULT 0,
    expiry_ts     INTEGER
) STRICT;

CREATE TABLE rooms (
    room_id       TEXT PRIMARY KEY NOT NULL,
    room_version  TEXT NOT NULL,
    creator       TEXT NOT NULL,
    is_public     INTEGER NOT NULL DEFAULT 0,
    created_ts    INTEGER NOT NULL,
    -- The state group matching `current_state`; new local events build on it.
    current_state_group  INTEGER
) STRICT;

CREATE TABLE state_groups (
    state_group  INTEGER PRIMARY KEY NOT NULL,
    room_id      TEXT NOT NULL REFERENCES rooms(room_id),
    -- The group this one is a delta against; NULL for a full snapshot.
    prev_group   INTEGER REFERENCES state_groups(state_group),
    -- Number of deltas between this group and its nearest snapshot, to bound chain walks.
    delta_depth  INTEGER NOT NULL
) STRICT;

CREATE TABLE state_group_entries (
    state_group  INTEGER NOT NULL REFERENCES state_groups(state_group),
    event_type   TEXT NOT NULL,
    state_key    TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    PRIMARY KEY (state_group, event_type, state_key)
) STRICT, WITHOUT ROWID;

CREATE TABLE events (
    -- Local arrival order; doubles as the global stream position for sync.
    stream_pos        INTEGER PRIMARY KEY NOT NULL,
    event_id          TEXT NOT NULL UNIQUE,
    room_id           TEXT NOT NULL REFERENCES rooms(room_id),
    event_type        TEXT NOT NULL,
    state_key         TEXT,
    sender            TEXT NOT NULL,
    origin_server_ts  INTEGER NOT NULL,
    depth             INTEGER NOT NULL,
    -- The PDU exactly as signed (or its redacted form once redacted).
    json              TEXT NOT NULL,
    -- State after this event.
    state_group       INTEGER REFERENCES state_groups(state_group),
    redacted_by       TEXT,
    rejected          INTEGER NOT NULL DEFAULT 0,
    soft_failed       INTEGER NOT NULL DEFAULT 0,
    -- The sending device and client transaction id, for local events sent with a txnId.
    txn_device        TEXT,
    txn_id            TEXT
) STRICT;
CREATE INDEX events_room_order ON events(room_id, depth, stream_pos);
CREATE INDEX events_room_stream ON events(room_id, stream_pos);
CREATE UNIQUE INDEX events_txn ON events(sender, txn_device, txn_id) WHERE txn_id IS NOT NULL;

CREATE TABLE event_edges (
    event_id       TEXT NOT NULL,
    prev_event_id  TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX event_edges_prev ON event_edges(prev_event_id);

CREATE TABLE event_auth (
    event_id       TEXT NOT NULL,
    auth_event_id  TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_event_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE forward_extremities (
    room_id   TEXT NOT NULL REFERENCES rooms(room_id),
    event_id  TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE current_state (
    room_id     TEXT NOT NULL REFERENCES rooms(room_id),
    event_type  TEXT NOT NULL,
    state_key   TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    -- For m.room.member: the membership, so "rooms of user X" is one index lookup.
    membership  TEXT,
    PRIMARY KEY (room_id, event_type, state_key)
) STRICT, WITHOUT ROWID;
CREATE INDEX current_state_member ON current_state(state_key, membership) WHERE event_type = 'm.room.member';

-- Every membership change of a local user, in stream order, so /sync can tell joins, invites
-- and leaves that happened since a token.
CREATE TABLE membership_changes (
    stream_pos  INTEGER PRIMARY KEY NOT NULL REFERENCES events(stream_pos),
    room_id     TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    membership  TEXT NOT NULL
) STRICT;
CREATE INDEX membership_changes_user ON membership_changes(user_id, stream_pos);

-- Rooms a user has forgotten (hidden from sync once left).
CREATE TABLE forgotten_rooms (
    user_id  TEXT NOT NULL,
    room_id  TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE room_aliases (
    alias       TEXT PRIMARY KEY NOT NULL,
    room_id     TEXT NOT NULL REFERENCES rooms(room_id),
    creator     TEXT NOT NULL
) STRICT;
CREATE INDEX room_aliases_room ON room_aliases(room_id);

CREATE TABLE account_data (
    user_id     TEXT NOT NULL,
    -- '' for global account data.
    room_id     TEXT NOT NULL,
    data_type   TEXT NOT NULL,
    content     TEXT NOT NULL,
    stream_pos  INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
) STRICT, WITHOUT ROWID;
CREATE INDEX account_data_stream ON account_data(user_id, stream_pos);

CREATE TABLE receipts (
    room_id       TEXT NOT NULL,
    receipt_type  TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    thread_id     TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    ts            INTEGER NOT NULL,
    stream_pos    INTEGER NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX receipts_stream ON receipts(room_id, stream_pos);

CREATE TABLE filters (
    user_id    TEXT NOT NULL,
    filter_id  INTEGER NOT NULL,
    json       TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
) STRICT, WITHOUT ROWID;

-- Key/value facts about this server that are not per-row data (e.g. the signing key id).
CREATE TABLE server_meta (
    key    TEXT PRIMARY KEY NOT NULL,
    value  TEXT NOT NULL
) STRICT;
