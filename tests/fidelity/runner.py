"""Run one fidelity case in each mode and judge the modes against the plain table.

A case runs three times, each time in a fresh schema of one shared database:

* ``plain``: the tables as created, never enabled (the reference);
* ``view``: the listed tables COW-enabled, no session bound (production);
* ``session``: the same, with the connection bound to a session; at the end the
  session is committed, so what a commit gives production is compared too.

The tables are enabled in one of cowsync's modes (``cow_mode``): ``in-place`` (the
table becomes ``items_base`` behind the view ``items``, so production goes through the
view too) or ``overlay`` (the table stays and production uses it directly; sessions
reach the view in the overlay schema by the search_path binding sets). A case states
what it expects in each (:meth:`Case.documented_in`, :meth:`Case.bug_in`).

Every run records *observations*, labelled values that must match the plain run:
each step's result (rows and rowcount, or SQLSTATE and constraint), what the
connection sees of each compared table at the end (``state: t``), whether the
enabled tables' production rows stayed as they were until the commit, the commit
itself, and what production sees afterwards (``final: t``). A difference is either
``documented`` (the case names the expected value and cites docs/limitations.md)
or ``DIFFERENT``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg import sql

import cowsync
from cowsync.binding import Binding, apply_binding

Mode = Literal["plain", "view", "session"]
MODES: tuple[Mode, ...] = ("plain", "view", "session")
MODE_TITLES: dict[Mode, str] = {
    "plain": "plain table",
    "view": "no session",
    "session": "in a session",
}

# cowsync's modes (cowsync.enable(mode=...)): the matrix runs every case in both.
CowMode = Literal["in-place", "overlay"]
COW_MODES: tuple[CowMode, ...] = ("in-place", "overlay")
COW_MODE_TITLES: dict[CowMode, str] = {"in-place": "in place", "overlay": "overlay"}

SAME = "same"
DOCUMENTED = "documented difference"
DIFFERENT = "DIFFERENT"
# A case that says a mode differs, but it does not (any more): the docs are stale.
STALE = "same (documented difference not seen)"


@dataclass(frozen=True)
class Result:
    """What one statement gave: a rowcount and rows, or an error's SQLSTATE and constraint."""

    rowcount: int | None = None
    rows: tuple[tuple[Any, ...], ...] | None = None
    sqlstate: str | None = None
    constraint: str | None = None
    column: str | None = None  # NOT NULL errors name a column, not a constraint

    def brief(self) -> str:
        """A short rendering for the matrix, e.g. ``2 rows`` or ``23505 items_pkey``."""
        if self.sqlstate is not None:
            name = self.constraint or self.column
            return f"{self.sqlstate} {name}" if name else self.sqlstate
        if self.rows is not None:
            return f"{len(self.rows)} row{'s' if len(self.rows) != 1 else ''}"
        return f"ok ({self.rowcount})" if self.rowcount not in (None, -1) else "ok"


def err(sqlstate: str, constraint: str | None = None) -> Result:
    """An expected error; ``constraint=None`` accepts any constraint name."""
    return Result(sqlstate=sqlstate, constraint=constraint)


def matches(expected: object, actual: object) -> bool:
    """Whether an observed value is the one a documented difference announces."""
    if isinstance(expected, Result) and expected.sqlstate is not None:
        return (
            isinstance(actual, Result)
            and actual.sqlstate == expected.sqlstate
            and (expected.constraint is None or actual.constraint == expected.constraint)
        )
    return expected == actual


@dataclass(frozen=True)
class Documented:
    """A difference docs/limitations.md describes.

    ``cite`` is a phrase of docs/limitations.md that describes it (a test checks it is
    there). ``expect`` maps observation labels to the value this mode must show there;
    ``loose`` lists label prefixes allowed to differ as a consequence (e.g. ``state:``
    after a refused statement). Any other difference is still ``DIFFERENT``.
    """

    cite: str
    expect: Mapping[str, object] = field(default_factory=dict)
    loose: tuple[str, ...] = ()


