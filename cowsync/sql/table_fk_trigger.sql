-- Per-table template: one deferred foreign-key check on the change store, named
-- like the foreign key so SET CONSTRAINTS <name> | ALL acts on it as on the table.
-- It fires for a session's current rows as the write trigger leaves them (INSERT,
-- or UPDATE setting _cow_deleted), never for preview copies (ids with '~'), for the
-- retirement of a superseded row (only _cow_current changes), or for what
-- cowsync.commit and discard do to the change store (deletes, and updates of
-- _cow_current, _cow_existed and _cow_before). The argument is the definition's
-- signature, which tells a later sync whether to recreate the trigger.
CREATE CONSTRAINT TRIGGER {name}
    AFTER INSERT OR UPDATE OF _cow_deleted ON {changes}
    DEFERRABLE INITIALLY {timing}
    FOR EACH ROW
    WHEN (pg_catalog.strpos(NEW._cow_session, '~') = 0 AND NEW._cow_current{rows})
    EXECUTE FUNCTION {function}({signature})
