-- Issue 15: an idle instance inserts the due events its API creates already claimed (running, attempt 1, under
-- its lease), in the transaction that creates them, and starts them when it commits: no wait for the notification,
-- no claim statement of its own (engine/dispatcher.py, Dispatcher.reserve). The insert trigger wrote such a row's
-- creation as 'running', so its story lost the creation ('scheduled') and told the start twice. An event inserted
-- running now has its creation row, as any event, and its attempt's row at the attempt's end. Rows already
-- written stay as they were.

CREATE OR REPLACE FUNCTION punctual_events_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    notified bigint;
BEGIN
    WITH history AS (
        -- An event inserted running was created, then claimed in the same transaction (the API's claim at creation,
        -- or plain SQL): its row tells the creation, as for any event, and its attempt's row comes at its end.
        INSERT INTO event_history (event_id, state, attempt, worker)
        SELECT id, CASE WHEN state = 'running' THEN 'scheduled' ELSE state END,
               CASE WHEN state = 'running' THEN GREATEST(attempts - 1, 0) ELSE attempts END,
               CASE WHEN state IN ('scheduled', 'running') THEN NULL ELSE worker END
        FROM new_rows ORDER BY id
    )
    SELECT count(*) INTO notified FROM (
        SELECT pg_notify('punctual_events', json_build_object(
                   'op', 'INSERT', 'ids', array_agg(id ORDER BY id), 'states', array_agg(state ORDER BY id),
                   'at', array_agg((extract(epoch FROM scheduled_for) * 1000000)::bigint ORDER BY id))::text)
        FROM (SELECT id, state, scheduled_for, (row_number() OVER (ORDER BY id) - 1) / 100 AS chunk
              FROM new_rows) AS r
        GROUP BY chunk) AS chunks;
    RETURN NULL;
END;
$$;