class Ctx:
    """What a step gets: the connection in its mode and a few helpers."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        dsn: str,
        mode: Mode,
        schema: str,
        session_id: str,
    ) -> None:
        self.conn = conn
        self.dsn = dsn
        self.mode = mode
        self.schema = schema
        self.session_id = session_id
        self.observations: dict[str, object] = {}
        self._others: list[psycopg.Connection[Any]] = []

    @property
    def cow(self) -> bool:
        """True in the modes that go through the COW view."""
        return self.mode != "plain"

    def qualified(self, table: str) -> str:
        """``schema.table`` for cowsync calls (names are never left to search_path)."""
        return f"{self.schema}.{table}"

    def base(self, table: str) -> str:
        """The relation production's rows of ``table`` are in, as SQL text: the table
        itself before enabling and in overlay mode, ``items_base`` in place."""
        return sql.Identifier(self.schema, base_name(self.conn, self.schema, table)).as_string(
            self.conn
        )

    def observe(self, label: str, value: object) -> None:
        """Record an observation; a repeated label gets a ``#n`` suffix."""
        key, n = label, 2
        while key in self.observations:
            key, n = f"{label} #{n}", n + 1
        self.observations[key] = value

    def sql(
        self,
        query: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        *,
        label: str | None = None,
        conn: psycopg.Connection[Any] | None = None,
        prepare: bool | None = None,
    ) -> Result:
        """Run ``query`` and observe its result under ``label`` (default: the query)."""
        result = execute(conn or self.conn, query, params, prepare=prepare)
        self.observe(label or query, result)
        return result

    def other(self, *, bound: bool = True) -> psycopg.Connection[Any]:
        """A second autocommit connection on this schema; in session mode bound to the
        same session unless ``bound=False``. Closed when the run ends."""
        other = psycopg.connect(self.dsn, autocommit=True)
        self._others.append(other)
        use_schema(other, self.schema)
        if self.mode == "session" and bound:
            apply_binding(other, Binding(self.session_id))
        return other

    @contextlib.contextmanager
    def unbound(self) -> Iterator[None]:
        """Run a block with no session bound (a pooled connection before checkout)."""
        if self.mode != "session":
            yield
            return
        apply_binding(self.conn, None)
        try:
            yield
        finally:
            apply_binding(self.conn, Binding(self.session_id))

    def close_others(self) -> None:
        for other in self._others:
            other.close()
        self._others.clear()


Step = str | Callable[[Ctx], object]


@dataclass(frozen=True)
class PerMode:
    """A step that differs between the plain table and the view (e.g. a documented
    helper in place of a statement PostgreSQL refuses on views)."""

    plain: Step | None
    cow: Step | None
    label: str


@dataclass(frozen=True)
class Case:
    """One statement or short sequence, and the tables it needs.

    ``setup`` creates and fills the tables (run with the case's schema first on the
    search path); ``enable`` lists the tables COW-enabled in the view and session
    modes; ``tables`` those whose contents are compared (default: ``enable``).
    ``documented`` maps a mode to the difference the docs describe in place; ``bug``
    (a reason starting ``engine bug:`` or ``documented limitation:``) marks a case whose
    test is an expected failure in place.

    ``overlay`` and ``overlay_bug`` say the same for overlay mode. By default overlay
    mode expects what follows from its design: production uses the table itself, so no
    difference without a session, and a session goes through a view as in place, so
    the same documented difference and bug as in place there. A case whose overlay run
    differs from that says so: ``overlay`` replaces the derived expectations (``{}``:
    same as the table in both), ``overlay_bug`` the derived bug (``""``: none).
    """

    name: str
    group: str
    title: str
    setup: str
    steps: tuple[Step | PerMode, ...]
    enable: tuple[str, ...] = ("items",)
    tables: tuple[str, ...] | None = None
    documented: Mapping[Mode, Documented] = field(default_factory=dict)
    bug: str | None = None
    overlay: Mapping[Mode, Documented] | None = None
    overlay_bug: str | None = None

    @property
    def compared_tables(self) -> tuple[str, ...]:
        return self.tables if self.tables is not None else self.enable

    def documented_in(self, cow_mode: CowMode) -> Mapping[Mode, Documented]:
        """The documented differences of each mode when the tables are enabled in
        ``cow_mode``."""
        if cow_mode == "in-place":
            return self.documented
        if self.overlay is not None:
            return self.overlay
        return {m: d for m, d in self.documented.items() if m == "session"}

    def bug_in(self, cow_mode: CowMode) -> str | None:
        """Why the case's test is an expected failure in ``cow_mode`` (None: it is not)."""
        if cow_mode == "in-place" or self.overlay_bug is None:
            return self.bug
        return self.overlay_bug or None


def execute(
    conn: psycopg.Connection[Any],
    query: str,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
    *,
    prepare: bool | None = None,
) -> Result:
    """Run one statement and capture what it gave (errors included)."""
    try:
        cur = conn.execute(query, params, prepare=prepare)
    except psycopg.Error as exc:
        return error_result(exc)
    rows = tuple(tuple(r) for r in cur.fetchall()) if cur.description is not None else None
    return Result(rowcount=cur.rowcount, rows=rows)


