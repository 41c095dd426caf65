"""Overlay mode: the table stays as it is; the view lives in an overlay schema.

Sessions reach the view through the search_path (here set by hand, so these tests do
not depend on how bindings set it): ``SET search_path TO public_cow, public``.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import cowsync
from tests._catalog import catalog_snapshot
from tests.engine.conftest import assert_same_catalog

OVERLAY_PATH = "SET search_path TO public_cow, public"


@pytest.fixture
def items(cow: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    cow.execute(
        """
        CREATE TABLE items (
            id serial PRIMARY KEY,
            name text NOT NULL UNIQUE,
            qty int NOT NULL DEFAULT 0 CONSTRAINT qty_positive CHECK (qty >= 0)
        );
        INSERT INTO items (name, qty) VALUES ('apple', 1), ('pear', 2);
        """
    )
    return cow


def rows(conn: psycopg.Connection[Any], relation: str = "items") -> list[tuple[Any, ...]]:
    return conn.execute(f"SELECT * FROM {relation} ORDER BY id").fetchall()


def in_session(conn: psycopg.Connection[Any], session_id: str, statement: str) -> Any:
    conn.execute(OVERLAY_PATH)
    try:
        with cowsync.session(conn, session_id):
            return conn.execute(statement)
    finally:
        conn.execute("SET search_path TO public")


def test_enable_leaves_the_table_where_it_is(items):
    oid = items.execute("SELECT 'public.items'::regclass::oid").fetchone()[0]

    status = cowsync.enable(items, "items", mode="overlay")

    assert (status.mode, status.base, status.changes) == ("overlay", "items", "items_changes")
    assert items.execute("SELECT 'public.items'::regclass::oid").fetchone()[0] == oid
    assert items.execute("SELECT relkind FROM pg_class WHERE oid = %s", [oid]).fetchone() == ("r",)
    # No row trigger on the table: production pays one statement-level guard at most.
    triggers = items.execute(
        "SELECT tgname, (tgtype & 1) = 1 FROM pg_trigger WHERE tgrelid = %s AND NOT tgisinternal",
        [oid],
    ).fetchall()
    assert triggers == [("cowsync_bound_guard", False)]
    # Unbound statements skip the guard's function (its WHEN clause): production pays
    # the clause, not a PL/pgSQL call.
    definition = items.execute(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'cowsync_bound_guard'"
    ).fetchone()[0]
    assert "WHEN ((current_setting('app.session_id'::text, true) <> ''::text))" in definition
    kinds = dict(
        items.execute(
            "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = 'public_cow' AND c.relkind IN ('r', 'v')"
        ).fetchall()
    )
    assert kinds == {"items": "v", "items_changes": "r", "items_parent": "r"}


def test_production_reads_the_table_with_its_own_plan(items):
    items.execute("ANALYZE items")
    before = items.execute("EXPLAIN (COSTS OFF) SELECT * FROM items WHERE id = 1").fetchall()
    cowsync.enable(items, "items", mode="overlay")
    in_session(items, "s1", "UPDATE items SET qty = 7 WHERE id = 1")

    after = items.execute("EXPLAIN (COSTS OFF) SELECT * FROM items WHERE id = 1").fetchall()

    assert after == before
    assert rows(items) == [(1, "apple", 1), (2, "pear", 2)]


def test_a_session_sees_its_writes_and_production_and_other_sessions_do_not(items):
    cowsync.enable(items, "items", mode="overlay")

    in_session(items, "s1", "UPDATE items SET qty = 5 WHERE id = 1")
    in_session(items, "s1", "INSERT INTO items (name) VALUES ('plum')")
    in_session(items, "s1", "DELETE FROM items WHERE id = 2")

    assert in_session(items, "s1", "SELECT * FROM items ORDER BY id").fetchall() == [
        (1, "apple", 5),
        (3, "plum", 0),
    ]
    assert in_session(items, "s2", "SELECT * FROM items ORDER BY id").fetchall() == [
        (1, "apple", 1),
        (2, "pear", 2),
    ]
    assert rows(items) == [(1, "apple", 1), (2, "pear", 2)]
    # Unbound, the overlay view shows production too.
    items.execute(OVERLAY_PATH)
    assert rows(items) == [(1, "apple", 1), (2, "pear", 2)]


def test_constraints_hold_in_a_session_as_on_the_table(items):
    cowsync.enable(items, "items", mode="overlay")

    with pytest.raises(psycopg.errors.CheckViolation) as check:
        in_session(items, "s1", "UPDATE items SET qty = -1 WHERE id = 1")
    with pytest.raises(psycopg.errors.UniqueViolation):
        in_session(items, "s1", "INSERT INTO items (name) VALUES ('apple')")
    with pytest.raises(psycopg.errors.NotNullViolation):
        in_session(items, "s1", "INSERT INTO items (name) VALUES (NULL)")

    assert check.value.diag.constraint_name == "qty_positive"


def test_a_bound_connection_cannot_write_the_table_even_schema_qualified(items):
    cowsync.enable(items, "items", mode="overlay")

    for statement in (
        "UPDATE public.items SET qty = 9",
        "INSERT INTO public.items (name) VALUES ('fig')",
        "DELETE FROM public.items",
        "TRUNCATE public.items",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="bound to a session"):
            in_session(items, "s1", statement)

    assert rows(items) == [(1, "apple", 1), (2, "pear", 2)]
    # Schema-qualified reads show production (documented).
    in_session(items, "s1", "UPDATE items SET qty = 3 WHERE id = 1")
    assert in_session(items, "s1", "SELECT qty FROM public.items WHERE id = 1").fetchone() == (1,)


def test_production_writes_the_table_directly_while_sessions_work(items):
    cowsync.enable(items, "items", mode="overlay")
    in_session(items, "s1", "UPDATE items SET qty = 5 WHERE id = 1")

    items.execute("UPDATE items SET qty = 8 WHERE id = 2")
    items.execute("INSERT INTO items (name) VALUES ('fig')")

    assert rows(items) == [(1, "apple", 1), (2, "pear", 8), (3, "fig", 0)]
    assert in_session(items, "s1", "SELECT * FROM items ORDER BY id").fetchall() == [
        (1, "apple", 5),
        (2, "pear", 8),
        (3, "fig", 0),
    ]


def test_select_for_update_works_through_the_view_in_a_session(items):
    cowsync.enable(items, "items", mode="overlay")
    in_session(items, "s1", "UPDATE items SET qty = 5 WHERE id = 1")

    locked = in_session(items, "s1", "SELECT * FROM items WHERE id = 1 FOR UPDATE").fetchall()

    assert locked == [(1, "apple", 5)]


def test_review_commit_and_conflicts_work_as_in_place(items):
    cowsync.enable(items, "items", mode="overlay")
    in_session(items, "s1", "UPDATE items SET qty = 5 WHERE id = 1")
    in_session(items, "s1", "UPDATE items SET qty = 6 WHERE id = 2")
    items.execute("UPDATE items SET qty = 9 WHERE id = 2")  # production moved on

    looked = cowsync.review(items, "s1")
    assert sorted((c.key["id"], c.before["qty"], c.after["qty"]) for c in looked.changes) == [
        (1, 1, 5),
        (2, 2, 6),
    ]
    with pytest.raises(cowsync.ConflictError) as conflict:
        cowsync.commit(items, "s1", reviewed=looked.token)
    assert [c.key for c in conflict.value.conflicts] == [{"id": 2}]

    result = cowsync.commit(items, "s1", reviewed=looked.token, on_conflict="skip")

    assert result.total == 1
    assert rows(items) == [(1, "apple", 5), (2, "pear", 9)]
    assert cowsync.diff(items, "s1") == []


def test_a_commit_from_a_bound_connection_writes_the_table(items):
    cowsync.enable(items, "items", mode="overlay")
    in_session(items, "s1", "UPDATE items SET qty = 5 WHERE id = 1")

    with cowsync.session(items, "s1"):
        cowsync.commit(items, "s1")

    assert rows(items)[0] == (1, "apple", 5)


def test_discard_never_touches_the_table(items):
    cowsync.enable(items, "items", mode="overlay")
    in_session(items, "s1", "DELETE FROM items")

    cowsync.discard(items, "s1")

    assert rows(items) == [(1, "apple", 1), (2, "pear", 2)]
    assert in_session(items, "s1", "SELECT count(*) FROM items").fetchone() == (2,)


def test_disable_gives_the_table_back_exactly_and_drops_the_overlay(items):
    before = catalog_snapshot(items, schema=None)
    cowsync.enable(items, "items", mode="overlay")
    in_session(items, "s1", "UPDATE items SET qty = 5 WHERE id = 1")

    with pytest.raises(cowsync.PendingChangesError):
        cowsync.disable(items, "items")
    cowsync.disable(items, "items", force=True)

    assert_same_catalog(before, catalog_snapshot(items, schema=None))
    assert items.execute("SELECT count(*) FROM pg_inherits").fetchone() == (0,)
    assert items.execute(
        "SELECT count(*) FROM pg_namespace WHERE nspname = 'public_cow'"
    ).fetchone() == (0,)
    assert cowsync.status(items) == []


def test_enable_is_idempotent_and_refuses_another_mode(items):
    first = cowsync.enable(items, "items", mode="overlay")
    assert cowsync.enable(items, "items", mode="overlay") == first
    with pytest.raises(cowsync.ConfigurationError, match="already enabled in overlay mode"):
        cowsync.enable(items, "items", mode="in-place")


def test_bad_modes_and_schemas_are_refused(items):
    with pytest.raises(cowsync.ConfigurationError, match="mode must be"):
        cowsync.enable(items, "items", mode="sideways")  # type: ignore[arg-type]
    with pytest.raises(cowsync.ConfigurationError, match="only to mode='overlay'"):
        cowsync.enable(items, "items", mode="in-place", overlay_schema="x")
    with pytest.raises(cowsync.ConfigurationError, match="must differ"):
        cowsync.enable(items, "items", mode="overlay", overlay_schema="public")
    items.execute("CREATE SCHEMA public_cow; CREATE TABLE public_cow.items (x int)")
    with pytest.raises(cowsync.ConfigurationError, match="already holds items"):
        cowsync.enable(items, "items", mode="overlay")
    assert cowsync.status(items) == []


def test_a_chosen_overlay_schema_holds_the_view(items):
    cowsync.enable(items, "items", mode="overlay", overlay_schema="sandbox")
    items.execute("SET search_path TO sandbox, public")
    with cowsync.session(items, "s1"):
        items.execute("UPDATE items SET qty = 4 WHERE id = 1")
        assert items.execute("SELECT qty FROM items WHERE id = 1").fetchone() == (4,)
    items.execute("SET search_path TO public")
    assert rows(items)[0] == (1, "apple", 1)


def test_truncate_empties_the_session_view_or_the_table(items):
    cowsync.enable(items, "items", mode="overlay")
    in_session(items, "s1", "INSERT INTO items (name) VALUES ('fig')")

    items.execute(OVERLAY_PATH)
    with cowsync.session(items, "s1"):
        assert cowsync.truncate(items, "items") == 3
        assert items.execute("SELECT count(*) FROM items").fetchone() == (0,)
    items.execute("SET search_path TO public")
    assert rows(items) == [(1, "apple", 1), (2, "pear", 2)]  # production untouched

    assert cowsync.truncate(items, "items") == -1  # unbound: the table itself
    assert rows(items) == []
    # The session deleted what it saw (its own insert is simply gone).
    assert [(c.kind, c.key["id"]) for c in cowsync.diff(items, "s1")] == [
        ("delete", 1),
        ("delete", 2),
    ]


def test_alter_changes_the_table_and_sessions_follow(items):
    cowsync.enable(items, "items", mode="overlay")
    in_session(items, "s1", "UPDATE items SET qty = 5 WHERE id = 1")

    cowsync.alter(items, "items", "ADD COLUMN note text NOT NULL DEFAULT 'none'")
    cowsync.alter(items, "items", "RENAME COLUMN qty TO quantity")
    cowsync.alter(items, "items", "ALTER COLUMN quantity TYPE bigint")
    cowsync.alter(items, "items", "ADD CONSTRAINT small CHECK (quantity < 100)")

    assert rows(items) == [(1, "apple", 1, "none"), (2, "pear", 2, "none")]
    assert in_session(items, "s1", "SELECT * FROM items ORDER BY id").fetchall() == [
        (1, "apple", 5, "none"),
        (2, "pear", 2, "none"),
    ]
    in_session(items, "s1", "INSERT INTO items (name) VALUES ('fig')")
    with pytest.raises(psycopg.errors.CheckViolation):
        in_session(items, "s1", "UPDATE items SET quantity = 500 WHERE id = 2")
    # A column dropped while a session holds changes would lose them: refused, as in place.
    with pytest.raises(cowsync.PendingChangesError):
        cowsync.alter(items, "items", "DROP COLUMN note")
    assert [c.key["id"] for c in cowsync.diff(items, "s1")] == [1, 3]
    cowsync.commit(items, "s1")
    assert rows(items) == [(1, "apple", 5, "none"), (2, "pear", 2, "none"), (3, "fig", 0, "none")]
    cowsync.alter(items, "items", "DROP COLUMN note")
    assert rows(items)[0] == (1, "apple", 5)
    cowsync.disable(items, "items")
    assert items.execute("SELECT count(*) FROM pg_inherits").fetchone() == (0,)


def test_without_the_guard_a_bound_connection_is_kept_off_only_by_privileges(items):
    cowsync.enable(items, "items", mode="overlay", guard=False)

    assert items.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgname = 'cowsync_bound_guard'"
    ).fetchone() == (0,)
    # The owner's bound connection now can write the table schema-qualified (documented);
    # hardened agent roles cannot (tests/hardening/test_overlay_fortress.py).
    in_session(items, "s1", "UPDATE public.items SET qty = 3 WHERE id = 1")
    assert rows(items)[0] == (1, "apple", 3)
    with pytest.raises(cowsync.ConfigurationError, match="only to mode='overlay'"):
        cowsync.enable(items, "other", mode="in-place", guard=False)


def test_a_bound_connection_finds_the_overlay_view_by_its_plain_name(items):
    # No search_path set by hand: the binding puts public_cow first and takes it away.
    cowsync.enable(items, "items", mode="overlay")
    path = items.execute("SHOW search_path").fetchone()[0]

    with cowsync.session(items, "s1"):
        items.execute("UPDATE items SET qty = 6 WHERE id = 1")
        assert items.execute("SELECT qty FROM items WHERE id = 1").fetchone() == (6,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            items.execute("UPDATE public.items SET qty = 0")

    assert items.execute("SHOW search_path").fetchone()[0] == path
    assert rows(items)[0] == (1, "apple", 1)


def test_not_valid_and_no_inherit_checks_survive_enable_and_disable(items):
    items.execute("UPDATE items SET qty = 50 WHERE id = 2")
    items.execute("ALTER TABLE items ADD CONSTRAINT qty_small CHECK (qty < 10) NOT VALID")
    items.execute("ALTER TABLE items ADD CONSTRAINT own_only CHECK (id > 0) NO INHERIT")
    before = catalog_snapshot(items, schema=None)

    cowsync.enable(items, "items", mode="overlay")

    # New row versions meet the NOT VALID check, in a session as on the table (an
    # update of an old row that breaks it fails there too); old rows stay readable.
    for statement in (
        "UPDATE items SET qty = 11 WHERE id = 1",
        "UPDATE items SET name = 'big pear' WHERE id = 2",
    ):
        with pytest.raises(psycopg.errors.CheckViolation) as check:
            in_session(items, "s1", statement)
        assert check.value.diag.constraint_name == "qty_small"
    with pytest.raises(psycopg.errors.CheckViolation):
        items.execute("UPDATE items SET name = 'big pear' WHERE id = 2")
    assert in_session(items, "s1", "SELECT qty FROM items WHERE id = 2").fetchone() == (50,)
    cowsync.disable(items, "items", force=True)
    assert_same_catalog(before, catalog_snapshot(items, schema=None))


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE items RENAME TO goods",
        "ALTER TABLE items SET SCHEMA elsewhere",
        "ALTER TABLE public_cow.items_changes RENAME TO moved",
    ],
)
def test_renaming_or_moving_an_overlay_table_is_refused(items, statement):
    items.execute("CREATE SCHEMA elsewhere")
    cowsync.enable(items, "items", mode="overlay")

    with pytest.raises(psycopg.errors.FeatureNotSupported, match="cannot be renamed or moved"):
        items.execute(statement)

    assert [t.table for t in cowsync.status(items)] == ["public.items"]
    items.execute("ALTER TABLE items ADD COLUMN note text")  # other changes still go
