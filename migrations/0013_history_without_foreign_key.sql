-- Issue 15: event_history.event_id is no longer a foreign key to events. Its check ran once per history row (a
-- lookup of the event and a lock on it), 10 of the 61 microseconds of database time each event cost (bench/dbcost.py),
-- to prove what holds by construction: only the triggers on events write history rows, each for the event whose
-- change it records, in that change's own transaction. What the key's ON DELETE CASCADE did, deleting a deleted
-- event's history with it, the delete trigger does now, in one statement for all the rows a DELETE removed.

ALTER TABLE event_history DROP CONSTRAINT IF EXISTS event_history_event_id_fkey;

CREATE OR REPLACE FUNCTION punctual_events_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    notified bigint;
BEGIN
    -- A deleted event's history goes with it (as ON DELETE CASCADE did, in one statement instead of one per row).
    DELETE FROM event_history h USING old_rows o WHERE h.event_id = o.id;
    SELECT count(*) INTO notified FROM (
        SELECT pg_notify('punctual_events', json_build_object('op', 'DELETE', 'ids', array_agg(id ORDER BY id))::text)
        FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / 100 AS chunk FROM old_rows) AS r
        GROUP BY chunk) AS chunks;
    RETURN NULL;
END;
$$;
