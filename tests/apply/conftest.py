"""Fixtures for the review and apply tests (tests/apply/).

Database: this folder overrides ``dsn`` so the tests of one module share a database that is
wiped (every connection to it ended, every schema dropped, ``public`` recreated) before each
test. Each test still starts from an empty database, as with the root fixture, but without
paying for a CREATE DATABASE (~0.4 s) per test, which would take this folder of some 130
tests past its one-minute budget. ``conn``, ``connect`` and ``make_table`` work unchanged.

``shop`` is the schema most tests use: two COW-enabled tables linked by a foreign key.

- ``customers``: id serial PK, name text UNIQUE NOT NULL, tier text, credit int
  (rows 1 ann, 2 bob, 3 cy)
- ``orders``: id serial PK, customer_id int NOT NULL REFERENCES customers, item text, qty int
  (rows 1 for ann, 2 and 3 for bob; cy has none)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

import cowsync
from tests import _pg


@pytest.fixture(scope="module")
def module_database(pg_databases: _pg.TestDatabases) -> Iterator[str]:
    """DSN of a database the tests of one module share, dropped after the module."""
    name = pg_databases.create_database()
    with psycopg.connect(pg_databases.admin_dsn, autocommit=True) as admin:
        # Durability across a server crash is not under test; waiting for each of the
        # thousands of small commits to reach the disk only slows the folder down.
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(sql.Identifier(name))
        )
    try:
        yield pg_databases.dsn_for(name)
    finally:
        pg_databases.drop_database(name)


def wipe(dsn: str) -> None:
    """Make the database empty again, like a fresh copy of the harness's template."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        # Connections a test left behind (threads, killed backends) hold locks and temp tables.
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        schemas = admin.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
            "AND nspname <> 'information_schema'"
        ).fetchall()
        with admin.transaction():
            for (schema,) in schemas:
                admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            admin.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
            admin.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")


@pytest.fixture
def dsn(module_database: str) -> str:
    """DSN of an empty database for this test (shared with its module, wiped first)."""
    wipe(module_database)
    return module_database


@pytest.fixture
def cow(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """``conn`` with the engine deployed."""
    cowsync.deploy(conn)
    return conn


@pytest.fixture
def shop(cow: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """``conn`` with ``customers`` and ``orders`` created, seeded and COW-enabled."""
    cow.execute(
        """
        CREATE TABLE customers (
            id serial PRIMARY KEY,
            name text UNIQUE NOT NULL,
            tier text NOT NULL DEFAULT 'basic',
            credit int NOT NULL DEFAULT 0
        );
        CREATE TABLE orders (
            id serial PRIMARY KEY,
            customer_id int NOT NULL REFERENCES customers,
            item text NOT NULL,
            qty int NOT NULL DEFAULT 1
        );
        INSERT INTO customers (name, tier, credit)
            VALUES ('ann', 'gold', 100), ('bob', 'basic', 20), ('cy', 'basic', 0);
        INSERT INTO orders (customer_id, item, qty)
            VALUES (1, 'apple', 1), (2, 'pear', 2), (2, 'plum', 3);
        """
    )
    cowsync.enable(cow, "customers")
    cowsync.enable(cow, "orders")
    return cow
