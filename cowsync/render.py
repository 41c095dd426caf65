"""Rendering the per-table SQL (change store, view, trigger) from cowsync/sql templates.

Every identifier is composed with :class:`psycopg.sql.Identifier` and every value with
:class:`psycopg.sql.Literal`; the only raw SQL spliced in comes from the catalog itself
(column types and default expressions as PostgreSQL prints them).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from psycopg import sql

from . import sqlfiles
from .catalog import Column
from .config import CowConfig
from .constraints import (
    ExclusionCheck,
    ForeignKeyIn,
    ForeignKeyOut,
    Operator,
    Relation,
    UniqueCheck,
)
from .search_path import ENGINE_SEARCH_PATH, base_search_path

_OPERATOR_NAME = re.compile(r"[-+*/<>=~!@#%^&|`?]+")


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
    exclusions: tuple[ExclusionCheck, ...] = ()
    fks_out: tuple[ForeignKeyOut, ...] = ()
    fks_in: tuple[ForeignKeyIn, ...] = ()
    hardened: bool = False
    key_operators: tuple[Operator, ...] = ()  # each key column's equality operator
    # Overlay mode: the schema of the view, change store and parent, and the parent's name.
    view_schema: str | None = None
    parent_name: str | None = None

    @property
    def overlay(self) -> bool:
        return self.view_schema is not None

    @property
    def store_schema(self) -> str:
        """The schema of the view and change store (the table's own in place)."""
        return self.view_schema or self.schema

    @property
    def view(self) -> sql.Identifier:
        return sql.Identifier(self.store_schema, self.view_name)

    @property
    def base(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.base_name)

    @property
    def changes(self) -> sql.Identifier:
        return sql.Identifier(self.store_schema, self.changes_name)

    @property
    def parent(self) -> sql.Identifier:
        """What the view scans and the change store inherits from: in place the base,
        in overlay mode an empty parent of both base and change store."""
        if self.parent_name is None:
            return self.base
        return sql.Identifier(self.store_schema, self.parent_name)

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


# Comparisons of table values name their operator schema-qualified, the one the
# constraint itself uses (its index's operator class, pg_constraint's for foreign
# keys): the functions run with search_path pg_catalog, pg_temp, which holds neither
# look-alikes nor the operators of types from other schemas (citext, ...).


def _operator(schema: str, name: str) -> sql.Composed:
    """``OPERATOR(schema.op)``: the constraint's own operator whatever the search_path."""
    if not _OPERATOR_NAME.fullmatch(name):  # catalog text, but it is spliced in raw
        raise ValueError(f"unexpected operator name {name!r}")
    return sql.SQL("OPERATOR({}.{})").format(sql.Identifier(schema), sql.SQL(name))


def _equal(left: sql.Composable, op: Operator, right: sql.Composable) -> sql.Composed:
    return sql.SQL("{} {} {}").format(left, _operator(*op), right)


def _same(left: sql.Composable, op: Operator, right: sql.Composable) -> sql.Composed:
    """``left IS NOT DISTINCT FROM right`` with ``op``: true or false, never NULL."""
    return sql.SQL("coalesce({} {} {}, {} IS NULL AND {} IS NULL)").format(
        left, _operator(*op), right, left, right
    )


def _all_equal(
    left: str,
    left_columns: tuple[str, ...],
    right: str,
    right_columns: tuple[str, ...],
    ops: tuple[Operator, ...],
) -> sql.Composed:
    """``left.a = right.x AND ...`` column by column, with each column's operator."""
    if len(ops) != len(left_columns) or len(ops) != len(right_columns):
        raise ValueError("one operator per compared column is needed")
    return sql.SQL(" AND ").join(
        _equal(sql.Identifier(left, lc), op, sql.Identifier(right, rc))
        for lc, op, rc in zip(left_columns, ops, right_columns)
    )


def _rows_differ(
    left: str,
    left_columns: tuple[str, ...],
    right: str,
    right_columns: tuple[str, ...],
    ops: tuple[Operator, ...],
) -> sql.Composed:
    """``ROW(left...) IS DISTINCT FROM ROW(right...)`` with each column's operator."""
    if len(ops) != len(left_columns) or len(ops) != len(right_columns):
        raise ValueError("one operator per compared column is needed")
    return sql.SQL("NOT ({})").format(
        sql.SQL(" AND ").join(
            _same(sql.Identifier(left, lc), op, sql.Identifier(right, rc))
            for lc, op, rc in zip(left_columns, ops, right_columns)
        )
    )


def _key_equals(layout: TableLayout, left: str, right: str) -> sql.Composed:
    keys = layout.key_columns
    return _all_equal(left, keys, right, keys, layout.key_operators)


def _keys_differ(layout: TableLayout, left: str, right: str) -> sql.Composed:
    keys = layout.key_columns
    return _rows_differ(left, keys, right, keys, layout.key_operators)


def _index_name(layout: TableLayout, suffix: str) -> sql.Identifier:
    # Registry ids are unique, so these names never clash and never need truncating.
    return sql.Identifier(f"cowsync_{layout.registry_id}_{suffix}")


def changes_table(layout: TableLayout) -> sql.Composed:
    return sqlfiles.template("table_changes.sql").format(
        changes=layout.changes,
        base=layout.parent,
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


def _index_element(expression: str, column: str | None, alias: str | None = None) -> sql.Composable:
    """One element of a unique index or EXCLUDE constraint as SQL: a bare column by its
    catalog name (qualified by ``alias``, so no PL/pgSQL variable can shadow it), an
    expression as the catalog prints it. The printed form of a column is already quoted
    where it needs to be ("rAnK"), so it must never go into sql.Identifier."""
    if column is not None:
        return sql.Identifier(alias, column) if alias else sql.Identifier(column)
    return sql.SQL("({})").format(sql.SQL(expression))


def _index_expressions(check: UniqueCheck) -> sql.Composable:
    return sql.SQL(", ").join(
        _index_element(e, c) for e, c in zip(check.expressions, check.columns, strict=True)
    )


def _named_index(
    layout: TableLayout, kind: str, definition: sql.Composed
) -> tuple[str, sql.Composed]:
    """An index of the change store named by its kind and a hash of its definition, so a
    changed constraint gets a fresh index and the old one is found and dropped (install.py)."""
    digest = hashlib.sha256(definition.as_string(None).encode()).hexdigest()[:12]
    name = f"cowsync_{layout.registry_id}_{kind}_{digest}"
    return name, sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} {}").format(
        sql.Identifier(name), layout.changes, definition
    )


