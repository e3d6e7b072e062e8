-- 0006: push rules, notifications and pushers.
--
-- * A user's push rules are rows of `push_rules`, one per rule, in the order the spec
--   evaluates them (`position` within each kind). A user who never changed anything has no
--   rows: the server-default rule set applies. The first change stores the whole set (the
--   defaults with their `enabled` and `actions`, plus the user's own rules), so a later
--   release that adds default rules merges them in on load. `push_rulesets` records when a
--   user's set last changed, which is what `/sync` follows to send `m.push_rules` again and
--   what the evaluator's cache of parsed rule sets is checked against.
-- * `notifications` holds the result of evaluating the rules for one local user and one event
--   that notified them, written in the transaction that stores the event, so the unread counts
--   of a `/sync` always match its timeline.
-- * `own_last_event` is the newest event each local user sent in each room: sending an event
--   marks the room read up to it (spec: "Marking notifications as read").
-- * `pushers` are the HTTP pushers clients registered; `push_outbox` is the durable queue of
--   notifications for them, filled in the event's transaction and drained by the push worker
--   with per-pusher backoff.

CREATE TABLE push_rulesets (
    user_id     TEXT PRIMARY KEY NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    -- Stream position of the last change.
    stream_pos  INTEGER NOT NULL
) STRICT;

CREATE TABLE push_rules (
    user_id     TEXT NOT NULL REFERENCES push_rulesets(user_id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('override', 'content', 'room', 'sender', 'underride')),
    rule_id     TEXT NOT NULL,
    -- Order within the kind; 0 is evaluated first.
    position    INTEGER NOT NULL,
    is_default  INTEGER NOT NULL CHECK (is_default IN (0, 1)),
    enabled     INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    -- JSON array, as the client API shows it.
    actions     TEXT NOT NULL,
    -- JSON array; override and underride rules only.
    conditions  TEXT,
    -- Glob; content rules only.
    pattern     TEXT,
    PRIMARY KEY (user_id, kind, rule_id)
) STRICT, WITHOUT ROWID;

-- One B-tree only, keyed for the hot read (unread counts of one room for /sync): every event
-- adds a row per notified member inside the writer's transaction, so each extra index is a
-- page per member per event. `/notifications` (newest first across rooms) sorts a user's rows.
CREATE TABLE notifications (
    user_id     TEXT NOT NULL,
    room_id     TEXT NOT NULL,
    -- The event that notified the user.
    stream_pos  INTEGER NOT NULL,
    highlight   INTEGER NOT NULL CHECK (highlight IN (0, 1)),
    -- JSON array: the actions of the rule that matched.
    actions     TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id, stream_pos)
) STRICT, WITHOUT ROWID;

CREATE TABLE own_last_event (
    user_id     TEXT NOT NULL,
    room_id     TEXT NOT NULL,
    stream_pos  INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE pushers (
    user_id              TEXT NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    app_id               TEXT NOT NULL,
    pushkey              TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    app_display_name     TEXT NOT NULL,
    device_display_name  TEXT NOT NULL,
    profile_tag          TEXT,
    lang                 TEXT NOT NULL,
    -- JSON object; `url` is where notifications go, the rest is forwarded to the gateway.
    data                 TEXT NOT NULL,
    -- `ip:port` notifications are POSTed to; NULL when the URL cannot be reached from a
    -- closed unit (https, or a host name, which would need DNS): such a pusher is kept for
    -- the client but nothing is queued for it.
    gateway              TEXT,
    -- The device whose access token set the pusher.
    device_id            TEXT NOT NULL,
    -- When the pushkey was last set (ms).
    pushkey_ts           INTEGER NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
) STRICT;
CREATE INDEX pushers_key ON pushers(app_id, pushkey);

CREATE TABLE push_outbox (
    id               INTEGER PRIMARY KEY NOT NULL,
    user_id          TEXT NOT NULL,
    app_id           TEXT NOT NULL,
    pushkey          TEXT NOT NULL,
    -- The event; its notification row holds the actions (tweaks).
    stream_pos       INTEGER NOT NULL,
    created_ts       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_ts  INTEGER NOT NULL,
    FOREIGN KEY (user_id, app_id, pushkey) REFERENCES pushers(user_id, app_id, pushkey)
        ON DELETE CASCADE
) STRICT;
CREATE INDEX push_outbox_due ON push_outbox(next_attempt_ts);
CREATE INDEX push_outbox_pusher ON push_outbox(user_id, app_id, pushkey);
