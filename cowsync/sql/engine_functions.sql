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
