"""An agent that may CREATE in the tables' schema cannot make anyone else run its code.

PostgreSQL 14 and older let PUBLIC create objects in schema ``public`` (and pg_upgrade keeps
that). An agent there can plant look-alikes of what the engine calls: functions and
operators whose argument types match a call better than ``pg_catalog``'s (a function of the
table's row type beats ``to_jsonb(anyelement)``, one of ``text`` beats ``nextval(regclass)``
for a quoted literal). Code that found them on its ``search_path`` would run them with its
own rights: the triggers as the table owner, the review API as the reviewer.

Here the agent plants such look-alikes of every function and operator the engine's SQL
calls, in ``public`` and in ``pg_temp``, each counting its calls in a sequence (which no
rollback undoes). Then the agent writes in its session, production writes with no session,
and the reviewer reviews, previews, seals, commits and discards, each with its default
``search_path``. None of the planted code may run, and the bases must hold exactly what
those writes and commits put there.

``harden`` refuses to fence agents in while they can create objects in an enabled table's
schema or in ``cowsync`` (tests at the end), unless told to allow it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

import cowsync
from tests.hardening._fortress import Fortress, base_checksums

Connect = Callable[[Fortress, str], psycopg.Connection[Any]]

LOG = "public.planted_log"
CALLS = "public.planted_calls"

# (name, argument types, return type, value returned). Each signature is one the engine's
# SQL would pick over pg_catalog's if it were found first or matched better: row types of
# the enabled tables, text for quoted literals, integer for integer literals.
VIEW_ROW_TYPES = ("public.items", "public.shop_parent", "public.shop_child")
TABLE_ROW_TYPES = (
    "public.items_base",
    "public.items_changes",
    "public.shop_parent_base",
    "public.shop_child_base",
)


def _row_type_functions(row_types: tuple[str, ...]) -> list[tuple[str, str, str, str]]:
    return [
        *[
            (f, row, "jsonb", "'{}'::jsonb")
            for f in ("to_jsonb", "row_to_json")
            for row in row_types
        ],
        *[("jsonb_populate_record", f"{row}, jsonb", row, "NULL") for row in row_types],
    ]


FUNCTIONS: list[tuple[str, str, str, str]] = [
    *[("format", ", ".join(["text"] * n), "text", "'SELECT 1'") for n in (1, 2, 3, 4, 5)],
    ("format", "text, bigint", "text", "'x'"),
    ("format", "text, integer", "text", "'x'"),
    *[("concat_ws", ", ".join(["text"] * n), "text", "'x'") for n in (2, 3, 4)],
    ("concat_ws", "text, bigint", "text", "'x'"),
    ("concat_ws", "text, integer", "text", "'x'"),
    ("concat", "text, text", "text", "'x'"),
    ("nextval", "text", "bigint", "1"),
    ("nextval", "regclass", "bigint", "1"),
    ("currval", "text", "bigint", "1"),
    ("setval", "text, bigint", "bigint", "1"),
    ("set_config", "text, text, boolean", "text", "''"),
    ("current_setting", "text, boolean", "text", "''"),
    ("current_setting", "text", "text", "''"),
    ("nullif", "text, text", "text", "NULL"),
    ("coalesce", "text, text", "text", "NULL"),
    ("hashtext", "text", "integer", "1"),
    ("hashtextextended", "text, integer", "bigint", "1"),
    ("hashtextextended", "text, bigint", "bigint", "1"),
    ("pg_advisory_xact_lock", "integer", "void", "NULL"),
    ("pg_advisory_xact_lock", "bigint", "void", "NULL"),
    ("pg_try_advisory_xact_lock", "bigint", "boolean", "true"),
    ("pg_try_advisory_xact_lock", "integer", "boolean", "true"),
    ("pg_has_role", "name, text, text", "boolean", "false"),
    ("pg_has_role", "name, name, text", "boolean", "false"),
    ("clock_timestamp", "", "timestamptz", "now()"),
    ("current_query", "", "text", "''"),
    ("num_nulls", "integer", "integer", "0"),
    ("strpos", "text, text", "integer", "0"),
    ("length", "text", "integer", "1"),
    ("md5", "text", "text", "''"),
    ("lower", "text", "text", "''"),
    ("left", "text, integer", "text", "''"),
    ("btrim", "text, text", "text", "''"),
    ("replace", "text, text, text", "text", "''"),
    ("substr", "text, integer, integer", "text", "''"),
    ("regexp_replace", "text, text, text, text", "text", "''"),
    ("regexp_replace", "text, text, text", "text", "''"),
    ("regexp_match", "text, text, text", "text[]", "NULL"),
    ("regexp_match", "text, text", "text[]", "NULL"),
    ("string_to_array", "text, text", "text[]", "NULL"),
    ("quote_ident", "text", "text", "''"),
    ("jsonb_each", "jsonb", "SETOF record", "NULL"),
    ("jsonb_build_object", "text, text", "jsonb", "'{}'::jsonb"),
    ("pg_xact_status", "xid8", "text", "'in progress'"),
    ("pg_current_xact_id_if_assigned", "", "xid8", "NULL"),
    ("pg_try_advisory_lock", "bigint", "boolean", "true"),
    ("sha256", "bytea", "bytea", "NULL"),
    ("encode", "bytea, text", "text", "''"),
    ("convert_to", "text, text", "bytea", "NULL"),
    ("now", "", "timestamptz", "'epoch'"),
    ("array_position", "text[], text", "integer", "1"),
    ("unnest", "text[]", "SETOF text", "NULL"),
]
# Operators: (name, left, right). Identical signatures to pg_catalog's included, for a
# search_path that lists the planted schema before pg_catalog.
OPERATORS: list[tuple[str, str, str]] = [
    *[
        (op, t, t)
        for op in ("=", "<>")
        for t in ("integer", "bigint", "text", "jsonb", "boolean", "oid", "numeric", "xid")
    ],
    ("=", "integer", "bigint"),
    ("=", "bigint", "integer"),
    ("=", "text", "name"),
    ("=", "name", "text"),
    ("||", "text", "text"),
    ("||", "bytea", "bytea"),
    ("->", "jsonb", "text"),
    ("->>", "jsonb", "text"),
    ("-", "jsonb", "text[]"),
    ("~", "text", "text"),
    ("~*", "text", "text"),
    ("!~", "text", "text"),
    ("&", "bigint", "bigint"),
    ("<", "xid8", "xid8"),
    (">", "bigint", "bigint"),
    ("+", "bigint", "bigint"),
]


def _counting_body(label: str, value: str, bare_return: bool = False) -> str:
    """A PL/pgSQL body that counts the call (in a sequence: no rollback undoes it), logs
    who ran it, tries to rewrite production, and returns ``value``."""
    result = "RETURN;" if bare_return else f"RETURN {value};"
    quoted = label.replace("'", "''")
    return (
        "BEGIN\n"
        f"    PERFORM pg_catalog.nextval('{CALLS}'::pg_catalog.regclass);\n"
        f"    INSERT INTO {LOG} VALUES ('{quoted}', current_user::text);\n"
        "    BEGIN\n"
        "        UPDATE public.items_base SET name = 'planted' WHERE true;\n"
        "    EXCEPTION WHEN OTHERS THEN NULL;\n"
        "    END;\n"
        f"    {result}\n"
        "END"
    )


def _plant(
    agent: psycopg.Connection[Any], schema: str, row_types: tuple[str, ...] = TABLE_ROW_TYPES
) -> int:
    """Create every look-alike in ``schema`` as the agent; returns how many were made.

    Look-alikes of the views' row types depend on the views: the owner could not drop
    and recreate them (harden, alter) while they exist.
    """
    made = 0
    for name, args, returns, value in FUNCTIONS + _row_type_functions(row_types):
        label = f"{schema}.{name}({args})"
        body = _counting_body(label, value, returns.startswith("SETOF") or returns == "void")
        statement = (
            f"CREATE FUNCTION {schema}.{name}({args}) RETURNS {returns} "
            f"LANGUAGE plpgsql AS $planted${body}$planted$"
        )
        agent.execute(statement)
        made += 1
    row_operators = [(op, row, row) for op in ("=", "<>") for row in row_types]
    for i, (op, left, right) in enumerate(OPERATORS + row_operators):
        function = f"{schema}.planted_op_{i}"
        label = f"{schema}.{op}({left}, {right})"
        body = _counting_body(
            label, "true" if op in ("=", "<>", "~", "~*", "!~", "<", ">") else "NULL"
        )
        returns = (
            "boolean"
            if op in ("=", "<>", "~", "~*", "!~", "<", ">")
            else {"||": left, "->": "jsonb", "->>": "text", "-": "jsonb"}.get(op, left)
        )
        agent.execute(
            f"CREATE FUNCTION {function}({left}, {right}) RETURNS {returns} "
            f"LANGUAGE plpgsql AS $planted${body}$planted$"
        )
        agent.execute(
            f"CREATE OPERATOR {schema}.{op} (LEFTARG = {left}, RIGHTARG = {right}, "
            f"FUNCTION = {function})"
        )
        made += 1
    # jsonb_build_object(...) with the exact argument types of each table's row image.
    for table in ("items_base", "shop_parent_base", "shop_child_base"):
        types = [
            r[0]
            for r in agent.execute(
                "SELECT pg_catalog.format_type(a.atttypid, NULL) FROM pg_catalog.pg_attribute a "
                "WHERE a.attrelid = pg_catalog.to_regclass(%s) AND a.attnum > 0 "
                "AND NOT a.attisdropped ORDER BY a.attnum",
                (f"public.{table}",),
            )
        ]
        args = ", ".join(f"text, {t}" for t in types)
        body = _counting_body(f"{schema}.jsonb_build_object({args})", "'{}'::jsonb")
        agent.execute(
            f"CREATE FUNCTION {schema}.jsonb_build_object({args}) RETURNS jsonb "
            f"LANGUAGE plpgsql AS $planted${body}$planted$"
        )
        made += 1
    return made


def _open_schema(fortress: Fortress, admin: psycopg.Connection[Any], views_too: bool) -> None:
    """``public`` as PostgreSQL 14 made it (PUBLIC may CREATE), with the agent's look-alikes."""
    admin.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    with fortress.connect_as(fortress.agent) as agent:
        agent.execute(f"CREATE SEQUENCE {CALLS}")
        agent.execute(f"CREATE TABLE {LOG} (planted text, run_by text)")
        agent.execute(f"GRANT USAGE, SELECT, UPDATE ON SEQUENCE {CALLS} TO PUBLIC")
        agent.execute(f"GRANT INSERT, SELECT ON {LOG} TO PUBLIC")
        _plant(agent, "public", TABLE_ROW_TYPES + (VIEW_ROW_TYPES if views_too else ()))
        # The look-alikes are in force for anyone who has public on the search_path.
        agent.execute("SELECT nextval('public.items_id_seq')")
        assert _calls(admin)[0] == 1
        agent.execute("SELECT pg_catalog.setval(%s, 1, false)", (CALLS,))
        agent.execute(f"DELETE FROM {LOG}")


