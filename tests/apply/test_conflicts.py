"""Conflicts at commit: a base row changed after the session first touched it."""

from __future__ import annotations

import datetime as dt

import pytest

import cowsync
from tests.apply._state import base_state, rows, session_ids, session_state, write
from tests.apply._threads import Background, wait_until_blocked

ANN = {"id": 1, "name": "ann", "tier": "gold", "credit": 100}
BOB = {"id": 2, "name": "bob", "tier": "basic", "credit": 20}
PLUM = {"id": 3, "customer_id": 2, "item": "plum", "qty": 3}


@pytest.fixture
def production(connect):
    """A connection with no session: what the application does meanwhile."""
    return connect()


# --- abort ----------------------------------------------------------------------------------


def test_abort_lists_each_conflict_with_before_base_and_session_values(shop, production):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    write(shop, "s1", "a", "DELETE FROM orders WHERE id = 3")
    write(shop, "s1", "a", "INSERT INTO customers (id, name) VALUES (10, 'dee')")
    production.execute("UPDATE customers SET credit = 7 WHERE id = 1")
    production.execute("UPDATE orders SET qty = 30 WHERE id = 3")
    production.execute("INSERT INTO customers (id, name, tier) VALUES (10, 'dan', 'vip')")

    with pytest.raises(cowsync.ConflictError) as caught:
        cowsync.commit(shop, "s1")

    found = {(c.table, c.key["id"]): c for c in caught.value.conflicts}
    assert set(found) == {("public.customers", 1), ("public.customers", 10), ("public.orders", 3)}
    updated = found["public.customers", 1]
    assert (updated.kind, updated.resolution) == ("update", "abort")
    assert updated.before == ANN
    assert updated.base == {**ANN, "credit": 7}
    assert updated.session == {**ANN, "credit": 5}
    deleted = found["public.orders", 3]
    assert deleted.kind == "delete"
    assert (deleted.before, deleted.base, deleted.session) == (PLUM, {**PLUM, "qty": 30}, None)
    inserted = found["public.customers", 10]
    assert inserted.kind == "insert"
    assert inserted.before is None
    assert inserted.base == {"id": 10, "name": "dan", "tier": "vip", "credit": 0}
    assert inserted.session == {"id": 10, "name": "dee", "tier": "basic", "credit": 0}
    assert "on_conflict" in str(caught.value)


def test_abort_applies_nothing_and_keeps_the_session_intact(shop, production):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    write(shop, "s1", "b", "UPDATE orders SET qty = 9 WHERE id = 1")  # clean, other table
    write(shop, "s1", "b", "INSERT INTO customers (id, name) VALUES (10, 'dee')")  # clean
    production.execute("UPDATE customers SET credit = 7 WHERE id = 1")
    base_before = base_state(shop)
    session_before = session_state(shop, "s1")

    with pytest.raises(cowsync.ConflictError):
        cowsync.commit(shop, "s1")

    assert base_state(shop) == base_before
    assert session_state(shop, "s1") == session_before


def test_abort_is_the_default_and_a_deleted_base_row_is_a_conflict(shop, production):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 3")
    production.execute("DELETE FROM customers WHERE id = 3")

    with pytest.raises(cowsync.ConflictError) as caught:
        cowsync.commit(shop, "s1")

    (conflict,) = caught.value.conflicts
    assert (conflict.kind, conflict.base) == ("update", None)
    assert conflict.before == {"id": 3, "name": "cy", "tier": "basic", "credit": 0}


def test_a_base_change_before_the_session_touched_the_row_is_no_conflict(shop, production):
    production.execute("UPDATE customers SET credit = 7 WHERE id = 1")
    write(shop, "s1", "a", "UPDATE customers SET tier = 'vip' WHERE id = 1")

    result = cowsync.commit(shop, "s1")

    assert result.conflicts == []
    assert rows(shop, "customers")[0] == (1, "ann", "vip", 7)


