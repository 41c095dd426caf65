"""The inventory API on Flask, with plain psycopg through ``cow.connection()``.

``flask --app inventory run`` serves it; requests that carry ``X-Cow-Session-Id`` work in
that cowsync session, the others in production. The Flask-SQLAlchemy variant of the same
API is :mod:`inventory.orm`.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from . import setup_db, views
from .extensions import cow
from .security import authorize

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/inventory"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The application factory (``flask --app inventory`` finds it)."""
    app = Flask(__name__)
    app.config["COWSYNC_DATABASE_URL"] = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    app.config["COWSYNC_AUTHORIZE"] = authorize
    app.config["AGENT_TOKEN"] = os.environ.get("AGENT_TOKEN")
    app.config.update(config or {})
    cow.init_app(app)
    app.register_blueprint(views.api)
    setup_db.register(app, cow)
    return app
