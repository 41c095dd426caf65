"""An agent must not read another session's rows, nor anything else the engine can see.

The engine reads with its owner's rights (the view, and the SECURITY DEFINER functions), so
whatever reaches the agent's own code before the view's filter, or through a function's
arguments, reads with those rights too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.hardening._fortress import Fortress

Connect = Callable[[Fortress, str], psycopg.Connection[Any]]

SECRET = "victim secret"  # what the other agent wrote in its session (see _fortress.py)

# A function the agent may create in its own temporary schema (PUBLIC has TEMP on a new
# database) and makes look so cheap that the planner runs it before the view's own filter.
LEAKY_FUNCTION = """
CREATE FUNCTION pg_temp.peek(value text) RETURNS boolean
LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN
    RAISE NOTICE 'peek:%', value;
    RETURN true;
END
$$
"""


def _peeked(conn: psycopg.Connection[Any], query: str) -> list[str]:
    seen: list[str] = []

    def collect(diagnostic: psycopg.errors.Diagnostic) -> None:
        message = diagnostic.message_primary or ""
        if message.startswith("peek:"):
            seen.append(message.removeprefix("peek:"))

    conn.add_notice_handler(collect)
    try:
        conn.execute(query).fetchall()
    finally:
        conn.remove_notice_handler(collect)
    return seen


@pytest.mark.parametrize("in_session", [False, True], ids=["no-session", "own-session"])
def test_a_leaky_function_does_not_see_other_sessions_rows(
    fortress: Fortress, connect_as: Connect, in_session: bool
) -> None:
    agent = connect_as(fortress, fortress.agent)
    agent.execute(LEAKY_FUNCTION)
    if in_session:
        agent.execute("SELECT set_config('app.session_id', %s, false)", (fortress.agent_session,))
    # The control: the function does see what the agent may read.
    seen = _peeked(agent, "SELECT * FROM items WHERE pg_temp.peek(name)")
    assert "item-3" in seen
    assert SECRET not in seen


def test_an_error_in_the_agents_predicate_reveals_nothing(
    fortress: Fortress, connect_as: Connect
) -> None:
    # No function of its own needed: division by zero only on the victim's row.
    agent = connect_as(fortress, fortress.agent)
    rows = agent.execute(
        "SELECT id FROM items WHERE 1 / (CASE WHEN name = %s THEN 0 ELSE 1 END) = 1",
        (SECRET,),
    ).fetchall()
    assert len(rows) == 5


@pytest.mark.parametrize("setting", ["data_directory", "config_file", "hba_file"])
def test_current_session_does_not_reveal_superuser_only_settings(
    fortress: Fortress, connect_as: Connect, setting: str
) -> None:
    agent = connect_as(fortress, fortress.agent)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        agent.execute("SELECT current_setting(%s)", (setting,))
    try:
        row = agent.execute("SELECT cowsync.current_session(%s)", (setting,)).fetchone()
    except psycopg.Error:
        return  # refused: nothing revealed
    assert row is not None and row[0] is None


def test_agent_cannot_learn_another_sessions_rows_from_its_own_session(
    fortress: Fortress, connect_as: Connect
) -> None:
    # Plain queries (no functions of the agent's own) show the base plus its own rows only.
    agent = connect_as(fortress, fortress.agent)
    agent.execute("SELECT set_config('app.session_id', %s, false)", (fortress.agent_session,))
    names = [r[0] for r in agent.execute("SELECT name FROM items")]
    parents = [r[0] for r in agent.execute("SELECT name FROM shop_parent")]
    assert SECRET not in names
    assert "victim parent" not in parents
    count = agent.execute("SELECT count(*) FROM items WHERE name = %s", (SECRET,)).fetchone()
    assert count == (0,)
