-- Issue 14, retention: maintenance jobs that one instance at a time may run hold a lease here (not an
-- in-memory flag: instances share only the database). Terminal events are found by when they ended.

CREATE TABLE IF NOT EXISTS maintenance_leases (
    name   text PRIMARY KEY,
    holder text NOT NULL,
    until  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ended_idx ON events (finished_at, id)
    WHERE state IN ('finished', 'failed', 'cancelled');
