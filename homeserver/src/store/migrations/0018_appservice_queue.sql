-- Application services (issue 17): what the server has pushed to each registered appservice.
-- The queue of room events is the event stream itself (events are durable in the transaction
-- that stores them); per appservice we keep how far the sender has looked (`cursor`), the one
-- transaction formed and not yet acknowledged (its ID and body fixed, so a retry after a crash
-- re-sends the same txnId with the same events), and the link state `appliance status` shows.

CREATE TABLE appservice_state (
    appservice_id    TEXT PRIMARY KEY NOT NULL,
    -- Stream position up to which room events were examined (and, when interesting, put in
    -- a formed transaction).
    cursor           INTEGER NOT NULL,
    -- The next transaction ID to give out (IDs are never reused for this appservice).
    next_txn         INTEGER NOT NULL DEFAULT 1,
    last_success_ts  INTEGER,
    last_error_ts    INTEGER,
    last_error       TEXT,
    failures         INTEGER NOT NULL DEFAULT 0,
    next_retry_ts    INTEGER
) STRICT;

-- The transaction in flight per appservice (at most one, sent until acknowledged).
CREATE TABLE appservice_txns (
    appservice_id  TEXT PRIMARY KEY NOT NULL,
    txn_id         TEXT NOT NULL,
    body           TEXT NOT NULL,
    -- Events plus ephemeral items it carries, for the queue depth.
    items          INTEGER NOT NULL,
    created_ts     INTEGER NOT NULL
) STRICT;

-- Ephemeral items (receipts, typing, presence, to-device, device lists) waiting for an
-- appservice that asked for them, in order.
CREATE TABLE appservice_ephemeral (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    appservice_id  TEXT NOT NULL,
    -- The transaction key it goes under: `ephemeral`, `to_device`, `device_lists`, ...
    section        TEXT NOT NULL,
    payload        TEXT NOT NULL,
    created_ts     INTEGER NOT NULL
) STRICT;
CREATE INDEX appservice_ephemeral_by_as ON appservice_ephemeral(appservice_id, id);
