"""The README's story, end to end, against real PostgreSQL: ``python manage.py test``.

Django creates the test database and runs ``migrate``; with ``ENABLE_AFTER_MIGRATE`` that
deploys cowsync and enables the inventory tables, as in production. The agent's calls go
through Django's test client with its session headers.
"""

from __future__ import annotations

import io
import json
from decimal import Decimal
from typing import Any

from agent import SCRIPT, run
from django.core.management import call_command
from django.db import connection
from django.test import Client, TestCase

import cowsync

from .demo import seed
from .models import Order, Product, Stock

SESSION = "agent-run-1"


def client_transport(client: Client):
    """The agent's transport over Django's test client."""

    def call(method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str]):
        if method == "GET":
            response = client.get(path, headers=headers)
        else:
            response = client.post(
                path, json.dumps(body or {}), content_type="application/json", headers=headers
            )
        return response.status_code, response.json()

    return call


def production() -> dict[str, Any]:
    """What production holds (no session bound)."""
    return {
        "stock": sorted(Stock.objects.values_list("product__sku", "warehouse__code", "quantity")),
        "orders": sorted(Order.objects.values_list("number", "status")),
        "products": sorted(Product.objects.values_list("sku", "price")),
    }


def cowsync_command(*args: str) -> str:
    out = io.StringIO()
    call_command("cowsync", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


class AgentStoryTest(TestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        seed()

    def setUp(self) -> None:
        self.before = production()
        outcomes = run(client_transport(Client()), SESSION, echo=lambda line: None)
        self.statuses = dict(outcomes)

    def test_the_tables_are_sandboxed(self) -> None:
        enabled = {t.name for t in cowsync.status(connection.connection)}
        assert {"inventory_stock", "inventory_order", "inventory_product"} <= enabled

    def test_calls_succeed_or_are_refused_inside_the_session(self) -> None:
        assert [self.statuses[c.operation] for c in SCRIPT] == [200, 200, 409, 409, 200]

    def test_production_is_untouched_until_the_review(self) -> None:
        assert production() == self.before
        in_session = Client().get("/api/stock/", headers={"X-Cow-Session-Id": SESSION}).json()
        north_lamps = next(
            s for s in in_session["stock"] if (s["sku"], s["warehouse"]) == ("LAMP-02", "NORTH")
        )
        assert north_lamps["quantity"] == 16 - 6  # restocked to 2 x 8, then 6 shipped

    def test_the_reviewer_commits_exactly_the_good_operations(self) -> None:
        operations = json.loads(cowsync_command("operations", SESSION, "--json"))["operations"]
        assert [o["operation_id"] for o in operations] == [
            "1-restock-low-stock",
            "2-ship-order-1001",
            "5-reprice-chair",
        ]
        assert operations[1]["depends_on"] == ["1-restock-low-stock"]
        diff = json.loads(cowsync_command("diff", SESSION, "-o", "5-reprice-chair", "--json"))
        assert [c["after"]["price"] for c in diff["changes"]] == ["1.49"]

        cowsync_command(
            "commit", SESSION, "-o", "1-restock-low-stock", "-o", "2-ship-order-1001", "--yes"
        )
        cowsync_command("discard", SESSION, "--yes")

        after = production()
        expected_stock = {
            ("CHAIR-01", "NORTH"): 20,
            ("LAMP-02", "NORTH"): 10,
            ("MUG-11", "SOUTH"): 40,
        }
        for sku, warehouse, quantity in after["stock"]:
            before = next(q for s, w, q in self.before["stock"] if (s, w) == (sku, warehouse))
            assert quantity == expected_stock.get((sku, warehouse), before)
        assert after["orders"] == [(1001, "shipped"), (1002, "open")]
        assert after["products"] == self.before["products"]
        assert dict(after["products"])["CHAIR-01"] == Decimal("149.00")
        assert cowsync.sessions(connection.connection) == []

    def test_sessions_other_than_agents_are_refused(self) -> None:
        response = Client().post("/api/stock/restock-low/", headers={"X-Cow-Session-Id": "admin"})
        assert response.status_code == 403
        assert production() == self.before
