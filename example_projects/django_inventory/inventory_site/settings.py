"""Settings of the inventory example: a Django project whose database is sandboxed by cowsync.

The database comes from ``DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/inventory``).
Everything cowsync needs is marked below: the ENGINE, the app, the middleware, COWSYNC.
"""

import os
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "inventory-example-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

_db = conninfo_to_dict(
    os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/inventory")
)
DATABASES = {
    "default": {
        "ENGINE": "cowsync.integrations.django",  # cowsync: Django's PostgreSQL backend + sessions
        "NAME": _db.get("dbname", "inventory"),
        "USER": _db.get("user", ""),
        "PASSWORD": _db.get("password", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
        "CONN_MAX_AGE": 60,
    }
}

INSTALLED_APPS = [
    "cowsync.integrations.django",  # cowsync: `manage.py cowsync`, enable after migrate
    "inventory",
]

MIDDLEWARE = [
    # cowsync: first, so everything after it (and the view) runs in the request's session.
    "cowsync.integrations.django.middleware.CowSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
]

COWSYNC = {
    # Sandbox every table of the inventory app; `migrate` deploys the engine and enables them.
    "MODELS": ["inventory"],
    "ENABLE_AFTER_MIGRATE": True,
    # A request that names a session but no operation becomes an operation of its own.
    "OPERATION_PER_REQUEST": True,
    # Only sessions whose id starts with "agent-" may be used over HTTP.
    "AUTHORIZE": "inventory.security.may_use_session",
}

ROOT_URLCONF = "inventory_site.urls"
WSGI_APPLICATION = "inventory_site.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
