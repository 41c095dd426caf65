"""Applying a session to the base tables (commit) or dropping it (discard)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import psycopg
from psycopg import sql

from .config import validate_id
from .errors import CommitError, ConfigurationError, ConflictError, DependencyError
from .registry import (
    EnabledTable,
    cyclic_tables,
    enabled_tables,
    foreign_keys,
    parents_first,
)
from .review import dependencies, net_rows

ConflictPolicy = Literal["abort", "skip", "overwrite", "merge"]
ProgressCallback = Callable[[str, str, int], None]
_POLICIES = ("abort", "skip", "overwrite", "merge")
_SESSION_LOCK = 0x636F7774  # with hashtext(session id): one commit/discard per session at a time


@dataclass(frozen=True)
class Conflict:
    """A row the session changed whose base row changed after the session first touched it."""

    table: str
    key: dict[str, Any]
    kind: str
    before: dict[str, Any] | None  # base when the session first touched the row
    base: dict[str, Any] | None  # base now
    session: dict[str, Any] | None  # the session's row (None for a delete)
    resolution: str = "abort"  # what on_conflict did: abort, skip, overwrite or merge
    columns: tuple[str, ...] = ()  # for merge: columns changed on both sides


@dataclass
class CommitResult:
    """What :func:`commit` applied, per table and kind, and the conflicts it handled."""

    session_id: str
    operations: list[str]
    applied: dict[str, dict[str, int]] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Rows applied, all tables and kinds together."""
        return sum(sum(kinds.values()) for kinds in self.applied.values())

    @property
    def nothing_to_commit(self) -> bool:
        return self.total == 0 and not self.conflicts


@dataclass
class DiscardResult:
    """What :func:`discard` removed: history rows per table, and the operations."""

    session_id: str
    operations: list[str]
    discarded: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.discarded.values())


def _lock_session(conn: psycopg.Connection, session_id: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_SESSION_LOCK, session_id))


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


def _net_table(t: EnabledTable) -> sql.Identifier:
    return sql.Identifier(f"_cow_net_{t.registry_id}")


_META = (
    "ARRAY['_cow_session','_cow_operation','_cow_first_seq','_cow_seq','_cow_current',"
    "'_cow_deleted','_cow_existed','_cow_before','_cow_written_at','_cow_before_n','_cow_kind']"
)


def _row_image(t: EnabledTable, alias: str) -> sql.Composed:
    """``alias``'s columns as jsonb, built column by column: what ``to_jsonb`` of the
    base row gives, without copying the change store's own columns first."""
    return sql.SQL("jsonb_build_object({})").format(
        sql.SQL(", ").join(
            sql.SQL("{}, {}").format(sql.Literal(c), sql.Identifier(alias, c)) for c in t.columns
        )
    )


def _build_net(
    conn: psycopg.Connection,
    t: EnabledTable,
    session_id: str,
    ops: list[str] | None,
    normalise: bool = True,
) -> None:
    """Materialise the net effect per key, classified as insert/update/delete/none.

    Normalised, ``_cow_before_n`` is the first-touch image re-rendered by this
    connection (through the base's row type), so comparisons with ``to_jsonb`` of
    current rows do not depend on settings such as TimeZone that were in force when
    it was taken. Without normalising (the guarded fast path) the image is used as
    recorded: a setting that renders a value differently can only make a row look
    changed, which the guard then treats as a conflict and the full path re-checks.
    """
    net, params = net_rows(t, ops)
    before = (
        sql.SQL("to_jsonb(jsonb_populate_record(NULL::{}, n._cow_before))").format(t.base)
        if normalise
        else sql.SQL("n._cow_before")
    )
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {net_table} AS "
            "SELECT n.*, bn.before_n AS _cow_before_n, CASE "
            " WHEN NOT n._cow_existed AND NOT n._cow_deleted THEN 'insert' "
            " WHEN n._cow_existed AND n._cow_deleted THEN 'delete' "
            " WHEN n._cow_existed AND {image} IS DISTINCT FROM bn.before_n "
            "   THEN 'update' "
            " ELSE 'none' END AS _cow_kind "
            "FROM ({net}) AS n "
            "CROSS JOIN LATERAL (SELECT {before} AS before_n) AS bn"
        ).format(net_table=_net_table(t), image=_row_image(t, "n"), net=net, before=before),
        {"sid": session_id, **params},
    )


