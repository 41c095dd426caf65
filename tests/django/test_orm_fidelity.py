"""The ORM cannot tell it is in a session: each scenario gives the same result three ways.

1. ``plain``: ordinary tables (nothing enabled);
2. ``production``: the tables enabled, no session bound;
3. ``session``: the tables enabled, inside ``cow_session``, and production unchanged after.

Each scenario starts from the same seeded data with sequences restarted (``flush``), so
even the generated keys must match.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import django
import pytest
from django.core.management.color import no_style
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Count, F, ProtectedError, Sum

import cowsync
from cowsync.integrations.django import cow_session
from tests.django._djdb import Databases, DjangoDb, unblocked
from tests.django.testapp.models import Product, Review, Stock, Tag, Warehouse

Scenario = Callable[[], Any]
MODELS = (Warehouse, Tag, Product, Stock, Review)


def flush() -> None:
    """Empty every table and restart the sequences, as TransactionTestCase does."""
    tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
    statements = connection.ops.sql_flush(
        no_style(), tables, reset_sequences=True, allow_cascade=True
    )
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def seed() -> None:
    lyon = Warehouse.objects.create(code="LYS", city="Lyon")
    oslo = Warehouse.objects.create(code="OSL", city="Oslo")
    sale, new = Tag.objects.create(name="sale"), Tag.objects.create(name="new")
    for i, (sku, price) in enumerate([("chair", "49.00"), ("desk", "199.00"), ("mug", "7.50")]):
        product = Product.objects.create(
            sku=sku, name=sku.title(), price=Decimal(price), attributes={"rank": i}
        )
        product.tags.set([sale] if i % 2 else [sale, new])
        Stock.objects.create(product=product, warehouse=lyon, quantity=10 * (i + 1))
        Stock.objects.create(product=product, warehouse=oslo, quantity=i)
        Review.objects.create(product=product, stars=3 + i % 3)


def snapshot() -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, as Django reads them now."""
    tables = {
        model._meta.db_table: list(model.objects.order_by("pk").values_list()) for model in MODELS
    }
    tables["tags"] = list(Product.tags.through.objects.order_by("pk").values_list())
    return tables


def error(exc: BaseException) -> tuple[str, str | None]:
    cause = exc.__cause__
    return type(exc).__name__, getattr(cause, "sqlstate", None)


class Matrix:
    """Runs a scenario on plain tables, on enabled tables, and in a session."""

    def __init__(self, databases: Databases) -> None:
        self.databases = databases
        self.plain = databases.copy(enabled=False)
        self.enabled = databases.copy(enabled=True)
        self.runs = 0

    def close(self) -> None:
        DjangoDb.attach(self.databases.dsn_for(self.plain)).detach()
        self.databases.drop(self.plain)
        self.databases.drop(self.enabled)

    def three_ways(self, scenario: Scenario) -> dict[str, Any]:
        results: dict[str, Any] = {}
        db = DjangoDb.attach(self.databases.dsn_for(self.plain))
        flush()
        seed()
        results["plain"] = scenario()
        db = DjangoDb.attach(self.databases.dsn_for(self.enabled))
        try:
            flush()
            seed()
            results["production"] = scenario()
            flush()
            seed()
            before = snapshot()
            self.runs += 1
            session_id = f"matrix-{self.runs}"
            with cow_session(session_id, "scenario"):
                results["session"] = scenario()
            assert snapshot() == before, "the session changed production"
            with contextlib.suppress(cowsync.SessionNotFoundError):  # it may have written nothing
                cowsync.discard(db.raw, session_id)
        finally:
            db.detach()
        return results


@pytest.fixture(scope="module")
def matrix(request: pytest.FixtureRequest, django_databases: Databases) -> Iterator[Matrix]:
    with unblocked(request):
        matrix = Matrix(django_databases)
        try:
            yield matrix
        finally:
            matrix.close()


def assert_same(results: dict[str, Any]) -> None:
    assert results["production"] == results["plain"]
    assert results["session"] == results["plain"]


# --- scenarios ---------------------------------------------------------------------------


def create_and_save() -> Any:
    created = Product.objects.create(sku="lamp", name="Lamp", price=Decimal("30.00"))
    created.name = "Desk lamp"
    created.save()
    created.price = Decimal("35.00")
    created.save(update_fields=["price"])
    fresh = Product(sku="rug", name="Rug", price=Decimal("80.00"), pk=None)
    fresh.save()
    created.refresh_from_db()
    return created.pk, fresh.pk, snapshot()


def update_with_expressions() -> Any:
    bumped = Stock.objects.filter(warehouse__code="LYS").update(quantity=F("quantity") + 5)
    renamed = Product.objects.filter(price__lt=100).update(name=F("sku"))
    none = Product.objects.filter(sku="nothing").update(name="x")
    return bumped, renamed, none, snapshot()


