"""Schema changes and TRUNCATE on enabled tables.

PostgreSQL cannot ALTER or TRUNCATE a view, so these helpers apply the change to
the base and keep the view, change store and trigger in step, in one transaction.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from . import catalog, overlay, render
from .errors import NotEnabledError, PendingChangesError
from .install import (
    _apply_decorations,
    _build_layout,
    _install_table_objects,
    _layout_from_row,
    _lock,
    _pending,
    _read_decorations,
    _refresh_triggers,
    _registry_row,
    _require_deployed,
    own_ddl,
)
from .names import parse_table_name


def alter(
    conn: psycopg.Connection, table: str | tuple[str, str], actions: str | None = None
) -> None:
    """Run ``ALTER TABLE <base> <actions>`` on an enabled table and rebuild its view.

    ``actions`` is the part after the table name, e.g. ``"ADD COLUMN note text"``
    or ``"RENAME COLUMN qty TO quantity"``; it is DDL from the developer, not data.
    The change store inherits from the base, so added, dropped, renamed and retyped
    columns reach it too; session rows keep their data. A change that removes a
    column, or changes the row key, while sessions hold changes is refused with
    :class:`PendingChangesError`: commit or discard them first.

    With ``actions=None`` nothing is altered: the view, change-store indexes and
    trigger are rebuilt from the base as it is now (see :func:`refresh`).

    >>> cowsync.alter(conn, "items", "ADD COLUMN note text DEFAULT ''")  # doctest: +SKIP
    """
    name = parse_table_name(table)
    with conn.transaction():
        config = _require_deployed(conn)
        _lock(conn)
        own_ddl(conn)
        row = _registry_row(conn, name)
        if row is None:
            raise NotEnabledError(
                f"{name} is not COW-enabled; alter it with a plain ALTER TABLE statement"
            )
        registry_id, schema, view_name, base_name, changes_name = (
            int(row[0]),  # type: ignore[call-overload]
            str(row[1]),
            str(row[2]),
            str(row[3]),
            str(row[4]),
        )
        label = f"{schema}.{view_name}"
        before = _layout_from_row(conn, row)
        store_schema = before.store_schema
        view_oid = _oid(conn, store_schema, view_name)
        decorations = _read_decorations(conn, view_oid)
        # Keep the view's owner: a hardened view's is not the table's (see cowsync.harden).
        view_owner = conn.execute(
            "SELECT pg_catalog.pg_get_userbyid(relowner) FROM pg_class WHERE oid = %s",
            (view_oid,),
        ).fetchone()
        conn.execute(sql.SQL("DROP VIEW {}").format(before.view))
        if before.overlay:  # the table alone takes the change, as a plain table would
            overlay.detach(conn, before.base, before.parent)
        if actions is not None:
            conn.execute(
                sql.SQL("ALTER TABLE {} {}").format(
                    sql.Identifier(schema, base_name),
                    sql.SQL(actions),  # developer-supplied DDL, like a migration
                )
            )
        info = catalog.describe(conn, _oid(conn, schema, base_name))
        if not info.key_columns or info.key_constraint is None:
            raise NotEnabledError(f"after this change {label} would have no key; add one")
        sessions = _pending(conn, before.changes)
        lost = set(before.column_names) - {c.name for c in info.columns}
        renamed = _renames(before, info)
        lost -= set(renamed)
        key_changed = tuple(info.key_columns) != tuple(
            renamed.get(k, k) for k in before.key_columns
        )
        if sessions and (lost or key_changed):
            what = f"drops column(s) {', '.join(sorted(lost))}" if lost else "changes the row key"
            raise PendingChangesError(
                f"altering {label} {what}, which would lose changes that sessions "
                f"({', '.join(sessions[:5])}) hold: commit or discard them first",
                {label: sessions},
            )
        if key_changed:
            conn.execute(
                "UPDATE cowsync.tables SET key_columns = %s, key_constraint = %s WHERE id = %s",
                (info.key_columns, info.key_constraint, registry_id),
            )
            conn.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
                    before.changes,
                    sql.Identifier(f"cowsync_{registry_id}_history"),
                )
            )
            conn.execute(
                sql.SQL("DROP INDEX IF EXISTS {}").format(
                    sql.Identifier(store_schema, f"cowsync_{registry_id}_current")
                )
            )
        if before.overlay:
            overlay.follow_table(
                conn, before.base, before.parent, list(before.columns), info.columns, renamed
            )
        layout = _build_layout(
            conn,
            registry_id,
            schema,
            view_name,
            base_name,
            changes_name,
            tuple(info.key_columns),
            info.key_constraint,
            before.view_schema,
            before.parent_name,
        )
        if key_changed:
            for statement in render.changes_key_indexes(layout):
                conn.execute(statement)
        added = [c for c in layout.column_names if c not in before.column_names]
        added = [c for c in added if c not in renamed.values()]
        _rename_before_images(conn, layout, renamed, added)
        _install_table_objects(conn, layout, config, replace=False)
        _apply_decorations(conn, layout, decorations)
        owner = view_owner[0] if view_owner else info.owner
        if owner:
            conn.execute(
                sql.SQL("ALTER VIEW {} OWNER TO {}").format(layout.view, sql.Identifier(owner))
            )
        _refresh_triggers(conn, config)


def refresh(conn: psycopg.Connection, table: str | tuple[str, str]) -> None:
    """Rebuild an enabled table's view and trigger after a change made to its base
    directly (e.g. ``CREATE UNIQUE INDEX … ON items_base``), so sessions honour it."""
    alter(conn, table, None)


def _oid(conn: psycopg.Connection, schema: str, name: str) -> int:
    row = conn.execute(
        "SELECT c.oid::int FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _renames(before: render.TableLayout, info: catalog.TableInfo) -> dict[str, str]:
    """Columns renamed by the change, matched by position among surviving columns.

    PostgreSQL keeps a column's attnum across RENAME; catalog.describe lists columns
    in attnum order, so a column present before whose name vanished and whose slot
    now holds a new name that did not exist before was renamed.
    """
    old = before.column_names
    new = [c.name for c in info.columns]
    vanished = [c for c in old if c not in new]
    appeared = [c for c in new if c not in old]
    renames = {}
    for name in vanished:
        index = old.index(name)
        if index < len(new) and new[index] in appeared:
            renames[name] = new[index]
    return renames


def _rename_before_images(
    conn: psycopg.Connection,
    layout: render.TableLayout,
    renamed: dict[str, str],
    added: list[str],
) -> None:
    """Keep the base images sessions recorded in step with the new columns: renamed
    and retyped ones keep their values, added ones take the base row's new value
    (so an added column with a default is not mistaken for a session change)."""
    for old, new in renamed.items():
        conn.execute(
            sql.SQL(
                "UPDATE ONLY {} SET _cow_before = (_cow_before - %(old)s::text) "
                "|| pg_catalog.jsonb_build_object(%(new)s::text, _cow_before -> %(old)s::text) "
                "WHERE _cow_before ? %(old)s::text"
            ).format(layout.changes),
            {"old": old, "new": new},
        )
    for column in added:
        conn.execute(
            sql.SQL(
                "UPDATE ONLY {changes} AS c SET _cow_before = c._cow_before "
                "|| pg_catalog.jsonb_build_object(%(col)s::text, pg_catalog.to_jsonb(b.{col})) "
                "FROM ONLY {base} AS b WHERE {match} AND c._cow_before IS NOT NULL"
            ).format(
                changes=layout.changes,
                col=sql.Identifier(column),
                base=layout.base,
                match=sql.SQL(" AND ").join(
                    sql.SQL("c.{k} = b.{k}").format(k=sql.Identifier(k)) for k in layout.key_columns
                ),
            ),
            {"col": column},
        )
    conn.execute(
        sql.SQL(
            "UPDATE ONLY {} SET _cow_before = "
            "pg_catalog.to_jsonb(pg_catalog.jsonb_populate_record(NULL::{}, _cow_before)) "
            "WHERE _cow_before IS NOT NULL"
        ).format(layout.changes, layout.base)
    )


def truncate(conn: psycopg.Connection, table: str | tuple[str, str]) -> int:
    """Empty an enabled table as the connection sees it (PostgreSQL cannot TRUNCATE a view).

    With no session this truncates the base (``TRUNCATE ONLY``, so sessions keep their
    changes). In a session it deletes every row the session sees, through the view,
    so the session shows an empty table and a commit deletes them from the base.
    Returns the number of rows removed (-1 when the base was truncated).

    Like ``TRUNCATE`` of one table, it refuses a table that another table references
    with a foreign key, in both modes and before removing anything:
    :class:`psycopg.errors.FeatureNotSupported` (``0A000``), as PostgreSQL raises.
    """
    name = parse_table_name(table)
    config = _require_deployed(conn)
    row = _registry_row(conn, name)
    if row is None:
        raise NotEnabledError(f"{name} is not COW-enabled; use TRUNCATE")
    schema, view_name, base_name = str(row[1]), str(row[2]), str(row[3])
    view_schema = str(row[10]) if row[10] is not None else schema  # overlay: its own schema
    _refuse_if_referenced(conn, schema, view_name, base_name)
    session = conn.execute(
        "SELECT coalesce(pg_catalog.current_setting(%s, true), '')", (config.session_variable,)
    ).fetchone()
    if session and session[0]:
        return conn.execute(
            sql.SQL("DELETE FROM {}").format(sql.Identifier(view_schema, view_name))
        ).rowcount
    conn.execute(sql.SQL("TRUNCATE ONLY {}").format(sql.Identifier(schema, base_name)))
    return -1


def _refuse_if_referenced(
    conn: psycopg.Connection, schema: str, view_name: str, base_name: str
) -> None:
    """Raise ``0A000`` as ``TRUNCATE`` does when a foreign key of another table
    references the base (PostgreSQL refuses unless every referencing table is
    truncated in the same command, and this helper empties one table).

    The check mirrors PostgreSQL's: any foreign key, validated or not, whatever its
    rows; a table referencing itself does not count. Referencing tables are named
    as their users know them (the view of an enabled table, not its base). The
    error is raised by the server so the caller gets a real server error (SQLSTATE,
    detail and hint in ``diag``; the transaction aborted), as with ``TRUNCATE``.
    """
    rows = conn.execute(
        """
        SELECT n.nspname, coalesce(t.table_name, c.relname)
        FROM pg_catalog.pg_constraint k
        JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN cowsync.tables t ON t.schema_name = n.nspname AND t.base_name = c.relname
        WHERE k.contype = 'f' AND k.confrelid = %s AND k.conrelid <> k.confrelid
        GROUP BY 1, 2 ORDER BY n.nspname <> %s, 1, 2
        """,
        (_oid(conn, schema, base_name), schema),
    ).fetchall()
    if not rows:
        return
    # Named as PostgreSQL's detail names them, schema-qualified only from other schemas.
    names = [f'"{n}"' if s == schema else f'"{s}.{n}"' for s, n in rows]
    target = f'"{view_name}"'
    if len(names) == 1:
        detail = f"Table {names[0]} references {target}."
    else:
        detail = f"Tables {', '.join(names)} reference {target}."
    delete = sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, view_name))
    hint = (
        "cowsync.truncate empties one table, so it cannot truncate the referencing "
        f"tables with it: use {delete.as_string(conn)} instead (the rows of "
        f"{', '.join(names)} that reference it must go first unless their foreign key cascades)."
    )
    body = sql.SQL(
        "BEGIN RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', "
        "MESSAGE = {}, DETAIL = {}, HINT = {}; END"
    ).format(
        sql.Literal("cannot truncate a table referenced in a foreign key constraint"),
        sql.Literal(detail),
        sql.Literal(hint),
    )
    # DO takes no parameters; the texts are quoted literals, as in render.py's bodies.
    conn.execute(sql.SQL("DO {}").format(sql.Literal(body.as_string(conn))))
