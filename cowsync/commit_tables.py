"""The per-table commit path: net temp tables, conflicts, policies, statements, settling.

For each table in scope a temp table holds the session's net effect per key, classified
insert/update/delete/none (:func:`build_net`). Under ``on_conflict="abort"``
:func:`~cowsync.apply.commit` first tries the guarded statements (:func:`apply_guarded`),
which fold the conflict check into each UPDATE/DELETE; on a miss, or under another
policy, it finds the conflicts, applies the policy (:func:`resolve_conflicts`) and runs
one statement per table and kind (:func:`apply_in_either_order`). :func:`settle_session`
then removes what was applied from the session. commit() takes this path for chosen
operations, for policies other than ``"abort"``, and when the one-statement path
(:mod:`cowsync.commit_statement`) declines."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import psycopg
from psycopg import sql

from .errors import CommitError
from .registry import EnabledTable
from .results import Conflict, ConflictPolicy, ProgressCallback
from .reviewing import net_rows


def net_table(t: EnabledTable) -> sql.Identifier:
    return sql.Identifier(f"_cow_net_{t.registry_id}")


_META = (
    "ARRAY['_cow_session','_cow_operation','_cow_first_seq','_cow_seq','_cow_current',"
    "'_cow_deleted','_cow_existed','_cow_before','_cow_written_at','_cow_before_n','_cow_kind']"
)


def row_image(t: EnabledTable, alias: str) -> sql.Composed:
    """``alias``'s columns as jsonb, built column by column: what ``to_jsonb`` of the
    base row gives, without copying the change store's own columns first."""
    return sql.SQL("pg_catalog.jsonb_build_object({})").format(
        sql.SQL(", ").join(
            sql.SQL("{}, {}").format(sql.Literal(c), sql.Identifier(alias, c)) for c in t.columns
        )
    )


def build_net(
    conn: psycopg.Connection,
    t: EnabledTable,
    session_id: str,
    ops: list[str] | None,
    normalise: bool = True,
    watermark: int | None = None,
) -> None:
    """Materialise the net effect per key, classified as insert/update/delete/none.

    With a review ``watermark``, the net effect of what that review saw (see
    :func:`cowsync.reviewing.net_rows`).

    Normalised, ``_cow_before_n`` is the first-touch image re-rendered by this
    connection (through the base's row type), so comparisons with ``to_jsonb`` of
    current rows do not depend on settings such as TimeZone that were in force when
    it was taken. Without normalising (the guarded fast path) the image is used as
    recorded: a setting that renders a value differently can only make a row look
    changed, which the guard then treats as a conflict and the full path re-checks.
    """
    net, params = net_rows(t, ops, watermark)
    before = (
        sql.SQL(
            "pg_catalog.to_jsonb(pg_catalog.jsonb_populate_record(NULL::{}, n._cow_before))"
        ).format(t.base)
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
        ).format(net_table=net_table(t), image=row_image(t, "n"), net=net, before=before),
        {"sid": session_id, **params},
    )