# What the change store's check indexes are named (_named_index), and were before
# (u0, fk0, ... by position): install.py drops those it no longer wants.
CHECK_INDEX_NAME = re.compile(r"cowsync_(\d+)_(?:u|fk|x)(?:\d+|_[0-9a-f]{12})")


def changes_indexes(layout: TableLayout) -> dict[str, sql.Composed]:
    """Indexes that let unique, exclusion and foreign-key checks reach session rows by
    value: ``CREATE INDEX IF NOT EXISTS`` by name."""
    statements = []
    for check in layout.uniques:
        statements.append(
            _named_index(
                layout,
                "u",
                sql.SQL("({}){}").format(
                    _index_expressions(check),
                    sql.SQL(" WHERE {}").format(sql.SQL(check.predicate))
                    if check.predicate
                    else sql.SQL(""),
                ),
            )
        )
    statements.extend(_exclusion_index(layout, check) for check in layout.exclusions)
    for fk in layout.fks_out:
        statements.append(
            _named_index(layout, "fk", sql.SQL("({})").format(_ident_list(fk.columns)))
        )
    return dict(statements)


def view(layout: TableLayout, config: CowConfig) -> sql.Composed:
    return sqlfiles.template("table_view.sql").format(
        view=layout.view,
        options=sql.SQL(" WITH (security_barrier)" if layout.hardened else ""),
        base=layout.parent,
        changes=layout.changes,
        b_columns=_ident_list(layout.column_names, "_cow_b"),
        base_regclass=_qualified_text(layout.schema, layout.base_name),
        changes_regclass=_qualified_text(layout.store_schema, layout.changes_name),
        session_expr=(
            sql.SQL("(SELECT cowsync.current_session({}))")
            if layout.hardened
            else sql.SQL("pg_catalog.current_setting({}, true)")
        ).format(sql.Literal(config.session_variable)),
        session_gate=(
            # No column in it, so the planner makes it a one-time filter, checked before
            # any row is read: a refused session (42501) never depends on the rows a
            # reader's WHERE matched. current_session() never returns '' (NULL or an id).
            sql.SQL("cowsync.current_session({}) IS DISTINCT FROM '' AND ").format(
                sql.Literal(config.session_variable)
            )
            if layout.hardened
            else sql.SQL("")
        ),
        c_key_equals_b=_key_equals(layout, "_cow_c", "_cow_b"),
    )


def view_defaults(layout: TableLayout) -> list[sql.Composed]:
    """Column defaults for the view, so INSERT through it fills what the table would."""
    statements = []
    for column in layout.columns:
        if column.identity and column.serial_sequence:
            default: sql.Composable = sql.SQL("pg_catalog.nextval({}::regclass)").format(
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
        c_key_equals_row=_key_equals(layout, "_cow_c", row),
    )


def _raise_duplicate(layout: TableLayout, row: str) -> sql.Composed:
    key_text = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(row, k)) for k in layout.key_columns
    )
    return sql.SQL(
        "RAISE EXCEPTION USING ERRCODE = 'unique_violation', "
        "MESSAGE = pg_catalog.format('duplicate key value violates unique constraint \"%s\"', "
        "{constraint}), "
        "DETAIL = pg_catalog.format('Key (%s)=(%s) already exists.', {key_names}, "
        "pg_catalog.concat_ws(', ', {key_text})), "
        "CONSTRAINT = {constraint}, TABLE = {table}, SCHEMA = {schema};"
    ).format(
        constraint=sql.Literal(layout.key_constraint),
        key_names=sql.Literal(", ".join(layout.key_columns)),
        key_text=key_text,
        table=sql.Literal(layout.view_name),
        schema=sql.Literal(layout.schema),
    )


