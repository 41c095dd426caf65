"""Benchmark: per-statement cost of the hot paths through a COW view.

Measures, in one run on one fresh database, the median time of five prepared
statements -- PK read, range scan (100 rows), single-row insert, update and
delete -- on:

* a plain table (the reference),
* cowsync's view with no session (production),
* cowsync's view inside sessions holding 0, 1k and 100k changed rows,
* agent-cow 0.2.0's view on an identical table, with no session and inside a
  session with 1k changed rows,

for each base size (10k and 100k rows by default; 1M with ``--sizes``). It
prints Markdown tables of medians, ratios to the plain table and to agent-cow,
the EXPLAIN total cost of the PK read for each variant, and the targets of
issue 3 (production PK read <= 1.05x, session PK read <= 1.3x, session
single-row write <= 2.5x of the plain table).

How the numbers are kept comparable:

* every variant has its own connection opened with the same settings
  (autocommit, ``-c jit=...``); session variables are set once per connection,
  never per statement;
* every variant runs the same statement text (only the schema differs) as a
  server-side prepared statement, with the same random keys in the same order;
* variants take short turns (50 rounds of 20 runs by default), so changes in
  machine load hit all of them alike;
* "pooled connection" variants first run every statement with no session and
  are bound afterwards, as a connection from a pool is: their prepared
  statements keep the plans an unbound borrower made;
* only the statement is timed (client round trip included). Each write runs
  in its own transaction that is rolled back untimed, so every variant sees
  the same table, sessions keep their size, and commit/fsync is left out. The
  rollback bypasses psycopg, which would otherwise drop every prepared
  statement on ROLLBACK and make each write parse and plan again;
* slow paths (agent-cow's) get a time budget per cell instead of the full
  iteration count (at least 5 samples); the sample count is printed;
* when the server runs on this host, the backend's own CPU time per statement
  is read from /proc and reported next to the wall time: on a shared machine
  it moves far less with other people's load.

Run (it creates and drops its own database)::

    .venv/bin/python bench/view_paths.py --dsn postgresql://postgres@127.0.0.1/postgres
    .venv/bin/python bench/view_paths.py --dsn ... --jit off
    .venv/bin/python bench/view_paths.py --dsn ... --sizes 1M

Not a test: pytest collects only ``tests/``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import _agentcow
import psycopg
from _backend_cpu import BackendCpu
from _report import (
    code_note,
    human_count,
    machine_note,
    markdown_table,
    median,
    ms,
    parse_counts,
    percentile,
    ratio,
)
from _scratchdb import connect, scratch_database
from psycopg import pq, sql
from psycopg.types.numeric import Int4

import cowsync
from cowsync.binding import Binding, apply_binding

COLUMNS = "id, sku, qty, price, note"
RANGE_SPAN = 200  # base keys are even, so a span of 200 holds 100 rows
MIN_SAMPLES = 5  # even the slowest path gets this many timed runs
SESSION_BATCH = 2_000  # rows per statement when writing a session

Sample = tuple[float, float]  # (client wall seconds, server backend CPU seconds)


# --- statements ---------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """One measured statement; ``{t}`` stands for the schema-qualified table."""

    key: str
    label: str
    template: str
    writes: bool


STATEMENTS = (
    Statement("pk_read", "PK read", f"SELECT {COLUMNS} FROM {{t}} WHERE id = %s", False),
    Statement(
        "range_scan",
        "range scan (100 rows)",
        f"SELECT {COLUMNS} FROM {{t}} WHERE id >= %s AND id < %s ORDER BY id",
        False,
    ),
    Statement(
        "insert",
        "insert",
        f"INSERT INTO {{t}} ({COLUMNS}) VALUES (%s, %s, %s, %s, %s)",
        True,
    ),
    Statement("update", "update", "UPDATE {t} SET qty = qty + 1, note = %s WHERE id = %s", True),
    Statement("delete", "delete", "DELETE FROM {t} WHERE id = %s", True),
)


def statement_params(stmt: Statement, rows: int, count: int, seed: int) -> list[tuple[Any, ...]]:
    """``count`` parameter tuples for ``stmt`` on a table of ``rows`` base rows.

    Base keys are the even numbers 2..2*rows; inserts use odd keys above the
    base range, which no session holds, so an insert never collides. Integers
    are sent as int4 whatever their size: psycopg would pick int2 for small
    values, and each parameter type is a prepared statement of its own.
    """
    rng = random.Random(f"{seed}:{stmt.key}:{rows}")

    def base_key() -> Int4:
        return Int4(2 * rng.randint(1, rows))

    if stmt.key == "pk_read":
        return [(base_key(),) for _ in range(count)]
    if stmt.key == "range_scan":
        out = []
        for _ in range(count):
            low = 2 * rng.randint(1, max(1, rows - RANGE_SPAN // 2))
            out.append((Int4(low), Int4(low + RANGE_SPAN)))
        return out
    if stmt.key == "insert":
        return [
            (Int4(2 * rows + 2 * rng.randint(0, rows) + 1), "sku-new", Int4(1), 9.99, "bench")
            for _ in range(count)
        ]
    if stmt.key == "update":
        return [("bench", base_key()) for _ in range(count)]
    return [(base_key(),) for _ in range(count)]


# --- variants -------------------------------------------------------------------------


@dataclass
class Variant:
    """A table (plain, cowsync or agent-cow) read through one connection and binding."""

    key: str
    label: str
    engine: str  # "plain", "cowsync" or "agent-cow"
    schema: str
    session_rows: int | None = None  # None: no session
    session_id: str | None = None
    operation_id: str | None = None
    peer: str | None = None  # the agent-cow variant this one is compared with
    # Used with no session before being bound, as a pooled connection is: its
    # prepared statements were planned by an earlier, unbound borrower.
    pooled: bool = False
    conn: psycopg.Connection[Any] | None = None
    cpu: BackendCpu | None = None
    queries: dict[str, str] = field(default_factory=dict)

    @property
    def table(self) -> sql.Composed:
        """The schema-qualified table (or view) this variant reads and writes."""
        return sql.Identifier(self.schema, "items")

    def connect(self, dsn: str, jit: str, rows: int) -> None:
        """Open this variant's connection and bind it to its session, once."""
        conn = connect(dsn, autocommit=True, options=f"-c jit={jit}")
        self.conn = conn
        self.cpu = BackendCpu(conn.info.backend_pid)
        for stmt in STATEMENTS:
            self.queries[stmt.key] = sql.SQL(stmt.template).format(t=self.table).as_string(conn)
        if self.pooled:
            for stmt in STATEMENTS:
                run_chunk(self, stmt, statement_params(stmt, rows, 10, 7), budget=10.0)
        if self.session_id is not None:
            if self.engine == "cowsync":
                apply_binding(conn, Binding(self.session_id, self.operation_id))
            else:
                _agentcow.set_session(conn, self.session_id, self.operation_id)

    def close(self) -> None:
        """Close the variant's connection."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _session_keys(rows: int, changed: int) -> tuple[list[int], list[int], list[int]]:
    """Keys a session of ``changed`` rows updates, deletes and inserts.

    70% updates and 10% deletes of base rows, 20% inserts at odd keys, each kind
    spread evenly over the key space.
    """
    touched = changed - changed // 5
    base = [2 * (1 + (j * rows) // touched) for j in range(touched)] if touched else []
    updates = [k for j, k in enumerate(base) if j % 8 != 7]
    deletes = [k for j, k in enumerate(base) if j % 8 == 7]
    inserts_n = changed - touched
    inserts = [2 * ((j * rows) // inserts_n) + 1 for j in range(inserts_n)] if inserts_n else []
    return updates, deletes, inserts


def _write_session(conn: psycopg.Connection[Any], table: sql.Composed, rows: int, n: int) -> None:
    """Write a session of ``n`` changed rows, in autocommitted batches.

    Batches keep any per-transaction cost of the engine (locks, memory) at the
    size of an agent's statement rather than of the whole session.
    """
    updates, deletes, inserts = _session_keys(rows, n)
    statements = (
        (sql.SQL("UPDATE {} SET qty = qty + 1, note = 'session' WHERE id = ANY(%s)"), updates),
        (sql.SQL("DELETE FROM {} WHERE id = ANY(%s)"), deletes),
        (
            sql.SQL(
                "INSERT INTO {} (" + COLUMNS + ") "
                "SELECT g, 'new-' || g, 1, 1.00, 'session' FROM unnest(%s::int[]) AS g"
            ),
            inserts,
        ),
    )
    for template, keys in statements:
        for start in range(0, len(keys), SESSION_BATCH):
            conn.execute(template.format(table), (keys[start : start + SESSION_BATCH],))


def _fits(rows: int, changed: int) -> bool:
    """A session's updates and deletes must fit in the base (80% of its rows)."""
    return changed - changed // 5 <= rows


