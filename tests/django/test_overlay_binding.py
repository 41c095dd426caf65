"""The Django backend states the overlay search_path with the bound session, per statement.

``public_cow.items`` (rows B) stands in for the overlay view of ``public.items`` (rows A);
the engine's overlay mode is not needed.
"""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from cowsync.integrations.django import cow_session
from tests._overlay import make_stand_in
from tests.django._djdb import DjangoDb

ITEMS = "SELECT v FROM items ORDER BY v"
PATH = "SELECT current_setting('search_path'), current_setting('cowsync.unbound_search_path', true)"


def rows(query: str) -> list[tuple[object, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(query)
        return list(cursor.fetchall())


@pytest.fixture
def stand_in(deployed_db: DjangoDb) -> DjangoDb:
    make_stand_in(deployed_db.raw)
    return deployed_db


@pytest.mark.parametrize("server_side_binding", [False, True], ids=["client", "server"])
def test_bound_statements_read_the_overlay_and_leave_no_path_behind(
    stand_in: DjangoDb, server_side_binding: bool
) -> None:
    stand_in.configure(OPTIONS={"server_side_binding": server_side_binding})
    before = rows(PATH)[0][0]
    assert rows(ITEMS) == [("A",)]
    with cow_session("s1"):
        assert rows(ITEMS) == [("B",)]
        assert rows("SHOW search_path") == [(f"public_cow, {before}",)]
    # Autocommit: the path was local to each bound statement's implicit transaction.
    assert rows(ITEMS) == [("A",)]
    assert rows(PATH) in ([(before, "")], [(before, None)])


def test_a_binding_that_ends_inside_a_transaction_takes_its_path_with_it(
    stand_in: DjangoDb,
) -> None:
    before = rows(PATH)[0][0]
    with transaction.atomic():
        with cow_session("s1"):
            assert rows(ITEMS) == [("B",)]
        assert rows(ITEMS) == [("A",)]
        assert rows(PATH) == [(before, "")]
    assert rows(ITEMS) == [("A",)]


def test_statements_of_a_bound_transaction_all_read_the_overlay(stand_in: DjangoDb) -> None:
    before = rows(PATH)[0][0]
    with cow_session("s1"), transaction.atomic():
        assert rows(ITEMS) == [("B",)]
        assert rows(ITEMS) == [("B",)]
        # Stated again by every statement, the path does not grow.
        assert rows("SHOW search_path") == [(f"public_cow, {before}",)]
    assert rows(ITEMS) == [("A",)]


def test_a_named_cursor_reads_the_overlay(stand_in: DjangoDb) -> None:
    with cow_session("s1"):
        cursor = connection.chunked_cursor()
        try:
            cursor.execute(ITEMS)
            assert list(cursor.fetchall()) == [("B",)]
        finally:
            cursor.close()
    assert rows(ITEMS) == [("A",)]