def _find_conflicts(conn: psycopg.Connection, t: EnabledTable) -> list[Conflict]:
    """Rows whose base changed since first touch; locks the base rows involved.

    Each conflict carries typed values and, in ``columns``, the columns both the
    base and the session changed to different values (what a merge cannot settle).
    """
    conn.execute(
        sql.SQL(
            "SELECT 1 FROM ONLY {base} AS b JOIN {net} AS n ON {match} "
            "WHERE n._cow_kind <> 'none' FOR UPDATE OF b"
        ).format(base=t.base, net=_net_table(t), match=t.key_match("b", "n"))
    )
    meta = sql.SQL(_META)
    rows = conn.execute(
        sql.SQL(
            "SELECT n._cow_kind, n._cow_existed, n._cow_deleted, {b_key} IS NOT NULL, "
            "ARRAY(SELECT e.key FROM jsonb_each(to_jsonb(n.*) - {meta}) AS e "
            "      WHERE e.value IS DISTINCT FROM n._cow_before_n -> e.key "
            "        AND to_jsonb(b.*) -> e.key IS DISTINCT FROM n._cow_before_n -> e.key "
            "        AND e.value IS DISTINCT FROM to_jsonb(b.*) -> e.key), "
            "{n_cols}, {b_cols}, {bf_cols} "
            "FROM {net} AS n LEFT JOIN ONLY {base} AS b ON {match} "
            "LEFT JOIN LATERAL jsonb_populate_record(NULL::{base}, n._cow_before) AS bf "
            "ON n._cow_before IS NOT NULL "
            "WHERE (n._cow_kind IN ('update', 'delete') "
            "       AND to_jsonb(b.*) IS DISTINCT FROM n._cow_before_n) "
            "   OR (n._cow_kind = 'insert' AND {b_key} IS NOT NULL) "
            "ORDER BY {keys}"
        ).format(
            meta=meta,
            b_key=sql.Identifier("b", t.key_columns[0]),
            n_cols=t.cols("n"),
            b_cols=t.cols("b"),
            bf_cols=t.cols("bf"),
            net=_net_table(t),
            base=t.base,
            match=t.key_match("b", "n"),
            keys=t.keys("n"),
        )
    ).fetchall()
    width = len(t.columns)
    conflicts = []
    for row in rows:
        kind, existed, deleted, base_present, overlap = row[:5]
        mine = dict(zip(t.columns, row[5 : 5 + width]))
        base_now = dict(zip(t.columns, row[5 + width : 5 + 2 * width])) if base_present else None
        before = dict(zip(t.columns, row[5 + 2 * width :])) if existed else None
        key = {k: mine[k] for k in t.key_columns}
        conflicts.append(
            Conflict(
                t.label,
                key,
                kind,
                before,
                base_now,
                None if deleted else mine,
                "abort",
                tuple(overlap),
            )
        )
    return conflicts


def _set_kind(conn: psycopg.Connection, t: EnabledTable, key: dict[str, Any], kind: str) -> None:
    conn.execute(
        sql.SQL("UPDATE {net} AS n SET _cow_kind = %(kind)s WHERE {cond}").format(
            net=_net_table(t),
            cond=sql.SQL(" AND ").join(
                sql.SQL("n.{} = %({})s").format(sql.Identifier(k), sql.SQL(f"k{i}"))
                for i, k in enumerate(t.key_columns)
            ),
        ),
        {"kind": kind, **{f"k{i}": key[k] for i, k in enumerate(t.key_columns)}},
    )


def _merge_rows(conn: psycopg.Connection, t: EnabledTable) -> None:
    """Three-way merge, set-based: a column the session changed keeps the session's
    value, any other column takes the base's current value."""
    assignments = sql.SQL(", ").join(
        sql.SQL(
            "{col} = CASE WHEN to_jsonb(n.{col}) IS DISTINCT FROM n._cow_before_n -> {name} "
            "THEN n.{col} ELSE b.{col} END"
        ).format(col=sql.Identifier(c), name=sql.Literal(c))
        for c in t.columns
    )
    conn.execute(
        sql.SQL(
            "UPDATE {net} AS n SET {assignments} FROM ONLY {base} AS b "
            "WHERE {match} AND n._cow_kind = 'update' "
            "AND to_jsonb(b.*) IS DISTINCT FROM n._cow_before_n"
        ).format(
            net=_net_table(t), assignments=assignments, base=t.base, match=t.key_match("b", "n")
        )
    )