@pytest.fixture
def open_schema(fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any]) -> Iterator[None]:
    _open_schema(fresh_fortress, fresh_admin, views_too=True)
    yield


def _calls(admin: psycopg.Connection[Any]) -> tuple[int, list[tuple[str, str]]]:
    row = admin.execute(f"SELECT last_value, is_called FROM {CALLS}").fetchone()
    assert row is not None
    log = [(r[0], r[1]) for r in admin.execute(f"SELECT * FROM {LOG} ORDER BY 1")]
    return (row[0] if row[1] else 0), log


def _assert_nothing_planted_ran(admin: psycopg.Connection[Any], step: str) -> None:
    count, log = _calls(admin)
    assert count == 0, f"{step}: planted code ran {count} time(s): {log}"


def _trapped_agent(
    fortress: Fortress, connect_as: Connect, pg_temp_first: bool
) -> psycopg.Connection[Any]:
    """The agent's connection, its own look-alikes also in pg_temp, on its search_path."""
    agent = connect_as(fortress, fortress.agent)
    _plant(agent, "pg_temp", TABLE_ROW_TYPES + VIEW_ROW_TYPES)
    agent.execute(
        "SET search_path = pg_temp, public, pg_catalog"
        if pg_temp_first
        else "SET search_path = public, pg_catalog, pg_temp"
    )
    return agent


