"""Rendering the per-table SQL (change store, view, trigger) from cowsync/sql templates.

Every identifier is composed with :class:`psycopg.sql.Identifier` and every value with
:class:`psycopg.sql.Literal`; the only raw SQL spliced in comes from the catalog itself
(column types and default expressions as PostgreSQL prints them).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from . import sqlfiles
from .catalog import Column
from .config import CowConfig
from .constraints import ForeignKeyIn, ForeignKeyOut, Relation, UniqueCheck


@dataclass(frozen=True)
class TableLayout:
    """Where each part of an enabled table lives."""

    registry_id: int
    schema: str
    view_name: str
    base_name: str
    changes_name: str
    key_columns: tuple[str, ...]
    key_constraint: str
    columns: tuple[Column, ...]
    uniques: tuple[UniqueCheck, ...] = ()
    fks_out: tuple[ForeignKeyOut, ...] = ()
    fks_in: tuple[ForeignKeyIn, ...] = ()
    hardened: bool = False

    @property
    def view(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.view_name)

    @property
    def base(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.base_name)

    @property
    def changes(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.changes_name)

    @property
    def function(self) -> sql.Identifier:
        return sql.Identifier("cowsync", f"write_{self.registry_id}")

    @property
    def trigger_name(self) -> sql.Identifier:
        return sql.Identifier("cowsync_write")

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _qualified_text(schema: str, name: str) -> sql.Composable:
    """A literal holding the quoted qualified name, for ``'...'::regclass`` casts."""
    return sql.Literal(
        sql.Identifier(schema).as_string(None) + "." + sql.Identifier(name).as_string(None)
    )


def _ident_list(names: list[str] | tuple[str, ...], prefix: str | None = None) -> sql.Composed:
    if prefix is None:
        return sql.SQL(", ").join(sql.Identifier(n) for n in names)
    return sql.SQL(", ").join(sql.Identifier(prefix, n) for n in names)


def _key_equals(left: str, right: str, keys: tuple[str, ...]) -> sql.Composed:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, k), sql.Identifier(right, k)) for k in keys
    )


def _index_name(layout: TableLayout, suffix: str) -> sql.Identifier:
    # Registry ids are unique, so these names never clash and never need truncating.
    return sql.Identifier(f"cowsync_{layout.registry_id}_{suffix}")


def changes_table(layout: TableLayout) -> sql.Composed:
    return sqlfiles.template("table_changes.sql").format(
        changes=layout.changes,
        base=layout.base,
        key_columns=_ident_list(layout.key_columns),
        history_index=_index_name(layout, "history"),
        current_index=_index_name(layout, "current"),
    )


def changes_key_indexes(layout: TableLayout) -> list[sql.Composed]:
    """The change store's key indexes (as in table_changes.sql), for a key that changed."""
    keys = _ident_list(layout.key_columns)
    return [
        sql.SQL(
            "ALTER TABLE {} ADD CONSTRAINT {} UNIQUE ({}, _cow_session, _cow_operation)"
        ).format(layout.changes, _index_name(layout, "history"), keys),
        sql.SQL("CREATE UNIQUE INDEX {} ON {} (_cow_session, {}) WHERE _cow_current").format(
            _index_name(layout, "current"), layout.changes, keys
        ),
    ]


def _index_expressions(check: UniqueCheck) -> sql.Composable:
    if check.plain_columns:
        return _ident_list(check.expressions)
    return sql.SQL(", ").join(sql.SQL("({})").format(sql.SQL(e)) for e in check.expressions)


def changes_indexes(layout: TableLayout) -> list[sql.Composed]:
    """Indexes that let unique and foreign-key checks reach session rows by value."""
    statements = []
    for i, check in enumerate(layout.uniques):
        statements.append(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({}){}").format(
                _index_name(layout, f"u{i}"),
                layout.changes,
                _index_expressions(check),
                sql.SQL(" WHERE {}").format(sql.SQL(check.predicate))
                if check.predicate
                else sql.SQL(""),
            )
        )
    for i, fk in enumerate(layout.fks_out):
        statements.append(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                _index_name(layout, f"fk{i}"), layout.changes, _ident_list(fk.columns)
            )
        )
    return statements


