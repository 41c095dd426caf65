"""The undo log of :func:`cowsync.harden`, kept true when a table is disabled.

``harden`` records, in ``cowsync.hardening_log``, the statements that give back what it
took (grants on the base, the change store and the view, the view's owner), naming
each relation as it was then. ``disable`` drops the view and the change store and
renames the base back to the table's name, so ``unharden`` would then replay
statements on relations that are gone or renamed.
"""

from __future__ import annotations

import psycopg
from psycopg import sql


def retarget_after_disable(
    conn: psycopg.Connection, schema: str, view_name: str, base_name: str, changes_name: str
) -> None:
    """Forget what the log says about the dropped view and change store, and point what it
    says about the base at the table's own name again."""
    view, base, changes = (
        sql.Identifier(schema, name).as_string(conn)
        for name in (view_name, base_name, changes_name)
    )
    # Names are quoted identifiers, so `"s"."items"` never matches inside `"s"."items_base"`.
    conn.execute(
        "DELETE FROM cowsync.hardening_log "
        "WHERE strpos(undo_sql, %(view)s) > 0 OR strpos(undo_sql, %(changes)s) > 0",
        {"view": view, "changes": changes},
    )
    conn.execute(
        "UPDATE cowsync.hardening_log SET undo_sql = replace(undo_sql, %(base)s, %(view)s) "
        "WHERE strpos(undo_sql, %(base)s) > 0",
        {"base": base, "view": view},
    )


def forget_after_overlay_disable(
    conn: psycopg.Connection, view_schema: str, view_name: str, changes_name: str
) -> None:
    """Forget what the log says about an overlay table's dropped view and change store
    (the table itself keeps its name, so what the log says about it stays true)."""
    view, changes = (
        sql.Identifier(view_schema, name).as_string(conn) for name in (view_name, changes_name)
    )
    conn.execute(
        "DELETE FROM cowsync.hardening_log "
        "WHERE strpos(undo_sql, %(view)s) > 0 OR strpos(undo_sql, %(changes)s) > 0",
        {"view": view, "changes": changes},
    )
