"""How much does carrying the session cost per query? (docs/django.md, "How the session
reaches PostgreSQL")

    .venv/bin/python bench/django_binding.py [--dsn postgresql://postgres@127.0.0.1/postgres]

Creates a scratch database, a 1000-row enabled table, and times a primary-key read through
Django's cursor (and through the ORM) in these setups, in one run:

* ``stock``: Django's own PostgreSQL backend, no cowsync involved (the table is the view,
  unbound);
* ``unbound``: the cowsync backend with no session bound;
* ``per-statement``: the cowsync backend, bound: ``set_config(..., true)``, its values as
  parameters, shares a pipeline with every statement (what the backend does);
* ``literal-prefix``: what the backend did before, prototyped here: the ``set_config`` with
  the ids as literals glued in front of the statement in one simple-query message (one
  round trip, but every backend of the role reads the ids in ``pg_stat_activity``);
* ``cached-set``: the alternative, prototyped here: ``set_config(..., false)`` once, then
  plain statements while the binding is unchanged (no prefix, but a cache that rollbacks
  can make lie);
* ``separate-round-trip``: stating the session in its own round trip before each statement.

Prints microseconds per query (median of several rounds) and the ratio to ``stock``.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import statistics
import time
from collections.abc import Callable
from typing import Any

import django
import psycopg
from django.conf import settings
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import cowsync


def _configure(dsn: str) -> None:
    params = conninfo_to_dict(dsn)
    common = {
        "NAME": params.get("dbname"),
        "USER": params.get("user", ""),
        "PASSWORD": params.get("password", ""),
        "HOST": params.get("host", ""),
        "PORT": str(params.get("port", "")),
        "CONN_MAX_AGE": None,
    }
    settings.configure(
        DATABASES={
            "default": {"ENGINE": "cowsync.integrations.django", **common},
            "stock": {"ENGINE": "django.db.backends.postgresql", **common},
        },
        INSTALLED_APPS=["cowsync.integrations.django"],
        USE_TZ=True,
    )
    django.setup()


def _timed(run: Callable[[], Any], n: int, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            run()
        samples.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="host=127.0.0.1 user=postgres dbname=postgres")
    parser.add_argument("-n", type=int, default=2000, help="queries per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    name = f"cowsync_bench_{secrets.token_hex(4)}"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(args.dsn, dbname=name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, qty int)")
            conn.execute(
                "INSERT INTO items SELECT g, 'item-' || g, g FROM generate_series(1, 1000) g"
            )
            cowsync.deploy(conn)
            cowsync.enable(conn, "items")
            conn.execute("ANALYZE")
        _configure(dsn)
        _run(args.n, args.rounds)
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _run(n: int, rounds: int) -> None:
    from django.db import connections

    from cowsync.integrations.django import cow_session

    query = "SELECT id, name, qty FROM items WHERE id = %s"
    stock = connections["stock"].cursor()
    ours = connections["default"].cursor()
    raw = connections["default"].connection
    stock_raw = connections["stock"].connection

    def read(cursor: Any) -> Any:
        cursor.execute(query, [7])
        return cursor.fetchone()

    prefix = (
        "SELECT pg_catalog.set_config('app.session_id', 'bench', true), "
        "pg_catalog.set_config('app.operation_id', 'op', true), "
        "pg_catalog.set_config('app.visible_operations', '', true); "
    )

    def literal_prefix() -> Any:
        stock.execute(prefix + query, [7])
        stock.nextset()
        return stock.fetchone()

    def separate() -> Any:
        with psycopg.Cursor(raw) as plain:
            plain.execute(
                "SELECT set_config('app.session_id', 'bench', true), "
                "set_config('app.operation_id', 'op', true)"
            )
        return read(stock)

    # The cached alternative: one session-level set_config when the binding changes, then
    # plain statements (nothing per statement but the cache check).
    applied: list[str | None] = [None]

    def cached() -> Any:
        if applied[0] != "bench":
            stock_raw.execute("SELECT set_config('app.session_id', 'bench', false)")
            applied[0] = "bench"
        return read(stock)

    unbound = contextlib.nullcontext
    variants: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "stock (no session)": (unbound, lambda: read(stock)),
        "unbound": (unbound, lambda: read(ours)),
        "per-statement": (lambda: cow_session("bench", "op"), lambda: read(ours)),
        "literal-prefix": (unbound, literal_prefix),
        "cached-set": (unbound, cached),
        "separate-round-trip": (unbound, separate),
    }
    samples: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(rounds):
        # Interleaved, so that load from elsewhere on the machine hits every variant alike.
        for label, (context, run) in variants.items():
            stock_raw.execute("SELECT set_config('app.session_id', '', false)")
            applied[0] = None
            with context():
                samples[label].append(_timed(run, n, 1))
    stock_raw.execute("SELECT set_config('app.session_id', '', false)")

    base = statistics.median(samples["stock (no session)"])
    print(f"primary-key read through Django's cursor, {n} queries x {rounds} rounds")
    print(f"  {'':<22} {'median':>8}  {'min':>8}  median vs stock")
    for label, values in samples.items():
        micros = statistics.median(values)
        print(f"  {label:<22} {micros:8.1f}  {min(values):8.1f}  {micros - base:+7.1f} µs")


if __name__ == "__main__":
    main()
