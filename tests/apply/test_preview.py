"""Preview: a session read as if only some of its operations had happened."""

from __future__ import annotations

import pytest
from psycopg import errors, sql

import cowsync
from cowsync.binding import Binding, apply_binding
from tests.apply._state import base_state, change_store_sessions, rows, session_state, write


@pytest.fixture
def history(shop):
    """Session s1 with three independent operations."""
    write(shop, "s1", "credit", "UPDATE customers SET credit = 555 WHERE id = 1")
    write(shop, "s1", "signup", "INSERT INTO customers (id, name) VALUES (10, 'dee')")
    write(shop, "s1", "cancel", "DELETE FROM orders WHERE id = 3")
    return shop


def preview_rows(conn, table, visible):
    with cowsync.session(conn, "s1", visible_operations=visible):
        query = sql.SQL("SELECT * FROM {} ORDER BY id").format(sql.Identifier(table))
        return conn.execute(query).fetchall()


def test_a_preview_reads_as_if_only_the_chosen_operations_happened(history):
    customers = preview_rows(history, "customers", ["credit", "cancel"])
    orders = preview_rows(history, "orders", ["credit", "cancel"])

    assert customers == [(1, "ann", "gold", 555), (2, "bob", "basic", 20), (3, "cy", "basic", 0)]
    assert orders == [(1, 1, "apple", 1), (2, 2, "pear", 2)]


def test_previews_of_different_operations_differ_and_the_session_reads_everything(history):
    signup_only = preview_rows(history, "customers", ["signup"])

    assert signup_only == [
        (1, "ann", "gold", 100),
        (2, "bob", "basic", 20),
        (3, "cy", "basic", 0),
        (10, "dee", "basic", 0),
    ]
    assert rows(history, "customers", "s1") == [
        (1, "ann", "gold", 555),
        (2, "bob", "basic", 20),
        (3, "cy", "basic", 0),
        (10, "dee", "basic", 0),
    ]
    assert [r[0] for r in rows(history, "orders", "s1")] == [1, 2]


def test_a_preview_of_a_later_operation_includes_the_row_as_that_operation_left_it(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "s1", "b", "UPDATE customers SET tier = 'vip' WHERE id = 1")
    write(shop, "s1", "c", "UPDATE customers SET credit = 3 WHERE id = 1")

    assert preview_rows(shop, "customers", ["a"])[0] == (1, "ann", "gold", 1)
    assert preview_rows(shop, "customers", ["a", "b"])[0] == (1, "ann", "vip", 1)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE customers SET credit = 0 WHERE id = 2",
        "INSERT INTO customers (name) VALUES ('zed')",
        "DELETE FROM orders WHERE id = 1",
    ],
)
def test_writes_are_refused_during_a_preview(history, statement):
    before_session = session_state(history, "s1")
    before_base = base_state(history)

    with cowsync.session(history, "s1", visible_operations=["credit"]):
        with pytest.raises(errors.ReadOnlySqlTransaction) as caught:
            history.execute(statement)
        assert caught.value.diag.sqlstate == "25006"
        assert "preview" in str(caught.value)

    after_session = session_state(history, "s1")
    # The refused write changed neither the session (its preview copy aside) nor the base.
    for store in ("customers_changes", "orders_changes"):
        own = [r for r in after_session[store] if "~preview~" not in r[0]]
        assert own == before_session[store]
    assert after_session["operations"] == before_session["operations"]
    assert base_state(history) == before_base
    # Leaving the preview makes the session writable again.
    write(history, "s1", "later", "UPDATE customers SET credit = 0 WHERE id = 2")
    assert rows(history, "customers", "s1")[1] == (2, "bob", "basic", 0)