def build_variants(
    dsn: str, rows: int, session_sizes: Sequence[int], agent_cow_session: int, log: Logger
) -> list[Variant]:
    """Create the three identical tables for one size, the sessions, and the variants."""
    tag = human_count(rows).lower()
    plain, cow, peer = f"plain_{tag}", f"cs_{tag}", f"ac_{tag}"
    with connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        for schema in (plain, cow, peer):
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id integer PRIMARY KEY, sku text NOT NULL, "
                "qty integer NOT NULL DEFAULT 0, price numeric(10,2) NOT NULL, note text)"
            ).format(sql.Identifier(plain, "items"))
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} SELECT 2 * g, 'sku-' || g, g %% 97, (g %% 1000) / 10.0, 'base' "
                "FROM generate_series(1, %s) AS g"
            ).format(sql.Identifier(plain, "items")),
            (rows,),
        )
        for schema in (cow, peer):
            conn.execute(
                sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                    sql.Identifier(schema, "items"), sql.Identifier(plain, "items")
                )
            )
            conn.execute(
                sql.SQL("INSERT INTO {} SELECT * FROM {} ORDER BY id").format(
                    sql.Identifier(schema, "items"), sql.Identifier(plain, "items")
                )
            )
        # A second enabled table lets each session register its measuring
        # operation without a single row in items ("0 changed rows" stays 0).
        conn.execute(
            sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY)").format(sql.Identifier(cow, "aux"))
        )
        # agent-cow first: its deploy step takes every "<t>_base" + "<t>_changes"
        # + view "<t>" for one of its own tables and fails on cowsync's.
        _agentcow.setup_agent_cow(dsn, peer, "items", unsafe_canonical_writes=True)
        cowsync.deploy(conn)
        cowsync.enable(conn, f"{cow}.items")
        cowsync.enable(conn, f"{cow}.aux")
        log(f"  tables: {human_count(rows)} rows x 3 in {time.perf_counter() - started:.1f}s")

        variants = [
            Variant("plain", "plain table", "plain", plain),
            Variant("cs", "cowsync, no session", "cowsync", cow, peer="ac"),
        ]
        ac_key = f"ac_s{human_count(agent_cow_session)}"
        for changed in session_sizes:
            if not _fits(rows, changed):
                log(f"  cowsync session {human_count(changed)}: skipped (larger than the table)")
                continue
            sid, setup_op, measure_op = (str(uuid.uuid4()) for _ in range(3))
            started = time.perf_counter()
            with cowsync.session(conn, sid, setup_op):
                _write_session(conn, sql.Identifier(cow, "items"), rows, changed)
            with cowsync.session(conn, sid, measure_op):
                conn.execute(
                    sql.SQL("INSERT INTO {} VALUES (1)").format(sql.Identifier(cow, "aux"))
                )
            log(
                f"  cowsync session {human_count(changed)}: written in "
                f"{time.perf_counter() - started:.1f}s"
            )
            variants.append(
                Variant(
                    f"cs_s{human_count(changed)}",
                    f"cowsync, session, {human_count(changed)} changed",
                    "cowsync",
                    cow,
                    changed,
                    sid,
                    measure_op,
                    peer=ac_key,
                )
            )
            if changed:
                variants.append(
                    Variant(
                        f"cs_s{human_count(changed)}_pooled",
                        f"cowsync, session, {human_count(changed)} changed, pooled connection",
                        "cowsync",
                        cow,
                        changed,
                        sid,
                        measure_op,
                        peer=ac_key,
                        pooled=True,
                    )
                )

        variants.append(Variant("ac", "agent-cow, no session", "agent-cow", peer))
        if _fits(rows, agent_cow_session):
            sid, op = str(uuid.uuid4()), str(uuid.uuid4())
            started = time.perf_counter()
            _agentcow.set_session(conn, sid, op)
            _write_session(conn, sql.Identifier(peer, "items"), rows, agent_cow_session)
            _agentcow.clear_session(conn)
            log(
                f"  agent-cow session {human_count(agent_cow_session)}: written in "
                f"{time.perf_counter() - started:.1f}s"
            )
            variants.append(
                Variant(
                    ac_key,
                    f"agent-cow, session, {human_count(agent_cow_session)} changed",
                    "agent-cow",
                    peer,
                    agent_cow_session,
                    sid,
                    op,
                )
            )
        # Planner statistics and visibility as after autovacuum, for every table alike.
        conn.execute("VACUUM ANALYZE")
    return variants


