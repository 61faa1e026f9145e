-- Issue 15: the notification triggers asked punctual_watched() once per row (a live page open?): 40,000 calls for
-- W1's 20,000 events, each a statement of its own (pg_stat_statements). As a scalar subquery it is asked once per
-- statement, at most: an InitPlan. Both functions are otherwise as migration 0016 left them.

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
              FROM new_rows WHERE state <> 'running' OR (SELECT punctual_watched())) AS r
        GROUP BY chunk) AS chunks;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION punctual_events_updated() RETURNS trigger
LANGUAGE plpgsql SET enable_nestloop = off AS $$
DECLARE
    notified bigint;
BEGIN
    -- Rows whose state or time changed; a lease extension or a payload edit changes neither.
    WITH changed AS MATERIALIZED (
        SELECT n.id, n.callback_id, n.state, n.attempts, n.worker, n.last_error, n.result, n.scheduled_for,
               n.finished_at, n.source, n.started_at, o.state = 'running' AND n.attempts >= o.attempts AS attempt_ended,
               o.state IS DISTINCT FROM n.state AS moved,
               -- A claim, or an attempt's final outcome: only a live page needs to hear of it (punctual_watched).
               (o.state = 'scheduled' AND n.state = 'running') OR (o.state = 'running' AND n.state IN ('finished', 'failed'))
                   AS for_pages
        FROM new_rows n JOIN old_rows o USING (id)
        WHERE o.state IS DISTINCT FROM n.state OR o.scheduled_for IS DISTINCT FROM n.scheduled_for
    ), history AS (
        -- An attempt that ended (with its start), a move made from outside, or a scheduled event given another
        -- time (a reschedule through the API or SQL). A claim writes nothing: its attempt's row comes at its end.
        -- A claim given back before its attempt began (a shutdown's release, uncounted: attempts goes back down)
        -- was no attempt: its row says it was given back, without a start.
        INSERT INTO event_history (event_id, state, attempt, worker, error, note, started_at)
        SELECT id, state, attempts, worker, CASE WHEN state IN ('scheduled', 'failed') THEN last_error END,
               CASE WHEN NOT moved THEN 'rescheduled to '
                    || to_char(scheduled_for AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') END,
               CASE WHEN attempt_ended THEN started_at END
        FROM changed WHERE (moved AND state <> 'running') OR (NOT moved AND state = 'scheduled') ORDER BY id
    ), outboxed AS (
        INSERT INTO outbox (event_id, body)
        SELECT ch.id, jsonb_build_object(
            'event_id', ch.id, 'callback', c.name, 'state', ch.state, 'attempts', ch.attempts,
            'result', ch.result, 'error', ch.last_error, 'scheduled_for', ch.scheduled_for,
            'finished_at', ch.finished_at, 'source', ch.source, 'worker', ch.worker)
        FROM changed ch JOIN callbacks c ON c.id = ch.callback_id
        WHERE ch.moved AND ch.state IN ('finished', 'failed', 'cancelled')
          AND EXISTS (SELECT 1 FROM punctual_flags WHERE name = 'outbox')
        ORDER BY ch.id
    )
    SELECT count(*) INTO notified FROM (
        SELECT pg_notify('punctual_events', json_build_object(
                   'op', 'UPDATE', 'ids', array_agg(id ORDER BY id), 'states', array_agg(state ORDER BY id),
                   'at', array_agg((extract(epoch FROM scheduled_for) * 1000000)::bigint ORDER BY id))::text)
        FROM (SELECT id, state, scheduled_for, (row_number() OVER (ORDER BY id) - 1) / 100 AS chunk
              FROM changed WHERE NOT for_pages OR (SELECT punctual_watched())) AS r
        GROUP BY chunk) AS chunks;
    RETURN NULL;
END;
$$;
