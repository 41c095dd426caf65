"""An agent cannot lock production out with ``LOCK TABLE <view>`` (issue 15, item 5).

PostgreSQL locks the relations under a view in the mode asked for the view, checking the
*view owner's* privileges on them. The agent holds UPDATE and DELETE on the view, which is
all LOCK asks of it, so when the table's owner owned the view an agent's
``LOCK TABLE items IN ACCESS EXCLUSIVE MODE`` took base and change store in that mode and
production waited. Hardened views belong to a NOLOGIN role that may only read them and
update one key column: every mode but ACCESS SHARE (which blocks nothing but ACCESS
EXCLUSIVE) is refused, for everyone, while reads, writes and ``FOR UPDATE`` still work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

import cowsync
from cowsync.hardening import VIEW_OWNER
from tests.hardening._fortress import Fortress, refused

Connect = Callable[[Fortress, str], psycopg.Connection[Any]]

BLOCKING_MODES = (
    "ACCESS EXCLUSIVE",
    "EXCLUSIVE",
    "SHARE ROW EXCLUSIVE",
    "SHARE",
    "SHARE UPDATE EXCLUSIVE",
    "ROW EXCLUSIVE",
    "ROW SHARE",
)
NO_WAIT = "1s"  # a statement that waits longer than this for a lock counts as blocked


def _view_owner(conn: psycopg.Connection[Any], view: str = "items") -> str:
    row = conn.execute(
        "SELECT pg_catalog.pg_get_userbyid(relowner) FROM pg_class WHERE oid = %s::regclass",
        (view,),
    ).fetchone()
    assert row is not None
    return str(row[0])


def _impatient(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, false)", (NO_WAIT,))
    return conn


@pytest.mark.parametrize("mode", BLOCKING_MODES)
def test_an_agents_blocking_lock_on_a_view_is_refused(
    fortress: Fortress, connect_as: Connect, mode: str
) -> None:
    agent = connect_as(fortress, fortress.agent)
    for table in ("items", "shop_parent", "shop_child"):
        agent.execute("BEGIN")
        refused(
            agent, sql.SQL("LOCK TABLE {} IN {} MODE").format(sql.Identifier(table), sql.SQL(mode))
        )
        agent.execute("ROLLBACK")


def test_an_agents_lock_in_its_own_session_is_refused_too(
    fortress: Fortress, connect_as: Connect
) -> None:
    agent = connect_as(fortress, fortress.agent)
    with cowsync.session(agent, fortress.agent_session, "own-op"):
        agent.execute("BEGIN")
        refused(agent, "LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        agent.execute("ROLLBACK")


def test_production_locks_the_base_not_the_view(fortress: Fortress, connect_as: Connect) -> None:
    production = connect_as(fortress, fortress.production)
    production.execute("BEGIN")
    refused(production, "LOCK TABLE items IN SHARE ROW EXCLUSIVE MODE")
    production.execute("ROLLBACK")
    with production.transaction():
        production.execute("LOCK TABLE items_base IN SHARE ROW EXCLUSIVE MODE")


def test_an_agent_holding_access_share_blocks_neither_production_nor_the_reviewer(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(fresh_fortress, fresh_fortress.agent)
    production = _impatient(connect_as(fresh_fortress, fresh_fortress.production))
    reviewer = _impatient(connect_as(fresh_fortress, fresh_fortress.reviewer))
    before = fresh_admin.execute("SELECT qty FROM ONLY items_base WHERE id = 3").fetchone()
    assert before is not None
    agent.execute("BEGIN")
    agent.execute("LOCK TABLE items IN ACCESS SHARE MODE")
    try:
        production.execute("UPDATE items SET qty = qty + 10 WHERE id = 3")
        production.execute("INSERT INTO items (name) VALUES ('while locked')")
        assert production.execute("SELECT count(*) FROM items").fetchone() == (6,)
        result = cowsync.commit(reviewer, fresh_fortress.agent_session)
        assert result.applied["public.items"]["update"] == 1
    finally:
        agent.execute("ROLLBACK")
    after = fresh_admin.execute("SELECT qty FROM ONLY items_base WHERE id = 3").fetchone()
    assert after == (before[0] + 10,)


def test_for_update_through_the_view_still_works(fortress: Fortress, connect_as: Connect) -> None:
    agent = connect_as(fortress, fortress.agent)
    production = _impatient(connect_as(fortress, fortress.production))
    with cowsync.session(agent, fortress.agent_session, "own-op"), agent.transaction():
        assert agent.execute("SELECT id FROM items WHERE id = 1 FOR UPDATE").fetchall() == [(1,)]
        assert agent.execute("SELECT id FROM items WHERE id = 2 FOR SHARE").fetchall() == [(2,)]
        # Production skips the row the agent locked, and takes the next one.
        with production.transaction():
            rows = production.execute(
                "SELECT id FROM items ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1"
            ).fetchall()
            assert rows == [(2,)]
    with production.transaction():
        assert production.execute("SELECT id FROM items WHERE id = 1 FOR UPDATE").fetchall() == [
            (1,)
        ]


def test_writes_through_the_view_still_work(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(fresh_fortress, fresh_fortress.agent)
    with cowsync.session(agent, fresh_fortress.agent_session, "own-op"):
        inserted = agent.execute("INSERT INTO items (name) VALUES ('new') RETURNING id").fetchone()
        assert inserted is not None
        agent.execute("INSERT INTO items (id, name) VALUES (1, 'dup') ON CONFLICT DO NOTHING")
        agent.execute("UPDATE items SET name = 'renamed' WHERE id = %s", inserted)
        agent.execute("DELETE FROM items WHERE id = 5")
    production = connect_as(fresh_fortress, fresh_fortress.production)
    production.execute("UPDATE items SET name = 'prod' WHERE id = 4 RETURNING id")
    assert fresh_admin.execute("SELECT name FROM ONLY items_base WHERE id = 4").fetchone() == (
        "prod",
    )


def test_hardened_views_belong_to_the_view_owner_until_unharden(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any]
) -> None:
    before = {t: _view_owner(fresh_admin, f"{t}_base") for t in ("items", "shop_parent")}
    assert _view_owner(fresh_admin) == VIEW_OWNER
    cowsync.refresh(fresh_admin, "items")
    cowsync.alter(fresh_admin, "shop_parent", "ADD COLUMN note text")
    assert _view_owner(fresh_admin) == VIEW_OWNER
    assert _view_owner(fresh_admin, "shop_parent") == VIEW_OWNER
    assert cowsync.check_hardening(fresh_admin) == []

    cowsync.unharden(fresh_admin)

    assert {t: _view_owner(fresh_admin, t) for t in before} == before
    held = fresh_admin.execute(
        "SELECT count(*) FROM pg_class c, pg_catalog.aclexplode(c.relacl) a "
        "WHERE a.grantee = %s::regrole AND c.relnamespace = 'public'::regnamespace",
        (VIEW_OWNER,),
    ).fetchone()
    assert held == (0,)


def test_disable_gives_the_table_back_without_the_view_owners_grants(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any]
) -> None:
    owner = _view_owner(fresh_admin, "shop_child_base")
    cowsync.disable(fresh_admin, "shop_child", force=True)
    assert _view_owner(fresh_admin, "shop_child") == owner
    held = fresh_admin.execute(
        "SELECT pg_catalog.has_table_privilege(%s, 'shop_child', 'SELECT'), "
        "pg_catalog.has_any_column_privilege(%s, 'shop_child', 'UPDATE')",
        (VIEW_OWNER, VIEW_OWNER),
    ).fetchone()
    assert held == (False, False)


def test_a_view_its_owner_could_lock_through_is_reported_and_fixed(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    fresh_admin.execute("ALTER VIEW items OWNER TO CURRENT_USER")  # a superuser
    issues = cowsync.check_hardening(fresh_admin)
    assert [i for i in issues if "LOCK TABLE items" in i.problem], issues
    for issue in issues:
        fresh_admin.execute(issue.fix)
    assert cowsync.check_hardening(fresh_admin) == []
    agent = connect_as(fresh_fortress, fresh_fortress.agent)
    agent.execute("BEGIN")
    refused(agent, "LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
    agent.execute("ROLLBACK")


def test_harden_refuses_an_agent_that_is_a_member_of_the_view_owner(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], fresh_agent: str
) -> None:
    fresh_admin.execute(
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(VIEW_OWNER), sql.Identifier(fresh_agent))
    )
    with pytest.raises(cowsync.ConfigurationError, match="members of the view owner"):
        cowsync.harden(
            fresh_admin,
            agent_roles=[fresh_fortress.agent, fresh_fortress.other_agent, fresh_agent],
            reviewer_roles=[fresh_fortress.reviewer],
        )
    assert [i for i in cowsync.check_hardening(fresh_admin) if i.role == fresh_agent]
