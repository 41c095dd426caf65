"""Fixtures for the fidelity matrix (tests/fidelity/).

The cases create their tables in schemas of their own and drop them afterwards
(tests/fidelity/runner.py), so one database, with the engine deployed once, serves
every case of a module.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import cowsync


@pytest.fixture(scope="module")
def fidelity_dsn(pg_databases: Any) -> Iterator[str]:
    """DSN of a database with the engine deployed, shared by the module's tests."""
    name = pg_databases.create_database()
    dsn = pg_databases.dsn_for(name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            cowsync.deploy(conn)
        yield dsn
    finally:
        pg_databases.drop_database(name)