@pytest.mark.parametrize("pg_temp_first", [False, True], ids=["public-first", "pg_temp-first"])
def test_planted_lookalikes_never_run(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    connect_as: Connect,
    open_schema: None,
    pg_temp_first: bool,
) -> None:
    fortress = fresh_fortress
    admin = fresh_admin
    agent = _trapped_agent(fortress, connect_as, pg_temp_first)
    session = "planted-" + secrets.token_hex(4)

    # The agent writes in its session: insert, first-touch update, delete, key change,
    # a child and its parent (foreign-key checks), ON CONFLICT DO NOTHING.
    agent.execute(
        "SELECT pg_catalog.set_config('app.session_id', %s, false), "
        "pg_catalog.set_config('app.operation_id', 'op-1', false)",
        (session,),
    )
    agent.execute("INSERT INTO public.items (name, qty) VALUES ('agent new', 3) RETURNING id")
    agent.execute("UPDATE public.items SET qty = 6 WHERE id OPERATOR(pg_catalog.=) 3")
    agent.execute("DELETE FROM public.items WHERE id OPERATOR(pg_catalog.=) 4")
    agent.execute("INSERT INTO public.shop_parent (name) VALUES ('agent parent')")
    agent.execute(
        "INSERT INTO public.shop_child (parent_id, note) "
        "SELECT id, 'agent child' FROM public.shop_parent WHERE name OPERATOR(pg_catalog.=) "
        "'agent parent'"
    )
    agent.execute("INSERT INTO public.items (id, name) VALUES (1, 'dup') ON CONFLICT DO NOTHING")
    agent.execute("DELETE FROM public.shop_parent WHERE id OPERATOR(pg_catalog.=) 1")
    agent.execute("SELECT pg_catalog.set_config('app.operation_id', 'op-2', false)")
    agent.execute("UPDATE public.items SET id = 40 WHERE id OPERATOR(pg_catalog.=) 5")
    _assert_nothing_planted_ran(admin, "agent session writes")

    # Production writes with no session, with public on its search_path.
    production = connect_as(fortress, fortress.production)
    production.execute("INSERT INTO items (name) VALUES ('production new')")
    production.execute("INSERT INTO items (id, name) VALUES (2, 'dup') ON CONFLICT DO NOTHING")
    production.execute("UPDATE items SET qty = 0 WHERE id = 1")
    production.execute("DELETE FROM shop_child WHERE id = 3")
    production.execute("UPDATE shop_parent SET name = 'renamed' WHERE id = 2")
    _assert_nothing_planted_ran(admin, "production writes")

    # The reviewer reviews, previews, seals, commits part and all, and discards.
    reviewer = connect_as(fortress, fortress.reviewer)
    assert session in {s.session_id for s in cowsync.sessions(reviewer)}
    assert [o.operation_id for o in cowsync.operations(reviewer, session)] == ["op-1", "op-2"]
    cowsync.dependencies(reviewer, session)
    changes = cowsync.diff(reviewer, session)
    kinds = sorted((c.table, c.kind) for c in changes)
    assert ("public.items", "update") in kinds and ("public.items", "delete") in kinds
    with cowsync.session(reviewer, session, visible_operations=["op-1"]):
        reviewer.execute("SELECT count(*) FROM items").fetchone()
    cowsync.seal(reviewer, session)
    cowsync.unseal(reviewer, session)
    _assert_nothing_planted_ran(admin, "review")
    cowsync.commit(reviewer, session, operations=["op-2"])
    review = cowsync.review(reviewer, session)
    cowsync.commit(reviewer, session, reviewed=review.token)
    cowsync.discard(reviewer, fortress.victim_session)
    cowsync.commit(reviewer, fortress.agent_session)
    cowsync.status(admin)
    _assert_nothing_planted_ran(admin, "commit, discard and status")

    items = admin.execute("SELECT id, name, qty FROM ONLY items_base ORDER BY id").fetchall()
    assert items == [
        (1, "item-1", 0),
        (2, "item-2", 3),
        (3, "item-3", 6),
        (6, "agent new", 3),
        (7, "production new", 0),
        (40, "item-5", 5),
    ], items
    parents = admin.execute("SELECT name FROM ONLY shop_parent_base ORDER BY id").fetchall()
    assert parents == [("renamed",), ("parent-3",), ("agent parent",)]
    children = admin.execute("SELECT note FROM ONLY shop_child_base ORDER BY id").fetchall()
    assert children == [("child-2",), ("agent child",)]


