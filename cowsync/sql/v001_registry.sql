-- cowsync engine, migration 1: the registry.
-- Applied once per database by cowsync.deploy(); every statement is idempotent so a
-- half-applied or repeated run converges to the same catalog.

CREATE SCHEMA IF NOT EXISTS cowsync;

COMMENT ON SCHEMA cowsync IS 'cowsync copy-on-write engine: registry and engine functions';

-- One row per applied engine version; max(version) is the installed engine.
CREATE TABLE IF NOT EXISTS cowsync.engine (
    version      integer PRIMARY KEY,
    installed_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- Names the generated SQL embeds (the COW variables); fixed at first deploy.
CREATE TABLE IF NOT EXISTS cowsync.settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);

-- Orders every session write; operations are ordered by their first write.
CREATE SEQUENCE IF NOT EXISTS cowsync.write_seq;

-- Every COW-enabled table.
CREATE TABLE IF NOT EXISTS cowsync.tables (
    id             serial PRIMARY KEY,
    schema_name    text NOT NULL,
    table_name     text NOT NULL,
    base_name      text NOT NULL,
    changes_name   text NOT NULL,
    mode           text NOT NULL DEFAULT 'in-place' CHECK (mode IN ('in-place', 'overlay')),
    key_columns    text[] NOT NULL,
    key_constraint text NOT NULL,
    engine_version integer NOT NULL,
    enabled_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    UNIQUE (schema_name, table_name)
);

-- Sessions are recorded on their first write (or by cowsync.annotate).
CREATE TABLE IF NOT EXISTS cowsync.sessions (
    session_id text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    label      text,
    metadata   jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Set on the read-only copies that previews materialise (see cowsync.preview).
    preview_of text
);

-- Operations group a session's writes (a tool call, a request).
CREATE TABLE IF NOT EXISTS cowsync.operations (
    session_id   text NOT NULL REFERENCES cowsync.sessions (session_id) ON DELETE CASCADE,
    operation_id text NOT NULL,
    first_seq    bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (session_id, operation_id)
);

-- Roles cowsync.harden() manages: agents write only through sessions, reviewers
-- review and apply them.
CREATE TABLE IF NOT EXISTS cowsync.roles (
    role_name text PRIMARY KEY,
    kind      text NOT NULL CHECK (kind IN ('agent', 'reviewer'))
);

-- Privileges harden() revoked or granted, so unharden() can give them back.
CREATE TABLE IF NOT EXISTS cowsync.hardening_log (
    id        serial PRIMARY KEY,
    undo_sql  text NOT NULL
);

-- The role that first wrote a session owns it (checked when hardened).
ALTER TABLE cowsync.sessions ADD COLUMN IF NOT EXISTS owner_role text;
