"""The demo's agent: a fixed script of tool calls, no model and no network.

Each tool call is one cowsync operation: it runs in the agent's session, tagged with its
own operation id, inside its own transaction, so a call that fails leaves nothing behind
(exactly what a tool-calling agent framework would do).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg

from ...binding import session


@dataclass(frozen=True)
class ToolCall:
    """One step of the script: which tool, with what arguments, and why (the agent's words)."""

    operation_id: str
    tool: str
    arguments: str
    reason: str
    run: Callable[[psycopg.Connection[Any]], str]


@dataclass(frozen=True)
class ToolResult:
    """What happened to a tool call inside the session."""

    call: ToolCall
    ok: bool
    message: str
    sqlstate: str | None = None
    constraint: str | None = None


def restock_low_items(conn: psycopg.Connection[Any]) -> str:
    """Bring every stock level below its reorder level up to twice that level."""
    cur = conn.execute(
        "UPDATE stock SET quantity = reorder_level * 2 WHERE quantity < reorder_level"
    )
    return f"restocked {cur.rowcount} stock level(s) to twice their reorder level"


def fulfil_order(order_id: int) -> Callable[[psycopg.Connection[Any]], str]:
    """Ship an open order from its warehouse: take the stock, mark the order fulfilled."""

    def run(conn: psycopg.Connection[Any]) -> str:
        row = conn.execute(
            "SELECT product_id, warehouse_id, quantity FROM orders "
            "WHERE id = %s AND status = 'open' FOR UPDATE",
            (order_id,),
        ).fetchone()
        if row is None:
            raise LookupError(f"order {order_id} is not open")
        product_id, warehouse_id, quantity = row
        conn.execute(
            "UPDATE stock SET quantity = quantity - %s WHERE warehouse_id = %s AND product_id = %s",
            (quantity, warehouse_id, product_id),
        )
        conn.execute("UPDATE orders SET status = 'fulfilled' WHERE id = %s", (order_id,))
        return f"shipped {quantity} unit(s) and marked order {order_id} fulfilled"

    return run


def discontinue_product(sku: str) -> Callable[[psycopg.Connection[Any]], str]:
    """Delete a product from the catalogue."""

    def run(conn: psycopg.Connection[Any]) -> str:
        cur = conn.execute("DELETE FROM products WHERE sku = %s", (sku,))
        return f"deleted {cur.rowcount} product(s) with sku {sku}"

    return run


def adjust_stock(
    warehouse_id: int, product_id: int, delta: int
) -> Callable[[psycopg.Connection[Any]], str]:
    """Apply a stocktake correction to one stock level."""

    def run(conn: psycopg.Connection[Any]) -> str:
        conn.execute(
            "UPDATE stock SET quantity = quantity + %s WHERE warehouse_id = %s AND product_id = %s",
            (delta, warehouse_id, product_id),
        )
        return f"changed the stock level by {delta}"

    return run


def set_price(sku: str, price: Decimal) -> Callable[[psycopg.Connection[Any]], str]:
    """Overwrite a product's price."""

    def run(conn: psycopg.Connection[Any]) -> str:
        conn.execute("UPDATE products SET price = %s WHERE sku = %s", (price, sku))
        return f"set the price of {sku} to {price}"

    return run


SCRIPT: tuple[ToolCall, ...] = (
    ToolCall(
        "1-restock-low-stock",
        "restock_low_items",
        "",
        "four stock levels are below their reorder level",
        restock_low_items,
    ),
    ToolCall(
        "2-fulfil-order-1001",
        "fulfil_order",
        "order_id=1001",
        "Ada's order for 6 lamps can ship now that North has lamps",
        fulfil_order(1001),
    ),
    ToolCall(
        "3-discontinue-desk",
        "discontinue_product",
        "sku='DESK-04'",
        "standing desks sell slowly",
        discontinue_product("DESK-04"),
    ),
    ToolCall(
        "4-stocktake-mugs",
        "adjust_stock",
        "warehouse_id=1, product_id=3, delta=-45",
        "the stocktake counted 45 fewer mugs at North",
        adjust_stock(1, 3, -45),
    ),
    ToolCall(
        "5-reprice-chair",
        "set_price",
        "sku='CHAIR-02', price=1.49",
        "update the chair's price to 1.49",
        set_price("CHAIR-02", Decimal("1.49")),
    ),
)


def run_tool_call(conn: psycopg.Connection[Any], session_id: str, call: ToolCall) -> ToolResult:
    """Run one tool call as one operation of the session; report what happened."""
    with session(conn, session_id, call.operation_id):
        try:
            with conn.transaction():
                message = call.run(conn)
        except psycopg.Error as exc:
            return ToolResult(
                call,
                False,
                exc.diag.message_primary or str(exc),
                exc.diag.sqlstate,
                exc.diag.constraint_name,
            )
        except LookupError as exc:
            return ToolResult(call, False, str(exc))
    return ToolResult(call, True, message)
