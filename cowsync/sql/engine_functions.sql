-- cowsync engine functions shared by every enabled table.
-- Re-run on every deploy that changes the engine version (CREATE OR REPLACE).
--
-- Every function runs with search_path = pg_catalog, pg_temp and names everything
-- else schema-qualified: whoever calls it (a trigger with its owner's rights, a
-- reviewer), nothing a role created in another schema can stand in for what it calls
-- (PostgreSQL never looks in pg_temp for functions or operators).

-- Whether cowsync.harden() is in force (a registry setting).
CREATE OR REPLACE FUNCTION cowsync.is_hardened()
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce((SELECT value = 'on' FROM cowsync.settings WHERE name = 'hardened'), false)
$fn$;

-- Whether the login role is an agent: a member of a role harden() registered as
-- agent. Uses session_user, which the client cannot change with SET ROLE; a
-- superuser is never an agent (it is a member of every role).
CREATE OR REPLACE FUNCTION cowsync.is_agent()
RETURNS boolean
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT NOT coalesce((SELECT rolsuper FROM pg_catalog.pg_roles
                         WHERE rolname = session_user), false)
       AND EXISTS (
           SELECT 1 FROM cowsync.roles r
           WHERE r.kind = 'agent' AND pg_catalog.pg_has_role(session_user, r.role_name, 'MEMBER')
       )
$fn$;

-- The session a hardened view reads: the bound one, refused (42501) when an agent
-- binds a session another role owns, or reads with none while harden() was asked
-- for read_requires_session. Views call it once per query (an InitPlan).
CREATE OR REPLACE FUNCTION cowsync.current_session(p_variable text)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    sid text;
    owner text;
BEGIN
    -- Runs with its owner's rights: read nothing but the session variable.
    IF p_variable IS DISTINCT FROM (SELECT value FROM cowsync.settings
                                    WHERE name = 'session_variable') THEN
        RAISE EXCEPTION 'cowsync: % is not the session variable', p_variable
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    sid := nullif(pg_catalog.current_setting(p_variable, true), '');
    IF NOT cowsync.is_agent() THEN
        RETURN sid;
    END IF;
    IF sid IS NULL THEN
        IF coalesce((SELECT value = 'on' FROM cowsync.settings
                     WHERE name = 'read_requires_session'), false) THEN
            RAISE EXCEPTION 'cowsync: role % must read inside a session', session_user
                USING ERRCODE = 'insufficient_privilege',
                      HINT = pg_catalog.format('Set %s first.', p_variable);
        END IF;
        RETURN NULL;
    END IF;
    SELECT s.owner_role INTO owner FROM cowsync.sessions s WHERE s.session_id = sid;
    IF FOUND AND owner IS DISTINCT FROM session_user::text THEN
        RAISE EXCEPTION 'cowsync: session % belongs to another role', sid
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN sid;
END
$fn$;

