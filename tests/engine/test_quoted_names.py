"""Columns whose names need quoting ("rAnK", a reserved word, "B", a space, unicode) in
unique indexes, EXCLUDE constraints and foreign keys (issue 17, item 1).

The catalog prints such a column quoted (pg_get_indexdef: ``"rAnK"``); quoting that text
again made ``enable`` fail with ``42703 column ""rAnK"" does not exist``. A session must
judge these constraints as the table does: same SQLSTATE, message, detail and constraint.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import cowsync
from tests._mode import base_of, text
from tests.engine.conftest import assert_same_catalog, fetch, without_sequence_positions

ITEMS = """
CREATE TABLE items (
    id int PRIMARY KEY,
    "rAnK" int CONSTRAINT items_rank_key UNIQUE,
    "order" int CONSTRAINT items_order_key UNIQUE,
    a int,
    "B" int,
    "a b" text CONSTRAINT "items a b key" UNIQUE,
    "ünï" text CONSTRAINT items_unicode_key UNIQUE,
    "Sel" text,
    CONSTRAINT items_a_b_key UNIQUE (a, "B")
);
CREATE UNIQUE INDEX items_sel_live ON items ("Sel") WHERE "order" > 0;
CREATE UNIQUE INDEX items_lower_ab ON items (lower("a b"), "B");
INSERT INTO items VALUES (1, 1, 1, 1, 1, 'x y', 'é', 'p'), (2, 2, 2, 2, 2, 'z w', 'ö', 'q');
"""

VIOLATIONS = {
    "rAnK-insert": ('INSERT INTO items (id, "rAnK") VALUES (3, 1)', "items_rank_key"),
    "order-update": ('UPDATE items SET "order" = 1 WHERE id = 2', "items_order_key"),
    "a-B-insert": ('INSERT INTO items (id, a, "B") VALUES (3, 1, 1)', "items_a_b_key"),
    "a-B-update": ('UPDATE items SET a = 1, "B" = 1 WHERE id = 2', "items_a_b_key"),
    "space-update": ("UPDATE items SET \"a b\" = 'x y' WHERE id = 2", "items a b key"),
    "unicode-insert": ("INSERT INTO items (id, \"ünï\") VALUES (3, 'é')", "items_unicode_key"),
    "partial-insert": (
        'INSERT INTO items (id, "order", "Sel") VALUES (3, 5, \'p\')',
        "items_sel_live",
    ),
    "partial-update": ("UPDATE items SET \"Sel\" = 'p' WHERE id = 2", "items_sel_live"),
    "expression-insert": (
        'INSERT INTO items (id, "a b", "B") VALUES (3, \'X Y\', 1)',
        "items_lower_ab",
    ),
}


def error(conn: psycopg.Connection[Any], query: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(query)
    return caught.value


def table_error(conn: psycopg.Connection[Any], query: str) -> psycopg.Error:
    """What a plain table of the same shape (in a scratch schema) raises for ``query``."""
    conn.execute("CREATE SCHEMA plain")
    try:
        conn.execute("SET search_path = plain")
        conn.execute(ITEMS)
        return error(conn, query)
    finally:
        conn.execute("RESET search_path")
        conn.execute("DROP SCHEMA plain CASCADE")


def test_enable_builds_change_store_indexes_over_quoted_columns(cow):
    cow.execute(ITEMS)
    cowsync.enable(cow, "items")
    definitions = [
        r[0]
        for r in fetch(
            cow,
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'items_changes' "
            "AND indexname LIKE 'cowsync\\_%\\_u\\_%' ORDER BY indexdef",
        )
    ]
    columns = [d[d.index("(") :] for d in definitions]
    assert sorted(columns) == sorted(
        [
            '("rAnK")',
            '("order")',
            '(a, "B")',
            '("a b")',
            '("ünï")',
            '("Sel") WHERE ("order" > 0)',
            '(lower("a b"), "B")',
        ]
    )


@pytest.mark.parametrize(("query", "constraint"), VIOLATIONS.values(), ids=VIOLATIONS.keys())
def test_a_session_raises_what_the_table_raises(cow, query, constraint):
    expected = table_error(cow, query)
    assert (expected.diag.sqlstate, expected.diag.constraint_name) == ("23505", constraint)
    cow.execute(ITEMS)
    cowsync.enable(cow, "items")
    before = fetch(cow, "SELECT * FROM items ORDER BY id")
    with cowsync.session(cow, "s"):
        got = error(cow, query)
        assert (
            got.diag.sqlstate,
            got.diag.message_primary,
            got.diag.message_detail,
            got.diag.constraint_name,
        ) == (
            expected.diag.sqlstate,
            expected.diag.message_primary,
            expected.diag.message_detail,
            expected.diag.constraint_name,
        )
        assert (got.diag.table_name, got.diag.schema_name) == ("items", "public")
        assert fetch(cow, "SELECT * FROM items ORDER BY id") == before


def test_session_rows_count_and_commit_reaches_the_base(cow):
    cow.execute(ITEMS)
    cowsync.enable(cow, "items")
    with cowsync.session(cow, "s"):
        cow.execute(
            "INSERT INTO items VALUES (3, 3, 3, 3, 3, 'u v', 'ß', 'r'), "
            "(4, 4, -4, 4, 4, 'k l', 'ñ', 'p')"  # "Sel" = 'p' outside the partial index
        )
        for query, constraint in [
            ('INSERT INTO items (id, "rAnK") VALUES (5, 3)', "items_rank_key"),
            ('UPDATE items SET a = 3, "B" = 3 WHERE id = 1', "items_a_b_key"),
            ("INSERT INTO items (id, \"ünï\") VALUES (5, 'ß')", "items_unicode_key"),
            ('UPDATE items SET "order" = 4 WHERE id = 4', "items_sel_live"),
        ]:
            got = error(cow, query)
            assert (got.diag.sqlstate, got.diag.constraint_name) == ("23505", constraint), query
        # The row itself never conflicts with its own values.
        cow.execute('UPDATE items SET "rAnK" = "rAnK", "Sel" = "Sel" WHERE id IN (1, 3)')
        cow.execute("DELETE FROM items WHERE id = 1")
        cow.execute('UPDATE items SET "rAnK" = 1, "a b" = \'x y\', "ünï" = \'é\' WHERE id = 2')
    cowsync.commit(cow, "s")
    base = text(cow, base_of(cow, "items"))
    assert fetch(
        cow, f'SELECT id, "rAnK", "order", "a b", "ünï", "Sel" FROM {base} ORDER BY id'
    ) == [
        (2, 1, 2, "x y", "é", "q"),
        (3, 3, 3, "u v", "ß", "r"),
        (4, 4, -4, "k l", "ñ", "p"),
    ]


def test_exclusion_and_foreign_keys_over_quoted_columns(cow):
    cow.execute(
        """
        CREATE TABLE parents ("Code" int PRIMARY KEY, "user" int NOT NULL UNIQUE);
        CREATE TABLE items (
            id int PRIMARY KEY,
            "Room" int,
            "select" int4range,
            "parent Code" int REFERENCES parents ("Code"),
            CONSTRAINT items_no_overlap EXCLUDE USING gist ("select" WITH &&) WHERE ("Room" > 0)
        );
        INSERT INTO parents VALUES (1, 10), (2, 20);
        INSERT INTO items VALUES (1, 1, '[1,5)', 1);
        """
    )
    cowsync.enable(cow, "parents")
    cowsync.enable(cow, "items")
    with cowsync.session(cow, "s"):
        got = error(cow, "INSERT INTO items VALUES (2, 1, '[3,8)', 1)")
        assert (got.diag.sqlstate, got.diag.constraint_name) == ("23P01", "items_no_overlap")
        assert got.diag.message_detail == (
            'Key ("select")=([3,8)) conflicts with existing key ("select")=([1,5)).'
        )
        got = error(cow, "INSERT INTO items VALUES (2, 1, '[6,8)', 3)")
        assert (got.diag.sqlstate, got.diag.constraint_name) == (
            "23503",
            "items_parent Code_fkey",
        )
        got = error(cow, "INSERT INTO parents VALUES (3, 10)")
        assert (got.diag.sqlstate, got.diag.constraint_name) == ("23505", "parents_user_key")
        cow.execute("INSERT INTO parents VALUES (3, 30)")
        cow.execute("INSERT INTO items VALUES (2, 0, '[3,8)', 3)")
        got = error(cow, 'DELETE FROM parents WHERE "Code" = 3')
        assert got.diag.sqlstate == "23503"
    cowsync.commit(cow, "s")
    base = text(cow, base_of(cow, "items"))
    assert fetch(cow, f'SELECT id, "parent Code" FROM {base} ORDER BY id') == [(1, 1), (2, 3)]


def test_enable_and_disable_leave_no_trace(cow, catalog_snapshot):
    cow.execute(ITEMS)
    before = catalog_snapshot(cow, None)
    cowsync.enable(cow, "items")
    with cowsync.session(cow, "s"):
        cow.execute("INSERT INTO items VALUES (3, 3, 3, 3, 3, 'u v', 'ß', 'r')")
        cow.execute('UPDATE items SET "rAnK" = 7 WHERE id = 1')
    cowsync.disable(cow, "items", force=True)
    after = catalog_snapshot(cow, None)
    assert_same_catalog(without_sequence_positions(before), without_sequence_positions(after))