def _resolve_conflicts(
    conn: psycopg.Connection,
    t: EnabledTable,
    found: list[Conflict],
    policy: ConflictPolicy,
) -> tuple[list[Conflict], list[Conflict]]:
    """Apply the policy to one table's conflicts; return (handled, unresolved)."""
    handled: list[Conflict] = []
    unresolved: list[Conflict] = []
    mergeable = False
    for conflict in found:
        conflict = replace(conflict, resolution=policy)
        if policy == "abort":
            unresolved.append(conflict)
        elif policy == "skip":
            _set_kind(conn, t, conflict.key, "skip")
            handled.append(conflict)
        elif policy == "overwrite":
            if conflict.kind == "insert":
                _set_kind(conn, t, conflict.key, "update")
            elif conflict.base is None:
                _set_kind(conn, t, conflict.key, "insert" if conflict.kind == "update" else "none")
            handled.append(conflict)
        elif conflict.kind != "update" or conflict.base is None or conflict.columns:
            unresolved.append(conflict)
        else:
            mergeable = True
            handled.append(conflict)
    if mergeable and not unresolved:
        _merge_rows(conn, t)
    return handled, unresolved


_DETAIL_KEY = re.compile(r"^Key \((?P<cols>.*)\)=\((?P<vals>.*)\)")


def _key_from_detail(detail: str | None) -> dict[str, Any] | None:
    """The key PostgreSQL names in a constraint error's detail, as text values.

    ``Key (region, code)=(eu, 7) already exists.`` -> ``{"region": "eu", "code": "7"}``.
    Values containing ", " cannot be split reliably; then the whole text is kept
    under the joined column names.
    """
    match = _DETAIL_KEY.match(detail or "")
    if match is None:
        return None
    columns = [c.strip().strip('"') for c in match.group("cols").split(",")]
    values = match.group("vals").split(", ")
    if len(values) != len(columns):
        return {match.group("cols"): match.group("vals")}
    return dict(zip(columns, values))


def _apply_statement(
    conn: psycopg.Connection,
    t: EnabledTable,
    kind: str,
    cyclic: frozenset[str] | set[str] = frozenset(),
    guarded: bool = False,
) -> int:
    net = _net_table(t)
    # Guarded, an update or delete only touches a base row still equal to the image
    # the session recorded at first touch (the conflict check, done by the statement).
    guard = sql.SQL(" AND to_jsonb(b.*) = n._cow_before_n" if guarded else "")
    if kind == "insert":
        query = sql.SQL(
            "INSERT INTO {base} ({cols}) {overriding} SELECT {n_cols} FROM {net} AS n "
            "WHERE n._cow_kind = 'insert'"
        ).format(
            base=t.base,
            cols=t.cols(),
            overriding=sql.SQL("OVERRIDING SYSTEM VALUE" if t.always_identity else ""),
            n_cols=t.cols("n"),
            net=net,
        )
    elif kind == "update":
        values = [c for c in t.columns if c not in t.key_columns]
        if not values:
            return 0
        query = sql.SQL(
            "UPDATE ONLY {base} AS b SET ({cols}) = ROW({n_cols}) FROM {net} AS n "
            "WHERE {match} AND n._cow_kind = 'update'{guard}"
        ).format(
            guard=guard,
            base=t.base,
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in values),
            n_cols=sql.SQL(", ").join(sql.Identifier("n", c) for c in values),
            net=net,
            match=t.key_match("b", "n"),
        )
    else:
        query = sql.SQL(
            "DELETE FROM ONLY {base} AS b USING {net} AS n "
            "WHERE {match} AND n._cow_kind = 'delete'{guard}"
        ).format(base=t.base, net=net, match=t.key_match("b", "n"), guard=guard)
    try:
        cur = conn.execute(query)
    except psycopg.errors.IntegrityError as exc:
        diag = exc.diag
        if isinstance(exc, psycopg.errors.ForeignKeyViolation) and t.label in cyclic:
            raise CommitError(
                f"commit of {t.label} failed ({kind}): {diag.message_primary}. Its tables "
                "form a foreign-key cycle, which one commit can only apply when the cycle's "
                "constraints are DEFERRABLE: make them deferrable, or commit the operations "
                "in steps. Nothing was applied",
                table=t.label,
                key=_key_from_detail(diag.message_detail),
                constraint=diag.constraint_name,
            ) from exc
        raise CommitError(
            f"commit of {t.label} failed ({kind}): {diag.message_primary}"
            + (f" — {diag.message_detail.rstrip('.')}" if diag.message_detail else "")
            + ". Nothing was applied; fix the session (or the base) and commit again",
            table=t.label,
            key=_key_from_detail(diag.message_detail),
            constraint=diag.constraint_name,
        ) from exc
    return cur.rowcount