-- Records the session and operation of a write in the registry. Called by every
-- session write; the transaction-local marker makes repeat calls in one
-- transaction a single setting lookup. ON CONFLICT DO NOTHING holds no row lock,
-- so concurrent writers of one session never queue on the registry.
CREATE OR REPLACE FUNCTION cowsync.register_write(p_session text, p_operation text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    marker text := p_session || pg_catalog.chr(31) || p_operation;
    known boolean;
BEGIN
    IF pg_catalog.current_setting('cowsync.registered', true) = marker THEN
        RETURN;
    END IF;
    -- Usually registered by an earlier transaction: two index probes, no insert. The
    -- caller holds the session's write lock, which cowsync.seal() takes too, so a seal
    -- cannot land between this check and the end of the writing transaction.
    SELECT EXISTS (SELECT 1 FROM cowsync.operations o
                   WHERE o.session_id = p_session AND o.operation_id = p_operation)
        INTO known;
    PERFORM cowsync.refuse_sealed(p_session);
    IF known THEN
        PERFORM pg_catalog.set_config('cowsync.registered', marker, true);
        RETURN;
    END IF;
    PERFORM cowsync.check_ids(p_session, p_operation);
    INSERT INTO cowsync.sessions (session_id, owner_role) VALUES (p_session, session_user)
        ON CONFLICT (session_id) DO NOTHING;
    INSERT INTO cowsync.operations (session_id, operation_id, first_seq)
        VALUES (p_session, p_operation, pg_catalog.nextval('cowsync.write_seq'))
        ON CONFLICT (session_id, operation_id) DO NOTHING;
    PERFORM pg_catalog.set_config('cowsync.registered', marker, true);
END
$fn$;

-- The hardened variant, which hardened triggers call: the marker above is a
-- setting the client could forge, so ownership is checked on every write.
CREATE OR REPLACE FUNCTION cowsync.register_write_checked(p_session text, p_operation text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    owner text;
BEGIN
    PERFORM cowsync.check_ids(p_session, p_operation);
    PERFORM cowsync.refuse_sealed(p_session);
    INSERT INTO cowsync.sessions (session_id, owner_role) VALUES (p_session, session_user)
        ON CONFLICT (session_id) DO NOTHING;
    SELECT s.owner_role INTO owner FROM cowsync.sessions s WHERE s.session_id = p_session;
    IF owner IS DISTINCT FROM session_user::text AND cowsync.is_agent() THEN
        RAISE EXCEPTION 'cowsync: session % belongs to another role', p_session
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO cowsync.operations (session_id, operation_id, first_seq)
        VALUES (p_session, p_operation, pg_catalog.nextval('cowsync.write_seq'))
        ON CONFLICT (session_id, operation_id) DO NOTHING;
END
$fn$;

-- Raises CW001 when the session is sealed (cowsync.seal): the error an agent's write
-- gets, naming the session, until a reviewer unseals it.
CREATE OR REPLACE FUNCTION cowsync.refuse_sealed(p_session text)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF EXISTS (SELECT 1 FROM cowsync.sessions s
               WHERE s.session_id = p_session AND s.sealed_at IS NOT NULL) THEN
        RAISE EXCEPTION 'cowsync: session % is sealed for review and refuses writes', p_session
            USING ERRCODE = 'CW001',
                  HINT = 'A reviewer sealed it (cowsync seal); it takes writes again once unsealed.';
    END IF;
END
$fn$;

-- Takes the session's write lock until the transaction ends; agent writes (the view's
-- trigger, for every row), commit, discard, seal and previews all take it, so they
-- behave as if they ran one after another. It is a row lock on the session's row of
-- cowsync.session_locks, inserted on first use: a row this transaction inserted is its
-- own until it ends (a concurrent insert of the same row waits for it). Waits honour
-- lock_timeout and the deadlock detector, like any row lock. With p_wait false it
-- returns false at once when another transaction holds the lock, or is inserting the
-- session's row: a row not yet committed is invisible, so whoever inserts one also
-- takes a transaction-scoped advisory lock on the session as a marker, never waited for
-- (a role holding that key can only make a no-wait attempt on a session with no row
-- report it busy, or wait a millisecond).
--
-- Not an advisory lock: pg_locks shows every role the keys of the advisory locks any
-- backend holds, and any role may take any key and keep it while connected, so an
-- agent could block every session whose lock it once saw. Rows of session_locks are
-- locked only here (SECURITY DEFINER; no other role has a privilege on the table, and
-- harden revokes EXECUTE from PUBLIC), and pg_locks does not list row locks.
CREATE OR REPLACE FUNCTION cowsync.lock_session(p_session text, p_wait boolean)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    waits text;
    inserted boolean;
    marked boolean;
BEGIN
    LOOP
        IF p_wait THEN
            PERFORM 1 FROM cowsync.session_locks l WHERE l.session_id = p_session FOR UPDATE;
            IF FOUND THEN
                RETURN true;
            END IF;
        ELSE
            PERFORM 1 FROM cowsync.session_locks l WHERE l.session_id = p_session
                FOR UPDATE SKIP LOCKED;
            IF FOUND THEN
                RETURN true;
            ELSIF EXISTS (SELECT 1 FROM cowsync.session_locks l
                          WHERE l.session_id = p_session) THEN
                RETURN false;
            END IF;
        END IF;
        -- No row: the session's first lock, or its row went with its registry entry
        -- (a commit or discard this transaction waited for). Insert it, or, when another
        -- transaction inserted it meanwhile, lock that one: the insert waits for that
        -- transaction, which holds the lock until it ends (not waiting: at once).
        marked := pg_catalog.pg_try_advisory_xact_lock(
            pg_catalog.hashtextextended('cowsync session row ' || p_session, 0));
        IF NOT (p_wait OR marked) THEN
            RETURN false;
        END IF;
        IF p_wait THEN
            INSERT INTO cowsync.session_locks AS l (session_id) VALUES (p_session)
                ON CONFLICT (session_id) DO NOTHING;
            inserted := FOUND;
        ELSE
            waits := pg_catalog.current_setting('lock_timeout');
            BEGIN
                PERFORM pg_catalog.set_config('lock_timeout', '1ms', true);
                INSERT INTO cowsync.session_locks AS l (session_id) VALUES (p_session)
                    ON CONFLICT (session_id) DO NOTHING;
                inserted := FOUND;
                PERFORM pg_catalog.set_config('lock_timeout', waits, true);
            EXCEPTION WHEN lock_not_available THEN
                RETURN false;  -- the rollback of this block restored lock_timeout
            END;
        END IF;
        IF inserted THEN
            IF NOT marked THEN
                -- The insert waited for another inserter, which held the marker and has
                -- since rolled back: take the marker now, so a no-wait attempt sees at once
                -- that this transaction holds the lock (its insert would wait for ours).
                PERFORM pg_catalog.pg_try_advisory_xact_lock(
                    pg_catalog.hashtextextended('cowsync session row ' || p_session, 0));
            END IF;
            RETURN true;
        END IF;
    END LOOP;
END
$fn$;

-- Waits for the session's write lock when another transaction holds it, for the view's
-- trigger, which may already hold row locks: if the holder waits for a row lock this
-- transaction holds (a commit that needs a row the agent locked FOR UPDATE, or another
-- transaction of the session that wrote and then locks such a row), waiting would be a
-- deadlock, so this raises 40001 instead. For up to deadlock_timeout it polls (no queueing,
-- short sleeps), checking the chain of waits each time, so a cycle through this write is
-- caught before PostgreSQL would break it with 40P01; after that it queues.
CREATE OR REPLACE FUNCTION cowsync.wait_for_session(p_session text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    holder integer;
    pause float8 := 0.001;
    started timestamptz := pg_catalog.clock_timestamp();
    patience interval := pg_catalog.current_setting('deadlock_timeout')::interval;
BEGIN
    LOOP
        -- Not waiting, also when the session's lock row is new and not yet visible.
        IF cowsync.lock_session(p_session, false) THEN
            RETURN;
        END IF;
        holder := cowsync.session_lock_holder(p_session);
        IF holder IS NOT NULL AND EXISTS (
            WITH RECURSIVE waits_for (pid) AS (
                SELECT holder
                UNION
                SELECT b FROM waits_for w,
                    LATERAL pg_catalog.unnest(pg_catalog.pg_blocking_pids(w.pid)) AS b
            )
            SELECT 1 FROM waits_for WHERE pid = pg_catalog.pg_backend_pid()
        ) THEN
            RAISE EXCEPTION 'could not serialize access due to concurrent update'
                USING ERRCODE = 'serialization_failure',
                      DETAIL = pg_catalog.format(
                          'cowsync: the transaction holding the write lock of session %s '
                          '(backend %s) waits for a lock this transaction holds.',
                          p_session, holder),
                      HINT = 'Retry the transaction.';
        END IF;
        IF pg_catalog.clock_timestamp() - started > patience THEN
            -- Polling hides this wait from PostgreSQL's deadlock detector: past
            -- deadlock_timeout, queue for the lock so the detector sees it again.
            PERFORM cowsync.lock_session(p_session, true);
            RETURN;
        END IF;
        PERFORM pg_catalog.pg_sleep(pause);
        pause := least(pause * 2, 0.02);
    END LOOP;
END
$fn$;

-- The backend whose transaction holds the session's write lock (NULL when none does):
-- what SessionBusyError names. The row's xmax is the locking transaction (or
-- subtransaction), whose lock on its own id pg_locks lists; a transaction inserting the
-- session's row holds the marker lock_session takes.
CREATE OR REPLACE FUNCTION cowsync.session_lock_holder(p_session text)
RETURNS integer
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(
        (SELECT k.pid FROM cowsync.session_locks l
         JOIN pg_catalog.pg_locks k ON k.locktype = 'transactionid'
                                    AND k.transactionid = l.xmax
                                    AND k.mode = 'ExclusiveLock' AND k.granted
         WHERE l.session_id = p_session
         LIMIT 1),
        (SELECT k.pid FROM pg_catalog.pg_locks k
         WHERE k.locktype = 'advisory' AND k.granted AND k.objsubid = 1
           AND k.database = (SELECT d.oid FROM pg_catalog.pg_database d
                             WHERE d.datname = pg_catalog.current_database())
           AND ((k.classid::int8 << 32) | k.objid::int8)
               = pg_catalog.hashtextextended('cowsync session row ' || p_session, 0)
           AND k.pid <> pg_catalog.pg_backend_pid()
         LIMIT 1))
$fn$;

-- A session's lock row goes with its registry entry (after a commit or discard, for
-- dropped previews). The deleting transaction holds the lock or waits for it.
CREATE OR REPLACE FUNCTION cowsync.forget_session_lock()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    DELETE FROM cowsync.session_locks l WHERE l.session_id = OLD.session_id;
    RETURN NULL;