def find_conflicts(conn: psycopg.Connection, t: EnabledTable) -> list[Conflict]:
    """Rows whose base changed since first touch; locks the base rows involved.

    Each conflict carries typed values and, in ``columns``, the columns both the
    base and the session changed to different values (what a merge cannot settle).
    """
    conn.execute(
        sql.SQL(
            "SELECT 1 FROM ONLY {base} AS b JOIN {net} AS n ON {match} "
            "WHERE n._cow_kind <> 'none' FOR UPDATE OF b"
        ).format(base=t.base, net=net_table(t), match=t.key_match("b", "n"))
    )
    meta = sql.SQL(_META)
    rows = conn.execute(
        sql.SQL(
            "SELECT n._cow_kind, n._cow_existed, n._cow_deleted, {b_key} IS NOT NULL, "
            "ARRAY(SELECT e.key FROM pg_catalog.jsonb_each(pg_catalog.to_jsonb(n.*) - {meta}) AS e "
            "      WHERE e.value IS DISTINCT FROM n._cow_before_n -> e.key "
            "        AND pg_catalog.to_jsonb(b.*) -> e.key"
            "            IS DISTINCT FROM n._cow_before_n -> e.key "
            "        AND e.value IS DISTINCT FROM pg_catalog.to_jsonb(b.*) -> e.key), "
            "{n_cols}, {b_cols}, {bf_cols} "
            "FROM {net} AS n LEFT JOIN ONLY {base} AS b ON {match} "
            "LEFT JOIN LATERAL pg_catalog.jsonb_populate_record(NULL::{base}, n._cow_before) AS bf "
            "ON n._cow_before IS NOT NULL "
            "WHERE (n._cow_kind IN ('update', 'delete') "
            "       AND pg_catalog.to_jsonb(b.*) IS DISTINCT FROM n._cow_before_n) "
            "   OR (n._cow_kind = 'insert' AND {b_key} IS NOT NULL) "
            "ORDER BY {keys}"
        ).format(
            meta=meta,
            b_key=sql.Identifier("b", t.key_columns[0]),
            n_cols=t.cols("n"),
            b_cols=t.cols("b"),
            bf_cols=t.cols("bf"),
            net=net_table(t),
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
            net=net_table(t),
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
            "{col} = CASE WHEN pg_catalog.to_jsonb(n.{col})"
            " IS DISTINCT FROM n._cow_before_n -> {name} "
            "THEN n.{col} ELSE b.{col} END"
        ).format(col=sql.Identifier(c), name=sql.Literal(c))
        for c in t.columns
    )
    conn.execute(
        sql.SQL(
            "UPDATE {net} AS n SET {assignments} FROM ONLY {base} AS b "
            "WHERE {match} AND n._cow_kind = 'update' "
            "AND pg_catalog.to_jsonb(b.*) IS DISTINCT FROM n._cow_before_n"
        ).format(
            net=net_table(t), assignments=assignments, base=t.base, match=t.key_match("b", "n")
        )
    )


def resolve_conflicts(
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


def key_from_detail(detail: str | None) -> dict[str, Any] | None:
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


def apply_query(
    t: EnabledTable,
    kind: str,
    net: sql.Identifier,
    before: str | None = None,
    returning: bool = False,
) -> sql.Composed | None:
    """The INSERT, UPDATE or DELETE of ``t``'s base from the rows of relation ``net``
    (alias ``n``, one per key, classified in ``n._cow_kind``) of that ``kind``.

    With ``before`` (the net column holding the first-touch image), an update or
    delete only touches a base row still equal to that image: the conflict check,
    done by the statement. ``None`` for an update of a table with only key columns
    (identity columns ``GENERATED ALWAYS`` aside: a session never changes them, and
    the base refuses to set them).
    """
    # IS NOT DISTINCT FROM, not =: a jsonb = can become a hash-join key the planner
    # computes for every base row.
    guard: sql.Composable = (
        sql.SQL(" AND pg_catalog.to_jsonb(b.*) IS NOT DISTINCT FROM {}").format(
            sql.Identifier("n", before)
        )
        if before
        else sql.SQL("")
    )
    tail = sql.SQL(" RETURNING 1" if returning else "")
    if kind == "insert":
        return sql.SQL(
            "INSERT INTO {base} ({cols}) {overriding} SELECT {n_cols} FROM {net} AS n "
            "WHERE n._cow_kind = 'insert'{tail}"
        ).format(
            base=t.base,
            cols=t.cols(),
            overriding=sql.SQL("OVERRIDING SYSTEM VALUE" if t.always_identity else ""),
            n_cols=t.cols("n"),
            net=net,
            tail=tail,
        )
    if kind == "update":
        values = [c for c in t.columns if c not in t.key_columns + t.always_identity]
        if not values:
            return None
        return sql.SQL(
            "UPDATE ONLY {base} AS b SET ({cols}) = ROW({n_cols}) FROM {net} AS n "
            "WHERE {match} AND n._cow_kind = 'update'{guard}{tail}"
        ).format(
            base=t.base,
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in values),
            n_cols=sql.SQL(", ").join(sql.Identifier("n", c) for c in values),
            net=net,
            match=t.key_match("b", "n"),
            guard=guard,
            tail=tail,
        )
    return sql.SQL(
        "DELETE FROM ONLY {base} AS b USING {net} AS n "
        "WHERE {match} AND n._cow_kind = 'delete'{guard}{tail}"
    ).format(base=t.base, net=net, match=t.key_match("b", "n"), guard=guard, tail=tail)


