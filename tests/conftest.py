"""Fixtures shared by every test folder; the logic behind them lives in tests/_pg.py,
tests/_tables.py and tests/_catalog.py.

Database fixtures, from the widest scope down:

- ``pg_admin_dsn`` (session): DSN of the server's maintenance database.
- ``dsn``: DSN of a fresh, empty database for this test only (a copy of a per-process template),
  dropped with ``WITH (FORCE)`` afterwards.
- ``conn``: an autocommit connection to that database.
- ``connect(**kwargs)``: more connections to it (autocommit unless told otherwise).
- ``make_table(name="items", shape="items", schema="public", rows=0)``: a table of a common shape.
- ``catalog_snapshot(conn, schema="public")``: what ``disable`` must give back, by name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests import _pg
from tests._catalog import catalog_snapshot as _catalog_snapshot
from tests._tables import create_table


def _is_xdist_controller(config: pytest.Config) -> bool:
    if hasattr(config, "workerinput"):
        return False
    return bool(getattr(config.option, "numprocesses", None) or getattr(config.option, "tx", None))


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist the controller finds (or starts) the server once, before the workers
    # exist, and passes it on through the environment; each worker still makes its own template.
    if _is_xdist_controller(config):
        _pg.share_with_workers(_pg.discover_once())


def pytest_unconfigure(config: pytest.Config) -> None:
    _pg.shutdown()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return _pg.discover_once().header_lines()


@pytest.fixture(scope="session")
def pg_server() -> _pg.PgServer:
    """The server the tests use; skips (or fails, with COWSYNC_TEST_REQUIRE_DB=1) without one."""
    found = _pg.discover_once()
    if found.server is not None:
        return found.server
    message = found.unavailable_message()
    if found.error is not None or _pg.database_required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_admin_dsn(pg_server: _pg.PgServer) -> str:
    """DSN of the server's maintenance database (for CREATE/DROP DATABASE and the like)."""
    return pg_server.admin_dsn


@pytest.fixture(scope="session")
def pg_databases(pg_admin_dsn: str) -> Iterator[_pg.TestDatabases]:
    """This process's template database and the factory of per-test databases."""
    databases = _pg.TestDatabases(pg_admin_dsn)
    databases.create_template()
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture
def dsn(pg_databases: _pg.TestDatabases) -> Iterator[str]:
    """DSN of a fresh empty database that exists for this test only."""
    name = pg_databases.create_database()
    try:
        yield pg_databases.dsn_for(name)
    finally:
        pg_databases.drop_database(name)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to this test's database."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def connect(dsn: str) -> Iterator[Callable[..., psycopg.Connection[Any]]]:
    """Open more connections to this test's database: ``connect(autocommit=False, ...)``.

    Keyword arguments go to ``psycopg.connect``; autocommit defaults to True. Every connection
    opened here is closed after the test.
    """
    opened: list[psycopg.Connection[Any]] = []

    def open_connection(**kwargs: Any) -> psycopg.Connection[Any]:
        kwargs.setdefault("autocommit", True)
        connection = psycopg.connect(dsn, **kwargs)
        opened.append(connection)
        return connection

    try:
        yield open_connection
    finally:
        for connection in opened:
            connection.close()


@pytest.fixture
def make_table(conn: psycopg.Connection[Any]) -> Callable[..., Any]:
    """Create a table of a common shape through ``conn`` and return its qualified name.

    ``make_table(name="items", shape="items", schema="public", rows=0)``; shapes: items,
    composite, identity, uuid, unique_key, no_key, parent_child (returns both names). See
    tests/_tables.py for the columns.
    """

    def make(
        name: str = "items", shape: str = "items", schema: str = "public", rows: int = 0
    ) -> str | tuple[str, str]:
        return create_table(conn, name=name, shape=shape, schema=schema, rows=rows)

    return make


@pytest.fixture
def catalog_snapshot() -> Callable[..., dict[str, Any]]:
    """``catalog_snapshot(conn, schema="public")``: see tests/_catalog.py."""
    return _catalog_snapshot


# --- running suites in overlay mode ---------------------------------------------------------
#
# COWSYNC_TEST_MODE=overlay runs the tests with every table enabled in overlay mode: enable
# and enable_schema default to mode="overlay" (a test that names a mode keeps it). Tests of
# in place internals (the renamed base, the change store beside it) carry the in_place_only
# marker and are skipped in that run. scripts/test.sh runs the chosen folders both ways.

TEST_MODE = os.environ.get("COWSYNC_TEST_MODE", "in-place")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if TEST_MODE != "overlay":
        return
    skip = pytest.mark.skip(reason="tests in place internals (COWSYNC_TEST_MODE=overlay)")
    for item in items:
        if item.get_closest_marker("in_place_only"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _overlay_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    if TEST_MODE != "overlay":
        return
    import cowsync
    from cowsync import install

    for name in ("enable", "enable_schema"):
        original = getattr(install, name)

        def overlay(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            kwargs.setdefault("mode", "overlay")
            return _original(*args, **kwargs)

        monkeypatch.setattr(install, name, overlay)
        monkeypatch.setattr(cowsync, name, overlay)
