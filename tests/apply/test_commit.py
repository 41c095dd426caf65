"""commit(): net effect applied to the bases, FK-safe, partial, atomic."""

from __future__ import annotations

import pytest
from psycopg import sql

import cowsync
from tests._mode import base_of
from tests.apply._state import base_state, rows, session_ids, session_state, write

ANN = (1, "ann", "gold", 100)
BOB = (2, "bob", "basic", 20)
CY = (3, "cy", "basic", 0)
APPLE = (1, 1, "apple", 1)
PEAR = (2, 2, "pear", 2)
PLUM = (3, 2, "plum", 3)


def no_changes(counts=None):
    return {"insert": 0, "update": 0, "delete": 0, **(counts or {})}


# --- committing everything ------------------------------------------------------------------


def test_commit_applies_a_new_parent_and_its_child_together(shop):
    (dee,) = write(shop, "s1", "a", "INSERT INTO customers (name) VALUES ('dee') RETURNING id")[0]
    write(shop, "s1", "b", "INSERT INTO orders (customer_id, item) VALUES (%s, 'fig')", [dee])

    result = cowsync.commit(shop, "s1")

    assert rows(shop, "customers") == [ANN, BOB, CY, (dee, "dee", "basic", 0)]
    assert rows(shop, "orders")[-1][1:] == (dee, "fig", 1)
    assert result.applied == {
        "public.customers": no_changes({"insert": 1}),
        "public.orders": no_changes({"insert": 1}),
    }
    assert result.operations == ["a", "b"]
    assert result.conflicts == []
    assert result.total == 2
    assert not result.nothing_to_commit


def test_commit_deletes_children_and_their_parent_together(shop):
    write(shop, "s1", "a", "DELETE FROM orders WHERE customer_id = 2")
    write(shop, "s1", "b", "DELETE FROM customers WHERE id = 2")

    result = cowsync.commit(shop, "s1")

    assert base_state(shop) == {"customers": [ANN, CY], "orders": [APPLE]}
    assert result.applied == {
        "public.customers": no_changes({"delete": 1}),
        "public.orders": no_changes({"delete": 2}),
    }


def test_commit_applies_inserts_updates_and_deletes_across_tables_in_one_go(shop):
    write(shop, "s1", "a", "INSERT INTO customers (id, name) VALUES (10, 'dee')")
    write(shop, "s1", "a", "UPDATE orders SET customer_id = 10 WHERE id = 1")
    write(shop, "s1", "b", "DELETE FROM orders WHERE id = 2")
    write(shop, "s1", "b", "UPDATE orders SET customer_id = 1 WHERE id = 3")
    write(shop, "s1", "c", "DELETE FROM customers WHERE id = 2")
    write(shop, "s1", "c", "UPDATE customers SET credit = credit + 1")
    session_view = {t: rows(shop, t, "s1") for t in ("customers", "orders")}

    cowsync.commit(shop, "s1")

    assert base_state(shop) == session_view
    assert base_state(shop) == {
        "customers": [(1, "ann", "gold", 101), (3, "cy", "basic", 1), (10, "dee", "basic", 1)],
        "orders": [(1, 10, "apple", 1), (3, 1, "plum", 3)],
    }


def test_commit_empties_the_session(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "s1", "b", "DELETE FROM orders WHERE id = 1")

    cowsync.commit(shop, "s1")

    assert cowsync.diff(shop, "s1") == []
    assert cowsync.operations(shop, "s1") == []
    assert session_ids(shop) == []
    assert session_state(shop, "s1") == {
        "customers_changes": [],
        "orders_changes": [],
        "operations": [],
        "sessions": [],
    }
    # The session reads the new base.
    assert rows(shop, "customers", "s1")[0] == (1, "ann", "gold", 1)


def test_commit_leaves_other_sessions_alone(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "s2", "a", "UPDATE customers SET tier = 'vip' WHERE id = 2")
    s2_before = session_state(shop, "s2")

    cowsync.commit(shop, "s1")

    assert session_state(shop, "s2") == s2_before
    assert rows(shop, "customers", "s2")[:2] == [(1, "ann", "gold", 1), (2, "bob", "vip", 20)]


