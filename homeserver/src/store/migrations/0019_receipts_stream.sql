-- 0019: receipts by stream position.
--
-- An incremental /sync asks which rooms have news since its token before it looks at any room:
-- events come from the events table's stream positions, receipts from this index. Without it
-- that question scanned every receipt of the unit (one per member, room and receipt type).

CREATE INDEX receipts_pos ON receipts(stream_pos);
