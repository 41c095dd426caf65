"""Applying a session to the base tables (commit) or dropping it (discard)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import psycopg
from psycopg import sql

from .commit_statement import commit_whole_session
from .commit_tables import (
    FastPathMiss,
    apply_guarded,
    apply_in_either_order,
    build_net,
    commit_steps,
    find_conflicts,
    key_from_detail,
    net_table,
    report_progress,
    resolve_conflicts,
    restore_current,
    settle_session,
)
from .config import validate_id
from .errors import (
    CommitError,
    ConfigurationError,
    ConflictError,
    DependencyError,
)
from .giving_way import SHORT_LOCK_WAITS, giving_way
from .registry import (
    EnabledTable,
    cyclic_tables,
    enabled_tables,
    foreign_keys,
    parents_first,
    reference_links,
)
from .results import CommitResult, Conflict, ConflictPolicy, DiscardResult, ProgressCallback
from .review_scope import (
    check_operations_reviewed,
    operations_within_review,
    tables_within_review,
)
from .review_token import (
    IfChanged,
    ReviewDrift,
    ReviewToken,
    check_drift,
    check_if_changed,
    measure_drift,
    token_for,
)
from .reviewing import dependencies
from .session_lock import lock_session, require_session

__all__ = [
    "CommitResult",
    "Conflict",
    "ConflictPolicy",
    "DiscardResult",
    "ProgressCallback",
    "close_operations",
    "commit",
    "discard",
]

_POLICIES = ("abort", "skip", "overwrite", "merge")


def _session_operations(conn: psycopg.Connection, session_id: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT operation_id FROM cowsync.operations WHERE session_id = %s ORDER BY first_seq",
            (session_id,),
        )
    ]


def _closure(start: set[str], edges: dict[str, set[str]]) -> set[str]:
    seen = set(start)
    todo = list(start)
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _choose_operations(
    conn: psycopg.Connection,
    session_id: str,
    operations: Iterable[str] | None,
    include: bool,
    direction: Literal["dependencies", "dependents"],
) -> list[str] | None:
    """Validate chosen operations and close them under dependencies (or dependents)."""
    if operations is None:
        return None
    chosen = {validate_id(op, "operation id") for op in operations}
    known = _session_operations(conn, session_id)
    unknown = chosen - set(known)
    if unknown:
        raise ConfigurationError(
            f"session {session_id!r} has no operation(s) {', '.join(sorted(unknown))}; "
            f"its operations are: {', '.join(known) or 'none'}"
        )
    deps = dependencies(conn, session_id)
    if direction == "dependents":
        reverse: dict[str, set[str]] = {op: set() for op in deps}
        for op, needs in deps.items():
            for n in needs:
                reverse.setdefault(n, set()).add(op)
        deps = reverse
    closed = _closure(chosen, deps)
    missing = closed - chosen
    if missing and not include:
        flag = "include_dependencies" if direction == "dependencies" else "include_dependents"
        verb = "depend on" if direction == "dependencies" else "are depended on by"
        raise DependencyError(
            f"the chosen operations {verb} operations not chosen: "
            f"{', '.join(sorted(missing))}. Add them, or pass {flag}=True",
            missing,
        )
    return [op for op in known if op in closed]


def close_operations(
    conn: psycopg.Connection,
    session_id: str,
    operations: Iterable[str],
    include: bool = False,
    direction: Literal["dependencies", "dependents"] = "dependencies",
) -> list[str]:
    """The chosen operations plus what they build on (``"dependencies"``, for commit) or
    what builds on them (``"dependents"``, for discard), in session order.

    Without ``include`` a missing operation raises :class:`DependencyError`, whose
    ``missing`` names them: what :func:`commit` and :func:`discard` would refuse.
    """
    chosen = _choose_operations(conn, session_id, operations, include, direction)
    assert chosen is not None
    return chosen


# --- commit -----------------------------------------------------------------------


def _forget_empty_operations(
    conn: psycopg.Connection, session_id: str, tables: list[EnabledTable]
) -> None:
    """Drop previews, and registry entries of operations (and the session) with nothing
    left; ``tables`` are all enabled tables.

    The caller holds the session's write lock, so no agent transaction is adding rows to
    an operation meanwhile. Writes later in the caller's own transaction must register
    their operation again: the trigger's once-per-transaction marker is cleared."""
    previews = conn.execute(
        "SELECT 1 FROM cowsync.sessions WHERE preview_of = %s LIMIT 1", (session_id,)
    ).fetchone()
    if previews:  # the function visits every change store: only call it when needed
        conn.execute("SELECT cowsync.drop_previews(%s)", (session_id,))
    conn.execute("SELECT pg_catalog.set_config('cowsync.registered', '', true)")
    if tables:
        live = sql.SQL(" UNION ").join(
            sql.SQL(
                "SELECT DISTINCT _cow_operation FROM ONLY {} WHERE _cow_session = %(sid)s"
            ).format(t.changes)
            for t in tables
        )
        conn.execute(
            sql.SQL(
                "DELETE FROM cowsync.operations WHERE session_id = %(sid)s "
                "AND operation_id NOT IN ({})"
            ).format(live),
            {"sid": session_id},
        )
    else:
        conn.execute("DELETE FROM cowsync.operations WHERE session_id = %s", (session_id,))
    conn.execute(
        "DELETE FROM cowsync.sessions s WHERE s.session_id = %s AND s.label IS NULL "
        "AND s.metadata = '{}'::jsonb AND s.sealed_at IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM cowsync.operations o WHERE o.session_id = s.session_id)",
        (session_id,),
    )


