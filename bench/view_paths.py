"""Benchmark: per-statement cost of the hot paths through a COW view.

Measures, in one run on one fresh database, the median time of five prepared
statements -- PK read, range scan (100 rows), single-row insert, update and
delete -- on:

* a plain table (the reference),
* cowsync's view with no session (production),
* cowsync's view inside sessions holding 0, 1k and 100k changed rows,
* cowsync in overlay mode on an identical table: production on the table
  itself (``ov_<size>.items``, which carries only a statement-level guard
  trigger and an empty inheritance parent) and sessions of 0, 1k and 100k
  changed rows through the overlay view (``ov_<size>_cow.items``),
* agent-cow 0.2.0's view on an identical table, with no session and inside a
  session with 1k changed rows,
* a copy of the plain table, as a control: its ratio to the plain table is
  what two identical tables measure apart on this machine in this run (the
  noise floor for the overlay production target of 1.02x),

for each base size (10k and 100k rows by default; 1M with ``--sizes``). It
prints Markdown tables of medians, ratios to the plain table, to agent-cow and
of overlay to in place, the EXPLAIN total cost of the PK read for each variant,
the plan of the overlay production PK read, and the targets: issue 3's for in
place mode (production PK read <= 1.05x, session PK read <= 1.3x, session
single-row write <= 2.5x of the plain table) and issue 16's for overlay mode
(production reads and writes <= 1.02x, session PK read <= 1.3x, session range
scan <= 1.5x, session single-row write <= 2.5x, aim 2x).

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
  statements keep the plans an unbound borrower made. Overlay's pooled
  variants name the table unqualified on ``search_path = ov_<size>``: unbound
  they prepare against the table, and binding puts the overlay schema first,
  which makes PostgreSQL plan them again for the view (checked before
  measuring: their prepared statements must return the session's rows).
  With an engine whose binding leaves ``search_path`` alone they name the
  overlay view schema-qualified instead, like the in place ones (the run logs
  which);
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

# Variants whose PK read plan is printed: the overlay production read should be the
# plain table's bare index scan.
EXPLAINED = ("plain", "ov", "ov_s1k")


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
    mode: str = "in-place"  # cowsync's mode ("in-place" or "overlay")
    # Name the table unqualified, on this search_path (overlay's pooled variants:
    # binding puts the overlay schema first, so the same name reaches the view).
    search_path: str | None = None
    # The enabled tables to disable at the end (set on one variant per engine).
    enabled_tables: tuple[str, ...] = ()
    inplace_peer: str | None = None  # overlay: the in place variant it is compared with
    conn: psycopg.Connection[Any] | None = None
    cpu: BackendCpu | None = None
    queries: dict[str, str] = field(default_factory=dict)

    @property
    def table(self) -> sql.Identifier:
        """The table (or view) this variant reads and writes, schema-qualified unless it
        goes by ``search_path``."""
        if self.search_path is not None:
            return sql.Identifier("items")
        return sql.Identifier(self.schema, "items")

    def connect(self, dsn: str, jit: str, rows: int) -> None:
        """Open this variant's connection and bind it to its session, once."""
        options = f"-c jit={jit}"
        if self.search_path is not None:
            options += f" -c search_path={self.search_path}"
        conn = connect(dsn, autocommit=True, options=options)
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