def test_installing_binds_nothing_planted(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    """The owner rebuilds views and triggers (harden, enable, alter) with public on its
    search_path: nothing it parses or runs picks a look-alike, now or when they run."""
    _open_schema(fresh_fortress, fresh_admin, views_too=False)
    agents = [fresh_fortress.agent, fresh_fortress.other_agent]
    cowsync.harden(
        fresh_admin,
        agent_roles=agents,
        reviewer_roles=[fresh_fortress.reviewer],
        allow_schema_create=True,
    )
    fresh_admin.execute("CREATE TABLE public.later (id bigserial PRIMARY KEY, note text)")
    cowsync.enable(fresh_admin, "later")
    cowsync.alter(fresh_admin, "items", "ADD COLUMN note text")
    cowsync.refresh(fresh_admin, "shop_child")
    _assert_nothing_planted_ran(fresh_admin, "harden, enable, alter")
    fresh_admin.execute("GRANT ALL ON public.later TO PUBLIC")
    fresh_admin.execute("GRANT USAGE ON SEQUENCE public.later_id_seq TO PUBLIC")
    agent = _trapped_agent(fresh_fortress, connect_as, pg_temp_first=False)
    with cowsync.session(agent, "rebuilt-" + secrets.token_hex(4)):
        agent.execute("UPDATE public.items SET note = 'n' WHERE id OPERATOR(pg_catalog.=) 1")
        agent.execute("DELETE FROM public.shop_child WHERE id OPERATOR(pg_catalog.=) 1")
    production = connect_as(fresh_fortress, fresh_fortress.production)
    production.execute("UPDATE items SET note = 'p' WHERE id = 2")
    production.execute("INSERT INTO later (note) VALUES ('x')")
    _assert_nothing_planted_ran(fresh_admin, "writes after the rebuild")


def test_harden_refuses_a_schema_agents_can_create_in(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any]
) -> None:
    fresh_admin.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    before = base_checksums(fresh_admin)
    with pytest.raises(cowsync.ConfigurationError) as refused:
        cowsync.harden(
            fresh_admin,
            agent_roles=[fresh_fortress.agent, fresh_fortress.other_agent],
            reviewer_roles=[fresh_fortress.reviewer],
        )
    message = str(refused.value)
    assert "schema public" in message
    assert 'REVOKE CREATE ON SCHEMA "public" FROM PUBLIC' in message
    assert "allow_schema_create=True" in message
    assert base_checksums(fresh_admin) == before


