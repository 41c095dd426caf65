"""``harden`` is idempotent and ``unharden`` gives back exactly the privileges it took."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

import cowsync
from tests._mode import base_of, text
from tests._tables import create_table
from tests.hardening._fortress import (
    INSUFFICIENT_PRIVILEGE,
    RoleFactory,
    acl_snapshot,
    base_checksums,
    engine_objects,
)


class Roles:
    """The roles of an application about to be hardened."""

    def __init__(self, make_role: RoleFactory) -> None:
        self.agent = make_role("agent")
        self.other_agent = make_role("agent")
        self.reviewer = make_role("reviewer")
        self.production = make_role("app")

    @property
    def agents(self) -> list[str]:
        return [self.agent, self.other_agent]


@pytest.fixture
def roles(make_role: RoleFactory) -> Roles:
    return Roles(make_role)


@pytest.fixture
def enabled(conn: psycopg.Connection[Any], roles: Roles) -> psycopg.Connection[Any]:
    """Enabled tables that the application granted to its roles, in several ways."""
    cowsync.deploy(conn)
    create_table(conn, name="items", shape="items", rows=3)
    create_table(conn, name="shop", shape="parent_child", rows=2)
    ident = sql.Identifier
    # Typical grants: everything for the agent, DML for the other, a little for the
    # reviewer, something grantable, and sequences.
    conn.execute(
        sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA public TO {}").format(ident(roles.agent))
    )
    conn.execute(
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON items TO {}").format(
            ident(roles.other_agent)
        )
    )
    conn.execute(
        sql.SQL("GRANT SELECT ON shop_parent TO {} WITH GRANT OPTION").format(
            ident(roles.other_agent)
        )
    )
    conn.execute(sql.SQL("GRANT SELECT ON items TO {}").format(ident(roles.reviewer)))
    conn.execute(
        sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(ident(roles.agent))
    )
    conn.execute(
        sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA public TO {}").format(ident(roles.production))
    )
    for table in ("items", "shop_parent", "shop_child"):
        cowsync.enable(conn, table)
    return conn


def _harden(conn: psycopg.Connection[Any], roles: Roles) -> list[cowsync.HardeningIssue]:
    return cowsync.harden(conn, agent_roles=roles.agents, reviewer_roles=[roles.reviewer])


def test_harden_twice_changes_nothing(enabled: psycopg.Connection[Any], roles: Roles) -> None:
    before = acl_snapshot(enabled)
    assert _harden(enabled, roles) == []
    acls = acl_snapshot(enabled)
    objects = engine_objects(enabled)
    assert _harden(enabled, roles) == []
    assert acl_snapshot(enabled) == acls
    assert engine_objects(enabled) == objects
    assert cowsync.check_hardening(enabled) == []
    # Undoing two hardens is undoing one.
    cowsync.unharden(enabled)
    assert acl_snapshot(enabled) == before


def test_unharden_gives_back_the_privileges_from_before_harden(
    enabled: psycopg.Connection[Any], roles: Roles
) -> None:
    before = acl_snapshot(enabled)
    _harden(enabled, roles)
    hardened = acl_snapshot(enabled)
    # The control: harden did take the agent's privileges on the base.
    (printed,) = enabled.execute(
        "SELECT %s::regclass::text", [text(enabled, base_of(enabled, "items"))]
    ).fetchone()
    assert hardened[f"relation {printed}"] != before[f"relation {printed}"]
    cowsync.unharden(enabled)
    assert acl_snapshot(enabled) == before


def test_harden_unharden_harden_lands_where_the_first_harden_did(
    enabled: psycopg.Connection[Any], roles: Roles
) -> None:
    _harden(enabled, roles)
    first = acl_snapshot(enabled)
    objects = engine_objects(enabled)
    cowsync.unharden(enabled)
    assert _harden(enabled, roles) == []
    assert acl_snapshot(enabled) == first
    # Same definitions (OIDs may differ: the per-table objects are rebuilt).
    assert [o[:1] + o[2:] for o in engine_objects(enabled)] == [o[:1] + o[2:] for o in objects]


def test_unharden_lets_the_agent_write_as_before(
    enabled: psycopg.Connection[Any], roles: Roles, dsn: str
) -> None:
    agent_dsn = psycopg.conninfo.make_conninfo(dsn, user=roles.agent)

    def agent_write() -> str | None:
        with psycopg.connect(agent_dsn, autocommit=True) as agent:
            try:
                agent.execute("UPDATE items SET qty = qty + 1 WHERE id = 1")
            except psycopg.Error as error:
                return error.sqlstate
        return None

    assert agent_write() is None  # before harden: the agent wrote production
    _harden(enabled, roles)
    before = base_checksums(enabled)
    assert agent_write() == INSUFFICIENT_PRIVILEGE
    assert base_checksums(enabled) == before
    cowsync.unharden(enabled)
    assert agent_write() is None
    assert base_checksums(enabled) != before


def test_unharden_forgets_roles_and_settings(
    enabled: psycopg.Connection[Any], roles: Roles
) -> None:
    _harden(enabled, roles)
    cowsync.unharden(enabled)
    assert enabled.execute("SELECT count(*) FROM cowsync.roles").fetchone() == (0,)
    assert enabled.execute("SELECT count(*) FROM cowsync.hardening_log").fetchone() == (0,)
    assert [i.role for i in cowsync.check_hardening(enabled)] == ["*"]


@pytest.mark.parametrize(
    "call",
    [
        lambda conn, r: cowsync.harden(conn, agent_roles=["cowsync_no_such_role_x"]),
        lambda conn, r: cowsync.harden(conn, reviewer_roles=["cowsync_no_such_role_x"]),
        lambda conn, r: cowsync.harden(conn, agent_roles=[r.agent], reviewer_roles=[r.agent]),
    ],
    ids=["unknown-agent", "unknown-reviewer", "agent-and-reviewer"],
)
def test_harden_refuses_bad_roles_and_changes_nothing(
    enabled: psycopg.Connection[Any],
    roles: Roles,
    call: Callable[[psycopg.Connection[Any], Roles], object],
) -> None:
    acls = acl_snapshot(enabled)
    objects = engine_objects(enabled)
    with pytest.raises(cowsync.ConfigurationError):
        call(enabled, roles)
    assert acl_snapshot(enabled) == acls
    assert engine_objects(enabled) == objects
