-- Issue 12: recurring schedules. A schedule makes an ordinary event of its callback at each occurrence of
-- its rule; the event carries schedule_id, source 'schedule' and idempotency_key 'schedule:<id>:<instant>', whose
-- unique index makes each occurrence exactly once however many instances run or restart.

CREATE TABLE IF NOT EXISTS schedules (
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
CREATE INDEX IF NOT EXISTS schedules_due_idx ON schedules (made_until) WHERE NOT paused;

-- An occurrence's event names its schedule; deleting the schedule keeps the events (their history is audit
-- data) and forgets the link.
ALTER TABLE events ADD COLUMN IF NOT EXISTS schedule_id bigint REFERENCES schedules (id) ON DELETE SET NULL;
CREATE INDEX IF NOT EXISTS events_schedule_idx ON events (schedule_id, scheduled_for) WHERE schedule_id IS NOT NULL;
