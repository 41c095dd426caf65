"""diff(): the net change per row, typed, with before/after and changed columns."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

import cowsync
from cowsync import RowChange
from tests.apply._state import write

ANN = {"id": 1, "name": "ann", "tier": "gold", "credit": 100}
BOB = {"id": 2, "name": "bob", "tier": "basic", "credit": 20}
PLUM = {"id": 3, "customer_id": 2, "item": "plum", "qty": 3}


def test_diff_shows_inserts_updates_and_deletes_with_before_after_and_changed(shop):
    write(shop, "s1", "add", "INSERT INTO customers (id, name) VALUES (10, 'dee')")
    write(shop, "s1", "edit", "UPDATE customers SET credit = 5, tier = 'vip' WHERE id = 1")
    write(shop, "s1", "drop", "DELETE FROM orders WHERE id = 3")

    changes = cowsync.diff(shop, "s1")

    assert changes == [
        RowChange(
            table="public.customers",
            key={"id": 1},
            kind="update",
            before=ANN,
            after={**ANN, "credit": 5, "tier": "vip"},
            changed=("tier", "credit"),
            operation="edit",
        ),
        RowChange(
            table="public.customers",
            key={"id": 10},
            kind="insert",
            before=None,
            after={"id": 10, "name": "dee", "tier": "basic", "credit": 0},
            changed=("id", "name", "tier", "credit"),
            operation="add",
        ),
        RowChange(
            table="public.orders",
            key={"id": 3},
            kind="delete",
            before=PLUM,
            after=None,
            changed=("id", "customer_id", "item", "qty"),
            operation="drop",
        ),
    ]


def test_diff_names_the_operation_that_last_wrote_the_row(shop):
    write(shop, "s1", "first", "UPDATE customers SET credit = 1 WHERE id = 2")
    write(shop, "s1", "second", "UPDATE customers SET tier = 'vip' WHERE id = 2")

    (change,) = cowsync.diff(shop, "s1")

    assert change.operation == "second"
    assert change.before == BOB
    assert change.after == {**BOB, "credit": 1, "tier": "vip"}
    assert change.changed == ("tier", "credit")


def test_a_row_inserted_then_deleted_shows_nothing(shop):
    write(shop, "s1", "a", "INSERT INTO customers (id, name) VALUES (10, 'dee')")
    write(shop, "s1", "a", "DELETE FROM customers WHERE id = 10")
    write(shop, "s1", "b", "INSERT INTO customers (id, name) VALUES (11, 'eve')")
    write(shop, "s1", "c", "DELETE FROM customers WHERE id = 11")

    assert cowsync.diff(shop, "s1") == []


def test_a_row_updated_back_to_its_original_values_shows_nothing(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5, tier = 'vip' WHERE id = 1")
    write(shop, "s1", "b", "UPDATE customers SET credit = 100 WHERE id = 1")
    write(shop, "s1", "c", "UPDATE customers SET tier = 'gold' WHERE id = 1")

    assert cowsync.diff(shop, "s1") == []


def test_a_deleted_row_re_inserted_with_the_same_values_shows_nothing(shop):
    write(shop, "s1", "a", "DELETE FROM orders WHERE id = 3")
    write(
        shop, "s1", "b", "INSERT INTO orders (id, customer_id, item, qty) VALUES (3, 2, 'plum', 3)"
    )

    assert cowsync.diff(shop, "s1") == []


def test_a_deleted_row_re_inserted_with_other_values_is_an_update(shop):
    write(shop, "s1", "a", "DELETE FROM orders WHERE id = 3")
    write(
        shop, "s1", "b", "INSERT INTO orders (id, customer_id, item, qty) VALUES (3, 1, 'plum', 3)"
    )

    (change,) = cowsync.diff(shop, "s1")

    assert change.kind == "update"
    assert change.before == PLUM
    assert change.after == {**PLUM, "customer_id": 1}
    assert change.changed == ("customer_id",)


def test_diff_of_chosen_operations_shows_the_net_effect_of_just_those(shop):
    write(shop, "s1", "raise", "UPDATE customers SET credit = 500 WHERE id = 1")
    write(shop, "s1", "add", "INSERT INTO customers (id, name) VALUES (10, 'dee')")
    write(shop, "s1", "undo", "UPDATE customers SET credit = 100 WHERE id = 1")
    write(shop, "s1", "drop", "DELETE FROM orders WHERE id = 1")

    everything = cowsync.diff(shop, "s1")
    raise_only = cowsync.diff(shop, "s1", operations=["raise"])
    add_and_drop = cowsync.diff(shop, "s1", operations=["drop", "add"])

    # All together, raise and undo cancel out.
    assert [(c.table, c.key, c.kind) for c in everything] == [
        ("public.customers", {"id": 10}, "insert"),
        ("public.orders", {"id": 1}, "delete"),
    ]
    assert [(c.key, c.kind, c.after, c.operation) for c in raise_only] == [
        ({"id": 1}, "update", {**ANN, "credit": 500}, "raise")
    ]
    assert [(c.table, c.key, c.kind) for c in add_and_drop] == [
        ("public.customers", {"id": 10}, "insert"),
        ("public.orders", {"id": 1}, "delete"),
    ]
    assert cowsync.diff(shop, "s1", operations=[]) == []


def test_diff_of_chosen_tables_leaves_the_others_out(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "s1", "a", "UPDATE orders SET qty = 9 WHERE id = 1")

    by_name = cowsync.diff(shop, "s1", tables=["orders"])
    by_qualified_name = cowsync.diff(shop, "s1", tables=["public.orders"])
    both = cowsync.diff(shop, "s1", tables=["orders", "customers"])

    assert [(c.table, c.key) for c in by_name] == [("public.orders", {"id": 1})]
    assert by_qualified_name == by_name
    assert sorted(c.table for c in both) == ["public.customers", "public.orders"]


def test_diff_of_a_table_that_is_not_enabled_is_refused(shop):
    shop.execute("CREATE TABLE plain (id int PRIMARY KEY)")

    with pytest.raises(cowsync.NotEnabledError):
        cowsync.diff(shop, "s1", tables=["plain"])


def test_diff_lists_rows_by_table_then_key(shop):
    write(shop, "s1", "a", "UPDATE orders SET qty = 8 WHERE id = 3")
    write(shop, "s1", "b", "UPDATE customers SET credit = 8 WHERE id = 3")
    write(shop, "s1", "c", "UPDATE orders SET qty = 8 WHERE id = 1")
    write(shop, "s1", "d", "UPDATE customers SET credit = 8 WHERE id = 1")

    keys = [(c.table, c.key["id"]) for c in cowsync.diff(shop, "s1")]

    assert keys == [
        ("public.customers", 1),
        ("public.customers", 3),
        ("public.orders", 1),
        ("public.orders", 3),
    ]


def test_diff_before_is_the_base_at_first_touch_not_the_base_now(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 2")
    shop.execute("UPDATE customers SET tier = 'silver' WHERE id = 2")  # production, later

    (change,) = cowsync.diff(shop, "s1")

    assert change.before == BOB
    assert change.changed == ("credit",)


def test_diff_of_one_session_ignores_other_sessions(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "s2", "a", "DELETE FROM orders WHERE id = 1")

    assert [(c.table, c.kind) for c in cowsync.diff(shop, "s1")] == [("public.customers", "update")]
    assert cowsync.diff(shop, "nobody") == []


def test_diff_gives_typed_values(cow):
    cow.execute(
        """
        CREATE TABLE typed (
            id uuid PRIMARY KEY,
            price numeric(10, 2),
            at timestamptz,
            day date,
            doc jsonb,
            tags text[],
            flag boolean,
            blob bytea,
            ratio double precision
        );
        INSERT INTO typed VALUES ('00000000-0000-0000-0000-000000000001', 1.50,
            '2024-03-01 12:00:00+00', '2024-03-01', '{"a": [1, 2]}', '{x,y}', true,
            '\\x0001', 0.1)
        """
    )
    cowsync.enable(cow, "typed")
    write(
        cow,
        "s1",
        "a",
        "UPDATE typed SET price = 2.25, at = at + interval '1 day', doc = '{\"a\": []}', "
        "tags = tags || '{z}', blob = '\\x02', ratio = 0.25",
    )

    (change,) = cowsync.diff(cow, "s1")

    key = uuid.UUID(int=1)
    utc = dt.timezone.utc
    assert change.key == {"id": key}
    assert change.before == {
        "id": key,
        "price": Decimal("1.50"),
        "at": dt.datetime(2024, 3, 1, 12, tzinfo=utc),
        "day": dt.date(2024, 3, 1),
        "doc": {"a": [1, 2]},
        "tags": ["x", "y"],
        "flag": True,
        "blob": b"\x00\x01",
        "ratio": 0.1,
    }
    assert change.after == {
        **change.before,
        "price": Decimal("2.25"),
        "at": dt.datetime(2024, 3, 2, 12, tzinfo=utc),
        "doc": {"a": []},
        "tags": ["x", "y", "z"],
        "blob": b"\x02",
        "ratio": 0.25,
    }
    assert change.changed == ("price", "at", "doc", "tags", "blob", "ratio")


def test_diff_of_a_composite_key_names_every_key_column(cow, make_table):
    make_table(name="regions", shape="composite", rows=4)
    cowsync.enable(cow, "regions")
    write(
        cow, "s1", "a", "UPDATE regions SET label = 'renamed' WHERE region = 'south' AND code = 1"
    )
    write(cow, "s1", "a", "DELETE FROM regions WHERE code = 2")

    changes = cowsync.diff(cow, "s1")

    assert [(c.key, c.kind) for c in changes] == [
        ({"region": "east", "code": 2}, "delete"),
        ({"region": "south", "code": 1}, "update"),
    ]
