"""Reviewing sessions: sessions(), annotate(), operations() and dependencies()."""

from __future__ import annotations

import pytest

import cowsync
from tests.apply._state import session_ids, write

# --- sessions() and annotate() ----------------------------------------------------------------


def test_sessions_lists_each_session_with_its_tables_operations_and_rows(shop):
    # "zeta" writes first, so oldest-first order is not alphabetical order.
    write(shop, "zeta", "z1", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "alpha", "a1", "INSERT INTO customers (name) VALUES ('dee')")
    write(shop, "alpha", "a2", "UPDATE orders SET qty = 9 WHERE id = 1")
    write(shop, "alpha", "a2", "DELETE FROM orders WHERE id = 3")

    found = cowsync.sessions(shop)

    assert [s.session_id for s in found] == ["zeta", "alpha"]
    zeta, alpha = found
    assert zeta.tables == ("public.customers",)
    assert (zeta.operations, zeta.rows) == (1, 1)
    assert alpha.tables == ("public.customers", "public.orders")
    assert (alpha.operations, alpha.rows) == (2, 3)
    for info in found:
        assert info.label is None
        assert info.metadata == {}
        assert info.last_write_at is not None
        assert info.created_at <= info.last_write_at
    assert zeta.created_at <= alpha.created_at


def test_sessions_last_write_time_follows_the_latest_write(shop):
    write(shop, "s1", "op1", "UPDATE customers SET credit = 1 WHERE id = 1")
    first = cowsync.sessions(shop)[0].last_write_at
    write(shop, "s1", "op2", "UPDATE orders SET qty = 5 WHERE id = 2")

    later = cowsync.sessions(shop)[0].last_write_at

    assert first is not None and later is not None
    assert later > first


def test_sessions_row_count_leaves_out_rows_inserted_then_deleted(shop):
    write(shop, "s1", "op1", "INSERT INTO customers (id, name) VALUES (50, 'tmp')")
    write(shop, "s1", "op2", "DELETE FROM customers WHERE id = 50")
    write(shop, "s1", "op2", "UPDATE orders SET qty = 7 WHERE id = 1")

    (info,) = cowsync.sessions(shop)

    assert info.rows == 1
    assert info.operations == 2


def test_annotate_attaches_a_label_and_metadata(shop):
    write(shop, "s1", "op1", "UPDATE customers SET credit = 1 WHERE id = 1")

    cowsync.annotate(shop, "s1", label="restock run", metadata={"agent": "planner", "n": 3})

    (info,) = cowsync.sessions(shop)
    assert info.label == "restock run"
    assert info.metadata == {"agent": "planner", "n": 3}


def test_annotate_merges_metadata_and_keeps_the_label_unless_given(shop):
    cowsync.annotate(shop, "s1", label="first", metadata={"agent": "planner", "user": "kim"})

    cowsync.annotate(shop, "s1", metadata={"user": "lee", "prompt": "restock"})

    (info,) = cowsync.sessions(shop)
    assert info.label == "first"
    assert info.metadata == {"agent": "planner", "user": "lee", "prompt": "restock"}

    cowsync.annotate(shop, "s1", label="second")
    assert cowsync.sessions(shop)[0].label == "second"
    assert cowsync.sessions(shop)[0].metadata["prompt"] == "restock"


def test_annotating_a_new_session_lists_it_empty(shop):
    cowsync.annotate(shop, "planned", label="not started")

    (info,) = cowsync.sessions(shop)

    assert info.session_id == "planned"
    assert (info.tables, info.operations, info.rows, info.last_write_at) == ((), 0, 0, None)


def test_sessions_forgets_a_committed_session_but_keeps_an_annotated_one(shop):
    write(shop, "plain", "op1", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "noted", "op1", "UPDATE customers SET credit = 2 WHERE id = 2")
    cowsync.annotate(shop, "noted", label="keep me")

    cowsync.commit(shop, "plain")
    cowsync.commit(shop, "noted")

    (info,) = cowsync.sessions(shop)
    assert info.session_id == "noted"
    assert info.label == "keep me"
    assert (info.operations, info.rows, info.tables) == (0, 0, ())


