-- Issue 15: the idempotency key's uniqueness is a partial unique index, over the events that have a key. The
-- UNIQUE constraint's index held an entry for every event, NULL keys included, and since the claim and the outcome
-- change `state` (read by partial indexes, so neither update is HOT), each event added three entries to it: at its
-- insert, its claim and its outcome. Most events have no key. The rule is the same: two events never share a key
-- (NULLs never conflicted); statements that insert with ON CONFLICT name the index's predicate.

CREATE UNIQUE INDEX IF NOT EXISTS events_idempotency_key_idx ON events (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_idempotency_key_key;
