"""Benchmark: pool checkout + one query + return, CowPool against a plain ConnectionPool.

Measures the time per cycle (checkout, ``SELECT %s::int``, return) for:

* a plain ``psycopg_pool.ConnectionPool`` (the reference),
* ``CowPool`` unbound and bound to a session (session mode, the default),
* ``CowPool(transaction_local=True)`` unbound and bound (the pgbouncer mode),
* "verify at checkout", the design CowPool rejected: no clear on return, the
  binding (or its absence) set at every checkout instead,

with 1 and 8 threads, on autocommit connections and on connections that run a
transaction per checkout (``BEGIN`` ... ``COMMIT``). The query is trivial on
purpose, so that the differences are the pool's and the binding's, not the
engine's read path (bench/view_paths.py measures that). It also measures the
round-trip time of ``SELECT 1`` on one connection and prints each variant's extra
cost in round trips.

How the numbers are kept comparable: every pool has the same size (threads +
``--headroom`` connections, opened, filled and warmed up before timing), variants
take turns in rounds so drift in machine load hits all of them, and each cell is
the best of the rounds. With several threads the figure is wall time divided by the number
of cycles (throughput, not latency). A last table repeats the plain and CowPool
variants with no spare connection (threads = connections), the worst case for
CowPool, whose returned connections rejoin the pool after the worker's clear.

Run (it creates and drops its own database)::

    .venv/bin/python bench/checkout.py --dsn postgresql://postgres@127.0.0.1/postgres
    .venv/bin/python bench/checkout.py --write docs/benchmarks.md   # update that section

Not a test: pytest collects only ``tests/``.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from _report import machine_note, markdown_table, ratio
from _scratchdb import scratch_database
from psycopg_pool import ConnectionPool

import cowsync
from cowsync.pool import CowPool
from cowsync.pool.pool import _UNKNOWN

SECTION = "## Pool checkout"
QUERY = "SELECT %s::int"


class VerifyAtCheckoutPool(CowPool[Any]):
    """The rejected alternative: leave the binding on return, set it at every checkout.

    Safe too (every checkout states its binding, unbound ones included), but an
    unbound checkout pays a round trip on the borrower's path instead of the
    pool's worker paying it on return. Here only to be measured.
    """

    def _reset_connection_binding(self, conn: Any) -> None:
        self._remember(conn, _UNKNOWN)


@dataclass(frozen=True)
class Variant:
    name: str
    make: Callable[..., ConnectionPool[Any]]
    session_id: str | None = None


VARIANTS = [
    Variant("plain ConnectionPool", ConnectionPool),
    Variant("CowPool, unbound", CowPool),
    Variant("CowPool, bound", CowPool, "bench-session"),
    Variant(
        "CowPool transaction_local, unbound",
        lambda *a, **k: CowPool(*a, transaction_local=True, **k),
    ),
    Variant(
        "CowPool transaction_local, bound",
        lambda *a, **k: CowPool(*a, transaction_local=True, **k),
        "bench-session",
    ),
    Variant("verify at checkout (rejected), unbound", VerifyAtCheckoutPool),
    Variant("verify at checkout (rejected), bound", VerifyAtCheckoutPool, "bench-session"),
    Variant(
        'CowPool clear_on_return="caller", unbound',
        lambda *a, **k: CowPool(*a, clear_on_return="caller", **k),
    ),
    Variant(
        'CowPool clear_on_return="caller", bound',
        lambda *a, **k: CowPool(*a, clear_on_return="caller", **k),
        "bench-session",
    ),
]


def round_trip_us(dsn: str, samples: int) -> float:
    """Median time of ``SELECT 1`` on one autocommit connection, in µs."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(200):
            conn.execute("SELECT 1")
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


TIGHT_VARIANTS = [*VARIANTS[:3], *VARIANTS[-2:]]


@dataclass(frozen=True)
class Sample:
    """One timed run: wall time and client CPU time (every thread), per cycle, in µs."""

    wall: float
    cpu: float