def view(layout: TableLayout, config: CowConfig) -> sql.Composed:
    return sqlfiles.template("table_view.sql").format(
        view=layout.view,
        options=sql.SQL(" WITH (security_barrier)" if layout.hardened else ""),
        base=layout.base,
        changes=layout.changes,
        b_columns=_ident_list(layout.column_names, "_cow_b"),
        base_regclass=_qualified_text(layout.schema, layout.base_name),
        changes_regclass=_qualified_text(layout.schema, layout.changes_name),
        session_expr=(
            sql.SQL("(SELECT cowsync.current_session({}))")
            if layout.hardened
            else sql.SQL("current_setting({}, true)")
        ).format(sql.Literal(config.session_variable)),
        c_key_equals_b=_key_equals("_cow_c", "_cow_b", layout.key_columns),
    )


def view_defaults(layout: TableLayout) -> list[sql.Composed]:
    """Column defaults for the view, so INSERT through it fills what the table would."""
    statements = []
    for column in layout.columns:
        if column.identity and column.serial_sequence:
            default: sql.Composable = sql.SQL("nextval({}::regclass)").format(
                sql.Literal(column.serial_sequence)
            )
        elif column.default_sql is not None and not column.generated:
            default = sql.SQL(column.default_sql)  # catalog text, as PostgreSQL printed it
        else:
            continue
        statements.append(
            sql.SQL("ALTER VIEW {} ALTER COLUMN {} SET DEFAULT {}").format(
                layout.view, sql.Identifier(column.name), default
            )
        )
    return statements


def _put(
    layout: TableLayout,
    row: str,
    deleted: bool,
    has_current: str,
    current: str,
    existed: str,
    before: str,
) -> sql.Composed:
    return sqlfiles.template("table_put.sql").format(
        row=sql.SQL(row),
        has_current=sql.SQL(has_current),
        current_operation=sql.SQL(f"{current}._cow_operation"),
        changes=layout.changes,
        columns=_ident_list(layout.column_names),
        row_values=_ident_list(layout.column_names, row),
        excluded_values=_ident_list(layout.column_names, "excluded"),
        deleted=sql.Literal(deleted),
        existed=sql.SQL(existed),
        before=sql.SQL(before),
        history_constraint=_index_name(layout, "history"),
        c_key_equals_row=_key_equals("_cow_c", row, layout.key_columns),
    )


def _raise_duplicate(layout: TableLayout, row: str) -> sql.Composed:
    key_text = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(row, k)) for k in layout.key_columns
    )
    return sql.SQL(
        "RAISE EXCEPTION USING ERRCODE = 'unique_violation', "
        "MESSAGE = format('duplicate key value violates unique constraint \"%s\"', {constraint}), "
        "DETAIL = format('Key (%s)=(%s) already exists.', {key_names}, "
        "concat_ws(', ', {key_text})), "
        "CONSTRAINT = {constraint}, TABLE = {table}, SCHEMA = {schema};"
    ).format(
        constraint=sql.Literal(layout.key_constraint),
        key_names=sql.Literal(", ".join(layout.key_columns)),
        key_text=key_text,
        table=sql.Literal(layout.view_name),
        schema=sql.Literal(layout.schema),
    )


def _values_text(row: str, columns: tuple[str, ...]) -> sql.Composable:
    return sql.SQL("concat_ws(', ', {})").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(row, c)) for c in columns)
    )


def _raise(
    errcode: str,
    message: sql.Composable,
    detail: sql.Composable,
    constraint: str,
    layout: TableLayout,
) -> sql.Composed:
    return sql.SQL(
        "RAISE EXCEPTION USING ERRCODE = {errcode}, MESSAGE = {message}, DETAIL = {detail}, "
        "CONSTRAINT = {constraint}, TABLE = {table}, SCHEMA = {schema};"
    ).format(
        errcode=sql.Literal(errcode),
        message=message,
        detail=detail,
        constraint=sql.Literal(constraint),
        table=sql.Literal(layout.view_name),
        schema=sql.Literal(layout.schema),
    )


