-- Issue 14, instance liveness: each instance heartbeats here; when one falls silent (INSTANCE_DEAD_SECONDS), the
-- attempts it held are rescued then, not when their leases run out (callback timeout + grace: a minute and more).

CREATE TABLE IF NOT EXISTS instances (
    name         text PRIMARY KEY,              -- INSTANCE_NAME (host:pid by default): the worker of its attempts
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