def commit(
    conn: psycopg.Connection,
    session_id: str,
    operations: Iterable[str] | None = None,
    tables: Iterable[str] | None = None,
    on_conflict: ConflictPolicy = "abort",
    include_dependencies: bool = False,
    progress: ProgressCallback | None = None,
    reviewed: ReviewToken | str | None = None,
    if_changed: IfChanged = "keep",
    wait: float | None = 30.0,
) -> CommitResult:
    """Apply a session's net effect (or chosen operations') to the base tables.

    All tables in one transaction, parents inserted before children and children
    deleted before parents, one statement per table and kind. What was applied is
    removed from the session; the rest stays reviewable. A failure leaves base and
    session exactly as before.

    ``on_conflict`` decides what happens when a base row changed after the session
    first touched it: ``"abort"`` raises :class:`ConflictError`, ``"skip"`` keeps the
    base and drops the session's row, ``"overwrite"`` lets the session win, and
    ``"merge"`` merges column by column (overlapping changes still abort).

    Deferred constraints are checked before it returns. Called inside a transaction
    of the caller's, it then gives each deferrable constraint back the timing it was
    declared with (not what an earlier ``SET CONSTRAINTS`` said).

    ``reviewed`` (a :class:`ReviewToken` from :func:`cowsync.review`, or its string)
    applies exactly what that review showed: rows the agent wrote after it stay in the
    session, and so do keys it rewrote since (both listed in ``result.drift``); with
    ``if_changed="refuse"`` either raises :class:`StaleReviewError` instead. Rows the
    review showed that another call committed or discarded meanwhile always raise it.
    Without a token, the commit applies the session as it is when the commit takes it.

    The commit takes the session's write lock first (as agent writes, discard and seal
    do), waiting up to ``wait`` seconds for an agent transaction in progress
    (:class:`SessionBusyError` past it). An unknown session raises
    :class:`SessionNotFoundError`.

    >>> cowsync.commit(conn, sid, operations=["restock"])  # doctest: +SKIP
    """
    validate_id(session_id, "session id")
    if on_conflict not in _POLICIES:
        raise ConfigurationError(
            f"on_conflict must be one of {', '.join(_POLICIES)}, got {on_conflict!r}"
        )
    token = None if reviewed is None else token_for(session_id, reviewed)
    check_if_changed(if_changed)
    nested = conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    return giving_way(
        conn,
        session_id,
        wait,
        lambda: _commit(
            conn,
            session_id,
            operations,
            tables,
            on_conflict,
            include_dependencies,
            progress,
            token,
            if_changed,
            wait,
            nested,
        ),
    )


