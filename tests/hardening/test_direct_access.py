"""An agent role cannot reach base tables, change stores or the registry directly.

Every statement runs as the agent, once with no session and once inside its own session (a
session must not unlock anything), and must be refused with a permission error while the
bases, the other agent's session, the registry and the engine's objects stay exactly as they
were.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

import cowsync
from tests.hardening._fortress import (
    Fortress,
    assert_unchanged,
    refused,
    snapshot,
)

Connect = Callable[[Fortress, str], psycopg.Connection[Any]]

# {rel} is items_base or items_changes (schema-qualified).
RELATION_ATTACKS = {
    "insert": "INSERT INTO {rel} (name, qty) VALUES ('escaped', 1)",
    "insert_on_conflict": (
        "INSERT INTO {rel} (id, name, qty) VALUES (1, 'escaped', 1) ON CONFLICT DO NOTHING"
    ),
    "update": "UPDATE {rel} SET qty = qty + 100",
    "delete": "DELETE FROM {rel}",
    "truncate": "TRUNCATE {rel}",
    "truncate_cascade": "TRUNCATE {rel} CASCADE",
    "writable_cte": "WITH gone AS (DELETE FROM {rel} RETURNING 1) SELECT count(*) FROM gone",
    "writable_cte_update": (
        "WITH moved AS (UPDATE {rel} SET qty = 0 RETURNING id) SELECT count(*) FROM moved"
    ),
    "merge": (
        "MERGE INTO {rel} AS t USING (VALUES (1, 'escaped')) AS s(id, name) ON t.id = s.id "
        "WHEN MATCHED THEN UPDATE SET name = s.name"
    ),
    "select": "SELECT * FROM {rel}",
    "select_for_update": "SELECT * FROM {rel} FOR UPDATE",
    # LOCK needs a transaction block; a DO block is one.
    "lock": "DO $$BEGIN LOCK TABLE {rel} IN ACCESS EXCLUSIVE MODE; END$$",
    "copy_to": "COPY {rel} TO STDOUT",
}


def _bind(conn: psycopg.Connection[Any], fortress: Fortress, in_session: bool) -> None:
    if in_session:
        conn.execute("SELECT set_config('app.session_id', %s, false)", (fortress.agent_session,))


@pytest.mark.parametrize("relation", ["items_base", "items_changes"])
@pytest.mark.parametrize("attack", sorted(RELATION_ATTACKS))
def test_agent_cannot_touch_base_or_change_store(
    fortress: Fortress,
    admin: psycopg.Connection[Any],
    connect_as: Connect,
    attack: str,
    relation: str,
) -> None:
    agent = connect_as(fortress, fortress.agent)
    before = snapshot(admin, fortress)
    statement = sql.SQL(RELATION_ATTACKS[attack]).format(rel=sql.Identifier("public", relation))
    refused(agent, statement)  # no session
    _bind(agent, fortress, in_session=True)
    refused(agent, statement)  # its own session unlocks nothing either
    assert_unchanged(before, snapshot(admin, fortress))


@pytest.mark.parametrize("in_session", [False, True], ids=["no-session", "own-session"])
@pytest.mark.parametrize("relation", ["items_base", "items_changes"])
def test_agent_cannot_copy_into_base_or_change_store(
    fortress: Fortress,
    admin: psycopg.Connection[Any],
    connect_as: Connect,
    relation: str,
    in_session: bool,
) -> None:
    agent = connect_as(fortress, fortress.agent)
    _bind(agent, fortress, in_session)
    before = snapshot(admin, fortress)
    statement = sql.SQL("COPY {} (name, qty) FROM STDIN").format(sql.Identifier("public", relation))
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege),
        agent.cursor() as cur,
        cur.copy(statement) as copy,
    ):
        copy.write_row(("copied in", 1))
    assert_unchanged(before, snapshot(admin, fortress))


REGISTRY_ATTACKS = {
    "steal_session": "UPDATE cowsync.sessions SET owner_role = current_user",
    "plant_session": (
        "INSERT INTO cowsync.sessions (session_id, owner_role) VALUES ('planted', current_user)"
    ),
    "drop_sessions": "DELETE FROM cowsync.sessions",
    "plant_operation": (
        "INSERT INTO cowsync.operations (session_id, operation_id, first_seq) "
        "SELECT session_id, 'planted', 0 FROM cowsync.sessions"
    ),
    "forget_tables": "DELETE FROM cowsync.tables",
    "truncate_tables": "TRUNCATE cowsync.tables CASCADE",
    "unharden_setting": "UPDATE cowsync.settings SET value = 'off' WHERE name = 'hardened'",
    "become_reviewer": "UPDATE cowsync.roles SET kind = 'reviewer' WHERE role_name = current_user",
    "unregister": "DELETE FROM cowsync.roles",
    "add_reviewer": "INSERT INTO cowsync.roles VALUES (current_user || '_x', 'reviewer')",
    "hardening_log": "DELETE FROM cowsync.hardening_log",
    "engine_version": "UPDATE cowsync.engine SET version = version + 1",
    "read_sessions": "SELECT * FROM cowsync.sessions",
    "read_roles": "SELECT * FROM cowsync.roles",
    "write_seq": "SELECT nextval('cowsync.write_seq')",
    "write_seq_setval": "SELECT setval('cowsync.write_seq', 1)",
}


@pytest.mark.parametrize("attack", sorted(REGISTRY_ATTACKS))
def test_agent_cannot_read_or_write_the_registry(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect, attack: str
) -> None:
    agent = connect_as(fortress, fortress.agent)
    before = snapshot(admin, fortress)
    refused(agent, REGISTRY_ATTACKS[attack])
    assert_unchanged(before, snapshot(admin, fortress))


def _engine_function_calls(
    admin: psycopg.Connection[Any], fortress: Fortress
) -> list[sql.Composable]:
    """A call of every engine function but the two the views need, and pointed calls."""
    victim = sql.Literal(fortress.victim_session)
    calls: list[sql.Composable] = [
        sql.SQL("SELECT cowsync.prepare_preview({}, 'victim-op')").format(victim),
        sql.SQL("SELECT cowsync.drop_previews({})").format(victim),
        sql.SQL("SELECT cowsync.register_write({}, 'stolen')").format(victim),
        sql.SQL("SELECT cowsync.register_write_checked({}, 'stolen')").format(victim),
    ]
    # Everything else the engine defines (names change; the catalog knows), with NULLs.
    rows = admin.execute(
        """
        SELECT p.proname::text,
               array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) AS t)
        FROM pg_proc p
        WHERE p.pronamespace = 'cowsync'::regnamespace
          AND p.proname NOT IN ('current_session', 'is_agent')
        ORDER BY 1
        """
    ).fetchall()
    for name, types in rows:
        arguments = sql.SQL(", ").join(sql.SQL("NULL::" + t) for t in types)
        calls.append(sql.SQL("SELECT {}({})").format(sql.Identifier("cowsync", name), arguments))
    return calls


@pytest.mark.parametrize("in_session", [False, True], ids=["no-session", "own-session"])
def test_agent_cannot_call_engine_functions(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect, in_session: bool
) -> None:
    calls = _engine_function_calls(admin, fortress)
    texts = [c.as_string(admin) for c in calls]
    assert any('"write_' in t for t in texts), texts  # the per-table trigger functions
    agent = connect_as(fortress, fortress.agent)
    _bind(agent, fortress, in_session)
    before = snapshot(admin, fortress)
    for call, text in zip(calls, texts):
        error = refused(agent, call)
        assert "permission denied for function" in str(error), text
    assert_unchanged(before, snapshot(admin, fortress))


def test_agent_cannot_reuse_an_engine_trigger_function_on_its_own_table(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    # A trigger of the agent's own on a table it owns would run the engine's
    # SECURITY DEFINER function with rows the agent chose.
    (registry_id,) = admin.execute(
        "SELECT id FROM cowsync.tables WHERE table_name = 'items'"
    ).fetchone() or (None,)
    agent = connect_as(fortress, fortress.agent)
    agent.execute("CREATE TEMP TABLE decoy (id bigint, name text, qty int)")
    before = snapshot(admin, fortress)
    refused(
        agent,
        f"CREATE TRIGGER decoy_write BEFORE INSERT ON pg_temp.decoy "
        f"FOR EACH ROW EXECUTE FUNCTION cowsync.write_{int(registry_id)}()",
    )
    assert_unchanged(before, snapshot(admin, fortress))


def test_agent_cannot_use_the_review_api(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(fortress, fortress.agent)
    before = snapshot(admin, fortress)
    victim = fortress.victim_session
    own = fortress.agent_session
    attempts: list[Callable[[], object]] = [
        lambda: cowsync.sessions(agent),
        lambda: cowsync.operations(agent, own),
        lambda: cowsync.dependencies(agent, own),
        lambda: cowsync.diff(agent, victim),
        lambda: cowsync.diff(agent, own),
        lambda: cowsync.commit(agent, own),
        lambda: cowsync.commit(agent, victim),
        lambda: cowsync.discard(agent, victim),
        lambda: cowsync.discard(agent, own),
    ]
    for attempt in attempts:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            attempt()
    assert_unchanged(before, snapshot(admin, fortress))


def test_agent_cannot_create_objects_in_the_engine_schema(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(fortress, fortress.agent)
    before = snapshot(admin, fortress)
    for statement in (
        "CREATE FUNCTION cowsync.is_agent_too() RETURNS boolean LANGUAGE sql AS 'SELECT false'",
        # Overloads that a careless unqualified call could pick up.
        "CREATE FUNCTION cowsync.is_agent(integer) RETURNS boolean LANGUAGE sql AS 'SELECT false'",
        "CREATE OR REPLACE FUNCTION cowsync.is_agent() RETURNS boolean LANGUAGE sql "
        "AS 'SELECT false'",
        "CREATE TABLE cowsync.planted (id int)",
        "CREATE VIEW cowsync.planted AS SELECT 1",
        "CREATE OPERATOR cowsync.=== (leftarg = int, rightarg = int, function = int4eq)",
        "ALTER FUNCTION cowsync.is_agent() SECURITY INVOKER",
        "ALTER FUNCTION cowsync.current_session(text) RESET search_path",
        "ALTER SCHEMA cowsync RENAME TO cowsync_old",
        "DROP SCHEMA cowsync CASCADE",
        "DROP FUNCTION cowsync.is_agent()",
    ):
        refused(agent, statement)
    assert_unchanged(before, snapshot(admin, fortress))


def test_agent_cannot_create_a_trigger_on_engine_tables(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(fortress, fortress.agent)
    agent.execute(
        "CREATE FUNCTION pg_temp.noop() RETURNS trigger LANGUAGE plpgsql "
        "AS 'BEGIN RETURN NULL; END'"
    )
    before = snapshot(admin, fortress)
    for table in ("public.items_base", "public.items_changes", "cowsync.sessions"):
        refused(
            agent,
            f"CREATE TRIGGER planted BEFORE INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION pg_temp.noop()",
        )
    assert_unchanged(before, snapshot(admin, fortress))