END
$fn$;

DROP TRIGGER IF EXISTS forget_session_lock ON cowsync.sessions;
CREATE TRIGGER forget_session_lock AFTER DELETE ON cowsync.sessions
    FOR EACH ROW EXECUTE FUNCTION cowsync.forget_session_lock();

-- Session and operation ids: bounded and printable (as cowsync.config checks in Python).
CREATE OR REPLACE FUNCTION cowsync.check_ids(p_session text, p_operation text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF pg_catalog.length(p_session) > 200 OR pg_catalog.length(p_operation) > 200
       OR p_session !~ '^[A-Za-z0-9_.:@+=/-]+$' OR p_operation !~ '^[A-Za-z0-9_.:@+=/-]+$' THEN
        RAISE EXCEPTION 'cowsync: invalid session or operation id'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Ids are 1 to 200 letters, digits and _.:@+=/- characters.';
    END IF;
END
$fn$;

-- True when the row version with this xmin was written by the current
-- transaction (or one of its subtransactions) and is still in progress: used to
-- tell "updated earlier in this statement" from "changed by a concurrent
-- transaction" in the production write path. p_xmin is the xmin of a row version
-- the current snapshot sees: ours, or committed by another transaction.
--
-- Never raises, and never assigns an xid (pg_current_xact_id() would, for nothing):
-- a transaction with no xid has written nothing. Our subtransactions' xids follow
-- our top-level xid by less than 2^31 (PostgreSQL's wraparound limit), so an xmin
-- that precedes it (signed 32-bit difference, as PostgreSQL orders xids) is not
-- ours, and one that follows it is widened to an xid8 relative to it, exactly.
-- (Guessing the epoch from the low bits alone put every xid above our top-level
-- one -- a newer transaction's, a subtransaction's -- "in the future": 22023.)
-- pg_xact_status says "in progress" for our xids, committed subtransactions
-- included, and for no committed row version's. Below the snapshot's xmax it
-- cannot raise; at or above it (our own recent subtransactions) only a value never
-- assigned could, which is not ours: that rare case runs in an exception block.
CREATE OR REPLACE FUNCTION cowsync.written_by_current_transaction(p_xmin xid)
RETURNS boolean
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    top xid8 := pg_catalog.pg_current_xact_id_if_assigned();
    ahead bigint;
    full_xid xid8;
BEGIN
    IF top IS NULL OR p_xmin IS NULL THEN
        RETURN false;
    ELSIF p_xmin = top::xid THEN
        RETURN true;
    END IF;
    ahead := (p_xmin::text::bigint - top::xid::text::bigint) & 4294967295;
    IF ahead >= 2147483648 THEN
        RETURN false;
    END IF;
    full_xid := (top::text::bigint + ahead)::text::xid8;
    IF full_xid < pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot()) THEN
        RETURN coalesce(pg_catalog.pg_xact_status(full_xid) = 'in progress', false);
    END IF;
    BEGIN
        RETURN coalesce(pg_catalog.pg_xact_status(full_xid) = 'in progress', false);
    EXCEPTION WHEN invalid_parameter_value THEN
        RETURN false;  -- "in the future": never assigned, so not ours
    END;
END
$fn$;

-- Materialises a preview of a session: a read-only copy, under its own id, of the
-- latest row per key among the chosen operations (comma-separated). The view then
-- reads it like any session, so previews cost nothing on the read path. Returns
-- the id to bind; the trigger refuses writes while visible operations are set.
-- Preview ids contain '~', which session ids cannot.
CREATE OR REPLACE FUNCTION cowsync.prepare_preview(p_session text, p_operations text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
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
    preview_id := p_session || '~preview~' || pg_catalog.md5(p_operations);
    PERFORM cowsync.lock_session(preview_id, true);
    INSERT INTO cowsync.sessions (session_id, preview_of) VALUES (preview_id, p_session)
        ON CONFLICT (session_id) DO NOTHING;
    FOR t IN SELECT * FROM cowsync.tables ORDER BY id LOOP
        SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
            INTO cols
            FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = pg_catalog.format('%I.%I', t.schema_name, t.base_name)::regclass
              AND a.attnum > 0 AND NOT a.attisdropped;
        SELECT pg_catalog.string_agg(pg_catalog.quote_ident(k), ', ') INTO keys
            FROM pg_catalog.unnest(t.key_columns) AS k;
        EXECUTE pg_catalog.format('DELETE FROM ONLY %I.%I WHERE _cow_session = $1',
                       coalesce(t.view_schema, t.schema_name), t.changes_name)
            USING preview_id;
        EXECUTE pg_catalog.format(
            'INSERT INTO %1$I.%2$I (%3$s, _cow_session, _cow_operation, _cow_first_seq, _cow_seq,'
            ' _cow_current, _cow_deleted, _cow_existed, _cow_before, _cow_written_at)'
            ' SELECT DISTINCT ON (%4$s) %3$s, $2, _cow_operation, _cow_first_seq, _cow_seq,'
            ' true, _cow_deleted, _cow_existed, _cow_before, _cow_written_at'
            ' FROM ONLY %1$I.%2$I WHERE _cow_session = $1 AND _cow_operation = ANY($3)'
            ' ORDER BY %4$s, _cow_seq DESC',
            coalesce(t.view_schema, t.schema_name), t.changes_name, cols, keys)
            USING p_session, preview_id, pg_catalog.string_to_array(p_operations, ',');
    END LOOP;
    RETURN preview_id;
END
$fn$;

-- Removes every preview copy of a session (after commit or discard, or on demand).
CREATE OR REPLACE FUNCTION cowsync.drop_previews(p_session text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM cowsync.sessions WHERE preview_of = p_session) THEN
        RETURN;  -- the usual case: no preview to visit every change store for
    END IF;
    FOR t IN SELECT * FROM cowsync.tables ORDER BY id LOOP
        EXECUTE pg_catalog.format(
            'DELETE FROM ONLY %I.%I WHERE _cow_session IN '
            '(SELECT session_id FROM cowsync.sessions WHERE preview_of = $1)',
            coalesce(t.view_schema, t.schema_name), t.changes_name) USING p_session;
    END LOOP;
    DELETE FROM cowsync.sessions WHERE preview_of = p_session;
END
$fn$;

-- PostgreSQL runs INSERT ... ON CONFLICT DO NOTHING (with no conflict target) on a
-- view with INSTEAD OF triggers as a plain INSERT: the trigger cannot see the
-- clause. Two ways to tell it: explicitly, with the transaction-local setting
-- cowsync.ignore_conflicts = 'on' (what integrations use), or from the client's
-- statement text when it is exactly one INSERT INTO this view ending in ON
-- CONFLICT DO NOTHING [RETURNING ...], once comments and literals are removed.
-- Anything less certain answers false: the conflict then raises 23505, which
-- loses nothing, where a wrong true would silently drop a row.
CREATE OR REPLACE FUNCTION cowsync.statement_ignores_conflicts(p_view text)
RETURNS boolean
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    q text := pg_catalog.current_query();
    target text;
BEGIN
    IF pg_catalog.current_setting('cowsync.ignore_conflicts', true) = 'on' THEN
        RETURN true;
    END IF;
    IF q IS NULL OR q !~* 'on\s+conflict\s+do\s+nothing' THEN
        RETURN false;
    END IF;
    q := pg_catalog.regexp_replace(q, '''([^'']|'''')*''', '''''', 'g');
    q := pg_catalog.regexp_replace(q, '\$([A-Za-z_]*)\$.*?\$\1\$', '''''', 'g');
    q := pg_catalog.regexp_replace(q, '--[^\n]*', ' ', 'g');
    q := pg_catalog.regexp_replace(q, '/\*.*?\*/', ' ', 'g');
    q := pg_catalog.btrim(q, E' \t\r\n;');
    IF position(';' IN q) > 0
       OR q !~* '^insert\s+into\s.*\son\s+conflict\s+do\s+nothing(\s+returning\s.*)?$' THEN
        RETURN false;
    END IF;
    target := (pg_catalog.regexp_match(q, '^insert\s+into\s+((?:"(?:[^"]|"")+"|[^\s(".]+)(?:\s*\.\s*(?:"(?:[^"]|"")+"|[^\s(".]+))*)', 'i'))[1];
    IF target IS NULL THEN
        RETURN false;
    END IF;
    target := (pg_catalog.regexp_match(target, '((?:"(?:[^"]|"")+"|[^\s(".]+))$'))[1];
    IF pg_catalog.left(target, 1) = '"' THEN
        target := pg_catalog.replace(pg_catalog.substr(target, 2, pg_catalog.length(target) - 2),
                                     '""', '"');
    ELSE
        target := pg_catalog.lower(target);
    END IF;
    RETURN target = p_view;
END
$fn$;

-- PostgreSQL accepts some ALTERs on a view (RENAME, RENAME COLUMN, SET DEFAULT) that
-- would leave an enabled table's trigger and registry behind. This event trigger
-- checks, after such a command, that each enabled view still matches its base and
-- its registry entry, and refuses the command otherwise, pointing to cowsync.alter.
-- cowsync's own DDL sets cowsync.ddl for its transaction and is not checked.
CREATE OR REPLACE FUNCTION cowsync.guard_view_ddl()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cmd record;
    t record;
BEGIN
    IF pg_catalog.current_setting('cowsync.ddl', true) = 'on' THEN
        RETURN;
    END IF;
    FOR cmd IN SELECT * FROM pg_catalog.pg_event_trigger_ddl_commands()
               WHERE classid = 'pg_catalog.pg_class'::regclass LOOP
        -- Overlay mode: the table (or its change store) under another name or schema
        -- than the registry's would leave every later cowsync call failing.
        IF EXISTS (
            SELECT 1 FROM cowsync.tables r
            JOIN pg_catalog.pg_inherits i ON i.inhrelid = cmd.objid
            JOIN pg_catalog.pg_class p ON p.oid = i.inhparent AND p.relname = r.parent_name
            JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
                                            AND pn.nspname = r.view_schema
            JOIN pg_catalog.pg_class c ON c.oid = cmd.objid
            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE r.mode = 'overlay'
              AND (n.nspname, c.relname) IS DISTINCT FROM (r.schema_name, r.base_name)
              AND (n.nspname, c.relname) IS DISTINCT FROM (r.view_schema, r.changes_name)
        ) THEN
            RAISE EXCEPTION 'cowsync: % is COW-enabled in overlay mode and cannot be renamed or moved',
                cmd.object_identity
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'Disable it (cowsync.disable), rename or move the table, then enable it again.';
        END IF;
        CONTINUE WHEN NOT EXISTS (
            SELECT 1 FROM pg_catalog.pg_trigger
            WHERE tgrelid = cmd.objid AND tgname = 'cowsync_write');
        SELECT r.* INTO t FROM cowsync.tables r
            JOIN pg_catalog.pg_namespace n
              ON n.nspname = coalesce(r.view_schema, r.schema_name)
            JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = r.table_name
            WHERE c.oid = cmd.objid;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'cowsync: % is the view of a COW-enabled table and cannot be renamed',
                cmd.object_identity
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'Disable it (cowsync.disable), rename the table, then enable it again.';
        END IF;
        IF EXISTS (
            SELECT 1
            FROM pg_catalog.pg_attribute v
            FULL JOIN (SELECT a.* FROM pg_catalog.pg_attribute a
                       WHERE a.attrelid = pg_catalog.format('%I.%I', t.schema_name,
                                                            t.base_name)::regclass
                         AND a.attnum > 0 AND NOT a.attisdropped) b ON b.attname = v.attname
            LEFT JOIN pg_catalog.pg_attrdef vd ON vd.adrelid = v.attrelid AND vd.adnum = v.attnum
            LEFT JOIN pg_catalog.pg_attrdef bd ON bd.adrelid = b.attrelid AND bd.adnum = b.attnum
            WHERE (v.attrelid = cmd.objid OR v.attrelid IS NULL)
              AND (v.attnum IS NULL OR (v.attnum > 0 AND NOT v.attisdropped))
              AND (v.attname IS NULL OR b.attname IS NULL
                   OR (b.attidentity = '' AND pg_catalog.pg_get_expr(vd.adbin, vd.adrelid)
                       IS DISTINCT FROM pg_catalog.pg_get_expr(bd.adbin, bd.adrelid)))
        ) THEN
            -- Named from the registry: object_identity names the column for RENAME COLUMN.
            RAISE EXCEPTION 'cowsync: % is the view of a COW-enabled table; change the table with cowsync.alter()',
                pg_catalog.format('%I.%I', t.schema_name, t.table_name)
                USING ERRCODE = 'feature_not_supported',
                      HINT = pg_catalog.format('e.g. cowsync.alter(conn, %L, ''RENAME COLUMN a TO b'') '
                                    'or ''ALTER COLUMN c SET DEFAULT ...''', t.schema_name || '.' || t.table_name);
        END IF;
    END LOOP;
END
$fn$;

-- Overlay mode: a table's statement-level guard. A connection bound to a session
-- writes through the overlay view, never to the table itself (schema-qualified SQL
-- included); a commit applying a session says so for its transaction. Runs as the
-- caller (not SECURITY DEFINER); its search_path is pinned like every engine function's.
CREATE OR REPLACE FUNCTION cowsync.refuse_bound_write()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF pg_catalog.current_setting(TG_ARGV[0], true) <> ''
       AND pg_catalog.current_setting('cowsync.applying', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'cowsync: cannot % %.% from a connection bound to a session',
                TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege',
                  HINT = pg_catalog.format(
                      'Sessions write through the overlay view %s (unqualified names reach '
                      'it first on a bound connection); production writes need an unbound '
                      'connection.', TG_ARGV[1]);
    END IF;
    RETURN NULL;
END
$fn$;

-- Overlay mode: disable drops an overlay schema once nothing is left in it.
CREATE OR REPLACE FUNCTION cowsync.drop_empty_overlay_schema(p_schema text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = p_schema)
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                       JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                       WHERE n.nspname = p_schema)
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type t
                       JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
                       WHERE n.nspname = p_schema) THEN
        EXECUTE pg_catalog.format('DROP SCHEMA %I', p_schema);
    END IF;
END
$fn$;
