"""No agent can hold a lock that blocks another session's writes, or deploy and harden.

A session's write lock used to be an advisory lock on
``hashtextextended('cowsync session ' || id, 0)``, and deploy's an advisory lock on a fixed
key. Any role may take any advisory lock and keep it for as long as it stays connected, and
``pg_locks`` shows every role the keys that other backends hold. An agent that knew a session
id, or only watched ``pg_locks`` while the session wrote, could block it for good, and block
deploy, enable and harden the same way.

Now the session lock is a row lock on ``cowsync.session_locks``, which only the engine's
functions take, and the deploy lock is a table lock on ``cowsync.engine``. Agents hold no
privilege on either, and ``pg_locks`` does not list row locks.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import cowsync
import cowsync.install
from tests.hardening._fortress import Fortress, refused

Connect = Callable[[Fortress, str], psycopg.Connection[Any]]

OLD_SESSION_KEY = "SELECT pg_catalog.pg_advisory_lock(pg_catalog.hashtextextended(%s, 0))"
OLD_DEPLOY_KEY = 0x636F7773
WAIT = "2s"  # a write that waits longer than this for a lock counts as blocked


def _victim(fortress: Fortress, connect_as: Connect) -> psycopg.Connection[Any]:
    """The other agent, writing in its own session, that gives up waiting after WAIT."""
    victim = connect_as(fortress, fortress.other_agent)
    victim.execute("SELECT pg_catalog.set_config('lock_timeout', %s, false)", (WAIT,))
    return victim


def _write(victim: psycopg.Connection[Any], session: str, qty: int) -> None:
    with cowsync.session(victim, session, "write"):
        victim.execute("UPDATE items SET qty = %s WHERE id = 3", (qty,))


def test_the_old_key_of_a_session_blocks_nothing(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    session = fresh_fortress.victim_session
    agent = connect_as(fresh_fortress, fresh_fortress.agent)
    # Every key the old formula gave, held at session level (until the agent disconnects).
    agent.execute(OLD_SESSION_KEY, ("cowsync session " + session,))
    agent.execute("SELECT pg_catalog.pg_advisory_lock(pg_catalog.hashtext(%s))", (session,))
    victim = _victim(fresh_fortress, connect_as)
    _write(victim, session, 31)
    reviewer = connect_as(fresh_fortress, fresh_fortress.reviewer)
    reviewer.execute("SELECT pg_catalog.set_config('lock_timeout', %s, false)", (WAIT,))
    cowsync.seal(reviewer, session, wait=1.0)
    cowsync.unseal(reviewer, session)
    result = cowsync.commit(reviewer, session, wait=1.0)
    assert result.total >= 1
    row = fresh_admin.execute("SELECT qty FROM ONLY items_base WHERE id = 3").fetchone()
    assert row == (31,)


def test_locks_seen_in_pg_locks_block_nothing(
    fresh_fortress: Fortress, connect_as: Connect
) -> None:
    """The agent watches pg_locks while the victim's transaction holds its write lock,
    takes every advisory lock it sees there (for good), and the victim writes on."""
    session = fresh_fortress.victim_session
    victim = _victim(fresh_fortress, connect_as)
    victim.autocommit = False
    agent = connect_as(fresh_fortress, fresh_fortress.agent)
    with cowsync.session(victim, session, "write"):
        victim.execute("UPDATE items SET qty = 32 WHERE id = 3")
        seen = agent.execute(
            "SELECT locktype, classid, objid, objsubid FROM pg_catalog.pg_locks WHERE pid = %s",
            (victim.info.backend_pid,),
        ).fetchall()
        assert [lock for lock in seen if lock[0] == "advisory"] == []
        # Every advisory lock of this database, whoever holds it, taken for good.
        agent.execute(
            "SELECT CASE WHEN l.objsubid = 2 "
            "THEN pg_catalog.pg_advisory_lock(l.classid::int4, l.objid::int4) "
            "ELSE pg_catalog.pg_advisory_lock((l.classid::int8 << 32) | l.objid::int8) END "
            "FROM pg_catalog.pg_locks l WHERE l.locktype = 'advisory' AND l.pid <> "
            "pg_catalog.pg_backend_pid() AND l.database = (SELECT d.oid FROM "
            "pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())"
        )
        victim.commit()
        victim.execute("UPDATE items SET qty = 33 WHERE id = 3")
        victim.commit()
    reviewer = connect_as(fresh_fortress, fresh_fortress.reviewer)
    assert cowsync.commit(reviewer, session, wait=1.0).total >= 1


def test_an_agent_cannot_take_a_sessions_write_lock(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(fortress, fortress.agent)
    victim = fortress.victim_session
    for statement, params in (
        ("SELECT cowsync.lock_session(%s, true)", (victim,)),
        ("SELECT cowsync.lock_session(%s, false)", (victim,)),
        ("SELECT cowsync.session_lock_holder(%s)", (victim,)),
        ("SELECT * FROM cowsync.session_locks", None),
        ("SELECT 1 FROM cowsync.session_locks WHERE session_id = %s FOR UPDATE", (victim,)),
        ("SELECT 1 FROM cowsync.session_locks WHERE session_id = %s FOR KEY SHARE", (victim,)),
        ("INSERT INTO cowsync.session_locks VALUES ('planted')", None),
        ("DELETE FROM cowsync.session_locks", None),
        ("LOCK TABLE cowsync.session_locks IN ACCESS SHARE MODE", None),
        ("LOCK TABLE cowsync.engine IN ACCESS SHARE MODE", None),
        ("LOCK TABLE cowsync.sessions IN ACCESS SHARE MODE", None),
    ):
        with agent.transaction():
            refused(agent, statement, params)
            raise psycopg.Rollback()
    holders = admin.execute("SELECT count(*) FROM cowsync.session_locks").fetchone()
    assert holders is not None and holders[0] >= 2  # the fortress's two sessions


def test_the_old_deploy_key_blocks_nothing(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(fresh_fortress, fresh_fortress.agent)
    agent.execute("SELECT pg_catalog.pg_advisory_lock(%s)", (OLD_DEPLOY_KEY,))
    with agent.transaction():
        refused(agent, "LOCK TABLE cowsync.engine IN EXCLUSIVE MODE")
        raise psycopg.Rollback()
    fresh_admin.execute("SELECT pg_catalog.set_config('lock_timeout', %s, false)", (WAIT,))
    assert cowsync.deploy(fresh_admin).changed is False
    fresh_admin.execute("CREATE TABLE public.later (id serial PRIMARY KEY)")
    cowsync.enable(fresh_admin, "later")
    cowsync.alter(fresh_admin, "later", "ADD COLUMN note text")
    issues = cowsync.harden(
        fresh_admin,
        agent_roles=[fresh_fortress.agent, fresh_fortress.other_agent],
        reviewer_roles=[fresh_fortress.reviewer],
    )
    assert issues == []
    cowsync.disable(fresh_admin, "later")


def test_deploy_waits_for_another_deploy(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any]
) -> None:
    """The lock still serialises the owner's own deploys, enables and hardens."""
    with psycopg.connect(fresh_fortress.dsn) as first, first.transaction():
        cowsync.install._lock(first)
        fresh_admin.execute("SELECT pg_catalog.set_config('lock_timeout', '200ms', false)")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            cowsync.deploy(fresh_admin)