def test_sessions_does_not_list_previews(shop):
    write(shop, "s1", "op1", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "s1", "op2", "UPDATE customers SET credit = 2 WHERE id = 2")
    with cowsync.session(shop, "s1", visible_operations=["op1"]):
        shop.execute("SELECT * FROM customers").fetchall()

    assert session_ids(shop) == ["s1"]
    assert cowsync.sessions(shop)[0].rows == 2


def test_annotate_refuses_a_malformed_session_id(shop):
    with pytest.raises(cowsync.ConfigurationError):
        cowsync.annotate(shop, "bad id, with comma", label="x")
    assert cowsync.sessions(shop) == []


# --- operations() ---------------------------------------------------------------------------


def test_operations_come_in_order_of_first_write(shop):
    for op in ("zulu", "alpha", "mike"):
        write(shop, "s1", op, "UPDATE customers SET credit = credit + 1 WHERE id = 1")
    # Writing again under the first operation does not move it.
    write(shop, "s1", "zulu", "UPDATE orders SET qty = 4 WHERE id = 1")

    found = cowsync.operations(shop, "s1")

    assert [o.operation_id for o in found] == ["zulu", "alpha", "mike"]


def test_operations_count_rows_inserted_updated_and_deleted_per_table(shop):
    write(shop, "s1", "add", "INSERT INTO customers (name) VALUES ('dee'), ('eve')")
    write(shop, "s1", "edit", "UPDATE customers SET credit = 5 WHERE id IN (1, 2)")
    write(shop, "s1", "edit", "DELETE FROM orders WHERE id = 3")
    write(shop, "s1", "touch", "UPDATE customers SET tier = 'gold' WHERE name = 'dee'")

    add, edit, touch = cowsync.operations(shop, "s1")

    assert (add.operation_id, add.tables) == ("add", ("public.customers",))
    assert (add.inserted, add.updated, add.deleted) == (2, 0, 0)
    assert (edit.operation_id, edit.tables) == ("edit", ("public.customers", "public.orders"))
    assert (edit.inserted, edit.updated, edit.deleted) == (0, 2, 1)
    # Updating a row the session inserted is an update for this operation.
    assert (touch.operation_id, touch.tables) == ("touch", ("public.customers",))
    assert (touch.inserted, touch.updated, touch.deleted) == (0, 1, 0)
    for info in (add, edit, touch):
        assert info.last_write_at is not None
        assert info.first_write_at <= info.last_write_at
    assert add.first_write_at <= edit.first_write_at <= touch.first_write_at


def test_operations_of_an_unknown_session_is_empty(shop):
    write(shop, "s1", "op1", "UPDATE customers SET credit = 1 WHERE id = 1")

    assert cowsync.operations(shop, "nobody") == []


def test_operations_of_one_session_ignore_other_sessions(shop):
    write(shop, "s1", "shared-name", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "s2", "shared-name", "DELETE FROM orders WHERE id = 1")
    write(shop, "s2", "other", "DELETE FROM orders WHERE id = 2")

    (only,) = cowsync.operations(shop, "s1")

    assert only.operation_id == "shared-name"
    assert only.tables == ("public.customers",)
    assert (only.inserted, only.updated, only.deleted) == (0, 1, 0)


# --- dependencies() -------------------------------------------------------------------------


def test_independent_operations_depend_on_nothing(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "s1", "b", "UPDATE orders SET qty = 2 WHERE id = 2")
    write(shop, "s1", "c", "INSERT INTO customers (name) VALUES ('dee')")

    assert cowsync.dependencies(shop, "s1") == {"a": set(), "b": set(), "c": set()}


def test_an_operation_depends_on_an_earlier_one_that_wrote_the_same_row(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "s1", "b", "UPDATE customers SET tier = 'vip' WHERE id = 1")
    write(shop, "s1", "c", "UPDATE customers SET credit = 3 WHERE id = 1")

    deps = cowsync.dependencies(shop, "s1")

    assert deps["a"] == set()
    assert deps["b"] == {"a"}
    assert deps["c"] >= {"b"}
    assert deps["c"] <= {"a", "b"}


