-- Punctual's schema: what a fresh database looks like. db.apply_schema runs this file once, on an empty
-- database, and records every migration in migrations/ as applied; a database made by an earlier release
-- is upgraded by those migrations instead, each once, in order, under an advisory lock. So a change here
-- is always also a new numbered file in migrations/, and tests/test_migrations.py checks that a fresh
-- database and an upgraded one come out the same.

-- Callbacks: named, reusable actions. An event always points at one.
CREATE TABLE callbacks (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    kind            text NOT NULL CHECK (kind IN (
                        'python',   -- a handler registered in code; target = handler name
                        'webhook',  -- POST the payload to target (an allow-listed http(s) URL)
                        'kafka',    -- produce the payload to target (a topic)
                        'manual'    -- wait for a person or external worker to claim it
                    )),
    target          text NOT NULL DEFAULT '',
    config          jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(config) = 'object'),
    max_attempts    integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 100),
    timeout_seconds double precision NOT NULL DEFAULT 30 CHECK (timeout_seconds > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- A webhook's Standard Webhooks signing secret ('whsec_' + base64 of 32 random bytes): every delivery is
    -- signed with it (webhook-id, webhook-timestamp, webhook-signature) so receivers can tell Punctual's requests
    -- from forged ones. Kept in clear because signing needs it (an HMAC key cannot be stored hashed); the API
    -- answers it once, when Punctual makes it (creation, rotation), and "***" ever after. NULL for other kinds.
    signing_secret  text
);

-- Events: one scheduled run of one callback. The only source of truth for the engine;
-- the in-memory scheduler is a cache of the rows below that can be rebuilt at any time.
CREATE TABLE events (
    id              bigserial PRIMARY KEY,
    -- RESTRICT: an event's callback cannot be deleted from under it, not even with plain SQL; the history of
    -- its events is audit data (DELETE /callbacks/<id> answers 409 while any event exists).
    callback_id     bigint NOT NULL CONSTRAINT events_callback_id_fkey REFERENCES callbacks (id) ON DELETE RESTRICT,
    payload         jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(payload) = 'object'),
    scheduled_for   timestamptz NOT NULL DEFAULT now(),
    state           text NOT NULL DEFAULT 'scheduled' CHECK (state IN (
                        'scheduled',  -- waiting for scheduled_for (also between retries)
                        'running',    -- claimed by exactly one instance or worker, under lease_until
                        'finished',   -- terminal: the callback succeeded; result holds its answer
                        'failed',     -- terminal: the last allowed attempt failed; last_error says why
                        'cancelled'   -- terminal: cancelled through the API before it ran
                    )),
    priority        integer NOT NULL DEFAULT 0,            -- higher runs first among due events
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),  -- attempts claimed so far
    max_attempts    integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 100),
    result          jsonb,
    last_error      text,
    idempotency_key text,                                  -- a repeated key returns the first event (unique: below)
    source          text NOT NULL DEFAULT 'api',           -- api, kafka, sql, ...
    worker          text,                                  -- who holds (or last held) the lease
    lease_until     timestamptz,                           -- a running event past this is rescued
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,                           -- start of the latest attempt
    finished_at     timestamptz,                           -- when it became terminal
    -- A kafka-message-scheduler schedule's key: a later schedule with the same key replaces the pending one,
    -- a tombstone cancels it.
    schedule_key    text,
    -- A manual event's lease is held by whoever knows this value, answered by the claim only: extend, complete
    -- and release must send it back, so a second worker (or a stale tab) cannot act on a lease it does not
    -- hold, even under the same name. Never answered by reads.
    lease_token     text,
    -- What the request that made a keyed event asked for (SHA-256 of its canonical JSON): a later request
    -- with the same key but another body is refused (409) instead of silently answered with an event it did
    -- not ask for. NULL for events made before this column existed: those replay as before.
    idempotency_fingerprint text,
    -- The schedule an occurrence's event was made by (DESIGN.md "Schedules"); NULL for other events and
    -- after its schedule was deleted (the events stay: their history is audit data).
    schedule_id     bigint,  -- references schedules (id) ON DELETE SET NULL, added below with the table
    -- A workflow step's event (DESIGN.md "Workflows"): its workflow and step number; its idempotency_key is
    -- 'workflow:<id>:<step>'. References workflows (id) ON DELETE SET NULL, added below with the table.
    workflow_id     text,
    workflow_step   integer
)
-- Vacuumed by dead rows, not when a fifth of the table is dead (the server's default): a table that keeps
-- RETENTION_DAYS of finished events is mostly rows that never change again, while the recent ones leave two dead
-- versions each (the claim and the outcome change `state`, which the partial indexes below read, so neither can
-- be a HOT update). bench/RESULTS.md, "Storage per event".
WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 2000);

