-- 0009: server notices.
--
-- The admin's messages to users (`appliance notice`) arrive in one room per user, sent by
-- the reserved `@server-notices` account, tagged `m.server_notice`. This table remembers
-- each user's notices room so later notices land in the same one.

CREATE TABLE server_notice_rooms (
    user_id  TEXT PRIMARY KEY NOT NULL,
    room_id  TEXT NOT NULL
) STRICT;
