"""The inventory API, written as if cowsync did not exist: plain SQL on ``cow.connection()``.

Each write view commits its own transaction. A view that fails (a constraint, a missing
order) answers 409 and its transaction is rolled back when the request ends.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg
from flask import Blueprint, abort, request
from psycopg.rows import dict_row

from .extensions import cow

api = Blueprint("api", __name__)


def _rows(query: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    with cow.connection().cursor(row_factory=dict_row) as cur:
        rows: list[dict[str, Any]] = cur.execute(query, params).fetchall()
    return rows


@api.errorhandler(psycopg.errors.IntegrityError)
def constraint_refused(error: psycopg.errors.IntegrityError) -> tuple[dict[str, Any], int]:
    """A constraint refused the change: say which, as the database said it."""
    return {"error": error.diag.message_primary, "constraint": error.diag.constraint_name}, 409


@api.get("/products")
def list_products() -> dict[str, Any]:
    """The catalogue."""
    return {"products": _rows("SELECT id, sku, name, price FROM products ORDER BY id")}


@api.get("/stock")
def list_stock() -> dict[str, Any]:
    """Every stock level, with whether it is below its reorder level."""
    return {
        "stock": _rows(
            "SELECT warehouse_id, product_id, quantity, reorder_level, "
            "quantity < reorder_level AS low FROM stock ORDER BY warehouse_id, product_id"
        )
    }


@api.get("/orders")
def list_orders() -> dict[str, Any]:
    """Every order."""
    return {
        "orders": _rows(
            "SELECT id, customer, product_id, warehouse_id, quantity, status FROM orders "
            "ORDER BY id"
        )
    }


@api.post("/stock/restock-low")
def restock_low() -> dict[str, Any]:
    """Bring every level below its reorder level up to twice that level."""
    conn = cow.connection()
    cur = conn.execute(
        "UPDATE stock SET quantity = reorder_level * 2 WHERE quantity < reorder_level"
    )
    conn.commit()
    return {"restocked": cur.rowcount}


@api.post("/orders/<int:order_id>/fulfil")
def fulfil_order(order_id: int) -> dict[str, Any]:
    """Ship an open order from its warehouse: mark it fulfilled and take the stock."""
    conn = cow.connection()
    order = conn.execute(
        "UPDATE orders SET status = 'fulfilled' WHERE id = %s AND status = 'open' "
        "RETURNING product_id, warehouse_id, quantity",
        [order_id],
    ).fetchone()
    if order is None:
        abort(409, f"order {order_id} is not open")
    product_id, warehouse_id, quantity = order
    conn.execute(
        "UPDATE stock SET quantity = quantity - %s WHERE warehouse_id = %s AND product_id = %s",
        [quantity, warehouse_id, product_id],
    )
    conn.commit()
    return {"fulfilled": order_id, "shipped": quantity}


@api.delete("/products/<sku>")
def discontinue_product(sku: str) -> dict[str, Any]:
    """Delete a product from the catalogue (refused while stock or orders reference it)."""
    conn = cow.connection()
    deleted = conn.execute("DELETE FROM products WHERE sku = %s", [sku]).rowcount
    conn.commit()
    return {"deleted": deleted}


@api.post("/stock/<int:warehouse_id>/<int:product_id>/adjust")
def adjust_stock(warehouse_id: int, product_id: int) -> dict[str, Any]:
    """Apply a stocktake correction: ``{"delta": -3}``."""
    delta = (request.get_json(silent=True) or {}).get("delta")
    if not isinstance(delta, int):
        abort(400, 'send {"delta": <integer>}')
    conn = cow.connection()
    row = conn.execute(
        "UPDATE stock SET quantity = quantity + %s WHERE warehouse_id = %s AND product_id = %s "
        "RETURNING quantity",
        [delta, warehouse_id, product_id],
    ).fetchone()
    if row is None:
        abort(404)
    conn.commit()
    return {"quantity": row[0]}


@api.put("/products/<sku>/price")
def set_price(sku: str) -> dict[str, Any]:
    """Overwrite a product's price: ``{"price": "149.00"}``."""
    try:
        price = Decimal(str((request.get_json(silent=True) or {})["price"]))
    except (KeyError, InvalidOperation):
        abort(400, 'send {"price": "<decimal>"}')
    conn = cow.connection()
    updated = conn.execute("UPDATE products SET price = %s WHERE sku = %s", [price, sku]).rowcount
    if not updated:
        abort(404)
    conn.commit()
    return {"sku": sku, "price": price}
