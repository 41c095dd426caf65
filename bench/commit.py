"""Benchmark: committing a session, against the physical floor and agent-cow.

A session changes ``k`` rows (1k and 10k by default; 100k with ``--sizes``)
over three FK-linked tables, warehouses -> products -> stock: 10% of the
changes on warehouses, 30% on products, 60% on stock, each table 30% inserts,
50% updates and 20% deletes. Inserted products and stock point at new and at
existing parents; deleted products are deleted together with their stock
(child and parent in one session); some updates move a product to another
warehouse (an FK column). Each base table holds five times its changes.

Three copies of the same data are built, and the same changes applied by:

* **floor**: plain tables, the changes applied by hand from staging tables
  with ``INSERT ... SELECT``, ``UPDATE ... FROM`` and ``DELETE ... USING`` in
  one transaction (parents inserted first, children deleted first): the least
  work PostgreSQL can do to apply them;
* **cowsync**: the same statements run through cowsync's views inside a
  session (in autocommitted batches of 2,000 rows, one operation), then
  ``cowsync.commit(conn, session_id)``;
* **agent-cow**: the same statements through agent-cow 0.2.0's views inside
  its session, then its own FK-ordered ``commit_cow_session_schema`` (through
  ``bench/_agentcow.py``; its per-table ``commit_cow`` cannot apply a child
  and parent delete in any table order).

Only the commit is timed (the transaction's COMMIT included), after a
CHECKPOINT, on tables that were VACUUM ANALYZEd like autovacuum would. After
each run the three base tables must hold identical data, or the run fails.

Run (it creates and drops its own database)::

    .venv/bin/python bench/commit.py --dsn postgresql://postgres@127.0.0.1/postgres
    .venv/bin/python bench/commit.py --dsn ... --sizes 100k --repeat 1

Not a test: pytest collects only ``tests/``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import _agentcow
import psycopg
from _backend_cpu import BackendCpu
from _report import code_note, human_count, machine_note, markdown_table, parse_counts, ratio
from _scratchdb import connect, scratch_database
from psycopg import sql

import cowsync

Logger = Callable[[str], None]

# Parents first. Columns after the key; the key column is always "id".
TABLES = ("warehouses", "products", "stock")
SHARE = {"warehouses": 0.1, "products": 0.3, "stock": 0.6}
DDL = {
    "warehouses": "id integer PRIMARY KEY, name text NOT NULL, city text NOT NULL, "
    "capacity integer NOT NULL",
    "products": "id integer PRIMARY KEY, "
    "warehouse_id integer NOT NULL REFERENCES {schema}.{parent}, "
    "sku text NOT NULL, name text NOT NULL, price numeric(10,2) NOT NULL",
    "stock": "id integer PRIMARY KEY, product_id integer NOT NULL REFERENCES {schema}.{parent}, "
    "qty integer NOT NULL, bin text NOT NULL",
}
PARENT = {"products": "warehouses", "stock": "products"}
FK_COLUMN = {"products": "warehouse_id", "stock": "product_id"}
COLUMNS = {
    "warehouses": ("id", "name", "city", "capacity"),
    "products": ("id", "warehouse_id", "sku", "name", "price"),
    "stock": ("id", "product_id", "qty", "bin"),
}
DELETE_EVERY = 25  # ids divisible by 25 are deleted: 20% of 5x the changes
UPDATE_MOD = (10, 3)  # ids = 3 (mod 10) are updated: 50% of 5x the changes
BASE_FACTOR = 5
SESSION_BATCH = 2_000  # rows per statement when a session is written


@dataclass(frozen=True)
class Plan:
    """How many base rows each table has and how many of each kind of change."""

    base: dict[str, int]
    inserts: dict[str, int]

    @classmethod
    def for_changes(cls, changes: int) -> Plan:
        base, inserts = {}, {}
        for t in TABLES:
            per_table = changes * SHARE[t]
            # Multiples of 50 keep every "divisible by 25" and "3 mod 10" rule exact
            # and make each product own exactly base[stock] / base[products] stock rows.
            base[t] = max(50, round(per_table * BASE_FACTOR / 50) * 50)
            inserts[t] = max(1, round(per_table * 0.3))
        return cls(base, inserts)


# --- data -------------------------------------------------------------------------


def _parent_of(t: str, expr: str, plan: Plan) -> str:
    """SQL for a live (never deleted) parent id of base row ``expr`` of ``t``."""
    parent = PARENT[t]
    n = plan.base[parent]
    raw = f"((({expr}) - 1) % {n} + 1)"
    return f"(CASE WHEN {raw} % {DELETE_EVERY} = 0 THEN {raw} - 1 ELSE {raw} END)"


def _base_select(t: str, plan: Plan) -> str:
    if t == "warehouses":
        return (
            "SELECT g, 'wh-' || g, 'city-' || (g % 50), 1000 + g % 100 "
            f"FROM generate_series(1, {plan.base[t]}) AS g"
        )
    if t == "products":
        # Deleted products keep their stock rows in the base (the session deletes
        # them too), so products map onto warehouses but stock onto every product.
        return (
            f"SELECT g, {_parent_of(t, 'g', plan)}, 'sku-' || g, 'product ' || g, "
            f"(g % 500) / 10.0 + 1 FROM generate_series(1, {plan.base[t]}) AS g"
        )
    return (
        f"SELECT g, ((g - 1) % {plan.base['products']} + 1), g % 100, 'bin-' || (g % 40) "
        f"FROM generate_series(1, {plan.base[t]}) AS g"
    )


def _staging_selects(t: str, plan: Plan) -> dict[str, str]:
    """SELECTs producing the rows to insert, the new versions of updated rows, and
    the ids to delete, for table ``t``; read from the floor's base copy."""
    n, ins = plan.base[t], plan.inserts[t]
    every, (mod, rem) = DELETE_EVERY, UPDATE_MOD
    if t == "warehouses":
        insert = f"SELECT {n} + j, 'wh-new-' || j, 'New', 100 FROM generate_series(1, {ins}) AS j"
        update = "SELECT id, name || '*', city, capacity + 10 FROM {base}"
    elif t == "products":
        parent_new = f"{plan.base['warehouses']} + 1 + (j / 2) % {plan.inserts['warehouses']}"
        insert = (
            f"SELECT {n} + j, CASE WHEN j % 2 = 0 THEN {parent_new} "
            f"ELSE {_parent_of(t, 'j * 7', plan)} END, 'sku-new-' || j, 'new product', 9.99 "
            f"FROM generate_series(1, {ins}) AS j"
        )
        update = f"SELECT id, {_parent_of(t, 'id + 1', plan)}, sku, name, price + 1 FROM {{base}}"
    else:
        live = f"{_live_product('j * 11', plan)}"
        parent_new = f"{plan.base['products']} + 1 + (j / 2) % {plan.inserts['products']}"
        insert = (
            f"SELECT {n} + j, CASE WHEN j % 2 = 0 THEN {parent_new} ELSE {live} END, 1, 'new' "
            f"FROM generate_series(1, {ins}) AS j"
        )
        update = "SELECT id, product_id, qty + 5, 'moved' FROM {base}"
    return {
        "ins": insert,
        "upd": update + f" WHERE id % {mod} = {rem}",
        "del": f"SELECT id FROM {{base}} WHERE id % {every} = 0",
    }