-- The claim reads due rows in time order; the partial index stays small however many
-- events are finished.
CREATE INDEX events_due_idx ON events (scheduled_for) WHERE state = 'scheduled';
-- With a backlog of due events, the claim walks this one in its own order (priority, then age)
-- and stops after a batch, instead of sorting every due row; the planner picks between the two.
CREATE INDEX events_claim_idx ON events (priority DESC, scheduled_for, id) WHERE state = 'scheduled';
-- The lease rescue reads only the leases that ran out (migration 0010 says why it needs its own index).
CREATE INDEX events_lease_idx ON events (lease_until) WHERE state = 'running';
-- A repeated idempotency key finds its first event. Only events that have a key have an entry (migration 0014).
CREATE UNIQUE INDEX events_idempotency_key_idx ON events (idempotency_key) WHERE idempotency_key IS NOT NULL;
-- Listing: by state or by callback, newest first. Running events are read through events_lease_idx and finished
-- ones by walking the primary key (migration 0015 says why).
CREATE INDEX events_state_id_idx ON events (state, id) WHERE state NOT IN ('running', 'finished');
CREATE INDEX events_callback_id_idx ON events (callback_id, id);
-- A later kafka-message-scheduler message finds the pending event of its key (only those events have one: the
-- others add no entry here).
CREATE INDEX events_schedule_key_idx ON events (schedule_key) WHERE state = 'scheduled' AND schedule_key IS NOT NULL;

-- Event history: one row per attempt, written when it ends (however it ends), and one per change made from
-- outside (created, rescheduled, cancelled, retried), by the triggers below in the same transaction as the change
-- itself, whoever makes it (the engine, the API or plain SQL). A claim writes none (migration 0011 says why).
CREATE TABLE event_history (
    id         bigserial PRIMARY KEY,
    -- Not a foreign key (migration 0013): only the triggers below write these rows, each for the event whose change
    -- it records, in that change's transaction; a deleted event's rows go with it (punctual_events_deleted).
    event_id   bigint NOT NULL,
    state      text NOT NULL,   -- the state the change left: for an attempt, its outcome
    attempt    integer NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker     text,
    error      text,
    note       text,  -- a change that is not a move between states, e.g. 'rescheduled to <time>'
    started_at timestamptz  -- an attempt's row: when it started (it was 'running' from then until `at`)
)
-- Written once, deleted by retention: vacuumed by dead rows too (see events).
WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 2000);
CREATE INDEX event_history_event_idx ON event_history (event_id, id);

