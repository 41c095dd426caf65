"""Reviewing sessions: what they are, their operations, dependencies and row diff."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import sql

from .config import validate_id
from .registry import EnabledTable, enabled_tables, foreign_keys, require_engine
from .review_token import ReviewToken, take_watermark

ChangeKind = Literal["insert", "update", "delete"]


@dataclass(frozen=True)
class SessionInfo:
    """A session with pending changes (or an annotated one)."""

    session_id: str
    created_at: datetime
    last_write_at: datetime | None
    tables: tuple[str, ...]
    operations: int
    rows: int
    label: str | None
    metadata: dict[str, Any]
    sealed: bool = False  # a reviewer sealed it: it refuses writes (cowsync.seal)


@dataclass(frozen=True)
class OperationInfo:
    """One operation of a session, with what it wrote."""

    operation_id: str
    first_write_at: datetime
    last_write_at: datetime | None
    tables: tuple[str, ...]
    inserted: int
    updated: int
    deleted: int


@dataclass(frozen=True)
class RowChange:
    """The net change of one row: base at first touch (``before``) against the session."""

    table: str
    key: dict[str, Any]
    kind: ChangeKind
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    changed: tuple[str, ...]
    operation: str


@dataclass
class _TableCounts:
    last: datetime | None = None
    rows: int = 0
    tables: set[str] = field(default_factory=set)


def annotate(
    conn: psycopg.Connection,
    session_id: str,
    label: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Attach a label and JSON metadata to a session (created if new).

    Metadata is merged into what the session already carries.

    >>> cowsync.annotate(conn, sid, label="nightly", metadata={"agent": "x"})  # doctest: +SKIP
    """
    require_engine(conn)
    validate_id(session_id, "session id")
    conn.execute(
        """
        INSERT INTO cowsync.sessions (session_id, label, metadata)
        VALUES (%(sid)s, %(label)s, coalesce(%(meta)s::jsonb, '{}'::jsonb))
        ON CONFLICT (session_id) DO UPDATE
        SET label = coalesce(%(label)s, cowsync.sessions.label),
            metadata = cowsync.sessions.metadata || coalesce(%(meta)s::jsonb, '{}'::jsonb)
        """,
        {
            "sid": session_id,
            "label": label,
            "meta": None if metadata is None else json.dumps(dict(metadata), default=str),
        },
    )


def sessions(conn: psycopg.Connection) -> list[SessionInfo]:
    """Every session that has pending changes or was annotated, oldest first."""
    tables = enabled_tables(conn)
    counts: dict[str, _TableCounts] = defaultdict(_TableCounts)
    if tables:
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL(
                "SELECT _cow_session, {label}, max(_cow_written_at), "
                "count(*) FILTER (WHERE _cow_current AND (_cow_existed OR NOT _cow_deleted)) "
                "FROM ONLY {changes} GROUP BY _cow_session"
            ).format(label=sql.Literal(t.label), changes=t.changes)
            for t in tables
        )
        for sid, label, last, rows in conn.execute(query):
            entry = counts[sid]
            entry.rows += rows
            entry.tables.add(label)
            if last is not None and (entry.last is None or last > entry.last):
                entry.last = last
    registry = conn.execute(
        """
        SELECT s.session_id, s.created_at, s.label, s.metadata,
               (SELECT pg_catalog.count(*) FROM cowsync.operations o
                WHERE o.session_id = s.session_id),
               s.sealed_at IS NOT NULL
        FROM cowsync.sessions s
        WHERE s.preview_of IS NULL
        ORDER BY s.created_at, s.session_id
        """
    ).fetchall()
    result = []
    for sid, created, label, metadata, n_ops, sealed in registry:
        entry = counts.get(sid, _TableCounts())
        result.append(
            SessionInfo(
                session_id=sid,
                created_at=created,
                last_write_at=entry.last,
                tables=tuple(sorted(entry.tables)),
                operations=n_ops,
                rows=entry.rows,
                label=label,
                metadata=metadata or {},
                sealed=sealed,
            )
        )
    return result