def test_an_upgrade_keeps_new_engine_functions_from_agents(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    connect_as: Connect,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Functions an upgrade adds start executable by PUBLIC; in a hardened database deploy
    takes that back (and gives them to reviewers), as harden does."""
    fresh_admin.execute(
        "DROP FUNCTION cowsync.lock_session(text, boolean), cowsync.session_lock_holder(text)"
    )
    monkeypatch.setattr(cowsync.install, "ENGINE_VERSION", cowsync.ENGINE_VERSION + 1)
    assert cowsync.deploy(fresh_admin).changed is True
    assert cowsync.check_hardening(fresh_admin) == []
    agent = connect_as(fresh_fortress, fresh_fortress.agent)
    refused(agent, "SELECT cowsync.lock_session(%s, true)", (fresh_fortress.victim_session,))
    session = "after-upgrade-" + secrets.token_hex(4)
    with cowsync.session(agent, session, "op"):
        agent.execute("UPDATE items SET qty = 7 WHERE id = 4")
    reviewer = connect_as(fresh_fortress, fresh_fortress.reviewer)
    assert cowsync.commit(reviewer, session, wait=1.0).total == 1
    granted = fresh_admin.execute(
        "SELECT has_function_privilege(%s, 'cowsync.lock_session(text, boolean)', 'EXECUTE')",
        (fresh_fortress.reviewer,),
    ).fetchone()
    assert granted == (True,)