def delete_with_cascades() -> Any:
    # Stock goes with the product through Django's CASCADE (Python), reviews through the
    # database's ON DELETE CASCADE (Django's DO_NOTHING leaves them to PostgreSQL).
    deleted = Product.objects.get(sku="desk").delete()
    return deleted, snapshot()


def queryset_delete() -> Any:
    deleted = Product.objects.filter(price__gt=10).delete()
    fast = Review.objects.filter(stars__gte=4).delete()
    return deleted, fast, snapshot()


def bulk_create() -> Any:
    made = Product.objects.bulk_create(
        [Product(sku=f"bulk-{i}", name=f"Bulk {i}", price=Decimal(i)) for i in range(4)]
    )
    explicit = Warehouse.objects.bulk_create([Warehouse(pk=100, code="BER")])
    return [p.pk for p in made], [w.pk for w in explicit], snapshot()


def bulk_create_update_conflicts() -> Any:
    # ON CONFLICT draws a key from the sequence for every row, conflicting or not; the
    # emulation on a view only for the rows it inserts. So compare rows by sku, and check
    # that each returned key is the key of its object's row.
    objs = [
        Product(sku="chair", name="Chair v2", price=Decimal("59.00")),
        Product(sku="stool", name="Stool", price=Decimal("25.00")),
        Product(sku="mug", name="Mug v2", price=Decimal("8.00")),
        Product(sku="vase", name="Vase", price=Decimal("15.00")),
    ]
    made = Product.objects.bulk_create(
        objs, update_conflicts=True, unique_fields=["sku"], update_fields=["name", "price"]
    )
    keys_match = (
        [Product.objects.get(pk=p.pk).sku == p.sku for p in made]
        if django.VERSION >= (5, 0)
        else None
    )
    rows = sorted(Product.objects.values_list("sku", "name", "price"))
    return keys_match, rows


def bulk_create_update_conflicts_needs_a_unique_constraint() -> Any:
    """unique_fields must be exactly the columns of a unique constraint (in any order):
    a non-unique column or a superset is refused with 42P10 as on a table, never turned
    into an update of every row that shares the value."""
    outcomes: list[Any] = []
    for model, objs, unique, update in [
        (Product, [Product(sku="new", name="Chair", price=1)], ["name"], ["price"]),
        (Product, [Product(sku="chair", name="Chair", price=1)], ["sku", "name"], ["price"]),
        (Stock, [Stock(product_id=1, warehouse_id=1, quantity=5)], ["product"], ["quantity"]),
        (
            Stock,
            [Stock(product_id=1, warehouse_id=1, quantity=6)],
            ["warehouse", "product"],
            ["quantity"],
        ),
        (Product, [Product(sku="mug", name="Mug 3", price=9)], ["sku"], ["name", "price"]),
    ]:
        try:
            with transaction.atomic():
                model.objects.bulk_create(
                    objs, update_conflicts=True, unique_fields=unique, update_fields=update
                )
        except DatabaseError as exc:
            cause = exc.__cause__
            outcomes.append(
                (type(exc).__name__, getattr(cause, "sqlstate", None), str(cause).strip())
            )
        else:
            outcomes.append("ok")
    return outcomes, snapshot()


def bulk_create_ignore_conflicts() -> Any:
    Tag.objects.bulk_create(
        [Tag(name="sale"), Tag(name="clearance"), Tag(name="new"), Tag(name="eco")],
        ignore_conflicts=True,
    )
    return snapshot()


def bulk_update() -> Any:
    stock = list(Stock.objects.filter(warehouse__code="OSL"))
    for row in stock:
        row.quantity += 100
    updated = Stock.objects.bulk_update(stock, ["quantity"], batch_size=2)
    return updated, snapshot()


def get_or_create_and_update_or_create() -> Any:
    existing, created_1 = Tag.objects.get_or_create(name="sale")
    new, created_2 = Tag.objects.get_or_create(name="eco")
    updated, created_3 = Product.objects.update_or_create(
        sku="mug", defaults={"price": Decimal("9.00")}
    )
    inserted, created_4 = Product.objects.update_or_create(
        sku="tray", defaults={"name": "Tray", "price": Decimal("12.00")}
    )
    return (
        (existing.pk, created_1),
        (new.pk, created_2),
        (updated.pk, created_3),
        (inserted.pk, created_4),
        snapshot(),
    )


def select_for_update() -> Any:
    with transaction.atomic():
        row = Stock.objects.select_for_update().get(product__sku="chair", warehouse__code="LYS")
        row.quantity -= 3
        row.save(update_fields=["quantity"])
        locked = list(
            Stock.objects.select_for_update(of=("self",))
            .filter(quantity__gt=0)
            .values_list("pk", flat=True)
        )
    return locked, snapshot()


