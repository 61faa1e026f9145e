-- Issue 15: events_state_id_idx, for listing events by state newest first, holds only the states it is needed for.
-- It held every event in every state: since the claim and the outcome change `state` (read by partial indexes, so
-- neither update is HOT), each event added three entries to it, at its insert, its claim and its outcome. Now the
-- claim and a success add none:
--   - running events are few (what the instances hold) and all in events_lease_idx: a listing reads them there
--     and sorts them;
--   - finished events are most of the table, so a listing walks the primary key newest first and finds a page
--     at once (and events_ended_idx has them all, when they are few).
-- bench/dbcost.py: 2 to 6 of about 50 microseconds of database time per event.

DROP INDEX IF EXISTS events_state_id_idx;
CREATE INDEX events_state_id_idx ON events (state, id) WHERE state NOT IN ('running', 'finished');
