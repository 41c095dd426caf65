-- Per-table template: the change store.
-- It inherits the base's columns, NOT NULL and CHECK constraints, so a session
-- row is type-checked and constraint-checked by PostgreSQL itself (same SQLSTATE
-- and constraint name as the base). Unique and foreign keys are not inherited:
-- the trigger judges keys against what the session sees.
-- One row per (key, session, operation): the history review and partial commit
-- need; _cow_first_seq/_cow_seq are the operation's first and last write of the
-- key, which order operations and give their dependencies. Exactly one row per (session, key) is current: what the session sees.
-- Deleted rows keep their last values (so inherited constraints still hold).
CREATE TABLE {changes} (
    _cow_session    text        NOT NULL,
    _cow_operation  text        NOT NULL,
    _cow_first_seq  bigint      NOT NULL,
    _cow_seq        bigint      NOT NULL,
    _cow_current    boolean     NOT NULL,
    _cow_deleted    boolean     NOT NULL,
    _cow_existed    boolean     NOT NULL,
    _cow_before     jsonb,
    _cow_written_at timestamptz NOT NULL
) INHERITS ({base});

-- Key lookups from the view's scan of the base reach the change store by key.
-- A constraint rather than a bare index, so the trigger's upsert can name it
-- (ON CONFLICT ON CONSTRAINT) instead of listing columns a PL/pgSQL variable could shadow.
ALTER TABLE {changes} ADD CONSTRAINT {history_index}
    UNIQUE ({key_columns}, _cow_session, _cow_operation);

-- One current row per (session, key); the view's anti-join probes it.
CREATE UNIQUE INDEX {current_index} ON {changes} (_cow_session, {key_columns}) WHERE _cow_current;