def _settle_session(
    conn: psycopg.Connection,
    ordered: list[EnabledTable],
    session_id: str,
    ops: list[str] | None,
) -> None:
    """Remove what the commit read from the session; re-anchor what remains on the new base.

    Only rows the commit saw go: for each key it read, the rows (of the chosen
    operations) up to the write it applied. A write the agent made while the commit
    ran keeps its place, now measured against the committed base.
    """
    params: dict[str, Any] = {"sid": session_id, "ops": ops}
    op_filter = sql.SQL(" AND c._cow_operation = ANY(%(ops)s)") if ops is not None else sql.SQL("")
    for t in ordered:
        conn.execute(
            sql.SQL(
                "DELETE FROM ONLY {changes} AS c USING {net} AS n "
                "WHERE c._cow_session = %(sid)s AND {match} AND c._cow_seq <= n._cow_seq"
                "{op_filter}"
            ).format(
                changes=t.changes,
                net=_net_table(t),
                match=t.key_match("c", "n"),
                op_filter=op_filter,
            ),
            params,
        )
    remaining = ordered
    if ops is None:  # the usual whole-session commit: usually nothing is left to re-anchor
        left = sql.SQL(" UNION ALL ").join(
            sql.SQL("(SELECT {}::int FROM ONLY {} WHERE _cow_session = %(sid)s LIMIT 1)").format(
                sql.Literal(i), t.changes
            )
            for i, t in enumerate(ordered)
        )
        found = {r[0] for r in conn.execute(left, {"sid": session_id})}
        remaining = [t for i, t in enumerate(ordered) if i in found]
    for t in remaining:
        # What remains of those keys now builds on the base as the commit left it.
        conn.execute(
            sql.SQL(
                "UPDATE ONLY {changes} AS c SET _cow_existed = b_row IS NOT NULL, "
                "_cow_before = b_row "
                "FROM (SELECT {n_keys}, to_jsonb(b.*) AS b_row FROM {net} AS n "
                "      LEFT JOIN ONLY {base} AS b ON {bn_match}) AS n "
                "WHERE c._cow_session = %(sid)s AND {cn_match}"
            ).format(
                changes=t.changes,
                n_keys=t.keys("n"),
                net=_net_table(t),
                base=t.base,
                bn_match=t.key_match("b", "n"),
                cn_match=t.key_match("c", "n"),
            ),
            {"sid": session_id},
        )
        _restore_current(conn, t, session_id)
    # One statement drops every net table (they exist only inside this commit).
    conn.execute(
        sql.SQL("DROP TABLE {}").format(
            sql.SQL(", ").join(sql.SQL("pg_temp.{}").format(_net_table(t)) for t in ordered)
        )
    )


def _restore_current(conn: psycopg.Connection, t: EnabledTable, session_id: str) -> None:
    """Where a key lost its current row, the latest remaining write becomes current."""
    conn.execute(
        sql.SQL(
            "UPDATE ONLY {changes} AS c SET _cow_current = true "
            "FROM (SELECT {keys}, max(_cow_seq) AS last_seq FROM ONLY {changes} "
            "      WHERE _cow_session = %(sid)s GROUP BY {keys} "
            "      HAVING NOT bool_or(_cow_current)) AS m "
            "WHERE c._cow_session = %(sid)s AND {match} AND c._cow_seq = m.last_seq"
        ).format(changes=t.changes, keys=t.keys(), match=t.key_match("c", "m")),
        {"sid": session_id},
    )