def operations(conn: psycopg.Connection, session_id: str) -> list[OperationInfo]:
    """The operations of a session in order of their first write."""
    tables = enabled_tables(conn)
    stats: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"last": None, "tables": set(), "inserted": 0, "updated": 0, "deleted": 0}
    )
    if tables:
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL(
                """
                SELECT _cow_operation, {label}, max(_cow_written_at),
                       count(*) FILTER (WHERE NOT _cow_deleted AND first_toucher
                                        AND NOT _cow_existed),
                       count(*) FILTER (WHERE NOT _cow_deleted
                                        AND NOT (first_toucher AND NOT _cow_existed)),
                       count(*) FILTER (WHERE _cow_deleted)
                FROM (
                    SELECT c.*, c._cow_first_seq = min(c._cow_first_seq)
                                OVER (PARTITION BY {keys}) AS first_toucher
                    FROM ONLY {changes} AS c WHERE c._cow_session = %(sid)s
                ) AS h
                GROUP BY _cow_operation
                """
            ).format(label=sql.Literal(t.label), keys=t.keys("c"), changes=t.changes)
            for t in tables
        )
        for op, label, last, ins, upd, dele in conn.execute(query, {"sid": session_id}):
            entry = stats[op]
            entry["tables"].add(label)
            entry["inserted"] += ins
            entry["updated"] += upd
            entry["deleted"] += dele
            if last is not None and (entry["last"] is None or last > entry["last"]):
                entry["last"] = last
    registry = conn.execute(
        "SELECT operation_id, created_at FROM cowsync.operations WHERE session_id = %s "
        "ORDER BY first_seq",
        (session_id,),
    ).fetchall()
    return [
        OperationInfo(
            operation_id=op,
            first_write_at=created,
            last_write_at=stats[op]["last"] if op in stats else None,
            tables=tuple(sorted(stats[op]["tables"])) if op in stats else (),
            inserted=stats[op]["inserted"] if op in stats else 0,
            updated=stats[op]["updated"] if op in stats else 0,
            deleted=stats[op]["deleted"] if op in stats else 0,
        )
        for op, created in registry
    ]


operations_of = operations  # review() has a parameter named operations


def _dependency_query(tables: list[EnabledTable], conn: psycopg.Connection) -> sql.Composed:
    """Pairs (operation, operation it depends on) of one session, across all tables."""
    parts: list[sql.Composable] = []
    for t in tables:
        # Same row: x depends on y when y wrote the key before x's last write of it.
        parts.append(
            sql.SQL(
                "SELECT x._cow_operation, y._cow_operation FROM ONLY {c} AS x "
                "JOIN ONLY {c} AS y ON {match} AND y._cow_session = x._cow_session "
                "AND y._cow_operation <> x._cow_operation AND y._cow_first_seq < x._cow_seq "
                "WHERE x._cow_session = %(sid)s"
            ).format(c=t.changes, match=t.key_match("x", "y"))
        )
    for fk in foreign_keys(conn, tables):
        child_to_parent = sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier("x", cc), sql.Identifier("y", pc))
            for cc, pc in zip(fk.child_columns, fk.parent_columns)
        )
        # A live child row written after its parent was inserted in the session.
        parts.append(
            sql.SQL(
                "SELECT x._cow_operation, y._cow_operation FROM ONLY {child} AS x "
                "JOIN ONLY {parent} AS y ON {match} AND y._cow_session = x._cow_session "
                "AND NOT y._cow_existed AND NOT y._cow_deleted "
                "AND y._cow_operation <> x._cow_operation AND y._cow_first_seq < x._cow_seq "
                "WHERE x._cow_session = %(sid)s AND NOT x._cow_deleted"
            ).format(child=fk.child.changes, parent=fk.parent.changes, match=child_to_parent)
        )
        # A parent deleted after a child that referenced it (at any point of the
        # session, or in the base) was written: the child's writers go first.
        refs_now = sql.SQL(" AND ").join(
            sql.SQL("z.{} = x.{}").format(sql.Identifier(cc), sql.Identifier(pc))
            for cc, pc in zip(fk.child_columns, fk.parent_columns)
        )
        refs_before = sql.SQL(" AND ").join(
            sql.SQL("(z._cow_before ->> {}) = x.{}::text").format(
                sql.Literal(cc), sql.Identifier(pc)
            )
            for cc, pc in zip(fk.child_columns, fk.parent_columns)
        )
        # One part per way of referencing, each an equality join: an OR of the two
        # would compare every deleted parent with every child row of the session.
        for refs in (refs_now, refs_before):
            parts.append(
                sql.SQL(
                    "SELECT x._cow_operation, y._cow_operation FROM ONLY {parent} AS x "
                    "JOIN ONLY {child} AS z ON z._cow_session = x._cow_session AND {refs} "
                    "JOIN ONLY {child} AS y ON y._cow_session = x._cow_session AND {same_key} "
                    "AND y._cow_operation <> x._cow_operation AND y._cow_first_seq < x._cow_seq "
                    "WHERE x._cow_session = %(sid)s AND x._cow_deleted"
                ).format(
                    parent=fk.parent.changes,
                    child=fk.child.changes,
                    refs=refs,
                    same_key=fk.child.key_match("y", "z"),
                )
            )
    return sql.SQL("SELECT DISTINCT * FROM ({}) AS deps").format(sql.SQL(" UNION ALL ").join(parts))


