"""A stand-in for overlay mode that needs no engine: ``public.items`` holds rows A, and
``public_cow.items`` (where the overlay view would be) rows B. A connection that reads B
from the unqualified ``items`` looks through the overlay schema.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from cowsync.overlay_path import UNBOUND_SEARCH_PATH


def make_stand_in(
    conn: psycopg.Connection[Any],
    overlay: str | None = "public_cow",
    rows: str = "B",
    table: str = "items",
) -> None:
    """``public.<table>`` holds A (made once); ``<overlay>.<table>`` (when given) ``rows``."""
    name = sql.Identifier(table)
    conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS public.{} (v text)").format(name))
    if not conn.execute(sql.SQL("SELECT 1 FROM public.{}").format(name)).fetchone():
        conn.execute(sql.SQL("INSERT INTO public.{} VALUES ('A')").format(name))
    if overlay is not None:
        schema = sql.Identifier(overlay)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        conn.execute(sql.SQL("CREATE TABLE {}.{} (v text)").format(schema, name))
        conn.execute(sql.SQL("INSERT INTO {}.{} VALUES (%s)").format(schema, name), [rows])


def seen(conn: psycopg.Connection[Any], table: str = "items") -> list[str]:
    """The rows the unqualified ``table`` shows on ``conn``."""
    query = sql.SQL("SELECT v FROM {} ORDER BY v").format(sql.Identifier(table))
    return [row[0] for row in conn.execute(query)]


def search_path(conn: psycopg.Connection[Any]) -> str:
    """``SHOW search_path`` on ``conn``."""
    row = conn.execute("SHOW search_path").fetchone()
    assert row is not None
    return str(row[0])


def saved_path(conn: psycopg.Connection[Any]) -> str:
    """``cowsync.unbound_search_path`` on ``conn`` ('' when unset)."""
    row = conn.execute(
        "SELECT coalesce(current_setting(%s, true), '')", [UNBOUND_SEARCH_PATH]
    ).fetchone()
    assert row is not None
    return str(row[0])
