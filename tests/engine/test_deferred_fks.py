"""Deferrable foreign keys in a session: checked when the table would check them.

A DEFERRABLE INITIALLY DEFERRED foreign key (Django declares every one that way) is
checked at COMMIT or at SET CONSTRAINTS ... IMMEDIATE, so inside one transaction a
child may come before its parent and a parent may go before its children. In a
session a constraint trigger on the change store, named like the foreign key, does
that check, against the session the row was written in.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

import cowsync
from tests._catalog import snapshot_diff
from tests._mode import (
    OVERLAY,
    base_of,
    changes_of,
    sessions_path,
    text,
)
from tests.engine.conftest import error_of, fetch

DEFERRED = "DEFERRABLE INITIALLY DEFERRED"
FK = "books_author_id_fkey"

# An upgrade is simulated by a library one engine version ahead.
NOW = cowsync.ENGINE_VERSION
NEXT = NOW + 1


def make_authors_books(
    conn: psycopg.Connection[Any],
    extra: str = DEFERRED,
    on_delete: str = "NO ACTION",
    on_update: str = "NO ACTION",
    enable: tuple[str, ...] = ("authors", "books"),
) -> None:
    conn.execute(
        f"""
        CREATE TABLE authors (id int PRIMARY KEY, name text NOT NULL);
        INSERT INTO authors VALUES (1, 'ann'), (2, 'bob'), (3, 'cy');
        CREATE TABLE books (
            id int PRIMARY KEY,
            author_id int REFERENCES authors ON DELETE {on_delete} ON UPDATE {on_update} {extra},
            title text
        );
        INSERT INTO books VALUES (1, 1, 'a1'), (2, 1, 'a2'), (3, 2, 'b1');
        """
    )
    for table in enable:
        cowsync.enable(conn, table)


def commit_error(conn: psycopg.Connection[Any], *statements: str) -> psycopg.Error | None:
    """Run ``statements`` in one transaction; the error its COMMIT raised, if any."""
    conn.execute("BEGIN")
    for statement in statements:
        conn.execute(statement)
    try:
        conn.execute("COMMIT")
    except psycopg.Error as exc:
        return exc
    return None


def first_error(conn: psycopg.Connection[Any], *statements: str) -> psycopg.Error | None:
    """Run ``statements`` in one transaction; the first error a statement or the COMMIT
    raised, if any (the transaction is then rolled back)."""
    conn.execute("BEGIN")
    try:
        for statement in statements:
            conn.execute(statement)
    except psycopg.Error as exc:
        conn.execute("ROLLBACK")
        return exc
    try:
        conn.execute("COMMIT")
    except psycopg.Error as exc:
        return exc
    return None


def production_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    base = text(conn, base_of(conn, "books"))
    return fetch(conn, f"SELECT id, author_id FROM ONLY {base} ORDER BY id")


# --- child before parent --------------------------------------------------------------------------


def test_a_child_may_come_before_its_parent_in_one_transaction(cow):
    make_authors_books(cow)
    with cowsync.session(cow, "S"):
        assert (
            commit_error(
                cow,
                "INSERT INTO books VALUES (10, 50, 'early')",
                "INSERT INTO authors VALUES (50, 'late')",
            )
            is None
        )
        assert fetch(cow, "SELECT author_id FROM books WHERE id = 10") == [(50,)]
    assert production_rows(cow) == [(1, 1), (2, 1), (3, 2)]
    cowsync.commit(cow, "S")
    assert fetch(cow, "SELECT author_id FROM books WHERE id = 10") == [(50,)]


def test_an_orphan_left_at_commit_raises_23503_as_the_table_does(cow):
    cow.execute("CREATE TABLE p_authors (id int PRIMARY KEY)")
    cow.execute(
        f"CREATE TABLE p_books (id int PRIMARY KEY, author_id int REFERENCES p_authors {DEFERRED})"
    )
    plain = commit_error(cow, "INSERT INTO p_books VALUES (10, 50)")
    make_authors_books(cow)
    with cowsync.session(cow, "S"):
        error = commit_error(cow, "INSERT INTO books VALUES (10, 50, 'never')")
        assert fetch(cow, "SELECT count(*) FROM books WHERE id = 10") == [(0,)]
    assert isinstance(plain, psycopg.errors.ForeignKeyViolation)
    assert isinstance(error, psycopg.errors.ForeignKeyViolation)
    assert error.diag.constraint_name == FK
    assert error.diag.message_primary == (
        f'insert or update on table "books" violates foreign key constraint "{FK}"'
    )
    assert error.diag.message_detail == 'Key (author_id)=(50) is not present in table "authors".'
    # The rolled-back transaction left nothing in the session.
    store = text(cow, changes_of(cow, "books"))
    assert fetch(cow, f"SELECT count(*) FROM {store}") == [(0,)]


def test_the_row_is_judged_as_it_is_at_commit(cow):
    make_authors_books(cow)
    with cowsync.session(cow, "S"):
        # Fixed later in the transaction: re-pointed, or deleted.
        assert (
            commit_error(
                cow,
                "INSERT INTO books VALUES (10, 50, 'orphan for now')",
                "UPDATE books SET author_id = 2 WHERE id = 10",
                "INSERT INTO books VALUES (11, 51, 'orphan, then gone')",
                "DELETE FROM books WHERE id = 11",
                "UPDATE books SET author_id = 52 WHERE id = 1",
                "UPDATE books SET author_id = NULL WHERE id = 1",
            )
            is None
        )
        assert fetch(cow, "SELECT id, author_id FROM books ORDER BY id") == [
            (1, None),
            (2, 1),
            (3, 2),
            (10, 2),
        ]
        # Broken later in the transaction: a good row re-pointed at nothing.
        error = commit_error(
            cow,
            "INSERT INTO books VALUES (12, 3, 'good at first')",
            "UPDATE books SET author_id = 53 WHERE id = 12",
        )
        assert isinstance(error, psycopg.errors.ForeignKeyViolation)
        assert "(author_id)=(53)" in (error.diag.message_detail or "")


def test_a_later_operation_of_the_session_supersedes_the_row(cow):
    make_authors_books(cow)
    cow.execute("BEGIN")
    cow.execute("SELECT set_config('app.session_id', 'S', true)")
    sessions_path(cow, local=True)
    cow.execute("SELECT set_config('app.operation_id', 'op1', true)")
    cow.execute("INSERT INTO books VALUES (10, 50, 'orphan in op1')")
    cow.execute("SELECT set_config('app.operation_id', 'op2', true)")
    cow.execute("UPDATE books SET author_id = 1 WHERE id = 10")
    cow.execute("COMMIT")
    with cowsync.session(cow, "S"):
        assert fetch(cow, "SELECT author_id FROM books WHERE id = 10") == [(1,)]


# --- parent before children -----------------------------------------------------------------------


def test_a_parent_may_go_before_its_children_in_one_transaction(cow):
    make_authors_books(cow)
    with cowsync.session(cow, "S"):
        assert (
            commit_error(
                cow,
                "DELETE FROM authors WHERE id = 1",
                "DELETE FROM books WHERE author_id = 1",
            )
            is None
        )
        # Re-keyed, and the children moved after it.
        assert (
            commit_error(
                cow,
                "UPDATE authors SET id = 20 WHERE id = 2",
                "UPDATE books SET author_id = 20 WHERE author_id = 2",
            )
            is None
        )
        # Deleted and back again: nothing was taken away.
        assert (
            commit_error(
                cow,
                "INSERT INTO books VALUES (30, 3, 'c1')",
                "DELETE FROM authors WHERE id = 3",
                "INSERT INTO authors VALUES (3, 'cy again')",
            )
            is None
        )
        assert fetch(cow, "SELECT id FROM authors ORDER BY id") == [(3,), (20,)]
        assert fetch(cow, "SELECT id, author_id FROM books ORDER BY id") == [(3, 20), (30, 3)]
    cowsync.commit(cow, "S")
    assert fetch(cow, "SELECT id, author_id FROM books ORDER BY id") == [(3, 20), (30, 3)]


def test_a_parent_still_referenced_at_commit_raises_23503(cow):
    make_authors_books(cow)
    with cowsync.session(cow, "S"):
        for statement in (
            "DELETE FROM authors WHERE id = 1",
            "UPDATE authors SET id = 10 WHERE id = 2",
        ):
            error = commit_error(cow, statement)
            assert isinstance(error, psycopg.errors.ForeignKeyViolation), statement
            assert error.diag.constraint_name == FK
            assert error.diag.message_primary == (
                f'update or delete on table "authors" violates foreign key constraint "{FK}" '
                'on table "books"'
            )
        assert fetch(cow, "SELECT id FROM authors ORDER BY id") == [(1,), (2,), (3,)]
        # A child the transaction added to a parent it deletes.
        error = commit_error(
            cow, "DELETE FROM authors WHERE id = 3", "INSERT INTO books VALUES (40, 3, 'late')"
        )
        assert isinstance(error, psycopg.errors.ForeignKeyViolation)


def test_restrict_is_never_deferred(cow):
    make_authors_books(cow, on_delete="RESTRICT")
    with cowsync.session(cow, "S"):
        cow.execute("BEGIN")
        assert error_of(cow, "DELETE FROM authors WHERE id = 1") == ("23503", FK)
        cow.execute("ROLLBACK")


def test_cascade_runs_at_once_and_the_child_check_waits(cow):
    make_authors_books(cow, on_delete="CASCADE")
    with cowsync.session(cow, "S"):
        cow.execute("BEGIN")
        cow.execute("DELETE FROM authors WHERE id = 1")
        assert fetch(cow, "SELECT id FROM books ORDER BY id") == [(3,)]
        cow.execute("INSERT INTO books VALUES (10, 60, 'child first')")
        cow.execute("INSERT INTO authors VALUES (60, 'parent second')")
        cow.execute("COMMIT")


# --- SET CONSTRAINTS ------------------------------------------------------------------------------


@pytest.mark.parametrize("which", [FK, "ALL"])
def test_set_constraints_immediate_checks_at_that_point(cow, which):
    make_authors_books(cow)
    with cowsync.session(cow, "S"):
        cow.execute("BEGIN")
        cow.execute("INSERT INTO books VALUES (10, 50, 'early')")
        cow.execute("INSERT INTO authors VALUES (50, 'in time')")
        cow.execute(f"SET CONSTRAINTS {which} IMMEDIATE")  # checks what is pending: fine
        assert error_of(cow, "INSERT INTO books VALUES (11, 51, 'now checked at once')") == (
            "23503",
            FK,
        )
        cow.execute("ROLLBACK")
        cow.execute("BEGIN")
        cow.execute("INSERT INTO books VALUES (12, 52, 'pending')")
        assert error_of(cow, f"SET CONSTRAINTS {which} IMMEDIATE") == ("23503", FK)
        cow.execute("ROLLBACK")
        cow.execute("BEGIN")
        cow.execute("DELETE FROM authors WHERE id = 2")
        assert error_of(cow, f"SET CONSTRAINTS {which} IMMEDIATE") == ("23503", FK)
        cow.execute("ROLLBACK")
        assert fetch(cow, "SELECT count(*) FROM books_changes") == [(0,)]


def test_initially_immediate_checks_each_write_unless_deferred(cow):
    make_authors_books(cow, extra="DEFERRABLE INITIALLY IMMEDIATE")
    with cowsync.session(cow, "S"):
        assert error_of(cow, "INSERT INTO books VALUES (10, 50, 'x')") == ("23503", FK)
        assert error_of(cow, "DELETE FROM authors WHERE id = 1") == ("23503", FK)
        assert (
            commit_error(
                cow,
                "SET CONSTRAINTS ALL DEFERRED",
                "INSERT INTO books VALUES (10, 50, 'early')",
                "INSERT INTO authors VALUES (50, 'late')",
                "DELETE FROM authors WHERE id = 2",
                "DELETE FROM books WHERE id = 3",
            )
            is None
        )
        assert fetch(cow, "SELECT id, author_id FROM books ORDER BY id") == [
            (1, 1),
            (2, 1),
            (10, 50),
        ]


def test_not_deferrable_stays_checked_at_each_write(cow):
    make_authors_books(cow, extra="")
    with cowsync.session(cow, "S"):
        cow.execute("BEGIN")
        assert error_of(cow, "INSERT INTO books VALUES (10, 50, 'x')") == ("23503", FK)
        cow.execute("ROLLBACK")
    assert fetch(cow, "SELECT count(*) FROM pg_trigger WHERE tgname = %s", (FK,)) == [(0,)]


# --- whose session --------------------------------------------------------------------------------


def test_the_check_uses_the_rows_session_not_the_binding_at_commit(cow, connect):
    make_authors_books(cow)
    with cowsync.session(cow, "T"):
        cow.execute("INSERT INTO authors VALUES (70, 'only in T')")
    with cowsync.session(cow, "S"):
        cow.execute("INSERT INTO authors VALUES (50, 'only in S')")
    # Written in S, committed while bound to T (which lacks 50) or to nothing.
    for rebind in ("T", ""):
        cow.execute("BEGIN")
        cow.execute("SELECT set_config('app.session_id', 'S', true)")
        sessions_path(cow, local=True)
        cow.execute("INSERT INTO books VALUES (10, 50, 'S sees 50')")
        cow.execute("SELECT set_config('app.session_id', %s, true)", (rebind,))
        cow.execute("COMMIT")
        with cowsync.session(cow, "S"):
            cow.execute("DELETE FROM books WHERE id = 10")
    # And an orphan in S is one even when the binding at commit sees the parent.
    cow.execute("BEGIN")
    cow.execute("SELECT set_config('app.session_id', 'S', true)")
    sessions_path(cow, local=True)
    cow.execute("INSERT INTO books VALUES (11, 70, 'S lacks 70')")
    cow.execute("SELECT set_config('app.session_id', 'T', true)")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        cow.execute("COMMIT")
    # The binding the commit ran under is intact afterwards.
    with cowsync.session(cow, "T"):
        cow.execute("BEGIN")
        cow.execute("SELECT set_config('app.session_id', 'S', true)")
        cow.execute("INSERT INTO books VALUES (12, 50, 'x')")
        cow.execute("SET CONSTRAINTS ALL IMMEDIATE")
        assert fetch(cow, "SELECT current_setting('app.session_id')") == [("S",)]
        cow.execute("ROLLBACK")
        assert fetch(cow, "SELECT current_setting('app.session_id')") == [("T",)]


def test_unbinding_inside_the_open_transaction_still_checks_the_session(dsn, cow):
    make_authors_books(cow)
    with psycopg.connect(dsn) as conn:  # not autocommit: the session block ends inside it
        with cowsync.session(conn, "S"):
            conn.execute("INSERT INTO books VALUES (10, 50, 'early')")
            conn.execute("INSERT INTO authors VALUES (50, 'late')")
        conn.commit()
    with (
        pytest.raises(psycopg.errors.ForeignKeyViolation),
        psycopg.connect(dsn) as conn,
        cowsync.session(conn, "S"),
    ):
        conn.execute("INSERT INTO books VALUES (11, 51, 'never')")
    with cowsync.session(cow, "S"):
        assert fetch(cow, "SELECT id FROM books WHERE id >= 10 ORDER BY id") == [(10,)]


# --- other shapes ---------------------------------------------------------------------------------


def test_a_self_reference_accepts_any_order_in_a_transaction(cow):
    cow.execute(
        f"CREATE TABLE nodes (id int PRIMARY KEY, parent_id int REFERENCES nodes {DEFERRED})"
    )
    cow.execute("INSERT INTO nodes VALUES (1, NULL), (2, 1)")
    cowsync.enable(cow, "nodes")
    with cowsync.session(cow, "S"):
        # One statement, child first: row by row in the trigger, checked at its end.
        cow.execute("INSERT INTO nodes VALUES (4, 3), (3, 1)")
        assert (
            commit_error(
                cow, "DELETE FROM nodes WHERE id = 1", "DELETE FROM nodes WHERE id IN (2, 3, 4)"
            )
            is None
        )
        error = commit_error(cow, "INSERT INTO nodes VALUES (5, 99)")
        assert isinstance(error, psycopg.errors.ForeignKeyViolation)
        cow.execute("INSERT INTO nodes VALUES (6, NULL), (7, 6)")
        error = commit_error(cow, "DELETE FROM nodes WHERE id = 6")
        assert isinstance(error, psycopg.errors.ForeignKeyViolation)
        assert fetch(cow, "SELECT id, parent_id FROM nodes ORDER BY id") == [(6, None), (7, 6)]


def test_a_reference_to_a_unique_column_follows_its_value(cow):
    """The referenced column is not the row key, so an UPDATE can take a value away."""
    cow.execute(
        f"""
        CREATE TABLE teams (id int PRIMARY KEY, code text UNIQUE NOT NULL);
        INSERT INTO teams VALUES (1, 'red'), (2, 'blue');
        CREATE TABLE players (id int PRIMARY KEY, team text REFERENCES teams (code) {DEFERRED});
        INSERT INTO players VALUES (1, 'red');
        """
    )
    cowsync.enable(cow, "teams")
    cowsync.enable(cow, "players")
    fk = "players_team_fkey"
    with cowsync.session(cow, "S"):
        # A base row's value taken away (first touch), then given back.
        error = commit_error(cow, "UPDATE teams SET code = 'green' WHERE id = 1")
        assert (error.diag.sqlstate, error.diag.constraint_name) == ("23503", fk)
        assert (
            commit_error(
                cow,
                "UPDATE teams SET code = 'green' WHERE id = 1",
                "UPDATE teams SET code = 'red' WHERE id = 2",
            )
            is None
        )
        assert (
            commit_error(
                cow,
                "UPDATE teams SET code = 'teal' WHERE id = 2",
                "UPDATE players SET team = 'teal' WHERE id = 1",
            )
            is None
        )
        # A value the session gave, changed in place in the same operation.
        cow.execute("INSERT INTO teams VALUES (3, 'gold')")
        cow.execute("INSERT INTO players VALUES (2, 'gold')")
        error = commit_error(cow, "UPDATE teams SET code = 'silver' WHERE id = 3")
        assert (error.diag.sqlstate, error.diag.constraint_name) == ("23503", fk)
    # A value an earlier operation gave, changed by a later one.
    with cowsync.session(cow, "S", "later"):
        error = commit_error(cow, "UPDATE teams SET code = 'silver' WHERE id = 3")
        assert (error.diag.sqlstate, error.diag.constraint_name) == ("23503", fk)
        assert (
            commit_error(
                cow,
                "UPDATE teams SET code = 'silver' WHERE id = 3",
                "DELETE FROM players WHERE id = 2",
            )
            is None
        )
        assert fetch(cow, "SELECT code FROM teams ORDER BY id") == [
            ("green",),
            ("teal",),
            ("silver",),
        ]
    cowsync.commit(cow, "S")
    assert fetch(cow, "SELECT id, team FROM players ORDER BY id") == [(1, "teal")]


def test_a_parent_that_is_not_enabled(cow):
    make_authors_books(cow, enable=("books",))
    with cowsync.session(cow, "S"):
        assert (
            commit_error(
                cow, "INSERT INTO books VALUES (10, 50, 'x')", "DELETE FROM books WHERE id = 10"
            )
            is None
        )
        error = commit_error(cow, "INSERT INTO books VALUES (10, 50, 'x')")
        assert isinstance(error, psycopg.errors.ForeignKeyViolation)


def test_a_child_that_is_not_enabled(cow):
    make_authors_books(cow, enable=("authors",))
    with cowsync.session(cow, "S"):
        error = commit_error(cow, "DELETE FROM authors WHERE id = 2")
        assert isinstance(error, psycopg.errors.ForeignKeyViolation)
        # The session deletes the parent, production's child goes in the same transaction.
        assert (
            commit_error(
                cow, "DELETE FROM authors WHERE id = 3", "INSERT INTO books VALUES (9, 3, 'x')"
            )
            is not None
        )


# --- what does not fire ---------------------------------------------------------------------------


def test_previews_commits_and_discards_do_not_fire_the_checks(cow):
    make_authors_books(cow)
    with cowsync.session(cow, "S", "parents"):
        cow.execute("INSERT INTO authors VALUES (50, 'new')")
    with cowsync.session(cow, "S", "children"):
        cow.execute("INSERT INTO books VALUES (10, 50, 'needs 50')")
        cow.execute("INSERT INTO books VALUES (11, 3, 'needs 3')")
    with cowsync.session(cow, "S", "more"):
        cow.execute("UPDATE books SET title = 'retitled' WHERE id = 11")
    # A preview of the children alone shows an orphan; materialising it checks nothing.
    with cowsync.session(cow, "S", visible_operations=["children"]):
        assert fetch(cow, "SELECT id FROM books WHERE id >= 10 ORDER BY id") == [(10,), (11,)]
    # Production takes author 3 away (no base row references it); the session's book 11
    # now points at nothing, which only a write of it would report.
    cow.execute("DELETE FROM authors WHERE id = 3")
    cowsync.discard(cow, "S", operations=["more"])  # book 11's earlier row becomes current
    cowsync.commit(cow, "S", operations=["parents"])  # re-anchors what remains
    with cowsync.session(cow, "S"):
        assert fetch(cow, "SELECT id, author_id FROM books WHERE id >= 10 ORDER BY id") == [
            (10, 50),
            (11, 3),
        ]
        error = commit_error(cow, "UPDATE books SET title = 'touched' WHERE id = 11")
        assert isinstance(error, psycopg.errors.ForeignKeyViolation)


# --- install, alter, disable ----------------------------------------------------------------------


def fk_triggers(conn: psycopg.Connection[Any]) -> list[tuple[str, str, bool]]:
    """(relation, name, initially deferred) of each deferred check trigger; the relation
    by its name alone when it is in the change stores' schema (``public`` in place,
    ``public_cow`` in overlay mode), else schema-qualified."""
    return fetch(
        conn,
        "SELECT CASE WHEN n.nspname = %s THEN c.relname::text "
        "ELSE n.nspname || '.' || c.relname END, g.tgname::text, g.tginitdeferred "
        "FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE g.tgfoid::regproc::text LIKE 'cowsync.fk_check_%%' ORDER BY 1, 2",
        ["public_cow" if OVERLAY else "public"],
    )


def fk_functions(conn: psycopg.Connection[Any]) -> list[tuple[str]]:
    return fetch(
        conn,
        "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'cowsync' AND p.proname LIKE 'fk\\_check\\_%' ORDER BY 1",
    )


def test_triggers_follow_the_foreign_keys_and_disable_leaves_no_trace(cow, catalog_snapshot):
    cow.execute("CREATE TABLE authors (id int PRIMARY KEY, name text)")
    cow.execute("CREATE TABLE books (id int PRIMARY KEY, author_id int, title text)")
    before = catalog_snapshot(cow, None)
    cowsync.enable(cow, "authors")
    cowsync.enable(cow, "books")
    assert fk_triggers(cow) == []
    assert fk_functions(cow) == []
    cowsync.alter(
        cow,
        "books",
        f"ADD CONSTRAINT {FK} FOREIGN KEY (author_id) "
        f"REFERENCES {text(cow, base_of(cow, 'authors'))} {DEFERRED}",
    )
    assert fk_triggers(cow) == [("authors_changes", FK, True), ("books_changes", FK, True)]
    oids = fetch(cow, "SELECT oid FROM pg_trigger WHERE tgname = %s ORDER BY oid", (FK,))
    cowsync.refresh(cow, "books")  # unchanged: kept as they are
    assert fetch(cow, "SELECT oid FROM pg_trigger WHERE tgname = %s ORDER BY oid", (FK,)) == oids
    cowsync.alter(cow, "books", f"ALTER CONSTRAINT {FK} DEFERRABLE INITIALLY IMMEDIATE")
    assert fk_triggers(cow) == [("authors_changes", FK, False), ("books_changes", FK, False)]
    with cowsync.session(cow, "S"):
        assert error_of(cow, "INSERT INTO books VALUES (1, 5, 'x')") == ("23503", FK)
    cowsync.alter(cow, "books", f"ALTER CONSTRAINT {FK} NOT DEFERRABLE")
    assert fk_triggers(cow) == []
    assert fk_functions(cow) == []
    with cowsync.session(cow, "S"):
        cow.execute("BEGIN")
        assert error_of(cow, "INSERT INTO books VALUES (1, 5, 'x')") == ("23503", FK)
        cow.execute("ROLLBACK")
    cowsync.alter(cow, "books", f"ALTER CONSTRAINT {FK} {DEFERRED}")
    with cowsync.session(cow, "S"):
        assert (
            commit_error(
                cow, "INSERT INTO books VALUES (1, 5, 'x')", "INSERT INTO authors VALUES (5, 'y')"
            )
            is None
        )
    cowsync.alter(cow, "books", f"RENAME CONSTRAINT {FK} TO written_by")
    assert fk_triggers(cow) == [
        ("authors_changes", "written_by", True),
        ("books_changes", "written_by", True),
    ]
    cowsync.disable(cow, "authors", force=True)
    assert fk_triggers(cow) == [("books_changes", "written_by", True)]
    cowsync.disable(cow, "books", force=True)
    assert fk_triggers(cow) == []
    assert fk_functions(cow) == []
    cow.execute("DELETE FROM books")
    cow.execute("DELETE FROM authors")
    cow.execute("ALTER TABLE books DROP CONSTRAINT written_by")
    assert snapshot_diff(before, catalog_snapshot(cow, None)) == []


def test_a_name_the_parent_uses_for_a_check_stays_immediate(cow):
    cow.execute(
        f"""
        CREATE TABLE authors (id int PRIMARY KEY, CONSTRAINT shared CHECK (id > 0));
        CREATE TABLE books (id int PRIMARY KEY,
                            author_id int CONSTRAINT shared REFERENCES authors {DEFERRED});
        INSERT INTO authors VALUES (1);
        INSERT INTO books VALUES (1, 1);
        """
    )
    cowsync.enable(cow, "authors")
    cowsync.enable(cow, "books")
    assert fk_triggers(cow) == [("books_changes", "shared", True)]
    with cowsync.session(cow, "S"):
        cow.execute("BEGIN")
        assert error_of(cow, "DELETE FROM authors WHERE id = 1") == ("23503", "shared")
        cow.execute("ROLLBACK")
        assert (
            commit_error(cow, "INSERT INTO books VALUES (2, 2)", "INSERT INTO authors VALUES (2)")
            is None
        )


def test_hardened_agents_get_deferred_checks_too(cow, make_role, dsn):
    make_authors_books(cow)
    agent = make_role(login=True)
    cow.execute(
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON authors, books TO {}").format(
            sql.Identifier(agent)
        )
    )
    assert cowsync.harden(cow, agent_roles=[agent]) == []
    assert fetch(
        cow,
        "SELECT has_function_privilege(%s, 'cowsync.fk_check_1()', 'EXECUTE')",
        (agent,),
    ) == [(False,)]
    agent_dsn = psycopg.conninfo.make_conninfo(dsn, user=agent)
    with psycopg.connect(agent_dsn, autocommit=True) as conn, cowsync.session(conn, "agent-S"):
        assert (
            commit_error(
                conn,
                "INSERT INTO books VALUES (10, 50, 'early')",
                "INSERT INTO authors VALUES (50, 'late')",
            )
            is None
        )
        error = commit_error(conn, "INSERT INTO books VALUES (11, 51, 'never')")
        assert isinstance(error, psycopg.errors.ForeignKeyViolation)
        error = commit_error(conn, "DELETE FROM authors WHERE id = 1")
        assert isinstance(error, psycopg.errors.ForeignKeyViolation)
        assert fetch(conn, "SELECT id FROM books ORDER BY id") == [(1,), (2,), (3,), (10,)]


def test_an_upgrade_installs_the_checks_on_tables_enabled_before_them(conn, monkeypatch):
    """An engine from before deferred checks had none: deploying this one adds them, and
    a custom session variable is the one the check binds."""
    config = cowsync.CowConfig(
        session_variable="cow.sid",
        operation_variable="cow.op",
        visible_operations_variable="cow.vis",
    )
    cowsync.deploy(conn, config)
    make_authors_books(conn)
    for table in ("authors", "books"):
        conn.execute(
            sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(FK), changes_of(conn, table))
        )
    conn.execute("DROP FUNCTION cowsync.fk_check_1(), cowsync.fk_check_2()")
    monkeypatch.setattr(cowsync.install, "ENGINE_VERSION", NEXT)
    assert cowsync.deploy(conn).changed
    assert fk_triggers(conn) == [("authors_changes", FK, True), ("books_changes", FK, True)]
    with cowsync.session(conn, "S", config=config):
        assert (
            commit_error(
                conn,
                "INSERT INTO books VALUES (10, 50, 'early')",
                "INSERT INTO authors VALUES (50, 'late')",
            )
            is None
        )
        error = commit_error(conn, "INSERT INTO books VALUES (11, 51, 'never')")
        assert isinstance(error, psycopg.errors.ForeignKeyViolation)
        assert fetch(conn, "SELECT current_setting('cow.sid')") == [("S",)]


# --- MATCH FULL, referential actions, change-store indexes ----------------------------------------

REGIONS = """
CREATE TABLE regions (a int, b int, PRIMARY KEY (a, b));
INSERT INTO regions VALUES (1, 1);
CREATE TABLE shops (id int PRIMARY KEY, a int, b int, CONSTRAINT shops_region
                    FOREIGN KEY (a, b) REFERENCES regions MATCH FULL {extra});
