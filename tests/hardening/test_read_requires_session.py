"""``read_requires_session=True``: an agent reads only inside a session; others read as usual."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import cowsync
from tests.hardening._fortress import Fortress, refused

Connect = Callable[[Fortress, str], psycopg.Connection[Any]]


def test_agent_read_with_no_session_is_refused(
    strict_fortress: Fortress, connect_as: Connect
) -> None:
    agent = connect_as(strict_fortress, strict_fortress.agent)
    for query in (
        "SELECT * FROM items",
        "SELECT count(*) FROM shop_parent",
        "SELECT * FROM items WHERE id = 1",
        "SELECT EXISTS (SELECT 1 FROM shop_child)",
    ):
        error = refused(agent, query)
        assert "must read inside a session" in str(error)
    agent.execute("SET app.session_id = ''")
    refused(agent, "SELECT * FROM items")


def test_agent_reads_inside_its_own_session(
    strict_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(strict_fortress, strict_fortress.agent)
    with cowsync.session(agent, strict_fortress.agent_session):
        qty = dict(agent.execute("SELECT id, qty FROM items").fetchall())
    base = dict(fresh_admin.execute("SELECT id, qty FROM ONLY items_base").fetchall())
    assert qty[2] == base[2] + 1  # the agent's own change (see _fortress.py)
    assert {k: v for k, v in qty.items() if k != 2} == {k: v for k, v in base.items() if k != 2}


@pytest.mark.parametrize("who", ["production", "reviewer", "superuser"])
def test_other_roles_still_read_production(
    strict_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect, who: str
) -> None:
    if who == "superuser":
        reader = fresh_admin
    else:
        reader = connect_as(strict_fortress, getattr(strict_fortress, who))
    rows = reader.execute("SELECT * FROM items ORDER BY id").fetchall()
    assert rows == fresh_admin.execute("SELECT * FROM ONLY items_base ORDER BY id").fetchall()


def test_a_refused_read_reveals_no_rows_to_a_leaky_function(
    strict_fortress: Fortress, connect_as: Connect
) -> None:
    agent = connect_as(strict_fortress, strict_fortress.agent)
    agent.execute(
        "CREATE FUNCTION pg_temp.peek(value text) RETURNS boolean "
        "LANGUAGE plpgsql COST 0.0000001 AS $$ BEGIN RAISE NOTICE 'peek:%', value; "
        "RETURN true; END $$"
    )
    seen: list[str] = []
    agent.add_notice_handler(lambda d: seen.append(d.message_primary or ""))
    refused(agent, "SELECT * FROM items WHERE pg_temp.peek(name)")
    assert seen == []
