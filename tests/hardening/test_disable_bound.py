"""After ``disable``, connections still bound to a session fail closed (issue 15, item 9).

``disable`` gives the original table back exactly and leaves nothing of cowsync on it, so
it cannot stop a bound connection's next statement itself. In a hardened database it need
not: ``harden`` took the agents' privileges on the base, the table handed back keeps them
taken, and an agent's statements are refused (42501) whatever session it had bound. These
tests pin that down, with the binding set the way a raw SQL client sets it, and check that
``disable`` refuses when an agent could still use the base. A production role bound to a
session is not fenced: that is the documented limit, pinned here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

import cowsync
from tests.hardening._fortress import Fortress, RoleFactory

Connect = Callable[[Fortress, str], psycopg.Connection[Any]]


def _items(admin: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return admin.execute("SELECT * FROM items ORDER BY id").fetchall()


def _bind_like_psql(conn: psycopg.Connection[Any], session_id: str) -> None:
    """Bind a session the way an agent with a SQL prompt would: no cowsync code."""
    conn.execute(sql.SQL("SET app.session_id = {}").format(sql.Literal(session_id)))


def _refused(conn: psycopg.Connection[Any], statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


def _enabled(admin: psycopg.Connection[Any]) -> set[str]:
    return {t.table for t in cowsync.status(admin)}


def test_a_bound_agent_connection_fails_closed_after_disable_force(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(fresh_fortress, fresh_fortress.agent)
    _bind_like_psql(agent, fresh_fortress.agent_session)
    agent.execute("UPDATE items SET qty = 7 WHERE id = 3")  # pending: force drops it
    production = _items(fresh_admin)
    cowsync.disable(fresh_admin, "items", force=True)
    assert "public.items" not in _enabled(fresh_admin)
    # Still bound, and the name now means the plain table: every statement is refused.
    assert agent.execute("SHOW app.session_id").fetchone() == (fresh_fortress.agent_session,)
    for statement in (
        "UPDATE items SET qty = 99 WHERE id = 3",
        "INSERT INTO items (name, qty) VALUES ('after disable', 1)",
        "DELETE FROM items WHERE id = 2",
        "TRUNCATE items",
        "SELECT * FROM items",
    ):
        _refused(agent, statement)
    assert _items(fresh_admin) == production


def test_a_statement_prepared_through_the_view_fails_closed_after_disable(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(fresh_fortress, fresh_fortress.agent)
    update = "UPDATE items SET qty = qty + 1 WHERE id = %s"
    with cowsync.session(agent, cowsync.new_session_id(), "op-1"):
        for _ in range(6):  # past psycopg's prepare threshold and PostgreSQL's generic plan
            agent.execute(update, (4,), prepare=True)
        production = _items(fresh_admin)
        cowsync.disable(fresh_admin, "items", force=True)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            agent.execute(update, (4,), prepare=True)
    assert _items(fresh_admin) == production


def test_a_member_login_of_an_agent_group_fails_closed_after_disable(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    connect_as: Connect,
    make_fresh_role: RoleFactory,
) -> None:
    login = make_fresh_role("login", member_of=fresh_fortress.agent)
    agent = connect_as(fresh_fortress, login)
    _bind_like_psql(agent, "member-" + login)
    agent.execute("UPDATE items SET qty = 5 WHERE id = 1")
    production = _items(fresh_admin)
    cowsync.disable_schema(fresh_admin, "public", force=True)
    assert _enabled(fresh_admin) == set()
    _refused(agent, "UPDATE items SET qty = 50 WHERE id = 1")
    _refused(agent, "UPDATE shop_parent SET name = 'x'")
    assert _items(fresh_admin) == production


@pytest.mark.parametrize(
    "grant",
    [
        "GRANT UPDATE (qty) ON items_base TO {agent}",
        "GRANT SELECT ON items_base TO PUBLIC",
        "GRANT TRUNCATE ON items_base TO {agent}",
    ],
)
def test_disable_refuses_while_an_agent_could_use_the_base(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    connect_as: Connect,
    grant: str,
) -> None:
    fresh_admin.execute(
        sql.SQL(grant).format(agent=sql.Identifier(fresh_fortress.agent))  # type: ignore[arg-type]
    )
    agent = connect_as(fresh_fortress, fresh_fortress.agent)
    _bind_like_psql(agent, fresh_fortress.agent_session)
    for disable in (
        lambda: cowsync.disable(fresh_admin, "items", force=True),
        lambda: cowsync.disable_schema(fresh_admin, "public", force=True),
    ):
        with pytest.raises(cowsync.ConfigurationError, match=fresh_fortress.agent) as refused:
            disable()
        assert "public.items_base" in str(refused.value)
        assert "unharden" in str(refused.value)
    assert "public.items" in _enabled(fresh_admin)
    # Nothing changed: the bound agent still writes its session only.
    production = _items(fresh_admin)
    agent.execute("UPDATE items SET qty = 11 WHERE id = 1")
    assert _items(fresh_admin) == production
    fresh_admin.execute(
        sql.SQL(grant.replace("GRANT", "REVOKE").replace(" TO ", " FROM ")).format(
            agent=sql.Identifier(fresh_fortress.agent)  # type: ignore[arg-type]
        )
    )
    cowsync.disable(fresh_admin, "items", force=True)
    _refused(agent, "UPDATE items SET qty = 12 WHERE id = 1")


def test_disable_refuses_when_an_agent_can_set_role_to_a_writer(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    fresh_agent: str,
    make_fresh_role: RoleFactory,
) -> None:
    writer = make_fresh_role("writer", "NOLOGIN")
    fresh_admin.execute(sql.SQL("GRANT INSERT ON items_base TO {}").format(sql.Identifier(writer)))
    fresh_admin.execute(
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(writer), sql.Identifier(fresh_agent))
    )
    with pytest.raises(cowsync.ConfigurationError, match=f"{fresh_agent}: INSERT"):
        cowsync.disable(fresh_admin, "items", force=True)


def test_without_a_fence_a_bound_production_connection_writes_the_table_after_disable(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    # The documented limit: only agent roles are fenced. A production role keeps its
    # privileges on the table, and its binding means nothing once the table is plain.
    job = connect_as(fresh_fortress, fresh_fortress.production)
    _bind_like_psql(job, "production-job")
    job.execute("UPDATE items SET qty = 70 WHERE id = 1")
    assert fresh_admin.execute("SELECT qty FROM items WHERE id = 1").fetchone() != (70,)
    cowsync.disable(fresh_admin, "items", force=True)
    job.execute("UPDATE items SET qty = 71 WHERE id = 1")
    assert fresh_admin.execute("SELECT qty FROM items WHERE id = 1").fetchone() == (71,)


def test_unharden_after_disable_gives_the_agents_back_their_rights_on_the_table(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    cowsync.disable(fresh_admin, "items", force=True)

    cowsync.unharden(fresh_admin)  # used to fail: the log named items_base and items_changes

    agent = connect_as(fresh_fortress, fresh_fortress.agent)
    agent.execute("UPDATE items SET qty = 5 WHERE id = 2")  # the grant the fortress made
    assert fresh_admin.execute("SELECT qty FROM items WHERE id = 2").fetchone() == (5,)
    assert fresh_admin.execute("SELECT count(*) FROM cowsync.hardening_log").fetchone() == (0,)