INSERT INTO shops VALUES (1, 1, 1), (2, NULL, NULL);
"""


@pytest.mark.parametrize("extra", ["", DEFERRED], ids=["immediate", "deferred"])
def test_match_full_refuses_a_key_part_null_as_the_table_does(cow, extra):
    """MATCH FULL: all key columns NULL (no reference) or none; a mix raises 23503."""
    writes = ("INSERT INTO shops VALUES (3, 1, NULL)", "UPDATE shops SET b = NULL WHERE id = 1")
    cow.execute("CREATE SCHEMA plain; SET search_path = plain")
    cow.execute(REGIONS.format(extra=extra))
    expected = [first_error(cow, statement) for statement in writes]
    cow.execute("RESET search_path; DROP SCHEMA plain CASCADE")
    cow.execute(REGIONS.format(extra=extra))
    cowsync.enable(cow, "regions")
    cowsync.enable(cow, "shops")
    with cowsync.session(cow, "S"):
        for statement, want in zip(writes, expected):
            got = first_error(cow, statement)
            assert isinstance(want, psycopg.errors.ForeignKeyViolation)
            assert isinstance(got, psycopg.errors.ForeignKeyViolation), statement
            assert (got.diag.message_primary, got.diag.message_detail) == (
                want.diag.message_primary,
                want.diag.message_detail,
            )
            assert got.diag.constraint_name == "shops_region"
        assert first_error(cow, "INSERT INTO shops VALUES (4, NULL, NULL)") is None
        assert fetch(cow, "SELECT id, a, b FROM shops ORDER BY id") == [
            (1, 1, 1),
            (2, None, None),
            (4, None, None),
        ]


ACTIONS = [
    ("CASCADE", "NO ACTION"),
    ("SET NULL", "NO ACTION"),
    ("NO ACTION", "CASCADE"),
    ("NO ACTION", "SET NULL"),
]


@pytest.mark.parametrize(("on_delete", "on_update"), ACTIONS)
@pytest.mark.parametrize(
    "timing",
    ["DEFERRABLE INITIALLY IMMEDIATE", DEFERRED + "+SET CONSTRAINTS ALL IMMEDIATE"],
    ids=["initially-immediate", "set-immediate"],
)
def test_a_referential_action_runs_before_the_no_action_check(cow, on_delete, on_update, timing):
    """PostgreSQL never defers CASCADE / SET NULL: they run in the statement, so the
    statement that deletes or re-keys a parent is not refused for the children the
    action is about to handle, even when the other side's NO ACTION check is immediate."""
    extra, _, set_constraints = timing.partition("+")
    statements = ["DELETE FROM authors WHERE id = 1", "UPDATE authors SET id = 20 WHERE id = 2"]
    books = "SELECT id, author_id FROM books ORDER BY id"

    def outcomes() -> list[Any]:
        results = []
        for statement in statements:
            error = first_error(cow, *[s for s in (set_constraints, statement) if s])
            results.append(error.diag.sqlstate if error else fetch(cow, books))
        return results

    cow.execute("CREATE SCHEMA plain; SET search_path = plain")
    make_authors_books(cow, extra, on_delete, on_update, enable=())
    expected = outcomes()
    cow.execute("RESET search_path; DROP SCHEMA plain CASCADE")
    make_authors_books(cow, extra, on_delete, on_update)
    with cowsync.session(cow, "S"):
        assert outcomes() == expected


