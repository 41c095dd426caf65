"""The inventory story of example_projects/flask_inventory, run end to end with Flask's test
client: an agent works in a session through the API, production stays untouched, a reviewer
commits the good operations with ``flask cowsync`` and production gets exactly those."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

import cowsync
from cowsync.integrations.flask.sqlalchemy_binding import engine_binding
from tests.flask.conftest import sqlalchemy_url

EXAMPLE = Path(__file__).resolve().parents[2] / "example_projects" / "flask_inventory"
sys.path.insert(0, str(EXAMPLE))

import inventory  # noqa: E402
import inventory.orm  # noqa: E402
from inventory import agent  # noqa: E402

SESSION = "agent-run-1"
APPROVED = ("1-restock-low-stock", "2-fulfil-order-1001")

SNAPSHOT = {
    "products": "SELECT id, sku, name, price FROM products ORDER BY id",
    "stock": "SELECT warehouse_id, product_id, quantity, reorder_level FROM stock "
    "ORDER BY warehouse_id, product_id",
    "orders": "SELECT id, customer, product_id, warehouse_id, quantity, status FROM orders "
    "ORDER BY id",
}

SEED = {
    "products": [
        (1, "LAMP-01", "Desk lamp", Decimal("24.50")),
        (2, "CHAIR-02", "Office chair", Decimal("149.00")),
        (3, "MUG-03", "Coffee mug", Decimal("6.90")),
        (4, "DESK-04", "Standing desk", Decimal("399.00")),
    ],
    "stock": [
        (1, 1, 3, 10),
        (1, 2, 12, 5),
        (1, 3, 40, 20),
        (1, 4, 2, 4),
        (2, 1, 15, 10),
        (2, 2, 1, 5),
        (2, 3, 8, 20),
        (2, 4, 6, 4),
    ],
    "orders": [
        (1001, "Ada Lovelace", 1, 1, 6, "open"),
        (1002, "Grace Hopper", 4, 2, 1, "open"),
        (1003, "Alan Turing", 3, 1, 2, "fulfilled"),
    ],
}

# Production after the reviewer commits the restock and the fulfilment, and nothing else:
# the four low levels at twice their reorder level, then 6 lamps shipped from North.
EXPECTED = {
    "products": SEED["products"],
    "stock": [
        (1, 1, 20 - 6, 10),
        (1, 2, 12, 5),
        (1, 3, 40, 20),
        (1, 4, 8, 4),
        (2, 1, 15, 10),
        (2, 2, 10, 5),
        (2, 3, 40, 20),
        (2, 4, 6, 4),
    ],
    "orders": [
        (1001, "Ada Lovelace", 1, 1, 6, "fulfilled"),
        (1002, "Grace Hopper", 4, 2, 1, "open"),
        (1003, "Alan Turing", 3, 1, 2, "fulfilled"),
    ],
}


def snapshot(conn):
    return {table: conn.execute(query).fetchall() for table, query in SNAPSHOT.items()}


def client_transport(client):
    """The agent's transport, through Flask's test client instead of a server."""

    def send(method, path, headers, body):
        response = client.open(path, method=method, headers=headers, json=body)
        return response.status_code, response.get_json(silent=True) or response.get_data(
            as_text=True
        )

    return send


@pytest.fixture(params=["psycopg", "flask-sqlalchemy"])
def inventory_app(request, private_dsn):
    base = {"TESTING": True, "COWSYNC_POOL_MIN_SIZE": 1, "AGENT_TOKEN": None}
    if request.param == "psycopg":
        app = inventory.create_app({**base, "COWSYNC_DATABASE_URL": private_dsn})
        cow = inventory.cow
    else:
        app = inventory.orm.create_app(
            {**base, "SQLALCHEMY_DATABASE_URI": sqlalchemy_url(private_dsn)}
        )
        cow = inventory.orm.cow
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    try:
        yield app
    finally:
        cow.close(app)
        if request.param != "psycopg":
            with app.app_context():
                engine = inventory.orm.db.engine
                engine_binding(engine).remove()
                engine.dispose()


def test_the_agents_work_reaches_production_only_as_approved(inventory_app, private_dsn):
    app = inventory_app
    cli = app.test_cli_runner()
    with psycopg.connect(private_dsn, autocommit=True) as conn:
        assert snapshot(conn) == SEED

        said = []
        outcomes = agent.run(client_transport(app.test_client()), SESSION, say=said.append)
        assert [o.status for o in outcomes] == [200, 200, 409, 409, 200]
        assert outcomes[2].body["constraint"].endswith("_fkey")  # products still referenced
        assert outcomes[3].body["constraint"] == "stock_quantity_not_negative"
        assert said[0] == f"session {SESSION}: 4 stock level(s) below their reorder level"

        # Production is untouched; the session sees the agent's work through the same API.
        assert snapshot(conn) == SEED
        session_stock = app.test_client().get("/stock", headers={"X-Cow-Session-Id": SESSION})
        assert not any(level["low"] for level in session_stock.get_json()["stock"])
        production_stock = app.test_client().get("/stock").get_json()["stock"]
        assert sum(level["low"] for level in production_stock) == 4

        # Review: the refused calls left nothing; the fulfilment builds on the restock.
        operations = json.loads(
            cli.invoke(args=["cowsync", "operations", SESSION, "--json"]).output
        )
        assert [op["operation_id"] for op in operations["operations"]] == [
            "1-restock-low-stock",
            "2-fulfil-order-1001",
            "5-reprice-chair",
        ]
        deps = json.loads(cli.invoke(args=["cowsync", "deps", SESSION, "--json"]).output)
        assert deps["dependencies"]["2-fulfil-order-1001"] == ["1-restock-low-stock"]
        diff = cli.invoke(args=["cowsync", "diff", SESSION, "-o", "5-reprice-chair"])
        assert "149.00 → 1.49" in diff.output

        commit = cli.invoke(
            args=["cowsync", "commit", SESSION, *[f"-o{op}" for op in APPROVED], "--yes"]
        )
        assert commit.exit_code == 0, commit.output
        discard = cli.invoke(args=["cowsync", "discard", SESSION, "--yes"])
        assert discard.exit_code == 0, discard.output

        assert snapshot(conn) == EXPECTED
        assert SESSION not in {s.session_id for s in cowsync.sessions(conn)}


def test_agent_token_guards_the_sessions(private_dsn):
    app = inventory.create_app(
        {
            "TESTING": True,
            "COWSYNC_DATABASE_URL": private_dsn,
            "COWSYNC_POOL_MIN_SIZE": 1,
            "AGENT_TOKEN": "s3cret",
        }
    )
    assert app.test_cli_runner().invoke(args=["init-db"]).exit_code == 0
    try:
        client = app.test_client()
        refused = client.get("/stock", headers={"X-Cow-Session-Id": SESSION})
        assert refused.status_code == 403
        allowed = client.get(
            "/stock", headers={"X-Cow-Session-Id": SESSION, "X-Agent-Token": "s3cret"}
        )
        assert allowed.status_code == 200
        assert client.get("/stock").status_code == 200  # production needs no token here
    finally:
        inventory.cow.close(app)
