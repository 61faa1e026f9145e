-- Issue 14, storage: fewer index entries and dead rows per event, and vacuum that keeps up with a queue table.
-- Measured with bench/storage.py (the engine's statements per event, on a cluster with autovacuum on); the
-- figures are in bench/RESULTS.md, "Storage per event".
--
-- An event's claim and outcome cannot be HOT updates: both change `state`, which the partial indexes that find
-- due, running and ended events read (a lower fillfactor only spread the rows: 413 heap bytes per event at 70
-- against 212 at 100, whose claims already stay on their page 95 % of the time). What can be spared is the rest:

-- A lease renewal (the lease keeper renewing an attempt that waits for a worker, a desk's `extend`) changes
-- lease_until only; with an index on it, each renewal was a new entry in every index of events and a dead row
-- until the next vacuum. The rescuers find running rows through events_state_id_idx (the attempts held right
-- now: few), and a renewal is a HOT update: measured, none of them was HOT before, every one after.
DROP INDEX IF EXISTS events_lease_idx;

-- Only kafka-message-scheduler events have a schedule_key: the others no longer add an entry here when they are
-- made. Its one query (schedule_key = ... AND state = 'scheduled') implies the predicate.
DROP INDEX IF EXISTS events_schedule_key_idx;
CREATE INDEX events_schedule_key_idx ON events (schedule_key) WHERE state = 'scheduled' AND schedule_key IS NOT NULL;

-- Vacuumed by dead rows, not when a fifth of the table is dead (the server's default): a table that keeps
-- RETENTION_DAYS of finished events is mostly rows that never change again, while each new event leaves two dead
-- versions and retention's deletes more (three history rows each). Measured with 500,000 events kept and
-- retention deleting as many as were made: with the default, dead rows reached 115,000 (events) and 175,000
-- (history) in four minutes and both tables kept growing; with these, 51,000 and 81,000, and both stopped
-- growing within two minutes. (While a transaction holds vacuum back, autovacuum visits them every naptime and
-- can remove nothing: the price of the lower threshold.)
ALTER TABLE events SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 2000);
ALTER TABLE event_history SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 2000);