def test_production_changes_to_rows_the_session_never_touched_are_no_conflict(shop, production):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    production.execute("UPDATE customers SET credit = 7 WHERE id = 2")
    production.execute("DELETE FROM orders WHERE id = 1")

    result = cowsync.commit(shop, "s1")

    assert result.conflicts == []
    assert base_state(shop)["customers"][:2] == [(1, "ann", "gold", 5), (2, "bob", "basic", 7)]


def test_conflicts_of_operations_not_chosen_do_not_block_a_partial_commit(shop, production):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    write(shop, "s1", "b", "UPDATE customers SET credit = 6 WHERE id = 2")
    production.execute("UPDATE customers SET credit = 7 WHERE id = 1")

    result = cowsync.commit(shop, "s1", operations=["b"])

    assert result.conflicts == []
    assert rows(shop, "customers")[:2] == [(1, "ann", "gold", 7), (2, "bob", "basic", 6)]
    with pytest.raises(cowsync.ConflictError):
        cowsync.commit(shop, "s1")


def test_a_change_undone_in_the_session_never_overwrites_production(shop, production):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    write(shop, "s1", "b", "UPDATE customers SET credit = 100 WHERE id = 1")
    production.execute("UPDATE customers SET credit = 7 WHERE id = 1")

    result = cowsync.commit(shop, "s1")

    assert result.conflicts == []
    assert rows(shop, "customers")[0] == (1, "ann", "gold", 7)


def test_after_a_partial_commit_conflicts_are_judged_against_the_new_base(shop, production):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    write(shop, "s1", "b", "UPDATE customers SET tier = 'vip' WHERE id = 1")
    cowsync.commit(shop, "s1", operations=["a"])
    production.execute("UPDATE customers SET name = 'anne' WHERE id = 1")

    with pytest.raises(cowsync.ConflictError) as caught:
        cowsync.commit(shop, "s1")

    (conflict,) = caught.value.conflicts
    assert conflict.before == {**ANN, "credit": 5}
    assert conflict.base == {**ANN, "credit": 5, "name": "anne"}
    result = cowsync.commit(shop, "s1", on_conflict="merge")
    assert [c.resolution for c in result.conflicts] == ["merge"]
    assert rows(shop, "customers")[0] == (1, "anne", "vip", 5)


# --- skip -----------------------------------------------------------------------------------


def test_skip_keeps_the_base_row_applies_the_rest_and_reports_it(shop, production):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    write(shop, "s1", "a", "UPDATE customers SET credit = 6 WHERE id = 2")
    write(shop, "s1", "b", "DELETE FROM orders WHERE id = 3")
    write(shop, "s1", "b", "INSERT INTO customers (id, name) VALUES (10, 'dee')")
    production.execute("UPDATE customers SET credit = 7 WHERE id = 1")
    production.execute("UPDATE orders SET qty = 30 WHERE id = 3")
    production.execute("INSERT INTO customers (id, name) VALUES (10, 'dan')")

    result = cowsync.commit(shop, "s1", on_conflict="skip")

    assert sorted((c.table, c.key["id"], c.resolution) for c in result.conflicts) == [
        ("public.customers", 1, "skip"),
        ("public.customers", 10, "skip"),
        ("public.orders", 3, "skip"),
    ]
    assert base_state(shop) == {
        "customers": [
            (1, "ann", "gold", 7),
            (2, "bob", "basic", 6),
            (3, "cy", "basic", 0),
            (10, "dan", "basic", 0),
        ],
        "orders": [(1, 1, "apple", 1), (2, 2, "pear", 2), (3, 2, "plum", 30)],
    }
    assert result.applied == {"public.customers": {"insert": 0, "update": 1, "delete": 0}}
    # The skipped rows are dropped from the session.
    assert cowsync.diff(shop, "s1") == []
    assert session_ids(shop) == []


def test_skip_in_a_partial_commit_keeps_the_operations_not_chosen(shop, production):
    # Skip drops the chosen operations' change of the row, not later operations' changes.
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    write(shop, "s1", "b", "UPDATE customers SET tier = 'vip' WHERE id = 1")
    production.execute("UPDATE customers SET credit = 7 WHERE id = 1")

    result = cowsync.commit(shop, "s1", operations=["a"], on_conflict="skip")

    assert [c.resolution for c in result.conflicts] == ["skip"]
    assert rows(shop, "customers")[0] == (1, "ann", "gold", 7)
    # b was not part of the commit: it is still there to review.
    assert [o.operation_id for o in cowsync.operations(shop, "s1")] == ["b"]
    assert rows(shop, "customers", "s1")[0][2] == "vip"


