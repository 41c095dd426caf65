"""The one-statement commit of a whole session.

:func:`~cowsync.apply.commit` tries this first for the common case, the whole session
with ``on_conflict="abort"`` (and nothing written after the review it was given): one
statement of data-modifying CTEs applies every table's net effect, guarded against base
rows that changed, and removes the session's rows. commit() already holds the session's
write lock, so nothing the statement reads can change under it. When a guarded row
changed or a value clashes, nothing is done and commit() takes the per-table path
(:mod:`cowsync.commit_tables`)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from .commit_tables import FastPathMiss, apply_query, row_image
from .registry import EnabledTable

_KIND_OF_CURRENT_ROW = (
    "CASE WHEN NOT c._cow_existed AND NOT c._cow_deleted THEN 'insert' "
    "WHEN c._cow_existed AND c._cow_deleted THEN 'delete' "
    "WHEN c._cow_existed AND {image} IS DISTINCT FROM c._cow_before THEN 'update' "
    "ELSE 'none' END"
)


def _whole_session_statement(
    ordered: list[EnabledTable],
) -> tuple[sql.Composed, list[tuple[str, str]]]:
    """One statement applying a quiet session's whole net effect and removing it.

    Per table a materialised net (the current row of each key, classified), then a
    guarded DELETE, UPDATE and INSERT of the base and a DELETE of the session's rows,
    as data-modifying CTEs. Foreign keys are checked at the end of the statement, so
    the order of tables does not matter; the outer SELECT reads the results deletes
    first, then updates, then inserts (the order they run in), so a unique value the
    session freed can be reused. It returns, per (table, kind), the rows the net
    expects and the rows the statement touched.
    """
    ctes: list[sql.Composable] = []
    reads: dict[str, list[sql.Composable]] = {"delete": [], "update": [], "insert": []}
    order: dict[str, list[tuple[str, str]]] = {"delete": [], "update": [], "insert": []}
    for i, t in enumerate(ordered):
        net = sql.Identifier(f"net_{i}")
        ctes.append(
            sql.SQL(
                "{net} AS MATERIALIZED (SELECT {c_cols}, c._cow_before, {kind} AS _cow_kind "
                "FROM ONLY {changes} AS c WHERE c._cow_session = %(sid)s AND c._cow_current)"
            ).format(
                net=net,
                c_cols=t.cols("c"),
                kind=sql.SQL(_KIND_OF_CURRENT_ROW).format(image=row_image(t, "c")),
                changes=t.changes,
            )
        )
        statements = {
            kind: query
            for kind in ("delete", "update", "insert")
            if (query := apply_query(t, kind, net, "_cow_before", returning=True)) is not None
        }
        for kind, statement in statements.items():
            done = sql.Identifier(f"{kind}_{i}")
            ctes.append(sql.SQL("{} AS ({})").format(done, statement))
            reads[kind].append(
                sql.SQL(
                    "(SELECT pg_catalog.count(*) FROM {net} WHERE _cow_kind = {kind}), "
                    "(SELECT pg_catalog.count(*) FROM {done})"
                ).format(net=net, kind=sql.Literal(kind), done=done)
            )
            order[kind].append((t.label, kind))
        ctes.append(
            sql.SQL("{} AS (DELETE FROM ONLY {} WHERE _cow_session = %(sid)s)").format(
                sql.Identifier(f"settle_{i}"), t.changes
            )
        )
    # Children's deletes first, as the statement-per-kind path reports them. One array,
    # not a column each: a select list holds at most 1664 entries (some 277 tables).
    columns = reads["delete"][::-1] + reads["update"] + reads["insert"]
    query = sql.SQL("WITH {} SELECT ARRAY[{}]").format(
        sql.SQL(", ").join(ctes), sql.SQL(", ").join(columns)
    )
    return query, order["delete"][::-1] + order["update"] + order["insert"]


def commit_whole_session(
    conn: psycopg.Connection, ordered: list[EnabledTable], session_id: str
) -> list[tuple[str, str, int]] | None:
    """The common commit (whole session, ``on_conflict="abort"``) in one statement.

    The caller holds the session's write lock. Returns ``None`` with nothing done when
    a guarded row changed in the base or a value clashes (deferred constraints included:
    they are checked here); the caller then takes the general path, which reports
    conflicts and errors in detail. A deadlock with an agent transaction propagates:
    commit() gives way. Else returns (table, kind, rows applied) in the order the
    statement applied them.
    """
    if not ordered:
        return None
    query, order = _whole_session_statement(ordered)
    try:
        with conn.transaction():
            row = conn.execute(query, {"sid": session_id}).fetchone()
            assert row is not None
            counts: list[int] = row[0]
            if counts[0::2] != counts[1::2]:
                raise FastPathMiss
            # Deferred constraints too, inside the savepoint: a deferrable key that
            # production inserted meanwhile is a conflict for the general path to report.
            conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
    except (FastPathMiss, psycopg.errors.IntegrityError):
        return None
    return [(label, kind, count) for (label, kind), count in zip(order, counts[1::2])]
