"""Fixtures of the Flask integration tests: COW-enabled tables and Flask apps using cowsync.

- ``dsn`` (module scope, overriding the suite's per-test database): ``items`` COW-enabled
  with 3 production rows and a row ``secret-<s>`` in each session s1..s4. The tests of a
  module share it, each writing only in sessions (and item names) of its own.
- ``private_dsn``: an empty database of the test's own (the example project's story).
- ``cow_items``: ``secret(session_id, operation_id=None, name=None)`` writes a row only that
  session sees.
- ``make_app(cow=None, database=dsn, probe_routes=True, **config)``: a Flask app with cowsync
  registered and the routes of :func:`add_probe_routes`; its pool is closed after the test.
- ``sa_url`` / :func:`sqlalchemy_url`: a database as a ``postgresql+psycopg://`` URL.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask, abort, request
from psycopg.conninfo import conninfo_to_dict

import cowsync
from cowsync.integrations.flask import CowSync
from tests._tables import create_table

PROBE = """
SELECT coalesce(current_setting('app.session_id', true), ''),
       coalesce(current_setting('app.operation_id', true), ''),
       coalesce(current_setting('app.visible_operations', true), ''),
       pg_backend_pid(),
       coalesce((SELECT array_agg(name ORDER BY name) FROM items
                 WHERE starts_with(name, 'secret-')), '{}')
"""

_app_numbers = itertools.count()


def probe(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """What ``conn`` carries and sees: its COW variables, backend pid and the secret rows."""
    row = conn.execute(PROBE).fetchone()
    assert row is not None
    return {
        "session": row[0],
        "operation": row[1],
        "visible": row[2],
        "pid": row[3],
        "secrets": list(row[4]),
    }


class ViewRan(Exception):
    """Raised by the /boom route after it wrote, to test teardown on exceptions."""


def add_probe_routes(app: Flask, cow: CowSync) -> None:
    """Routes that report what the request's connection sees and write through it.

    - ``GET /probe``: :func:`probe` of ``cow.connection()``, plus whether a second call
      returned the same connection;
    - ``POST /items?name=N[&commit=0][&fail=409]``: inserts item N, commits unless told not
      to, then answers 201 or aborts with the given status;
    - ``POST /boom?name=N``: inserts item N without committing, then raises :class:`ViewRan`.
    """

    @app.get("/probe")
    def probe_view() -> dict[str, Any]:
        conn = cow.connection()
        seen = probe(conn)
        seen["same_connection"] = cow.connection() is conn
        binding = cowsync.current_binding()
        seen["bound"] = None if binding is None else binding.session_id
        return seen

    @app.post("/items")
    def insert_item() -> tuple[dict[str, Any], int]:
        conn = cow.connection()
        row = conn.execute(
            "INSERT INTO items (name) VALUES (%s) RETURNING id", [request.args["name"]]
        ).fetchone()
        assert row is not None
        if request.args.get("commit", "1") == "1":
            conn.commit()
        if "fail" in request.args:
            abort(int(request.args["fail"]))
        return {"id": row[0], "pid": conn.info.backend_pid}, 201

    @app.post("/boom")
    def boom() -> str:
        cow.connection().execute("INSERT INTO items (name) VALUES (%s)", [request.args["name"]])
        raise ViewRan(request.args["name"])


SHARED_SESSIONS = ("s1", "s2", "s3", "s4")


def enable_items(conn: psycopg.Connection[Any], secrets: tuple[str, ...] = ()) -> None:
    """Deploy, create and COW-enable ``items`` (3 rows); write ``secret-<s>`` in each session."""
    cowsync.deploy(conn)
    create_table(conn, name="items", shape="items", schema="public", rows=3)
    cowsync.enable(conn, "items")
    for session_id in secrets:
        with cowsync.session(conn, session_id):
            conn.execute("INSERT INTO items (name) VALUES (%s)", [f"secret-{session_id}"])


@pytest.fixture(scope="module")
def dsn(pg_databases: Any) -> Iterator[str]:
    """One database per test module, where the suite's default is one per test.

    It holds ``items`` (COW-enabled, 3 production rows) and a row ``secret-<s>`` in each of
    the sessions s1..s4. Tests share it, so each writes only in sessions of its own, and
    never writes names starting with ``secret-`` there except through ``cow_items``.
    """
    name = pg_databases.create_database()
    try:
        shared = pg_databases.dsn_for(name)
        with psycopg.connect(shared, autocommit=True) as conn:
            enable_items(conn, SHARED_SESSIONS)
        yield shared
    finally:
        pg_databases.drop_database(name)


@pytest.fixture
def private_dsn(pg_databases: Any) -> Iterator[str]:
    """A fresh, empty database of this test's own."""
    name = pg_databases.create_database()
    try:
        yield pg_databases.dsn_for(name)
    finally:
        pg_databases.drop_database(name)