def _cowsync_sessions(
    conn: psycopg.Connection[Any],
    rows: int,
    session_sizes: Sequence[int],
    *,
    mode: str,
    schema: str,
    view_schema: str,
    peer: str,
    log: Logger,
    pooled_by_path: bool = False,
) -> list[Variant]:
    """Write one cowsync session per size through the view in ``view_schema``, and
    return its variants (plus a pooled one for sessions that changed rows)."""
    overlay = mode == "overlay"
    prefix, name = ("ov", "overlay") if overlay else ("cs", "cowsync")
    variants = []
    for changed in session_sizes:
        size = human_count(changed)
        if not _fits(rows, changed):
            log(f"  {name} session {size}: skipped (larger than the table)")
            continue
        sid, setup_op, measure_op = (str(uuid.uuid4()) for _ in range(3))
        started = time.perf_counter()
        with cowsync.session(conn, sid, setup_op):
            _write_session(conn, sql.Identifier(view_schema, "items"), rows, changed)
        with cowsync.session(conn, sid, measure_op):
            conn.execute(
                sql.SQL("INSERT INTO {} VALUES (1)").format(sql.Identifier(view_schema, "aux"))
            )
        log(f"  {name} session {size}: written in {time.perf_counter() - started:.1f}s")
        key = f"{prefix}_s{size}"
        variants.append(
            Variant(
                key,
                f"{name}, session, {size} changed",
                "cowsync",
                view_schema,
                changed,
                sid,
                measure_op,
                peer=peer,
                mode=mode,
                inplace_peer=f"cs_s{size}" if overlay else None,
            )
        )
        if changed:
            variants.append(
                Variant(
                    f"{key}_pooled",
                    f"{name}, session, {size} changed, pooled connection",
                    "cowsync",
                    view_schema,
                    changed,
                    sid,
                    measure_op,
                    peer=peer,
                    pooled=True,
                    mode=mode,
                    # Unbound: the table; bound: the overlay view, by the same name.
                    search_path=schema if overlay and pooled_by_path else None,
                    inplace_peer=f"cs_s{size}_pooled" if overlay else None,
                )
            )
    return variants


def binding_sets_overlay_path(conn: psycopg.Connection[Any], schema: str) -> bool:
    """Whether binding a connection on ``search_path = schema`` puts the overlay schema
    first on its path (the engine's binding does so once overlay paths are in)."""
    sid, op = str(uuid.uuid4()), str(uuid.uuid4())
    with cowsync.session(conn, sid, op):
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        apply_binding(conn, Binding(sid, op))
        row = conn.execute("SELECT pg_catalog.current_schemas(false)").fetchone()
    conn.execute("RESET search_path")
    assert row is not None
    return bool(row[0]) and row[0][0] == cowsync.CowConfig().overlay_schema_for(schema)