def _commit(
    conn: psycopg.Connection,
    session_id: str,
    operations: Iterable[str] | None,
    tables: Iterable[str] | None,
    on_conflict: ConflictPolicy,
    include_dependencies: bool,
    progress: ProgressCallback | None,
    token: ReviewToken | None,
    if_changed: IfChanged,
    wait: float | None,
    nested: bool,
) -> CommitResult:
    with conn.transaction():
        lock_session(conn, session_id, wait)
        all_tables = enabled_tables(conn)
        require_session(conn, session_id, all_tables)
        # Deferrable foreign keys wait for the end of the commit, so cycles of them
        # apply in any order; _check_deferred checks them before the commit returns.
        # cowsync.applying lets this transaction write overlay tables even from a
        # connection bound to a session (their guard refuses bound writes otherwise).
        conn.execute(
            "SET CONSTRAINTS ALL DEFERRED; "
            "SELECT pg_catalog.set_config('cowsync.applying', 'on', true), " + SHORT_LOCK_WAITS
        )
        if token is not None:
            operations = operations_within_review(
                token, operations, _session_operations(conn, session_id)
            )
        ops = _choose_operations(conn, session_id, operations, include_dependencies, "dependencies")
        if token is not None:
            check_operations_reviewed(token, ops, "committed")
            scope = tables_within_review(conn, token, tables, all_tables, "committed")
        else:
            scope = enabled_tables(conn, tables) if tables is not None else all_tables
        result = CommitResult(
            session_id, ops if ops is not None else _session_operations(conn, session_id)
        )
        watermark: int | None = None
        if token is not None:
            drift = measure_drift(conn, token, scope, all_tables, ops)
            check_drift(drift, if_changed, "commit")
            result.drift = drift
            if drift:  # else the session is exactly what was reviewed
                watermark = token.watermark
        unresolved: list[Conflict] = []
        guarded = on_conflict == "abort"
        if guarded and ops is None and watermark is None:
            # One statement checks foreign keys at its end: the table order only
            # orders progress reports, so it is read (lightly) only for them.
            first = parents_first(scope, reference_links(conn, scope)) if progress else scope
            whole = commit_whole_session(conn, first, session_id)
            if whole is not None:
                for label, kind, count in whole:
                    if progress:
                        progress(label, kind, count)
                    if count:
                        result.applied.setdefault(label, {"insert": 0, "update": 0, "delete": 0})[
                            kind
                        ] = count
                _finish(conn, session_id, all_tables, nested, checked=True)
                return result
        fks = foreign_keys(conn, all_tables)
        ordered = parents_first(scope, [(fk.child, fk.parent) for fk in fks])
        cyclic = cyclic_tables(all_tables, fks)
        for t in ordered:
            build_net(conn, t, session_id, ops, normalise=not guarded, watermark=watermark)
        fast: dict[str, dict[str, int]] | None = None
        if guarded:
            try:
                with conn.transaction():
                    fast = apply_guarded(conn, ordered, cyclic)
            except FastPathMiss:
                for t in ordered:  # the full path compares normalised images
                    conn.execute(sql.SQL("DROP TABLE pg_temp.{}").format(net_table(t)))
                    build_net(conn, t, session_id, ops, watermark=watermark)
        if fast is not None:
            result.applied = fast
            report_progress(progress, commit_steps(ordered, deletes_first=False), fast)
        else:
            for t in ordered:
                handled, bad = resolve_conflicts(conn, t, find_conflicts(conn, t), on_conflict)
                result.conflicts.extend(handled)
                unresolved.extend(bad)
            if unresolved:
                raise ConflictError(
                    f"{len(unresolved)} row(s) changed in the base after session "
                    f"{session_id!r} touched them; nothing was applied. Review the conflicts, "
                    "then commit with on_conflict='skip', 'overwrite' or 'merge', or discard "
                    "those operations",
                    unresolved,
                )
            result.applied = apply_in_either_order(conn, ordered, cyclic, progress)
        if ordered:
            settle_session(conn, ordered, session_id, ops)
        _finish(conn, session_id, all_tables, nested)
    result.applied = {k: v for k, v in result.applied.items() if any(v.values())}
    return result


