-- Issue 15: a claim (scheduled -> running) is notified only while a live page is open somewhere, i.e. while the
-- 'live' flag in punctual_flags was set within the last 45 seconds (each instance with an open GET /stream sets it
-- again every 15). What listened to claims: the timers, which need nothing (a timer of a claimed event finds it
-- claimed, by its primary key), and the live pages. Parsing and dispatching a notification per claimed event cost
-- the instances more than the claim's own statement: W1 went from 11,700 to 14,400 events/s without them
-- (bench/RESULTS.md). Outcomes, retries, rescues, releases and every change made from outside are notified as before.

CREATE OR REPLACE FUNCTION punctual_events_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    notified bigint;
BEGIN
    -- Rows whose state or time changed; a lease extension or a payload edit changes neither.
    WITH changed AS MATERIALIZED (
        SELECT n.id, n.callback_id, n.state, n.attempts, n.worker, n.last_error, n.result, n.scheduled_for,
               n.finished_at, n.source, n.started_at, o.state = 'running' AND n.attempts >= o.attempts AS attempt_ended,
               o.state IS DISTINCT FROM n.state AS moved, o.state = 'scheduled' AND n.state = 'running' AS claimed
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
              FROM changed
              -- A claim is told only while a live page is open somewhere (see punctual_flags): no timer waits on it
              -- (an armed timer of a claimed event finds it claimed), and a listener cost more per event than the
              -- claim itself (migration 0016).
              WHERE NOT claimed
                 OR EXISTS (SELECT 1 FROM punctual_flags WHERE name = 'live' AND set_at > now() - interval '45 seconds')
              ) AS r
        GROUP BY chunk) AS chunks;
    RETURN NULL;
END;
$$;
