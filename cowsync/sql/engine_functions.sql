-- cowsync engine functions shared by every enabled table.
-- Re-run on every deploy that changes the engine version (CREATE OR REPLACE).

-- Records the session and operation of a write in the registry. Called by every
-- session write; the transaction-local marker makes repeat calls in one
-- transaction a single setting lookup. ON CONFLICT DO NOTHING holds no row lock,
-- so concurrent writers of one session never queue on the registry.
CREATE OR REPLACE FUNCTION cowsync.register_write(p_session text, p_operation text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    marker text := p_session || chr(31) || p_operation;
BEGIN
    IF current_setting('cowsync.registered', true) = marker THEN
        RETURN;
    END IF;
    IF length(p_session) > 200 OR length(p_operation) > 200 THEN
        RAISE EXCEPTION 'cowsync: session and operation ids are limited to 200 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO cowsync.sessions (session_id) VALUES (p_session)
        ON CONFLICT (session_id) DO NOTHING;
    INSERT INTO cowsync.operations (session_id, operation_id, first_seq)
        VALUES (p_session, p_operation, nextval('cowsync.write_seq'))
        ON CONFLICT (session_id, operation_id) DO NOTHING;
    PERFORM set_config('cowsync.registered', marker, true);
END
$fn$;

-- True when the row version with this xmin was written by the current
-- transaction (or one of its subtransactions) and is still in progress: used to
-- tell "updated earlier in this statement" from "changed by a concurrent
-- transaction" in the production write path.
CREATE OR REPLACE FUNCTION cowsync.written_by_current_transaction(p_xmin xid)
RETURNS boolean
LANGUAGE sql
STABLE
AS $fn$
    SELECT pg_xact_status(
        CASE
            WHEN p_xmin::text::bigint <= (pg_current_xact_id()::text::bigint & 4294967295)
                THEN ((pg_current_xact_id()::text::bigint >> 32) << 32) + p_xmin::text::bigint
            ELSE (((pg_current_xact_id()::text::bigint >> 32) - 1) << 32) + p_xmin::text::bigint
        END::text::xid8
    ) = 'in progress'
$fn$;

-- Materialises a preview of a session: a read-only copy, under its own id, of the
-- latest row per key among the chosen operations (comma-separated). The view then
-- reads it like any session, so previews cost nothing on the read path. Returns
-- the id to bind; the trigger refuses writes while visible operations are set.
-- Preview ids contain '~', which session ids cannot.
CREATE OR REPLACE FUNCTION cowsync.prepare_preview(p_session text, p_operations text)
RETURNS text
LANGUAGE plpgsql
AS $fn$
DECLARE
    preview_id text;
    t record;
    cols text;
    keys text;
BEGIN
    IF coalesce(p_operations, '') = '' THEN
        RETURN p_session;
    END IF;
    preview_id := p_session || '~preview~' || md5(p_operations);
    PERFORM pg_advisory_xact_lock(hashtext(preview_id));
    INSERT INTO cowsync.sessions (session_id, preview_of) VALUES (preview_id, p_session)
        ON CONFLICT (session_id) DO NOTHING;
    FOR t IN SELECT * FROM cowsync.tables ORDER BY id LOOP
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
            FROM pg_attribute a
            WHERE a.attrelid = format('%I.%I', t.schema_name, t.base_name)::regclass
              AND a.attnum > 0 AND NOT a.attisdropped;
        SELECT string_agg(quote_ident(k), ', ') INTO keys FROM unnest(t.key_columns) AS k;
        EXECUTE format('DELETE FROM ONLY %I.%I WHERE _cow_session = $1',
                       t.schema_name, t.changes_name) USING preview_id;
        EXECUTE format(
            'INSERT INTO %1$I.%2$I (%3$s, _cow_session, _cow_operation, _cow_first_seq, _cow_seq,'
            ' _cow_current, _cow_deleted, _cow_existed, _cow_before, _cow_written_at)'
            ' SELECT DISTINCT ON (%4$s) %3$s, $2, _cow_operation, _cow_first_seq, _cow_seq,'
            ' true, _cow_deleted, _cow_existed, _cow_before, _cow_written_at'
            ' FROM ONLY %1$I.%2$I WHERE _cow_session = $1 AND _cow_operation = ANY($3)'
            ' ORDER BY %4$s, _cow_seq DESC',
            t.schema_name, t.changes_name, cols, keys)
            USING p_session, preview_id, string_to_array(p_operations, ',');
    END LOOP;
    RETURN preview_id;
END
$fn$;

-- Removes every preview copy of a session (after commit or discard, or on demand).
CREATE OR REPLACE FUNCTION cowsync.drop_previews(p_session text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM cowsync.tables ORDER BY id LOOP
        EXECUTE format(
            'DELETE FROM ONLY %I.%I WHERE _cow_session IN '
            '(SELECT session_id FROM cowsync.sessions WHERE preview_of = $1)',
            t.schema_name, t.changes_name) USING p_session;
    END LOOP;
    DELETE FROM cowsync.sessions WHERE preview_of = p_session;
END
$fn$;

-- PostgreSQL runs INSERT ... ON CONFLICT DO NOTHING (with no conflict target) on a
-- view with INSTEAD OF triggers as a plain INSERT: the trigger cannot see the
-- clause. The client's statement text can: when it carries the clause, the
-- trigger skips a conflicting row instead of raising, as the table would.
CREATE OR REPLACE FUNCTION cowsync.statement_ignores_conflicts()
RETURNS boolean
LANGUAGE sql
STABLE
AS $fn$
    SELECT coalesce(current_query() ~* '\mon\s+conflict\s+do\s+nothing\M', false)
$fn$;