def error_result(exc: psycopg.Error) -> Result:
    """The parts of an error a client can act on: SQLSTATE, constraint, column."""
    return Result(
        sqlstate=exc.diag.sqlstate,
        constraint=exc.diag.constraint_name,
        column=exc.diag.column_name,
    )


def use_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))


def contents(
    conn: psycopg.Connection[Any], table: str, *, only: bool = False
) -> tuple[tuple[Any, ...], ...] | Result:
    """Every row of ``table`` as this connection sees it, in a stable order
    (``only``: without inheriting tables, e.g. a base without its change store)."""
    query = sql.SQL("SELECT * FROM {}{}").format(
        sql.SQL("ONLY " if only else ""), sql.Identifier(table)
    )
    try:
        rows = conn.execute(query).fetchall()
    except psycopg.Error as exc:
        return Result(sqlstate=exc.diag.sqlstate)
    return tuple(sorted((tuple(r) for r in rows), key=repr))


def _rollback_if_open(conn: psycopg.Connection[Any]) -> None:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()


def base_name(conn: psycopg.Connection[Any], schema: str, table: str) -> str:
    """The name of the relation that holds ``schema.table``'s production rows."""
    row = conn.execute(
        "SELECT base_name FROM cowsync.tables WHERE schema_name = %s AND table_name = %s",
        [schema, table],
    ).fetchone()
    return str(row[0]) if row is not None else table