def run_cycles(
    pool: ConnectionPool[Any], session_id: str | None, threads: int, cycles: int
) -> Sample:
    """Run ``cycles`` checkouts per thread on ``threads`` threads."""
    start_line = threading.Barrier(threads + 1)
    finish_line = threading.Barrier(threads + 1)

    def worker() -> None:
        binding = cowsync.bind(session_id) if session_id else contextlib.nullcontext()
        with binding:
            start_line.wait()
            for n in range(cycles):
                with pool.connection() as conn:
                    conn.execute(QUERY, [n]).fetchone()
            finish_line.wait()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    start_line.wait()
    cpu_started = time.process_time()
    started = time.perf_counter()
    finish_line.wait()
    elapsed = time.perf_counter() - started
    _wait_returned(pool)  # the worker's last clears belong to this run's CPU
    cpu = time.process_time() - cpu_started
    for thread in workers:
        thread.join()
    total = cycles * threads
    return Sample(elapsed / total * 1e6, cpu / total * 1e6)


def _wait_returned(pool: ConnectionPool[Any]) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stats = pool.get_stats()
        if stats["pool_available"] >= stats["pool_size"]:
            return
        time.sleep(0.0005)


@contextlib.contextmanager
def open_pool(variant: Variant, dsn: str, size: int, autocommit: bool) -> Iterator[Any]:
    pool = variant.make(
        dsn,
        min_size=size,
        max_size=size,
        open=True,
        kwargs={"autocommit": autocommit},
    )
    try:
        pool.wait(timeout=30)
        yield pool
    finally:
        pool.close()


Results = dict[tuple[bool, int, str], Sample]