-- The triggers below are per statement, reading the statement's rows from transition tables:
-- a claim or a batch of outcomes over 500 rows runs each trigger once, with one INSERT ... SELECT,
-- instead of 500 times (per-row triggers were most of the engine's database time).
--
-- Each trigger is one statement (data-modifying CTEs), so a claim of one row pays for one plan,
-- cached for the session, not one per step.
--
-- History: one row per attempt, at its end, and one per change made from outside, written in the same
-- transaction as the change itself, whoever makes it (the engine, the API or plain SQL).
--
-- NOTIFY wakes the listeners. A notification names events, never their rows: payloads are capped
-- at 8000 bytes and event payloads are not. One notification per 100 changed rows, delivered on
-- commit only:
--   {"op": "INSERT"|"UPDATE"|"DELETE", "ids": [...], "states": [...], "at": [...]}
-- with, per id, its new state and scheduled_for in microseconds since the epoch (exact, unlike a
-- float), so a listener can arm or drop a timer without reading the row back. A DELETE carries
-- ids only. The table stays the truth (the claim re-checks everything); a listener may ignore
-- the hints. At most about 100 * 52 bytes per notification, well under the cap.
--
-- Outbox: one row per terminal change, once a Kafka bridge has set the 'outbox' flag (see
-- punctual_flags below).
CREATE FUNCTION punctual_events_inserted() RETURNS trigger
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

-- SET enable_nestloop = off: the planner knows nothing of a transition table's size and plans for one row, so
-- it joined new_rows to old_rows with a nested loop, quadratic in the statement's rows: 100 ms for an outcome
-- batch of 1,000, 7 ms for a claim of 256 (migration 0017). Off for this function only, it hashes them.
CREATE FUNCTION punctual_events_updated() RETURNS trigger
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

CREATE FUNCTION punctual_events_deleted() RETURNS trigger
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

CREATE TRIGGER events_inserted
    AFTER INSERT ON events REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION punctual_events_inserted();

CREATE TRIGGER events_updated
    AFTER UPDATE ON events REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION punctual_events_updated();

CREATE TRIGGER events_deleted
    AFTER DELETE ON events REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION punctual_events_deleted();


-- Kafka messages already turned into events, one row per (topic, partition, offset). Inserted in
-- the same transaction as the message's events, before the offset is committed to Kafka: a
-- redelivered message hits the primary key and adds nothing (exactly once from Kafka).
CREATE TABLE kafka_messages (
    topic       text NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL,
    events      integer NOT NULL DEFAULT 0,   -- events made from it (0 for a rejected one)
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
-- Retention deletes the oldest records (KAFKA_MESSAGES_RETENTION_DAYS) by this.
CREATE INDEX kafka_messages_received_idx ON kafka_messages (received_at);

-- Kafka messages that could not become events: kept with their raw bytes and the reason, and skipped.
CREATE TABLE rejected_messages (
    id          bigserial PRIMARY KEY,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL,
    key         bytea,
    value       bytea,
    reason      text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, partition, "offset")
);

-- Outbox: every terminal state change writes one row here in the same transaction (trigger
-- below); the relay publishes unsent rows in id order to the history topic, then marks them.
-- Nothing is published for a change that rolled back, and nothing is lost while Kafka is down.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    event_id   bigint NOT NULL,
    body       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX outbox_unsent_idx ON outbox (id) WHERE sent_at IS NULL;

-- Switches shared by all instances. 'outbox' is set by an instance whose Kafka bridge is on: until
-- then no outbox rows are written, so a deployment without Kafka never accumulates them. (Stopped
-- using Kafka for good? DELETE FROM punctual_flags WHERE name = 'outbox'.) 'live' is set again every
-- 15 seconds by each instance while it has a live page open (GET /stream): while it is fresh, claims
-- and attempts' final outcomes are notified too, for the pages (see punctual_watched).
CREATE TABLE punctual_flags (
    name   text PRIMARY KEY,
    set_at timestamptz NOT NULL DEFAULT now()
);

-- Whether a live page is open somewhere (the 'live' flag, set again every 15 seconds by each instance with an open
-- GET /stream; see punctual_flags). Changes only a live page needs (a claim, an attempt's final outcome, an event
-- inserted claimed) are notified only then: no timer needs them (a timer of an event claimed or ended elsewhere
-- finds it so, by its primary key), and under load the instances spent more on those notifications than on the
-- changes themselves (migration 0016).
CREATE FUNCTION punctual_watched() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM punctual_flags WHERE name = 'live' AND set_at > now() - interval '45 seconds')
$$;

