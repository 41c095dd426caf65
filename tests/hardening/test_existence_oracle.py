"""No existence oracle through foreign keys of tables that are not enabled.

A session delete of a parent row is checked against child tables that are not
COW-enabled by the trigger, with its owner's rights. Refusing only when a child row
exists told an agent that cannot read the child table whether such rows exist. An agent
that cannot read it is now refused whatever the child holds; a role that can read it
keeps the table's behaviour (23503 only when referenced).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import cowsync
from tests.hardening._fortress import Fortress

Connect = Callable[[Fortress, str], psycopg.Connection[Any]]


def _audit(admin: psycopg.Connection[Any], deferrable: bool) -> None:
    timing = " DEFERRABLE INITIALLY DEFERRED" if deferrable else ""
    admin.execute(
        "CREATE TABLE audit (id serial PRIMARY KEY, "
        f"item_id int REFERENCES items_base (id){timing})"
    )
    admin.execute("INSERT INTO audit (item_id) VALUES (3)")  # item 3 is referenced, 4 is not
    cowsync.refresh(admin, "items")


def _delete_outcome(conn: psycopg.Connection[Any], session_id: str, item: int) -> str:
    try:
        with cowsync.session(conn, session_id, "probe"), conn.transaction():
            conn.execute("DELETE FROM items WHERE id = %s", (item,))
    except psycopg.Error as exc:
        return exc.sqlstate or "?"
    return "ok"


@pytest.mark.parametrize("deferrable", [False, True], ids=["immediate", "deferred"])
def test_an_agent_that_cannot_read_the_child_gets_the_same_answer_either_way(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    connect_as: Connect,
    deferrable: bool,
) -> None:
    _audit(fresh_admin, deferrable)
    agent = connect_as(fresh_fortress, fresh_fortress.agent)
    referenced = _delete_outcome(agent, fresh_fortress.agent_session, 3)
    unreferenced = _delete_outcome(agent, fresh_fortress.agent_session, 4)
    assert referenced == unreferenced == "42501"


@pytest.mark.parametrize("deferrable", [False, True], ids=["immediate", "deferred"])
def test_a_role_that_can_read_the_child_keeps_the_tables_behaviour(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    connect_as: Connect,
    deferrable: bool,
) -> None:
    _audit(fresh_admin, deferrable)
    fresh_admin.execute(f'GRANT SELECT ON audit TO "{fresh_fortress.agent}"')
    agent = connect_as(fresh_fortress, fresh_fortress.agent)
    assert _delete_outcome(agent, fresh_fortress.agent_session, 3) == "23503"
    assert _delete_outcome(agent, fresh_fortress.agent_session, 4) == "ok"
