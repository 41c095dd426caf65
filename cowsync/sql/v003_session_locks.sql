-- cowsync engine, migration 3: session write locks no other role can take.
-- Idempotent, like every migration.
--
-- A session's write lock (taken by its writes, commit, discard, seal and previews) is a
-- row lock on the session's row here (cowsync.lock_session). It was an advisory lock,
-- whose key any role could compute from a session id, or read in pg_locks while it was
-- held, and then hold for as long as it stayed connected. Only the engine's own
-- SECURITY DEFINER functions lock rows of this table: no other role holds a privilege
-- on it, and pg_locks does not list row locks.
CREATE TABLE IF NOT EXISTS cowsync.session_locks (
    session_id text PRIMARY KEY
);

REVOKE ALL ON cowsync.session_locks FROM PUBLIC;

-- Sessions written before this migration: their rows exist before anyone locks them.
INSERT INTO cowsync.session_locks (session_id)
    SELECT s.session_id FROM cowsync.sessions s
    ON CONFLICT (session_id) DO NOTHING;