def _finish(
    conn: psycopg.Connection,
    session_id: str,
    tables: list[EnabledTable],
    nested: bool,
    checked: bool = False,
) -> None:
    """Check deferred constraints (unless ``checked`` already), tidy the registry and,
    inside a caller's transaction, give deferrable constraints their declared timing
    back."""
    if not checked:
        _check_deferred(conn, tables)
    _forget_empty_operations(conn, session_id, tables)
    if nested:
        _restore_declared_timing(conn)


def _restore_declared_timing(conn: psycopg.Connection) -> None:
    """Undo ``SET CONSTRAINTS ALL IMMEDIATE`` for the rest of the caller's transaction:
    constraints declared ``INITIALLY DEFERRED`` are deferred again. A name shared with
    a constraint declared otherwise (in one schema) stays immediate: ``SET
    CONSTRAINTS`` names them all, and refuses non-deferrable ones."""
    names = conn.execute(
        "SELECT n.nspname, c.conname FROM pg_constraint c "
        "JOIN pg_namespace n ON n.oid = c.connamespace "
        "WHERE NOT pg_is_other_temp_schema(n.oid) "
        "GROUP BY 1, 2 HAVING bool_and(c.condeferrable AND c.condeferred)"
    ).fetchall()
    if names:
        conn.execute(
            sql.SQL("SET CONSTRAINTS {} DEFERRED").format(
                sql.SQL(", ").join(sql.Identifier(schema, name) for schema, name in names)
            )
        )


def _check_deferred(conn: psycopg.Connection, tables: list[EnabledTable]) -> None:
    """Check deferred constraints now, so a failure is a CommitError and not an
    error escaping from the transaction's COMMIT."""
    labels = {(t.schema, t.base_name): t.label for t in tables}
    try:
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
    except psycopg.errors.IntegrityError as exc:
        diag = exc.diag
        label = labels.get((diag.schema_name or "", diag.table_name or ""), diag.table_name)
        raise CommitError(
            f"commit failed on a deferred constraint: {diag.message_primary}"
            + (f" — {diag.message_detail.rstrip('.')}" if diag.message_detail else "")
            + ". Nothing was applied; fix the session (or the base) and commit again",
            table=label,
            key=key_from_detail(diag.message_detail),
            constraint=diag.constraint_name,
        ) from exc


# --- discard ----------------------------------------------------------------------


def discard(
    conn: psycopg.Connection,
    session_id: str,
    operations: Iterable[str] | None = None,
    tables: Iterable[str] | None = None,
    include_dependents: bool = False,
    reviewed: ReviewToken | str | None = None,
    if_changed: IfChanged = "keep",
    wait: float | None = 30.0,
) -> DiscardResult:
    """Drop a session's changes (or chosen operations'). Never touches the base.

    Discarding an operation that later operations build on raises
    :class:`DependencyError` unless ``include_dependents=True``.

    ``reviewed``, ``if_changed`` and ``wait`` work as for :func:`commit`: with a token,
    only what the review showed goes; later writes stay (``result.drift``), and so does
    all of a key written after the review (by any operation: that write read what the
    review showed), reported as ``rewritten``. Once it
    returns, no discarded value is visible or committable: an agent statement that read
    one before the discard fails with ``40001`` (retry) instead of writing it back.
    """
    validate_id(session_id, "session id")
    token = None if reviewed is None else token_for(session_id, reviewed)
    check_if_changed(if_changed)
    return giving_way(
        conn,
        session_id,
        wait,
        lambda: _discard(
            conn, session_id, operations, tables, include_dependents, token, if_changed, wait
        ),
    )


