-- Bucket upserts as HOT updates: a fold that changes only a bucket's state writes no index entry.
--
-- Why: a bucket is updated every time a batch holds events of its hour (the current hour's many
-- times, late hours again later). usage_rollups_updated indexed updated_at, which every such
-- update changes, so Postgres could never update in place and wrote a new entry into each of
-- the table's four indexes instead: most of the ~40 µs an upsert cost in `make bench-aggregate`.
-- Nothing reads that index (the reporter pages by id and version, see reporter/queries.py).
DROP INDEX usage_rollups_updated;

-- Room on every page for the next versions of its rows, so the update can stay on the page
-- (a HOT update needs free space on the same page). Applies to pages written from now on.
ALTER TABLE usage_rollups SET (fillfactor = 80);
ALTER TABLE usage_totals SET (fillfactor = 80);
