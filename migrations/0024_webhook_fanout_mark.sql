-- The notifier's fan-out takes events marked not fanned out yet, instead of walking a cursor up
-- to the oldest transaction still running: that horizon (pg_snapshot_xmin) is the whole
-- cluster's, so one long transaction anywhere on the server (a pg_dump, another database's
-- batch job, a client idle in a transaction) held every webhook back for as long as it ran.
-- A row is seen once its transaction commits, whatever its seq; each is taken by one notifier
-- (FOR NO KEY UPDATE SKIP LOCKED) and marked in the transaction that makes its deliveries.

-- Both tables first, in the order an older notifier takes them (cursor, then events), so that
-- one still running waits for this migration instead of deadlocking with it.
LOCK TABLE webhook_fanout_cursor, webhook_events IN ACCESS EXCLUSIVE MODE;
-- Every event the cursor passed is final and fanned out (it only ever moved below the oldest
-- running transaction): true by default for the existing rows, without rewriting the table;
-- only the few after the cursor are set back.
ALTER TABLE webhook_events ADD COLUMN fanned_out boolean NOT NULL DEFAULT true;
ALTER TABLE webhook_events ALTER COLUMN fanned_out SET DEFAULT false;
UPDATE webhook_events e SET fanned_out = false
FROM webhook_fanout_cursor c
WHERE (e.xid, e.seq) > (c.xid, c.seq);
CREATE INDEX webhook_events_not_fanned_out ON webhook_events (seq) WHERE NOT fanned_out;
DROP INDEX webhook_events_fanout;
ALTER TABLE webhook_events DROP COLUMN xid;
DROP TABLE webhook_fanout_cursor;