def _live_product(expr: str, plan: Plan) -> str:
    raw = f"((({expr}) - 1) % {plan.base['products']} + 1)"
    return f"(CASE WHEN {raw} % {DELETE_EVERY} = 0 THEN {raw} - 1 ELSE {raw} END)"


def _ident(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def create_tables(conn: psycopg.Connection[Any], schema: str, plan: Plan) -> None:
    """The three tables with keys, FKs and FK indexes, loaded with the base data."""
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    for t in TABLES:
        ddl = DDL[t].format(
            schema=sql.Identifier(schema).as_string(conn),
            parent=sql.Identifier(PARENT.get(t, t)).as_string(conn),
        )
        conn.execute(sql.SQL("CREATE TABLE {} (" + ddl + ")").format(_ident(schema, t)))
        if t in FK_COLUMN:
            conn.execute(
                sql.SQL("CREATE INDEX ON {} ({})").format(
                    _ident(schema, t), sql.Identifier(FK_COLUMN[t])
                )
            )
        conn.execute(sql.SQL("INSERT INTO {} " + _base_select(t, plan)).format(_ident(schema, t)))


def create_staging(conn: psycopg.Connection[Any], stage: str, floor: str, plan: Plan) -> None:
    """Staging tables ``<table>_ins``, ``_upd`` and ``_del`` computed from the base."""
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(stage)))
    for t in TABLES:
        base = sql.Identifier(floor, t).as_string(conn)
        for kind, select in _staging_selects(t, plan).items():
            target = _ident(stage, f"{t}_{kind}")
            if kind == "del":
                conn.execute(sql.SQL("CREATE TABLE {} (id integer)").format(target))
            else:
                conn.execute(sql.SQL("CREATE TABLE {} (LIKE {})").format(target, _ident(floor, t)))
            conn.execute(sql.SQL("INSERT INTO {} " + select.format(base=base)).format(target))
            conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN _batch integer").format(target))
            conn.execute(
                sql.SQL(
                    "UPDATE {t} AS s SET _batch = r.n / {size} FROM "
                    "(SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM {t}) AS r "
                    "WHERE s.id = r.id"
                ).format(t=target, size=SESSION_BATCH)
            )