def _discard(
    conn: psycopg.Connection,
    session_id: str,
    operations: Iterable[str] | None,
    tables: Iterable[str] | None,
    include_dependents: bool,
    token: ReviewToken | None,
    if_changed: IfChanged,
    wait: float | None,
) -> DiscardResult:
    with conn.transaction():
        lock_session(conn, session_id, wait)
        conn.execute("SELECT " + SHORT_LOCK_WAITS)
        all_tables = enabled_tables(conn)
        require_session(conn, session_id, all_tables)
        if token is not None:
            operations = operations_within_review(
                token, operations, _session_operations(conn, session_id)
            )
        ops = _choose_operations(conn, session_id, operations, include_dependents, "dependents")
        if token is not None:
            check_operations_reviewed(token, ops, "discarded")
            scope = tables_within_review(conn, token, tables, all_tables, "discarded")
        else:
            scope = enabled_tables(conn, tables) if tables is not None else all_tables
        result = DiscardResult(
            session_id, ops if ops is not None else _session_operations(conn, session_id)
        )
        if token is not None:
            drift = measure_drift(conn, token, scope, all_tables, ops)
            check_drift(drift, if_changed, "discard")
            result.drift = drift
            if drift:
                kept: dict[str, int] = {}
                for t in scope:
                    removed, kept[t.label] = _discard_reviewed(
                        conn, t, session_id, ops, token.watermark
                    )
                    if removed:
                        result.discarded[t.label] = removed
                result.drift = _kept_as_rewritten(drift, kept)
                _forget_empty_operations(conn, session_id, all_tables)
                return result
        for t in scope:
            if ops is None:
                removed = conn.execute(
                    sql.SQL("DELETE FROM ONLY {} WHERE _cow_session = %(sid)s").format(t.changes),
                    {"sid": session_id},
                ).rowcount
            else:
                removed = conn.execute(
                    sql.SQL(
                        "DELETE FROM ONLY {} WHERE _cow_session = %(sid)s "
                        "AND _cow_operation = ANY(%(ops)s)"
                    ).format(t.changes),
                    {"sid": session_id, "ops": ops},
                ).rowcount
                restore_current(conn, t, session_id)
            if removed:
                result.discarded[t.label] = removed
        _forget_empty_operations(conn, session_id, all_tables)
    return result


def _discard_reviewed(
    conn: psycopg.Connection,
    t: EnabledTable,
    session_id: str,
    ops: list[str] | None,
    watermark: int,
) -> tuple[int, int]:
    """Delete the rows a review saw (numbered up to ``watermark``) of keys no chosen
    operation wrote since; return (rows deleted, reviewed rows kept).

    A key written after the review stays whole, whichever operation wrote it: that
    write read what the review showed (the session lock orders a session's writes), so
    deleting the reviewed rows under it would bring their values back in the later
    row. Later writes stay, the latest becoming current."""
    op_filter = sql.SQL(" AND {}._cow_operation = ANY(%(ops)s)")
    c_ops = op_filter.format(sql.Identifier("c")) if ops is not None else sql.SQL("")
    params = {"sid": session_id, "ops": ops, "wm": watermark}
    removed = conn.execute(
        sql.SQL(
            "DELETE FROM ONLY {changes} AS c WHERE c._cow_session = %(sid)s{c_ops} "
            "AND c._cow_seq <= %(wm)s AND NOT EXISTS (SELECT 1 FROM ONLY {changes} AS s "
            "WHERE s._cow_session = %(sid)s AND {match}{s_ops} AND s._cow_seq > %(wm)s)"
        ).format(
            changes=t.changes,
            match=t.key_match("s", "c"),
            c_ops=c_ops,
            s_ops=op_filter.format(sql.Identifier("s")) if ops is not None else sql.SQL(""),
        ),
        params,
    ).rowcount
    restore_current(conn, t, session_id)
    row = conn.execute(
        sql.SQL(
            "SELECT count(*) FROM ONLY {changes} AS c WHERE c._cow_session = %(sid)s{c_ops} "
            "AND c._cow_first_seq <= %(wm)s"
        ).format(changes=t.changes, c_ops=c_ops),
        params,
    ).fetchone()
    return removed, row[0] if row else 0


def _kept_as_rewritten(drift: list[ReviewDrift], kept: dict[str, int]) -> list[ReviewDrift]:
    """The drift a discard with a token reports: reviewed rows it kept (their keys were
    written after the review) are ``rewritten``; ``newer`` rows as measured."""
    rewritten = [ReviewDrift(label, "rewritten", n) for label, n in sorted(kept.items()) if n]
    return rewritten + [d for d in drift if d.reason != "rewritten"]