TEAMS = """
CREATE TABLE teams (id int PRIMARY KEY, code text UNIQUE NOT NULL);
INSERT INTO teams VALUES (1, 'red'), (2, 'blue');
CREATE TABLE players (id int PRIMARY KEY,
                      team text REFERENCES teams (code) ON DELETE {on_delete} {extra});
INSERT INTO players VALUES (1, 'red'), (2, 'blue');
"""


@pytest.mark.parametrize("on_delete", ["NO ACTION", "CASCADE"])
@pytest.mark.parametrize(
    "timing",
    ["DEFERRABLE INITIALLY IMMEDIATE", DEFERRED + "+SET CONSTRAINTS ALL IMMEDIATE"],
    ids=["initially-immediate", "set-immediate"],
)
def test_a_parent_re_keyed_keeps_the_unique_value_it_is_referenced_by(cow, on_delete, timing):
    """The old key's tombstone is written before the new key's row: a check that fires
    in between must not take the referenced value the new row keeps for gone."""
    extra, _, set_constraints = timing.partition("+")
    statements = [
        "UPDATE teams SET id = 9 WHERE id = 1",
        "UPDATE teams SET id = 8, code = 'gold' WHERE id = 9",
        "DELETE FROM teams WHERE id = 2",
    ]

    def outcomes() -> list[Any]:
        results = []
        for statement in statements:
            error = first_error(cow, *[s for s in (set_constraints, statement) if s])
            results.append(
                error.diag.sqlstate
                if error
                else fetch(cow, "SELECT id, code FROM teams ORDER BY id")
                + fetch(cow, "SELECT id, team FROM players ORDER BY id")
            )
        return results

    cow.execute("CREATE SCHEMA plain; SET search_path = plain")
    cow.execute(TEAMS.format(on_delete=on_delete, extra=extra))
    expected = outcomes()
    cow.execute("RESET search_path; DROP SCHEMA plain CASCADE")
    cow.execute(TEAMS.format(on_delete=on_delete, extra=extra))
    cowsync.enable(cow, "teams")
    cowsync.enable(cow, "players")
    with cowsync.session(cow, "S"):
        assert outcomes() == expected
    assert expected[0] == [(2, "blue"), (9, "red"), (1, "red"), (2, "blue")]


