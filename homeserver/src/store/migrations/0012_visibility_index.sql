-- 0012: an index for history visibility.
--
-- Whether a user may see an event depends on the room's `m.room.history_visibility` events
-- and the user's own member events before it (`service::rooms::visibility`). Every path that
-- returns events reads those two short lists per room and request; without this index each
-- read scanned all of the room's events. Only state events are indexed, so the index stays
-- small next to the timeline.

CREATE INDEX events_room_state ON events(room_id, event_type, state_key, stream_pos)
    WHERE state_key IS NOT NULL;