-- Schedules (DESIGN.md "Schedules"): a schedule makes an ordinary event of its callback at each occurrence of
-- its rule; the event carries schedule_id, source 'schedule' and idempotency_key 'schedule:<id>:<instant>', whose
-- unique index makes each occurrence exactly once however many instances run or restart.
CREATE TABLE schedules (
    id             bigserial PRIMARY KEY,
    name           text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    callback_id    bigint NOT NULL REFERENCES callbacks (id) ON DELETE RESTRICT,
    payload        jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(payload) = 'object'),
    priority       integer NOT NULL DEFAULT 0,
    max_attempts   integer CHECK (max_attempts BETWEEN 1 AND 100),      -- NULL: the callback's
    cron           text,                                                 -- 5 fields, or 6 with seconds first
    every_seconds  double precision CHECK (every_seconds >= 1),
    timezone       text NOT NULL DEFAULT 'UTC',                          -- IANA name the cron is read in
    start_at       timestamptz,
    end_at         timestamptz,
    catch_up       text NOT NULL DEFAULT 'skip' CHECK (catch_up IN ('skip', 'latest', 'all')),
    catch_up_limit integer NOT NULL DEFAULT 100 CHECK (catch_up_limit BETWEEN 1 AND 10000),
    overlap        text NOT NULL DEFAULT 'allow' CHECK (overlap IN ('allow', 'skip')),
    paused         boolean NOT NULL DEFAULT false,
    -- The newest instant already dealt with (an occurrence made, skipped or caught up): the next occurrence
    -- is the rule's first instant after it. Moved in the same transaction as the events it made.
    made_until     timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((cron IS NULL) <> (every_seconds IS NULL)),
    CHECK (end_at IS NULL OR start_at IS NULL OR end_at > start_at)
);
-- The schedule role looks only at schedules whose next occurrence is (nearly) due.
CREATE INDEX schedules_due_idx ON schedules (made_until) WHERE NOT paused;
ALTER TABLE events ADD CONSTRAINT events_schedule_id_fkey
    FOREIGN KEY (schedule_id) REFERENCES schedules (id) ON DELETE SET NULL;
CREATE INDEX events_schedule_idx ON events (schedule_id, scheduled_for) WHERE schedule_id IS NOT NULL;

