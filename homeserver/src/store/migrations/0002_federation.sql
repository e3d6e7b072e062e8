-- 0002: closed federation.
--
-- * `federation_outbox` is the durable per-peer queue: a local event is enqueued for every
--   peer in its room in the same transaction that stores the event, so nothing acknowledged
--   to a client can be lost on its way to a peer, however long the link is down.
-- * `peer_links` records each peer's link state for the admin (`appliance status`).
-- * `received_transactions` makes `/send/{txnId}` idempotent per origin.
-- * `events.outlier` marks events we hold without their place in the timeline (auth chains
--   from a join, invites to rooms we are not in).

CREATE TABLE federation_outbox (
    -- AUTOINCREMENT: ids are never reused, because transaction IDs are derived from them and
    -- a peer drops a transaction whose ID it has seen before.
    id           INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    destination  TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('pdu', 'edu')),
    -- For a PDU its event ID; for an EDU the EDU JSON.
    payload      TEXT NOT NULL,
    created_ts   INTEGER NOT NULL
) STRICT;
CREATE INDEX federation_outbox_destination ON federation_outbox(destination, id);

CREATE TABLE peer_links (
    server_name      TEXT PRIMARY KEY NOT NULL,
    last_success_ts  INTEGER,
    last_error_ts    INTEGER,
    last_error       TEXT,
    failures         INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE received_transactions (
    origin       TEXT NOT NULL,
    txn_id       TEXT NOT NULL,
    received_ts  INTEGER NOT NULL,
    response     TEXT NOT NULL,
    PRIMARY KEY (origin, txn_id)
) STRICT, WITHOUT ROWID;

-- Invites from other units to rooms we are not in: the stripped state the inviter sent, shown
-- to the invitee in /sync.
CREATE TABLE remote_invites (
    room_id       TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    invite_state  TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
) STRICT, WITHOUT ROWID;

ALTER TABLE events ADD COLUMN outlier INTEGER NOT NULL DEFAULT 0;
