"""The DDL guard: ALTERs sent to an enabled table's view are refused (0A000) with a
message that names the table and points to cowsync.alter."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import cowsync
from tests._mode import text, view_of
from tests.engine.conftest import fetch


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE {view} RENAME COLUMN name TO title",
        "ALTER TABLE {view} ALTER COLUMN name SET DEFAULT 'x'",
    ],
)
def test_an_alter_on_the_view_names_the_table_and_cowsync_alter(
    cow: psycopg.Connection[Any], statement: str
) -> None:
    cow.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
    cowsync.enable(cow, "items")
    view = text(cow, view_of(cow, "items"))  # public.items in place, public_cow.items overlay

    with pytest.raises(psycopg.errors.FeatureNotSupported) as caught:
        cow.execute(statement.format(view=view))

    diag = caught.value.diag
    assert diag.message_primary == (
        "cowsync: public.items is the view of a COW-enabled table; "
        "change the table with cowsync.alter()"
    )
    assert (
        diag.message_hint is not None and "cowsync.alter(conn, 'public.items'" in diag.message_hint
    )
    # Refused, so the view keeps its columns (and the base its own).
    columns = "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
    assert fetch(cow, columns, (view,)) == [("id",), ("name",)]