def _values_text(row: str, columns: tuple[str, ...]) -> sql.Composable:
    return sql.SQL("pg_catalog.concat_ws(', ', {})").format(
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
    if len(check.operators) != n:
        raise ValueError(f"no equality operator for every column of index {check.index_name}")
    fields = [sql.Identifier("_cow_v_row", f"u{i}") for i in range(n)]
    compare = _same if check.nulls_not_distinct else _equal
    elements = list(zip(check.expressions, check.columns, strict=True))
    existing = [_index_element(e, c, "_cow_u") for e, c in elements]
    matches = sql.SQL(" AND ").join(
        compare(value, op, field) for value, op, field in zip(existing, check.operators, fields)
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
        exclude = sql.SQL(" AND {}").format(_keys_differ(layout, "_cow_u", "new"))
    values = sql.SQL("pg_catalog.concat_ws(', ', {})").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(f) for f in fields)
    )
    error = _raise(
        "unique_violation",
        sql.SQL(
            "pg_catalog.format('duplicate key value violates unique constraint \"%s\"', {})"
        ).format(sql.Literal(check.name)),
        sql.SQL("pg_catalog.format('Key (%s)=(%s) already exists.', {}, {})").format(
            sql.Literal(", ".join(check.expressions)), values
        ),
        check.name,
        layout,
    )
    select_list = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(_index_element(e, c, "_cow_n"), sql.Identifier(f"u{i}"))
        for i, (e, c) in enumerate(elements)
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


def _exclusion_index(layout: TableLayout, check: ExclusionCheck) -> tuple[str, sql.Composed]:
    """The EXCLUDE constraint's index (same method, elements, operator classes and
    predicate) on the change store, so a session's check probes it rather than scanning.

    The view finds a change-store row's session through a per-row probe, not a
    column predicate, so ``_cow_session`` in this index would not narrow the scan.
    """
    elements = sql.SQL(", ").join(
        sql.SQL("{} {}").format(_index_element(expr, column), sql.Identifier(*opclass))
        for expr, column, opclass in zip(check.expressions, check.columns, check.opclasses)
    )
    definition = sql.SQL("USING {} ({}){}").format(
        sql.Identifier(check.method),
        elements,
        sql.SQL(" WHERE {}").format(sql.SQL(check.predicate)) if check.predicate else sql.SQL(""),
    )
    return _named_index(layout, "x", definition)


def _exclusion_check(
    layout: TableLayout, check: ExclusionCheck, skip: bool, row: str = "new"
) -> sql.Composed:
    """Refuse NEW when another row the session sees conflicts with it on every element.

    Run after NEW was written (``skip=False``: the row itself is excluded by its key)
    it raises 23P01 as the table would; run before (``skip=True``, for ON CONFLICT
    DO NOTHING, which PostgreSQL lets skip exclusion conflicts too) it skips the row,
    or, for a DEFERRABLE constraint, refuses the statement (55000) as the table does.
    A NULL element never conflicts, and NEW outside a partial constraint's WHERE is
    not checked.
    """
    if skip and check.deferrable:
        return sql.SQL(
            "RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state', MESSAGE = {}, "
            "CONSTRAINT = {}, TABLE = {}, SCHEMA = {};"
        ).format(
            sql.Literal(
                "ON CONFLICT does not support deferrable unique constraints/exclusion "
                "constraints as arbiters"
            ),
            sql.Literal(check.name),
            sql.Literal(layout.view_name),
            sql.Literal(layout.schema),
        )
    fields = [sql.Identifier("_cow_v_row", f"x{i}") for i in range(len(check.expressions))]

    select_list = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(_index_element(e, c, "_cow_n"), sql.Identifier(f"x{i}"))
        for i, (e, c) in enumerate(zip(check.expressions, check.columns))
    )
    existing = [_index_element(e, c, "_cow_x") for e, c in zip(check.expressions, check.columns)]
    conflicts = sql.SQL(" AND ").join(
        sql.SQL("{} {} {}").format(x, _operator(*op), field)
        for x, op, field in zip(existing, check.operators, fields)
    )
    not_null = sql.SQL("").join(sql.SQL(" AND {} IS NOT NULL").format(f) for f in fields)
    predicate = (
        sql.SQL(" WHERE {}").format(sql.SQL(check.predicate)) if check.predicate else sql.SQL("")
    )
    if check.predicate:
        conflicts = sql.SQL("{} AND ({})").format(conflicts, sql.SQL(check.predicate))
    if skip:
        probe = sql.SQL(
            "PERFORM 1 FROM {view} AS _cow_x WHERE {conflicts};\nIF FOUND THEN RETURN NULL; END IF;"
        ).format(view=layout.view, conflicts=conflicts)
    else:
        names = sql.Literal(", ".join(check.expressions))
        written = sql.SQL("pg_catalog.concat_ws(', ', {})").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(f) for f in fields)
        )
        # A deferred check (row is the change-store row) fires for every write; the
        # table rechecks only the later row of a clashing pair, so that row is named first.
        later: sql.Composable = sql.SQL("false")
        if row != "new":
            later = sql.SQL(
                "EXISTS (SELECT 1 FROM ONLY {changes} AS _cow_s WHERE _cow_s._cow_session = "
                "{row}._cow_session AND {s_key_equals_x} AND _cow_s._cow_current "
                "AND _cow_s._cow_seq > {row}._cow_seq)"
            ).format(
                changes=layout.changes,
                row=sql.Identifier(row),
                s_key_equals_x=_key_equals(layout, "_cow_s", "_cow_x"),
            )
        error = _raise(
            "exclusion_violation",
            sql.SQL(
                "pg_catalog.format('conflicting key value violates exclusion constraint "
                '"%s"\', {})'
            ).format(sql.Literal(check.name)),
            sql.SQL(
                "pg_catalog.format('Key (%s)=(%s) conflicts with existing key (%s)=(%s).', "
                "{names}, "
                "CASE WHEN _cow_v_later THEN _cow_v_clash ELSE {written} END, {names}, "
                "CASE WHEN _cow_v_later THEN {written} ELSE _cow_v_clash END)"
            ).format(names=names, written=written),
            check.name,
            layout,
        )
        probe = sql.SQL(
            "DECLARE\n"
            "    _cow_v_clash text;\n"
            "    _cow_v_later boolean;\n"
            "BEGIN\n"
            "    SELECT pg_catalog.concat_ws(', ', {existing}), {later}\n"
            "        INTO _cow_v_clash, _cow_v_later\n"
            "        FROM {view} AS _cow_x\n"
            "        WHERE {conflicts} AND {keys_differ}\n"
            "        LIMIT 1;\n"
            "    IF FOUND THEN {error} END IF;\n"
            "END;"
        ).format(
            existing=sql.SQL(", ").join(sql.SQL("({})::text").format(x) for x in existing),
            later=later,
            view=layout.view,
            conflicts=conflicts,
            keys_differ=_keys_differ(layout, "_cow_x", row),
            error=error,
        )
    return sql.SQL(
        "SELECT {select_list} INTO _cow_v_row FROM (SELECT {row}.*) AS _cow_n{predicate};\n"
        "IF FOUND{not_null} THEN\n{probe}\nEND IF;"
    ).format(
        select_list=select_list,
        row=sql.Identifier(row),
        predicate=predicate,
        not_null=not_null,
        probe=probe,
    )