def measure(
    dsn: str,
    args: argparse.Namespace,
    variants: Sequence[Variant],
    autocommit_modes: Sequence[bool],
    headroom: int,
) -> Results:
    """The best run (lowest wall time and lowest CPU) of each (autocommit, threads, variant).

    Each pool has ``threads + headroom`` connections. Best-of-N, as ``timeit`` does:
    on a shared machine, other load only ever adds time.
    """
    results: Results = {}
    for autocommit in autocommit_modes:
        for threads in args.threads:
            cycles = max(args.cycles // threads, 50)
            samples: dict[str, list[Sample]] = {v.name: [] for v in variants}
            for _ in range(args.rounds):
                for variant in variants:
                    # One pool open at a time keeps the server well below max_connections.
                    with open_pool(variant, dsn, threads + headroom, autocommit) as pool:
                        run_cycles(pool, variant.session_id, threads, min(cycles, 100))  # warm up
                        samples[variant.name].append(
                            run_cycles(pool, variant.session_id, threads, cycles)
                        )
            for name, runs in samples.items():
                results[(autocommit, threads, name)] = Sample(
                    min(r.wall for r in runs), min(r.cpu for r in runs)
                )
            print(
                f"  headroom={headroom} autocommit={autocommit} threads={threads}: done",
                file=sys.stderr,
                flush=True,
            )
    return results


def table(
    results: Results,
    variants: Sequence[Variant],
    autocommit: bool,
    threads: Sequence[int],
    rtt: float,
) -> str:
    header = ["variant"]
    for count in threads:
        header += [f"{count} thr µs", "ratio", "extra RT", "CPU µs"]
    rows = []
    for variant in variants:
        row: list[Any] = [variant.name]
        for count in threads:
            value = results[(autocommit, count, variant.name)]
            reference = results[(autocommit, count, variants[0].name)].wall
            row += [
                f"{value.wall:.0f}",
                ratio(value.wall, reference),
                f"{(value.wall - reference) / rtt:+.1f}",
                f"{value.cpu:.0f}",
            ]
        rows.append(row)
    return markdown_table(header, rows)


ROUND_TRIPS = """\
Round trips each variant adds to a cycle, by design (the counts are asserted on the wire,
with libpq's protocol trace, in tests/pool/):

| variant | bound checkout | unbound checkout | each statement | return |
| --- | --- | --- | --- | --- |
| CowPool (session mode) | 1 | 0 | 0 | 1, on the pool's worker thread |
| CowPool, `clear_on_return="caller"` | 1 | 0 | 0 | 1, inside `putconn()` |
| CowPool transaction_local | 0 | 0 | 0 (`set_config` rides along) | 1, on the worker |
| verify at checkout (rejected) | 1 | 1 | 0 | 0 |

In transaction-local mode `set_config` rides with `BEGIN` or in the statement's pipeline.

Wall times on this machine are dominated by client CPU: a round trip of `SELECT 1` is ~40 µs,
while one more statement costs the client 40-60 µs of CPU and a hand-off to the pool's worker
thread about as much again, on 2 cores shared with the server (and, during this run, with other
jobs: see the load average). So "extra RT" here measures CPU as much as network; with a server
across a network (round trips of hundreds of µs) the worker's hand-off is the cheaper way to
hide the return's round trip, and on a small box like this one `clear_on_return="caller"` is.
"""


def report(
    results: Results, tight: Results, rtt: float, args: argparse.Namespace, note: str
) -> str:
    lines = [
        SECTION,
        "",
        "Checkout + `SELECT %s::int` + return, µs per cycle: the best of "
        f"{args.rounds} rounds (on a shared machine other load only adds time); with "
        "several threads, wall time / cycles. Ratio and extra cost are against the plain "
        "`ConnectionPool` in the same column; extra round trips (RT) = extra µs / the "
        f"round trip of `SELECT 1` ({rtt:.0f} µs here). CPU µs: client CPU per cycle, "
        f"every thread (pool workers included). Pools hold threads + {args.headroom} "
        "connections.",
        "",
        ROUND_TRIPS,
    ]
    for autocommit in (True, False):
        mode = "autocommit" if autocommit else "a transaction per checkout (BEGIN ... COMMIT)"
        lines += [f"Connections in {mode}:", ""]
        lines += [table(results, VARIANTS, autocommit, args.threads, rtt), ""]
    lines += [
        "Pools with no spare connection (threads = connections, autocommit): a borrower "
        "may wait for the worker thread that clears a returned connection.",
        "",
        table(tight, TIGHT_VARIANTS, True, args.threads, rtt),
        "",
        f"Machine: {note}.",
        "",
        "Command: `" + " ".join(["python bench/checkout.py", *args.argv]).strip() + "`",
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace (or append) this benchmark's section of ``path``, leaving the others."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1/postgres")
    parser.add_argument("--threads", default="1,8", help="thread counts, e.g. 1,8")
    parser.add_argument("--cycles", type=int, default=2000, help="cycles per round (all threads)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--headroom", type=int, default=2, help="connections beyond threads")
    parser.add_argument("--rtt-samples", type=int, default=2000)
    parser.add_argument("--write", type=Path, help="update the section of this Markdown file")
    args = parser.parse_args(argv)
    args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    args.argv = [a for a in (argv if argv is not None else sys.argv[1:])]
    if "--dsn" in args.argv:  # the command printed in the docs names no server
        i = args.argv.index("--dsn")
        del args.argv[i : i + 2]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with scratch_database(args.dsn, "cowsync_bench_checkout") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            cowsync.deploy(conn)  # so the bound variants bind to a real engine
            note = machine_note(conn)
        rtt = round_trip_us(dsn, args.rtt_samples)
        print(f"round trip of SELECT 1: {rtt:.0f} µs", file=sys.stderr)
        results = measure(dsn, args, VARIANTS, (True, False), args.headroom)
        tight = measure(dsn, args, TIGHT_VARIANTS, (True,), 0)
    section = report(results, tight, rtt, args, note)
    print(section)
    if args.write:
        write_section(args.write, section)
        print(f"updated {SECTION!r} in {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