def drop_size(dsn: str, variants: Sequence[Variant]) -> None:
    """Disable and drop one size's tables before the next size is built."""
    schemas = sorted({v.schema for v in variants})
    with connect(dsn, autocommit=True) as conn:
        for v in variants:
            if v.engine == "cowsync" and v.session_id is None:
                cowsync.disable(conn, f"{v.schema}.items", force=True)
                cowsync.disable(conn, f"{v.schema}.aux", force=True)
        for schema in schemas:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


# --- measuring --------------------------------------------------------------------------


def _rollback_keeping_prepared(conn: psycopg.Connection[Any]) -> None:
    """ROLLBACK straight through libpq.

    psycopg forgets (and DEALLOCATEs) every prepared statement after a ROLLBACK
    it sees, which would make each timed write parse and plan again. Server-side
    prepared statements survive a rollback, so sending it past psycopg keeps the
    writes prepared like the reads.
    """
    result = conn.pgconn.exec_(b"ROLLBACK")
    if result.status != pq.ExecStatus.COMMAND_OK:
        raise psycopg.OperationalError(f"ROLLBACK failed: {result.error_message!r}")


def run_chunk(
    v: Variant, stmt: Statement, params: Sequence[tuple[Any, ...]], budget: float
) -> list[Sample]:
    """Time ``stmt`` once per parameter tuple until the list or the budget runs out.

    Each sample is (wall seconds seen by the client, server CPU seconds).
    """
    conn, cpu = v.conn, v.cpu
    assert conn is not None and cpu is not None
    query = v.queries[stmt.key]
    cur = conn.cursor()
    samples: list[Sample] = []
    deadline = time.perf_counter() + budget
    for p in params:
        if stmt.writes:
            conn.execute("BEGIN")
        c0 = cpu.now()
        t0 = time.perf_counter()
        cur.execute(query, p, prepare=True)
        if not stmt.writes:
            cur.fetchall()
        t1 = time.perf_counter()
        c1 = cpu.now()
        if stmt.writes:
            _rollback_keeping_prepared(conn)
        samples.append((t1 - t0, (c1 - c0) / 1e9))
        if t1 > deadline:
            break
    return samples