def dependencies(conn: psycopg.Connection, session_id: str) -> dict[str, set[str]]:
    """``{operation: {operations it depends on}}`` for every operation of the session.

    B depends on A when B wrote a row A wrote before it, when B wrote a row whose
    foreign key points at a row A inserted, or when B deleted a row that A's
    earlier write stopped referencing (so A must be applied first).
    """
    tables = enabled_tables(conn)
    result: dict[str, set[str]] = {
        op: set()
        for (op,) in conn.execute(
            "SELECT operation_id FROM cowsync.operations WHERE session_id = %s ORDER BY first_seq",
            (session_id,),
        )
    }
    if not tables:
        return result
    for op, needs in conn.execute(_dependency_query(tables, conn), {"sid": session_id}):
        result.setdefault(op, set()).add(needs)
        result.setdefault(needs, set())
    return result


def net_rows(
    table: EnabledTable, operations: Iterable[str] | None, watermark: int | None = None
) -> tuple[sql.Composable, dict[str, Any]]:
    """The latest row per key among the chosen operations (all when None).

    With a review ``watermark`` (see :mod:`cowsync.review_token`), only writes numbered
    up to it count, and a key that a chosen operation rewrote after it is left out
    (what the review showed of it is gone). Parameters: ``sid`` and, when filtering,
    ``ops`` and ``wm``.
    """
    params: dict[str, Any] = {}
    if operations is None and watermark is None:
        # The whole session: the current row of each key is its latest write.
        return (
            sql.SQL(
                "SELECT c.* FROM ONLY {changes} AS c "
                "WHERE c._cow_session = %(sid)s AND c._cow_current"
            ).format(changes=table.changes),
            params,
        )
    filters: list[sql.Composable] = []
    if operations is not None:
        filters.append(sql.SQL(" AND c._cow_operation = ANY(%(ops)s)"))
        params["ops"] = list(operations)
    if watermark is not None:
        params["wm"] = watermark
        filters.append(
            sql.SQL(
                " AND c._cow_seq <= %(wm)s AND NOT EXISTS (SELECT 1 FROM ONLY {changes} AS s "
                "WHERE s._cow_session = %(sid)s AND {match}{s_ops} "
                "AND s._cow_first_seq <= %(wm)s AND s._cow_seq > %(wm)s)"
            ).format(
                changes=table.changes,
                match=table.key_match("s", "c"),
                s_ops=sql.SQL(" AND s._cow_operation = ANY(%(ops)s)")
                if operations is not None
                else sql.SQL(""),
            )
        )
    query = sql.SQL(
        "SELECT DISTINCT ON ({keys}) c.* FROM ONLY {changes} AS c "
        "WHERE c._cow_session = %(sid)s{filters} ORDER BY {keys}, c._cow_seq DESC"
    ).format(keys=table.keys("c"), changes=table.changes, filters=sql.Composed(filters))
    return query, params