# --- the changes, as statements --------------------------------------------------


def _cols(t: str, prefix: str | None = None, skip_key: bool = False) -> sql.Composed:
    names = [c for c in COLUMNS[t] if not (skip_key and c == "id")]
    return sql.SQL(", ").join(
        sql.Identifier(prefix, c) if prefix else sql.Identifier(c) for c in names
    )


# The order every engine applies the changes in: parents inserted first,
# children deleted first.
STEPS = (
    *(("ins", t) for t in TABLES),
    *(("upd", t) for t in TABLES),
    *(("del", t) for t in reversed(TABLES)),
)


def change_statement(
    kind: str, t: str, target: str, stage: str, batch: int | None = None
) -> sql.Composed:
    """The INSERT ... SELECT, UPDATE ... FROM or DELETE ... USING of one table,
    all staged rows or one batch of them."""
    staged = _ident(stage, f"{t}_{kind}")
    only_batch = sql.SQL(" AND s._batch = {}").format(batch) if batch is not None else sql.SQL("")
    if kind == "ins":
        return sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} AS s WHERE true{}").format(
            _ident(target, t), _cols(t), _cols(t, "s"), staged, only_batch
        )
    if kind == "upd":
        return sql.SQL("UPDATE {} AS t SET ({}) = ROW({}) FROM {} AS s WHERE t.id = s.id{}").format(
            _ident(target, t),
            _cols(t, skip_key=True),
            _cols(t, "s", skip_key=True),
            staged,
            only_batch,
        )
    return sql.SQL("DELETE FROM {} AS t USING {} AS s WHERE t.id = s.id{}").format(
        _ident(target, t), staged, only_batch
    )


def write_session(conn: psycopg.Connection[Any], target: str, stage: str) -> None:
    """The changes through a view, in batches of SESSION_BATCH rows (autocommitted):
    an agent writes a session statement by statement, not in one transaction."""
    for kind, t in STEPS:
        row = conn.execute(
            sql.SQL("SELECT coalesce(max(_batch), -1) FROM {}").format(_ident(stage, f"{t}_{kind}"))
        ).fetchone()
        assert row is not None
        for batch in range(row[0] + 1):
            conn.execute(change_statement(kind, t, target, stage, batch))


# --- one run ----------------------------------------------------------------------