# --- overwrite ------------------------------------------------------------------------------


def test_overwrite_lets_the_session_win_a_changed_row(shop, production):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    production.execute("UPDATE customers SET credit = 7, tier = 'vip' WHERE id = 1")

    result = cowsync.commit(shop, "s1", on_conflict="overwrite")

    (conflict,) = result.conflicts
    assert (conflict.key, conflict.resolution) == ({"id": 1}, "overwrite")
    assert rows(shop, "customers")[0] == (1, "ann", "gold", 5)


def test_overwrite_brings_back_a_row_deleted_meanwhile(shop, production):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 3")
    production.execute("DELETE FROM customers WHERE id = 3")

    result = cowsync.commit(shop, "s1", on_conflict="overwrite")

    assert [c.key for c in result.conflicts] == [{"id": 3}]
    assert rows(shop, "customers")[2] == (3, "cy", "basic", 5)


def test_overwrite_deletes_a_row_changed_meanwhile(shop, production):
    write(shop, "s1", "a", "DELETE FROM orders WHERE id = 3")
    production.execute("UPDATE orders SET qty = 30 WHERE id = 3")

    cowsync.commit(shop, "s1", on_conflict="overwrite")

    assert [r[0] for r in rows(shop, "orders")] == [1, 2]


def test_overwrite_of_a_delete_whose_row_is_already_gone_is_harmless(shop, production):
    write(shop, "s1", "a", "DELETE FROM orders WHERE id = 3")
    production.execute("DELETE FROM orders WHERE id = 3")

    result = cowsync.commit(shop, "s1", on_conflict="overwrite")

    assert [r[0] for r in rows(shop, "orders")] == [1, 2]
    assert result.applied == {}


def test_overwrite_replaces_a_row_inserted_meanwhile_under_the_same_key(shop, production):
    write(shop, "s1", "a", "INSERT INTO customers (id, name, credit) VALUES (10, 'dee', 4)")
    production.execute("INSERT INTO customers (id, name, tier) VALUES (10, 'dan', 'vip')")

    result = cowsync.commit(shop, "s1", on_conflict="overwrite")

    assert [(c.kind, c.resolution) for c in result.conflicts] == [("insert", "overwrite")]
    assert rows(shop, "customers")[-1] == (10, "dee", "basic", 4)
    assert len(rows(shop, "customers")) == 4


# --- merge ----------------------------------------------------------------------------------


def test_merge_combines_changes_to_different_columns(shop, production):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    write(shop, "s1", "a", "UPDATE customers SET credit = 6 WHERE id = 2")  # no conflict
    production.execute("UPDATE customers SET tier = 'vip' WHERE id = 1")

    result = cowsync.commit(shop, "s1", on_conflict="merge")

    (conflict,) = result.conflicts
    assert (conflict.key, conflict.resolution, conflict.columns) == ({"id": 1}, "merge", ())
    assert rows(shop, "customers")[:2] == [(1, "ann", "vip", 5), (2, "bob", "basic", 6)]
    assert session_ids(shop) == []


def test_merge_accepts_both_sides_making_the_same_change(shop, production):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5, tier = 'vip' WHERE id = 1")
    production.execute("UPDATE customers SET credit = 5, name = 'anne' WHERE id = 1")

    cowsync.commit(shop, "s1", on_conflict="merge")

    assert rows(shop, "customers")[0] == (1, "anne", "vip", 5)