def measure_statement(
    variants: Sequence[Variant],
    stmt: Statement,
    params: Sequence[tuple[Any, ...]],
    warmup: Sequence[tuple[Any, ...]],
    rounds: int,
    budget: float,
) -> dict[str, list[Sample]]:
    """Samples per variant: warm-up first, then rounds in which the variants take turns."""
    for v in variants:
        # At least 6 runs: psycopg prepares at once, and PostgreSQL settles on a
        # generic or custom plan after the 5th execution of a prepared statement.
        run_chunk(v, stmt, warmup[:6], budget)
        run_chunk(v, stmt, warmup[6:], budget / 4)
    samples: dict[str, list[Sample]] = {v.key: [] for v in variants}
    spent = dict.fromkeys(samples, 0.0)
    chunk = max(1, len(params) // rounds)
    order = list(variants)
    for r in range(rounds):
        part = params[r * chunk : (r + 1) * chunk]
        for v in order:
            got = samples[v.key]
            if spent[v.key] >= budget and len(got) >= MIN_SAMPLES:
                continue  # a slow path has had its share of the time
            started = time.perf_counter()
            got.extend(run_chunk(v, stmt, part, budget / rounds))
            spent[v.key] += time.perf_counter() - started
        order = order[1:] + order[:1]  # nobody always runs first after a pause
    return samples


@dataclass(frozen=True)
class PlanInfo:
    """EXPLAIN ANALYZE of one PK read: estimated total cost, JIT, execution time."""

    total_cost: float
    jit_functions: int
    jit_ms: float
    execution_ms: float


def explain_pk_read(v: Variant, key: int) -> PlanInfo:
    """EXPLAIN (ANALYZE) the PK read on the variant's own connection and binding."""
    conn = v.conn
    assert conn is not None
    query = sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) SELECT " + COLUMNS + " FROM {} WHERE id = %s")
    row = conn.execute(query.format(v.table), (key,)).fetchone()
    assert row is not None
    doc = row[0][0]
    jit = doc.get("JIT", {})
    return PlanInfo(
        float(doc["Plan"]["Total Cost"]),
        int(jit.get("Functions", 0)),
        float(jit.get("Timing", {}).get("Total", 0.0)),
        float(doc["Execution Time"]),
    )