def diff(
    conn: psycopg.Connection,
    session_id: str,
    operations: Iterable[str] | None = None,
    tables: Iterable[str] | None = None,
) -> list[RowChange]:
    """The session's net change per row, table by table, in key order.

    ``before`` is the base row when the session first touched it; ``after`` the
    session's row. A row inserted then deleted, or updated back to its original
    values, shows nothing. With ``operations`` it shows the net effect of just
    those operations. To commit exactly what it shows while the agent may still be
    writing, use :func:`review` and its token.
    """
    ops = None if operations is None else list(operations)
    return _diff(conn, session_id, enabled_tables(conn, tables), ops, None)


def _diff(
    conn: psycopg.Connection,
    session_id: str,
    chosen: list[EnabledTable],
    ops: list[str] | None,
    watermark: int | None,
) -> list[RowChange]:
    changes: list[RowChange] = []
    for t in chosen:
        net, params = net_rows(t, ops, watermark)
        query = sql.SQL(
            "SELECT n._cow_operation, n._cow_existed, n._cow_deleted, {after}, {before} "
            "FROM ({net}) AS n "
            "LEFT JOIN LATERAL pg_catalog.jsonb_populate_record(NULL::{base}, n._cow_before) AS bf "
            "ON n._cow_before IS NOT NULL "
            "WHERE n._cow_existed OR NOT n._cow_deleted ORDER BY {keys}"
        ).format(
            after=t.cols("n"),
            before=t.cols("bf"),
            net=net,
            base=t.base,
            keys=t.keys("n"),
        )
        width = len(t.columns)
        for row in conn.execute(query, {"sid": session_id, **params}):
            op, existed, deleted = row[0], row[1], row[2]
            after = dict(zip(t.columns, row[3 : 3 + width]))
            before = dict(zip(t.columns, row[3 + width :])) if existed else None
            key = {k: (before if deleted and before else after)[k] for k in t.key_columns}
            if deleted:
                kind: ChangeKind = "delete"
                changed = tuple(t.columns)
                after_value: dict[str, Any] | None = None
            elif not existed:
                kind, changed, after_value = "insert", tuple(t.columns), after
            else:
                assert before is not None
                changed = tuple(c for c in t.columns if before[c] != after[c])
                if not changed:
                    continue
                kind, after_value = "update", after
            changes.append(RowChange(t.label, key, kind, before, after_value, changed, op))
    return changes


@dataclass(frozen=True)
class Review:
    """One consistent look at a session: its changes, its operations and a token.

    ``token`` records what this review saw; ``commit(..., reviewed=review.token)`` and
    ``discard(..., reviewed=review.token)`` then act on exactly that, whatever the
    agent writes meanwhile.
    """

    session_id: str
    changes: list[RowChange]
    operations: list[OperationInfo]
    token: ReviewToken
    sealed: bool


def review(
    conn: psycopg.Connection,
    session_id: str,
    operations: Iterable[str] | None = None,
    tables: Iterable[str] | None = None,
) -> Review:
    """Review a session (or chosen operations and tables): the diff, the operations and
    a :class:`ReviewToken` of what it showed.

    On an idle connection it reads in one ``REPEATABLE READ`` transaction, so all of it
    is one snapshot. Inside a caller's transaction it reads there; the diff is still cut
    at the token's watermark, so it never shows a write the token does not cover.

    >>> r = cowsync.review(conn, sid)  # doctest: +SKIP
    >>> cowsync.commit(conn, sid, reviewed=r.token)  # doctest: +SKIP
    """
    validate_id(session_id, "session id")
    ops = None if operations is None else [validate_id(o, "operation id") for o in operations]
    table_names = None if tables is None else list(tables)
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        if idle:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        every = enabled_tables(conn)
        chosen = every if table_names is None else enabled_tables(conn, table_names)
        token = take_watermark(conn, session_id, chosen, every, ops, table_names)
        changes = _diff(conn, session_id, chosen, ops, token.watermark)
        infos = operations_of(conn, session_id)
        sealed = conn.execute(
            "SELECT sealed_at IS NOT NULL FROM cowsync.sessions WHERE session_id = %s",
            (session_id,),
        ).fetchone()
    if ops is not None:
        infos = [o for o in infos if o.operation_id in set(ops)]
    return Review(session_id, changes, infos, token, bool(sealed and sealed[0]))