def test_merge_refuses_a_column_both_sides_changed_differently(shop, production):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5, tier = 'vip' WHERE id = 1")
    write(shop, "s1", "a", "UPDATE customers SET credit = 6 WHERE id = 2")
    production.execute("UPDATE customers SET credit = 7, name = 'anne' WHERE id = 1")
    base_before = base_state(shop)
    session_before = session_state(shop, "s1")

    with pytest.raises(cowsync.ConflictError) as caught:
        cowsync.commit(shop, "s1", on_conflict="merge")

    (conflict,) = caught.value.conflicts
    assert conflict.key == {"id": 1}
    assert conflict.columns == ("credit",)
    assert conflict.base == {"id": 1, "name": "anne", "tier": "gold", "credit": 7}
    assert conflict.session == {"id": 1, "name": "ann", "tier": "vip", "credit": 5}
    assert base_state(shop) == base_before
    assert session_state(shop, "s1") == session_before


def test_merge_refuses_a_delete_of_a_row_changed_meanwhile(shop, production):
    write(shop, "s1", "a", "DELETE FROM orders WHERE id = 3")
    production.execute("UPDATE orders SET qty = 30 WHERE id = 3")

    with pytest.raises(cowsync.ConflictError) as caught:
        cowsync.commit(shop, "s1", on_conflict="merge")

    assert [c.kind for c in caught.value.conflicts] == ["delete"]
    assert rows(shop, "orders")[2] == (3, 2, "plum", 30)


def test_merge_refuses_an_update_of_a_row_deleted_meanwhile(shop, production):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 3")
    production.execute("DELETE FROM customers WHERE id = 3")

    with pytest.raises(cowsync.ConflictError):
        cowsync.commit(shop, "s1", on_conflict="merge")

    assert [r[0] for r in rows(shop, "customers")] == [1, 2]


def test_a_reviewer_in_another_time_zone_sees_no_false_conflict(cow, connect):
    # Conflicts compare rows as jsonb, and to_jsonb(timestamptz) follows the TimeZone
    # setting: the first-touch image must not be compared as the writer rendered it.
    cow.execute(
        "CREATE TABLE events (id int PRIMARY KEY, at timestamptz NOT NULL, n int);"
        "INSERT INTO events VALUES (1, '2024-01-01 00:00+00', 0)"
    )
    cowsync.enable(cow, "events")
    agent = connect(options="-c TimeZone=UTC")
    reviewer = connect(options="-c TimeZone=America/New_York")
    write(agent, "s1", "a", "UPDATE events SET n = 1 WHERE id = 1")

    result = cowsync.commit(reviewer, "s1")

    assert result.conflicts == []
    assert cow.execute("SELECT n FROM events").fetchone() == (1,)


def test_merge_across_time_zones_keeps_a_timestamp_nobody_changed(cow, connect):
    cow.execute(
        "CREATE TABLE events (id int PRIMARY KEY, at timestamptz NOT NULL, n int, note text);"
        "INSERT INTO events VALUES (1, '2024-01-01 00:00+00', 0, 'x')"
    )
    cowsync.enable(cow, "events")
    agent = connect(options="-c TimeZone=UTC")
    reviewer = connect(options="-c TimeZone=Asia/Tokyo")
    write(agent, "s1", "a", "UPDATE events SET n = 1 WHERE id = 1")
    agent.execute("UPDATE events SET at = at + interval '1 hour', note = 'y' WHERE id = 1")

    result = cowsync.commit(reviewer, "s1", on_conflict="merge")

    assert [c.columns for c in result.conflicts] == [()]
    assert agent.execute("SELECT at, n, note FROM events").fetchone() == (
        dt.datetime(2024, 1, 1, 1, tzinfo=dt.timezone.utc),
        1,
        "y",
    )


# --- racing production ------------------------------------------------------------------------


def test_a_production_write_committed_while_the_commit_waits_is_a_conflict(shop, connect):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    production = connect(autocommit=False)
    production.execute("UPDATE customers SET credit = 7 WHERE id = 1")  # not committed yet

    run = Background(cowsync.commit, shop, "s1")
    wait_until_blocked(connect(), shop.info.backend_pid)
    production.commit()
    run.join()

    assert isinstance(run.error, cowsync.ConflictError)
    assert rows(connect(), "customers")[0] == (1, "ann", "gold", 7)
    assert [c.key for c in cowsync.diff(connect(), "s1")] == [{"id": 1}]
