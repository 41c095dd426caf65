"""Binding puts the overlay schemas first on search_path; unbinding gives the path back.

No engine is needed: ``public_cow.items`` (rows B) stands in for the overlay view of
``public.items`` (rows A). A connection that resolves the unqualified ``items`` to rows B
is looking through the overlay schema.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import cowsync
from cowsync.binding import apply_binding, binding_statement, make_binding, read_settings
from tests._overlay import make_stand_in, saved_path, search_path, seen
from tests.pool._wire import traced


def test_a_session_reads_through_the_overlay_schema_and_its_exit_gives_the_table_back(
    conn: psycopg.Connection[Any],
) -> None:
    make_stand_in(conn)
    before = search_path(conn)
    assert seen(conn) == ["A"]
    with cowsync.session(conn, "s1"):
        assert seen(conn) == ["B"]
        assert search_path(conn) == f"public_cow, {before}"
        assert saved_path(conn) == before
    assert seen(conn) == ["A"]
    assert search_path(conn) == before
    assert saved_path(conn) == ""


def test_the_exit_gives_back_a_custom_search_path_byte_for_byte(
    conn: psycopg.Connection[Any],
) -> None:
    make_stand_in(conn)
    conn.execute('SET search_path TO public, "$user"')
    before = search_path(conn)
    assert before == 'public, "$user"'
    with cowsync.session(conn, "s1"):
        assert search_path(conn) == 'public_cow, public, "$user"'
        assert seen(conn) == ["B"]
    assert search_path(conn) == before
    assert seen(conn) == ["A"]


def test_the_exit_gives_the_path_back_when_the_block_raises(
    conn: psycopg.Connection[Any],
) -> None:
    make_stand_in(conn)
    before = search_path(conn)
    with pytest.raises(psycopg.errors.DivisionByZero), cowsync.session(conn, "s1"):
        assert seen(conn) == ["B"]
        conn.execute("SELECT 1 / 0")
    assert search_path(conn) == before
    assert seen(conn) == ["A"]


def test_a_nested_session_gives_the_outer_binding_back(conn: psycopg.Connection[Any]) -> None:
    make_stand_in(conn)
    # The overlay of the overlay: binding again must start from the unbound path.
    conn.execute("CREATE SCHEMA public_cow_cow")
    before = search_path(conn)
    with cowsync.session(conn, "outer"):
        outer_path = search_path(conn)
        with cowsync.session(conn, "inner"):
            # Binding a bound connection starts from the saved path: no overlay twice.
            assert search_path(conn) == outer_path
            assert saved_path(conn) == before
            assert seen(conn) == ["B"]
        assert read_settings(conn)["app.session_id"] == "outer"
        assert search_path(conn) == outer_path
        assert saved_path(conn) == before
        assert seen(conn) == ["B"]
    assert search_path(conn) == before
    assert saved_path(conn) == ""
    assert seen(conn) == ["A"]


def test_a_rollback_inside_the_block_keeps_the_overlay_path(
    conn: psycopg.Connection[Any],
) -> None:
    make_stand_in(conn)
    with cowsync.session(conn, "s1"):
        with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
            conn.execute("SELECT 1 / 0")
        assert seen(conn) == ["B"]


def test_a_database_without_overlay_schemas_keeps_its_path_while_bound(
    conn: psycopg.Connection[Any],
) -> None:
    make_stand_in(conn, overlay=None)
    # Stored as written (set_config does not normalise it): kept to the byte.
    conn.execute("SELECT set_config('search_path', 'public,\"$user\" ,  pg_catalog', false)")
    before = search_path(conn)
    assert before == 'public,"$user" ,  pg_catalog'
    with cowsync.session(conn, "s1"):
        assert search_path(conn) == before
        assert seen(conn) == ["A"]
    assert search_path(conn) == before


def test_only_overlay_schemas_that_exist_join_the_path_in_path_order(
    conn: psycopg.Connection[Any],
) -> None:
    make_stand_in(conn)
    conn.execute('CREATE SCHEMA "Odd"')
    conn.execute('CREATE SCHEMA "Odd_cow"')
    conn.execute("CREATE SCHEMA lonely")  # no lonely_cow
    conn.execute('SET search_path TO "Odd", lonely, public')
    with cowsync.session(conn, "s1"):
        assert search_path(conn) == '"Odd_cow", public_cow, "Odd", lonely, public'
        assert seen(conn) == ["B"]
    assert search_path(conn) == '"Odd", lonely, public'


def test_overlay_schemas_in_the_config_name_the_overlay(conn: psycopg.Connection[Any]) -> None:
    make_stand_in(conn, overlay="sandbox")
    conn.execute("CREATE SCHEMA public_cow")  # the default name: not used for public
    config = cowsync.CowConfig(overlay_schemas={"public": "sandbox"})
    before = search_path(conn)
    with cowsync.session(conn, "s1", config=config):
        assert search_path(conn) == f"sandbox, {before}"
        assert seen(conn) == ["B"]
    assert search_path(conn) == before


def test_the_overlay_suffix_in_the_config_names_the_overlay(
    conn: psycopg.Connection[Any],
) -> None:
    make_stand_in(conn, overlay="public_sbx")
    config = cowsync.CowConfig(overlay_suffix="_sbx")
    with cowsync.session(conn, "s1", config=config):
        assert seen(conn) == ["B"]


def test_clearing_a_connection_never_bound_leaves_its_path(conn: psycopg.Connection[Any]) -> None:
    make_stand_in(conn)
    conn.execute("SET search_path TO public")
    apply_binding(conn, None)
    assert search_path(conn) == "public"
    assert seen(conn) == ["A"]


def test_a_transaction_local_binding_ends_with_its_transaction(
    conn: psycopg.Connection[Any],
) -> None:
    make_stand_in(conn)
    before = search_path(conn)
    with conn.transaction():
        apply_binding(conn, make_binding("s1"), local=True)
        assert seen(conn) == ["B"]
    assert search_path(conn) == before
    assert saved_path(conn) == ""
    assert seen(conn) == ["A"]


def test_ids_and_schema_names_travel_as_parameters(conn: psycopg.Connection[Any]) -> None:
    make_stand_in(conn, overlay="sandbox")
    config = cowsync.CowConfig(overlay_schemas={"public": "sandbox"}, overlay_suffix="_zq")
    with traced(conn) as wire, cowsync.session(conn, "sess-zq42", "op-zq42", config=config):
        assert seen(conn) == ["B"]
    texts = [text for text in wire.queries if "set_config" in text]
    assert texts, "no binding statement was sent"
    for secret in ("sess-zq42", "op-zq42", "sandbox", "_zq"):
        assert not any(secret in text for text in texts), secret
    assert any("Bind" in m and "sandbox" in m for m in wire.messages)


def test_the_binding_statement_keeps_its_text_whatever_the_session() -> None:
    config = cowsync.CowConfig(overlay_schemas={"public": "sandbox"})
    first, _ = binding_statement(make_binding("s1"), config)
    second, params = binding_statement(make_binding("s2", "op"), cowsync.CowConfig())
    assert first == second
    assert "s2" in params and "op" in params