def test_changing_a_row_an_earlier_operation_inserted_depends_on_it(shop):
    inserted = write(shop, "s1", "a", "INSERT INTO customers (name) VALUES ('dee') RETURNING id")
    new_id = inserted[0][0]
    write(shop, "s1", "b", "DELETE FROM customers WHERE id = %s", [new_id])

    assert cowsync.dependencies(shop, "s1") == {"a": set(), "b": {"a"}}


def test_a_child_row_depends_on_the_operation_that_inserted_its_parent(shop):
    inserted = write(shop, "s1", "a", "INSERT INTO customers (name) VALUES ('dee') RETURNING id")
    new_id = inserted[0][0]
    write(shop, "s1", "b", "INSERT INTO orders (customer_id, item) VALUES (%s, 'fig')", [new_id])
    write(shop, "s1", "c", "UPDATE orders SET customer_id = %s WHERE id = 1", [new_id])

    deps = cowsync.dependencies(shop, "s1")

    assert deps == {"a": set(), "b": {"a"}, "c": {"a"}}


def test_a_child_of_a_parent_that_existed_does_not_depend_on_who_updated_the_parent(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 7 WHERE id = 3")
    write(shop, "s1", "b", "INSERT INTO orders (customer_id, item) VALUES (3, 'fig')")

    assert cowsync.dependencies(shop, "s1") == {"a": set(), "b": set()}


def test_deleting_a_parent_depends_on_deleting_its_children_first(shop):
    write(shop, "s1", "a", "DELETE FROM orders WHERE customer_id = 2")
    write(shop, "s1", "b", "DELETE FROM customers WHERE id = 2")

    assert cowsync.dependencies(shop, "s1") == {"a": set(), "b": {"a"}}


def test_deleting_a_parent_depends_on_re_pointing_its_children_first(shop):
    write(shop, "s1", "a", "UPDATE orders SET customer_id = 1 WHERE customer_id = 2")
    write(shop, "s1", "b", "DELETE FROM customers WHERE id = 2")

    assert cowsync.dependencies(shop, "s1") == {"a": set(), "b": {"a"}}


def test_deleting_a_parent_depends_on_removing_a_child_the_session_inserted(shop):
    write(shop, "s1", "a", "INSERT INTO orders (id, customer_id, item) VALUES (40, 3, 'fig')")
    write(shop, "s1", "b", "DELETE FROM orders WHERE id = 40")
    write(shop, "s1", "c", "DELETE FROM customers WHERE id = 3")

    deps = cowsync.dependencies(shop, "s1")

    # Without b, committing {a, c} would insert an order for customer 3 and delete customer 3
    # (a bug once: only children the base had were considered).
    assert "b" in deps["c"]
    with pytest.raises(cowsync.DependencyError) as caught:
        cowsync.commit(shop, "s1", operations=["a", "c"])
    assert caught.value.missing == {"b"}


def test_deleting_a_parent_depends_on_removing_a_child_the_session_re_pointed_to_it(shop):
    write(shop, "s1", "a", "UPDATE orders SET customer_id = 3 WHERE id = 1")
    write(shop, "s1", "b", "DELETE FROM orders WHERE id = 1")
    write(shop, "s1", "c", "DELETE FROM customers WHERE id = 3")

    deps = cowsync.dependencies(shop, "s1")

    # Without b, committing {a, c} would point order 1 at customer 3 and delete customer 3.
    assert "b" in deps["c"]
    with pytest.raises(cowsync.DependencyError) as caught:
        cowsync.commit(shop, "s1", operations=["a", "c"])
    assert caught.value.missing == {"b"}


def test_dependencies_are_per_session(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "s2", "b", "UPDATE customers SET credit = 2 WHERE id = 1")

    assert cowsync.dependencies(shop, "s1") == {"a": set()}
    assert cowsync.dependencies(shop, "s2") == {"b": set()}
