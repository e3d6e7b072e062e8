-- 0013: delayed events (MSC4140).
--
-- A client schedules an event to be sent later (MatrixRTC schedules its "left the call" state
-- and keeps pushing it back while the call runs). The MSC requires scheduled events to survive
-- a restart and to be sent as soon as possible after one if their time passed while the unit
-- was down, so they live here, not in memory. Finalised rows (sent, cancelled, failed) are kept
-- for lookup and pruned after seven days (`service::delayed_events`).

CREATE TABLE delayed_events (
    delay_id      TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    -- The device that scheduled it and its transaction ID, for idempotent retries.
    device_id     TEXT NOT NULL,
    txn_id        TEXT,
    room_id       TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    -- NULL for a message-like event.
    state_key     TEXT,
    content       TEXT NOT NULL,
    delay_ms      INTEGER NOT NULL,
    -- When it was scheduled or last restarted (ms); it is due at scheduled_at + delay_ms.
    scheduled_at  INTEGER NOT NULL,
    -- 'scheduled', 'sent', 'cancelled' or 'failed'.
    status        TEXT NOT NULL,
    event_id      TEXT,
    -- The standard error response of a failed send, JSON.
    error         TEXT,
    finalised_ts  INTEGER
);

CREATE INDEX delayed_events_due ON delayed_events(scheduled_at + delay_ms)
    WHERE status = 'scheduled';
CREATE INDEX delayed_events_user ON delayed_events(user_id, status);
CREATE UNIQUE INDEX delayed_events_txn ON delayed_events(user_id, device_id, txn_id)
    WHERE txn_id IS NOT NULL;
CREATE INDEX delayed_events_event ON delayed_events(event_id) WHERE event_id IS NOT NULL;
