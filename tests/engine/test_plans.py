"""Plans of point queries through the view (performance model in DESIGN.md).

One database per module: 10k rows, 1k of them changed in session ``S``, analysed.
Key predicates must reach both indexes (no Seq Scan anywhere) and estimated costs must
stay far below ``jit_above_cost`` so JIT never starts for point queries.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import cowsync
from tests._mode import OVERLAY, sessions_path
from tests._tables import create_table

ROWS = 10_000
CHANGED = 1_000
SESSION = "S"
# "A wide margin": a point query must cost under 1% of jit_above_cost.
MARGIN = 100


@pytest.fixture(scope="module")
def plans_dsn(pg_databases) -> Iterator[str]:
    name = pg_databases.create_database()
    dsn = pg_databases.dsn_for(name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            create_table(conn, "items", "items", rows=ROWS)
            create_table(conn, "comp", "composite", rows=ROWS)
            cowsync.deploy(conn)
            # Module scope comes before the function-scoped fixture that makes overlay the
            # default in the overlay run (tests/conftest.py): name the mode.
            mode = "overlay" if OVERLAY else "in-place"
            cowsync.enable(conn, "items", mode=mode)
            cowsync.enable(conn, "comp", mode=mode)
            with cowsync.session(conn, SESSION), conn.transaction():
                conn.execute("UPDATE items SET qty = qty + 1 WHERE id % 10 = 0")
                conn.execute("DELETE FROM items WHERE id % 100 = 1")
                conn.execute(
                    "INSERT INTO items (id, name) "
                    "SELECT 100000 + n, 'new' FROM generate_series(1, 10) n"
                )
                conn.execute("UPDATE comp SET label = 'x' WHERE code % 10 = 0")
            with cowsync.session(conn, "other"):
                conn.execute("UPDATE items SET qty = 0 WHERE id % 7 = 0")
            conn.execute("ANALYZE")
        yield dsn
    finally:
        pg_databases.drop_database(name)


@pytest.fixture
def pconn(plans_dsn) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(plans_dsn, autocommit=True) as conn:
        yield conn


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(nodes(child))
    return found


def explain(conn, statement, params=None, analyze=False):
    options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
    return conn.execute(f"EXPLAIN ({options}) {statement}", params).fetchone()[0][0]


def bind(conn, session):
    conn.execute("SELECT set_config('app.session_id', %s, false)", [session or ""])
    if OVERLAY:  # a bound connection reads the overlay view, an unbound one the table
        conn.execute("RESET search_path")
        if session:
            sessions_path(conn)


def assert_point_plan(result, label, bound):
    plan = result["Plan"]
    kinds = [n["Node Type"] for n in nodes(plan)]
    # Overlay mode: the view scans the empty parent the table and the change store
    # inherit from; a scan of it reads no page, so it is the one Seq Scan allowed.
    parents = {"items_parent", "comp_parent"} if OVERLAY else set()
    seq_scans = [n.get("Relation Name") for n in nodes(plan) if n["Node Type"] == "Seq Scan"]
    assert set(seq_scans) <= parents, f"{label}: {kinds}"
    jit_above_cost = 100_000
    assert plan["Total Cost"] < jit_above_cost / MARGIN, f"{label}: cost {plan['Total Cost']}"
    scanned = {n.get("Relation Name") for n in nodes(plan) if "Relation Name" in n}
    if OVERLAY and not bound:  # production reads the table itself, never a change store
        assert scanned in ({"items"}, {"comp"}), f"{label}: {scanned}"
        return
    base = "{}" if OVERLAY else "{}_base"
    assert {base.format("items"), "items_changes"} <= scanned or {
        base.format("comp"),
        "comp_changes",
    } <= scanned, f"{label}: {scanned}"


def test_jit_threshold_is_the_default(pconn):
    assert pconn.execute("SHOW jit_above_cost").fetchone()[0] == "100000"


@pytest.mark.parametrize("session", [None, SESSION])
@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
def test_point_read_by_key_uses_indexes_and_stays_cheap(pconn, session, mode):
    bind(pconn, session)
    pconn.execute(f"SET plan_cache_mode = {mode}")
    pconn.execute("PREPARE point(bigint) AS SELECT * FROM items WHERE id = $1")
    pconn.execute("PREPARE point2(text, int) AS SELECT * FROM comp WHERE region = $1 AND code = $2")
    for key in (10, 11, 5000, 100005):  # changed, untouched, untouched, new in S
        label = f"{session} {mode} {key}"
        assert_point_plan(explain(pconn, f"EXECUTE point({key})"), label, session)
    assert_point_plan(
        explain(pconn, "EXECUTE point2('west', 10)"), f"{session} {mode} comp", session
    )


@pytest.mark.parametrize("session", [None, SESSION])
def test_point_writes_by_key_use_indexes_and_stay_cheap(pconn, session):
    bind(pconn, session)
    for statement in (
        "UPDATE items SET qty = 1 WHERE id = 20",
        "DELETE FROM items WHERE id = 20",
        "SELECT * FROM items WHERE id = 20 FOR UPDATE",
    ):
        assert_point_plan(explain(pconn, statement), f"{session}: {statement}", session)


@pytest.mark.parametrize("session", [None, SESSION])
def test_point_reads_return_what_the_session_sees(pconn, session):
    bind(pconn, session)
    rows = dict(
        pconn.execute("SELECT id, qty FROM items WHERE id IN (10, 11, 101, 100001, 7)").fetchall()
    )
    if session is None:
        assert rows == {10: 3, 11: 4, 101: 3, 7: 0}
    else:
        assert rows == {10: 4, 11: 4, 100001: 0, 7: 0}


@pytest.mark.parametrize("first, then", [(None, SESSION), (SESSION, None)])
def test_a_plan_cached_on_one_side_stays_a_point_lookup_on_the_other(pconn, first, then):
    """Pools hand one connection to production and to sessions in turn, and psycopg
    prepares statements it runs often: a generic plan made on one side is reused on the
    other. It must still read a handful of rows, not all of a session's changes."""
    bind(pconn, first)
    pconn.execute("SET plan_cache_mode = force_generic_plan")
    pconn.execute("PREPARE point(bigint) AS SELECT * FROM items WHERE id = $1")
    explain(pconn, "EXECUTE point(11)", analyze=True)  # the generic plan is made here
    bind(pconn, then)

    result = explain(pconn, "EXECUTE point(11)", analyze=True)

    read = max(n.get("Actual Rows", 0) * n.get("Actual Loops", 1) for n in nodes(result["Plan"]))
    assert read <= 10, f"a point read touched {read} rows"


@pytest.mark.parametrize("session", [None, SESSION])
def test_select_for_update_through_the_view_locks_the_row_seen(pconn, plans_dsn, session):
    bind(pconn, session)
    with pconn.transaction():
        locked = pconn.execute("SELECT id, qty FROM items WHERE id = 30 FOR UPDATE").fetchall()
        assert locked == ([(30, 2)] if session is None else [(30, 3)])
        with psycopg.connect(plans_dsn, autocommit=True) as other:
            bind(other, session)
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute("SELECT id FROM items WHERE id = 30 FOR UPDATE NOWAIT")
            skipped = other.execute(
                "SELECT id FROM items WHERE id IN (30, 40) ORDER BY id FOR UPDATE SKIP LOCKED"
            ).fetchall()
            assert skipped == [(40,)]
        shared = pconn.execute(
            "SELECT id FROM items WHERE id BETWEEN 31 AND 33 ORDER BY id FOR SHARE"
        ).fetchall()
        assert shared == [(31,), (32,), (33,)]
