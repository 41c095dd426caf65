"""``cowsync demo`` end to end on the test database: the good operations land, the bad don't."""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from rich.console import Console

import cowsync
from cowsync.cli.demo import run_demo

from .conftest import Invoke

GOOD = ["1-restock-low-stock", "2-fulfil-order-1001"]


def demo_state(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    """Stock levels, order statuses and products of a kept demo schema, as production sees them."""
    conn.execute(psycopg.sql.SQL("SET search_path TO {}").format(psycopg.sql.Identifier(schema)))
    try:
        return {
            "stock": dict(
                ((w, p), q)
                for w, p, q in conn.execute("SELECT warehouse_id, product_id, quantity FROM stock")
            ),
            "orders": dict(conn.execute("SELECT id, status FROM orders").fetchall()),
            "products": {
                sku: price for sku, price in conn.execute("SELECT sku, price FROM products")
            },
        }
    finally:
        conn.execute("RESET search_path")


def assert_only_the_good_operations_landed(state: dict[str, Any]) -> None:
    # Good: the four low stock levels restocked to twice their reorder level, then six
    # lamps shipped from North for order 1001.
    assert state["stock"][(1, 1)] == 14
    assert state["stock"][(1, 4)] == 8
    assert state["stock"][(2, 2)] == 10
    assert state["stock"][(2, 3)] == 40
    assert state["orders"] == {1001: "fulfilled", 1002: "open", 1003: "fulfilled"}
    # Bad: the desk is still sold, the mugs were not driven negative, the chair kept its price.
    assert "DESK-04" in state["products"]
    assert state["stock"][(1, 3)] == 40
    assert state["products"]["CHAIR-02"] == Decimal("149.00")


def test_demo_commits_the_good_operations_and_drops_the_bad(
    invoke: Invoke, conn: psycopg.Connection[Any]
) -> None:
    result = invoke("demo", "--keep")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "production is exactly as it was before the agent ran" in out
    assert "refused inside the session" in out and "stock_quantity_not_negative" in out
    assert "committed 5 row(s)" in out
    assert_only_the_good_operations_landed(demo_state(conn, "cowsync_demo"))
    assert cowsync.sessions(conn) == []  # nothing left to review
    assert {t.table for t in cowsync.status(conn)} == {
        f"cowsync_demo.{t}" for t in ("orders", "products", "stock", "warehouses")
    }


def test_demo_outcome_names_what_was_kept_refused_and_discarded(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    console = Console(file=io.StringIO(), width=120)
    outcome = run_demo(console, dsn=dsn, schema="demo_outcome")
    assert outcome.committed == GOOD
    assert "4-stocktake-mugs" in outcome.refused_in_session
    # Deleting a product that open orders reference is refused in the session (foreign keys
    # are judged there) or, if it got through, discarded at review: never committed.
    assert "3-discontinue-desk" in outcome.refused_in_session + outcome.discarded
    assert "5-reprice-chair" in outcome.discarded
    assert outcome.production_before != outcome.production_after
    _columns, rows = outcome.production_after["stock"]
    assert dict(((r[0], r[1]), r[2]) for r in rows)[(1, 1)] == 14


def test_demo_leaves_the_database_as_it_found_it(
    invoke: Invoke, conn: psycopg.Connection[Any]
) -> None:
    result = invoke("demo")
    assert result.exit_code == 0, result.output
    schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")}
    assert "cowsync_demo" not in schemas
    assert "cowsync" not in schemas  # the demo installed the engine, so it removed it


def test_demo_keeps_an_engine_that_was_already_there(
    invoke: Invoke, conn: psycopg.Connection[Any], make_table: Any
) -> None:
    make_table(name="items", rows=3)
    cowsync.deploy(conn)
    cowsync.enable(conn, "items")
    with cowsync.session(conn, "other", "op"):
        conn.execute("UPDATE items SET qty = 6 WHERE id = 1")
    assert invoke("demo", "--schema", "elsewhere").exit_code == 0
    assert [t.table for t in cowsync.status(conn)] == ["public.items"]
    assert [s.session_id for s in cowsync.sessions(conn)] == ["other"]


def test_demo_refuses_a_schema_that_exists(invoke: Invoke, conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE SCHEMA taken")
    result = invoke("demo", "--schema", "taken")
    assert result.exit_code == 1
    assert "schema taken already exists" in result.stderr
    assert "Traceback" not in result.output


def test_interactive_demo_commits_what_the_user_keeps(
    invoke: Invoke, conn: psycopg.Connection[Any]
) -> None:
    # First answer keeps only the fulfilment, which the engine refuses without the restock;
    # the second round keeps restock, fulfilment and (against advice) the chair's new price.
    answers = "n\ny\nn\ny\ny\ny\ny\n"
    result = invoke("demo", "--interactive", "--keep", input=answers, interactive=True)
    assert result.exit_code == 0, result.output
    assert "that selection would be refused" in result.stdout
    state = demo_state(conn, "cowsync_demo")
    assert state["stock"][(1, 1)] == 14
    assert state["products"]["CHAIR-02"] == Decimal("1.49")
    assert cowsync.sessions(conn) == []


def test_interactive_demo_needs_a_terminal(invoke: Invoke) -> None:
    result = invoke("demo", "--interactive")
    assert result.exit_code == 1
    assert "needs a terminal" in result.stderr


@pytest.mark.parametrize("bad", ["postgresql://postgres@127.0.0.1:1/x"])
def test_demo_on_an_unreachable_dsn_is_a_user_error(invoke: Invoke, bad: str) -> None:
    result = invoke("demo", "--dsn", bad)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach the database given for the demo")
    assert "--embedded" in result.stderr
