"""Large sessions: thousands of changed rows across three FK-linked tables, one commit.

The normal suite commits 2,000 rows. The 20,000-row variant is marked ``slow`` and runs only
when asked for (``pytest -m slow``): its commit takes under a second, but the whole test takes
3 s on an idle 2-core machine and up to 9 s on a busy one, too much of this folder's budget.
"""

from __future__ import annotations

import time

import pytest
from psycopg import sql

import cowsync
from tests.apply._state import write

TABLES = ("sites", "bins", "stock")


def fingerprint(conn, table):
    """Row count and an order-independent hash of every row."""
    query = sql.SQL("SELECT count(*), coalesce(sum(hashtext(t::text)), 0) FROM {} AS t")
    return conn.execute(query.format(sql.Identifier(table))).fetchone()


def build_session(conn, scale):
    """A session changing ``2000 * scale`` rows of sites <- bins <- stock.

    Per scale unit: 20 sites, 200 bins (site (n - 1) % 20s + 1), 1000 stock rows (bin
    (n - 1) % 200s + 1, so each bin holds 5). The session renames every site, deletes the
    last 40 bins with their 200 stock rows, adds 110 bins and 1000 stock rows, and updates
    the 750 first stock rows (120 of which were in the deleted bins).
    """
    s = scale
    conn.execute(
        """
        CREATE TABLE sites (id int PRIMARY KEY, name text NOT NULL);
        CREATE TABLE bins (id int PRIMARY KEY, site_id int NOT NULL REFERENCES sites,
                           label text NOT NULL);
        CREATE TABLE stock (id int PRIMARY KEY, bin_id int NOT NULL REFERENCES bins,
                            qty int NOT NULL);
        CREATE INDEX ON bins (site_id);
        CREATE INDEX ON stock (bin_id)
        """
    )
    conn.execute("INSERT INTO sites SELECT n, 'site-' || n FROM generate_series(1, %s) n", [20 * s])
    conn.execute(
        "INSERT INTO bins SELECT n, (n - 1) %% %s + 1, 'bin-' || n FROM generate_series(1, %s) n",
        [20 * s, 200 * s],
    )
    conn.execute(
        "INSERT INTO stock SELECT n, (n - 1) %% %s + 1, n %% 50 FROM generate_series(1, %s) n",
        [200 * s, 1000 * s],
    )
    for table in TABLES:
        cowsync.enable(conn, table)
    statements = [
        ("rename", "UPDATE sites SET name = name || '!'", []),
        ("prune", "DELETE FROM stock WHERE bin_id > %s", [160 * s]),
        ("prune", "DELETE FROM bins WHERE id > %s", [160 * s]),
        (
            "bins",
            "INSERT INTO bins SELECT n, n %% %s + 1, 'new-' || n "
            "FROM generate_series(100001, %s) n",
            [20 * s, 100000 + 110 * s],
        ),
        (
            "stock",
            "INSERT INTO stock SELECT n, 100001 + n %% %s, 1 FROM generate_series(1000001, %s) n",
            [110 * s, 1000000 + 1000 * s],
        ),
        ("count", "UPDATE stock SET qty = qty + 1 WHERE id <= %s", [750 * s]),
    ]
    for operation, statement, params in statements:
        write(conn, "big", operation, statement, params)


def commit_and_check(conn, scale):
    s = scale
    with cowsync.session(conn, "big"):
        expected = {t: fingerprint(conn, t) for t in TABLES}
    progress = []

    started = time.perf_counter()
    result = cowsync.commit(conn, "big", progress=lambda t, k, n: progress.append((t, k, n)))
    elapsed = time.perf_counter() - started

    assert result.applied == {
        "public.sites": {"insert": 0, "update": 20 * s, "delete": 0},
        "public.bins": {"insert": 110 * s, "update": 0, "delete": 40 * s},
        "public.stock": {"insert": 1000 * s, "update": 630 * s, "delete": 200 * s},
    }
    assert result.total == 2000 * s
    assert {t: fingerprint(conn, t) for t in TABLES} == expected
    assert {t for t, _, _ in progress} == {f"public.{t}" for t in TABLES}
    assert cowsync.sessions(conn) == []
    return elapsed


def test_a_2k_row_session_across_three_tables_commits_exactly(cow):
    build_session(cow, scale=1)

    commit_and_check(cow, scale=1)


@pytest.mark.slow
def test_a_20k_row_session_across_three_tables_commits_exactly(cow, request):
    if "slow" not in (request.config.option.markexpr or ""):
        pytest.skip("a 20k-row session (3 to 9 s); run with -m slow")
    build_session(cow, scale=10)

    elapsed = commit_and_check(cow, scale=10)

    print(f"\ncommit of 20000 rows across 3 tables: {elapsed:.2f} s")
