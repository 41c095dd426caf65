"""An agent role writes only inside a session it owns, and reads no one else's.

Fail-closed: a write with no session is refused (42501) whatever the agent did to the
session variable. Ownership: another agent's session id neither reads nor writes (42501).
Malformed ids are refused cleanly (22023). In each case the bases, the victim's session,
the registry and the engine's objects stay exactly as they were.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import cowsync
from tests.hardening._fortress import (
    INVALID_PARAMETER_VALUE,
    Fortress,
    RoleFactory,
    assert_unchanged,
    base_checksums,
    refused,
    session_checksums,
    snapshot,
)

Connect = Callable[[Fortress, str], psycopg.Connection[Any]]

WRITES = {
    "insert": "INSERT INTO items (name, qty) VALUES ('escaped', 1)",
    "insert_returning": "INSERT INTO items (name, qty) VALUES ('escaped', 1) RETURNING id",
    "insert_on_conflict": "INSERT INTO items (id, name) VALUES (3, 'x') ON CONFLICT DO NOTHING",
    "update": "UPDATE items SET qty = qty + 100",
    "update_key": "UPDATE items SET id = id + 1000 WHERE id = 3",
    "delete": "DELETE FROM items WHERE id = 4",
    "writable_cte": "WITH gone AS (DELETE FROM items RETURNING 1) SELECT count(*) FROM gone",
    "insert_select": "INSERT INTO items (name, qty) SELECT name, qty FROM items",
    "parent_delete_cascading": "DELETE FROM shop_parent WHERE id = 1",
    "child_insert": "INSERT INTO shop_child (parent_id, note) VALUES (1, 'escaped')",
}

# Ways to end up with no session (each leaves app.session_id unset or empty).
UNBIND = {
    "never_set": None,
    "set_empty": "SET app.session_id = ''",
    "reset": "RESET app.session_id",
    "set_config_empty": "SELECT set_config('app.session_id', '', false)",
    "reset_all": "RESET ALL",
    "discard_all": "DISCARD ALL",
}


@pytest.mark.parametrize("unbind", sorted(UNBIND))
def test_write_with_no_session_is_refused(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect, unbind: str
) -> None:
    agent = connect_as(fortress, fortress.agent)
    statement = UNBIND[unbind]
    if statement is not None:
        agent.execute("SELECT set_config('app.session_id', %s, false)", (fortress.agent_session,))
        agent.execute(statement)
    before = snapshot(admin, fortress)
    for write in WRITES.values():
        error = refused(agent, write)
        assert "inside a session" in str(error), write
    assert_unchanged(before, snapshot(admin, fortress))


def test_copy_into_the_view_with_no_session_is_refused(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(fortress, fortress.agent)
    before = snapshot(admin, fortress)
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege),
        agent.cursor() as cur,
        cur.copy("COPY items (name, qty) FROM STDIN") as copy,
    ):
        copy.write_row(("copied", 1))
    assert_unchanged(before, snapshot(admin, fortress))


def test_unsetting_the_session_inside_the_statement_is_refused(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    # The view reads the session once per statement; the trigger re-reads it per row. An
    # agent that clears it between the two must still not reach the base.
    agent = connect_as(fortress, fortress.agent)
    agent.execute("SELECT set_config('app.session_id', %s, false)", (fortress.agent_session,))
    before = snapshot(admin, fortress)
    refused(agent, "UPDATE items SET name = set_config('app.session_id', '', true) WHERE id = 3")
    refused(
        agent,
        "INSERT INTO items (name) SELECT set_config('app.session_id', '', true)",
    )
    assert_unchanged(before, snapshot(admin, fortress))


def test_switching_to_another_session_inside_the_statement_is_refused(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(fortress, fortress.agent)
    agent.execute("SELECT set_config('app.session_id', %s, false)", (fortress.agent_session,))
    before = snapshot(admin, fortress)
    refused(
        agent,
        "UPDATE items SET name = set_config('app.session_id', %s, true) WHERE id = 3",
        (fortress.victim_session,),
    )
    assert_unchanged(before, snapshot(admin, fortress))


@pytest.mark.parametrize("operation", [None, "victim-op", "fresh-op"])
def test_write_with_another_agents_session_id_is_refused(
    fortress: Fortress,
    admin: psycopg.Connection[Any],
    connect_as: Connect,
    operation: str | None,
) -> None:
    agent = connect_as(fortress, fortress.agent)
    agent.execute("SELECT set_config('app.session_id', %s, false)", (fortress.victim_session,))
    if operation is not None:
        agent.execute("SELECT set_config('app.operation_id', %s, false)", (operation,))
    before = snapshot(admin, fortress)
    for write in WRITES.values():
        error = refused(agent, write)
        assert "belongs to another role" in str(error), write
    assert_unchanged(before, snapshot(admin, fortress))


READS = (
    "SELECT * FROM items",
    "SELECT * FROM items WHERE id = 1",
    "SELECT count(*) FROM shop_parent",
    "SELECT name FROM items WHERE name = 'victim secret'",
    "SELECT * FROM items FOR UPDATE",
    "SELECT EXISTS (SELECT 1 FROM shop_parent WHERE name = 'victim parent')",
)


def test_reading_another_agents_session_is_refused(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(fortress, fortress.agent)
    agent.execute("SELECT set_config('app.session_id', %s, false)", (fortress.victim_session,))
    before = snapshot(admin, fortress)
    for query in READS:
        error = refused(agent, query)
        assert "belongs to another role" in str(error), query
    assert_unchanged(before, snapshot(admin, fortress))


def test_the_victim_still_reads_its_own_session(fortress: Fortress, connect_as: Connect) -> None:
    # The control for the test above: the session exists and has the secret in it.
    victim = connect_as(fortress, fortress.other_agent)
    with cowsync.session(victim, fortress.victim_session):
        names = [r[0] for r in victim.execute("SELECT name FROM items ORDER BY id")]
    assert "victim secret" in names


def test_reading_another_sessions_preview_is_refused(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    reviewer = connect_as(fortress, fortress.reviewer)
    with cowsync.session(reviewer, fortress.victim_session, visible_operations=["victim-op"]):
        seen = [r[0] for r in reviewer.execute("SELECT name FROM items ORDER BY id")]
    assert "victim secret" in seen
    previews = [
        r[0]
        for r in admin.execute(
            "SELECT session_id FROM cowsync.sessions WHERE preview_of = %s",
            (fortress.victim_session,),
        )
    ]
    assert previews
    agent = connect_as(fortress, fortress.agent)
    for preview in previews:
        agent.execute("SELECT set_config('app.session_id', %s, false)", (preview,))
        refused(agent, "SELECT * FROM items")
        refused(agent, "UPDATE items SET qty = 0")


def test_a_session_started_by_a_non_agent_role_is_closed_to_agents(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    production = connect_as(fortress, fortress.production)
    session_id = "production-job-" + fortress.victim_session
    with cowsync.session(production, session_id):
        production.execute("UPDATE items SET name = 'job secret' WHERE id = 5")
    agent = connect_as(fortress, fortress.agent)
    agent.execute("SELECT set_config('app.session_id', %s, false)", (session_id,))
    bases = base_checksums(admin)
    rows = session_checksums(admin, session_id)
    refused(agent, "SELECT * FROM items")
    refused(agent, "DELETE FROM items")
    assert base_checksums(admin) == bases
    assert session_checksums(admin, session_id) == rows


MALFORMED_IDS = {
    "10k_chars": "x" * 10_000,
    "201_chars": "s" * 201,
    "quote": "it's",
    "double_quote": 'say "hi"',
    "semicolon": "a;b",
    "injection": "x'); DELETE FROM items_base; --",
    "space": "a b",
    "tab": "a\tb",
    "newline": "a\nb",
    "control_char": "a\x01b",
    "unit_separator": "a\x1fb",
    "escape": "a\x1b[31mb",
    "non_ascii": "café",
    "preview_marker": "own~preview~0123",
    "percent": "100%",
}


@pytest.mark.parametrize("variable", ["app.session_id", "app.operation_id"])
@pytest.mark.parametrize("bad_id", sorted(MALFORMED_IDS))
def test_malformed_ids_are_refused_cleanly(
    fortress: Fortress,
    admin: psycopg.Connection[Any],
    connect_as: Connect,
    bad_id: str,
    variable: str,
) -> None:
    agent = connect_as(fortress, fortress.agent)
    agent.execute("SELECT set_config('app.session_id', %s, false)", (fortress.agent_session,))
    agent.execute("SELECT set_config(%s, %s, false)", (variable, MALFORMED_IDS[bad_id]))
    before = snapshot(admin, fortress)
    for write in ("INSERT INTO items (name) VALUES ('x')", "UPDATE items SET qty = 1"):
        error = refused(agent, write, sqlstates=(INVALID_PARAMETER_VALUE,))
        assert "invalid session or operation id" in str(error)
    assert_unchanged(before, snapshot(admin, fortress))
    # The connection is still usable: the refusal was an ordinary error.
    assert agent.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("bad_id", ["10k_chars", "quote", "injection", "control_char"])
def test_reading_with_a_malformed_session_id_shows_no_session_rows(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect, bad_id: str
) -> None:
    # No session can carry such an id, so there is nothing to read but the base.
    agent = connect_as(fortress, fortress.agent)
    production = agent.execute("SELECT * FROM items ORDER BY id").fetchall()
    agent.execute("SELECT set_config('app.session_id', %s, false)", (MALFORMED_IDS[bad_id],))
    assert agent.execute("SELECT * FROM items ORDER BY id").fetchall() == production


def test_agent_writes_in_its_own_session_without_touching_the_base(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    # The control for every refusal in this folder: the agent can do its job.
    agent = connect_as(fortress, fortress.agent)
    bases = base_checksums(admin)
    victim = session_checksums(admin, fortress.victim_session)
    with cowsync.session(agent, fortress.agent_session, "own-op-2"):
        agent.execute("UPDATE items SET qty = 6 WHERE id = 4")
        (new_id,) = agent.execute(
            "INSERT INTO items (name, qty) VALUES ('mine', 1) RETURNING id"
        ).fetchone() or (None,)
        agent.execute("DELETE FROM shop_child WHERE id = 2")
        seen = dict(agent.execute("SELECT id, qty FROM items").fetchall())
        children = [r[0] for r in agent.execute("SELECT id FROM shop_child")]
    assert seen[4] == 6 and new_id in seen
    assert 2 not in children
    assert base_checksums(admin) == bases
    assert session_checksums(admin, fortress.victim_session) == victim
    owner = admin.execute(
        "SELECT owner_role FROM cowsync.sessions WHERE session_id = %s",
        (fortress.agent_session,),
    ).fetchone()
    assert owner == (fortress.agent,)


def test_agent_reads_production_with_no_session(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    # Without read_requires_session an agent reads the base as production does.
    agent = connect_as(fortress, fortress.agent)
    seen = agent.execute("SELECT * FROM items ORDER BY id").fetchall()
    assert seen == admin.execute("SELECT * FROM ONLY items_base ORDER BY id").fetchall()


def test_a_login_role_in_an_agent_group_is_fenced_too(
    fortress: Fortress,
    admin: psycopg.Connection[Any],
    connect_as: Connect,
    pg_admin_dsn: str,
) -> None:
    # Registering a group role covers every login role that is a member of it.
    roles = RoleFactory(pg_admin_dsn, fortress.dsn)
    try:
        member = roles("member", member_of=fortress.agent)
        conn = connect_as(fortress, member)
        before = snapshot(admin, fortress)
        refused(conn, "UPDATE items SET qty = 0")
        conn.execute("SELECT set_config('app.session_id', %s, false)", (fortress.victim_session,))
        refused(conn, "SELECT * FROM items")
        refused(conn, "UPDATE items SET qty = 0")
        assert_unchanged(before, snapshot(admin, fortress))
    finally:
        roles.drop_all()


def test_sessions_are_checked_even_in_one_transaction(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    # The unhardened engine skips re-registering a session within a transaction (a marker
    # setting the client could forge); the hardened one checks the owner on every write.
    agent = connect_as(fortress, fortress.agent)
    before = snapshot(admin, fortress)
    with pytest.raises(psycopg.errors.InsufficientPrivilege), agent.transaction():
        agent.execute("SELECT set_config('app.session_id', %s, true)", (fortress.agent_session,))
        agent.execute("UPDATE items SET qty = 3 WHERE id = 3")
        marker = f"{fortress.victim_session}\x1fdefault"
        agent.execute("SELECT set_config('cowsync.registered', %s, true)", (marker,))
        agent.execute("SELECT set_config('app.session_id', %s, true)", (fortress.victim_session,))
        agent.execute("UPDATE items SET qty = 3 WHERE id = 3")
    assert_unchanged(before, snapshot(admin, fortress))