def _unique_check(layout: TableLayout, check: UniqueCheck, skip: bool) -> sql.Composed:
    """Refuse NEW when another row the session sees holds its unique values.

    Run after NEW was written (``skip=False``: the row itself is excluded by its
    key) it raises 23505; run before (``skip=True``, for ON CONFLICT DO NOTHING)
    it skips the row instead.
    """
    n = len(check.expressions)
    fields = [sql.Identifier("_cow_v_row", f"u{i}") for i in range(n)]
    compare = "IS NOT DISTINCT FROM" if check.nulls_not_distinct else "="
    matches = sql.SQL(" AND ").join(
        sql.SQL("({}) {} {}").format(sql.SQL(expr), sql.SQL(compare), field)
        for expr, field in zip(check.expressions, fields)
    )
    if check.plain_columns:
        matches = sql.SQL(" AND ").join(
            sql.SQL("{} {} {}").format(sql.Identifier("_cow_u", col), sql.SQL(compare), field)
            for col, field in zip(check.expressions, fields)
        )
    not_null: sql.Composable = sql.SQL("")
    if not check.nulls_not_distinct:
        not_null = sql.SQL("").join(
            sql.SQL(" AND {} IS NOT NULL").format(field) for field in fields
        )
    predicate = (
        sql.SQL(" WHERE {}").format(sql.SQL(check.predicate)) if check.predicate else sql.SQL("")
    )
    also_predicate = (
        sql.SQL(" AND ({})").format(sql.SQL(check.predicate)) if check.predicate else sql.SQL("")
    )
    exclude: sql.Composable = sql.SQL("")
    if not skip:
        exclude = sql.SQL(" AND ROW({}) IS DISTINCT FROM ROW({})").format(
            _ident_list(layout.key_columns, "_cow_u"), _ident_list(layout.key_columns, "new")
        )
    values = sql.SQL("concat_ws(', ', {})").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(f) for f in fields)
    )
    error = _raise(
        "unique_violation",
        sql.SQL("format('duplicate key value violates unique constraint \"%s\"', {})").format(
            sql.Literal(check.name)
        ),
        sql.SQL("format('Key (%s)=(%s) already exists.', {}, {})").format(
            sql.Literal(", ".join(check.expressions)), values
        ),
        check.name,
        layout,
    )
    select_list = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(
            sql.Identifier("_cow_n", e)
            if check.plain_columns
            else sql.SQL("({})").format(sql.SQL(e)),
            sql.Identifier(f"u{i}"),
        )
        for i, e in enumerate(check.expressions)
    )
    return sql.SQL(
        "SELECT {select_list} INTO _cow_v_row FROM (SELECT new.*) AS _cow_n{predicate};\n"
        "IF FOUND{not_null} THEN\n"
        "    PERFORM 1 FROM {view} AS _cow_u WHERE {matches}{also_predicate}{exclude};\n"
        "    IF FOUND THEN {error} END IF;\n"
        "END IF;"
    ).format(
        select_list=select_list,
        predicate=predicate,
        not_null=not_null,
        view=layout.view,
        matches=matches,
        also_predicate=also_predicate,
        exclude=exclude,
        error=sql.SQL("RETURN NULL;") if skip else error,
    )


def _relation_ident(rel: Relation) -> sql.Identifier:
    return sql.Identifier(rel.schema, rel.name)


def _fk_out_check(layout: TableLayout, fk: ForeignKeyOut, only_if_changed: bool) -> sql.Composed:
    """Refuse NEW when the parent row it references is not visible to the session."""
    present = sql.SQL(" AND ").join(
        sql.SQL("{} IS NOT NULL").format(sql.Identifier("new", c)) for c in fk.columns
    )
    condition: sql.Composable = present
    if only_if_changed:
        condition = sql.SQL("ROW({}) IS DISTINCT FROM ROW({}) AND {}").format(
            _ident_list(fk.columns, "new"), _ident_list(fk.columns, "old"), present
        )
    match = sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier("_cow_p", pc), sql.Identifier("new", c))
        for c, pc in zip(fk.columns, fk.parent_columns)
    )
    error = _raise(
        "foreign_key_violation",
        sql.SQL(
            'format(\'insert or update on table "%s" violates foreign key constraint "%s"\', '
            "{}, {})"
        ).format(sql.Literal(layout.view_name), sql.Literal(fk.name)),
        sql.SQL("format('Key (%s)=(%s) is not present in table \"%s\".', {}, {}, {})").format(
            sql.Literal(", ".join(fk.columns)),
            _values_text("new", fk.columns),
            sql.Literal(fk.parent.label),
        ),
        fk.name,
        layout,
    )
    return sql.SQL(
        "IF {condition} THEN\n"
        "    PERFORM 1 FROM {parent} AS _cow_p WHERE {match};\n"
        "    IF NOT FOUND THEN {error} END IF;\n"
        "END IF;"
    ).format(condition=condition, parent=_relation_ident(fk.parent), match=match, error=error)