def _relation_ident(rel: Relation) -> sql.Identifier:
    return sql.Identifier(rel.schema, rel.name)


def _all_present(row: str, columns: tuple[str, ...]) -> sql.Composed:
    return sql.SQL(" AND ").join(
        sql.SQL("{} IS NOT NULL").format(sql.Identifier(row, c)) for c in columns
    )


def _child_violation_message(layout: TableLayout, fk: ForeignKeyOut) -> sql.Composed:
    """PostgreSQL's message for a child row that breaks ``fk``, as a SQL expression."""
    return sql.SQL(
        "pg_catalog.format("
        '\'insert or update on table "%s" violates foreign key constraint "%s"\', {}, {})'
    ).format(sql.Literal(layout.view_name), sql.Literal(fk.name))


def _fk_out_probe(layout: TableLayout, fk: ForeignKeyOut, row: str) -> sql.Composed:
    """Raise 23503 unless the parent that ``row`` references is visible to the session."""
    match = _all_equal("_cow_p", fk.parent_columns, row, fk.columns, fk.parent_equals_child)
    error = _raise(
        "foreign_key_violation",
        _child_violation_message(layout, fk),
        sql.SQL(
            "pg_catalog.format('Key (%s)=(%s) is not present in table \"%s\".', {}, {}, {})"
        ).format(
            sql.Literal(", ".join(fk.columns)),
            _values_text(row, fk.columns),
            sql.Literal(fk.parent.label),
        ),
        fk.name,
        layout,
    )
    return sql.SQL(
        "PERFORM 1 FROM {parent} AS _cow_p WHERE {match};\nIF NOT FOUND THEN {error} END IF;"
    ).format(parent=_relation_ident(fk.parent), match=match, error=error)


def _fk_out_mixed_nulls(layout: TableLayout, fk: ForeignKeyOut, row: str) -> sql.Composed:
    """MATCH FULL: a key partly NULL is refused (23503), as the table's check refuses it."""
    if not fk.match_full or len(fk.columns) < 2:
        return sql.Composed([])
    error = _raise(
        "foreign_key_violation",
        _child_violation_message(layout, fk),
        sql.Literal("MATCH FULL does not allow mixing of null and nonnull key values."),
        fk.name,
        layout,
    )
    return sql.SQL("IF pg_catalog.num_nulls({}) NOT IN (0, {}) THEN {} END IF;").format(
        _ident_list(fk.columns, row), sql.Literal(len(fk.columns)), error
    )


def _fk_out_check(layout: TableLayout, fk: ForeignKeyOut, only_if_changed: bool) -> sql.Composed:
    """Refuse NEW when the parent row it references is not visible to the session.

    A foreign key the change store's constraint trigger checks (deferrable) is left to it.
    """
    if _defers_out(layout, fk):
        return sql.Composed([])
    present = _all_present("new", fk.columns)
    condition: sql.Composable = present
    if only_if_changed:
        condition = sql.SQL("{} AND {}").format(
            _rows_differ("new", fk.columns, "old", fk.columns, fk.child_equals_child), present
        )
    return sql.SQL("{}\nIF {} THEN\n{}\nEND IF;").format(
        _fk_out_mixed_nulls(layout, fk, "new"), condition, _fk_out_probe(layout, fk, "new")
    )


def _referencing(layout: TableLayout, fk: ForeignKeyIn) -> sql.Composable:
    """Rows of the child (as the session sees it) that reference OLD."""
    match = _all_equal("old", fk.columns, "_cow_ch", fk.child_columns, fk.parent_equals_child)
    if fk.child.schema == layout.store_schema and fk.child.name == layout.view_name:
        # A self-reference: the row being changed does not block itself.
        match = sql.SQL("{} AND {}").format(match, _keys_differ(layout, "_cow_ch", "old"))
    return match


