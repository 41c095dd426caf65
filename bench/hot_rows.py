"""Benchmark: production writes on hot rows, through a COW view (no session) and on a table.

N threads (``--threads``, default 6) change M hot rows (``--rows``, default 5) for T
seconds (``--seconds``, default 10) per cell, in one run on one fresh database, on two
identical tables side by side: ``plain`` stays a table, ``items`` is COW-enabled in place
and written through its view with no session bound (production), and ``overlaid`` is
COW-enabled in overlay mode (production writes the table itself, past its statement
guard). Workloads:

* ``autocommit``: one autocommit ``UPDATE t SET qty = qty + 1 WHERE id = $1`` per
  statement, on a random hot row;
* ``transaction``: explicit transactions of ``--statements`` (default 3) such updates,
  on random hot rows taken in key order (so the table never deadlocks);
* ``delete-insert``: a transaction that deletes a random hot row (``RETURNING qty``)
  and inserts it again with ``qty + 1``; a delete that finds the row gone (another
  transaction re-inserted it meanwhile, which a table's snapshot does not see) rolls
  back and counts as "row gone".

Per path and workload it prints statements per second (statements of committed
transactions), the count of each error SQLSTATE (22023, 40001, 40P01, others), the
40001 rate (failed units of work / attempted), the ratio to the plain table, and
whether the final sum of ``qty`` equals the increments that were reported committed
(no lost update, no phantom one). With ``--retry`` a third path runs the view's
workload through ``cowsync.retry_serialization_failures`` (default attempts and
backoff) and reports what still fails after the retries.

Issue 14's target for the view: 0 x 22023 and <= 1 % 40001 on the ``autocommit``
workload.

Run (it creates and drops its own database)::

    .venv/bin/python bench/hot_rows.py --dsn postgresql://postgres@127.0.0.1/postgres
    .venv/bin/python bench/hot_rows.py --dsn ... --threads 6 --rows 5 --seconds 10 --retry

Every thread has its own connection; statements are prepared at once
(``prepare_threshold=0``) on both paths. The client is one Python process (the GIL
caps its rate on both paths alike). Not a test: pytest collects only ``tests/``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from _report import code_note, machine_note, markdown_table, ratio
from _scratchdb import connect, scratch_database

import cowsync

WORKLOADS = ("autocommit", "transaction", "delete-insert")
TARGET_40001 = 0.01


@dataclass
class Cell:
    """What one path did on one workload."""

    path: str
    workload: str
    seconds: float = 0.0
    units: int = 0  # units of work attempted (a statement, or a transaction)
    committed: int = 0  # units that committed
    statements: int = 0  # statements of committed units
    increments: int = 0  # qty increments of committed units
    gone: int = 0  # delete-insert: the row was gone (rolled back, no error)
    attempts: int = 0  # with --retry: calls of the unit, retries included
    errors: Counter[str] = field(default_factory=Counter)
    sum_before: int = 0
    sum_after: int = 0

    @property
    def rate(self) -> float:
        return self.statements / self.seconds if self.seconds else 0.0

    def errors_of(self, state: str) -> int:
        return self.errors.get(state, 0)

    @property
    def other_errors(self) -> int:
        return sum(n for s, n in self.errors.items() if s not in ("22023", "40001", "40P01"))

    @property
    def serialization_rate(self) -> float:
        return self.errors_of("40001") / self.units if self.units else 0.0

    @property
    def consistent(self) -> bool:
        return self.sum_after - self.sum_before == self.increments


# --- the units of work --------------------------------------------------------------------


Unit = Callable[[psycopg.Connection[Any], random.Random], tuple[int, int, bool]]
"""Runs one unit of work on a connection; returns (statements, increments, row gone).
Raises psycopg.Error on failure, having left the connection idle."""


def autocommit_unit(table: str, hot: int) -> Unit:
    query = f"UPDATE {table} SET qty = qty + 1 WHERE id = %s"

    def unit(conn: psycopg.Connection[Any], rng: random.Random) -> tuple[int, int, bool]:
        rows = conn.execute(query, [rng.randint(1, hot)]).rowcount
        return 1, rows, False

    return unit


def transaction_unit(table: str, hot: int, statements: int) -> Unit:
    query = f"UPDATE {table} SET qty = qty + 1 WHERE id = %s"

    def unit(conn: psycopg.Connection[Any], rng: random.Random) -> tuple[int, int, bool]:
        keys = sorted(rng.randint(1, hot) for _ in range(statements))
        done = 0
        with conn.transaction():
            for key in keys:
                done += conn.execute(query, [key]).rowcount
        return len(keys), done, False

    return unit


def delete_insert_unit(table: str, hot: int) -> Unit:
    delete = f"DELETE FROM {table} WHERE id = %s RETURNING qty"
    insert = f"INSERT INTO {table} (id, qty) VALUES (%s, %s)"

    def unit(conn: psycopg.Connection[Any], rng: random.Random) -> tuple[int, int, bool]:
        key = rng.randint(1, hot)
        with conn.transaction():
            row = conn.execute(delete, [key]).fetchone()
            if row is None:
                # Gone for this statement's snapshot: nothing was changed, end quietly.
                return 0, 0, True
            conn.execute(insert, [key, row[0] + 1])
        return 2, 1, False

    return unit


def make_unit(workload: str, table: str, hot: int, statements: int) -> Unit:
    if workload == "autocommit":
        return autocommit_unit(table, hot)
    if workload == "transaction":
        return transaction_unit(table, hot, statements)
    return delete_insert_unit(table, hot)


# --- running a cell -----------------------------------------------------------------------


def run_cell(dsn: str, path: str, workload: str, args: argparse.Namespace, seed: int) -> Cell:
    """``args.threads`` threads run the workload on one path for ``args.seconds``."""
    table = {"table": "plain", "overlay table": "overlaid"}.get(path, "items")
    cell = Cell(path, workload)
    base_unit = make_unit(workload, table, args.rows, args.statements)
    conns = [
        connect(dsn, autocommit=True, prepare_threshold=0, application_name=f"hot_rows {path}")
        for _ in range(args.threads)
    ]
    lock = threading.Lock()
    barrier = threading.Barrier(args.threads + 1)
    stop = threading.Event()

    def worker(index: int, conn: psycopg.Connection[Any]) -> None:
        rng = random.Random(f"{seed}:{path}:{workload}:{index}")
        local = Cell(path, workload)
        calls = [0]

        def counted(c: psycopg.Connection[Any], r: random.Random) -> tuple[int, int, bool]:
            calls[0] += 1
            return base_unit(c, r)

        if path == "view, retried":
            # The helper owns the transaction: the unit's own transaction block (if
            # any) becomes a savepoint inside it, and autocommit statements join it.
            run: Unit = cowsync.retry_serialization_failures(counted, conn=conn)
        else:
            run = counted
        barrier.wait()
        while not stop.is_set():
            local.units += 1
            try:
                statements, increments, gone = run(conn, rng)
            except psycopg.Error as exc:
                if exc.sqlstate is None and not local.errors:
                    _log(f"{path}, {workload}: client error {exc!r}")
                local.errors[exc.sqlstate or type(exc).__name__] += 1
                continue
            if gone:
                local.gone += 1
                continue
            local.committed += 1
            local.statements += statements
            local.increments += increments
        with lock:
            cell.units += local.units
            cell.committed += local.committed
            cell.statements += local.statements
            cell.increments += local.increments
            cell.gone += local.gone
            cell.attempts += calls[0]
            cell.errors.update(local.errors)

    with connect(dsn, autocommit=True) as admin:
        cell.sum_before = admin.execute(f"SELECT sum(qty) FROM {table}").fetchone()[0]
        threads = [
            threading.Thread(target=worker, args=(i, c), daemon=True) for i, c in enumerate(conns)
        ]
        for thread in threads:
            thread.start()
        barrier.wait()
        started = time.perf_counter()
        time.sleep(args.seconds)
        stop.set()
        for thread in threads:
            thread.join(60)
        cell.seconds = time.perf_counter() - started
        cell.sum_after = admin.execute(f"SELECT sum(qty) FROM {table}").fetchone()[0]
    for conn in conns:
        conn.close()
    return cell


def setup(dsn: str, rows: int) -> None:
    with connect(dsn, autocommit=True) as conn:
        for table in ("plain", "items", "overlaid"):
            conn.execute(
                f"CREATE TABLE {table} (id int PRIMARY KEY, qty bigint NOT NULL DEFAULT 0, "
                "note text)"
            )
            conn.execute(
                f"INSERT INTO {table} (id, qty, note) "
                "SELECT n, 0, 'hot row ' || n FROM generate_series(1, %s) AS n",
                [rows],
            )
        cowsync.deploy(conn)
        cowsync.enable(conn, "items")
        cowsync.enable(conn, "overlaid", mode="overlay")  # production uses the table itself
        conn.execute("VACUUM ANALYZE plain")
        conn.execute("VACUUM ANALYZE items_base")
        conn.execute("VACUUM ANALYZE overlaid")


# --- report -------------------------------------------------------------------------------


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f} %" if whole else "—"


def workload_report(workload: str, cells: Sequence[Cell]) -> str:
    table = next((c for c in cells if c.path == "table"), None)
    header = [
        "path",
        "statements/s",
        "ratio",
        "units",
        "committed",
        "22023",
        "40001",
        "40P01",
        "other",
        "40001 rate",
        "sum check",
    ]
    if workload == "delete-insert":
        header.insert(5, "row gone")
    rows = []
    for c in cells:
        row: list[Any] = [
            c.path,
            f"{c.rate:,.0f}",
            ratio(c.rate, table.rate if table else None),
            f"{c.units:,}",
            f"{c.committed:,}",
            c.errors_of("22023"),
            c.errors_of("40001"),
            c.errors_of("40P01"),
            ", ".join(f"{s} x{n}" for s, n in sorted(c.errors.items()) if s not in KNOWN) or 0,
            pct(c.errors_of("40001"), c.units),
            "ok" if c.consistent else f"LOST {c.increments - (c.sum_after - c.sum_before)}",
        ]
        if workload == "delete-insert":
            row.insert(5, f"{c.gone:,}")
        rows.append(row)
    text = f"### {workload}\n\n" + markdown_table(header, rows)
    retried = next((c for c in cells if c.path == "view, retried"), None)
    if retried is not None:
        text += (
            f"\n\nview, retried: {retried.attempts - retried.units:,} retries for "
            f"{retried.units:,} units; {sum(retried.errors.values())} units still failed "
            "after the helper's attempts."
        )
    return text


KNOWN = ("22023", "40001", "40P01")


def target_report(cells: Sequence[Cell]) -> str:
    lines = ["### Issue 14 targets (production, no session)", ""]
    for c in cells:
        if c.path not in ("view", "overlay table"):
            continue
        e22 = c.errors_of("22023")
        rate = c.serialization_rate
        lines.append(
            f"- {c.path}, {c.workload}: 22023 x{e22} ({'met' if e22 == 0 else 'MISSED'}), "
            f"40001 {100 * rate:.2f} % of units "
            f"({'met' if rate <= TARGET_40001 else 'MISSED'}: target <= 1 %); "
            f"sum check {'ok' if c.consistent else 'FAILED'}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dsn", required=True, help="any database on the server (used to create ours)"
    )
    parser.add_argument("--threads", type=int, default=6, help="writer threads (connections)")
    parser.add_argument("--rows", type=int, default=5, help="hot rows")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per path and workload")
    parser.add_argument(
        "--statements", type=int, default=3, help="updates per transaction (transaction workload)"
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated subset of {', '.join(WORKLOADS)}",
    )
    parser.add_argument(
        "--retry",
        action="store_true",
        help="also run the view through cowsync.retry_serialization_failures",
    )
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    args = parser.parse_args(argv)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    if args.threads < 1 or args.rows < 1 or args.seconds <= 0:
        parser.error("--threads, --rows and --seconds must be positive")
    return args


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    paths = ["table", "view"] + (["view, retried"] if args.retry else []) + ["overlay table"]
    started = time.perf_counter()
    all_cells: list[Cell] = []
    with scratch_database(args.dsn, "cowsync_bench_hot_rows", keep=args.keep_db) as dsn:
        setup(dsn, args.rows)
        with connect(dsn, autocommit=True) as conn:
            note = machine_note(conn)
        print(
            f"## Hot rows: {time.strftime('%Y-%m-%d %H:%M')}, {args.threads} threads, "
            f"{args.rows} rows, {args.seconds:g} s per cell\n"
        )
        print(f"Machine: {note}; {code_note()}.\n")
        for workload in args.workloads:
            cells = []
            for path in paths:
                _log(f"{workload}: {path} ...")
                cells.append(run_cell(dsn, path, workload, args, args.seed))
            all_cells.extend(cells)
            print(workload_report(workload, cells) + "\n", flush=True)
    print(target_report(all_cells))
    print(
        f"\n(total run time {time.perf_counter() - started:.0f}s, "
        f"load average {os.getloadavg()[0]:.2f} at the end)"
    )
    return 0 if all(c.consistent for c in all_cells) else 1


if __name__ == "__main__":
    sys.exit(main())
