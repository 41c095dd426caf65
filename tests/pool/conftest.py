"""Fixtures of the pool tests: a shared COW database, pools closed after each test, pgbouncer."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import cowsync
from cowsync.pool import CowPool
from tests._tables import create_table
from tests.pool._bouncer import Bouncer, BouncerUnavailable

# What every pool test reads back: its variables and the secret rows it can see.
PROBE = """
SELECT coalesce(current_setting('app.session_id', true), ''),
       coalesce(current_setting('app.operation_id', true), ''),
       coalesce(current_setting('app.visible_operations', true), ''),
       pg_backend_pid(),
       coalesce((SELECT array_agg(name ORDER BY name) FROM items WHERE name LIKE 'secret-%'),
                '{}')
"""


SETTINGS = """
SELECT coalesce(current_setting('app.session_id', true), ''),
       coalesce(current_setting('app.operation_id', true), ''),
       coalesce(current_setting('app.visible_operations', true), '')
"""


def settings(conn: psycopg.Connection[Any]) -> tuple[str, str, str]:
    """(session, operation, visible operations) as ``conn`` carries them ('' when unset)."""
    row = conn.execute(SETTINGS).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def probe(conn: psycopg.Connection[Any]) -> tuple[str, str, str, int, list[str]]:
    """(session, operation, visible operations, backend pid, secret rows seen) on ``conn``."""
    row = conn.execute(PROBE).fetchone()
    assert row is not None
    return row[0], row[1], row[2], row[3], list(row[4])


@pytest.fixture(scope="session")
def cow_database(pg_databases: Any) -> Iterator[str]:
    """DSN of one database per test process with the engine deployed and ``items`` enabled.

    Shared by the pool tests (creating, deploying and dropping a database per test
    would take most of their time); ``cow_dsn`` discards every session after each
    test, so each starts from production data only.
    """
    name = pg_databases.create_database()
    dsn = pg_databases.dsn_for(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        cowsync.deploy(conn)
        create_table(conn, name="items", shape="items", rows=3)
        cowsync.enable(conn, "items")
    try:
        yield dsn
    finally:
        pg_databases.drop_database(name)


@pytest.fixture
def cow_dsn(cow_database: str) -> Iterator[str]:
    """The shared COW database; every session written during the test is discarded after it."""
    yield cow_database
    with psycopg.connect(cow_database, autocommit=True) as conn:
        for info in cowsync.sessions(conn):
            cowsync.discard(conn, info.session_id)
        leftover = conn.execute("SELECT count(*) FROM items WHERE name LIKE 'secret-%'").fetchone()
        assert leftover == (0,), "a test wrote secret rows to production"


@pytest.fixture
def cow_conn(cow_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the shared COW database (unbound: production)."""
    with psycopg.connect(cow_dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def cow_items(cow_conn: psycopg.Connection[Any]) -> Callable[..., None]:
    """``secret(session_id, operation_id=None, name=None)``: a row only that session sees.

    Inserts ``secret-<session>`` (or ``name``) into the COW-enabled ``items`` inside
    the session.
    """

    def secret(session_id: str, operation_id: str | None = None, name: str | None = None) -> None:
        with cowsync.session(cow_conn, session_id, operation_id):
            cow_conn.execute(
                "INSERT INTO items (name) VALUES (%s)", [name or f"secret-{session_id}"]
            )

    return secret


@pytest.fixture
def make_pool(cow_dsn: str) -> Iterator[Callable[..., CowPool[Any]]]:
    """``make_pool(conninfo=None, **kwargs)``: an open CowPool, closed after the test.

    Defaults: the shared COW database, one connection (so consecutive borrowers
    share it), autocommit.
    """
    pools: list[CowPool[Any]] = []

    def make(conninfo: str | None = None, **kwargs: Any) -> CowPool[Any]:
        kwargs.setdefault("min_size", 1)
        kwargs.setdefault("kwargs", {"autocommit": True})
        kwargs.setdefault("timeout", 10)
        pool: CowPool[Any] = CowPool(conninfo or cow_dsn, open=True, **kwargs)
        pools.append(pool)
        pool.wait(timeout=10)
        return pool

    try:
        yield make
    finally:
        for pool in pools:
            pool.close()


def wait_returned(pool: CowPool[Any], timeout: float = 5.0) -> None:
    """Wait until every connection of ``pool`` is back in it (reset done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = pool.get_stats()
        if stats["pool_available"] == stats["pool_size"]:
            return
        time.sleep(0.002)
    raise AssertionError(f"connections not returned to the pool: {pool.get_stats()}")


@pytest.fixture(scope="session")
def bouncer(pg_admin_dsn: str) -> Iterator[Bouncer]:
    """pgbouncer in transaction pooling mode with one server connection per database.

    Skips (with the reason) when pgbouncer is not installed or cannot start.
    """
    try:
        running = Bouncer(pg_admin_dsn)
        running.start()
    except BouncerUnavailable as exc:
        pytest.skip(f"transaction pooling tests need pgbouncer: {exc}")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def bouncer_dsn(bouncer: Bouncer, cow_dsn: str) -> str:
    """The shared COW database, reached through pgbouncer."""
    return bouncer.dsn_for(cow_dsn)