@dataclass
class RunResult:
    """Seconds per engine for one run, plus what each applied."""

    changes: int
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # server backend CPU
    applied: dict[str, int] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # cowsync: prepare/apply/settle
    session_write_seconds: dict[str, float] = field(default_factory=dict)


def _schemas(changes: int, run: int) -> dict[str, str]:
    tag = f"{human_count(changes).lower()}_{run}"
    return {e: f"{e}_{tag}" for e in ("stage", "floor", "cs", "ac")}


def build(dsn: str, changes: int, run: int, log: Logger) -> tuple[dict[str, str], Plan, RunResult]:
    """Three identical copies, staging tables, and the two sessions."""
    plan = Plan.for_changes(changes)
    names = _schemas(changes, run)
    result = RunResult(changes)
    with connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        for engine in ("floor", "cs", "ac"):
            create_tables(conn, names[engine], plan)
        create_staging(conn, names["stage"], names["floor"], plan)
        # agent-cow first: its deploy step takes every "<t>_base" + "<t>_changes"
        # + view "<t>" for one of its own tables and fails on cowsync's.
        _agentcow.setup_agent_cow(dsn, names["ac"], list(TABLES))
        cowsync.deploy(conn)
        for t in TABLES:
            cowsync.enable(conn, f"{names['cs']}.{t}")
        conn.execute("VACUUM ANALYZE")
        log(f"  run {run}: tables built in {time.perf_counter() - started:.1f}s")

        sid = str(uuid.uuid4())
        started = time.perf_counter()
        with cowsync.session(conn, sid, str(uuid.uuid4())):
            write_session(conn, names["cs"], names["stage"])
        result.session_write_seconds["cowsync"] = time.perf_counter() - started
        names["cs_session"] = sid

        sid = str(uuid.uuid4())
        started = time.perf_counter()
        _agentcow.set_session(conn, sid, str(uuid.uuid4()))
        write_session(conn, names["ac"], names["stage"])
        _agentcow.clear_session(conn)
        result.session_write_seconds["agent-cow"] = time.perf_counter() - started
        names["ac_session"] = sid
        conn.execute("VACUUM ANALYZE")
        log(
            "  run {}: sessions written (cowsync {:.1f}s, agent-cow {:.1f}s)".format(
                run, *result.session_write_seconds.values()
            )
        )
    return names, plan, result


def commit_floor(conn: psycopg.Connection[Any], names: dict[str, str]) -> int:
    """The physical floor: the same changes straight from staging, one transaction."""
    applied = 0
    with conn.transaction():
        for kind, t in STEPS:
            applied += conn.execute(
                change_statement(kind, t, names["floor"], names["stage"])
            ).rowcount
    return applied


def commit_cowsync(
    conn: psycopg.Connection[Any], names: dict[str, str], phases: dict[str, float]
) -> int:
    """cowsync.commit, with the time to its first and last progress report noted.

    With the default ``on_conflict="abort"`` the commit applies every statement (with
    the conflict check folded in) before it reports progress, so the first phase
    includes applying the rows.
    """
    marks: list[float] = []
    started = time.perf_counter()
    result = cowsync.commit(
        conn, names["cs_session"], progress=lambda *_: marks.append(time.perf_counter())
    )
    ended = time.perf_counter()
    if marks:
        phases["net rows, conflict check, apply"] = marks[0] - started
        phases["between progress reports"] = marks[-1] - marks[0]
        phases["settle session + COMMIT"] = ended - marks[-1]
    return result.total


def commit_agent_cow(conn: psycopg.Connection[Any], names: dict[str, str]) -> int:
    """agent-cow's own FK-ordered schema commit."""
    _agentcow.commit_session_schema(conn, names["ac"], names["ac_session"])
    return -1  # agent-cow does not report counts


def fingerprint(conn: psycopg.Connection[Any], schema: str) -> list[tuple[str, int, str]]:
    """(table, rows, md5 of all rows in key order) as seen with no session."""
    out = []
    for t in TABLES:
        row = conn.execute(
            sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(({cols})::text, '|' ORDER BY id), '')) "
                "FROM {table}"
            ).format(cols=_cols(t), table=_ident(schema, t))
        ).fetchone()
        assert row is not None
        out.append((t, row[0], row[1]))
    return out


