"""The backend applies the bound session to exactly the statements that should carry it."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

import cowsync
from cowsync.integrations.django import cow_session
from tests._mode import base_of
from tests.django._djdb import DjangoDb
from tests.django.testapp.models import Product, Stock, Tag, Warehouse

SKUS = "SELECT sku FROM testapp_product ORDER BY sku"


def seen_by(db: DjangoDb, session_id: str | None) -> list[str]:
    """The skus a fresh connection sees, in ``session_id`` or in production."""
    if session_id is None:
        return [r[0] for r in db.production(SKUS)]
    with cowsync.session(db.raw, session_id):
        return [r[0] for r in db.raw.execute(SKUS)]


def product(sku: str) -> Product:
    return Product.objects.create(sku=sku, name=sku.upper(), price=Decimal("1.00"))


def last_sent(cursor: Any) -> bytes:
    return bytes(cursor.cursor._query.query)


def test_unbound_statements_are_sent_unchanged(enabled_db: DjangoDb) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert last_sent(cursor) == b"SELECT 1"
        with cow_session("s1"):
            # The session is stated apart (its id a parameter); the statement is sent as is.
            cursor.execute("SELECT current_setting('app.session_id')")
            assert last_sent(cursor) == b"SELECT current_setting('app.session_id')"
            assert cursor.fetchone() == ("s1",)
        cursor.execute("SELECT 2")
        assert last_sent(cursor) == b"SELECT 2"


def test_bound_writes_reach_the_session_only(enabled_db: DjangoDb) -> None:
    product("prod")
    with cow_session("s1", "op-1"):
        product("agent")
        assert sorted(Product.objects.values_list("sku", flat=True)) == ["agent", "prod"]
    assert seen_by(enabled_db, None) == ["prod"]
    assert seen_by(enabled_db, "s1") == ["agent", "prod"]
    assert [o.operation_id for o in cowsync.operations(enabled_db.raw, "s1")] == ["op-1"]


def test_rowcount_returning_and_description_are_the_statements_own(enabled_db: DjangoDb) -> None:
    product("a")
    product("b")
    with cow_session("s1"), connection.cursor() as cursor:
        cursor.execute("UPDATE testapp_product SET name = 'x' WHERE sku IN ('a', 'b')")
        assert cursor.rowcount == 2
        cursor.execute(
            "INSERT INTO testapp_product (sku, name, price, active, attributes) "
            "VALUES (%s, %s, %s, true, '{}') RETURNING id, sku",
            ["c", "C", Decimal("2.00")],
        )
        assert cursor.fetchone()[1] == "c"
        assert [col.name for col in cursor.description] == ["id", "sku"]
        assert Product.objects.filter(name="x").update(name="y") == 2


def test_a_savepoint_rollback_does_not_unbind_later_writes(enabled_db: DjangoDb) -> None:
    """The hazard of "set once": set_config after a savepoint is undone by rolling back to it."""
    with transaction.atomic():
        savepoint = transaction.savepoint()
        with cow_session("s1"):
            product("rolled-back")
            transaction.savepoint_rollback(savepoint)
            product("after-rollback")
    assert seen_by(enabled_db, None) == []
    assert seen_by(enabled_db, "s1") == ["after-rollback"]


def test_a_rolled_back_transaction_does_not_unbind_later_writes(enabled_db: DjangoDb) -> None:
    with cow_session("s1"):
        with pytest.raises(RuntimeError), transaction.atomic():
            product("rolled-back")
            raise RuntimeError
        product("autocommit-after")
        with transaction.atomic():
            product("atomic-after")
    assert seen_by(enabled_db, None) == []
    assert seen_by(enabled_db, "s1") == ["atomic-after", "autocommit-after"]


def test_a_binding_that_ends_inside_a_transaction_stops_there(enabled_db: DjangoDb) -> None:
    with transaction.atomic():
        with cow_session("s1"):
            product("in-session")
        product("production-1")
        # Rolling back to a savepoint taken after the bound write brings the session's
        # local values back; the statements after it must still clear them.
        savepoint = transaction.savepoint()
        product("rolled-back")
        transaction.savepoint_rollback(savepoint)
        product("production-2")
    assert seen_by(enabled_db, None) == ["production-1", "production-2"]
    assert seen_by(enabled_db, "s1") == ["in-session", "production-1", "production-2"]


def test_sessions_switch_statement_by_statement(enabled_db: DjangoDb) -> None:
    with transaction.atomic():
        with cow_session("s1"):
            product("one")
        with cow_session("s2"):
            product("two")
            assert list(Product.objects.values_list("sku", flat=True)) == ["two"]
    assert seen_by(enabled_db, "s1") == ["one"]
    assert seen_by(enabled_db, "s2") == ["two"]
    assert seen_by(enabled_db, None) == []


def test_an_integrity_error_in_a_session_rolls_back_like_a_table(enabled_db: DjangoDb) -> None:
    with cow_session("s1"):
        product("a")
        with pytest.raises(IntegrityError), transaction.atomic():
            product("a")
        product("b")
    assert seen_by(enabled_db, "s1") == ["a", "b"]
    assert seen_by(enabled_db, None) == []


@pytest.mark.parametrize("in_transaction", [False, True], ids=["autocommit", "atomic"])
def test_iterator_uses_a_named_cursor_in_the_session(
    enabled_db: DjangoDb, in_transaction: bool
) -> None:
    product("prod")
    with cow_session("s1"):
        for i in range(5):
            product(f"s-{i}")
        block = transaction.atomic() if in_transaction else _nothing()
        with block:
            seen = [p.sku for p in Product.objects.order_by("sku").iterator(chunk_size=2)]
    assert seen == ["prod", "s-0", "s-1", "s-2", "s-3", "s-4"]
    assert connection.connection.info.transaction_status.name == "IDLE"
    assert seen_by(enabled_db, None) == ["prod"]


def test_executemany_runs_in_the_session(enabled_db: DjangoDb) -> None:
    with cow_session("s1"), connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO testapp_warehouse (code, city) VALUES (%s, %s)",
            [("w1", "Lyon"), ("w2", "Oslo")],
        )
    assert enabled_db.production("SELECT count(*) FROM testapp_warehouse") == [(0,)]
    with cowsync.session(enabled_db.raw, "s1"):
        assert enabled_db.raw.execute("SELECT count(*) FROM testapp_warehouse").fetchone() == (2,)


def test_the_django_connections_psycopg_connection_is_bound_too(enabled_db: DjangoDb) -> None:
    connection.ensure_connection()
    with cow_session("s1"):
        connection.connection.execute("INSERT INTO testapp_tag (name) VALUES ('raw')")
    assert enabled_db.production("SELECT count(*) FROM testapp_tag") == [(0,)]
    with cowsync.session(enabled_db.raw, "s1"):
        assert enabled_db.raw.execute("SELECT name FROM testapp_tag").fetchall() == [("raw",)]


def test_server_side_binding_option_carries_the_session(enabled_db: DjangoDb) -> None:
    enabled_db.configure(OPTIONS={"server_side_binding": True})
    product("prod")
    with cow_session("s1"):
        product("agent")
        assert Product.objects.filter(sku="agent").update(name="renamed") == 1
        assert [p.sku for p in Product.objects.order_by("sku").iterator(chunk_size=1)] == [
            "agent",
            "prod",
        ]
    assert seen_by(enabled_db, None) == ["prod"]
    assert seen_by(enabled_db, "s1") == ["agent", "prod"]


def test_a_preview_shows_chosen_operations_and_refuses_writes(enabled_db: DjangoDb) -> None:
    with cow_session("s1", "first"):
        product("one")
    with cow_session("s1", "second"):
        product("two")
    with cow_session("s1", visible_operations=["first"]):
        assert list(Product.objects.values_list("sku", flat=True)) == ["one"]
        with pytest.raises(Exception, match=r"preview|visible"):
            product("three")
    with cow_session("s1"):
        assert sorted(Product.objects.values_list("sku", flat=True)) == ["one", "two"]


def test_a_preview_is_materialised_once_per_binding(enabled_db: DjangoDb) -> None:
    with cow_session("s1", "first"):
        product("one")
    preview = cow_session("s1", visible_operations=["first"])
    with preview:
        assert list(Product.objects.values_list("sku", flat=True)) == ["one"]
        # The session moves on meanwhile (another connection, same operation).
        with cowsync.session(enabled_db.raw, "s1", "first"):
            enabled_db.raw.execute(
                "INSERT INTO testapp_product (sku, name, price, active, attributes) "
                "VALUES ('late', 'L', 1, true, '{}')"
            )
        assert list(Product.objects.values_list("sku", flat=True)) == ["one"]
    with cow_session("s1", visible_operations=["first"]):
        assert sorted(Product.objects.values_list("sku", flat=True)) == ["late", "one"]


def test_cow_session_decorates_and_nests(enabled_db: DjangoDb) -> None:
    @cow_session("outer")
    def write(sku: str) -> None:
        product(sku)
        with cow_session("inner"):
            product(sku + "-inner")
        product(sku + "-again")

    write("a")
    write("b")
    assert seen_by(enabled_db, "outer") == ["a", "a-again", "b", "b-again"]
    assert seen_by(enabled_db, "inner") == ["a-inner", "b-inner"]
    assert seen_by(enabled_db, None) == []


def test_threads_see_the_binding_only_when_they_inherit_the_context(enabled_db: DjangoDb) -> None:
    import contextvars

    found: dict[str, list[str]] = {}

    def look(label: str) -> None:
        try:
            found[label] = list(Product.objects.values_list("sku", flat=True))
        finally:
            connection.close()

    with cow_session("s1"):
        product("agent")
        plain = threading.Thread(target=look, args=("plain",))
        copied = threading.Thread(target=contextvars.copy_context().run, args=(look, "copied"))
        for thread in (plain, copied):
            thread.start()
            thread.join()
    assert found == {"plain": [], "copied": ["agent"]}


def test_captured_queries_show_the_statement_without_the_binding(enabled_db: DjangoDb) -> None:
    with cow_session("s1"), CaptureQueriesContext(connection) as captured:
        Warehouse.objects.create(code="w1")
    assert captured.captured_queries[0]["sql"].startswith('INSERT INTO "testapp_warehouse"')


def test_foreign_keys_are_checked_against_what_the_session_sees(enabled_db: DjangoDb) -> None:
    warehouse = Warehouse.objects.create(code="w1")
    with cow_session("s1"):
        agent_product = product("agent")
        Stock.objects.create(product=agent_product, warehouse=warehouse, quantity=3)
    with pytest.raises(IntegrityError):
        Stock.objects.create(product_id=agent_product.pk, warehouse=warehouse, quantity=3)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_copy_from_runs_in_the_session(enabled_db: DjangoDb) -> None:
    with (
        cow_session("s1"),
        connection.cursor() as cursor,
        cursor.cursor.copy("COPY testapp_tag (name) FROM STDIN") as copy,
    ):
        copy.write_row(["copied-1"])
        copy.write_row(["copied-2"])
    assert enabled_db.production("SELECT count(*) FROM testapp_tag") == [(0,)]
    with cowsync.session(enabled_db.raw, "s1"):
        assert enabled_db.raw.execute("SELECT count(*) FROM testapp_tag").fetchone() == (2,)
    assert connection.connection.info.transaction_status.name == "IDLE"


def test_ignore_conflicts_in_a_transaction_does_not_outlive_its_statement(
    enabled_db: DjangoDb,
) -> None:
    Tag.objects.create(name="sale")
    with cow_session("s1"), transaction.atomic():
        Tag.objects.bulk_create([Tag(name="sale"), Tag(name="new")], ignore_conflicts=True)
        # The next plain insert of a duplicate must fail as on a table, not be skipped.
        with pytest.raises(IntegrityError), transaction.atomic():
            Tag.objects.create(name="new")
    with cowsync.session(enabled_db.raw, "s1"):
        names = enabled_db.raw.execute("SELECT name FROM testapp_tag ORDER BY name").fetchall()
    assert names == [("new",), ("sale",)]


class CountingCursor(psycopg.ClientCursor):  # type: ignore[type-arg]
    """A project's own cursor class (OPTIONS["cursor_factory"])."""

    executed = 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        CountingCursor.executed += 1
        return super().execute(*args, **kwargs)