def _fk_in_error(layout: TableLayout, fk: ForeignKeyIn, row: str) -> sql.Composed:
    """23503 for a parent key (in ``row``) still referenced by a child."""
    return _raise(
        "foreign_key_violation",
        sql.SQL(
            'pg_catalog.format(\'update or delete on table "%s" violates foreign key constraint '
            '"%s" on table "%s"\', {}, {}, {})'
        ).format(sql.Literal(layout.view_name), sql.Literal(fk.name), sql.Literal(fk.child.label)),
        sql.SQL(
            "pg_catalog.format('Key (%s)=(%s) is still referenced from table \"%s\".', {}, {}, {})"
        ).format(
            sql.Literal(", ".join(fk.columns)),
            _values_text(row, fk.columns),
            sql.Literal(fk.child.label),
        ),
        fk.name,
        layout,
    )


def _fk_in_restrict(layout: TableLayout, fk: ForeignKeyIn, action: str) -> sql.Composed:
    """Refuse (or, for an action the session cannot carry out, explain) while referenced.

    NO ACTION on a deferrable foreign key is left to the change store's constraint trigger.
    """
    if action == "a" and _defers_in(layout, fk):
        return sql.Composed([])
    if action in ("a", "r"):
        error = _fk_in_error(layout, fk, "old")
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
    check = sql.SQL(
        "PERFORM 1 FROM {child} AS _cow_ch WHERE {match};\nIF FOUND THEN {error} END IF;"
    ).format(child=_relation_ident(fk.child), match=_referencing(layout, fk), error=error)
    if fk.child.enabled:
        return check
    return sql.SQL("{blind}\n{check}").format(blind=_unreadable_child(layout, fk), check=check)


def _unreadable_child(layout: TableLayout, fk: ForeignKeyIn, row: str = "old") -> sql.Composed:
    """Refuse, whatever it holds, when the writer cannot read a child table that is not
    enabled: the check reads it with the trigger owner's rights, so refusing only when a
    child row exists would tell the writer about rows it may not see."""
    return sql.SQL(
        "IF {present} AND NOT pg_catalog.has_table_privilege(session_user, {child}, 'SELECT') "
        "THEN RAISE EXCEPTION {message} USING ERRCODE = 'insufficient_privilege', HINT = {hint}; "
        "END IF;"
    ).format(
        present=_all_present(row, fk.columns),
        child=_qualified_text(fk.child.schema, fk.child.name),
        message=sql.Literal(
            f'cowsync: in a session, a role that cannot read "{fk.child.label}" (not '
            f'COW-enabled; foreign key "{fk.name}") cannot delete or re-key rows of '
            f'"{layout.view_name}" it may reference'
        ),
        hint=sql.Literal(
            f"Enable {fk.child.schema}.{fk.child.name} with cowsync.enable(), or grant the "
            "role SELECT on it."
        ),
    )


# --- deferrable foreign keys ---------------------------------------------------------------
#
# PostgreSQL checks a DEFERRABLE foreign key when its RI trigger fires: at the end of
# the statement, or at COMMIT / SET CONSTRAINTS ... IMMEDIATE when deferred. Session
# writes land in the change store, so a constraint trigger on it, named like the
# foreign key (SET CONSTRAINTS finds it by that name), does the session's check then.


@dataclass(frozen=True)
class DeferredCheck:
    """One constraint trigger on the change store: the deferrable foreign keys named ``name``
    (a self-reference is both an outgoing and an incoming one), or the table's deferrable
    EXCLUDE constraint of that name."""

    name: str
    initially_deferred: bool
    fks_out: tuple[ForeignKeyOut, ...]
    fks_in: tuple[ForeignKeyIn, ...]
    live: bool  # fires for live current rows (a child written, a referenced value changed)
    dead: bool  # fires for tombstones (a parent deleted or re-keyed)
    exclusions: tuple[ExclusionCheck, ...] = ()  # a deferrable EXCLUDE constraint of this name

    @property
    def signature(self) -> str:
        """What the trigger's definition depends on; stored as its argument, so a sync
        recreates exactly the triggers whose definition changed."""
        timing = "deferred" if self.initially_deferred else "immediate"
        return f"cowsync fk v1 {timing} live={self.live} dead={self.dead}"


def _key_only(layout: TableLayout, fk: ForeignKeyIn) -> bool:
    """Whether the referenced columns are row-key columns: then only a tombstone (a
    delete, or the old key of a key change) can take a referenced value away."""
    return set(fk.columns) <= set(layout.key_columns)