def test_harden_refuses_an_agent_that_can_create_in_the_engine_schema(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any]
) -> None:
    agent = sql.Identifier(fresh_fortress.agent)
    fresh_admin.execute(sql.SQL("GRANT CREATE ON SCHEMA cowsync TO {}").format(agent))
    with pytest.raises(cowsync.ConfigurationError) as refused:
        cowsync.harden(
            fresh_admin,
            agent_roles=[fresh_fortress.agent],
            reviewer_roles=[fresh_fortress.reviewer],
        )
    assert "schema cowsync" in str(refused.value)
    assert f'REVOKE CREATE ON SCHEMA "cowsync" FROM {agent.as_string(fresh_admin)}' in str(
        refused.value
    )


def test_harden_refuses_a_new_agent_that_can_create_in_the_schema(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], make_fresh_role: Any
) -> None:
    newcomer = make_fresh_role("agent")
    fresh_admin.execute(
        sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(newcomer))
    )
    with pytest.raises(cowsync.ConfigurationError, match="schema public"):
        cowsync.harden(fresh_admin, agent_roles=[newcomer])
    registered = fresh_admin.execute(
        "SELECT count(*) FROM cowsync.roles WHERE role_name = %s", (newcomer,)
    ).fetchone()
    assert registered == (0,)  # refused before anything changed


def test_harden_goes_ahead_when_told_to_and_still_reports_it(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any]
) -> None:
    fresh_admin.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    issues = cowsync.harden(
        fresh_admin,
        agent_roles=[fresh_fortress.agent, fresh_fortress.other_agent],
        reviewer_roles=[fresh_fortress.reviewer],
        allow_schema_create=True,
    )
    assert {i.role for i in issues} == {fresh_fortress.agent, fresh_fortress.other_agent}
    assert all(i.problem == "can create objects in schema public" for i in issues), issues
    assert {i.fix for i in issues} == {'REVOKE CREATE ON SCHEMA "public" FROM PUBLIC'}
    fresh_admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    assert cowsync.check_hardening(fresh_admin) == []