def check_same_answers(variants: Sequence[Variant], keys: Sequence[int]) -> list[str]:
    """Plain, cowsync and agent-cow must return the same rows for the same reads:
    no-session variants the base, equal-sized sessions the same overlay."""
    problems: list[str] = []
    groups: dict[object, list[Variant]] = {}
    for v in variants:
        groups.setdefault(v.session_rows, []).append(v)
    for group in groups.values():
        if len(group) < 2:
            continue
        for key in keys:
            answers = {}
            for v in group:
                assert v.conn is not None
                rows = v.conn.execute(
                    sql.SQL(
                        "SELECT " + COLUMNS + " FROM {} WHERE id >= %s AND id < %s ORDER BY id"
                    ).format(v.table),
                    (key, key + RANGE_SPAN),
                    prepare=False,  # leave the measured statements' plans alone
                ).fetchall()
                answers[v.key] = rows
            if len({repr(a) for a in answers.values()}) > 1:
                problems.append(f"different answers at key {key}: {sorted(answers)}")
    return problems


# --- report ---------------------------------------------------------------------------


Logger = Callable[[str], None]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class SizeResult:
    """Everything measured for one base size."""

    rows: int
    variants: list[Variant]
    samples: dict[str, dict[str, list[Sample]]]  # variant -> statement -> samples
    plans: dict[str, PlanInfo]

    def median(self, variant: str, stmt: str, cpu: bool = False) -> float | None:
        """Median wall time (or server CPU time) in seconds."""
        got = self.samples.get(variant, {}).get(stmt)
        return median([s[1] if cpu else s[0] for s in got]) if got else None

    @property
    def has_cpu(self) -> bool:
        return all(v.cpu is not None and v.cpu.available for v in self.variants)


def size_report(res: SizeResult, jit: str) -> str:
    """The Markdown section for one size: medians, ratios, plan costs, sample counts."""
    out = [f"### {human_count(res.rows)} base rows, jit={jit}", ""]
    header = ["variant", *(s.label for s in STATEMENTS), "PK read plan cost", "JIT"]
    rows = []
    for v in res.variants:
        cells: list[str] = [v.label]
        for stmt in STATEMENTS:
            med = res.median(v.key, stmt.key)
            base = res.median("plain", stmt.key)
            cells.append(ms(med) if v.key == "plain" else f"{ms(med)} ({ratio(med, base)})")
        plan = res.plans.get(v.key)
        cells.append(f"{plan.total_cost:,.2f}" if plan else "—")
        cells.append(
            f"{plan.jit_functions} fn, {plan.jit_ms:.0f} ms"
            if plan and plan.jit_functions
            else "no"
        )
        rows.append(cells)
    out.append("Median ms per statement (ratio to the plain table):")
    out.append("")
    out.append(markdown_table(header, rows))
    out.append("")
    if res.has_cpu:
        cpu_rows = []
        for v in res.variants:
            cells = [v.label]
            for stmt in STATEMENTS:
                med = res.median(v.key, stmt.key, cpu=True)
                base = res.median("plain", stmt.key, cpu=True)
                cells.append(us(med) if v.key == "plain" else f"{us(med)} ({ratio(med, base)})")
            cpu_rows.append(cells)
        out.append(
            "Server CPU per statement, median µs (ratio to the plain table); the backend's "
            "own time, which other load on the machine hardly moves:"
        )
        out.append("")
        out.append(markdown_table(header[:-2], cpu_rows))
        out.append("")
    peer_rows = []
    for v in res.variants:
        if v.peer is None or v.peer not in res.samples:
            continue
        peer_label = next(p.label for p in res.variants if p.key == v.peer)
        peer_rows.append(
            [v.label, peer_label]
            + [ratio(res.median(v.key, s.key), res.median(v.peer, s.key)) for s in STATEMENTS]
        )
    if peer_rows:
        out.append("cowsync relative to agent-cow (below 1 = cowsync faster):")
        out.append("")
        out.append(markdown_table(["variant", "vs", *(s.label for s in STATEMENTS)], peer_rows))
        out.append("")
    counts = []
    for v in res.variants:
        cells = []
        for s in STATEMENTS:
            got = [w for w, _ in res.samples[v.key][s.key]]
            cells.append(f"{len(got)} / {ms(percentile(got, 10))} / {ms(percentile(got, 90))}")
        counts.append([v.label, *cells])
    out.append("Samples / p10 / p90 ms (p10 is close to the unloaded cost on a busy machine):")
    out.append("")
    out.append(markdown_table(["variant", *(s.label for s in STATEMENTS)], counts))
    out.append("")
    return "\n".join(out)


