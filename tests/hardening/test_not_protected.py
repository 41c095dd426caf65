"""Where the agent check draws its line, pinned down so docs/security.md stays true.

The check is membership (inherited or not) of the *login* role (``session_user``) in a
registered agent role, and superusers are never agents. So a superuser connection that
``SET ROLE``s to an agent is not fenced, while any login that is a member of an agent role
is, whatever role it sets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from tests.hardening._fortress import Fortress, RoleFactory, base_checksums, refused

Connect = Callable[[Fortress, str], psycopg.Connection[Any]]


def test_a_superuser_that_sets_role_to_an_agent_still_writes_production(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any]
) -> None:
    before = base_checksums(fresh_admin)
    fresh_admin.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(fresh_fortress.agent)))
    row = fresh_admin.execute("SELECT current_user, session_user").fetchone()
    assert row is not None and row[0] == fresh_fortress.agent
    fresh_admin.execute("UPDATE items SET qty = 42 WHERE id = 1")
    fresh_admin.execute("RESET ROLE")
    assert base_checksums(fresh_admin) != before


def test_a_login_that_may_only_set_role_to_an_agent_is_an_agent_too(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    connect_as: Connect,
    make_fresh_role: RoleFactory,
) -> None:
    # Membership counts even without inheritance: only superusers log in as "someone else".
    login = make_fresh_role("login", "LOGIN NOINHERIT", member_of=fresh_fortress.agent)
    conn = connect_as(fresh_fortress, login)
    before = base_checksums(fresh_admin)
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(fresh_fortress.agent)))
    refused(conn, "UPDATE items SET qty = 42 WHERE id = 1")
    conn.execute("RESET ROLE")
    refused(conn, "UPDATE items SET qty = 42 WHERE id = 1")
    assert base_checksums(fresh_admin) == before


def test_an_agent_login_that_sets_role_to_production_is_still_an_agent(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    connect_as: Connect,
    make_fresh_role: RoleFactory,
) -> None:
    # The other way round is protected: the login role decides, whatever role it becomes.
    login = make_fresh_role("login", "LOGIN NOINHERIT", member_of=fresh_fortress.agent)
    fresh_admin.execute(
        sql.SQL("GRANT {} TO {}").format(
            sql.Identifier(fresh_fortress.production), sql.Identifier(login)
        )
    )
    conn = connect_as(fresh_fortress, login)
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(fresh_fortress.production)))
    before = base_checksums(fresh_admin)
    refused(conn, "UPDATE items SET qty = 42 WHERE id = 1")
    assert base_checksums(fresh_admin) == before


def test_an_agent_login_that_may_set_role_to_a_base_writer_escapes(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    connect_as: Connect,
    make_fresh_role: RoleFactory,
) -> None:
    # check_hardening inspects the registered agent roles, not every login that is a member
    # of one: a login that can also become a role with privileges on a base (here the
    # application's role, granted ALL before the tables were enabled) writes the base.
    login = make_fresh_role("login", "LOGIN", member_of=fresh_fortress.agent)
    fresh_admin.execute(
        sql.SQL("GRANT {} TO {}").format(
            sql.Identifier(fresh_fortress.production), sql.Identifier(login)
        )
    )
    conn = connect_as(fresh_fortress, login)
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(fresh_fortress.production)))
    before = base_checksums(fresh_admin)
    conn.execute("UPDATE items_base SET qty = 42 WHERE id = 1")
    assert base_checksums(fresh_admin) != before
