-- 0015: which member events each device was sent under lazy-loaded members.
--
-- With `lazy_load_members` a `/sync` sends the member events of the timeline's senders (and of
-- the room's heroes) that the client does not have yet; the spec lets the server skip the ones
-- it already sent ("redundant membership events") unless the filter sets
-- `include_redundant_members`. A row says: this device was sent `event_id` for `member` in a
-- response whose `next_batch` position was `sent_upto`. Only a sync whose `since` is at or
-- after `sent_upto` counts it as delivered, so a retried sync from an older token (whose answer
-- may have been lost) sends it again. Rows go with their device.

CREATE TABLE lazy_members_sent (
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    room_id     TEXT NOT NULL,
    member      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    sent_upto   INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, room_id, member)
) STRICT, WITHOUT ROWID;
