-- 0005: message search, event relations, user directory and server-side key backup.
--
-- * `event_search` is an FTS5 index over the searchable text of room events (spec: "Server Side
--   Search": `content.body` of m.room.message, `content.name` of m.room.name, `content.topic`
--   and the text/plain `m.topic` body of m.room.topic). Its rowid is the event's `stream_pos`.
--   It is kept by triggers on `events`, not by the code paths that store events, so local
--   sends, federation, backfill and redactions (which rewrite `events.json` and set
--   `redacted_by`) all keep it right without knowing it exists. Which rows may be shown
--   (rejected, soft-failed, outliers, rooms the searcher cannot see) is decided when querying,
--   from `events`, because those flags change after insertion.
-- * The index is contentless (`content=''`, `contentless_delete=1`): it holds the tokens but
--   not a second copy of every message, and a deleted row (a redaction) leaves no text behind.
--   Tokenizer: unicode61 with diacritics folded, so "cafe" finds "Café"; no stemming, because
--   units serve speakers of many languages and an English stemmer would mangle the rest.
-- * `event_search_source` is the one definition of "the searchable text of an event"; the
--   triggers and the back-fill of events stored before this migration both read it.
--   Every JSON access is guarded by `json_type`/CASE, so a malformed event from a peer is
--   simply not indexed: a failing trigger would refuse to store the event.
-- * `event_relations` is the parent → child index of `m.relates_to` (threads, edits, reactions)
--   for `/relations` and `/threads`, kept by the same kind of triggers for the same reason: a
--   redacted child loses its `m.relates_to` and so leaves the index.
-- * The user directory needs no table: it reads `users` and `current_state`.
-- * `room_key_backup_versions` / `room_key_backup_keys` hold a user's encrypted Megolm session
--   backups (spec: "Server-side key backups"). The server never sees plaintext keys. Versions
--   are numbered per user and never reused: a deleted version stays as a row with
--   `deleted = 1` (its keys removed), so deleting it again succeeds and writes to it get
--   `M_NOT_FOUND` instead of landing in a version that a client believes is gone. `etag`
--   counts changes to a version's keys; clients compare it to notice other devices' writes.