def deferred_checks(layout: TableLayout) -> list[DeferredCheck]:
    """The constraint triggers the change store needs, one per deferrable constraint name.

    Deferred are the child-side check of every deferrable foreign key out, the NO
    ACTION check of every deferrable foreign key in (RESTRICT and the referential
    actions are never deferred) and every deferrable EXCLUDE constraint. A name that
    cannot be given to a trigger here (the table has a CHECK constraint of that name,
    or the constraints sharing it disagree on INITIALLY DEFERRED) stays checked row by
    row by the INSTEAD OF trigger.
    """
    reserved = {f"cowsync_{layout.registry_id}_history"}
    outs: dict[str, list[ForeignKeyOut]] = {}
    ins: dict[str, list[ForeignKeyIn]] = {}
    for fk in layout.fks_out:
        if fk.deferrable and fk.name not in reserved:
            outs.setdefault(fk.name, []).append(fk)
    for fk_in in layout.fks_in:
        if (
            fk_in.deferrable
            and "a" in (fk_in.on_delete, fk_in.on_update)
            and not fk_in.name_taken
            and fk_in.name not in reserved
        ):
            ins.setdefault(fk_in.name, []).append(fk_in)
    excludes = {x.name: (x,) for x in layout.exclusions if x.deferrable and x.name not in reserved}
    checks = []
    for name in sorted(outs.keys() | ins.keys() | excludes.keys()):
        group_out, group_in = tuple(outs.get(name, ())), tuple(ins.get(name, ()))
        group_x = excludes.get(name, ())
        flags = {f.initially_deferred for f in (*group_out, *group_in, *group_x)}
        if len(flags) != 1:
            continue
        live = bool(group_out or group_x) or any(_follows_values(layout, f) for f in group_in)
        checks.append(
            DeferredCheck(name, flags.pop(), group_out, group_in, live, bool(group_in), group_x)
        )
    return checks


def _defers_exclusion(layout: TableLayout, check: ExclusionCheck) -> bool:
    return any(check in deferred.exclusions for deferred in deferred_checks(layout))


def _deferred_exclusion(layout: TableLayout, check: ExclusionCheck) -> sql.Composed:
    """At fire time: the key's current live row in the row's session (it may have
    changed or gone since the write) must not conflict with a row that session sees."""
    return sql.SQL(
        "IF NOT NEW._cow_deleted THEN\n"
        "    SELECT _cow_c.* INTO _cow_v_cur FROM ONLY {changes} AS _cow_c\n"
        "        WHERE _cow_c._cow_session = NEW._cow_session AND {c_key_equals_new}\n"
        "          AND _cow_c._cow_current AND NOT _cow_c._cow_deleted;\n"
        "    IF FOUND THEN\n{check}\n    END IF;\n"
        "END IF;"
    ).format(
        changes=layout.changes,
        c_key_equals_new=_key_equals(layout, "_cow_c", "new"),
        check=_exclusion_check(layout, check, False, "_cow_v_cur"),
    )


def _defers_out(layout: TableLayout, fk: ForeignKeyOut) -> bool:
    return any(fk in check.fks_out for check in deferred_checks(layout))


def _defers_in(layout: TableLayout, fk: ForeignKeyIn) -> bool:
    return any(fk in check.fks_in for check in deferred_checks(layout))


def _deferred_out(layout: TableLayout, fk: ForeignKeyOut) -> sql.Composed:
    """At fire time: the key's current live row in the row's session (it may have
    changed or gone since the write) must reference a parent that session sees."""
    return sql.SQL(
        "IF NOT NEW._cow_deleted THEN\n"
        "    SELECT _cow_c.* INTO _cow_v_row FROM ONLY {changes} AS _cow_c\n"
        "        WHERE _cow_c._cow_session = NEW._cow_session AND {c_key_equals_new}\n"
        "          AND _cow_c._cow_current AND NOT _cow_c._cow_deleted;\n"
        "    IF FOUND THEN\n{mixed}\n    IF {present} THEN\n{probe}\n    END IF;\n    END IF;\n"
        "END IF;"
    ).format(
        changes=layout.changes,
        c_key_equals_new=_key_equals(layout, "_cow_c", "new"),
        mixed=_fk_out_mixed_nulls(layout, fk, "_cow_v_row"),
        present=_all_present("_cow_v_row", fk.columns),
        probe=_fk_out_probe(layout, fk, "_cow_v_row"),
    )


def _still_referenced(layout: TableLayout, fk: ForeignKeyIn, row: str) -> sql.Composed:
    """Raise 23503 when no row the session sees holds the referenced value in ``row``
    any more (it may have come back, as on a table) but a child still references it."""
    parent_match = _all_equal("_cow_p", fk.columns, row, fk.columns, fk.parent_equals_parent)
    child_match = _all_equal(row, fk.columns, "_cow_ch", fk.child_columns, fk.parent_equals_child)
    return sql.SQL(
        "PERFORM 1 FROM {view} AS _cow_p WHERE {parent_match};\n"
        "IF NOT FOUND THEN\n"
        "    PERFORM 1 FROM {child} AS _cow_ch WHERE {child_match};\n"
        "    IF FOUND THEN {error} END IF;\n"
        "END IF;"
    ).format(
        view=layout.view,
        parent_match=parent_match,
        child=_relation_ident(fk.child),
        child_match=child_match,
        error=_fk_in_error(layout, fk, row),
    )


# The write trigger sets these around a tombstone's write. A NO ACTION check that fires
# at the end of that write (INITIALLY IMMEDIATE, or after SET CONSTRAINTS ... IMMEDIATE)
# runs before the rest of the row's change is made: TOMBSTONE_SETTING holds TG_OP, so a
# delete (key change) that the foreign key's ON DELETE (ON UPDATE) action handles is
# skipped (the action runs next; PostgreSQL never defers actions), and REKEY_SETTING
# holds a key change's new row, so a referenced value the row keeps is not taken away
# (its new key's row is written next). A check fired later (deferred) finds both empty
# and judges the tombstone as it stands, every action done.
TOMBSTONE_SETTING = "cowsync.fk_tombstone"
REKEY_SETTING = "cowsync.fk_rekey"


