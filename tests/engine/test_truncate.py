"""``cowsync.truncate``: empties an enabled table, and refuses a table other tables
reference as ``TRUNCATE`` does (0A000), in a session too, before removing anything."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import cowsync
from tests._mode import base_of, changes_of, text
from tests.engine.conftest import fetch

AUTHORS_BOOKS = """
CREATE TABLE authors (id int PRIMARY KEY, boss int REFERENCES authors, name text);
INSERT INTO authors VALUES (1, NULL, 'ann'), (2, NULL, 'bob');
CREATE TABLE books (id int PRIMARY KEY, author_id int REFERENCES authors);
INSERT INTO books VALUES (1, 1);
"""


@pytest.fixture
def library(cow: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """``authors`` (referencing itself) and ``books`` referencing it, both enabled."""
    cow.execute(AUTHORS_BOOKS)
    cowsync.enable(cow, "authors")
    cowsync.enable(cow, "books")
    return cow


def refusal(conn: psycopg.Connection[Any], table: str) -> psycopg.errors.FeatureNotSupported:
    with pytest.raises(psycopg.errors.FeatureNotSupported) as caught:
        cowsync.truncate(conn, table)
    return caught.value


def plain_truncate_refusal(conn: psycopg.Connection[Any]) -> psycopg.Error:
    """What PostgreSQL says for TRUNCATE of a plain table another table references."""
    conn.execute(AUTHORS_BOOKS.replace("authors", "p_authors").replace("books", "p_books"))
    with pytest.raises(psycopg.errors.FeatureNotSupported) as caught:
        conn.execute("TRUNCATE p_authors")
    return caught.value


@pytest.mark.parametrize("in_session", [False, True], ids=["production", "session"])
def test_a_referenced_table_is_refused_like_truncate(
    library: psycopg.Connection[Any], in_session: bool
) -> None:
    conn = library
    plain = plain_truncate_refusal(conn)
    if in_session:
        with cowsync.session(conn, "S"):
            error = refusal(conn, "authors")
            assert fetch(conn, "SELECT id FROM authors ORDER BY id") == [(1,), (2,)]
    else:
        error = refusal(conn, "authors")
    assert error.diag.sqlstate == plain.diag.sqlstate == "0A000"
    assert error.diag.message_primary == plain.diag.message_primary
    # The detail names the tables as their users know them (the view, not its base).
    assert error.diag.message_detail == 'Table "books" references "authors".'
    assert error.diag.message_hint is not None
    assert 'DELETE FROM "public"."authors"' in error.diag.message_hint
    # Nothing was removed, in production or in a session.
    base, changes = text(conn, base_of(conn, "authors")), text(conn, changes_of(conn, "authors"))
    assert fetch(conn, f"SELECT id FROM ONLY {base} ORDER BY id") == [(1,), (2,)]
    assert fetch(conn, f"SELECT count(*) FROM ONLY {changes}") == [(0,)]


def test_in_a_session_the_transaction_is_aborted_as_after_truncate(
    library: psycopg.Connection[Any],
) -> None:
    conn = library
    with cowsync.session(conn, "S"):
        conn.autocommit = False
        refusal(conn, "authors")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        conn.rollback()
        conn.autocommit = True


def test_every_referencing_table_is_named_whether_enabled_or_not(
    library: psycopg.Connection[Any],
) -> None:
    conn = library
    base = text(conn, base_of(conn, "authors"))
    conn.execute(
        "CREATE SCHEMA other; CREATE TABLE other.notes (id int PRIMARY KEY, author_id int);"
        f"ALTER TABLE other.notes ADD FOREIGN KEY (author_id) REFERENCES {base} NOT VALID;"
        f"CREATE TABLE reviews (id int PRIMARY KEY, author_id int REFERENCES {base})"
    )
    error = refusal(conn, "authors")
    assert error.diag.message_detail == (
        'Tables "books", "reviews", "other.notes" reference "authors".'
    )


def test_a_table_referencing_only_itself_is_truncated(cow: psycopg.Connection[Any]) -> None:
    conn = cow
    conn.execute(
        "CREATE TABLE tree (id int PRIMARY KEY, parent int REFERENCES tree);"
        "INSERT INTO tree VALUES (1, NULL), (2, NULL)"
    )
    cowsync.enable(conn, "tree")
    with cowsync.session(conn, "S"):
        assert cowsync.truncate(conn, "tree") == 2
        assert fetch(conn, "SELECT count(*) FROM tree") == [(0,)]
    assert fetch(conn, "SELECT count(*) FROM tree") == [(2,)]
    assert cowsync.truncate(conn, "tree") == -1
    assert fetch(conn, "SELECT count(*) FROM tree") == [(0,)]


def test_in_a_session_rows_referencing_each_other_can_fail_row_by_row(
    cow: psycopg.Connection[Any],
) -> None:
    """Documented: in a session the rows are deleted one by one, each checked against
    what the session still sees, so deleting a parent before its child fails (23503)
    where TRUNCATE empties the table."""
    conn = cow
    conn.execute(
        "CREATE TABLE tree (id int PRIMARY KEY, parent int REFERENCES tree);"
        "INSERT INTO tree VALUES (1, NULL), (2, 1)"
    )
    cowsync.enable(conn, "tree")
    with cowsync.session(conn, "S"):
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            cowsync.truncate(conn, "tree")
        assert fetch(conn, "SELECT id FROM tree ORDER BY id") == [(1,), (2,)]