def run_once(dsn: str, changes: int, run: int, jit: str, log: Logger) -> RunResult:
    """Build, commit with each engine (order rotated by run), verify, drop."""
    names, _plan, result = build(dsn, changes, run, log)
    engines: list[tuple[str, Callable[[psycopg.Connection[Any]], int]]] = [
        ("floor", lambda c: commit_floor(c, names)),
        ("cowsync", lambda c: commit_cowsync(c, names, result.phases)),
        ("agent-cow", lambda c: commit_agent_cow(c, names)),
    ]
    engines = engines[run % 3 :] + engines[: run % 3]
    try:
        for name, work in engines:
            with connect(dsn, autocommit=True, options=f"-c jit={jit}") as conn:
                conn.execute("CHECKPOINT")
                cpu = BackendCpu(conn.info.backend_pid)
                c0 = cpu.now()
                started = time.perf_counter()
                result.applied[name] = work(conn)
                result.seconds[name] = time.perf_counter() - started
                if cpu.available:
                    result.cpu_seconds[name] = (cpu.now() - c0) / 1e9
        with connect(dsn, autocommit=True) as conn:
            prints = {e: fingerprint(conn, names[e]) for e in ("floor", "cs", "ac")}
            if not prints["floor"] == prints["cs"] == prints["ac"]:
                raise SystemExit(f"engines disagree after commit: {prints}")
            log(
                f"  run {run}: "
                + ", ".join(f"{n} {s:.3f}s" for n, s in result.seconds.items())
                + f"; bases identical ({', '.join(f'{t} {n}' for t, n, _ in prints['floor'])})"
            )
    finally:
        drop(dsn, names)
    return result


def drop(dsn: str, names: dict[str, str]) -> None:
    """Disable cowsync on one run's tables and drop all of its schemas."""
    with connect(dsn, autocommit=True) as conn:
        for t in reversed(TABLES):
            cowsync.disable(conn, f"{names['cs']}.{t}", force=True)
        for engine in ("stage", "floor", "cs", "ac"):
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(names[engine]))
            )


# --- report -------------------------------------------------------------------------


