"""The example's production data, loaded by ``manage.py seed`` and by the tests."""

from decimal import Decimal

from .models import Order, OrderLine, Product, Stock, Warehouse


def seed() -> None:
    """Two warehouses, four products, stock levels (some low) and two open orders."""
    north = Warehouse.objects.create(code="NORTH", name="North depot")
    south = Warehouse.objects.create(code="SOUTH", name="South depot")
    chair = Product.objects.create(sku="CHAIR-01", name="Office chair", price=Decimal("149.00"))
    desk = Product.objects.create(sku="DESK-04", name="Standing desk", price=Decimal("499.00"))
    lamp = Product.objects.create(sku="LAMP-02", name="Desk lamp", price=Decimal("39.90"))
    mug = Product.objects.create(sku="MUG-11", name="Coffee mug", price=Decimal("8.50"))
    Stock.objects.bulk_create(
        [
            Stock(product=chair, warehouse=north, quantity=3, reorder_level=10),
            Stock(product=desk, warehouse=north, quantity=12, reorder_level=5),
            Stock(product=lamp, warehouse=north, quantity=2, reorder_level=8),
            Stock(product=mug, warehouse=north, quantity=40, reorder_level=20),
            Stock(product=chair, warehouse=south, quantity=25, reorder_level=10),
            Stock(product=mug, warehouse=south, quantity=4, reorder_level=20),
        ]
    )
    ada = Order.objects.create(number=1001, customer="Ada", warehouse=north)
    OrderLine.objects.create(order=ada, product=lamp, quantity=6)
    grace = Order.objects.create(number=1002, customer="Grace", warehouse=north)
    OrderLine.objects.create(order=grace, product=desk, quantity=1)
