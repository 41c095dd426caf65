-- cowsync engine, migration 2: the review contract.
-- Idempotent, like every migration.

-- A sealed session refuses writes (cowsync.seal), so a reviewer can freeze an
-- agent's work; NULL while the session is open.
ALTER TABLE cowsync.sessions ADD COLUMN IF NOT EXISTS sealed_at timestamptz;
