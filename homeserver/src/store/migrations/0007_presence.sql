-- 0007: presence.
--
-- One row per user whose presence we know (local users once they synced or set it, remote
-- users from `m.presence` EDUs). Presence is advisory, but kept in the database rather than
-- in memory so that a restart does not show everyone offline and so each change carries a
-- stream position that wakes `/sync` like every other change.

CREATE TABLE presence (
    user_id         TEXT PRIMARY KEY NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('online', 'unavailable', 'offline')),
    status_msg      TEXT,
    last_active_ts  INTEGER NOT NULL,
    stream_pos      INTEGER NOT NULL
) STRICT;
CREATE INDEX presence_stream ON presence(stream_pos);
