"""Models for the Django integration tests: a small inventory."""

from __future__ import annotations

import django
from django.db import models

# CheckConstraint took check= before Django 5.1 and takes condition= since.
_CHECK = "condition" if django.VERSION >= (5, 1) else "check"


class Warehouse(models.Model):
    code = models.CharField(max_length=20, unique=True)
    city = models.CharField(max_length=50, default="Lyon")

    class Meta:
        ordering = ["id"]


class Tag(models.Model):
    name = models.CharField(max_length=30, unique=True)

    class Meta:
        ordering = ["id"]


class Product(models.Model):
    sku = models.CharField(max_length=20, unique=True)
    name = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    active = models.BooleanField(default=True)
    attributes = models.JSONField(default=dict)
    tags = models.ManyToManyField(Tag, blank=True)

    class Meta:
        ordering = ["id"]


class Stock(models.Model):
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="stock")
    warehouse = models.ForeignKey(Warehouse, on_delete=models.PROTECT, related_name="stock")
    quantity = models.IntegerField(default=0)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["product", "warehouse"], name="stock_once"),
            models.CheckConstraint(
                **{_CHECK: models.Q(quantity__gte=0)}, name="stock_not_negative"
            ),
        ]


class Review(models.Model):
    """Deleted with its product by the database (ON DELETE CASCADE, added in SQL)."""

    product = models.ForeignKey(
        Product, on_delete=models.DO_NOTHING, related_name="reviews", db_constraint=False
    )
    stars = models.IntegerField()

    class Meta:
        ordering = ["id"]
