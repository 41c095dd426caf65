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
    # The table's inheritable CHECK constraints, as they are (NOT VALID ones stay so: a
    # valid parent constraint over a NOT VALID one of the table is refused), printed
    # with the engine's search_path so every name in them is qualified.
    with pinned_search_path(conn):
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