def test_a_preview_does_not_change_what_other_connections_see(history, connect):
    writer = connect()
    other_session = connect()
    production = connect()
    write(other_session, "s2", "x", "UPDATE customers SET tier = 's2' WHERE id = 3")

    with cowsync.session(history, "s1", visible_operations=["signup"]):
        assert len(history.execute("SELECT * FROM customers").fetchall()) == 4
        # The same session, not in preview, still reads and writes everything.
        assert rows(writer, "customers", "s1")[0] == (1, "ann", "gold", 555)
        write(writer, "s1", "more", "UPDATE customers SET credit = 1 WHERE id = 2")
        assert rows(writer, "customers", "s1")[1] == (2, "bob", "basic", 1)
        assert rows(other_session, "customers", "s2")[2] == (3, "cy", "s2", 0)
        assert [r[0] for r in rows(production, "customers")] == [1, 2, 3]
        assert [r[0] for r in rows(production, "orders")] == [1, 2, 3]
        # The preview itself is a snapshot of the chosen operations only.
        assert history.execute("SELECT credit FROM customers WHERE id = 2").fetchone() == (20,)


def test_a_preview_ends_with_its_block(history):
    with cowsync.session(history, "s1", visible_operations=["signup"]):
        pass

    settings = history.execute(
        "SELECT current_setting('app.session_id', true), "
        "current_setting('app.visible_operations', true)"
    ).fetchone()
    assert settings in (("", ""), (None, None))
    assert rows(history, "customers") == [
        (1, "ann", "gold", 100),
        (2, "bob", "basic", 20),
        (3, "cy", "basic", 0),
    ]


def test_a_binding_with_visible_operations_previews_in_one_statement(history):
    apply_binding(history, Binding("s1", None, ("cancel",)))
    try:
        assert [r[0] for r in history.execute("SELECT id FROM orders ORDER BY id")] == [1, 2]
        assert history.execute("SELECT credit FROM customers WHERE id = 1").fetchone() == (100,)
        with pytest.raises(errors.ReadOnlySqlTransaction):
            history.execute("DELETE FROM orders")
    finally:
        apply_binding(history, None)
    assert [r[0] for r in history.execute("SELECT id FROM orders ORDER BY id")] == [1, 2, 3]


def test_commit_removes_the_previews_of_the_session(history):
    for visible in (["credit"], ["signup", "cancel"]):
        preview_rows(history, "customers", visible)
    assert any("~preview~" in s for s in change_store_sessions(history))

    cowsync.commit(history, "s1", operations=["credit"])

    assert not any("~preview~" in s for s in change_store_sessions(history))
    assert history.execute(
        "SELECT count(*) FROM cowsync.sessions WHERE preview_of IS NOT NULL"
    ).fetchone() == (0,)


def test_discard_removes_the_previews_of_the_session(history):
    preview_rows(history, "orders", ["cancel"])

    cowsync.discard(history, "s1")

    assert change_store_sessions(history) == set()
    assert history.execute("SELECT count(*) FROM cowsync.sessions").fetchone() == (0,)


def test_a_preview_after_a_partial_commit_reads_the_new_base(history):
    cowsync.commit(history, "s1", operations=["credit"])

    customers = preview_rows(history, "customers", ["signup"])

    assert customers[0] == (1, "ann", "gold", 555)
    assert customers[-1] == (10, "dee", "basic", 0)


def test_preview_of_an_unknown_operation_shows_the_base(history):
    assert preview_rows(history, "customers", ["nope"]) == rows(history, "customers")


def test_committing_while_a_preview_is_bound_elsewhere_succeeds(history, connect):
    reviewer = connect()
    with cowsync.session(reviewer, "s1", visible_operations=["credit"]):
        result = cowsync.commit(history, "s1", operations=["credit"])
        assert result.applied == {"public.customers": {"insert": 0, "update": 1, "delete": 0}}
    assert rows(history, "customers")[0] == (1, "ann", "gold", 555)


def test_a_visible_operation_id_with_a_comma_is_refused_before_reaching_sql(history):
    with (
        pytest.raises(cowsync.ConfigurationError),
        cowsync.session(history, "s1", visible_operations=["credit,cancel"]),
    ):
        pass
    assert not any("~preview~" in s for s in change_store_sessions(history))
