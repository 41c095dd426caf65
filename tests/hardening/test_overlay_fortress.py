"""Hardening in overlay mode: agents reach only the overlay views.

The tables stay where they are (production uses them directly); the fortress's agents
get no privilege on them, on their change stores or on the parents the views scan, so
schema-qualified SQL fails closed, and the views work in a session as in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import cowsync
from tests import _pg
from tests.hardening._fortress import (
    INSUFFICIENT_PRIVILEGE,
    Fortress,
    RoleFactory,
    base_checksums,
    build_fortress,
    session_checksums,
)

OVERLAY_PATH = "SET search_path TO public_cow, public"


@pytest.fixture(scope="module")
def overlay_fortress(pg_admin_dsn: str, pg_databases: _pg.TestDatabases) -> Iterator[Fortress]:
    name = pg_databases.create_database()
    dsn = pg_databases.dsn_for(name)
    roles = RoleFactory(pg_admin_dsn, dsn)
    try:
        with psycopg.connect(dsn, autocommit=True) as admin:
            fortress = build_fortress(admin, dsn, roles, mode="overlay")
        yield fortress
    finally:
        roles.drop_all()
        pg_databases.drop_database(name)


@pytest.fixture
def overlay_admin(overlay_fortress: Fortress) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(overlay_fortress.dsn, autocommit=True) as conn:
        yield conn


def _agent(fortress: Fortress) -> psycopg.Connection[Any]:
    conn = fortress.connect_as(fortress.agent)
    conn.execute(OVERLAY_PATH)
    return conn


def test_the_overlay_fortress_passes_its_own_check(overlay_admin):
    assert cowsync.check_hardening(overlay_admin) == []
    modes = {r[0] for r in overlay_admin.execute("SELECT mode FROM cowsync.tables")}
    assert modes == {"overlay"}


def test_an_agent_works_in_its_session_through_the_overlay_view(overlay_fortress, overlay_admin):
    with _agent(overlay_fortress) as conn, cowsync.session(conn, overlay_fortress.agent_session):
        rows = dict(conn.execute("SELECT id, name FROM items ORDER BY id").fetchall())
        conn.execute("UPDATE items SET qty = qty + 1 WHERE id = 3")
        locked = conn.execute("SELECT id FROM items WHERE id = 3 FOR UPDATE").fetchall()

    assert rows[1] != "victim secret"  # the other agent's session stays invisible
    assert locked == [(3,)]
    assert any(
        c.key == {"id": 3} for c in cowsync.diff(overlay_admin, overlay_fortress.agent_session)
    )


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM public.items",
        "UPDATE public.items SET qty = 0",
        "INSERT INTO public.items (name) VALUES ('x')",
        "DELETE FROM public.items",
        "TRUNCATE public.items",
        "SELECT * FROM public_cow.items_changes",
        "SELECT * FROM public_cow.items_parent",
        "UPDATE public_cow.items_parent SET qty = 0",
        "LOCK TABLE items IN ACCESS EXCLUSIVE MODE",
    ],
)
def test_an_agent_cannot_reach_the_table_or_the_stores_behind_the_view(
    overlay_fortress, overlay_admin, statement
):
    before = (
        base_checksums(overlay_admin),
        session_checksums(overlay_admin, overlay_fortress.victim_session),
    )
    with _agent(overlay_fortress) as conn:
        conn.autocommit = False
        with (
            cowsync.session(conn, overlay_fortress.agent_session),
            pytest.raises(psycopg.Error) as refused,
        ):
            conn.execute(statement)
        conn.rollback()

    assert refused.value.sqlstate == INSUFFICIENT_PRIVILEGE
    assert before == (
        base_checksums(overlay_admin),
        session_checksums(overlay_admin, overlay_fortress.victim_session),
    )


def test_production_keeps_using_the_table_and_the_reviewer_commits(overlay_fortress):
    with overlay_fortress.connect_as(overlay_fortress.production) as prod:
        prod.execute("UPDATE items SET qty = 40 WHERE id = 4")
        assert prod.execute("SELECT qty FROM public.items WHERE id = 4").fetchone() == (40,)
    with overlay_fortress.connect_as(overlay_fortress.reviewer) as reviewer:
        looked = cowsync.review(reviewer, overlay_fortress.agent_session)
        assert looked.changes
