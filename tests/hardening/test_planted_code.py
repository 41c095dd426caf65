"""An agent must not plant code that other roles run with their own rights.

A trigger runs as whoever fires it. An agent that could attach one to a view that production
writes through would have production's role (or a superuser) run the agent's code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.hardening._fortress import Fortress, base_checksums

Connect = Callable[[Fortress, str], psycopg.Connection[Any]]

# The agent's payload: as whoever fires it, rewrite the base.
PAYLOAD = """
CREATE FUNCTION pg_temp.payload() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE public.items_base SET name = 'planted by ' || current_user;
    RETURN NULL;
END
$$
"""


def test_agent_cannot_attach_a_trigger_to_a_view(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(fresh_fortress, fresh_fortress.agent)
    agent.execute(PAYLOAD)
    try:
        agent.execute(
            "CREATE TRIGGER aaa_planted AFTER INSERT ON public.items "
            "FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.payload()"
        )
        planted = True
    except psycopg.errors.InsufficientPrivilege:
        planted = False
    # Production writes through the view, with no session, while the agent is connected.
    production = connect_as(fresh_fortress, fresh_fortress.production)
    production.execute("INSERT INTO items (name) VALUES ('from production')")
    names = [r[0] for r in fresh_admin.execute("SELECT name FROM ONLY items_base ORDER BY id")]
    assert names == ["item-1", "item-2", "item-3", "item-4", "item-5", "from production"]
    assert not planted, "the agent attached a trigger to the view"


def test_agent_cannot_attach_a_trigger_to_a_base(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(fresh_fortress, fresh_fortress.agent)
    agent.execute(PAYLOAD)
    before = base_checksums(fresh_admin)
    for relation in ("items_base", "items_changes"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            agent.execute(
                f"CREATE TRIGGER aaa_planted AFTER INSERT ON public.{relation} "
                "FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.payload()"
            )
    production = connect_as(fresh_fortress, fresh_fortress.production)
    production.execute("INSERT INTO items (name) VALUES ('from production')")
    after = [r[0] for r in fresh_admin.execute("SELECT name FROM ONLY items_base ORDER BY id")]
    assert after[-1] == "from production"
    assert not any(name.startswith("planted") for name in after)
    assert base_checksums(fresh_admin) != before  # production's own insert did land
