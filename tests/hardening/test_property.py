"""Property: whatever an agent role runs, the bases stay byte for byte the same.

Hypothesis draws sequences of statements from templates (writes through the views, direct
writes, registry writes, role and setting changes, engine function calls), run as the agent
in no session, in its own sessions, with another agent's session id and with malformed ids,
some inside explicit transactions. Errors are expected and ignored; afterwards every base
table, the other agent's session and the ownership of every session are checked.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from tests.hardening._fortress import Fortress, base_checksums, session_checksums

# Short in CI; COWSYNC_FUZZ_EXAMPLES=2000 (say) for a long run of the statement fuzzer.
FUZZ_EXAMPLES = int(os.environ.get("COWSYNC_FUZZ_EXAMPLES", "30"))

# Templates; %s takes the drawn argument (a key, a number, or a session id).
KEYED = (
    "UPDATE items SET qty = qty + 1 WHERE id = %s",
    "UPDATE items SET id = id + 100 WHERE id = %s",
    "DELETE FROM items WHERE id = %s",
    "INSERT INTO items (id, name, qty) VALUES (%s, 'drawn', 1)",
    "INSERT INTO items (id, name) VALUES (%s, 'drawn') ON CONFLICT DO NOTHING",
    "DELETE FROM shop_parent WHERE id = %s",
    "UPDATE shop_child SET parent_id = %s WHERE id = 1",
    "INSERT INTO shop_child (parent_id, note) VALUES (%s, 'drawn')",
    "SELECT * FROM items WHERE id = %s FOR UPDATE",
    "UPDATE items_base SET qty = qty + 1 WHERE id = %s",
    "DELETE FROM items_changes WHERE id = %s",
    "INSERT INTO items_base (id, name) VALUES (%s + 1000, 'direct')",
    "WITH gone AS (DELETE FROM items_base WHERE id = %s RETURNING 1) SELECT count(*) FROM gone",
    "UPDATE shop_parent_base SET name = 'direct' WHERE id = %s",
)
WITH_SESSION_ID = (
    "SELECT set_config('app.session_id', %s, false)",
    "SELECT set_config('app.operation_id', %s, false)",
    "UPDATE items SET name = set_config('app.session_id', %s, true) WHERE id = 1",
    "SELECT cowsync.register_write_checked(%s, 'drawn')",
    "SELECT cowsync.register_write(%s, 'drawn')",
    "SELECT cowsync.prepare_preview(%s, 'victim-op')",
    "SELECT cowsync.drop_previews(%s)",
    "UPDATE cowsync.sessions SET owner_role = current_user WHERE session_id = %s",
    "DELETE FROM cowsync.sessions WHERE session_id = %s",
    "SELECT cowsync.current_session(%s)",
)
PLAIN = (
    "INSERT INTO items (name, qty) VALUES ('drawn', 2)",
    "UPDATE items SET qty = 0",
    "DELETE FROM items",
    "DELETE FROM shop_child",
    "SELECT count(*) FROM items",
    "RESET app.session_id",
    "SET app.session_id = ''",
    "RESET ROLE",
    "SET session_replication_role = replica",
    "TRUNCATE items_base CASCADE",
    "TRUNCATE items_changes",
    "ALTER TABLE items_base DISABLE TRIGGER ALL",
    "ALTER TABLE items DISABLE TRIGGER cowsync_write",
    "DROP VIEW items",
    "DROP TRIGGER cowsync_write ON items",
    "UPDATE cowsync.settings SET value = 'off'",
    "DELETE FROM cowsync.roles",
    "SELECT cowsync.write_1()",
    "SET search_path = pg_temp, public",
    "CREATE TEMP TABLE IF NOT EXISTS items_base (id bigint)",
    "INSERT INTO items (name) SELECT name FROM items",
    "SELECT set_config('app.visible_operations', 'victim-op', false)",
)


def _session_ids(fortress: Fortress) -> st.SearchStrategy[str]:
    return st.sampled_from(
        [
            fortress.agent_session,
            fortress.agent_session,
            fortress.victim_session,
            "",
            "prop-a",
            "prop-b",
            "it's",
            "x" * 300,
            "a;b",
            "tab\there",
            fortress.victim_session + "~preview~0",
        ]
    )


def _steps(fortress: Fortress) -> st.SearchStrategy[list[Any]]:
    session_ids = _session_ids(fortress)
    # Mostly keys that exist (1 to 5 in every table), sometimes ones that do not.
    keys = st.one_of(st.integers(1, 5), st.integers(1, 5), st.integers(0, 9))
    keyed = st.tuples(st.just("keyed"), st.sampled_from(KEYED), keys)
    with_id = st.tuples(st.just("sid"), st.sampled_from(WITH_SESSION_ID), session_ids)
    plain = st.tuples(st.just("plain"), st.sampled_from(PLAIN), st.none())
    one = st.one_of(keyed, keyed, with_id, plain)
    block = st.tuples(st.just("transaction"), st.lists(one, min_size=1, max_size=4), st.booleans())
    return st.lists(st.one_of(one, one, block), min_size=3, max_size=12)


def _run(conn: psycopg.Connection[Any], step: Any) -> None:
    kind, template, argument = step
    try:
        if kind == "transaction":
            with conn.transaction():
                for inner in template:
                    _, statement, value = inner
                    conn.execute(statement, None if value is None else (value,))
                if argument:
                    raise psycopg.Rollback()
        else:
            conn.execute(template, None if argument is None else (argument,))
    except psycopg.Error:
        pass  # refusals are the point; the checks come at the end


def _agent_session_rows(admin: psycopg.Connection[Any], fortress: Fortress) -> int:
    """Change-store rows in sessions the agent owns, over all enabled tables."""
    total = 0
    for (changes,) in admin.execute("SELECT changes_name FROM cowsync.tables").fetchall():
        row = admin.execute(
            sql.SQL(
                "SELECT count(*) FROM ONLY {} WHERE _cow_session IN "
                "(SELECT session_id FROM cowsync.sessions WHERE owner_role = %s)"
            ).format(sql.Identifier("public", changes)),
            (fortress.agent,),
        ).fetchone()
        total += row[0] if row else 0
    return total


def test_random_agent_statements_never_change_a_base(
    fortress: Fortress, admin: psycopg.Connection[Any]
) -> None:
    bases = base_checksums(admin)
    own_rows = _agent_session_rows(admin, fortress)
    victim = session_checksums(admin, fortress.victim_session)
    owners_before = dict(
        admin.execute("SELECT session_id, owner_role FROM cowsync.sessions").fetchall()
    )

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(first_session=_session_ids(fortress), steps=_steps(fortress))
    def run(first_session: str, steps: list[Any]) -> None:
        with fortress.connect_as(fortress.agent) as conn:
            conn.execute("SELECT set_config('app.session_id', %s, false)", (first_session,))
            for step in steps:
                _run(conn, step)
        assert base_checksums(admin) == bases
        assert session_checksums(admin, fortress.victim_session) == victim
        owners = dict(
            admin.execute("SELECT session_id, owner_role FROM cowsync.sessions").fetchall()
        )
        for session_id, owner in owners.items():
            expected = owners_before.get(session_id, fortress.agent)
            assert owner == expected, f"session {session_id} owned by {owner}"

    run()
    # The agent did get work done in its own sessions (the property is not vacuous).
    assert _agent_session_rows(admin, fortress) > own_rows
