-- Issue 10, safe to expose: API tokens, lease tokens of manual events, idempotency fingerprints, webhook
-- signing secrets, and no cascade from a callback to its events' history. Written to be harmless when
-- run again (IF NOT EXISTS), because a database upgraded by a development build may have some of it.

CREATE TABLE IF NOT EXISTS api_tokens (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    scope       text NOT NULL CHECK (scope IN ('read', 'write', 'desk', 'admin')),
    token_hash  text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS api_tokens_active_name_idx ON api_tokens (name) WHERE revoked_at IS NULL;

ALTER TABLE events ADD COLUMN IF NOT EXISTS lease_token text;
ALTER TABLE events ADD COLUMN IF NOT EXISTS idempotency_fingerprint text;
ALTER TABLE callbacks ADD COLUMN IF NOT EXISTS signing_secret text;

-- Webhooks made before signing existed get a secret (their owners read it with a rotation). gen_random_uuid()
-- is built in (PostgreSQL 13+) and draws from the strong random source; two of them give 244 random bits.
UPDATE callbacks
   SET signing_secret = 'whsec_' || encode(decode(replace(gen_random_uuid()::text || gen_random_uuid()::text,
                                                          '-', ''), 'hex'), 'base64')
 WHERE kind = 'webhook' AND signing_secret IS NULL;

-- The key was ON DELETE CASCADE: DELETE /callbacks/<id> removed its finished events and their history as a
-- side effect. Replaced by RESTRICT under the name a fresh database gives it. Validating it scans events once.
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_callback_id_fkey;
ALTER TABLE events ADD CONSTRAINT events_callback_id_fkey
    FOREIGN KEY (callback_id) REFERENCES callbacks (id) ON DELETE RESTRICT;
