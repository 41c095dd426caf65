"""The same inventory API on Flask-SQLAlchemy: ``flask --app inventory.orm run``.

Nothing in the models or views knows about cowsync. ``CowSync`` finds Flask-SQLAlchemy on
the app and binds its engine: every connection the ORM checks out during a request that
names a session works in that session, and comes back unbound.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Blueprint, Flask, abort, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, Numeric, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cowsync.integrations.flask import CowSync

from . import DEFAULT_DATABASE_URL, setup_db
from .security import authorize


class Base(DeclarativeBase):
    """Declarative base of the inventory models."""


db = SQLAlchemy(model_class=Base)
cow = CowSync()


class Warehouse(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "warehouses"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    city: Mapped[str]


class Product(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "products"
    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str]
    name: Mapped[str]
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))


class Stock(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "stock"
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouses.id"), primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), primary_key=True)
    quantity: Mapped[int]
    reorder_level: Mapped[int]


class Order(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str]
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouses.id"))
    quantity: Mapped[int]
    status: Mapped[str]


api = Blueprint("orm_api", __name__)


def sqlalchemy_url(url: str) -> str:
    """``postgresql://...`` as SQLAlchemy's ``postgresql+psycopg://...``."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)


@api.errorhandler(IntegrityError)
def constraint_refused(error: IntegrityError) -> tuple[dict[str, Any], int]:
    """A constraint refused the change: say which, as the database said it."""
    diag = getattr(error.orig, "diag", None)
    return {
        "error": getattr(diag, "message_primary", str(error.orig)),
        "constraint": getattr(diag, "constraint_name", None),
    }, 409


@api.get("/products")
def list_products() -> dict[str, Any]:
    """The catalogue."""
    products = db.session.scalars(select(Product).order_by(Product.id))
    return {
        "products": [{"id": p.id, "sku": p.sku, "name": p.name, "price": p.price} for p in products]
    }


@api.get("/stock")
def list_stock() -> dict[str, Any]:
    """Every stock level, with whether it is below its reorder level."""
    levels = db.session.scalars(select(Stock).order_by(Stock.warehouse_id, Stock.product_id))
    return {
        "stock": [
            {
                "warehouse_id": s.warehouse_id,
                "product_id": s.product_id,
                "quantity": s.quantity,
                "reorder_level": s.reorder_level,
                "low": s.quantity < s.reorder_level,
            }
            for s in levels
        ]
    }


@api.get("/orders")
def list_orders() -> dict[str, Any]:
    """Every order."""
    orders = db.session.scalars(select(Order).order_by(Order.id))
    return {
        "orders": [
            {
                "id": o.id,
                "customer": o.customer,
                "product_id": o.product_id,
                "warehouse_id": o.warehouse_id,
                "quantity": o.quantity,
                "status": o.status,
            }
            for o in orders
        ]
    }


@api.post("/stock/restock-low")
def restock_low() -> dict[str, Any]:
    """Bring every level below its reorder level up to twice that level."""
    low = db.session.scalars(select(Stock).where(Stock.quantity < Stock.reorder_level)).all()
    for level in low:
        level.quantity = level.reorder_level * 2
    db.session.commit()
    return {"restocked": len(low)}


@api.post("/orders/<int:order_id>/fulfil")
def fulfil_order(order_id: int) -> dict[str, Any]:
    """Ship an open order from its warehouse: mark it fulfilled and take the stock."""
    order = db.session.get(Order, order_id)
    if order is None or order.status != "open":
        abort(409, f"order {order_id} is not open")
    level = db.session.get(Stock, (order.warehouse_id, order.product_id))
    if level is None:
        abort(409, f"no stock of product {order.product_id} at warehouse {order.warehouse_id}")
    order.status = "fulfilled"
    level.quantity -= order.quantity
    db.session.commit()
    return {"fulfilled": order_id, "shipped": order.quantity}


@api.delete("/products/<sku>")
def discontinue_product(sku: str) -> dict[str, Any]:
    """Delete a product from the catalogue (refused while stock or orders reference it)."""
    product = db.session.scalar(select(Product).where(Product.sku == sku))
    if product is None:
        return {"deleted": 0}
    db.session.delete(product)
    db.session.commit()
    return {"deleted": 1}


@api.post("/stock/<int:warehouse_id>/<int:product_id>/adjust")
def adjust_stock(warehouse_id: int, product_id: int) -> dict[str, Any]:
    """Apply a stocktake correction: ``{"delta": -3}``."""
    delta = (request.get_json(silent=True) or {}).get("delta")
    if not isinstance(delta, int):
        abort(400, 'send {"delta": <integer>}')
    level = db.get_or_404(Stock, (warehouse_id, product_id))
    level.quantity += delta
    db.session.commit()
    return {"quantity": level.quantity}


@api.put("/products/<sku>/price")
def set_price(sku: str) -> dict[str, Any]:
    """Overwrite a product's price: ``{"price": "149.00"}``."""
    try:
        price = Decimal(str((request.get_json(silent=True) or {})["price"]))
    except (KeyError, InvalidOperation):
        abort(400, 'send {"price": "<decimal>"}')
    product = db.first_or_404(select(Product).where(Product.sku == sku))
    product.price = price
    db.session.commit()
    return {"sku": sku, "price": price}


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The application factory of the ORM variant (``flask --app inventory.orm``)."""
    app = Flask(__name__)
    url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    app.config["SQLALCHEMY_DATABASE_URI"] = sqlalchemy_url(url)
    app.config["COWSYNC_AUTHORIZE"] = authorize
    app.config["AGENT_TOKEN"] = os.environ.get("AGENT_TOKEN")
    app.config.update(config or {})
    db.init_app(app)
    # After Flask-SQLAlchemy: CowSync finds it and binds its engine. `flask cowsync` and
    # `flask init-db` use the engine's database.
    cow.init_app(app)
    app.register_blueprint(api)
    setup_db.register(app, cow)
    return app
