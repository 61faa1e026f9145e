-- Issue 13: durable workflows (DESIGN.md "Workflows"). A workflow is a function replayed from its recorded
-- steps; each `call` step is an ordinary event carrying workflow_id and workflow_step, with idempotency_key
-- 'workflow:<id>:<step>'. A step's event ending records the step's result in the same transaction (trigger
-- below) and asks for the next advance there too (a wakeup row), so no crash between them loses or repeats
-- progress.

CREATE TABLE IF NOT EXISTS workflows (
    id                  text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 200),
    name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    input               jsonb,
    state               text NOT NULL DEFAULT 'running' CHECK (state IN (
                            'running',    -- a step's event is due or running, or an advance is due
                            'waiting',    -- on a durable timer or a signal only
                            'completed', 'failed', 'cancelled')),
    result              jsonb,
    error               text,
    waiting_on          text,                 -- what it waits for, in words
    -- When to advance it without being woken: now (made, cancelled) or a timer's end. NULL: it waits on a step's
    -- event or a signal, whose arrival adds a wakeup row.
    due_at              timestamptz,
    cancel_requested_at timestamptz,
    cancel_step         integer,              -- where the cancellation interrupted it: replays stop there too
    advances            integer NOT NULL DEFAULT 0,
    source              text NOT NULL DEFAULT 'api',
    fingerprint         text,                 -- SHA-256 of what made it: a repeated id with another body is 409
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz
);
CREATE INDEX IF NOT EXISTS workflows_due_idx ON workflows (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS workflows_created_idx ON workflows (created_at, id);
CREATE INDEX IF NOT EXISTS workflows_name_idx ON workflows (name, created_at);
CREATE INDEX IF NOT EXISTS workflows_state_idx ON workflows (state, created_at);

-- The steps recorded so far: what replay returns without doing anything again.
CREATE TABLE IF NOT EXISTS workflow_steps (
    workflow_id  text NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    step         integer NOT NULL CHECK (step >= 1),
    kind         text NOT NULL CHECK (kind IN ('call', 'sleep', 'signal', 'now')),
    name         text NOT NULL,               -- the callback, or the signal's name
    compensation boolean NOT NULL DEFAULT false,
    event_id     bigint REFERENCES events (id) ON DELETE SET NULL,  -- a call's event
    state        text NOT NULL CHECK (state IN ('pending', 'waiting', 'completed', 'failed', 'cancelled')),
    result       jsonb,
    error        text,
    wake_at      timestamptz,                 -- a timer's end, a wait's timeout
    signal_id    bigint,                      -- the signal a wait consumed
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    PRIMARY KEY (workflow_id, step)
);
-- Retention deletes old events: each deleted one looks up the step that names it (ON DELETE SET NULL).
CREATE INDEX IF NOT EXISTS workflow_steps_event_idx ON workflow_steps (event_id) WHERE event_id IS NOT NULL;

-- Signals: kept until a wait_for of that name consumes them (step), so one sent early is not lost.
CREATE TABLE IF NOT EXISTS workflow_signals (
    id          bigserial PRIMARY KEY,
    workflow_id text NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    value       jsonb,
    source      text NOT NULL DEFAULT 'api',
    received_at timestamptz NOT NULL DEFAULT now(),
    step        integer                       -- the wait_for step that consumed it
);
CREATE INDEX IF NOT EXISTS workflow_signals_workflow_idx ON workflow_signals (workflow_id, id);

-- "Advance this workflow": written by the step trigger and by signals. Rows, not an UPDATE of workflows, so a
-- batch of outcomes never waits on (or deadlocks over) workflow rows that an advance holds.
CREATE TABLE IF NOT EXISTS workflow_wakeups (
    workflow_id text NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS workflow_wakeups_workflow_idx ON workflow_wakeups (workflow_id);

ALTER TABLE events ADD COLUMN IF NOT EXISTS workflow_id text REFERENCES workflows (id) ON DELETE SET NULL;
ALTER TABLE events ADD COLUMN IF NOT EXISTS workflow_step integer;
-- A workflow's events: its steps, cancelled together when it is.
CREATE INDEX IF NOT EXISTS events_workflow_idx ON events (workflow_id, workflow_step) WHERE workflow_id IS NOT NULL;

-- A step's event ended (or was deleted before it ended): record the step's result or error, and ask for an
-- advance, in the same transaction. A row trigger whose WHEN skips every other event, so the engine's batches
-- of outcomes pay nothing for it unless they hold workflow steps.
CREATE OR REPLACE FUNCTION punctual_workflow_step_ended() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    workflow text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        workflow := OLD.workflow_id;
        UPDATE workflow_steps SET state = 'failed', error = 'its event was deleted', finished_at = clock_timestamp()
        WHERE workflow_id = OLD.workflow_id AND step = OLD.workflow_step AND state = 'pending';
    ELSE
        workflow := NEW.workflow_id;
        UPDATE workflow_steps SET
            state = CASE NEW.state WHEN 'finished' THEN 'completed' WHEN 'failed' THEN 'failed' ELSE 'cancelled' END,
            result = CASE WHEN NEW.state = 'finished' THEN NEW.result END,
            error = CASE WHEN NEW.state = 'finished' THEN NULL ELSE NEW.last_error END,
            finished_at = clock_timestamp()
        WHERE workflow_id = NEW.workflow_id AND step = NEW.workflow_step AND state = 'pending';
    END IF;
    IF FOUND THEN
        INSERT INTO workflow_wakeups (workflow_id) VALUES (workflow);
        PERFORM pg_notify('punctual_workflows', workflow);
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS events_workflow_step_ended ON events;
CREATE TRIGGER events_workflow_step_ended
    AFTER UPDATE OF state ON events FOR EACH ROW
    WHEN (NEW.workflow_id IS NOT NULL AND OLD.state IS DISTINCT FROM NEW.state
          AND NEW.state IN ('finished', 'failed', 'cancelled'))
    EXECUTE FUNCTION punctual_workflow_step_ended();

DROP TRIGGER IF EXISTS events_workflow_step_deleted ON events;
CREATE TRIGGER events_workflow_step_deleted
    AFTER DELETE ON events FOR EACH ROW
    WHEN (OLD.workflow_id IS NOT NULL AND OLD.state IN ('scheduled', 'running'))
    EXECUTE FUNCTION punctual_workflow_step_ended();
