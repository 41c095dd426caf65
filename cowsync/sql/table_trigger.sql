-- Per-table template: the INSTEAD OF trigger function behind the view.
--
-- With no session set it writes the base, so production behaves like the
-- original table (defaults come from the view, errors from the base). In a
-- session it writes the change store only, tagged with session and operation,
-- judging keys, unique indexes and foreign keys against what the session sees.
--
-- It runs with its owner's rights (SECURITY DEFINER), as an updatable view would:
-- a role granted the view needs no privilege on the base, the change store or the
-- registry. Its search_path is pinned to pg_catalog, pg_temp and it names every
-- function and operator schema-qualified (comparisons of table values use the
-- constraint's own operator), so nothing a caller or an agent creates in another
-- schema can take the place of what it calls. Only a production write of the base
-- runs with the table's schema after pg_catalog, for the base's own triggers (see
-- cowsync/search_path.py). Variables are prefixed _cow_v_ (no user column may start
-- with _cow_) and #variable_conflict makes any clash resolve to the variable, so a
-- column named like one can never change a query's meaning.
CREATE OR REPLACE FUNCTION {function}()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = {search_path}
-- The first-touch image must hold floats exactly (a client at extra_float_digits = 0
-- would round them, and a production change below that precision would go unseen).
SET extra_float_digits = 1
AS $cow$
#variable_conflict use_variable
DECLARE
    _cow_v_sid      text := nullif(pg_catalog.current_setting({session_variable}, true), '');
    _cow_v_op       text;
    _cow_v_cur      record;
    _cow_v_has_cur  boolean := false;
    _cow_v_existed  boolean;
    _cow_v_before   jsonb;
    _cow_v_cur2     record;
    _cow_v_has_cur2 boolean := false;
    _cow_v_existed2 boolean := false;
    _cow_v_before2  jsonb;
    _cow_v_dup      boolean := false;
    _cow_v_row      record;
    _cow_v_seq      bigint;
BEGIN
    {identity_insert_check}
    {identity_update_check}
    IF _cow_v_sid IS NULL THEN
        {fail_closed}
        -- Production: write the base. Rows are compared as text so an update or
        -- delete whose row changed concurrently is refused (40001) rather than
        -- silently overwriting the newer version, which a table would re-check.
        -- The base's own triggers fire inside this write; they see the table's schema
        -- on their search_path, as when the table was written directly (the function's
        -- SET clause restores the pinned one on return).
        PERFORM pg_catalog.set_config('search_path', {base_search_path}, true);
        IF TG_OP = 'INSERT' THEN
            IF cowsync.statement_ignores_conflicts({view_name}) THEN
                INSERT INTO {base} ({columns}) {overriding}
                    VALUES ({new_values})
                    ON CONFLICT DO NOTHING
                    RETURNING * INTO NEW;
                IF NOT FOUND THEN
                    RETURN NULL;
                END IF;
                RETURN NEW;
            END IF;
            INSERT INTO {base} ({columns}) {overriding}
                VALUES ({new_values})
                RETURNING * INTO NEW;
            RETURN NEW;
        ELSIF TG_OP = 'UPDATE' THEN
            UPDATE ONLY {base} AS _cow_b SET ({update_columns}) = ROW({update_values})
                WHERE {b_key_equals_old} AND _cow_b::text = OLD::text
                RETURNING _cow_b.* INTO NEW;
            IF FOUND THEN
                RETURN NEW;
            END IF;
        ELSE
            DELETE FROM ONLY {base} AS _cow_b
                WHERE {b_key_equals_old} AND _cow_b::text = OLD::text;
            IF FOUND THEN
                RETURN OLD;
            END IF;
        END IF;
        SELECT _cow_b.xmin AS row_xmin INTO _cow_v_row FROM ONLY {base} AS _cow_b
            WHERE {b_key_equals_old};
        IF NOT FOUND OR cowsync.written_by_current_transaction(_cow_v_row.row_xmin) THEN
            -- Gone, or already changed by this statement: a table skips the row too.
            RETURN NULL;
        END IF;
        RAISE EXCEPTION 'could not serialize access due to concurrent update'
            USING ERRCODE = 'serialization_failure',
                  DETAIL = pg_catalog.format(
                      'cowsync: a row of %s changed after this statement read it.', {table_label}),
                  HINT = 'Retry the transaction, or lock the rows first with SELECT ... FOR UPDATE.';
    END IF;

    IF coalesce(pg_catalog.current_setting({visible_variable}, true), '') <> '' THEN
        RAISE EXCEPTION 'cowsync: session % is in preview mode and cannot be written', _cow_v_sid
            USING ERRCODE = 'read_only_sql_transaction',
                  HINT = pg_catalog.format('Unset %s to write to the session.', {visible_variable});
    END IF;
    _cow_v_op := coalesce(nullif(pg_catalog.current_setting({operation_variable}, true), ''),
                          {default_operation});
    -- A session's writing transactions take turns: one transaction-scoped lock per
    -- session (cowsync.lock_session, a row lock no other role can take; taken again by
    -- every row, which finds it held), so each write re-reads the key's current row with
    -- no race. Commit, discard and seal take it too. Taken before the registry is
    -- touched, so a write waiting for a commit holds nothing the commit's cleanup needs.
    -- Never wait for a row lock while holding it: another transaction of the session
    -- holding the row FOR UPDATE would then wait for this lock, a deadlock. A locked
    -- current row is a 40001 instead (below).
    -- Uncontended (or already held) the lock is taken here at once; else the wait
    -- checks that the holder does not wait for this transaction (cowsync.wait_for_session).
    PERFORM 1 FROM cowsync.session_locks AS _cow_l WHERE _cow_l.session_id = _cow_v_sid
        FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        PERFORM cowsync.wait_for_session(_cow_v_sid);
    END IF;
    PERFORM {register_write}(_cow_v_sid, _cow_v_op);

    IF TG_OP = 'INSERT' THEN
        SELECT _cow_c._cow_deleted, _cow_c._cow_operation, _cow_c._cow_existed,
               _cow_c._cow_before INTO _cow_v_cur
            FROM ONLY {changes} AS _cow_c
            WHERE _cow_c._cow_session = _cow_v_sid AND {c_key_equals_new} AND _cow_c._cow_current;
        _cow_v_has_cur := FOUND;
        IF _cow_v_has_cur THEN
            _cow_v_dup := NOT _cow_v_cur._cow_deleted;
            _cow_v_existed := _cow_v_cur._cow_existed;
            _cow_v_before := _cow_v_cur._cow_before;
        ELSE
            PERFORM 1 FROM ONLY {base} AS _cow_b WHERE {b_key_equals_new};
            _cow_v_dup := FOUND;
            _cow_v_existed := false;
            _cow_v_before := NULL;
        END IF;
        IF _cow_v_dup AND cowsync.statement_ignores_conflicts({view_name}) THEN
            RETURN NULL;
        END IF;
        {insert_skip_checks}
        -- Written first, so NOT NULL and CHECK errors win over key errors, as in a table.
        {put_new_live}
        IF _cow_v_dup THEN
            {raise_duplicate_new}
        END IF;
        {insert_checks}
        RETURN NEW;
    END IF;

    -- UPDATE and DELETE: OLD is the row the session saw when the statement began.
    SELECT _cow_c._cow_deleted, _cow_c._cow_operation, _cow_c._cow_existed,
           _cow_c._cow_before, ROW({c_columns})::text AS row_text,
           _cow_c.xmax <> '0'::xid AS maybe_locked INTO _cow_v_cur
        FROM ONLY {changes} AS _cow_c
        WHERE _cow_c._cow_session = _cow_v_sid AND {c_key_equals_old} AND _cow_c._cow_current;
    _cow_v_has_cur := FOUND;
    -- Only a row whose xmax is set can be locked: the usual row costs no lock attempt.
    IF _cow_v_has_cur AND _cow_v_cur.maybe_locked THEN
        BEGIN
            PERFORM 1 FROM ONLY {changes} AS _cow_c
                WHERE _cow_c._cow_session = _cow_v_sid AND {c_key_equals_old} AND _cow_c._cow_current
                FOR NO KEY UPDATE NOWAIT;
        EXCEPTION WHEN lock_not_available THEN
            RAISE EXCEPTION 'could not serialize access due to concurrent update'
                USING ERRCODE = 'serialization_failure',
                      DETAIL = pg_catalog.format(
                          'cowsync: another transaction of session %s holds a row of %s locked.',
                          _cow_v_sid, {table_label}),
                      HINT = 'Retry the transaction.';
        END;
    END IF;
    IF _cow_v_has_cur THEN
        IF _cow_v_cur._cow_deleted OR _cow_v_cur.row_text IS DISTINCT FROM OLD::text THEN
            -- Another transaction of this session changed the row meanwhile.
            RAISE EXCEPTION 'could not serialize access due to concurrent update'
                USING ERRCODE = 'serialization_failure',
                      DETAIL = pg_catalog.format(
                          'cowsync: a row of %s changed in session %s after this statement '
                          'read it.', {table_label}, _cow_v_sid),
                      HINT = 'Retry the transaction.';
        END IF;
        _cow_v_existed := _cow_v_cur._cow_existed;
        _cow_v_before := _cow_v_cur._cow_before;
    ELSE
        -- First touch of a base row: remember the base row as it is now, for review and
        -- conflicts. OLD is what the statement read, maybe before a commit or discard of
        -- this session (or a production write) that this write waited for: the base row
        -- must still be OLD, else OLD came from a change that is gone.
        SELECT pg_catalog.to_jsonb(_cow_b) AS image, _cow_b::text AS row_text INTO _cow_v_row
            FROM ONLY {base} AS _cow_b WHERE {b_key_equals_old};
        IF NOT FOUND THEN
            RETURN NULL;  -- the row is gone (a discarded insert): a table skips it too
        END IF;
        IF _cow_v_row.row_text IS DISTINCT FROM OLD::text THEN
            RAISE EXCEPTION 'could not serialize access due to concurrent update'
                USING ERRCODE = 'serialization_failure',
                      DETAIL = pg_catalog.format(
                          'cowsync: a row of %s changed in session %s (committed, discarded or '
                          'changed in production) after this statement read it.',
                          {table_label}, _cow_v_sid),
                      HINT = 'Retry the transaction.';
        END IF;
        _cow_v_existed := true;
        _cow_v_before := _cow_v_row.image;
    END IF;

    IF TG_OP = 'DELETE' THEN
        {delete_checks}
        {put_old_dead}
        {delete_actions}
        RETURN OLD;
    END IF;

    IF NOT ({key_changed}) THEN
        {put_new_live}
        {update_checks}
        {update_after}
        RETURN NEW;
    END IF;

    -- The key changed: the old key is deleted and the new one inserted, both in
    -- the session only. The new key must be free in what the session sees.
    SELECT _cow_c._cow_deleted, _cow_c._cow_operation, _cow_c._cow_existed,
           _cow_c._cow_before INTO _cow_v_cur2
        FROM ONLY {changes} AS _cow_c
        WHERE _cow_c._cow_session = _cow_v_sid AND {c_key_equals_new} AND _cow_c._cow_current;
    _cow_v_has_cur2 := FOUND;
    IF _cow_v_has_cur2 THEN
        _cow_v_dup := NOT _cow_v_cur2._cow_deleted;
        _cow_v_existed2 := _cow_v_cur2._cow_existed;
        _cow_v_before2 := _cow_v_cur2._cow_before;
    ELSE
        PERFORM 1 FROM ONLY {base} AS _cow_b WHERE {b_key_equals_new};
        _cow_v_dup := FOUND;
    END IF;
    {put_old_dead}
    {put_new_live_at_new_key}
    IF _cow_v_dup THEN
        {raise_duplicate_new}
    END IF;
    {update_checks}
    {update_after}
    RETURN NEW;
END
$cow$;
