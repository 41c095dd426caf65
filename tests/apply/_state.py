"""Helpers for the review and apply tests: write in a session, and read exact states.

"Exactly as before" is checked on two snapshots: the base tables (``base_state``) and
everything a session holds (``session_state``: its change-store rows, operations and
registry entry, previews included).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

import cowsync
from tests._mode import base_of

SHOP = ("customers", "orders")


def write(
    conn: psycopg.Connection[Any],
    session_id: str,
    operation_id: str,
    statement: str,
    params: Sequence[Any] | dict[str, Any] | None = None,
) -> list[tuple[Any, ...]]:
    """Run one statement in ``session_id``/``operation_id``; return its rows, if any."""
    with cowsync.session(conn, session_id, operation_id):
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def rows(
    conn: psycopg.Connection[Any], table: str, session_id: str | None = None
) -> list[tuple[Any, ...]]:
    """The rows of ``table`` as production (no session) or ``session_id`` sees them."""
    query = sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier(table))
    if session_id is None:
        return conn.execute(query).fetchall()
    with cowsync.session(conn, session_id):
        return conn.execute(query).fetchall()


def base_rows(conn: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    """The rows of ``table``'s base relation itself (``<table>_base`` in place, the table
    itself in overlay mode), by key."""
    return conn.execute(
        sql.SQL("SELECT * FROM ONLY {} ORDER BY 1").format(base_of(conn, table))
    ).fetchall()


def base_state(
    conn: psycopg.Connection[Any], tables: Iterable[str] = SHOP
) -> dict[str, list[tuple[Any, ...]]]:
    """Every base table's rows."""
    return {t: base_rows(conn, t) for t in tables}


def session_state(conn: psycopg.Connection[Any], session_id: str) -> dict[str, Any]:
    """Everything the engine holds for a session: change-store rows of every enabled
    table (the session's own and its previews'), its operations and its registry rows."""
    state: dict[str, Any] = {}
    stores = conn.execute(
        "SELECT coalesce(view_schema, schema_name), changes_name FROM cowsync.tables ORDER BY id"
    ).fetchall()
    for schema, changes in stores:
        state[changes] = conn.execute(
            sql.SQL(
                "SELECT c::text FROM ONLY {} AS c "
                "WHERE c._cow_session = %(sid)s OR c._cow_session LIKE %(previews)s "
                "ORDER BY c::text"
            ).format(sql.Identifier(schema, changes)),
            {"sid": session_id, "previews": session_id + "~%"},
        ).fetchall()
    state["operations"] = conn.execute(
        "SELECT o::text FROM cowsync.operations o WHERE session_id = %s ORDER BY o::text",
        [session_id],
    ).fetchall()
    state["sessions"] = conn.execute(
        "SELECT s::text FROM cowsync.sessions s WHERE session_id = %s OR preview_of = %s "
        "ORDER BY s::text",
        [session_id, session_id],
    ).fetchall()
    return state


def change_store_sessions(conn: psycopg.Connection[Any]) -> set[str]:
    """Every session id (previews included) that has rows in any change store."""
    found: set[str] = set()
    stores = conn.execute(
        "SELECT coalesce(view_schema, schema_name), changes_name FROM cowsync.tables"
    ).fetchall()
    for schema, changes in stores:
        found.update(
            r[0]
            for r in conn.execute(
                sql.SQL("SELECT DISTINCT _cow_session FROM ONLY {}").format(
                    sql.Identifier(schema, changes)
                )
            )
        )
    return found


def session_ids(conn: psycopg.Connection[Any]) -> list[str]:
    """The ids ``cowsync.sessions`` lists, in its order."""
    return [s.session_id for s in cowsync.sessions(conn)]