def test_a_custom_cursor_factory_keeps_working_and_carries_the_session(
    enabled_db: DjangoDb,
) -> None:
    enabled_db.configure(OPTIONS={"cursor_factory": CountingCursor})
    CountingCursor.executed = 0
    with cow_session("s1"):
        product("agent")
    assert CountingCursor.executed > 0
    assert seen_by(enabled_db, None) == []
    assert seen_by(enabled_db, "s1") == ["agent"]


def test_a_raw_begin_in_a_session_does_not_carry_it_past_the_binding(
    enabled_db: DjangoDb,
) -> None:
    with connection.cursor() as cursor:
        with cow_session("s1"):
            cursor.execute("BEGIN")
        cursor.execute("INSERT INTO testapp_tag (name) VALUES ('production')")
        cursor.execute("COMMIT")
    assert enabled_db.production("SELECT name FROM testapp_tag") == [("production",)]


def test_upsert_on_a_partial_unique_index_is_refused_as_on_a_table(deployed_db: DjangoDb) -> None:
    """PostgreSQL infers no arbiter from a partial unique index when ON CONFLICT has no
    WHERE (Django writes none): 42P10 on the table, so on an enabled table too, in and
    out of a session. A full unique index over the same columns is an arbiter."""
    from django.db import DatabaseError

    deployed_db.raw.execute(
        "CREATE UNIQUE INDEX product_active_name ON testapp_product (name) WHERE active"
    )

    def upsert(name: str, price: int) -> Any:
        try:
            with transaction.atomic():
                Product.objects.bulk_create(
                    [Product(sku=f"sku-{price}", name=name, price=price)],
                    update_conflicts=True,
                    unique_fields=["name"],
                    update_fields=["price"],
                )
        except DatabaseError as exc:
            return type(exc).__name__, getattr(exc.__cause__, "sqlstate", None)
        return sorted(Product.objects.values_list("name", "price"))

    refused = ("ProgrammingError", "42P10")
    assert upsert("Lamp", 1) == refused  # a plain table
    cowsync.enable(deployed_db.raw, "testapp_product")
    assert upsert("Lamp", 2) == refused
    with cow_session("s1"):
        assert upsert("Lamp", 3) == refused
    base = base_of(deployed_db.raw, "testapp_product").as_string(deployed_db.raw)
    deployed_db.raw.execute(f"CREATE UNIQUE INDEX product_name ON {base} (name)")
    cowsync.refresh(deployed_db.raw, "testapp_product")
    assert upsert("Lamp", 4) == [("Lamp", Decimal(4))]
    with cow_session("s1"):
        assert upsert("Lamp", 5) == [("Lamp", Decimal(5))]
    assert deployed_db.production("SELECT name, price FROM testapp_product") == [
        ("Lamp", Decimal(4))
    ]