def _tombstone_is(operation: str) -> sql.Composed:
    return sql.SQL("coalesce(pg_catalog.current_setting({}, true), '') = {}").format(
        sql.Literal(TOMBSTONE_SETTING), sql.Literal(operation)
    )


def _acted_on(fk: ForeignKeyIn) -> sql.Composable:
    """Whether the tombstone being written is one the foreign key's action handles."""
    parts = [_tombstone_is("DELETE")] if fk.on_delete != "a" else []
    parts += [_tombstone_is("UPDATE")] if fk.on_update != "a" else []
    return sql.SQL(" OR ").join(parts) if parts else sql.SQL("false")


def _follows_values(layout: TableLayout, fk: ForeignKeyIn) -> bool:
    """Whether the NO ACTION check judges every value the key held (see _deferred_in)."""
    return fk.on_update == "a" and not _key_only(layout, fk)


def _marks_tombstones(layout: TableLayout) -> tuple[bool, bool]:
    """Whether the write trigger sets TOMBSTONE_SETTING, and REKEY_SETTING."""
    fks = [fk for check in deferred_checks(layout) for fk in check.fks_in]
    return (
        any(fk.on_delete != "a" or fk.on_update != "a" for fk in fks),
        any(_follows_values(layout, fk) for fk in fks),
    )


def _kept_by_rekey(layout: TableLayout, fk: ForeignKeyIn, row: str) -> sql.Composed:
    """Whether the key change being written keeps the referenced value in ``row``."""
    same = sql.SQL(" AND ").join(
        _same(sql.Identifier(row, c), op, sql.Identifier("_cow_r", c))
        for c, op in zip(fk.columns, fk.parent_equals_parent)
    )
    return sql.SQL(
        "coalesce((SELECT {} FROM pg_catalog.jsonb_populate_record(NULL::{}, "
        "nullif(pg_catalog.current_setting({}, true), '')::jsonb) AS _cow_r), false)"
    ).format(same, layout.base, sql.Literal(REKEY_SETTING))


def _deferred_in(layout: TableLayout, fk: ForeignKeyIn) -> sql.Composed:
    """At fire time: a referenced value this write took away must not be referenced.

    For a key-only reference that value is a tombstone's. Otherwise an update may
    have changed it in place, so every value the key held in the session is judged:
    the row before (OLD), the base row, the session's other rows of the key.
    """
    if not fk.child.enabled:
        blind = _unreadable_child(layout, fk, row="new")
        blind = sql.SQL("IF NEW._cow_deleted THEN\n{}\nEND IF;\n").format(blind)
        return sql.SQL("{}{}").format(blind, _deferred_in_check(layout, fk))
    return _deferred_in_check(layout, fk)


def _deferred_in_check(layout: TableLayout, fk: ForeignKeyIn) -> sql.Composed:
    if not _follows_values(layout, fk):
        return sql.SQL("IF NEW._cow_deleted AND {} AND NOT ({}) THEN\n{}\nEND IF;").format(
            _all_present("new", fk.columns), _acted_on(fk), _still_referenced(layout, fk, "new")
        )
    columns = _ident_list(fk.columns)
    return sql.SQL(
        "IF NOT (NEW._cow_deleted AND ({acted_on})) THEN\n"
        "FOR _cow_v_key IN\n"
        "    SELECT DISTINCT * FROM (\n"
        "        SELECT {new_values}\n"
        "        UNION ALL SELECT {old_values}\n"
        "        UNION ALL SELECT {b_values}\n"
        "            FROM pg_catalog.jsonb_populate_record(NULL::{base}, NEW._cow_before)\n"
        "                AS _cow_b\n"
        "        UNION ALL SELECT {c_values} FROM ONLY {changes} AS _cow_c\n"
        "            WHERE _cow_c._cow_session = NEW._cow_session AND {c_key_equals_new}\n"
        "    ) AS _cow_k ({columns}) WHERE {present} AND NOT {kept}\n"
        "LOOP\n{check}\nEND LOOP;\n"
        "END IF;"
    ).format(
        acted_on=_acted_on(fk),
        new_values=_ident_list(fk.columns, "new"),
        old_values=_ident_list(fk.columns, "old"),
        b_values=_ident_list(fk.columns, "_cow_b"),
        base=layout.base,
        c_values=_ident_list(fk.columns, "_cow_c"),
        changes=layout.changes,
        c_key_equals_new=_key_equals(layout, "_cow_c", "new"),
        columns=columns,
        present=_all_present("_cow_k", fk.columns),
        kept=_kept_by_rekey(layout, fk, "_cow_k"),
        check=_still_referenced(layout, fk, "_cow_v_key"),
    )


def _deferred_check_body(layout: TableLayout, check: DeferredCheck) -> sql.Composed:
    parts = [_deferred_out(layout, fk) for fk in check.fks_out]
    parts += [_deferred_in(layout, fk) for fk in check.fks_in]
    parts += [_deferred_exclusion(layout, x) for x in check.exclusions]
    return sql.SQL("IF TG_NAME = {} THEN\n{}\nEND IF;").format(
        sql.Literal(check.name), sql.SQL("\n").join(parts)
    )


