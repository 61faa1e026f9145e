-- Issue 15: the history keeps one row per attempt and one per change made from outside (created, rescheduled,
-- cancelled, retried), not one per state change. The claim wrote a 'running' row that said nothing the
-- attempt's end does not say again: each event paid three history rows (scheduled, running, finished), the
-- claim's on the path every due event waits on. Now an attempt's row is written when it ends, however it ends
-- (an outcome, a rescue, a release), and carries when it started; GET /events/<id> shows it as the two entries
-- it stands for (running at started_at, then its end), so the story the API and the audit log tell is the same.
-- A running attempt is read from the event itself. Rows written before this migration stay as they were.

ALTER TABLE event_history ADD COLUMN IF NOT EXISTS started_at timestamptz;

CREATE OR REPLACE FUNCTION punctual_events_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    notified bigint;
BEGIN
    -- Rows whose state or time changed; a lease extension or a payload edit changes neither.
    WITH changed AS MATERIALIZED (
        SELECT n.id, n.callback_id, n.state, n.attempts, n.worker, n.last_error, n.result, n.scheduled_for,
               n.finished_at, n.source, n.started_at, o.state = 'running' AND n.attempts >= o.attempts AS attempt_ended,
               o.state IS DISTINCT FROM n.state AS moved
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
              FROM changed) AS r
        GROUP BY chunk) AS chunks;
    RETURN NULL;
END;
$$;