def test_commit_skips_rows_updated_back_to_their_original_values(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 7 WHERE id = 1")
    write(shop, "s1", "b", "UPDATE customers SET credit = 100 WHERE id = 1")
    write(shop, "s1", "b", "INSERT INTO customers (id, name) VALUES (10, 'dee')")
    write(shop, "s1", "b", "DELETE FROM customers WHERE id = 10")
    xmin = sql.SQL("SELECT xmin::text FROM {} WHERE id = 1").format(base_of(shop, "customers"))
    xmin_before = shop.execute(xmin).fetchone()

    result = cowsync.commit(shop, "s1")

    assert result.nothing_to_commit
    assert result.applied == {}
    assert shop.execute(xmin).fetchone() == xmin_before
    assert session_ids(shop) == []


def test_committing_an_already_committed_session_raises_and_changes_nothing(shop):
    write(shop, "s1", "a", "INSERT INTO customers (name) VALUES ('dee')")
    cowsync.commit(shop, "s1")
    after_first = base_state(shop)

    with pytest.raises(cowsync.SessionNotFoundError, match="already committed or discarded"):
        cowsync.commit(shop, "s1")

    assert base_state(shop) == after_first


def test_committing_a_session_that_never_wrote_raises(shop):
    before = base_state(shop)

    with pytest.raises(cowsync.SessionNotFoundError, match="never wrote"):
        cowsync.commit(shop, "never-wrote")

    assert base_state(shop) == before


def test_committing_an_annotated_session_with_nothing_left_is_a_no_op(shop):
    cowsync.annotate(shop, "s1", label="kept")

    result = cowsync.commit(shop, "s1")

    assert result.nothing_to_commit and result.applied == {} and result.conflicts == []


def test_commit_reports_progress_per_table_and_kind(shop):
    write(shop, "s1", "a", "INSERT INTO customers (id, name) VALUES (10, 'dee'), (11, 'eve')")
    write(shop, "s1", "a", "DELETE FROM orders WHERE id = 1")
    reported = []

    cowsync.commit(shop, "s1", progress=lambda table, kind, n: reported.append((table, kind, n)))

    assert ("public.customers", "insert", 2) in reported
    assert ("public.orders", "delete", 1) in reported
    assert {(t, k) for t, k, _ in reported} == {
        (t, k)
        for t in ("public.customers", "public.orders")
        for k in ("insert", "update", "delete")
    }
    # Parents are inserted before children and deleted after them.
    order = [(t, k) for t, k, _ in reported]
    assert order.index(("public.customers", "insert")) < order.index(("public.orders", "insert"))
    assert order.index(("public.orders", "delete")) < order.index(("public.customers", "delete"))


def test_commit_refuses_an_unknown_conflict_policy(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")

    with pytest.raises(cowsync.ConfigurationError):
        cowsync.commit(shop, "s1", on_conflict="ignore")

    assert rows(shop, "customers")[0] == ANN


# --- keys and sequences ---------------------------------------------------------------------


def test_committed_rows_keep_the_keys_the_session_saw(shop, connect):
    got = write(
        shop, "s1", "a", "INSERT INTO customers (name) VALUES ('dee'), ('eve') RETURNING id"
    )
    session_ids_seen = [r[0] for r in got]
    production = connect()
    (prod_id,) = production.execute(
        "INSERT INTO customers (name) VALUES ('pat') RETURNING id"
    ).fetchone()

    cowsync.commit(shop, "s1")

    names = dict(shop.execute("SELECT id, name FROM customers").fetchall())
    assert [names[i] for i in session_ids_seen] == ["dee", "eve"]
    assert names[prod_id] == "pat"
    # Production's next id collides with nothing the session committed.
    (next_id,) = production.execute(
        "INSERT INTO customers (name) VALUES ('quin') RETURNING id"
    ).fetchone()
    assert next_id not in session_ids_seen
    assert next_id > max([*session_ids_seen, prod_id])


def test_committed_rows_keep_identity_always_values(cow, make_table):
    make_table(name="notes", shape="identity", rows=2)
    cowsync.enable(cow, "notes")
    got = write(cow, "s1", "a", "INSERT INTO notes (note) VALUES ('x'), ('y') RETURNING id")
    cow.execute("INSERT INTO notes (note) VALUES ('prod')")

    cowsync.commit(cow, "s1")

    assert rows(cow, "notes") == [
        (1, "note-1"),
        (2, "note-2"),
        (got[0][0], "x"),
        (got[1][0], "y"),
        (5, "prod"),
    ]
    assert cow.execute("INSERT INTO notes (note) VALUES ('z') RETURNING id").fetchone() == (6,)


# --- choosing operations ----------------------------------------------------------------------


@pytest.fixture
def three_ops(shop):
    """a: new customer 10; b: an order for it; c: an unrelated credit change."""
    write(shop, "s1", "a", "INSERT INTO customers (id, name) VALUES (10, 'dee')")
    write(shop, "s1", "b", "INSERT INTO orders (id, customer_id, item) VALUES (10, 10, 'fig')")
    write(shop, "s1", "c", "UPDATE customers SET credit = 1 WHERE id = 2")
    return shop


def test_commit_of_an_independent_operation_applies_only_it(three_ops):
    result = cowsync.commit(three_ops, "s1", operations=["c"])

    assert result.operations == ["c"]
    assert result.applied == {"public.customers": no_changes({"update": 1})}
    assert base_state(three_ops) == {
        "customers": [ANN, (2, "bob", "basic", 1), CY],
        "orders": [APPLE, PEAR, PLUM],
    }
    assert [o.operation_id for o in cowsync.operations(three_ops, "s1")] == ["a", "b"]
    assert {c.key["id"] for c in cowsync.diff(three_ops, "s1")} == {10}


def test_commit_refuses_an_operation_without_its_dependency(three_ops):
    base_before = base_state(three_ops)
    session_before = session_state(three_ops, "s1")

    with pytest.raises(cowsync.DependencyError) as caught:
        cowsync.commit(three_ops, "s1", operations=["b"])

    assert caught.value.missing == {"a"}
    assert "include_dependencies" in str(caught.value)
    assert base_state(three_ops) == base_before
    assert session_state(three_ops, "s1") == session_before


def test_commit_with_include_dependencies_brings_them_along(three_ops):
    result = cowsync.commit(three_ops, "s1", operations=["b"], include_dependencies=True)

    assert result.operations == ["a", "b"]
    assert rows(three_ops, "customers")[-1] == (10, "dee", "basic", 0)
    assert rows(three_ops, "orders")[-1] == (10, 10, "fig", 1)
    assert [o.operation_id for o in cowsync.operations(three_ops, "s1")] == ["c"]


def test_commit_lists_dependencies_of_dependencies_as_missing(shop):
    write(shop, "s1", "a", "INSERT INTO customers (id, name) VALUES (10, 'dee')")
    write(shop, "s1", "b", "INSERT INTO orders (id, customer_id, item) VALUES (10, 10, 'fig')")
    write(shop, "s1", "c", "UPDATE orders SET qty = 4 WHERE id = 10")

    with pytest.raises(cowsync.DependencyError) as caught:
        cowsync.commit(shop, "s1", operations=["c"])
    assert caught.value.missing == {"a", "b"}

    result = cowsync.commit(shop, "s1", operations=["c"], include_dependencies=True)
    assert result.operations == ["a", "b", "c"]
    assert rows(shop, "orders")[-1] == (10, 10, "fig", 4)


def test_commit_of_an_operation_and_its_dependency_needs_no_flag(three_ops):
    result = cowsync.commit(three_ops, "s1", operations=["b", "a"])

    assert result.operations == ["a", "b"]
    assert rows(three_ops, "orders")[-1] == (10, 10, "fig", 1)


def test_commit_refuses_an_operation_the_session_does_not_have(three_ops):
    before = base_state(three_ops)

    with pytest.raises(cowsync.ConfigurationError, match="zzz"):
        cowsync.commit(three_ops, "s1", operations=["a", "zzz"])

    assert base_state(three_ops) == before


def test_after_a_partial_commit_the_session_reads_and_writes_correctly(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "s1", "b", "UPDATE customers SET tier = 'vip' WHERE id = 1")
    write(shop, "s1", "b", "INSERT INTO customers (id, name) VALUES (10, 'dee')")
    write(shop, "s1", "c", "DELETE FROM orders WHERE id = 3")
    seen_before = {t: rows(shop, t, "s1") for t in ("customers", "orders")}

    cowsync.commit(shop, "s1", operations=["a", "c"])

    # The base got a and c; the session still sees everything.
    assert base_state(shop) == {
        "customers": [(1, "ann", "gold", 1), BOB, CY],
        "orders": [APPLE, PEAR],
    }
    assert {t: rows(shop, t, "s1") for t in ("customers", "orders")} == seen_before
    (upd, ins) = cowsync.diff(shop, "s1")
    assert (upd.key, upd.kind, upd.changed) == ({"id": 1}, "update", ("tier",))
    assert upd.before == {"id": 1, "name": "ann", "tier": "gold", "credit": 1}
    assert (ins.key, ins.kind) == ({"id": 10}, "insert")
    assert cowsync.dependencies(shop, "s1") == {"b": set()}

    # Further writes in the same session build on the new base.
    write(shop, "s1", "d", "UPDATE customers SET credit = credit + 10 WHERE id IN (1, 10)")
    write(shop, "s1", "d", "DELETE FROM orders WHERE id = 2")
    write(shop, "s1", "d", "INSERT INTO orders (id, customer_id, item) VALUES (10, 10, 'fig')")
    assert rows(shop, "customers", "s1") == [
        (1, "ann", "vip", 11),
        BOB,
        CY,
        (10, "dee", "basic", 10),
    ]
    assert rows(shop, "orders", "s1") == [APPLE, (10, 10, "fig", 1)]
    expected = {t: rows(shop, t, "s1") for t in ("customers", "orders")}

    result = cowsync.commit(shop, "s1")

    assert result.conflicts == []
    assert base_state(shop) == expected


def test_a_partial_commit_of_an_insert_then_the_later_delete(shop):
    write(shop, "s1", "a", "INSERT INTO customers (id, name) VALUES (10, 'dee')")
    write(shop, "s1", "b", "DELETE FROM customers WHERE id = 10")

    cowsync.commit(shop, "s1", operations=["a"])

    assert rows(shop, "customers")[-1] == (10, "dee", "basic", 0)
    assert [r[0] for r in rows(shop, "customers", "s1")] == [1, 2, 3]
    (change,) = cowsync.diff(shop, "s1")
    assert (change.kind, change.before) == (
        "delete",
        {"id": 10, "name": "dee", "tier": "basic", "credit": 0},
    )

    cowsync.commit(shop, "s1")

    assert [r[0] for r in rows(shop, "customers")] == [1, 2, 3]


def test_commit_of_no_operations_changes_nothing(three_ops):
    base_before = base_state(three_ops)
    session_before = session_state(three_ops, "s1")

    result = cowsync.commit(three_ops, "s1", operations=[])

    assert result.nothing_to_commit
    assert base_state(three_ops) == base_before
    assert session_state(three_ops, "s1") == session_before


def test_commit_of_a_changed_key_deletes_the_old_row_and_inserts_the_new(shop):
    write(shop, "s1", "a", "UPDATE orders SET id = 30 WHERE id = 3")
    write(shop, "s1", "b", "UPDATE orders SET qty = 5 WHERE id = 30")

    assert [(c.key, c.kind) for c in cowsync.diff(shop, "s1")] == [
        ({"id": 3}, "delete"),
        ({"id": 30}, "insert"),
    ]
    assert cowsync.dependencies(shop, "s1") == {"a": set(), "b": {"a"}}

    cowsync.commit(shop, "s1")

    assert rows(shop, "orders") == [APPLE, PEAR, (30, 2, "plum", 5)]


@pytest.mark.parametrize(
    "statements",
    [
        ["UPDATE customers SET id = 30 WHERE id = 3"],
        [
            "DELETE FROM customers WHERE id = 3",
            "INSERT INTO customers (id, name) VALUES (30, 'cy')",
        ],
    ],
    ids=["key-changed", "deleted-and-reinserted"],
)
def test_commit_of_a_unique_value_freed_and_reused_in_the_session(shop, statements):
    for statement in statements:
        write(shop, "s1", "a", statement)
    expected = rows(shop, "customers", "s1")

    cowsync.commit(shop, "s1")

    assert rows(shop, "customers") == expected


def test_commit_that_reuses_a_freed_value_reports_progress_in_the_order_applied(shop):
    # The usual order (insert first) clashes on customers_name_key; deleting first works.
    write(shop, "s1", "a", "DELETE FROM customers WHERE id = 3")
    write(shop, "s1", "b", "INSERT INTO customers (id, name) VALUES (30, 'cy')")
    reports: list[tuple[str, str, int]] = []

    result = cowsync.commit(shop, "s1", progress=lambda *args: reports.append(args))

    applied = [(kind, n) for table, kind, n in reports if table == "public.customers" and n]
    assert applied == [("delete", 1), ("insert", 1)]
    assert result.applied["public.customers"] == {"insert": 1, "update": 0, "delete": 1}


def test_commit_whose_unique_clash_no_order_resolves_names_the_constraint(shop, connect):
    # Production took the value the session gives a new row: neither order can apply it.
    write(shop, "s1", "a", "INSERT INTO customers (id, name) VALUES (40, 'dee')")
    connect().execute("INSERT INTO customers (id, name) VALUES (41, 'dee')")

    with pytest.raises(cowsync.CommitError) as raised:
        cowsync.commit(shop, "s1")

    assert raised.value.constraint == "customers_name_key"
    assert raised.value.table == "public.customers"
    assert (40, "dee") in [r[:2] for r in rows(shop, "customers", "s1")]


@pytest.mark.xfail(
    strict=True,
    reason="documented limitation (docs/limitations.md, swapping unique values): commit "
    "applies all updates of a table in one statement, and a non-deferrable unique index is "
    "checked row by row, so swapping two unique values fails in either order",
)
def test_commit_of_two_rows_swapping_a_unique_value(shop):
    write(shop, "s1", "a", "UPDATE customers SET name = 'tmp' WHERE id = 1")
    write(shop, "s1", "a", "UPDATE customers SET name = 'ann' WHERE id = 2")
    write(shop, "s1", "a", "UPDATE customers SET name = 'bob' WHERE id = 1")

    cowsync.commit(shop, "s1")

    assert [r[1] for r in rows(shop, "customers")] == ["bob", "ann", "cy"]


def test_commit_from_a_connection_bound_to_the_session_reaches_the_base(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")

    with cowsync.session(shop, "s1", "a"):
        result = cowsync.commit(shop, "s1")
        assert shop.execute("SELECT credit FROM customers WHERE id = 1").fetchone() == (5,)

    assert result.applied == {"public.customers": no_changes({"update": 1})}
    assert rows(shop, "customers")[0] == (1, "ann", "gold", 5)
    assert session_ids(shop) == []


# --- choosing tables ----------------------------------------------------------------------


def test_commit_of_one_table_leaves_the_other_tables_changes_pending(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "s1", "a", "UPDATE orders SET qty = 9 WHERE id = 1")

    result = cowsync.commit(shop, "s1", tables=["customers"])

    assert result.applied == {"public.customers": no_changes({"update": 1})}
    assert base_state(shop) == {
        "customers": [(1, "ann", "gold", 1), BOB, CY],
        "orders": [APPLE, PEAR, PLUM],
    }
    assert [(c.table, c.key) for c in cowsync.diff(shop, "s1")] == [("public.orders", {"id": 1})]
    assert rows(shop, "orders", "s1")[0] == (1, 1, "apple", 9)

    cowsync.commit(shop, "s1", tables=["public.orders"])

    assert rows(shop, "orders")[0] == (1, 1, "apple", 9)
    assert session_ids(shop) == []


def test_commit_of_a_table_that_is_not_enabled_is_refused(shop):
    shop.execute("CREATE TABLE plain (id int PRIMARY KEY)")
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")

    with pytest.raises(cowsync.NotEnabledError):
        cowsync.commit(shop, "s1", tables=["plain"])

    assert rows(shop, "customers")[0] == ANN


# --- constraint violations ------------------------------------------------------------------


def test_a_constraint_violation_at_commit_names_table_and_constraint_and_changes_nothing(
    shop, connect
):
    write(shop, "s1", "a", "INSERT INTO customers (id, name) VALUES (10, 'dee')")
    write(shop, "s1", "b", "UPDATE orders SET qty = 5 WHERE id = 1")
    connect().execute("INSERT INTO customers (name) VALUES ('dee')")  # production takes the name
    base_before = base_state(shop)
    session_before = session_state(shop, "s1")

    with pytest.raises(cowsync.CommitError) as caught:
        cowsync.commit(shop, "s1")

    error = caught.value
    assert error.table == "public.customers"
    assert error.constraint == "customers_name_key"
    assert error.key == {"name": "dee"}
    assert "customers_name_key" in str(error)
    assert "dee" in str(error)
    assert base_state(shop) == base_before
    assert session_state(shop, "s1") == session_before
    # The connection is usable and the session can still be committed once the clash is gone.
    shop.execute("DELETE FROM customers WHERE name = 'dee'")
    cowsync.commit(shop, "s1")
    assert rows(shop, "customers")[-1] == (10, "dee", "basic", 0)


def test_a_commit_that_fails_inside_a_callers_transaction_keeps_that_transaction(shop, connect):
    write(shop, "s1", "a", "INSERT INTO customers (id, name) VALUES (10, 'dee')")
    connect().execute("INSERT INTO customers (name) VALUES ('dee')")
    base_before = base_state(shop)

    with shop.transaction():
        shop.execute("UPDATE customers SET credit = 42 WHERE id = 3")
        with pytest.raises(cowsync.CommitError):
            cowsync.commit(shop, "s1")
        shop.execute("UPDATE customers SET credit = 43 WHERE id = 2")

    assert rows(shop, "customers")[1:3] == [(2, "bob", "basic", 43), (3, "cy", "basic", 42)]
    assert base_state(shop)["orders"] == base_before["orders"]
    assert [c.key for c in cowsync.diff(shop, "s1")] == [{"id": 10}]


# --- shapes of foreign keys ---------------------------------------------------------------


def test_commit_of_a_self_referencing_tree_inserts_and_deletes_it_whole(cow):
    cow.execute(
        """
        CREATE TABLE nodes (id int PRIMARY KEY, parent int REFERENCES nodes, label text);
        INSERT INTO nodes VALUES (1, NULL, 'root'), (2, 1, 'old'), (3, 2, 'older');
        """
    )
    cowsync.enable(cow, "nodes")
    write(cow, "s1", "grow", "INSERT INTO nodes VALUES (10, 1, 'new'), (11, 10, 'newer')")
    write(cow, "s1", "grow", "INSERT INTO nodes VALUES (12, 11, 'newest')")
    write(cow, "s1", "prune", "DELETE FROM nodes WHERE id = 3")
    write(cow, "s1", "prune", "DELETE FROM nodes WHERE id = 2")

    cowsync.commit(cow, "s1")

    assert rows(cow, "nodes") == [
        (1, None, "root"),
        (10, 1, "new"),
        (11, 10, "newer"),
        (12, 11, "newest"),
    ]


def make_cycle(conn, deferrable):
    """Tables ``a`` and ``b`` referencing each other, a1 <-> b1 in the base."""
    conn.execute(
        f"""
        CREATE TABLE a (id int PRIMARY KEY, b_id int);
        CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a {deferrable});
        ALTER TABLE a ADD FOREIGN KEY (b_id) REFERENCES b {deferrable};
        INSERT INTO a VALUES (1, NULL);
        INSERT INTO b VALUES (1, 1);
        UPDATE a SET b_id = 1;
        """
    )
    cowsync.enable(conn, "a")
    cowsync.enable(conn, "b")


def write_cycle(conn):
    write(conn, "s1", "x", "INSERT INTO a VALUES (2, NULL)")
    write(conn, "s1", "x", "INSERT INTO b VALUES (2, 2)")
    write(conn, "s1", "x", "UPDATE a SET b_id = 2 WHERE id = 2")


def test_commit_of_a_cycle_of_deferred_foreign_keys_applies_it(cow):
    make_cycle(cow, "DEFERRABLE INITIALLY DEFERRED")
    write_cycle(cow)

    cowsync.commit(cow, "s1")

    assert rows(cow, "a") == [(1, 1), (2, 2)]
    assert rows(cow, "b") == [(1, 1), (2, 2)]


def test_commit_of_a_cycle_of_deferrable_foreign_keys_applies_it(cow):
    # Initially immediate, but deferrable: the commit defers them for its transaction.
    make_cycle(cow, "DEFERRABLE")
    write_cycle(cow)

    cowsync.commit(cow, "s1")

    assert rows(cow, "a") == [(1, 1), (2, 2)]


def test_whole_session_commit_of_a_cycle_of_immediate_foreign_keys_applies_it(cow):
    # A whole-session commit is one statement; foreign keys are checked at its end.
    make_cycle(cow, "")
    write_cycle(cow)

    cowsync.commit(cow, "s1")

    assert rows(cow, "a") == [(1, 1), (2, 2)]
    assert rows(cow, "b") == [(1, 1), (2, 2)]


def test_commit_of_chosen_operations_in_a_cycle_of_immediate_foreign_keys_is_refused(cow):
    # Chosen operations apply table by table, which no order can do for a cycle.
    make_cycle(cow, "")
    write_cycle(cow)
    write(cow, "s1", "y", "INSERT INTO a VALUES (3, NULL)")
    session_before = session_state(cow, "s1")

    with pytest.raises(cowsync.CommitError) as caught:
        cowsync.commit(cow, "s1", operations=["x"])

    assert caught.value.constraint in ("a_b_id_fkey", "b_a_id_fkey")
    assert "cycle" in str(caught.value)
    assert rows(cow, "a") == [(1, 1)]
    assert rows(cow, "b") == [(1, 1)]
    assert session_state(cow, "s1") == session_before


def test_a_deferred_constraint_violation_at_commit_raises_commit_error(cow, connect):
    # Checked when the commit's transaction ends, yet still reported as a CommitError.
    cow.execute(
        """
        CREATE TABLE owners (id int PRIMARY KEY);
        CREATE TABLE pets (id int PRIMARY KEY,
                           owner_id int REFERENCES owners DEFERRABLE INITIALLY DEFERRED);
        INSERT INTO owners VALUES (1), (2);
        """
    )
    cowsync.enable(cow, "owners")
    cowsync.enable(cow, "pets")
    write(cow, "s1", "a", "INSERT INTO pets VALUES (1, 2)")
    connect().execute("DELETE FROM owners WHERE id = 2")  # production, meanwhile
    session_before = session_state(cow, "s1")

    with pytest.raises(cowsync.CommitError) as caught:
        cowsync.commit(cow, "s1")

    assert caught.value.table == "public.pets"
    assert caught.value.constraint == "pets_owner_id_fkey"
    assert rows(cow, "pets") == []
    assert session_state(cow, "s1") == session_before


def test_commit_and_discard_with_no_table_in_scope_are_empty_results(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")

    assert cowsync.commit(shop, "s1", tables=[]).nothing_to_commit
    assert cowsync.discard(shop, "s1", tables=[]).total == 0
    assert rows(shop, "customers", "s1")[0][3] == 1  # still pending