def build_variants(
    dsn: str, rows: int, session_sizes: Sequence[int], agent_cow_session: int, log: Logger
) -> list[Variant]:
    """Create the identical tables for one size, the sessions, and the variants."""
    tag = human_count(rows).lower()
    plain, control, cow, ov, peer = (
        f"plain_{tag}",
        f"ctl_{tag}",
        f"cs_{tag}",
        f"ov_{tag}",
        f"ac_{tag}",
    )
    ov_view = cowsync.CowConfig().overlay_schema_for(ov)
    with connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        for schema in (plain, control, cow, ov, peer):
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
        for schema in (control, cow, ov, peer):
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
        for schema in (cow, ov):
            conn.execute(
                sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY)").format(
                    sql.Identifier(schema, "aux")
                )
            )
        # agent-cow first: its deploy step takes every "<t>_base" + "<t>_changes"
        # + view "<t>" for one of its own tables and fails on cowsync's.
        _agentcow.setup_agent_cow(dsn, peer, "items", unsafe_canonical_writes=True)
        cowsync.deploy(conn)
        cowsync.enable(conn, f"{cow}.items")
        cowsync.enable(conn, f"{cow}.aux")
        cowsync.enable(conn, f"{ov}.items", mode="overlay")
        cowsync.enable(conn, f"{ov}.aux", mode="overlay")
        log(f"  tables: {human_count(rows)} rows x 5 in {time.perf_counter() - started:.1f}s")
        by_path = binding_sets_overlay_path(conn, ov)
        log(
            "  overlay pooled variants: "
            + (
                f"unqualified items on search_path {ov} (binding puts {ov_view} first)"
                if by_path
                else f"binding leaves search_path alone: schema-qualified {ov_view}.items"
            )
        )

        ac_key = f"ac_s{human_count(agent_cow_session)}"
        variants = [
            Variant("plain", "plain table", "plain", plain),
            Variant("ctl", "plain table, identical copy (control)", "plain", control),
            Variant(
                "cs",
                "cowsync, no session",
                "cowsync",
                cow,
                peer="ac",
                enabled_tables=(f"{cow}.items", f"{cow}.aux"),
            ),
        ]
        variants += _cowsync_sessions(
            conn,
            rows,
            session_sizes,
            mode="in-place",
            schema=cow,
            view_schema=cow,
            peer=ac_key,
            log=log,
        )
        variants.append(
            Variant(
                "ov",
                "overlay, no session (production on the table)",
                "cowsync",
                ov,
                peer="ac",
                mode="overlay",
                enabled_tables=(f"{ov}.items", f"{ov}.aux"),
                inplace_peer="cs",
            )
        )
        variants += _cowsync_sessions(
            conn,
            rows,
            session_sizes,
            mode="overlay",
            schema=ov,
            view_schema=ov_view,
            peer=ac_key,
            log=log,
            pooled_by_path=by_path,
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
    """Disable and drop one size's tables before the next size is built.

    Tables are disabled by their own label (``ov_<size>.items``, not the overlay
    schema's view); disabling the last overlay table drops its emptied overlay schema.
    """
    schemas = sorted({v.schema for v in variants})
    with connect(dsn, autocommit=True) as conn:
        for v in variants:
            for label in v.enabled_tables:
                cowsync.disable(conn, label, force=True)
        for schema in schemas:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


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


def explain_text(v: Variant, key: int) -> str:
    """The plain EXPLAIN of the PK read on the variant's own connection and binding."""
    conn = v.conn
    assert conn is not None
    query = sql.SQL("EXPLAIN SELECT " + COLUMNS + " FROM {} WHERE id = %s").format(v.table)
    return "\n".join(str(r[0]) for r in conn.execute(query, (key,), prepare=False))


def check_pooled_answers(variants: Sequence[Variant], rows: int) -> list[str]:
    """A pooled variant's prepared PK read, planned before the binding, must return the
    session's rows: the same as the schema-qualified view, unprepared."""
    problems: list[str] = []
    for v in variants:
        if not v.pooled or v.session_rows is None:
            continue
        assert v.conn is not None
        updates, deletes, inserts = _session_keys(rows, v.session_rows)
        keys = updates[:3] + deletes[:3] + inserts[:3]
        direct = sql.SQL("SELECT " + COLUMNS + " FROM {} WHERE id = %s").format(
            sql.Identifier(v.schema, "items")
        )
        for key in keys:
            got = v.conn.execute(v.queries["pk_read"], (Int4(key),), prepare=True).fetchall()
            want = v.conn.execute(direct, (Int4(key),), prepare=False).fetchall()
            if repr(got) != repr(want):
                problems.append(f"{v.key}: prepared PK read of {key} gave {got}, view {want}")
    return problems


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
    plan_texts: dict[str, str] = field(default_factory=dict)  # variant -> EXPLAIN text

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
    inplace_rows = []
    for v in res.variants:
        if v.inplace_peer is None or v.inplace_peer not in res.samples:
            continue
        peer_label = next(p.label for p in res.variants if p.key == v.inplace_peer)
        cells = [v.label, peer_label]
        for s in STATEMENTS:
            wall = ratio(res.median(v.key, s.key), res.median(v.inplace_peer, s.key))
            if res.has_cpu:
                cpu = ratio(
                    res.median(v.key, s.key, cpu=True),
                    res.median(v.inplace_peer, s.key, cpu=True),
                )
                wall = f"{wall} ({cpu})"
            cells.append(wall)
        inplace_rows.append(cells)
    if inplace_rows:
        out.append(
            "Overlay relative to in place, median"
            + (" (server CPU)" if res.has_cpu else "")
            + " (below 1 = overlay faster):"
        )
        out.append("")
        out.append(markdown_table(["variant", "vs", *(s.label for s in STATEMENTS)], inplace_rows))
        out.append("")
    for key, text in res.plan_texts.items():
        label = next(v.label for v in res.variants if v.key == key)
        out.append(f"EXPLAIN of the PK read, {label}:")
        out.append("")
        out.append("```")
        out.append(text)
        out.append("```")
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


@dataclass(frozen=True)
class Target:
    """One path held to a limit: a variant's statement against the plain table."""

    issue: str
    path: str
    variant: str
    stmt: str
    limit: float
    aim: float | None = None


def targets(res: SizeResult) -> list[Target]:
    """Issue 3's targets for in place mode and issue 16's for overlay mode."""
    out: list[Target] = []
    for v in res.variants:
        if v.engine != "cowsync":
            continue
        path = v.label.removeprefix("cowsync, ")
        if v.mode == "in-place":
            if v.session_id is None:
                out.append(Target("3", "in place, production PK read", v.key, "pk_read", 1.05))
                continue
            out.append(Target("3", f"in place, PK read, {path}", v.key, "pk_read", 1.3))
            for s in ("insert", "update", "delete"):
                out.append(Target("3", f"in place, {s}, {path}", v.key, s, 2.5))
        elif v.session_id is None:
            for st in STATEMENTS:
                out.append(Target("16", f"overlay production {st.label}", v.key, st.key, 1.02))
        else:
            path = v.label.removeprefix("overlay, ")
            out.append(Target("16", f"overlay PK read, {path}", v.key, "pk_read", 1.3))
            out.append(Target("16", f"overlay range scan, {path}", v.key, "range_scan", 1.5))
            for s in ("insert", "update", "delete"):
                out.append(Target("16", f"overlay {s}, {path}", v.key, s, 2.5, aim=2.0))
    return out


def target_report(results: Sequence[SizeResult]) -> str:
    """Issue 3's targets (in place) and issue 16's (overlay), on every size and session."""
    lines = [
        "### Targets (issue 3: in place; issue 16: overlay)",
        "",
        "Verdicts on the median and on the server CPU time, each against the plain table. "
        "On a busy machine waiting for a CPU adds the same time to every statement and "
        "pulls wall-clock ratios towards 1; the p10 and server-CPU ratios show what the "
        "median hides. The control row (an identical copy of the plain table) shows how "
        "far apart two identical tables measure in the same run.",
        "",
    ]
    rows = []
    for res in results:
        size = human_count(res.rows)
        for st in STATEMENTS if "ctl" in res.samples else ():
            rows.append(
                [
                    size,
                    "—",
                    f"control: identical plain table, {st.label}",
                    "≈ 1x",
                    _ratio_of(res, "ctl", st.key),
                    "",
                    _p10_ratio(res, "ctl", st.key),
                    _cpu_ratio(res, "ctl", st.key),
                    "",
                ]
            )
        for t in targets(res):
            cpu = _cpu_value(res, t.variant, t.stmt)
            rows.append(
                [
                    size,
                    t.issue,
                    t.path,
                    f"≤ {t.limit}x" + (f" (aim {t.aim}x)" if t.aim else ""),
                    _ratio_of(res, t.variant, t.stmt),
                    _verdict(_value(res, t.variant, t.stmt), t.limit, t.aim),
                    _p10_ratio(res, t.variant, t.stmt),
                    _cpu_ratio(res, t.variant, t.stmt),
                    _verdict(cpu, t.limit, t.aim) if res.has_cpu else "—",
                ]
            )
    lines.append(
        markdown_table(
            [
                "size",
                "issue",
                "path",
                "target",
                "median ratio",
                "median verdict",
                "p10 ratio",
                "server CPU ratio",
                "CPU verdict",
            ],
            rows,
        )
    )
    return "\n".join(lines)


def _value(res: SizeResult, variant: str, stmt: str) -> float | None:
    med, plain = res.median(variant, stmt), res.median("plain", stmt)
    return med / plain if med and plain else None


def _cpu_value(res: SizeResult, variant: str, stmt: str) -> float | None:
    if not res.has_cpu:
        return None
    med, plain = res.median(variant, stmt, cpu=True), res.median("plain", stmt, cpu=True)
    return med / plain if med and plain else None


def _ratio_of(res: SizeResult, variant: str, stmt: str) -> str:
    return ratio(res.median(variant, stmt), res.median("plain", stmt))


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


def _verdict(value: float | None, limit: float, aim: float | None = None) -> str:
    if value is None:
        return "—"
    if value > limit:
        return "**missed**"
    if aim is not None and value > aim:
        return f"met, above the {aim}x aim"
    return "met"


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
        problems += check_pooled_answers(variants, rows)
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
        texts = {v.key: explain_text(v, pk) for v in variants if v.key in EXPLAINED}
        return SizeResult(rows, variants, samples, plans, texts)
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
        where = os.path.dirname(os.path.dirname(os.path.abspath(cowsync.__file__)))
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = code_note() if where == repo else f"cowsync imported from {where}"
        print(f"Machine: {note}; {code}.\n")
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
                    "mode": v.mode if v.engine == "cowsync" else None,
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
