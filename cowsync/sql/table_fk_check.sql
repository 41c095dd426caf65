-- Per-table template: the function behind the change store's constraint triggers,
-- which check deferrable foreign keys and EXCLUDE constraints for session writes
-- when PostgreSQL would:
-- at COMMIT or SET CONSTRAINTS ... IMMEDIATE (INITIALLY DEFERRED), else at the end
-- of the write (INITIALLY IMMEDIATE). Each trigger is named like its constraint;
-- the body picks that constraint's checks by TG_NAME.
--
-- A deferred check runs at commit, when the connection may be bound to another
-- session or to none: it judges the row against the row's own session, binding
-- it for the duration (the SET clause restores the binding on return). It runs
-- with its owner's rights (SECURITY DEFINER), like the write trigger, so it can
-- read the change stores a hardened agent cannot.
CREATE OR REPLACE FUNCTION {function}()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = {search_path}
SET {session_setting} = ''
AS $cow$
#variable_conflict use_variable
DECLARE
    _cow_v_row record;
    _cow_v_key record;
    _cow_v_cur {changes};  -- typed: SQL can expand it (SELECT _cow_v_cur.*)
BEGIN
    PERFORM pg_catalog.set_config({session_variable}, NEW._cow_session, true);
    {checks}
    RETURN NULL;
END
$cow$;