def target_report(results: Sequence[SizeResult]) -> str:
    """Issue 3's targets, checked on every size and session."""
    lines = [
        "### Targets (issue 3)",
        "",
        "Judged on the median. On a busy machine waiting for a CPU adds the same time to "
        "every statement and pulls ratios towards 1; the p10 and server-CPU ratios show "
        "what the median hides.",
        "",
    ]
    rows = []
    for res in results:
        size = human_count(res.rows)
        plain = {s.key: res.median("plain", s.key) for s in STATEMENTS}
        checks: list[tuple[str, str, float]] = [("production PK read", "cs", 1.05)]
        for v in res.variants:
            if v.engine == "cowsync" and v.session_id is not None:
                checks.append((f"PK read, {v.label.removeprefix('cowsync, ')}", v.key, 1.3))
        for name, key, limit in checks:
            med = res.median(key, "pk_read")
            value = med / plain["pk_read"] if med and plain["pk_read"] else None
            rows.append(
                [
                    size,
                    name,
                    f"≤ {limit}x",
                    ratio(med, plain["pk_read"]),
                    _verdict(value, limit),
                    _p10_ratio(res, key, "pk_read"),
                    _cpu_ratio(res, key, "pk_read"),
                ]
            )
        for v in res.variants:
            if v.engine != "cowsync" or v.session_id is None:
                continue
            for s in ("insert", "update", "delete"):
                med = res.median(v.key, s)
                value = med / plain[s] if med and plain[s] else None
                rows.append(
                    [
                        size,
                        f"{s}, {v.label.removeprefix('cowsync, ')}",
                        "≤ 2.5x",
                        ratio(med, plain[s]),
                        _verdict(value, 2.5),
                        _p10_ratio(res, v.key, s),
                        _cpu_ratio(res, v.key, s),
                    ]
                )
    lines.append(
        markdown_table(
            ["size", "path", "target", "median ratio", "", "p10 ratio", "server CPU ratio"], rows
        )
    )
    return "\n".join(lines)


def us(seconds: float | None) -> str:
    """Seconds as whole microseconds."""
    return "—" if seconds is None else f"{seconds * 1e6:,.0f}"


def _p10_ratio(res: SizeResult, variant: str, stmt: str) -> str:
    mine = [w for w, _ in res.samples[variant][stmt]]
    plain = [w for w, _ in res.samples["plain"][stmt]]
    return ratio(percentile(mine, 10), percentile(plain, 10))


def _cpu_ratio(res: SizeResult, variant: str, stmt: str) -> str:
    if not res.has_cpu:
        return "—"
    return ratio(res.median(variant, stmt, cpu=True), res.median("plain", stmt, cpu=True))


def _verdict(value: float | None, limit: float) -> str:
    if value is None:
        return "—"
    return "met" if value <= limit else "**missed**"


# --- main -----------------------------------------------------------------------------