def _referencing(layout: TableLayout, fk: ForeignKeyIn) -> sql.Composable:
    """Rows of the child (as the session sees it) that reference OLD."""
    match = sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier("_cow_ch", cc), sql.Identifier("old", pc))
        for cc, pc in zip(fk.child_columns, fk.columns)
    )
    if fk.child.schema == layout.schema and fk.child.name == layout.view_name:
        # A self-reference: the row being changed does not block itself.
        match = sql.SQL("{} AND ROW({}) IS DISTINCT FROM ROW({})").format(
            match,
            _ident_list(layout.key_columns, "_cow_ch"),
            _ident_list(layout.key_columns, "old"),
        )
    return match


def _fk_in_restrict(layout: TableLayout, fk: ForeignKeyIn, action: str) -> sql.Composed:
    """Refuse (or, for an action the session cannot carry out, explain) while referenced."""
    if action in ("a", "r"):
        error = _raise(
            "foreign_key_violation",
            sql.SQL(
                'format(\'update or delete on table "%s" violates foreign key constraint '
                '"%s" on table "%s"\', {}, {}, {})'
            ).format(
                sql.Literal(layout.view_name), sql.Literal(fk.name), sql.Literal(fk.child.label)
            ),
            sql.SQL(
                "format('Key (%s)=(%s) is still referenced from table \"%s\".', {}, {}, {})"
            ).format(
                sql.Literal(", ".join(fk.columns)),
                _values_text("old", fk.columns),
                sql.Literal(fk.child.label),
            ),
            fk.name,
            layout,
        )
    elif not fk.child.enabled:
        error = sql.SQL(
            "RAISE EXCEPTION {} USING ERRCODE = 'feature_not_supported', HINT = {};"
        ).format(
            sql.Literal(
                f'cowsync: this change to "{layout.view_name}" in a session would '
                f'{"cascade to" if action == "c" else "update"} rows of "{fk.child.label}" '
                f'(foreign key "{fk.name}"), which is not COW-enabled'
            ),
            sql.Literal(f"Enable {fk.child.schema}.{fk.child.name} with cowsync.enable() too."),
        )
    else:
        return sql.Composed([])
    return sql.SQL(
        "PERFORM 1 FROM {child} AS _cow_ch WHERE {match};\nIF FOUND THEN {error} END IF;"
    ).format(child=_relation_ident(fk.child), match=_referencing(layout, fk), error=error)


def _fk_in_action(
    layout: TableLayout, fk: ForeignKeyIn, action: str, on_delete: bool
) -> sql.Composed:
    """Carry out CASCADE / SET NULL / SET DEFAULT on an enabled child, in the session."""
    if action not in ("c", "n", "d") or not fk.child.enabled:
        return sql.Composed([])
    child = _relation_ident(fk.child)
    where = _referencing(layout, fk)
    if action == "c" and on_delete:
        return sql.SQL("DELETE FROM {} AS _cow_ch WHERE {};").format(child, where)
    if action == "c":
        values: sql.Composable = _ident_list(fk.columns, "new")
    elif action == "n":
        values = sql.SQL(", ").join(sql.SQL("NULL") for _ in fk.child_columns)
    else:
        values = sql.SQL(", ").join(sql.SQL("DEFAULT") for _ in fk.child_columns)
    return sql.SQL("UPDATE {} AS _cow_ch SET ({}) = ROW({}) WHERE {};").format(
        child, _ident_list(fk.child_columns), values, where
    )


