"""Overlay mode: what it adds around a table that stays where it is.

The table keeps its name, schema and data, and production keeps using it directly. An
overlay schema holds the table's view (same name), change store and an empty parent
table: the table and its change store both inherit from the parent (``ALTER TABLE ...
INHERIT`` is a catalog change, no rewrite), so the view scans one relation, the parent,
and ``FOR UPDATE`` works through it, while a query on the table itself never reads the
change store (inheritance goes down, not up). A statement-level trigger on the table
refuses writes from a connection bound to a session: bound connections write through
the view. It is a safety net for well-meaning code; hardened agent roles hold no
privilege on the table at all.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from .catalog import Column
from .config import CowConfig
from .errors import ConfigurationError
from .search_path import pinned_search_path

PARENT_SUFFIX = "_parent"
GUARD_TRIGGER = "cowsync_bound_guard"


def prepare_schema(
    conn: psycopg.Connection, schema: str, view_schema: str, names: list[str]
) -> None:
    """Create the overlay schema if needed; refuse names already taken in it."""
    if view_schema == schema:
        raise ConfigurationError(
            f"the overlay schema must differ from the table's schema ({schema!r})"
        )
    if view_schema in ("cowsync", "pg_catalog", "information_schema") or view_schema.startswith(
        "pg_"
    ):
        raise ConfigurationError(f"{view_schema!r} cannot be an overlay schema")
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(view_schema)))
    # Whoever may use the table's schema may look up names in the overlay schema; what
    # each relation there allows is granted on it (the view carries the table's grants).
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO PUBLIC").format(sql.Identifier(view_schema)))
    taken = conn.execute(
        "SELECT c.relname FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = ANY(%s) ORDER BY 1",
        (view_schema, names),
    ).fetchall()
    if taken:
        raise ConfigurationError(
            f"overlay schema {view_schema} already holds {', '.join(r[0] for r in taken)}: "
            "drop it, or choose another overlay schema (overlay_schema=...)"
        )


def adopt_base(
    conn: psycopg.Connection,
    schema: str,
    name: str,
    view_schema: str,
    parent_name: str,
    owner: str | None,
    config: CowConfig,
    guard: bool = True,
) -> None:
    """Give the table its empty parent and its guard. CHECK constraints are copied to
    the parent (the table keeps its own), so the change store inherits them. The guard's
    WHEN clause keeps an unbound statement from calling the function at all (about half
    of the guard's cost on a production write, bench/view_paths.py)."""
    base = sql.Identifier(schema, name)
    parent = sql.Identifier(view_schema, parent_name)
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE {})").format(parent, base))
    with pinned_search_path(conn):
        _copy_checks(conn, base, parent)
    conn.execute(sql.SQL("REVOKE ALL ON TABLE {} FROM PUBLIC").format(parent))
    if owner:
        conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(parent, sql.Identifier(owner)))
    conn.execute(sql.SQL("ALTER TABLE {} INHERIT {}").format(base, parent))
    if not guard:
        return
    conn.execute(
        sql.SQL(
            "CREATE TRIGGER {} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {} "
            "FOR EACH STATEMENT WHEN (pg_catalog.current_setting({}, true) <> '') "
            "EXECUTE FUNCTION cowsync.refuse_bound_write({}, {})"
        ).format(
            sql.Identifier(GUARD_TRIGGER),
            base,
            sql.Literal(config.session_variable),
            sql.Literal(config.session_variable),
            sql.Literal(f"{view_schema}.{name}"),
        )
    )


def _copy_checks(conn: psycopg.Connection, base: sql.Identifier, parent: sql.Identifier) -> None:
    """The table's inheritable CHECK constraints, onto the parent as they are (NOT VALID
    ones stay so: a valid parent constraint over a NOT VALID one of the table is refused).
    Run with the engine's search_path, so every name in them is printed qualified."""
    checks = conn.execute(
        "SELECT conname, pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'c' AND NOT connoinherit "
        "ORDER BY conname",
        (base.as_string(conn),),
    ).fetchall()
    for constraint, definition in checks:
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                parent, sql.Identifier(constraint), sql.SQL(definition)
            )
        )


def release_base(
    conn: psycopg.Connection, schema: str, name: str, view_schema: str, parent_name: str
) -> None:
    """Take away what :func:`adopt_base` added; the table is as it was."""
    base = sql.Identifier(schema, name)
    parent = sql.Identifier(view_schema, parent_name)
    conn.execute(
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(GUARD_TRIGGER), base)
    )
    conn.execute(sql.SQL("ALTER TABLE {} NO INHERIT {}").format(base, parent))
    conn.execute(sql.SQL("DROP TABLE {}").format(parent))
    # The schema goes with its last table, unless something else lives there.
    conn.execute("SELECT cowsync.drop_empty_overlay_schema(%s)", (view_schema,))


def detach(conn: psycopg.Connection, base: sql.Identifier, parent: sql.Identifier) -> None:
    """Make the table a plain table again for a schema change (``cowsync.alter``): an
    inherited column cannot be dropped, renamed or retyped on the table itself."""
    conn.execute(sql.SQL("ALTER TABLE {} NO INHERIT {}").format(base, parent))


def follow_table(
    conn: psycopg.Connection,
    base: sql.Identifier,
    parent: sql.Identifier,
    before: list[Column],
    after: list[Column],
    renamed: dict[str, str],
) -> None:
    """Change the parent (and through it the change store) as the detached table was
    changed, then attach the table again.

    Columns: renamed ones are renamed, dropped ones dropped, added ones added with the
    table's default for the rows the change store already holds (then without it: the
    view carries the defaults), retyped ones cast to the new type, NOT NULL set or dropped
    as on the table. CHECK constraints: the parent's are replaced by the table's
    inheritable ones, so the change store checks what the table checks.
    """
    old = {c.name: c for c in before}
    new = {c.name: c for c in after}
    statements: list[sql.Composed] = []
    for was, now in renamed.items():
        statements.append(
            sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(
                parent, sql.Identifier(was), sql.Identifier(now)
            )
        )
    kept = {renamed.get(name, name): column for name, column in old.items()}
    for name in kept:
        if name not in new:
            statements.append(
                sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(parent, sql.Identifier(name))
            )
    for name, column in new.items():
        ident = sql.Identifier(name)
        if name not in kept:
            add = sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                parent, ident, sql.SQL(column.type_sql)
            )
            if column.default_sql is not None and not column.generated and not column.identity:
                statements.append(sql.SQL("{} DEFAULT {}").format(add, sql.SQL(column.default_sql)))
                statements.append(
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT").format(parent, ident)
                )
            else:
                statements.append(add)
        elif kept[name].type_sql != column.type_sql:
            statements.append(
                sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING {}::{}").format(
                    parent, ident, sql.SQL(column.type_sql), ident, sql.SQL(column.type_sql)
                )
            )
        was_not_null = kept[name].not_null if name in kept else False
        if column.not_null != was_not_null:
            change = "SET" if column.not_null else "DROP"
            statements.append(
                sql.SQL("ALTER TABLE {} ALTER COLUMN {} {} NOT NULL").format(
                    parent, ident, sql.SQL(change)
                )
            )
    for statement in statements:
        conn.execute(statement)
    with pinned_search_path(conn):
        for (constraint,) in conn.execute(
            "SELECT conname FROM pg_catalog.pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'c'",
            (parent.as_string(conn),),
        ).fetchall():
            conn.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    parent, sql.Identifier(constraint)
                )
            )
        _copy_checks(conn, base, parent)
    conn.execute(sql.SQL("ALTER TABLE {} INHERIT {}").format(base, parent))