def fk_check_function_name(registry_id: int) -> sql.Identifier:
    return sql.Identifier("cowsync", f"fk_check_{registry_id}")


def _setting_name(name: str) -> sql.Composable:
    """A configuration parameter's name for a SET clause (``app.session_id``)."""
    return sql.SQL(".").join(sql.Identifier(part) for part in name.split("."))


def fk_check_function(layout: TableLayout, config: CowConfig) -> sql.Composed:
    """The function behind the change store's constraint triggers (see deferred_checks)."""
    return sqlfiles.template("table_fk_check.sql").format(
        function=fk_check_function_name(layout.registry_id),
        search_path=sql.SQL(ENGINE_SEARCH_PATH),
        session_setting=_setting_name(config.session_variable),
        session_variable=sql.Literal(config.session_variable),
        changes=layout.changes,
        checks=sql.SQL("\n").join(_deferred_check_body(layout, c) for c in deferred_checks(layout)),
    )


def fk_check_trigger(layout: TableLayout, check: DeferredCheck) -> sql.Composed:
    """``CREATE CONSTRAINT TRIGGER`` for one deferred check, named like its foreign key."""
    rows = {"all": "", "live": " AND NOT NEW._cow_deleted", "dead": " AND NEW._cow_deleted"}
    kind = "all" if check.live and check.dead else "live" if check.live else "dead"
    return sqlfiles.template("table_fk_trigger.sql").format(
        name=sql.Identifier(check.name),
        changes=layout.changes,
        timing=sql.SQL("DEFERRED" if check.initially_deferred else "IMMEDIATE"),
        rows=sql.SQL(rows[kind]),
        function=fk_check_function_name(layout.registry_id),
        signature=sql.Literal(check.signature),
    )


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
    allowed = sql.SQL("pg_catalog.current_query() ~* 'overriding\\s+system\\s+value'")
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
        "        IF {new} IS DISTINCT FROM pg_catalog.currval({seq}::regclass) THEN\n"
        "            {error}\n"
        "        END IF;\n"
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
    return _rows_differ("new", fk.columns, "old", fk.columns, fk.parent_equals_parent)


def _guarded(condition: sql.Composable, body: sql.Composed) -> sql.Composed:
    if not body._obj:
        return body
    return sql.SQL("IF {} THEN\n{}\nEND IF;").format(condition, body)


def _tombstone_marked(layout: TableLayout, put: sql.Composed) -> sql.Composed:
    """The tombstone's write, with TOMBSTONE_SETTING and REKEY_SETTING telling the NO
    ACTION checks that fire at its end what the rest of the change will do."""
    operation, rekey = _marks_tombstones(layout)
    before, after = [], []
    for wanted, setting, value in (
        (operation, TOMBSTONE_SETTING, sql.SQL("TG_OP")),
        (
            rekey,
            REKEY_SETTING,
            sql.SQL("CASE WHEN TG_OP = 'UPDATE' THEN pg_catalog.to_jsonb(NEW)::text END"),
        ),
    ):
        if wanted:
            before.append(
                sql.SQL("PERFORM pg_catalog.set_config({}, {}, true);").format(
                    sql.Literal(setting), value
                )
            )
            after.append(
                sql.SQL("PERFORM pg_catalog.set_config({}, '', true);").format(sql.Literal(setting))
            )
    return sql.SQL("\n").join([*before, put, *after])


def trigger_function(layout: TableLayout, config: CowConfig) -> sql.Composed:
    always_identity = any(c.identity == "a" for c in layout.columns)
    keys = layout.key_columns
    key_changed = _keys_differ(layout, "new", "old")
    insert_skip = [_unique_check(layout, u, True) for u in layout.uniques] + [
        _exclusion_check(layout, x, True) for x in layout.exclusions
    ]
    exclusion_checks = [
        _exclusion_check(layout, x, False)
        for x in layout.exclusions
        if not _defers_exclusion(layout, x)
    ]
    insert_checks = (
        [_unique_check(layout, u, False) for u in layout.uniques]
        + exclusion_checks
        + [_fk_out_check(layout, fk, False) for fk in layout.fks_out]
    )
    update_checks = (
        [_unique_check(layout, u, False) for u in layout.uniques]
        + exclusion_checks
        + [
            _guarded(_key_columns_changed(fk), _fk_in_restrict(layout, fk, fk.on_update))
            for fk in layout.fks_in
        ]
    )
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
        search_path=sql.SQL(ENGINE_SEARCH_PATH),
        base_search_path=sql.Literal(base_search_path(layout.schema)),
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
        b_key_equals_old=_key_equals(layout, "_cow_b", "old"),
        b_key_equals_new=_key_equals(layout, "_cow_b", "new"),
        c_key_equals_old=_key_equals(layout, "_cow_c", "old"),
        c_key_equals_new=_key_equals(layout, "_cow_c", "new"),
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
        put_old_dead=_tombstone_marked(
            layout,
            _put(
                layout,
                "old",
                True,
                "_cow_v_has_cur",
                "_cow_v_cur",
                "_cow_v_existed",
                "_cow_v_before",
            ),
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