def atomic_and_savepoints() -> Any:
    outcome = []
    with transaction.atomic():
        Warehouse.objects.create(code="AMS")
        try:
            with transaction.atomic():
                Warehouse.objects.create(code="BCN")
                raise RuntimeError("undo the inner block")
        except RuntimeError:
            outcome.append("inner rolled back")
        savepoint = transaction.savepoint()
        Tag.objects.create(name="temporary")
        transaction.savepoint_rollback(savepoint)
        Tag.objects.create(name="kept")
    try:
        with transaction.atomic():
            Warehouse.objects.create(code="CPH")
            raise RuntimeError("undo everything")
    except RuntimeError:
        outcome.append("outer rolled back")
    return outcome, snapshot()


def related_managers() -> Any:
    chair = Product.objects.get(sku="chair")
    eco = Tag.objects.create(name="eco")
    chair.tags.add(eco)
    chair.tags.remove(Tag.objects.get(name="new"))
    desk = Product.objects.get(sku="desk")
    desk.tags.set([eco])
    mug = Product.objects.get(sku="mug")
    mug.tags.clear()
    warehouse = Warehouse.objects.create(code="MAD")
    chair.stock.create(warehouse=warehouse, quantity=4)
    counts = list(
        Product.objects.annotate(n=Count("stock")).order_by("sku").values_list("sku", "n")
    )
    prefetched = [
        (p.sku, sorted(t.name for t in p.tags.all()))
        for p in Product.objects.prefetch_related("tags").order_by("sku")
    ]
    return counts, prefetched, list(warehouse.stock.values_list("quantity", flat=True)), snapshot()


def integrity_errors() -> Any:
    errors = []
    for attempt in (
        lambda: Product.objects.create(sku="chair", name="dup", price=1),
        lambda: Stock.objects.filter(product__sku="mug").update(quantity=-1),
        lambda: Stock.objects.create(product_id=999, warehouse_id=1, quantity=1),
        lambda: Product.objects.create(sku="nameless", name=None, price=1),
    ):
        try:
            with transaction.atomic():
                attempt()
        except IntegrityError as exc:
            errors.append(error(exc))
    return errors, snapshot()


def protect() -> Any:
    try:
        Warehouse.objects.get(code="OSL").delete()
    except ProtectedError as exc:
        protected = sorted(obj.pk for obj in exc.protected_objects)
    return protected, snapshot()


def reads() -> Any:
    return (
        Product.objects.count(),
        list(
            Product.objects.filter(attributes__rank__gte=1)
            .order_by("sku")
            .values_list("sku", flat=True)[:5]
        ),
        list(
            Stock.objects.values("warehouse__code")
            .annotate(total=Sum("quantity"))
            .order_by("warehouse__code")
        ),
        Product.objects.filter(tags__name="new").exists(),
        sorted(Product.objects.in_bulk([1, 2]).keys()),
        [p.sku for p in Product.objects.order_by("-price").iterator(chunk_size=2)],
        list(Product.objects.order_by("sku").values_list("sku", flat=True).distinct()),
    )


SCENARIOS = [
    create_and_save,
    update_with_expressions,
    delete_with_cascades,
    queryset_delete,
    bulk_create,
    bulk_create_update_conflicts,
    bulk_create_update_conflicts_needs_a_unique_constraint,
    bulk_create_ignore_conflicts,
    bulk_update,
    get_or_create_and_update_or_create,
    select_for_update,
    atomic_and_savepoints,
    related_managers,
    integrity_errors,
    protect,
    reads,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_orm_gives_the_same_result_in_a_session(matrix: Matrix, scenario: Scenario) -> None:
    assert_same(matrix.three_ways(scenario))


def test_upsert_without_a_matching_unique_constraint_is_refused_as_on_a_table(
    matrix: Matrix,
) -> None:
    outcomes, _ = matrix.three_ways(bulk_create_update_conflicts_needs_a_unique_constraint)[
        "session"
    ]
    no_arbiter = (
        "ProgrammingError",
        "42P10",
        "there is no unique or exclusion constraint matching the ON CONFLICT specification",
    )
    assert outcomes == [no_arbiter, no_arbiter, no_arbiter, "ok", "ok"]


def test_scenarios_do_change_something(matrix: Matrix) -> None:
    """Guard against a matrix that passes because nothing happens: the rows really move."""
    results = matrix.three_ways(delete_with_cascades)
    deleted, after = results["session"]
    assert deleted[0] > 1
    assert all(row[0] != 2 for row in after["testapp_product"])
    assert all(row[1] != 2 for row in after["testapp_review"])
