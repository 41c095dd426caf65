"""discard(): drop a session's changes, or chosen operations'; never touch the base."""

from __future__ import annotations

import pytest

import cowsync
from tests.apply._state import base_state, rows, session_ids, session_state, write

ANN = (1, "ann", "gold", 100)


@pytest.fixture
def history(shop):
    """a: credit of ann to 1; b: ann's credit to 2 (builds on a); c: delete order 3."""
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "s1", "b", "UPDATE customers SET credit = 2 WHERE id = 1")
    write(shop, "s1", "c", "DELETE FROM orders WHERE id = 3")
    return shop


def test_discard_drops_the_whole_session_and_leaves_the_base(history):
    base_before = base_state(history)

    result = cowsync.discard(history, "s1")

    assert result.operations == ["a", "b", "c"]
    assert result.discarded == {"public.customers": 2, "public.orders": 1}
    assert result.total == 3
    assert base_state(history) == base_before
    assert session_state(history, "s1") == {
        "customers_changes": [],
        "orders_changes": [],
        "operations": [],
        "sessions": [],
    }
    assert session_ids(history) == []
    assert rows(history, "customers", "s1")[0] == ANN


def test_discard_of_a_later_operation_restores_what_the_earlier_one_wrote(history):
    result = cowsync.discard(history, "s1", operations=["b"])

    assert result.operations == ["b"]
    assert rows(history, "customers", "s1")[0] == (1, "ann", "gold", 1)
    assert [o.operation_id for o in cowsync.operations(history, "s1")] == ["a", "c"]
    assert [
        (c.key, c.after["credit"] if c.after else None, c.operation)
        for c in cowsync.diff(history, "s1")
    ] == [({"id": 1}, 1, "a"), ({"id": 3}, None, "c")]
    # The session keeps working on top of what is left.
    write(history, "s1", "d", "UPDATE customers SET credit = credit + 10 WHERE id = 1")
    assert rows(history, "customers", "s1")[0] == (1, "ann", "gold", 11)


def test_discard_refuses_an_operation_others_build_on(history):
    before = session_state(history, "s1")

    with pytest.raises(cowsync.DependencyError) as caught:
        cowsync.discard(history, "s1", operations=["a"])

    assert caught.value.missing == {"b"}
    assert "include_dependents" in str(caught.value)
    assert session_state(history, "s1") == before


def test_discard_with_include_dependents_drops_them_too(history):
    base_before = base_state(history)

    result = cowsync.discard(history, "s1", operations=["a"], include_dependents=True)

    assert result.operations == ["a", "b"]
    assert result.discarded == {"public.customers": 2}
    assert rows(history, "customers", "s1")[0] == ANN
    assert [o.operation_id for o in cowsync.operations(history, "s1")] == ["c"]
    assert base_state(history) == base_before


def test_discard_of_a_parent_insert_needs_its_children_discarded_too(shop):
    write(shop, "s1", "a", "INSERT INTO customers (id, name) VALUES (10, 'dee')")
    write(shop, "s1", "b", "INSERT INTO orders (id, customer_id, item) VALUES (10, 10, 'fig')")

    with pytest.raises(cowsync.DependencyError) as caught:
        cowsync.discard(shop, "s1", operations=["a"])
    assert caught.value.missing == {"b"}

    cowsync.discard(shop, "s1", operations=["a"], include_dependents=True)
    assert [r[0] for r in rows(shop, "orders", "s1")] == [1, 2, 3]
    assert [r[0] for r in rows(shop, "customers", "s1")] == [1, 2, 3]


def test_discard_of_one_table_keeps_the_others(history):
    result = cowsync.discard(history, "s1", tables=["orders"])

    assert result.discarded == {"public.orders": 1}
    assert [r[0] for r in rows(history, "orders", "s1")] == [1, 2, 3]
    assert rows(history, "customers", "s1")[0] == (1, "ann", "gold", 2)
    assert [o.operation_id for o in cowsync.operations(history, "s1")] == ["a", "b"]


def test_discard_never_touches_the_base_even_when_it_changed_meanwhile(history, connect):
    production = connect()
    production.execute("UPDATE customers SET credit = 7 WHERE id = 1")
    production.execute("DELETE FROM orders WHERE id = 3")
    base_before = base_state(history)

    cowsync.discard(history, "s1")

    assert base_state(history) == base_before


def test_discard_leaves_other_sessions_alone(history):
    write(history, "s2", "a", "UPDATE customers SET credit = 9 WHERE id = 1")
    s2_before = session_state(history, "s2")

    cowsync.discard(history, "s1")

    assert session_state(history, "s2") == s2_before
    assert session_ids(history) == ["s2"]


def test_discard_keeps_an_annotated_session_listed(history):
    cowsync.annotate(history, "s1", label="try again later")

    cowsync.discard(history, "s1")

    (info,) = cowsync.sessions(history)
    assert (info.session_id, info.label, info.rows) == ("s1", "try again later", 0)


def test_discard_of_an_unknown_operation_is_refused(history):
    before = session_state(history, "s1")

    with pytest.raises(cowsync.ConfigurationError):
        cowsync.discard(history, "s1", operations=["nope"])

    assert session_state(history, "s1") == before


def test_discarding_twice_raises_the_second_time(history):
    cowsync.discard(history, "s1")

    with pytest.raises(cowsync.SessionNotFoundError, match="already committed or discarded"):
        cowsync.discard(history, "s1")
