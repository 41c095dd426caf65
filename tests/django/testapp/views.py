"""Endpoints the middleware and leak tests call."""

from __future__ import annotations

import json
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.db import IntegrityError, connection, transaction
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse

from .models import Product


def _skus() -> list[str]:
    return list(Product.objects.order_by("sku").values_list("sku", flat=True))


def products(request: HttpRequest) -> JsonResponse:
    """What the request sees."""
    binding = getattr(request, "cow_binding", None)
    return JsonResponse(
        {
            "skus": _skus(),
            "session": binding.session_id if binding else None,
            "operation": binding.operation_id if binding else None,
        }
    )


def mark(request: HttpRequest) -> JsonResponse:
    """Write one product named by the request, then report what the request sees.

    ``?fail=SKU`` first fails a write inside a savepoint (a duplicate of SKU) and carries
    on, as a view that catches IntegrityError would.
    """
    sku = request.GET["sku"]
    duplicate = request.GET.get("fail")
    if duplicate:
        Product.objects.get_or_create(sku=duplicate, defaults={"name": "dup", "price": 1})
        try:
            with transaction.atomic():
                Product.objects.create(sku=duplicate, name="again", price=1)
        except IntegrityError:
            pass
    Product.objects.create(sku=sku, name=sku, price=Decimal("1.00"))
    return JsonResponse({"skus": _skus(), "pid": connection.connection.info.backend_pid})


def boom(request: HttpRequest) -> JsonResponse:
    """Write, then fail: with ATOMIC_REQUESTS the write is rolled back with the request."""
    Product.objects.create(sku=request.GET["sku"], name="boom", price=Decimal("1.00"))
    raise RuntimeError("the view failed after writing")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    """Query the database while the body is streamed, after the middleware returned."""

    def body():
        yield "["
        for i, sku in enumerate(Product.objects.order_by("sku").values_list("sku", flat=True)):
            yield ("," if i else "") + f'"{sku}"'
        yield "]"

    return StreamingHttpResponse(body(), content_type="application/json")


def astream(request: HttpRequest) -> StreamingHttpResponse:
    """An async body that queries the database while it is streamed (ASGI)."""

    async def body():
        skus = await sync_to_async(_skus)()
        yield json.dumps(skus)

    return StreamingHttpResponse(body(), content_type="application/json")
