"""The demo's example data: a small inventory (warehouses, products, stock levels, orders).

Kept as Python data rather than a .sql file so it ships inside the package with no
package-data configuration. The schema has the constraints the story needs: a CHECK that
refuses negative stock, and foreign keys from stock and orders to products.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

TABLES = ("warehouses", "products", "stock", "orders")

# Created with search_path set to the demo schema, so names stay unqualified here.
SCHEMA_DDL = """
CREATE TABLE warehouses (
    id   integer PRIMARY KEY,
    name text NOT NULL UNIQUE,
    city text NOT NULL
);
CREATE TABLE products (
    id    integer PRIMARY KEY,
    sku   text NOT NULL UNIQUE,
    name  text NOT NULL,
    price numeric(10, 2) NOT NULL CONSTRAINT products_price_positive CHECK (price > 0)
);
CREATE TABLE stock (
    warehouse_id  integer NOT NULL REFERENCES warehouses (id),
    product_id    integer NOT NULL REFERENCES products (id),
    quantity      integer NOT NULL CONSTRAINT stock_quantity_not_negative CHECK (quantity >= 0),
    reorder_level integer NOT NULL,
    PRIMARY KEY (warehouse_id, product_id)
);
CREATE TABLE orders (
    id           integer PRIMARY KEY,
    customer     text NOT NULL,
    product_id   integer NOT NULL REFERENCES products (id),
    warehouse_id integer NOT NULL REFERENCES warehouses (id),
    quantity     integer NOT NULL CHECK (quantity > 0),
    status       text NOT NULL DEFAULT 'open'
                 CHECK (status IN ('open', 'fulfilled', 'cancelled'))
);
"""

WAREHOUSES = [
    (1, "North", "Leeds"),
    (2, "South", "Bristol"),
]

PRODUCTS = [
    (1, "LAMP-01", "Desk lamp", Decimal("24.50")),
    (2, "CHAIR-02", "Office chair", Decimal("149.00")),
    (3, "MUG-03", "Coffee mug", Decimal("6.90")),
    (4, "DESK-04", "Standing desk", Decimal("399.00")),
]

# (warehouse_id, product_id, quantity, reorder_level); four rows are below their level.
STOCK = [
    (1, 1, 3, 10),
    (1, 2, 12, 5),
    (1, 3, 40, 20),
    (1, 4, 2, 4),
    (2, 1, 15, 10),
    (2, 2, 1, 5),
    (2, 3, 8, 20),
    (2, 4, 6, 4),
]

# Order 1001 needs 6 lamps at North, which has 3 until the agent restocks.
ORDERS = [
    (1001, "Ada Lovelace", 1, 1, 6, "open"),
    (1002, "Grace Hopper", 4, 2, 1, "open"),
    (1003, "Alan Turing", 3, 1, 2, "fulfilled"),
]

# What each table's snapshot selects, in key order (the key columns come first).
SNAPSHOT_QUERIES = {
    "products": ("SELECT id, sku, name, price FROM products ORDER BY id", 1),
    "stock": (
        "SELECT warehouse_id, product_id, quantity, reorder_level FROM stock "
        "ORDER BY warehouse_id, product_id",
        2,
    ),
    "orders": (
        "SELECT id, customer, product_id, warehouse_id, quantity, status FROM orders ORDER BY id",
        1,
    ),
}

Snapshot = dict[str, tuple[list[str], list[tuple[Any, ...]]]]


def create(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create the demo schema with its tables and seed rows, in one transaction."""
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        conn.execute(SCHEMA_DDL)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO warehouses VALUES (%s, %s, %s)", WAREHOUSES)
            cur.executemany("INSERT INTO products VALUES (%s, %s, %s, %s)", PRODUCTS)
            cur.executemany("INSERT INTO stock VALUES (%s, %s, %s, %s)", STOCK)
            cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s, %s, %s)", ORDERS)


def snapshot(conn: psycopg.Connection[Any]) -> Snapshot:
    """Products, stock and orders as the connection sees them (production or a session)."""
    result: Snapshot = {}
    for table, (query, _keys) in SNAPSHOT_QUERIES.items():
        cur = conn.execute(query)
        columns = [d.name for d in cur.description or ()]
        result[table] = (columns, cur.fetchall())
    return result


def key_width(table: str) -> int:
    """How many leading columns of the table's snapshot form its key."""
    return SNAPSHOT_QUERIES[table][1]
