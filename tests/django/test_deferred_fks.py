"""Django declares every foreign key DEFERRABLE INITIALLY DEFERRED: inside one atomic
block of a session, rows may come in any order, and what is left broken fails the
commit with IntegrityError, as on the tables."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

import cowsync
from cowsync.integrations.django import cow_session
from tests.django._djdb import DjangoDb
from tests.django.testapp.models import Product, Stock, Tag, Warehouse


def counts(db: DjangoDb, session_id: str | None) -> tuple[int, int]:
    query = "SELECT (SELECT count(*) FROM testapp_product), (SELECT count(*) FROM testapp_stock)"
    if session_id is None:
        return db.production(query)[0]
    with cowsync.session(db.raw, session_id):
        return db.raw.execute(query).fetchone()


def test_a_child_before_its_parent_in_one_atomic_block(enabled_db: DjangoDb) -> None:
    warehouse = Warehouse.objects.create(code="w1")
    with cow_session("s1"):
        with transaction.atomic():
            Stock.objects.create(product_id=500, warehouse=warehouse, quantity=1)
            Product.objects.create(id=500, sku="late", name="Late", price=Decimal("1.00"))
        assert counts(enabled_db, "s1") == (1, 1)
        with pytest.raises(IntegrityError), transaction.atomic():
            Stock.objects.create(product_id=501, warehouse=warehouse, quantity=1)
        assert counts(enabled_db, "s1") == (1, 1)
    assert counts(enabled_db, None) == (0, 0)
    cowsync.commit(enabled_db.raw, "s1")
    assert counts(enabled_db, None) == (1, 1)


def test_delete_cascades_and_many_to_many(enabled_db: DjangoDb) -> None:
    warehouse = Warehouse.objects.create(code="w1")
    tag = Tag.objects.create(name="t")
    kept = Product.objects.create(sku="kept", name="Kept", price=Decimal("1.00"))
    gone = Product.objects.create(sku="gone", name="Gone", price=Decimal("1.00"))
    gone.tags.add(tag)
    Stock.objects.create(product=gone, warehouse=warehouse, quantity=3)
    Stock.objects.create(product=kept, warehouse=warehouse, quantity=3)
    with cow_session("s1"):
        with transaction.atomic():
            Product.objects.get(sku="gone").delete()  # Django deletes stock and tag links
        assert counts(enabled_db, "s1") == (1, 1)
        with pytest.raises(IntegrityError), transaction.atomic():
            Warehouse.objects.all()._raw_delete("default")  # kept's stock still needs it
        # Parent first, children after, in raw SQL.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("DELETE FROM testapp_product WHERE sku = 'kept'")
            cursor.execute("DELETE FROM testapp_stock")
        assert counts(enabled_db, "s1") == (0, 0)
    assert counts(enabled_db, None) == (2, 2)
    cowsync.commit(enabled_db.raw, "s1")
    assert counts(enabled_db, None) == (0, 0)