def run_case(
    dsn: str, case: Case, mode: Mode, tag: str, cow_mode: CowMode = "in-place"
) -> dict[str, object]:
    """Run ``case`` in ``mode`` in the database at ``dsn`` (engine deployed), its tables
    enabled in ``cow_mode``; return its observations. Everything the run created is
    removed before it returns.

    Each run has its own connection, so settings, prepared statements and cursors
    never carry over from one run to the next.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        return _run_case(conn, dsn, case, mode, tag, cow_mode)


def _run_case(
    conn: psycopg.Connection[Any],
    dsn: str,
    case: Case,
    mode: Mode,
    tag: str,
    cow_mode: CowMode,
) -> dict[str, object]:
    schema = f"fid_{tag}_{mode}"
    session_id = f"fid-{tag}"
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    use_schema(conn, schema)
    ctx = Ctx(conn, dsn, mode, schema, session_id)
    try:
        conn.execute(case.setup)
        if ctx.cow:
            for table in case.enable:
                cowsync.enable(conn, ctx.qualified(table), mode=cow_mode)
        initial = _production(conn, case, mode, schema)
        if mode == "session":
            apply_binding(conn, Binding(session_id))
        try:
            for step in case.steps:
                _run_step(ctx, step)
        finally:
            _rollback_if_open(conn)
            ctx.close_others()
        for table in case.compared_tables:
            ctx.observe(f"state: {table}", contents(conn, table))
        apply_binding(conn, None)
        ctx.observe(
            "production untouched until commit",
            mode != "session" or _production(conn, case, mode, schema) == initial,
        )
        ctx.observe("commit", _commit(conn, session_id) if mode == "session" else "ok")
        for table in case.compared_tables:
            ctx.observe(f"final: {table}", contents(conn, table))
    finally:
        _rollback_if_open(conn)
        apply_binding(conn, None)
        _drop(conn, schema)
    return ctx.observations


def _production(conn: psycopg.Connection[Any], case: Case, mode: Mode, schema: str) -> object:
    """The enabled tables' production rows (only the session run needs them); read
    unbound, without inheriting tables (the change store, in place)."""
    if mode != "session":
        return None
    return [contents(conn, base_name(conn, schema, table), only=True) for table in case.enable]


def _run_step(ctx: Ctx, step: Step | PerMode) -> None:
    if isinstance(step, PerMode):
        # The two sides run different things, so only success or the error compares.
        chosen = step.cow if ctx.cow else step.plain
        if chosen is None:
            ctx.observe(step.label, "-")
            return
        outcome = execute(ctx.conn, chosen) if isinstance(chosen, str) else chosen(ctx)
        if isinstance(outcome, Result) and outcome.sqlstate is not None:
            ctx.observe(step.label, err(outcome.sqlstate, outcome.constraint))
        else:
            ctx.observe(step.label, "ok")
        return
    if isinstance(step, str):
        ctx.sql(step)
        return
    step(ctx)


def _commit(conn: psycopg.Connection[Any], session_id: str) -> str:
    try:
        cowsync.commit(conn, session_id)
    except cowsync.SessionNotFoundError:
        return "ok"  # the session wrote nothing: nothing to apply, as for the table
    except cowsync.CowError as exc:
        return f"{type(exc).__name__}"
    except psycopg.Error as exc:
        return f"error {exc.diag.sqlstate}"
    return "ok"


def _drop(conn: psycopg.Connection[Any], schema: str) -> None:
    """Disable what the run enabled (the registry must not outlive its tables), then
    drop the schema."""
    enabled = conn.execute(
        "SELECT table_name, view_schema FROM cowsync.tables WHERE schema_name = %s", [schema]
    ).fetchall()
    overlay_schemas = {
        view_schema for _, view_schema in enabled if view_schema not in (None, schema)
    }
    for table, _ in enabled:
        try:
            cowsync.disable(conn, f"{schema}.{table}", force=True)
        except (cowsync.CowError, psycopg.Error):
            # A case may leave a table disable cannot handle (e.g. a view renamed
            # behind the engine's back); its registry row must still go.
            _rollback_if_open(conn)
            conn.execute(
                "DELETE FROM cowsync.tables WHERE schema_name = %s AND table_name = %s",
                [schema, table],
            )
    conn.execute("RESET ALL")
    for overlay_schema in sorted(overlay_schemas):  # what a failed disable left behind
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(overlay_schema))
        )
    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


# --- judging ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """How one mode compares with the plain table."""

    verdict: str
    differences: dict[str, tuple[object, object]]  # label -> (plain, this mode)
    unexplained: tuple[str, ...]  # labels that differ and no documented difference covers


_MISSING = "<not observed>"


def judge(
    plain: Mapping[str, object], other: Mapping[str, object], documented: Documented | None
) -> Judgement:
    """Compare a mode's observations with the plain table's."""
    labels = list(plain) + [k for k in other if k not in plain]
    differences = {
        k: (plain.get(k, _MISSING), other.get(k, _MISSING))
        for k in labels
        if plain.get(k, _MISSING) != other.get(k, _MISSING)
    }
    if documented is None:
        verdict = DIFFERENT if differences else SAME
        return Judgement(verdict, differences, tuple(differences))
    unexplained = [
        k
        for k in differences
        if k not in documented.expect and not k.startswith(documented.loose or ("\0",))
    ]
    unexplained += [
        k
        for k, expected in documented.expect.items()
        if k not in differences or not matches(expected, other.get(k, _MISSING))
    ]
    if not differences:
        return Judgement(STALE, differences, tuple(unexplained))
    verdict = DIFFERENT if unexplained else DOCUMENTED
    return Judgement(verdict, differences, tuple(dict.fromkeys(unexplained)))


@dataclass(frozen=True)
class CaseOutcome:
    """A case's observations in every mode and how the view modes compare."""

    case: Case
    observations: dict[Mode, dict[str, object]]
    judgements: dict[Mode, Judgement]
    cow_mode: CowMode = "in-place"

    @property
    def documented(self) -> Mapping[Mode, Documented]:
        return self.case.documented_in(self.cow_mode)

    @property
    def bug(self) -> str | None:
        return self.case.bug_in(self.cow_mode)

    @property
    def verdict(self) -> str:
        verdicts = [j.verdict for j in self.judgements.values()]
        for worst in (DIFFERENT, STALE, DOCUMENTED):
            if worst in verdicts:
                return worst
        return SAME

    def explain(self) -> str:
        """Every difference, for an assertion message."""
        lines = []
        for mode, judgement in self.judgements.items():
            for label, (plain, value) in judgement.differences.items():
                flag = "UNEXPLAINED" if label in judgement.unexplained else "documented"
                lines.append(f"[{mode}] {label}: plain={plain!r} {mode}={value!r} ({flag})")
            for label in judgement.unexplained:
                if label not in judgement.differences:
                    expected = self.documented[mode].expect.get(label)
                    lines.append(f"[{mode}] {label}: documented as {expected!r}, not seen")
        return "\n".join(lines)


def run_all_modes(dsn: str, case: Case, tag: str, cow_mode: CowMode = "in-place") -> CaseOutcome:
    """Run ``case`` in every mode, its tables enabled in ``cow_mode``, and judge the
    view modes."""
    observations = {mode: run_case(dsn, case, mode, tag, cow_mode) for mode in MODES}
    documented = case.documented_in(cow_mode)
    judgements = {
        mode: judge(observations["plain"], observations[mode], documented.get(mode))
        for mode in MODES[1:]
    }
    return CaseOutcome(case, observations, judgements, cow_mode)
