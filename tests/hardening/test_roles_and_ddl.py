"""An agent role can neither become someone else nor change the objects that fence it in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.hardening._fortress import Fortress, assert_unchanged, refused, snapshot

Connect = Callable[[Fortress, str], psycopg.Connection[Any]]


def test_agent_cannot_set_role_to_a_role_it_is_not_a_member_of(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(fortress, fortress.agent)
    before = snapshot(admin, fortress)
    for role in (fortress.reviewer, fortress.production, fortress.other_agent, "postgres"):
        target = sql.Identifier(role)
        refused(agent, sql.SQL("SET ROLE {}").format(target))
        refused(agent, sql.SQL("SET SESSION AUTHORIZATION {}").format(target))
        refused(agent, sql.SQL("SET LOCAL ROLE {}").format(target))
    # set_config is the same check under another name.
    refused(agent, "SELECT set_config('role', %s, false)", (fortress.reviewer,))
    row = agent.execute("SELECT current_user, session_user").fetchone()
    assert row == (fortress.agent, fortress.agent)
    assert_unchanged(before, snapshot(admin, fortress))


@pytest.mark.parametrize(
    "statement", ["RESET ROLE", "SET ROLE NONE", "RESET SESSION AUTHORIZATION"]
)
def test_resetting_the_role_leaves_the_agent_fenced(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect, statement: str
) -> None:
    agent = connect_as(fortress, fortress.agent)
    agent.execute(statement)
    assert agent.execute("SELECT current_user").fetchone() == (fortress.agent,)
    before = snapshot(admin, fortress)
    refused(agent, "UPDATE items SET qty = 0")
    refused(agent, "DELETE FROM items_base")
    assert_unchanged(before, snapshot(admin, fortress))


def test_agent_cannot_grant_itself_roles_or_attributes(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(fortress, fortress.agent)
    me = sql.Identifier(fortress.agent)
    before = snapshot(admin, fortress)
    for statement in (
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(fortress.reviewer), me),
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(fortress.production), me),
        sql.SQL("ALTER ROLE {} SUPERUSER").format(me),
        sql.SQL("ALTER ROLE {} CREATEROLE").format(me),
        sql.SQL("ALTER ROLE {} BYPASSRLS").format(me),
        sql.SQL("ALTER ROLE {} SET session_replication_role = replica").format(me),
        sql.SQL("CREATE ROLE {}").format(sql.Identifier(fortress.agent + "_friend")),
        sql.SQL("REVOKE {} FROM {}").format(me, sql.Identifier(fortress.other_agent)),
    ):
        refused(agent, statement)
    assert_unchanged(before, snapshot(admin, fortress))


def test_agent_cannot_switch_triggers_off_with_session_replication_role(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(fortress, fortress.agent)
    before = snapshot(admin, fortress)
    refused(agent, "SET session_replication_role = replica")
    refused(agent, "SET session_replication_role = local")
    refused(agent, "SELECT set_config('session_replication_role', 'replica', false)")
    refused(agent, "UPDATE items SET qty = 0")  # still fail-closed
    assert_unchanged(before, snapshot(admin, fortress))


DDL = (
    "DROP VIEW items",
    "DROP VIEW items CASCADE",
    "CREATE OR REPLACE VIEW items AS SELECT * FROM items_base",
    "ALTER VIEW items RENAME TO items_old",
    "ALTER VIEW items ALTER COLUMN qty SET DEFAULT 99",
    "ALTER VIEW items SET (security_invoker = true)",
    "ALTER VIEW items OWNER TO CURRENT_USER",
    "DROP TRIGGER cowsync_write ON items",
    "ALTER TRIGGER cowsync_write ON items RENAME TO off",
    "ALTER TABLE items DISABLE TRIGGER cowsync_write",
    "ALTER TABLE items DISABLE TRIGGER ALL",
    "ALTER TABLE items_base DISABLE TRIGGER ALL",
    "ALTER TABLE items_base DISABLE TRIGGER USER",
    "ALTER TABLE items_changes DISABLE TRIGGER ALL",
    "ALTER TABLE shop_child_base DISABLE TRIGGER ALL",
    "ALTER TABLE items_base ADD COLUMN planted int",
    "ALTER TABLE items_base DROP CONSTRAINT items_qty_check",
    "ALTER TABLE items_base ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE items_base NO INHERIT items_changes",
    "ALTER TABLE items_changes NO INHERIT items_base",
    "ALTER TABLE items_base RENAME TO items_gone",
    "ALTER TABLE items_base OWNER TO CURRENT_USER",
    "DROP TABLE items_base CASCADE",
    "DROP TABLE items_changes",
    "CREATE RULE planted AS ON UPDATE TO items DO INSTEAD NOTHING",
    "CREATE RULE planted AS ON INSERT TO items_base DO INSTEAD NOTHING",
    "COMMENT ON VIEW items IS 'mine'",
    "COMMENT ON TABLE items_base IS 'mine'",
    "GRANT ALL ON items_base TO CURRENT_USER",
    "REINDEX TABLE items_base",
    "VACUUM FULL items_base",
    "CLUSTER items_base USING items_pkey",
    "REFRESH MATERIALIZED VIEW items",
    "SECURITY LABEL ON TABLE items_base IS 'x'",
)


def test_agent_cannot_alter_or_drop_views_triggers_or_bases(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(fortress, fortress.agent)
    before = snapshot(admin, fortress)
    allowed = {
        "42501",  # permission denied / must be owner
        "42809",  # wrong object type (REFRESH of a view): refused before the owner check
        "22023",  # SECURITY LABEL with no label provider loaded
    }
    for statement in DDL:
        try:
            agent.execute(statement)
        except psycopg.Error as error:
            assert error.sqlstate in allowed, f"{statement}: {error.sqlstate} {error}"
        else:
            # VACUUM skips tables it may not vacuum with a warning instead of an error.
            assert statement.startswith("VACUUM"), f"not refused: {statement}"
    assert_unchanged(before, snapshot(admin, fortress))