def report(results: dict[int, list[RunResult]], jit: str) -> str:
    """Markdown: seconds (median of runs), ratios, cowsync's phases, targets."""
    rows, cpu_rows, phase_rows, target_rows = [], [], [], []
    for changes, runs in results.items():

        def med(engine: str, runs: list[RunResult] = runs, cpu: bool = False) -> float:
            return statistics.median((r.cpu_seconds if cpu else r.seconds)[engine] for r in runs)

        floor, cow, peer = med("floor"), med("cowsync"), med("agent-cow")
        has_cpu = all(r.cpu_seconds for r in runs)
        c_floor = c_cow = c_peer = 0.0
        if has_cpu:
            c_floor, c_cow, c_peer = (med(e, cpu=True) for e in ("floor", "cowsync", "agent-cow"))
            cpu_rows.append(
                [
                    human_count(changes),
                    f"{c_floor:.3f}",
                    f"{c_cow:.3f}",
                    f"{c_peer:.3f}",
                    ratio(c_cow, c_floor),
                    ratio(c_peer, c_floor),
                    ratio(c_cow, c_peer),
                ]
            )
        rows.append(
            [
                human_count(changes),
                f"{runs[0].applied['floor']:,}",
                len(runs),
                f"{floor:.3f}",
                f"{cow:.3f}",
                f"{peer:.3f}",
                ratio(cow, floor),
                ratio(peer, floor),
                ratio(cow, peer),
            ]
        )
        middle = sorted(runs, key=lambda r: r.seconds["cowsync"])[len(runs) // 2]
        phases = middle.phases
        phase_rows.append([human_count(changes)] + [f"{phases.get(k, 0):.3f}" for k in _PHASES])
        best = {e: min(r.seconds[e] for r in runs) for e in ("floor", "cowsync", "agent-cow")}
        target_rows.append(
            [
                human_count(changes),
                ratio(cow, floor),
                "met" if cow <= 2 * floor else "**missed**",
                ratio(best["cowsync"], best["floor"]),
                ratio(c_cow, c_floor) if has_cpu else "—",
                ratio(cow, peer),
                "met" if cow < peer else "**missed**",
                ratio(best["cowsync"], best["agent-cow"]),
                ratio(c_cow, c_peer) if has_cpu else "—",
            ]
        )
    out = [
        f"Commit time in seconds, median of runs, jit={jit}:",
        "",
        markdown_table(
            [
                "changed rows",
                "rows applied",
                "runs",
                "floor",
                "cowsync",
                "agent-cow",
                "cowsync / floor",
                "agent-cow / floor",
                "cowsync / agent-cow",
            ],
            rows,
        ),
        "",
        *(
            [
                "Server CPU seconds of the committing backend, median of runs (less "
                "sensitive to other load on the machine; excludes waiting for the WAL flush):",
                "",
                markdown_table(
                    [
                        "changed rows",
                        "floor",
                        "cowsync",
                        "agent-cow",
                        "cowsync / floor",
                        "agent-cow / floor",
                        "cowsync / agent-cow",
                    ],
                    cpu_rows,
                ),
                "",
            ]
            if cpu_rows
            else []
        ),
        "Where cowsync's commit spends its time (seconds, its median run):",
        "",
        markdown_table(["changed rows", *_PHASES], phase_rows),
        "",
        "Targets (issue 4):",
        "",
        "Judged on the medians; the best-of-runs and server-CPU ratios are less exposed "
        "to other load on the machine.",
        "",
        markdown_table(
            [
                "changed rows",
                "cowsync / floor",
                "≤ 2x floor",
                "best runs",
                "server CPU",
                "cowsync / agent-cow",
                "faster",
                "best runs",
                "server CPU",
            ],
            target_rows,
        ),
    ]
    return "\n".join(out)


_PHASES = ("net rows, conflict check, apply", "between progress reports", "settle session + COMMIT")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; sizes accept 1k / 100k forms."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dsn", required=True, help="any database on the server (used to create ours)"
    )
    parser.add_argument("--sizes", default="1k,10k", help="changed rows per session, e.g. 1k,100k")
    parser.add_argument("--repeat", type=int, default=5, help="runs per size (median reported)")
    parser.add_argument("--jit", choices=("on", "off"), default="on", help="jit for the commits")
    parser.add_argument("--json", help="also write raw seconds to this file")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    args = parser.parse_args(argv)
    args.sizes = parse_counts(args.sizes)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run every size in one fresh database and print the Markdown report."""
    args = parse_args(argv)
    if not _agentcow.agent_cow_available():
        raise SystemExit("agent-cow is missing: pip install agent-cow-postgresql==0.2.0")
    started = time.perf_counter()
    results: dict[int, list[RunResult]] = {}
    with scratch_database(args.dsn, "cowsync_bench_commit", keep=args.keep_db) as dsn:
        with connect(dsn, autocommit=True) as conn:
            note = machine_note(conn)
        print(f"## Commit: {time.strftime('%Y-%m-%d %H:%M')}, jit={args.jit}\n")
        print(f"Machine: {note}; {code_note()}.\n")
        for changes in args.sizes:
            _log(f"size {human_count(changes)}:")
            results[changes] = [
                run_once(dsn, changes, run, args.jit, _log) for run in range(args.repeat)
            ]
    print(report(results, args.jit))
    print(f"\n(total run time {time.perf_counter() - started:.0f}s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "jit": args.jit,
                    "results": {
                        human_count(k): [
                            {"seconds": r.seconds, "phases": r.phases, "applied": r.applied}
                            for r in runs
                        ]
                        for k, runs in results.items()
                    },
                },
                fh,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