@pytest.fixture
def cow_items(conn: psycopg.Connection[Any]) -> Callable[..., None]:
    """``secret(session_id, operation_id=None, name=None)``: write a row only that session sees.

    s1..s4 have theirs already; use new session ids.
    """

    def secret(session_id: str, operation_id: str | None = None, name: str | None = None) -> None:
        with cowsync.session(conn, session_id, operation_id):
            conn.execute("INSERT INTO items (name) VALUES (%s)", [name or f"secret-{session_id}"])

    return secret


def production_names(conn: psycopg.Connection[Any]) -> list[str]:
    """Item names production sees (no session bound on ``conn``)."""
    return [r[0] for r in conn.execute("SELECT name FROM items ORDER BY id").fetchall()]


def base_config(dsn: str, **config: Any) -> dict[str, Any]:
    """The COWSYNC_* keys of a small test app on ``dsn`` (one pooled connection)."""
    values: dict[str, Any] = {
        "TESTING": True,
        "COWSYNC_DATABASE_URL": dsn,
        "COWSYNC_POOL_MIN_SIZE": 1,
        "COWSYNC_POOL_TIMEOUT": 10,
    }
    values.update(config)
    return values


@pytest.fixture
def make_app(request: pytest.FixtureRequest) -> Callable[..., tuple[Flask, CowSync]]:
    """``make_app(cow=None, database=dsn, probe_routes=True, **config) -> (app, cow)``.

    ``database`` defaults to this test's own database (the ``dsn`` fixture, made on demand).
    The app's pool is closed after the test, before its database is dropped.
    """

    def make(
        cow: CowSync | None = None,
        database: str | None = None,
        probe_routes: bool = True,
        **config: Any,
    ) -> tuple[Flask, CowSync]:
        if database is None:
            database = request.getfixturevalue("dsn")
        app = Flask(f"cowsync_test_app_{next(_app_numbers)}")
        app.config.update(base_config(database, **config))
        cow = cow or CowSync()
        cow.init_app(app)
        # Registered after the database fixture: runs before it drops the database.
        request.addfinalizer(lambda: cow.close(app))
        if probe_routes:
            add_probe_routes(app, cow)
        return app, cow

    return make


def wait_returned(app: Flask, cow: CowSync, timeout: float = 5.0) -> dict[str, int]:
    """Wait until every connection of the app's pool is back (reset done); return its stats."""
    pool = cow.state(app).pool
    deadline = time.monotonic() + timeout
    while True:
        stats = pool.get_stats()
        if stats["pool_available"] == stats["pool_size"]:
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"connections not returned to the pool: {stats}")
        time.sleep(0.002)


def sqlalchemy_url(dsn: str) -> str:
    """A libpq DSN as a SQLAlchemy URL with the psycopg driver."""
    from sqlalchemy.engine import URL

    params = conninfo_to_dict(dsn)
    url = URL.create(
        "postgresql+psycopg",
        username=params.get("user"),
        password=params.get("password"),
        host=params.get("host"),
        port=int(params["port"]) if params.get("port") else None,
        database=params.get("dbname"),
    )
    return url.render_as_string(hide_password=False)


@pytest.fixture
def sa_url(dsn: str) -> str:
    """This test's database as a SQLAlchemy URL (psycopg driver)."""
    return sqlalchemy_url(dsn)
