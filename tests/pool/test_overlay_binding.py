"""CowPool hands out bound connections that read through the overlay schema, and takes them
back with the unbound search_path, in both modes.

``public_cow.items`` (rows B) stands in for the overlay view of ``public.items`` (rows A);
no engine is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import cowsync
from cowsync.pool import CowPool
from tests._overlay import make_stand_in, saved_path, search_path, seen
from tests.pool.conftest import wait_returned

MODES = [
    pytest.param({}, id="session"),
    pytest.param({"clear_on_return": "caller"}, id="session-caller-clears"),
    pytest.param({"transaction_local": True}, id="transaction-local"),
]


@pytest.fixture
def stand_in(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        make_stand_in(conn)
        make_stand_in(conn, overlay="sandbox", rows="C")
    return dsn


@pytest.fixture
def one_connection_pool(stand_in: str) -> Iterator[Callable[..., CowPool[Any]]]:
    """``make(**kwargs)``: an open CowPool of exactly one connection on the stand-in."""
    pools: list[CowPool[Any]] = []

    def make(**kwargs: Any) -> CowPool[Any]:
        kwargs.setdefault("kwargs", {"autocommit": True})
        pool: CowPool[Any] = CowPool(
            stand_in, min_size=1, max_size=1, timeout=10, open=False, **kwargs
        )
        pool.open(wait=True, timeout=10)
        pools.append(pool)
        return pool

    try:
        yield make
    finally:
        for pool in pools:
            pool.close()


def unbound_state(pool: CowPool[Any]) -> tuple[list[str], str, str]:
    wait_returned(pool)
    with pool.connection(session_id=None) as conn:
        return seen(conn), search_path(conn), saved_path(conn)


@pytest.mark.parametrize("mode", MODES)
def test_bound_checkouts_read_the_overlay_and_returns_carry_no_overlay_path(
    one_connection_pool: Callable[..., CowPool[Any]], mode: dict[str, Any]
) -> None:
    pool = one_connection_pool(**mode)
    with pool.connection(session_id=None) as conn:
        before = search_path(conn)
        assert seen(conn) == ["A"]
    with cowsync.bind("s1"), pool.connection() as conn:
        assert seen(conn) == ["B"]
        assert search_path(conn).startswith("public_cow, ")
    assert unbound_state(pool) == (["A"], before, "")
    with pool.connection(session_id="s2") as conn:
        assert seen(conn) == ["B"]
    assert unbound_state(pool) == (["A"], before, "")


@pytest.mark.parametrize("mode", MODES)
def test_a_block_that_raises_returns_the_connection_without_the_overlay_path(
    one_connection_pool: Callable[..., CowPool[Any]], mode: dict[str, Any]
) -> None:
    pool = one_connection_pool(**mode)
    with pool.connection(session_id=None) as conn:
        before = search_path(conn)
    with pytest.raises(psycopg.errors.DivisionByZero), pool.connection(session_id="s1") as conn:
        assert seen(conn) == ["B"]
        conn.execute("SELECT 1 / 0")
    assert unbound_state(pool) == (["A"], before, "")


@pytest.mark.parametrize("mode", MODES)
def test_a_transaction_in_a_bound_checkout_reads_the_overlay(
    one_connection_pool: Callable[..., CowPool[Any]], mode: dict[str, Any]
) -> None:
    pool = one_connection_pool(kwargs={"autocommit": False}, **mode)
    with pool.connection(session_id="s1") as conn:
        assert seen(conn) == ["B"]
        conn.commit()
        assert seen(conn) == ["B"]
    assert unbound_state(pool)[0] == ["A"]


def test_a_borrowers_own_search_path_does_not_outlive_its_bound_checkout(
    one_connection_pool: Callable[..., CowPool[Any]],
) -> None:
    pool = one_connection_pool()
    with pool.connection(session_id=None) as conn:
        before = search_path(conn)
    with pool.connection(session_id="s1") as conn:
        conn.execute("SET search_path TO public_cow")
    assert unbound_state(pool) == (["A"], before, "")


@pytest.mark.parametrize("mode", MODES)
def test_the_pools_config_names_the_overlay_schema(
    one_connection_pool: Callable[..., CowPool[Any]], mode: dict[str, Any]
) -> None:
    config = cowsync.CowConfig(overlay_schemas={"public": "sandbox"})
    pool = one_connection_pool(config=config, **mode)
    with pool.connection(session_id="s1") as conn:
        assert seen(conn) == ["C"]
    assert unbound_state(pool)[0] == ["A"]
