-- 0008: content reports.
--
-- Users report events, rooms and users (`/report`); the unit has no moderation team behind a
-- web UI, so reports are kept here for the admin, who reads them with `appliance reports`
-- through the local admin socket. Rows are never changed, only added.

CREATE TABLE reports (
    id           INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    reporter     TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('event', 'room', 'user')),
    room_id      TEXT,
    event_id     TEXT,
    target_user  TEXT,
    reason       TEXT NOT NULL,
    created_ts   INTEGER NOT NULL
) STRICT;