def _identity_check(column: Column, operation: str) -> sql.Composed:
    """Refuse an explicit value for a GENERATED ALWAYS identity column, as the table does.

    The view's default draws the column's next value, so a value that is not the
    sequence's ``currval`` in this session was given explicitly (``SET id = DEFAULT``
    and omitted columns pass). An INSERT that says OVERRIDING SYSTEM VALUE passes too.
    """
    if operation == "UPDATE":
        # Through a view even SET col = DEFAULT arrives as a value, and the base
        # would draw another one: every change of the column is refused.
        return sql.SQL(
            "IF TG_OP = 'UPDATE' AND {} IS DISTINCT FROM {} THEN RAISE EXCEPTION {} "
            "USING ERRCODE = 'generated_always', DETAIL = {}; END IF;"
        ).format(
            sql.Identifier("new", column.name),
            sql.Identifier("old", column.name),
            sql.Literal(f'column "{column.name}" can only be updated to DEFAULT'),
            sql.Literal(
                f'Column "{column.name}" is an identity column defined as GENERATED ALWAYS; '
                "cowsync cannot change it through the view, not even to DEFAULT."
            ),
        )
    message = f'cannot insert a non-DEFAULT value into column "{column.name}"'
    changed = sql.SQL("{} IS NOT NULL").format(sql.Identifier("new", column.name))
    allowed = sql.SQL("current_query() ~* 'overriding\\s+system\\s+value'")
    error = sql.SQL(
        "RAISE EXCEPTION {} USING ERRCODE = 'generated_always', DETAIL = {}, HINT = {};"
    ).format(
        sql.Literal(message),
        sql.Literal(f'Column "{column.name}" is an identity column defined as GENERATED ALWAYS.'),
        sql.Literal("Use OVERRIDING SYSTEM VALUE to override."),
    )
    return sql.SQL(
        "IF TG_OP = {op} AND {changed} AND NOT {allowed} THEN\n"
        "    BEGIN\n"
        "        IF {new} IS DISTINCT FROM currval({seq}::regclass) THEN {error} END IF;\n"
        "    EXCEPTION WHEN object_not_in_prerequisite_state THEN {error}\n"
        "    END;\n"
        "END IF;"
    ).format(
        op=sql.Literal(operation),
        changed=changed,
        allowed=allowed,
        new=sql.Identifier("new", column.name),
        seq=sql.Literal(column.serial_sequence),
        error=error,
    )


def _join(parts: list[sql.Composed]) -> sql.Composable:
    kept = [p for p in parts if p._obj]
    return sql.SQL("\n").join(kept) if kept else sql.SQL("")


def _key_columns_changed(fk: ForeignKeyIn) -> sql.Composable:
    return sql.SQL("ROW({}) IS DISTINCT FROM ROW({})").format(
        _ident_list(fk.columns, "new"), _ident_list(fk.columns, "old")
    )


def _guarded(condition: sql.Composable, body: sql.Composed) -> sql.Composed:
    if not body._obj:
        return body
    return sql.SQL("IF {} THEN\n{}\nEND IF;").format(condition, body)


