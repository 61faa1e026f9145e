-- Punctual's schema. Applied at every start, in one transaction under an advisory lock
-- (db.apply_schema), so every statement here must be idempotent: several instances may
-- start at once against the same database.

-- Callbacks: named, reusable actions. An event always points at one.
CREATE TABLE IF NOT EXISTS callbacks (
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
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Events: one scheduled run of one callback. The only source of truth for the engine;
-- the in-memory scheduler is a cache of the rows below that can be rebuilt at any time.
CREATE TABLE IF NOT EXISTS events (
    id              bigserial PRIMARY KEY,
    callback_id     bigint NOT NULL REFERENCES callbacks (id) ON DELETE CASCADE,
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
    idempotency_key text UNIQUE,                           -- a repeated key returns the first event
    source          text NOT NULL DEFAULT 'api',           -- api, kafka, sql, ...
    worker          text,                                  -- who holds (or last held) the lease
    lease_until     timestamptz,                           -- a running event past this is rescued
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,                           -- start of the latest attempt
    finished_at     timestamptz                            -- when it became terminal
);

-- The claim reads due rows in time order; the partial index stays small however many
-- events are finished.
CREATE INDEX IF NOT EXISTS events_due_idx ON events (scheduled_for) WHERE state = 'scheduled';
-- With a backlog of due events, the claim walks this one in its own order (priority, then age)
-- and stops after a batch, instead of sorting every due row; the planner picks between the two.
CREATE INDEX IF NOT EXISTS events_claim_idx ON events (priority DESC, scheduled_for, id) WHERE state = 'scheduled';
-- The rescuer looks only at running rows whose lease ran out.
CREATE INDEX IF NOT EXISTS events_lease_idx ON events (lease_until) WHERE state = 'running';
-- Listing: by state or by callback, newest first.
CREATE INDEX IF NOT EXISTS events_state_id_idx ON events (state, id);
CREATE INDEX IF NOT EXISTS events_callback_id_idx ON events (callback_id, id);

-- Event history: one row per state change, written by the trigger below in the same
-- transaction as the change itself, whoever makes it (the engine, the API or plain SQL).
CREATE TABLE IF NOT EXISTS event_history (
    id        bigserial PRIMARY KEY,
    event_id  bigint NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    state     text NOT NULL,
    attempt   integer NOT NULL,
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker    text,
    error     text
);
CREATE INDEX IF NOT EXISTS event_history_event_idx ON event_history (event_id, id);

-- The triggers below are per statement, reading the statement's rows from transition tables:
-- a claim or a batch of outcomes over 500 rows runs each trigger once, with one INSERT ... SELECT,
-- instead of 500 times (per-row triggers were most of the engine's database time). Earlier
-- versions had per-row triggers under other names; they go first, so no change is recorded twice.
DROP TRIGGER IF EXISTS events_history_insert ON events;
DROP TRIGGER IF EXISTS events_history_update ON events;
DROP TRIGGER IF EXISTS events_notify_insert_delete ON events;
DROP TRIGGER IF EXISTS events_notify_update ON events;
DROP TRIGGER IF EXISTS events_outbox ON events;
DROP FUNCTION IF EXISTS punctual_record_history();
DROP FUNCTION IF EXISTS punctual_notify_event();
DROP FUNCTION IF EXISTS punctual_write_outbox();

DROP FUNCTION IF EXISTS punctual_notify(text, bigint[], text[], timestamptz[]);

-- Each trigger is one statement (data-modifying CTEs), so a claim of one row pays for one plan,
-- cached for the session, not one per step.
--
-- History: one row per state change, written in the same transaction as the change itself,
-- whoever makes it (the engine, the API or plain SQL).
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
CREATE OR REPLACE FUNCTION punctual_events_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    notified bigint;
BEGIN
    WITH history AS (
        INSERT INTO event_history (event_id, state, attempt, worker)
        SELECT id, state, attempts, CASE WHEN state = 'scheduled' THEN NULL ELSE worker END
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

CREATE OR REPLACE FUNCTION punctual_events_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    notified bigint;
BEGIN
    -- Rows whose state or time changed; a lease extension or a payload edit changes neither.
    WITH changed AS MATERIALIZED (
        SELECT n.id, n.callback_id, n.state, n.attempts, n.worker, n.last_error, n.result, n.scheduled_for,
               n.finished_at, n.source, o.state IS DISTINCT FROM n.state AS moved
        FROM new_rows n JOIN old_rows o USING (id)
        WHERE o.state IS DISTINCT FROM n.state OR o.scheduled_for IS DISTINCT FROM n.scheduled_for
    ), history AS (
        INSERT INTO event_history (event_id, state, attempt, worker, error)
        SELECT id, state, attempts, worker, CASE WHEN state IN ('scheduled', 'failed') THEN last_error END
        FROM changed WHERE moved ORDER BY id
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

CREATE OR REPLACE FUNCTION punctual_events_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    notified bigint;
BEGIN
    SELECT count(*) INTO notified FROM (
        SELECT pg_notify('punctual_events', json_build_object('op', 'DELETE', 'ids', array_agg(id ORDER BY id))::text)
        FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / 100 AS chunk FROM old_rows) AS r
        GROUP BY chunk) AS chunks;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER events_inserted
    AFTER INSERT ON events REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION punctual_events_inserted();

CREATE OR REPLACE TRIGGER events_updated
    AFTER UPDATE ON events REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION punctual_events_updated();

CREATE OR REPLACE TRIGGER events_deleted
    AFTER DELETE ON events REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION punctual_events_deleted();

-- A kafka-message-scheduler schedule's key: a later schedule with the same key replaces the
-- pending one, a tombstone cancels it.
ALTER TABLE events ADD COLUMN IF NOT EXISTS schedule_key text;
CREATE INDEX IF NOT EXISTS events_schedule_key_idx ON events (schedule_key) WHERE state = 'scheduled';

-- Kafka messages already turned into events, one row per (topic, partition, offset). Inserted in
-- the same transaction as the message's events, before the offset is committed to Kafka: a
-- redelivered message hits the primary key and adds nothing (exactly once from Kafka).
CREATE TABLE IF NOT EXISTS kafka_messages (
    topic       text NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL,
    events      integer NOT NULL DEFAULT 0,   -- events made from it (0 for a rejected one)
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);

-- Kafka messages that could not become events: kept with their raw bytes and the reason, and skipped.
CREATE TABLE IF NOT EXISTS rejected_messages (
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
CREATE TABLE IF NOT EXISTS outbox (
    id         bigserial PRIMARY KEY,
    event_id   bigint NOT NULL,
    body       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unsent_idx ON outbox (id) WHERE sent_at IS NULL;

-- Switches shared by all instances. 'outbox' is set by an instance whose Kafka bridge is on: until
-- then no outbox rows are written, so a deployment without Kafka never accumulates them. (Stopped
-- using Kafka for good? DELETE FROM punctual_flags WHERE name = 'outbox'.)
CREATE TABLE IF NOT EXISTS punctual_flags (
    name   text PRIMARY KEY,
    set_at timestamptz NOT NULL DEFAULT now()
);

-- The built-in callbacks, seeded once; a user's later edits are kept.
INSERT INTO callbacks (name, kind, target) VALUES
    ('Addition',       'python', 'add'),
    ('Subtraction',    'python', 'subtract'),
    ('Multiplication', 'python', 'multiply'),
    ('Division',       'python', 'divide')
ON CONFLICT (name) DO NOTHING;

-- Alerts from Kafka become events of this manual callback: people claim them on the alert desk
-- with 30 s to resolve or ask for more time. Schedules from the schedules topic use the other.
INSERT INTO callbacks (name, kind, target, timeout_seconds, max_attempts) VALUES
    ('Alert',          'manual', '',  30, 100),
    ('KafkaScheduler', 'kafka',  '',  30, 5)
ON CONFLICT (name) DO NOTHING;
