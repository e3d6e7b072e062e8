-- Application services: an appservice removed from `<data_dir>/appservices/` keeps its state
-- row, marked with when it was removed (its transaction in flight and queued items are
-- dropped then). Added again with the same id, it starts at the stream position where it is
-- added, like a new appservice, rather than at its old cursor (which would hand it the events
-- of the time it was not registered), while its transaction IDs go on counting: an appservice
-- that remembers the txnIds it has processed must never take a new transaction for one it saw.
ALTER TABLE appservice_state ADD COLUMN removed_ts INTEGER;