def trigger_function(layout: TableLayout, config: CowConfig) -> sql.Composed:
    always_identity = any(c.identity == "a" for c in layout.columns)
    keys = layout.key_columns
    key_changed = sql.SQL("ROW({}) IS DISTINCT FROM ROW({})").format(
        _ident_list(keys, "new"), _ident_list(keys, "old")
    )
    insert_skip = [_unique_check(layout, u, True) for u in layout.uniques]
    insert_checks = [_unique_check(layout, u, False) for u in layout.uniques] + [
        _fk_out_check(layout, fk, False) for fk in layout.fks_out
    ]
    update_checks = [_unique_check(layout, u, False) for u in layout.uniques] + [
        _guarded(_key_columns_changed(fk), _fk_in_restrict(layout, fk, fk.on_update))
        for fk in layout.fks_in
    ]
    update_after = [_fk_out_check(layout, fk, True) for fk in layout.fks_out] + [
        _guarded(_key_columns_changed(fk), _fk_in_action(layout, fk, fk.on_update, False))
        for fk in layout.fks_in
    ]
    delete_checks = [_fk_in_restrict(layout, fk, fk.on_delete) for fk in layout.fks_in]
    delete_actions = [_fk_in_action(layout, fk, fk.on_delete, True) for fk in layout.fks_in]
    identity = [c.name for c in layout.columns if c.identity == "a"]
    updatable = [c for c in layout.column_names if c not in identity] or list(keys[:1])
    identity_check = sql.SQL("\n").join(
        _identity_check(c, "UPDATE") for c in layout.columns if c.identity == "a"
    )
    identity_insert_check = sql.SQL("\n").join(
        _identity_check(c, "INSERT") for c in layout.columns if c.identity == "a"
    )
    skip_block: sql.Composable = sql.SQL("")
    if insert_skip:
        skip_block = sql.SQL("IF cowsync.statement_ignores_conflicts({}) THEN\n{}\nEND IF;").format(
            sql.Literal(layout.view_name), _join(insert_skip)
        )
    fail_closed: sql.Composable = sql.SQL("")
    if layout.hardened:
        fail_closed = sql.SQL(
            "IF cowsync.is_agent() THEN RAISE EXCEPTION "
            "'cowsync: role % may only write % inside a session', session_user, {} "
            "USING ERRCODE = 'insufficient_privilege', HINT = {}; END IF;"
        ).format(
            sql.Literal(f"{layout.schema}.{layout.view_name}"),
            sql.Literal(f"Set {config.session_variable} first."),
        )
    return sqlfiles.template("table_trigger.sql").format(
        search_path=sql.SQL("pg_catalog, {}, pg_temp").format(sql.Identifier(layout.schema)),
        fail_closed=fail_closed,
        register_write=sql.SQL(
            "cowsync.register_write_checked" if layout.hardened else "cowsync.register_write"
        ),
        insert_checks=_join(insert_checks),
        insert_skip_checks=skip_block,
        view_name=sql.Literal(layout.view_name),
        identity_update_check=identity_check,
        identity_insert_check=identity_insert_check,
        update_columns=_ident_list(updatable),
        update_values=_ident_list(updatable, "new"),
        c_columns=_ident_list(layout.column_names, "_cow_c"),
        update_checks=_join(update_checks),
        update_after=_join(update_after),
        delete_checks=_join(delete_checks),
        delete_actions=_join(delete_actions),
        function=layout.function,
        base=layout.base,
        changes=layout.changes,
        columns=_ident_list(layout.column_names),
        new_values=_ident_list(layout.column_names, "new"),
        overriding=sql.SQL("OVERRIDING SYSTEM VALUE" if always_identity else ""),
        b_key_equals_old=_key_equals("_cow_b", "old", keys),
        b_key_equals_new=_key_equals("_cow_b", "new", keys),
        c_key_equals_old=_key_equals("_cow_c", "old", keys),
        c_key_equals_new=_key_equals("_cow_c", "new", keys),
        key_changed=key_changed,
        table_label=sql.Literal(f"{layout.schema}.{layout.view_name}"),
        session_variable=sql.Literal(config.session_variable),
        operation_variable=sql.Literal(config.operation_variable),
        visible_variable=sql.Literal(config.visible_operations_variable),
        default_operation=sql.Literal(config.default_operation),
        raise_duplicate_new=_raise_duplicate(layout, "new"),
        put_new_live=_put(
            layout, "new", False, "_cow_v_has_cur", "_cow_v_cur", "_cow_v_existed", "_cow_v_before"
        ),
        put_old_dead=_put(
            layout, "old", True, "_cow_v_has_cur", "_cow_v_cur", "_cow_v_existed", "_cow_v_before"
        ),
        put_new_live_at_new_key=_put(
            layout,
            "new",
            False,
            "_cow_v_has_cur2",
            "_cow_v_cur2",
            "_cow_v_existed2",
            "_cow_v_before2",
        ),
    )


def trigger(layout: TableLayout) -> sql.Composed:
    return sql.SQL(
        "CREATE TRIGGER {} INSTEAD OF INSERT OR UPDATE OR DELETE ON {} "
        "FOR EACH ROW EXECUTE FUNCTION {}()"
    ).format(layout.trigger_name, layout.view, layout.function)
