-- 0022: one notification outcome per event for the members on the default push rules.
--
-- Why: a message into a room of N local members wrote N rows (one per notified member) in the
-- writer's transaction: at 10,000 members a send cost 34 ms p50 (`bench --bigroom`). What the
-- default rules decide depends only on the event, except for the users it names
-- (`m.mentions.user_ids`, a member event's target), so `room_notifications` keeps that one
-- outcome per event, and a member's unread count is computed when it is read: the outcomes
-- after their read position while they were joined (`membership_changes`) and on the default
-- rules (`push_rulesets.custom_since`), plus their own rows in `notifications` (members with
-- their own rules, or named by the event), which take precedence at the same position. Each
-- row carries the running totals of the room's shared outcomes up to it, so the count over a
-- range of positions is two lookups however many messages are unread; a redaction marks its
-- row rather than deleting it, which keeps the totals true, and the marked rows (few, and
-- indexed on their own) are subtracted.
-- Existing `notifications` rows stay as they are and are still counted: old events have no
-- shared outcome, so no unread count changes across the upgrade.

CREATE TABLE room_notifications (
    room_id     TEXT NOT NULL,
    -- The event.
    stream_pos  INTEGER NOT NULL,
    highlight   INTEGER NOT NULL CHECK (highlight IN (0, 1)),
    -- JSON array: the actions of the default rule that matched.
    actions     TEXT NOT NULL,
    -- Shared outcomes of the room up to this one (this one included), and highlights among them.
    notified    INTEGER NOT NULL,
    highlighted INTEGER NOT NULL,
    -- The event was redacted: it no longer counts (the totals above still include it).
    redacted    INTEGER NOT NULL DEFAULT 0 CHECK (redacted IN (0, 1)),
    PRIMARY KEY (room_id, stream_pos)
) STRICT, WITHOUT ROWID;
CREATE INDEX room_notifications_redacted ON room_notifications(room_id, stream_pos)
    WHERE redacted = 1;

-- When the user first left the default rules: events from here on were evaluated with their
-- own rules, so shared outcomes stop applying to them. 0 for sets stored before this
-- migration (no event before it has a shared outcome).
ALTER TABLE push_rulesets ADD COLUMN custom_since INTEGER NOT NULL DEFAULT 0;

-- A user's membership runs in one room, read for every unread count.
CREATE INDEX membership_changes_user_room ON membership_changes(user_id, room_id, stream_pos);

-- A redaction removes the notifications it caused, the shared outcome included.
DROP TRIGGER events_redacted_unnotify;
CREATE TRIGGER events_redacted_unnotify AFTER UPDATE OF redacted_by ON events
WHEN NEW.redacted_by IS NOT NULL AND OLD.redacted_by IS NULL BEGIN
    DELETE FROM notifications
    WHERE room_id = NEW.room_id AND stream_pos = NEW.stream_pos
    AND user_id IN (SELECT state_key FROM current_state
                    WHERE room_id = NEW.room_id AND event_type = 'm.room.member');
    DELETE FROM notifications_recent
    WHERE stream_pos = NEW.stream_pos
    AND user_id IN (SELECT state_key FROM current_state
                    WHERE room_id = NEW.room_id AND event_type = 'm.room.member');
    UPDATE room_notifications SET redacted = 1
    WHERE room_id = NEW.room_id AND stream_pos = NEW.stream_pos;
END;
