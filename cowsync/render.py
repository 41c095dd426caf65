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


def changes_table(layout: TableLayout) -> sql.Composed:
    return sqlfiles.template("table_changes.sql").format(
        changes=layout.changes,
        base=layout.base,
        key_columns=_ident_list(layout.key_columns),
        history_index=sql.Identifier(f"{layout.changes_name}_history"),
        current_index=sql.Identifier(f"{layout.changes_name}_current"),
    )


def view(layout: TableLayout, config: CowConfig) -> sql.Composed:
    return sqlfiles.template("table_view.sql").format(
        view=layout.view,
        base=layout.base,
        changes=layout.changes,
        b_columns=_ident_list(layout.column_names, "_cow_b"),
        base_regclass=_qualified_text(layout.schema, layout.base_name),
        changes_regclass=_qualified_text(layout.schema, layout.changes_name),
        session_variable=sql.Literal(config.session_variable),
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
        key_columns=_ident_list(layout.key_columns),
        c_key_equals_row=_key_equals("_cow_c", row, layout.key_columns),
    )


def _raise_duplicate(layout: TableLayout, row: str) -> sql.Composed:
    key_text = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(row, k)) for k in layout.key_columns
    )
    return sql.SQL(
        "RAISE EXCEPTION USING ERRCODE = 'unique_violation', "
        "MESSAGE = format('duplicate key value violates unique constraint \"%s\"', {constraint}), "
        "DETAIL = format('Key (%s)=(%s) already exists.', {key_names}, concat_ws(', ', {key_text})), "
        "CONSTRAINT = {constraint}, TABLE = {table}, SCHEMA = {schema};"
    ).format(
        constraint=sql.Literal(layout.key_constraint),
        key_names=sql.Literal(", ".join(layout.key_columns)),
        key_text=key_text,
        table=sql.Literal(layout.view_name),
        schema=sql.Literal(layout.schema),
    )


def trigger_function(layout: TableLayout, config: CowConfig) -> sql.Composed:
    always_identity = any(c.identity == "a" for c in layout.columns)
    keys = layout.key_columns
    key_changed = sql.SQL("ROW({}) IS DISTINCT FROM ROW({})").format(
        _ident_list(keys, "new"), _ident_list(keys, "old")
    )
    return sqlfiles.template("table_trigger.sql").format(
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
        put_new_live=_put(layout, "new", False, "has_cur", "cur", "existed", "before"),
        put_old_dead=_put(layout, "old", True, "has_cur", "cur", "existed", "before"),
        put_new_live_at_new_key=_put(
            layout, "new", False, "has_cur2", "cur2", "existed2", "before2"
        ),
    )


def trigger(layout: TableLayout) -> sql.Composed:
    return sql.SQL(
        "CREATE TRIGGER {} INSTEAD OF INSERT OR UPDATE OR DELETE ON {} "
        "FOR EACH ROW EXECUTE FUNCTION {}()"
    ).format(layout.trigger_name, layout.view, layout.function)
