-- 0016: an event's `prev_events` and `auth_events` are read from its stored PDU.
--
-- `event_edges` and `event_auth` repeated what every PDU in `events.json` already says (redaction
-- keeps both keys). Keyed by a hash, each stored event inserted its rows at a random place in
-- both B-trees: 4.1 of the ~14 pages each message wrote to the write-ahead log at 600
-- messages/s (`bench --wal`). The few walks that need edges (auth chains, backfill, missing
-- prev events) start from one event found by its ID and read its PDU with `json_each`.

DROP TABLE IF EXISTS event_edges;
DROP TABLE IF EXISTS event_auth;