def _apply_statement(
    conn: psycopg.Connection,
    t: EnabledTable,
    kind: str,
    cyclic: frozenset[str] | set[str] = frozenset(),
    guarded: bool = False,
) -> int:
    query = apply_query(t, kind, net_table(t), "_cow_before_n" if guarded else None)
    if query is None:
        return 0
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
                key=key_from_detail(diag.message_detail),
                constraint=diag.constraint_name,
            ) from exc
        raise CommitError(
            f"commit of {t.label} failed ({kind}): {diag.message_primary}"
            + (f" — {diag.message_detail.rstrip('.')}" if diag.message_detail else "")
            + ". Nothing was applied; fix the session (or the base) and commit again",
            table=t.label,
            key=key_from_detail(diag.message_detail),
            constraint=diag.constraint_name,
        ) from exc
    return cur.rowcount


def settle_session(
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
                net=net_table(t),
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
                "FROM (SELECT {n_keys}, pg_catalog.to_jsonb(b.*) AS b_row FROM {net} AS n "
                "      LEFT JOIN ONLY {base} AS b ON {bn_match}) AS n "
                "WHERE c._cow_session = %(sid)s AND {cn_match}"
            ).format(
                changes=t.changes,
                n_keys=t.keys("n"),
                net=net_table(t),
                base=t.base,
                bn_match=t.key_match("b", "n"),
                cn_match=t.key_match("c", "n"),
            ),
            {"sid": session_id},
        )
        restore_current(conn, t, session_id)
    # One statement drops every net table (they exist only inside this commit).
    conn.execute(
        sql.SQL("DROP TABLE {}").format(
            sql.SQL(", ").join(sql.SQL("pg_temp.{}").format(net_table(t)) for t in ordered)
        )
    )


def restore_current(conn: psycopg.Connection, t: EnabledTable, session_id: str) -> None:
    """Where a key lost its current row, the latest remaining write becomes current."""
    conn.execute(
        sql.SQL(
            "UPDATE ONLY {changes} AS c SET _cow_current = true "
            "FROM (SELECT {keys}, max(_cow_seq) AS last_seq FROM ONLY {changes} "
            "      WHERE _cow_session = %(sid)s GROUP BY {keys} "
            "      HAVING NOT pg_catalog.bool_or(_cow_current)) AS m "
            "WHERE c._cow_session = %(sid)s AND {match} AND c._cow_seq = m.last_seq"
        ).format(changes=t.changes, keys=t.keys(), match=t.key_match("c", "m")),
        {"sid": session_id},
    )


class FastPathMiss(Exception):
    """The guarded apply met a row that changed (or a clash): take the full path."""


Step = tuple[EnabledTable, str]


def commit_steps(ordered: list[EnabledTable], deletes_first: bool) -> list[Step]:
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


def report_progress(
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


def apply_in_either_order(
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
            steps = commit_steps(ordered, deletes_first=False)
            applied = _run_steps(conn, steps, cyclic)
    except CommitError as first:
        if not _frees_values(first):
            raise
        try:
            with conn.transaction():
                steps = commit_steps(ordered, deletes_first=True)
                applied = _run_steps(conn, steps, cyclic)
        except CommitError:
            raise first from first.__cause__
    report_progress(progress, steps, applied)
    return applied


def apply_guarded(
    conn: psycopg.Connection, ordered: list[EnabledTable], cyclic: set[str]
) -> dict[str, dict[str, int]]:
    """Apply with the conflict check folded into each statement.

    Each UPDATE/DELETE touches only base rows still as the session first saw them, so
    a row count short of the net rows means a conflict; an INSERT that meets an
    existing key raises (now, or when deferred constraints are checked at the end).
    Either way the caller rolls this back and takes the full path, which locks,
    reports conflicts and applies the policy.
    """
    if not ordered:
        return {}
    expected: dict[str, dict[str, int]] = {t.label: {} for t in ordered}
    counts_query = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}::text, _cow_kind, pg_catalog.count(*) FROM {} GROUP BY 2").format(
            sql.Literal(t.label), net_table(t)
        )
        for t in ordered
    )
    for label, kind, count in conn.execute(counts_query):
        expected[label][kind] = count
    try:
        applied = _run_steps(conn, commit_steps(ordered, deletes_first=False), cyclic, guarded=True)
    except CommitError as exc:
        raise FastPathMiss from exc
    for label, counts in applied.items():
        for kind, count in counts.items():
            if count != expected[label].get(kind, 0):
                raise FastPathMiss
    try:  # a deferrable key that production inserted meanwhile is a conflict too
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
    except psycopg.errors.IntegrityError as exc:
        raise FastPathMiss from exc
    return applied
