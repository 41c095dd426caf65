"""Flask requests and bound SQLAlchemy engines read through the overlay schema.

``public_cow.ov_items`` (rows B) stands in for the overlay view of ``public.ov_items``
(rows A); the engine's overlay mode is not needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

import cowsync
from cowsync.integrations.flask import CowSync
from cowsync.integrations.flask.sqlalchemy_binding import bind_engine
from tests._overlay import make_stand_in, seen
from tests.flask.conftest import sqlalchemy_url

ITEMS = "SELECT v FROM ov_items ORDER BY v"
PATH = "SELECT current_setting('search_path'), current_setting('cowsync.unbound_search_path', true)"


@pytest.fixture(scope="module")
def stand_in(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        make_stand_in(conn, table="ov_items")
    return dsn


def add_items_route(app: Flask, cow: CowSync) -> None:
    @app.get("/ov-items")
    def ov_items() -> dict[str, Any]:
        return {"rows": seen(cow.connection(), "ov_items")}


@pytest.mark.parametrize("transaction_local", [False, True], ids=["session", "transaction-local"])
def test_a_bound_request_reads_the_overlay_and_the_next_one_the_table(
    stand_in: str, make_app: Callable[..., tuple[Flask, CowSync]], transaction_local: bool
) -> None:
    app, cow = make_app(
        database=stand_in, probe_routes=False, COWSYNC_TRANSACTION_LOCAL=transaction_local
    )
    add_items_route(app, cow)
    client = app.test_client()
    assert client.get("/ov-items").json == {"rows": ["A"]}
    bound = client.get("/ov-items", headers={"X-Cow-Session-Id": "ov-1"})
    assert bound.json == {"rows": ["B"]}
    assert client.get("/ov-items").json == {"rows": ["A"]}


@pytest.fixture(params=[False, True], ids=["session", "transaction-local"])
def bound_engine(request: pytest.FixtureRequest, stand_in: str) -> Iterator[Engine]:
    engine = create_engine(sqlalchemy_url(stand_in), pool_size=1, max_overflow=0, pool_timeout=5)
    binding = bind_engine(engine, transaction_local=request.param)
    try:
        yield engine
    finally:
        binding.remove()
        engine.dispose()


def test_a_bound_engine_reads_the_overlay_and_returns_its_connection_unbound(
    bound_engine: Engine,
) -> None:
    with bound_engine.connect() as sa_conn:
        before = sa_conn.execute(text(PATH)).one()[0]
        assert sa_conn.execute(text(ITEMS)).all() == [("A",)]
    with cowsync.bind("ov-1"), bound_engine.connect() as sa_conn:
        assert sa_conn.execute(text(ITEMS)).all() == [("B",)]
        assert sa_conn.execute(text("SHOW search_path")).one()[0] == f"public_cow, {before}"
    with bound_engine.connect() as sa_conn:
        assert sa_conn.execute(text(ITEMS)).all() == [("A",)]
        assert tuple(sa_conn.execute(text(PATH)).one()) in ((before, ""), (before, None))