def change_store_indexes(conn: psycopg.Connection[Any], table: str) -> list[str]:
    """The definitions of the change store's indexes for unique, exclusion and FK checks."""
    return [
        definition.split(" USING ", 1)[1]
        for (definition,) in fetch(
            conn,
            "SELECT indexdef FROM pg_indexes WHERE tablename = %s "
            "AND indexname NOT LIKE '%%\\_current' AND indexname NOT LIKE '%%\\_history' "
            "ORDER BY indexdef",
            (table,),
        )
    ]


def test_a_changed_constraint_leaves_no_change_store_index_behind(cow):
    make_authors_books(cow)
    cowsync.alter(cow, "authors", "ADD CONSTRAINT authors_name_key UNIQUE (name)")
    assert change_store_indexes(cow, "authors_changes") == ["btree (name)"]
    assert change_store_indexes(cow, "books_changes") == ["btree (author_id)"]
    cowsync.alter(
        cow,
        "authors",
        "DROP CONSTRAINT authors_name_key, ADD COLUMN code text, "
        "ADD CONSTRAINT authors_code_key UNIQUE (code)",
    )
    assert change_store_indexes(cow, "authors_changes") == ["btree (code)"]
    cowsync.alter(
        cow,
        "books",
        f"DROP CONSTRAINT {FK}, ADD COLUMN author_code text, "
        "ADD CONSTRAINT books_author_code_fkey FOREIGN KEY (author_code) "
        f"REFERENCES {text(cow, base_of(cow, 'authors'))} (code)",
    )
    assert change_store_indexes(cow, "books_changes") == ["btree (author_code)"]
    cowsync.alter(cow, "books", "DROP CONSTRAINT books_author_code_fkey")
    cowsync.alter(cow, "authors", "DROP CONSTRAINT authors_code_key")
    assert change_store_indexes(cow, "books_changes") == []
    assert change_store_indexes(cow, "authors_changes") == []