def run_size(dsn: str, rows: int, args: argparse.Namespace, log: Logger) -> SizeResult:
    """Build, check, measure and tear down one base size."""
    log(f"size {human_count(rows)}:")
    variants = build_variants(dsn, rows, args.sessions, args.agent_cow_session, log)
    try:
        for v in variants:
            v.connect(dsn, args.jit, rows)
        rng = random.Random(args.seed)
        problems = check_same_answers(
            variants, [2 * rng.randint(1, max(1, rows - RANGE_SPAN)) for _ in range(20)]
        )
        if problems:
            raise SystemExit(
                "variants disagree, numbers would be meaningless:\n" + "\n".join(problems)
            )
        samples: dict[str, dict[str, list[Sample]]] = {v.key: {} for v in variants}
        for stmt in STATEMENTS:
            started = time.perf_counter()
            params = statement_params(stmt, rows, args.iterations, args.seed)
            warmup = statement_params(stmt, rows, args.warmup, args.seed + 1)
            got = measure_statement(variants, stmt, params, warmup, args.rounds, args.budget)
            for key, values in got.items():
                samples[key][stmt.key] = values
            log(f"  {stmt.label}: {time.perf_counter() - started:.1f}s")
        pk = statement_params(STATEMENTS[0], rows, 1, args.seed + 2)[0][0]
        plans = {v.key: explain_pk_read(v, pk) for v in variants}
        return SizeResult(rows, variants, samples, plans)
    finally:
        for v in variants:
            v.close()
        drop_size(dsn, variants)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; sizes and session sizes accept 10k / 1M forms."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dsn", required=True, help="any database on the server (used to create ours)"
    )
    parser.add_argument("--sizes", default="10k,100k", help="base rows, e.g. 10k,100k,1M")
    parser.add_argument("--sessions", default="0,1k,100k", help="changed rows per cowsync session")
    parser.add_argument(
        "--agent-cow-session", default="1k", help="changed rows in agent-cow's session"
    )
    parser.add_argument(
        "--jit", choices=("on", "off"), default="on", help="jit for every connection"
    )
    parser.add_argument("--iterations", type=int, default=1000, help="timed runs per statement")
    parser.add_argument("--warmup", type=int, default=100, help="untimed runs first")
    parser.add_argument(
        "--rounds", type=int, default=50, help="turns the variants take (short turns share load)"
    )
    parser.add_argument(
        "--budget", type=float, default=5.0, help="seconds per variant and statement (slow paths)"
    )
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--json", help="also write raw medians to this file")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    args = parser.parse_args(argv)
    args.sizes = parse_counts(args.sizes)
    args.sessions = parse_counts(args.sessions)
    args.agent_cow_session = parse_counts(args.agent_cow_session)[0]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run every size in one fresh database and print the Markdown report."""
    args = parse_args(argv)
    if not _agentcow.agent_cow_available():
        raise SystemExit("agent-cow is missing: pip install agent-cow-postgresql==0.2.0")
    started = time.perf_counter()
    results: list[SizeResult] = []
    with scratch_database(args.dsn, "cowsync_bench_view_paths", keep=args.keep_db) as dsn:
        with connect(dsn, autocommit=True) as conn:
            note = machine_note(conn)
        print(f"## View paths: {time.strftime('%Y-%m-%d %H:%M')}, jit={args.jit}\n")
        print(f"Machine: {note}; {code_note()}.\n")
        for rows in args.sizes:
            res = run_size(dsn, rows, args, _log)
            results.append(res)
            print(size_report(res, args.jit), flush=True)
    print(target_report(results))
    print(
        f"\n(total run time {time.perf_counter() - started:.0f}s, "
        f"load average {os.getloadavg()[0]:.2f} at the end)"
    )
    if args.json:
        dump = {
            human_count(r.rows): {
                v.key: {
                    "label": v.label,
                    "median_ms": {s.key: (r.median(v.key, s.key) or 0) * 1000 for s in STATEMENTS},
                    "median_server_cpu_us": {
                        s.key: (r.median(v.key, s.key, cpu=True) or 0) * 1e6 for s in STATEMENTS
                    },
                    "samples": {s.key: len(r.samples[v.key][s.key]) for s in STATEMENTS},
                    "pk_plan_cost": r.plans[v.key].total_cost,
                    "pk_jit_functions": r.plans[v.key].jit_functions,
                }
                for v in r.variants
            }
            for r in results
        }
        with open(args.json, "w") as fh:
            json.dump({"jit": args.jit, "results": dump}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
