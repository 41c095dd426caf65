"""Warehouses, products, stock levels and orders. Nothing here knows about cowsync."""

import django
from django.db import models

# CheckConstraint takes condition= since Django 5.1 (check= before).
_CONDITION = "condition" if django.VERSION >= (5, 1) else "check"


class Warehouse(models.Model):
    code = models.CharField(max_length=10, unique=True)
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.code


class Product(models.Model):
    sku = models.CharField(max_length=20, unique=True)
    name = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=10, decimal_places=2)

    def __str__(self) -> str:
        return self.sku


class Stock(models.Model):
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="stock")
    warehouse = models.ForeignKey(Warehouse, on_delete=models.PROTECT, related_name="stock")
    quantity = models.IntegerField()
    reorder_level = models.IntegerField(default=10)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["product", "warehouse"], name="one_stock_per_place"),
            models.CheckConstraint(
                **{_CONDITION: models.Q(quantity__gte=0)}, name="stock_never_negative"
            ),
        ]


class Order(models.Model):
    OPEN, SHIPPED = "open", "shipped"

    number = models.IntegerField(unique=True)
    customer = models.CharField(max_length=100)
    warehouse = models.ForeignKey(Warehouse, on_delete=models.PROTECT, related_name="orders")
    status = models.CharField(max_length=10, default=OPEN)


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    # An open order keeps its products: deleting one of them is refused.
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="order_lines")
    quantity = models.PositiveIntegerField()