-- Instances: each heartbeats here; when one falls silent (INSTANCE_DEAD_SECONDS), the attempts it held are
-- rescued then, not when their leases run out (callback timeout + grace: a minute and more).
CREATE TABLE instances (
    name         text PRIMARY KEY,              -- INSTANCE_NAME (host:pid by default): the worker of its attempts
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- Maintenance jobs that one instance at a time may run (retention) hold a lease here: not an in-memory
-- flag, since instances share only the database.
CREATE TABLE maintenance_leases (
    name   text PRIMARY KEY,
    holder text NOT NULL,
    until  timestamptz NOT NULL
);
-- Retention finds terminal events by when they ended.
CREATE INDEX events_ended_idx ON events (finished_at, id) WHERE state IN ('finished', 'failed', 'cancelled');

-- Workflows (DESIGN.md "Workflows"): a function replayed from its recorded steps; each `call` step is an ordinary
-- event carrying workflow_id and workflow_step, with idempotency_key 'workflow:<id>:<step>'. A step's event
-- ending records the step's result in the same transaction (trigger below) and asks for the next advance there
-- too (a wakeup row), so no crash between them loses or repeats progress.
CREATE TABLE workflows (
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
CREATE INDEX workflows_due_idx ON workflows (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX workflows_created_idx ON workflows (created_at, id);
CREATE INDEX workflows_name_idx ON workflows (name, created_at);
CREATE INDEX workflows_state_idx ON workflows (state, created_at);

-- The steps recorded so far: what replay returns without doing anything again.
CREATE TABLE workflow_steps (
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
CREATE INDEX workflow_steps_event_idx ON workflow_steps (event_id) WHERE event_id IS NOT NULL;

-- Signals: kept until a wait_for of that name consumes them (step), so one sent early is not lost.
CREATE TABLE workflow_signals (
    id          bigserial PRIMARY KEY,
    workflow_id text NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    value       jsonb,
    source      text NOT NULL DEFAULT 'api',
    received_at timestamptz NOT NULL DEFAULT now(),
    step        integer                       -- the wait_for step that consumed it
);
CREATE INDEX workflow_signals_workflow_idx ON workflow_signals (workflow_id, id);

-- "Advance this workflow": written by the step trigger and by signals. Rows, not an UPDATE of workflows, so a
-- batch of outcomes never waits on (or deadlocks over) workflow rows that an advance holds.
CREATE TABLE workflow_wakeups (
    workflow_id text NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX workflow_wakeups_workflow_idx ON workflow_wakeups (workflow_id);

ALTER TABLE events ADD CONSTRAINT events_workflow_id_fkey
    FOREIGN KEY (workflow_id) REFERENCES workflows (id) ON DELETE SET NULL;
-- A workflow's events: its steps, cancelled together when it is.
CREATE INDEX events_workflow_idx ON events (workflow_id, workflow_step) WHERE workflow_id IS NOT NULL;

-- A step's event ended (or was deleted before it ended): record the step's result or error, and ask for an
-- advance, in the same transaction. A row trigger whose WHEN skips every other event, so the engine's batches
-- of outcomes pay nothing for it unless they hold workflow steps.
CREATE FUNCTION punctual_workflow_step_ended() RETURNS trigger
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

CREATE TRIGGER events_workflow_step_ended
    AFTER UPDATE OF state ON events FOR EACH ROW
    WHEN (NEW.workflow_id IS NOT NULL AND OLD.state IS DISTINCT FROM NEW.state
          AND NEW.state IN ('finished', 'failed', 'cancelled'))
    EXECUTE FUNCTION punctual_workflow_step_ended();

CREATE TRIGGER events_workflow_step_deleted
    AFTER DELETE ON events FOR EACH ROW
    WHEN (OLD.workflow_id IS NOT NULL AND OLD.state IN ('scheduled', 'running'))
    EXECUTE FUNCTION punctual_workflow_step_ended();

-- API tokens (DESIGN.md "Access"): made with `python app.py tokens add NAME --scope SCOPE`, which prints the
-- secret once. Only its SHA-256 is kept: the secret is 32 random bytes, so a fast hash is enough (nothing to
-- brute-force), and a stolen table opens nothing. A revoked token keeps its row (who had access, and when),
-- and its name may be given to a new token. A desk token's name is the worker it claims as.
CREATE TABLE api_tokens (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    scope       text NOT NULL CHECK (scope IN ('read', 'write', 'desk', 'admin')),
    token_hash  text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE UNIQUE INDEX api_tokens_active_name_idx ON api_tokens (name) WHERE revoked_at IS NULL;

-- The built-in callbacks.
INSERT INTO callbacks (name, kind, target) VALUES
    ('Addition',       'python', 'add'),
    ('Subtraction',    'python', 'subtract'),
    ('Multiplication', 'python', 'multiply'),
    ('Division',       'python', 'divide');

-- Alerts from Kafka become events of this manual callback: people claim them on the alert desk
-- with 30 s to resolve or ask for more time. Schedules from the schedules topic use the other.
INSERT INTO callbacks (name, kind, target, timeout_seconds, max_attempts) VALUES
    ('Alert',          'manual', '',  30, 100),
    ('KafkaScheduler', 'kafka',  '',  30, 5);

