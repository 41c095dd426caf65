"""The JSON API the agent calls. Plain Django: sessions are the middleware's business.

Every write answers ``200`` with what it did, or ``409`` with why the database (or the
model's rules) refused it; a refused write changes nothing, in a session or not.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, ProtectedError
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .models import Order, Product, Stock


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"{}")
    except json.JSONDecodeError:
        data = None
    return data if isinstance(data, dict) else {}


def _refused(reason: str, **details: Any) -> JsonResponse:
    return JsonResponse({"refused": reason, **details}, status=409)


@require_GET
def stock(request: HttpRequest) -> JsonResponse:
    """Every stock level, with ``low`` when it is below its reorder level."""
    levels = Stock.objects.select_related("product", "warehouse").order_by(
        "warehouse__code", "product__sku"
    )
    return JsonResponse(
        {
            "stock": [
                {
                    "sku": s.product.sku,
                    "warehouse": s.warehouse.code,
                    "quantity": s.quantity,
                    "reorder_level": s.reorder_level,
                    "low": s.quantity < s.reorder_level,
                }
                for s in levels
            ]
        }
    )


@require_GET
def orders(request: HttpRequest) -> JsonResponse:
    """Orders with their lines."""
    return JsonResponse(
        {
            "orders": [
                {
                    "number": o.number,
                    "customer": o.customer,
                    "warehouse": o.warehouse.code,
                    "status": o.status,
                    "lines": [
                        {"sku": line.product.sku, "quantity": line.quantity}
                        for line in o.lines.all()
                    ],
                }
                for o in Order.objects.select_related("warehouse")
                .prefetch_related("lines__product")
                .order_by("number")
            ]
        }
    )


@csrf_exempt
@require_POST
def restock_low(request: HttpRequest) -> JsonResponse:
    """Bring every stock level below its reorder level up to twice that level."""
    low = Stock.objects.filter(quantity__lt=F("reorder_level"))
    restocked = low.update(quantity=F("reorder_level") * 2)
    return JsonResponse({"restocked": restocked})


@csrf_exempt
@require_POST
def ship_order(request: HttpRequest, number: int) -> JsonResponse:
    """Ship an open order: lock its stock rows, take the quantities out, mark it shipped."""
    with transaction.atomic():
        order = get_object_or_404(Order.objects.select_for_update(), number=number)
        if order.status != Order.OPEN:
            return _refused(f"order {number} is {order.status}")
        lines = list(order.lines.select_related("product"))
        levels = {
            s.product_id: s
            for s in Stock.objects.select_for_update().filter(
                warehouse=order.warehouse_id, product__in=[line.product_id for line in lines]
            )
        }
        for line in lines:
            level = levels.get(line.product_id)
            if level is None or level.quantity < line.quantity:
                return _refused(
                    f"not enough {line.product.sku} at {order.warehouse.code}",
                    available=level.quantity if level else 0,
                )
        for line in lines:
            Stock.objects.filter(pk=levels[line.product_id].pk).update(
                quantity=F("quantity") - line.quantity
            )
        order.status = Order.SHIPPED
        order.save(update_fields=["status"])
    return JsonResponse({"shipped": number, "units": sum(line.quantity for line in lines)})


@csrf_exempt
@require_POST
def delete_product(request: HttpRequest, sku: str) -> JsonResponse:
    """Discontinue a product (refused while an order line needs it)."""
    product = get_object_or_404(Product, sku=sku)
    try:
        product.delete()
    except ProtectedError as exc:
        orders = sorted({line.order.number for line in exc.protected_objects})
        return _refused(f"{sku} is on open orders", orders=orders)
    return JsonResponse({"deleted": sku})


@csrf_exempt
@require_POST
def adjust_stock(request: HttpRequest) -> JsonResponse:
    """A stocktake correction: add ``delta`` (may be negative) to one stock level."""
    data = _body(request)
    try:
        with transaction.atomic():
            changed = Stock.objects.filter(
                product__sku=data.get("sku"), warehouse__code=data.get("warehouse")
            ).update(quantity=F("quantity") + int(data.get("delta", 0)))
    except IntegrityError as exc:
        return _refused("the database refused the change", error=str(exc).splitlines()[0])
    return JsonResponse({"adjusted": changed})


@csrf_exempt
@require_POST
def set_price(request: HttpRequest, sku: str) -> JsonResponse:
    """Set a product's price."""
    try:
        price = Decimal(str(_body(request)["price"]))
    except (KeyError, InvalidOperation):
        return JsonResponse({"error": 'send {"price": "12.50"}'}, status=400)
    updated = Product.objects.filter(sku=sku).update(price=price)
    if not updated:
        return JsonResponse({"error": f"no product {sku}"}, status=404)
    return JsonResponse({"sku": sku, "price": str(price)})