def _forget_empty_operations(
    conn: psycopg.Connection, session_id: str, tables: list[EnabledTable]
) -> None:
    """Drop previews, and registry entries of operations (and the session) with nothing
    left; ``tables`` are all enabled tables."""
    previews = conn.execute(
        "SELECT 1 FROM cowsync.sessions WHERE preview_of = %s LIMIT 1", (session_id,)
    ).fetchone()
    if previews:  # the function visits every change store: only call it when needed
        conn.execute("SELECT cowsync.drop_previews(%s)", (session_id,))
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
        "AND s.metadata = '{}'::jsonb "
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

    >>> cowsync.commit(conn, sid, operations=["restock"])  # doctest: +SKIP
    """
    validate_id(session_id, "session id")
    if on_conflict not in _POLICIES:
        raise ConfigurationError(
            f"on_conflict must be one of {', '.join(_POLICIES)}, got {on_conflict!r}"
        )
    with conn.transaction():
        _lock_session(conn, session_id)
        # Deferrable foreign keys wait for the end of the commit, so cycles of them
        # apply in any order; _check_deferred checks them before the commit returns.
        conn.execute("SET CONSTRAINTS ALL DEFERRED")
        ops = _choose_operations(conn, session_id, operations, include_dependencies, "dependencies")
        all_tables = enabled_tables(conn)
        scope = enabled_tables(conn, tables) if tables is not None else all_tables
        fks = foreign_keys(conn, all_tables)
        ordered = parents_first(scope, fks)
        cyclic = cyclic_tables(all_tables, fks)
        result = CommitResult(
            session_id, ops if ops is not None else _session_operations(conn, session_id)
        )
        unresolved: list[Conflict] = []
        guarded = on_conflict == "abort"
        if guarded and ops is None:
            whole = _commit_whole_quiet_session(conn, ordered, session_id)
            if whole is not None:
                for label, kind, count in whole:
                    if progress:
                        progress(label, kind, count)
                    if count:
                        result.applied.setdefault(label, {"insert": 0, "update": 0, "delete": 0})[
                            kind
                        ] = count
                _forget_empty_operations(conn, session_id, all_tables)
                _check_deferred(conn, all_tables)
                return result
        for t in ordered:
            _build_net(conn, t, session_id, ops, normalise=not guarded)
        fast: dict[str, dict[str, int]] | None = None
        if guarded:
            try:
                with conn.transaction():
                    fast = _apply_guarded(conn, ordered, cyclic)
            except _FastPathMiss:
                for t in ordered:  # the full path compares normalised images
                    conn.execute(sql.SQL("DROP TABLE pg_temp.{}").format(_net_table(t)))
                    _build_net(conn, t, session_id, ops)
        if fast is not None:
            result.applied = fast
            _report(progress, _steps(ordered, deletes_first=False), fast)
        else:
            for t in ordered:
                handled, bad = _resolve_conflicts(conn, t, _find_conflicts(conn, t), on_conflict)
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
            result.applied = _apply_in_either_order(conn, ordered, cyclic, progress)
        if ordered:
            _settle_session(conn, ordered, session_id, ops)
        _forget_empty_operations(conn, session_id, all_tables)
        _check_deferred(conn, all_tables)
    result.applied = {k: v for k, v in result.applied.items() if any(v.values())}
    return result


class _FastPathMiss(Exception):
    """The guarded apply met a row that changed (or a clash): take the full path."""


Step = tuple[EnabledTable, str]


def _steps(ordered: list[EnabledTable], deletes_first: bool) -> list[Step]:
    """The statements of a commit, in order.

    The usual order inserts and updates parents first, then deletes children first,
    so a child can move to a new parent and away from one being deleted. Deleting
    first instead frees unique values (and keys) that inserted or updated rows reuse;
    there each table's updates run before its inserts, for values an update frees.
    """
    deletes = [(t, "delete") for t in reversed(ordered)]
    if deletes_first:
        return deletes + [(t, kind) for t in ordered for kind in ("update", "insert")]
    return [(t, kind) for t in ordered for kind in ("insert", "update")] + deletes


def _run_steps(
    conn: psycopg.Connection, steps: list[Step], cyclic: set[str], guarded: bool = False
) -> dict[str, dict[str, int]]:
    applied: dict[str, dict[str, int]] = {}
    for t, kind in steps:
        counts = applied.setdefault(t.label, {"insert": 0, "update": 0, "delete": 0})
        counts[kind] = _apply_statement(conn, t, kind, cyclic, guarded=guarded)
    return applied


def _report(
    progress: ProgressCallback | None, steps: list[Step], applied: dict[str, dict[str, int]]
) -> None:
    for t, kind in steps if progress else ():
        assert progress is not None
        progress(t.label, kind, applied[t.label][kind])


def _frees_values(exc: CommitError) -> bool:
    """A unique or exclusion clash: what applying deletes first may resolve."""
    return isinstance(
        exc.__cause__, (psycopg.errors.UniqueViolation, psycopg.errors.ExclusionViolation)
    )


def _apply_in_either_order(
    conn: psycopg.Connection,
    ordered: list[EnabledTable],
    cyclic: set[str],
    progress: ProgressCallback | None,
) -> dict[str, dict[str, int]]:
    """Apply in the usual order; if a unique value clashes, try deleting first.

    A session that deleted a row (or changed its key) and gave its unique value to
    another row needs the delete to run first, which the usual order cannot do. Each
    attempt runs in a savepoint; if both fail, the first order's error is raised.
    """
    try:
        with conn.transaction():
            steps = _steps(ordered, deletes_first=False)
            applied = _run_steps(conn, steps, cyclic)
    except CommitError as first:
        if not _frees_values(first):
            raise
        try:
            with conn.transaction():
                steps = _steps(ordered, deletes_first=True)
                applied = _run_steps(conn, steps, cyclic)
        except CommitError:
            raise first from first.__cause__
    _report(progress, steps, applied)
    return applied


def _apply_guarded(
    conn: psycopg.Connection, ordered: list[EnabledTable], cyclic: set[str]
) -> dict[str, dict[str, int]]:
    """Apply with the conflict check folded into each statement.

    Each UPDATE/DELETE touches only base rows still as the session first saw them, so
    a row count short of the net rows means a conflict; an INSERT that meets an
    existing key raises. Either way the caller rolls this back and takes the full
    path, which locks, reports conflicts and applies the policy.
    """
    if not ordered:
        return {}
    expected: dict[str, dict[str, int]] = {t.label: {} for t in ordered}
    counts_query = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}::text, _cow_kind, count(*) FROM {} GROUP BY 2").format(
            sql.Literal(t.label), _net_table(t)
        )
        for t in ordered
    )
    for label, kind, count in conn.execute(counts_query):
        expected[label][kind] = count
    try:
        applied = _run_steps(conn, _steps(ordered, deletes_first=False), cyclic, guarded=True)
    except CommitError as exc:
        raise _FastPathMiss from exc
    for label, counts in applied.items():
        for kind, count in counts.items():
            if count != expected[label].get(kind, 0):
                raise _FastPathMiss
    return applied


def _claim_quiet_session(conn: psycopg.Connection, session_id: str) -> bool:
    """Take the session's write lock (the one its triggers take) if it is free.

    Held until the commit ends (unless the caller's savepoint rolls back), it makes
    the agent's next write wait for the commit, so nothing the commit reads can
    change under it. When a transaction of the session is writing now, nothing waits.
    """
    row = conn.execute(
        "SELECT pg_try_advisory_xact_lock(hashtextextended('cowsync session ' || %s, 0))",
        (session_id,),
    ).fetchone()
    return bool(row and row[0])


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
    # IS NOT DISTINCT FROM, not =: a jsonb = can become a hash-join key computed for
    # every base row.
    guard = sql.SQL("to_jsonb(b.*) IS NOT DISTINCT FROM n._cow_before")
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
                kind=sql.SQL(_KIND_OF_CURRENT_ROW).format(image=_row_image(t, "c")),
                changes=t.changes,
            )
        )
        values = [c for c in t.columns if c not in t.key_columns]
        statements = {
            "delete": sql.SQL(
                "DELETE FROM ONLY {base} AS b USING {net} AS n "
                "WHERE {match} AND n._cow_kind = 'delete' AND {guard} RETURNING 1"
            ).format(base=t.base, net=net, match=t.key_match("b", "n"), guard=guard),
            "insert": sql.SQL(
                "INSERT INTO {base} ({cols}) {overriding} SELECT {n_cols} FROM {net} AS n "
                "WHERE n._cow_kind = 'insert' RETURNING 1"
            ).format(
                base=t.base,
                cols=t.cols(),
                overriding=sql.SQL("OVERRIDING SYSTEM VALUE" if t.always_identity else ""),
                n_cols=t.cols("n"),
                net=net,
            ),
        }
        if values:
            statements["update"] = sql.SQL(
                "UPDATE ONLY {base} AS b SET ({cols}) = ROW({n_vals}) FROM {net} AS n "
                "WHERE {match} AND n._cow_kind = 'update' AND {guard} RETURNING 1"
            ).format(
                base=t.base,
                cols=sql.SQL(", ").join(sql.Identifier(c) for c in values),
                n_vals=sql.SQL(", ").join(sql.Identifier("n", c) for c in values),
                net=net,
                match=t.key_match("b", "n"),
                guard=guard,
            )
        for kind, statement in statements.items():
            done = sql.Identifier(f"{kind}_{i}")
            ctes.append(sql.SQL("{} AS ({})").format(done, statement))
            reads[kind].append(
                sql.SQL(
                    "(SELECT count(*) FROM {net} WHERE _cow_kind = {kind}), "
                    "(SELECT count(*) FROM {done})"
                ).format(net=net, kind=sql.Literal(kind), done=done)
            )
            order[kind].append((t.label, kind))
        ctes.append(
            sql.SQL("{} AS (DELETE FROM ONLY {} WHERE _cow_session = %(sid)s)").format(
                sql.Identifier(f"settle_{i}"), t.changes
            )
        )
    # Children's deletes first, as the statement-per-kind path reports them.
    columns = reads["delete"][::-1] + reads["update"] + reads["insert"]
    query = sql.SQL("WITH {} SELECT {}").format(
        sql.SQL(", ").join(ctes), sql.SQL(", ").join(columns)
    )
    return query, order["delete"][::-1] + order["update"] + order["insert"]


def _commit_whole_quiet_session(
    conn: psycopg.Connection, ordered: list[EnabledTable], session_id: str
) -> list[tuple[str, str, int]] | None:
    """The common commit (whole session, ``on_conflict="abort"``) in one statement.

    Needs the session quiet: its write lock free, then held. Returns ``None`` with
    nothing done when it is busy, or when a guarded row changed in the base, a value
    clashes, or a deadlock with the agent broke the statement; the caller then takes
    the general path, which reports conflicts and errors in detail. Else returns
    (table, kind, rows applied) in the order the statement applied them.
    """
    if not ordered:
        return None
    query, order = _whole_session_statement(ordered)
    try:
        with conn.transaction():  # also gives the session lock back if this fails
            if not _claim_quiet_session(conn, session_id):
                return None
            row = conn.execute(query, {"sid": session_id}).fetchone()
            assert row is not None
            counts = list(row)
            if counts[0::2] != counts[1::2]:
                raise _FastPathMiss
    except (_FastPathMiss, psycopg.errors.IntegrityError, psycopg.errors.DeadlockDetected):
        return None
    return [(label, kind, count) for (label, kind), count in zip(order, counts[1::2])]


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
            key=_key_from_detail(diag.message_detail),
            constraint=diag.constraint_name,
        ) from exc


# --- discard ----------------------------------------------------------------------


def discard(
    conn: psycopg.Connection,
    session_id: str,
    operations: Iterable[str] | None = None,
    tables: Iterable[str] | None = None,
    include_dependents: bool = False,
) -> DiscardResult:
    """Drop a session's changes (or chosen operations'). Never touches the base.

    Discarding an operation that later operations build on raises
    :class:`DependencyError` unless ``include_dependents=True``.
    """
    validate_id(session_id, "session id")
    with conn.transaction():
        _lock_session(conn, session_id)
        ops = _choose_operations(conn, session_id, operations, include_dependents, "dependents")
        all_tables = enabled_tables(conn)
        scope = enabled_tables(conn, tables) if tables is not None else all_tables
        result = DiscardResult(
            session_id, ops if ops is not None else _session_operations(conn, session_id)
        )
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
                _restore_current(conn, t, session_id)
            if removed:
                result.discarded[t.label] = removed
        _forget_empty_operations(conn, session_id, all_tables)
    return result