CREATE VIRTUAL TABLE event_search USING fts5(
    body,
    name,
    topic,
    content = '',
    contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE VIEW event_search_source (stream_pos, body, name, topic) AS
SELECT
    ev.stream_pos,
    CASE WHEN ev.event_type = 'm.room.message' THEN
        CASE WHEN json_type(ev.json, '$.content.body') = 'text'
            THEN json_extract(ev.json, '$.content.body') END
    END,
    CASE WHEN ev.event_type = 'm.room.name' THEN
        CASE WHEN json_type(ev.json, '$.content.name') = 'text'
            THEN json_extract(ev.json, '$.content.name') END
    END,
    CASE WHEN ev.event_type = 'm.room.topic' THEN (
        SELECT group_concat(text, ' ') FROM (
            SELECT json_extract(ev.json, '$.content.topic') AS text
            WHERE json_type(ev.json, '$.content.topic') = 'text'
            UNION
            SELECT CASE WHEN part.type = 'object' THEN
                CASE WHEN json_type(part.value, '$.body') = 'text'
                    AND coalesce(json_extract(part.value, '$.mimetype'), 'text/plain') = 'text/plain'
                    THEN json_extract(part.value, '$.body') END
            END
            -- `ev.` matters: json_each has a hidden column called `json` that would shadow it.
            FROM json_each(ev.json, '$.content."m.topic"."m.text"') AS part
        ) WHERE text IS NOT NULL
    ) END
FROM events AS ev
WHERE ev.redacted_by IS NULL
    AND ev.event_type IN ('m.room.message', 'm.room.name', 'm.room.topic')
    AND json_valid(ev.json);

CREATE TRIGGER events_search_insert AFTER INSERT ON events
WHEN NEW.event_type IN ('m.room.message', 'm.room.name', 'm.room.topic')
BEGIN
    INSERT INTO event_search (rowid, body, name, topic)
    SELECT stream_pos, body, name, topic FROM event_search_source
    WHERE stream_pos = NEW.stream_pos AND coalesce(body, name, topic) IS NOT NULL;
END;

-- A redaction rewrites `json` and sets `redacted_by`: drop the row, re-add only what is left.
CREATE TRIGGER events_search_update AFTER UPDATE OF json, redacted_by ON events
WHEN NEW.event_type IN ('m.room.message', 'm.room.name', 'm.room.topic')
BEGIN
    DELETE FROM event_search WHERE rowid = OLD.stream_pos;
    INSERT INTO event_search (rowid, body, name, topic)
    SELECT stream_pos, body, name, topic FROM event_search_source
    WHERE stream_pos = NEW.stream_pos AND coalesce(body, name, topic) IS NOT NULL;
END;

CREATE TRIGGER events_search_delete AFTER DELETE ON events
WHEN OLD.event_type IN ('m.room.message', 'm.room.name', 'm.room.topic')
BEGIN
    DELETE FROM event_search WHERE rowid = OLD.stream_pos;
END;

INSERT INTO event_search (rowid, body, name, topic)
SELECT stream_pos, body, name, topic FROM event_search_source
WHERE coalesce(body, name, topic) IS NOT NULL;

CREATE TABLE event_relations (
    event_id    TEXT PRIMARY KEY NOT NULL,
    room_id     TEXT NOT NULL,
    -- The parent event.
    relates_to  TEXT NOT NULL,
    rel_type    TEXT NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX event_relations_parent ON event_relations(relates_to, rel_type);
CREATE INDEX event_relations_room ON event_relations(room_id, rel_type);

CREATE VIEW event_relations_source (event_id, room_id, relates_to, rel_type) AS
SELECT
    ev.event_id,
    ev.room_id,
    json_extract(ev.json, '$.content."m.relates_to".event_id'),
    json_extract(ev.json, '$.content."m.relates_to".rel_type')
FROM events AS ev
WHERE CASE WHEN json_valid(ev.json) THEN
    json_type(ev.json, '$.content."m.relates_to".event_id') = 'text'
    AND json_type(ev.json, '$.content."m.relates_to".rel_type') = 'text'
END;

-- The WHEN clauses are a cheap text test so that most events are not parsed a second time.
CREATE TRIGGER events_relations_insert AFTER INSERT ON events
WHEN instr(NEW.json, 'm.relates_to') > 0
BEGIN
    INSERT OR REPLACE INTO event_relations (event_id, room_id, relates_to, rel_type)
    SELECT event_id, room_id, relates_to, rel_type FROM event_relations_source
    WHERE event_id = NEW.event_id;
END;

CREATE TRIGGER events_relations_update AFTER UPDATE OF json ON events
WHEN instr(OLD.json, 'm.relates_to') > 0 OR instr(NEW.json, 'm.relates_to') > 0
BEGIN
    DELETE FROM event_relations WHERE event_id = OLD.event_id;
    INSERT INTO event_relations (event_id, room_id, relates_to, rel_type)
    SELECT event_id, room_id, relates_to, rel_type FROM event_relations_source
    WHERE event_id = NEW.event_id;
END;

CREATE TRIGGER events_relations_delete AFTER DELETE ON events
BEGIN
    DELETE FROM event_relations WHERE event_id = OLD.event_id;
END;

INSERT INTO event_relations (event_id, room_id, relates_to, rel_type)
SELECT event_id, room_id, relates_to, rel_type FROM event_relations_source;

CREATE TABLE room_key_backup_versions (
    user_id     TEXT NOT NULL,
    version     INTEGER NOT NULL,
    algorithm   TEXT NOT NULL,
    -- The algorithm-dependent `auth_data` object, verbatim.
    auth_data   TEXT NOT NULL,
    etag        INTEGER NOT NULL DEFAULT 0,
    deleted     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
) STRICT, WITHOUT ROWID;

CREATE TABLE room_key_backup_keys (
    user_id              TEXT NOT NULL,
    version              INTEGER NOT NULL,
    room_id              TEXT NOT NULL,
    session_id           TEXT NOT NULL,
    first_message_index  INTEGER NOT NULL,
    forwarded_count      INTEGER NOT NULL,
    is_verified          INTEGER NOT NULL,
    -- The algorithm-dependent, client-encrypted `session_data` object, verbatim.
    session_data         TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id),
    FOREIGN KEY (user_id, version) REFERENCES room_key_backup_versions(user_id, version)
) STRICT, WITHOUT ROWID;
