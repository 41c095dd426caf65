-- Per-table template: the INSTEAD OF trigger function behind the view.
--
-- With no session set it writes the base, so production behaves like the
-- original table (defaults come from the view, errors from the base). In a
-- session it writes the change store only, tagged with session and operation.
CREATE OR REPLACE FUNCTION {function}()
RETURNS trigger
LANGUAGE plpgsql
AS $cow$
DECLARE
    sid      text := nullif(current_setting({session_variable}, true), '');
    op       text;
    cur      record;
    has_cur  boolean := false;
    existed  boolean;
    before   jsonb;
    cur2     record;
    has_cur2 boolean := false;
    existed2 boolean := false;
    before2  jsonb;
    base_row record;
    seq      bigint;
BEGIN
    IF sid IS NULL THEN
        -- Production: write the base. Rows are compared as text so an update or
        -- delete whose row changed concurrently is refused (40001) rather than
        -- silently overwriting the newer version, which a table would re-check.
        IF TG_OP = 'INSERT' THEN
            INSERT INTO {base} ({columns}) {overriding}
                VALUES ({new_values})
                RETURNING * INTO NEW;
            RETURN NEW;
        ELSIF TG_OP = 'UPDATE' THEN
            UPDATE ONLY {base} AS _cow_b SET ({columns}) = ROW({new_values})
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
        SELECT _cow_b.xmin AS row_xmin INTO base_row FROM ONLY {base} AS _cow_b WHERE {b_key_equals_old};
        IF NOT FOUND OR cowsync.written_by_current_transaction(base_row.row_xmin) THEN
            -- Gone, or already changed by this statement: a table skips the row too.
            RETURN NULL;
        END IF;
        RAISE EXCEPTION 'could not serialize access due to concurrent update'
            USING ERRCODE = 'serialization_failure',
                  DETAIL = format('cowsync: a row of %s changed after this statement read it.', {table_label}),
                  HINT = 'Retry the transaction, or lock the rows first with SELECT ... FOR UPDATE.';
    END IF;

    IF coalesce(current_setting({visible_variable}, true), '') <> '' THEN
        RAISE EXCEPTION 'cowsync: session % is in preview mode and cannot be written', sid
            USING ERRCODE = 'read_only_sql_transaction',
                  HINT = format('Unset %s to write to the session.', {visible_variable});
    END IF;
    op := coalesce(nullif(current_setting({operation_variable}, true), ''), {default_operation});
    PERFORM cowsync.register_write(sid, op);

    IF TG_OP = 'INSERT' THEN
        SELECT _cow_c._cow_deleted, _cow_c._cow_operation, _cow_c._cow_existed, _cow_c._cow_before INTO cur
            FROM ONLY {changes} AS _cow_c
            WHERE _cow_c._cow_session = sid AND {c_key_equals_new} AND _cow_c._cow_current;
        has_cur := FOUND;
        IF has_cur THEN
            IF NOT cur._cow_deleted THEN
                {raise_duplicate_new}
            END IF;
            existed := cur._cow_existed;
            before := cur._cow_before;
        ELSE
            PERFORM 1 FROM ONLY {base} AS _cow_b WHERE {b_key_equals_new};
            IF FOUND THEN
                {raise_duplicate_new}
            END IF;
            existed := false;
            before := NULL;
        END IF;
        {put_new_live}
        RETURN NEW;
    END IF;

    -- UPDATE and DELETE: OLD is the row the session sees.
    SELECT _cow_c._cow_deleted, _cow_c._cow_operation, _cow_c._cow_existed, _cow_c._cow_before INTO cur
        FROM ONLY {changes} AS _cow_c
        WHERE _cow_c._cow_session = sid AND {c_key_equals_old} AND _cow_c._cow_current;
    has_cur := FOUND;
    IF has_cur THEN
        existed := cur._cow_existed;
        before := cur._cow_before;
    ELSE
        -- First touch of a base row: remember it as it was, for review and conflicts.
        existed := true;
        before := to_jsonb(OLD);
    END IF;

    IF TG_OP = 'DELETE' THEN
        {put_old_dead}
        RETURN OLD;
    END IF;

    IF NOT ({key_changed}) THEN
        {put_new_live}
        RETURN NEW;
    END IF;

    -- The key changed: the old key is deleted and the new one inserted, both in
    -- the session only. The new key must be free in what the session sees.
    SELECT _cow_c._cow_deleted, _cow_c._cow_operation, _cow_c._cow_existed, _cow_c._cow_before INTO cur2
        FROM ONLY {changes} AS _cow_c
        WHERE _cow_c._cow_session = sid AND {c_key_equals_new} AND _cow_c._cow_current;
    has_cur2 := FOUND;
    IF has_cur2 THEN
        IF NOT cur2._cow_deleted THEN
            {raise_duplicate_new}
        END IF;
        existed2 := cur2._cow_existed;
        before2 := cur2._cow_before;
    ELSE
        PERFORM 1 FROM ONLY {base} AS _cow_b WHERE {b_key_equals_new};
        IF FOUND THEN
            {raise_duplicate_new}
        END IF;
    END IF;
    {put_old_dead}
    {put_new_live_at_new_key}
    RETURN NEW;
END
$cow$;
