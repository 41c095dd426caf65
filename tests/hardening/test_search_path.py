"""Objects the agent puts first on its search_path do not change what the engine runs.

The agent owns a schema holding look-alikes of what the engine calls (``nextval``,
``current_setting``, ``to_jsonb``, ``format``, ``nullif``, ``pg_has_role``, ``=`` for
integers and text), puts it before ``pg_catalog``, and then writes with and without a
session. Writes with no session must still be refused, session writes must land in the
session exactly as without the look-alikes, and the bases must not change.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

import cowsync
from tests.hardening._fortress import (
    Fortress,
    assert_unchanged,
    base_checksums,
    refused,
    session_checksums,
    snapshot,
)

Connect = Callable[[Fortress, str], psycopg.Connection[Any]]

LOOKALIKES = (
    # Every id the engine draws would be 1 (a collision with a base row).
    "CREATE FUNCTION {s}.nextval(regclass) RETURNS bigint LANGUAGE sql AS 'SELECT 1::bigint'",
    # The session variable would read as "no session" (or as someone else's).
    "CREATE FUNCTION {s}.current_setting(text, boolean) RETURNS text LANGUAGE sql AS $$SELECT ''$$",
    "CREATE FUNCTION {s}.current_setting(text) RETURNS text LANGUAGE sql AS $$SELECT ''$$",
    "CREATE FUNCTION {s}.nullif(text, text) RETURNS text LANGUAGE sql AS 'SELECT NULL::text'",
    # The before-image kept for review would be a lie.
    "CREATE FUNCTION {s}.to_jsonb(anyelement) RETURNS jsonb LANGUAGE sql "
    "AS $$SELECT '{{\"forged\": true}}'::jsonb$$",
    "CREATE FUNCTION {s}.format(text, VARIADIC text[]) RETURNS text LANGUAGE sql "
    "AS $$SELECT 'SELECT 1'$$",
    "CREATE FUNCTION {s}.pg_has_role(name, name, text) RETURNS boolean LANGUAGE sql "
    "AS 'SELECT false'",
    "CREATE FUNCTION {s}.set_config(text, text, boolean) RETURNS text LANGUAGE sql "
    "AS $$SELECT ''$$",
    # Key comparisons would match every row.
    "CREATE FUNCTION {s}.always(integer, integer) RETURNS boolean LANGUAGE sql AS 'SELECT true'",
    "CREATE OPERATOR {s}.= (leftarg = integer, rightarg = integer, function = {s}.always)",
    "CREATE FUNCTION {s}.always8(bigint, bigint) RETURNS boolean LANGUAGE sql AS 'SELECT true'",
    "CREATE OPERATOR {s}.= (leftarg = bigint, rightarg = bigint, function = {s}.always8)",
    "CREATE FUNCTION {s}.always_text(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true'",
    "CREATE OPERATOR {s}.= (leftarg = text, rightarg = text, function = {s}.always_text)",
)


@pytest.fixture
def trap_schema(fortress: Fortress, admin: psycopg.Connection[Any]) -> Iterator[str]:
    """A schema the agent owns, full of look-alikes (dropped after the test)."""
    name = "trap_" + secrets.token_hex(4)
    schema = sql.Identifier(name)
    admin.execute(
        sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(schema, sql.Identifier(fortress.agent))
    )
    try:
        with fortress.connect_as(fortress.agent) as agent:
            for statement in LOOKALIKES:
                agent.execute(sql.SQL(statement).format(s=schema))
        yield name
    finally:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(schema))


def _trapped_agent(
    fortress: Fortress, connect_as: Connect, trap_schema: str, temp_first: bool = False
) -> psycopg.Connection[Any]:
    agent = connect_as(fortress, fortress.agent)
    path = [trap_schema, "pg_catalog", "public"]
    if temp_first:
        path.insert(0, "pg_temp")
    agent.execute(
        sql.SQL("SET search_path = {}").format(sql.SQL(", ").join(sql.Identifier(p) for p in path))
    )
    # The look-alikes are really in force for the agent's own statements.
    assert agent.execute("SELECT nextval('items_id_seq')").fetchone() == (1,)
    return agent


def test_lookalikes_do_not_open_writes_with_no_session(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect, trap_schema: str
) -> None:
    agent = _trapped_agent(fortress, connect_as, trap_schema)
    before = snapshot(admin, fortress)
    for write in (
        "INSERT INTO items (name) VALUES ('escaped')",
        "UPDATE items SET qty = 0 WHERE id OPERATOR(pg_catalog.=) 1",
        "DELETE FROM items WHERE id OPERATOR(pg_catalog.=) 2",
        "UPDATE items_base SET qty = 0",
    ):
        refused(agent, write)
    assert_unchanged(before, snapshot(admin, fortress))


def test_lookalikes_do_not_reach_another_session(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect, trap_schema: str
) -> None:
    agent = _trapped_agent(fortress, connect_as, trap_schema)
    agent.execute(
        "SELECT pg_catalog.set_config('app.session_id', %s, false)", (fortress.victim_session,)
    )
    before = snapshot(admin, fortress)
    refused(agent, "SELECT * FROM items")
    refused(agent, "UPDATE items SET qty = 0")
    assert_unchanged(before, snapshot(admin, fortress))


@pytest.mark.parametrize("temp_first", [False, True], ids=["trap-first", "pg_temp-first"])
def test_session_writes_behave_as_without_lookalikes(
    fortress: Fortress,
    admin: psycopg.Connection[Any],
    connect_as: Connect,
    trap_schema: str,
    temp_first: bool,
) -> None:
    agent = _trapped_agent(fortress, connect_as, trap_schema, temp_first)
    # Temporary relations named like the engine's, for a pg_temp-first search_path.
    agent.execute("CREATE TEMP TABLE items_changes (id bigint)")
    agent.execute("CREATE TEMP TABLE items_base (id bigint)")
    session_id = "trap-" + secrets.token_hex(4)
    bases = base_checksums(admin)
    victim = session_checksums(admin, fortress.victim_session)
    next_id = admin.execute("SELECT last_value + 1 FROM items_id_seq").fetchone()
    assert next_id is not None
    # Bound by hand: cowsync.session() itself falls for the look-alike set_config (see
    # test_binding_is_not_fooled_by_a_lookalike_set_config below).
    agent.execute(
        "SELECT pg_catalog.set_config('app.session_id', %s, false), "
        "pg_catalog.set_config('app.operation_id', 'trapped', false)",
        (session_id,),
    )
    (new_id,) = agent.execute(
        "INSERT INTO public.items (name, qty) VALUES ('new', 1) RETURNING id"
    ).fetchone() or (None,)
    agent.execute("UPDATE public.items SET qty = 6 WHERE id OPERATOR(pg_catalog.=) 3")
    agent.execute("DELETE FROM public.items WHERE id OPERATOR(pg_catalog.=) 4")
    # The id came from the real sequence, not from the look-alike nextval.
    assert new_id is not None and new_id >= next_id[0]
    reviewer = connect_as(fortress, fortress.reviewer)
    changes = {(c.key["id"], c.kind): c for c in cowsync.diff(reviewer, session_id)}
    assert set(changes) == {(new_id, "insert"), (3, "update"), (4, "delete")}
    update = changes[(3, "update")]
    assert update.before is not None and "forged" not in update.before
    assert update.before["name"] == "item-3" and update.after is not None
    assert update.after["qty"] == 6 and update.changed == ("qty",)
    owner = admin.execute(
        "SELECT owner_role FROM cowsync.sessions WHERE session_id = %s", (session_id,)
    ).fetchone()
    assert owner == (fortress.agent,)
    assert base_checksums(admin) == bases
    assert session_checksums(admin, fortress.victim_session) == victim
    temp_rows = agent.execute("SELECT count(*) FROM pg_temp.items_changes").fetchone()
    assert temp_rows == (0,)
    cowsync.discard(reviewer, session_id)


def test_binding_is_not_fooled_by_a_lookalike_set_config(
    fortress: Fortress, connect_as: Connect, trap_schema: str
) -> None:
    agent = _trapped_agent(fortress, connect_as, trap_schema)
    with cowsync.session(agent, "bound-" + secrets.token_hex(4)) as bound:
        row = bound.execute("SELECT pg_catalog.current_setting('app.session_id', true)")
        value = (row.fetchone() or (None,))[0] or ""
        assert value.startswith("bound-"), f"bound to {value!r}"


def test_a_pool_does_not_hand_a_session_to_the_next_borrower(
    fortress: Fortress, admin: psycopg.Connection[Any], trap_schema: str
) -> None:
    from cowsync.pool import CowPool

    first = "task-" + secrets.token_hex(4)
    with CowPool(
        fortress.dsn_as(fortress.agent), min_size=1, max_size=1, kwargs={"autocommit": True}
    ) as pool:
        with pool.connection(session_id=first) as conn:
            conn.execute(
                sql.SQL("SET search_path = {}, pg_catalog, public").format(
                    sql.Identifier(trap_schema)
                )
            )
        with pool.connection(session_id=None) as conn:
            row = conn.execute("SELECT pg_catalog.current_setting('app.session_id', true)")
            leaked = (row.fetchone() or ("",))[0]
    assert leaked in ("", None), f"the next borrower got session {leaked!r}"


def test_the_engine_pins_its_search_path(admin: psycopg.Connection[Any]) -> None:
    # Every engine function and trigger fixes its own search_path to pg_catalog, pg_temp
    # (the owner's rights or not: a reviewer calls some with a search_path of its own).
    loose = admin.execute(
        "SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p "
        "WHERE p.pronamespace = 'cowsync'::regnamespace "
        "AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY(p.proconfig), false)"
    ).fetchall()
    assert loose == []
    definers = admin.execute(
        "SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'cowsync'::regnamespace "
        "AND p.prosecdef"
    ).fetchone()
    assert definers is not None and definers[0] >= 5  # is_agent, current_session, 3 triggers
