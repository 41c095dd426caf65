"""Keys, unique columns and foreign keys of a type whose ``=`` lives outside pg_catalog.

The triggers run with ``search_path = pg_catalog, pg_temp``, so they compare table values
with the constraint's own operator, named schema-qualified (the index's operator class, or
pg_constraint's for a foreign key). Here ``citext`` lives in schema ``ext``, which the
client has on its search_path but the triggers do not: a session must still treat
``'ABC'`` and ``'abc'`` as the same key, as the table does, and never fall back to text's
case-sensitive ``=`` (citext casts to text implicitly).
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import cowsync
from tests.engine.conftest import fetch

SETUP = """
CREATE SCHEMA ext;
CREATE EXTENSION citext SCHEMA ext;
CREATE TABLE tags (
    code ext.citext PRIMARY KEY,
    label ext.citext UNIQUE,
    note text
);
CREATE TABLE uses (
    id int PRIMARY KEY,
    tag ext.citext REFERENCES tags ON UPDATE CASCADE
);
INSERT INTO tags VALUES ('abc', 'First', 'a'), ('xyz', 'Second', 'x');
INSERT INTO uses VALUES (1, 'ABC');
"""


def error(conn: psycopg.Connection[Any], query: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(query)
    return caught.value


@pytest.fixture
def tags(cow: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    cow.execute(SETUP)
    cowsync.enable(cow, "tags")
    cowsync.enable(cow, "uses")
    cow.execute("SET search_path = public, ext")
    return cow


def test_a_session_compares_keys_as_the_table_does(tags: psycopg.Connection[Any]) -> None:
    with cowsync.session(tags, "s"):
        duplicate = error(tags, "INSERT INTO tags (code) VALUES ('ABC')")
        assert (duplicate.diag.sqlstate, duplicate.diag.constraint_name) == (
            "23505",
            "tags_pkey",
        )
        label = error(tags, "INSERT INTO tags (code, label) VALUES ('new', 'FIRST')")
        assert (label.diag.sqlstate, label.diag.constraint_name) == ("23505", "tags_label_key")
        tags.execute("UPDATE tags SET note = 'changed' WHERE code = 'abc'")
        tags.execute("UPDATE tags SET note = 'again' WHERE code = 'abc'")  # its own row now
        assert fetch(tags, "SELECT code::text, note FROM tags ORDER BY code") == [
            ("abc", "again"),
            ("xyz", "x"),
        ]
        tags.execute("INSERT INTO uses VALUES (2, 'XYZ')")  # the parent, in another case
        missing = error(tags, "INSERT INTO uses VALUES (3, 'nope')")
        assert missing.diag.sqlstate == "23503"
        # ON UPDATE CASCADE reaches the child that references 'abc' as 'ABC'.
        tags.execute("UPDATE tags SET code = 'abd' WHERE code = 'ABC'")
        assert fetch(tags, "SELECT id, tag::text FROM uses ORDER BY id") == [
            (1, "abd"),
            (2, "XYZ"),
        ]
    cowsync.commit(tags, "s")
    assert fetch(tags, "SELECT code::text, note FROM tags ORDER BY code") == [
        ("abd", "again"),
        ("xyz", "x"),
    ]


def test_production_writes_compare_keys_as_the_table_does(tags: psycopg.Connection[Any]) -> None:
    tags.execute("UPDATE tags SET note = 'p' WHERE code = 'ABC'")
    tags.execute("DELETE FROM uses WHERE tag = 'abc'")
    tags.execute("DELETE FROM tags WHERE code = 'XYZ'")
    assert fetch(tags, "SELECT code::text, note FROM tags") == [("abc", "p")]


def test_an_index_expression_calling_a_function_off_the_path(
    cow: psycopg.Connection[Any],
) -> None:
    """The catalog prints the expression for the trigger schema-qualified, however the
    index was written (here unqualified, with ``ext`` on the creator's search_path)."""
    cow.execute(
        """
        CREATE SCHEMA ext;
        CREATE FUNCTION ext.norm(text) RETURNS text LANGUAGE sql IMMUTABLE
            AS 'SELECT pg_catalog.lower(pg_catalog.btrim($1))';
        SET search_path = public, ext;
        CREATE TABLE notes (id int PRIMARY KEY, body text);
        CREATE UNIQUE INDEX notes_body_norm ON notes (norm(body));
        INSERT INTO notes VALUES (1, 'Hello');
        """
    )
    cowsync.enable(cow, "notes")
    with cowsync.session(cow, "s"):
        clash = error(cow, "INSERT INTO notes VALUES (2, '  hello ')")
        assert (clash.diag.sqlstate, clash.diag.constraint_name) == ("23505", "notes_body_norm")
        cow.execute("INSERT INTO notes VALUES (3, 'other')")
