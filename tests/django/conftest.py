"""Django for the integration tests: configured once per process, pointed at each test's database.

``settings.configure`` runs when this folder is collected. ``deployed_db`` points the ``default``
alias at a fresh database on the harness's server (a copy of a template with the test app's
tables and the engine deployed) and hands back a :class:`DjangoDb` helper; ``enabled_db`` is
the same with every test-app table enabled. They work with or without pytest-django installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.conf import settings

BASE_SETTINGS: dict[str, Any] = {
    "DATABASES": {
        "default": {"ENGINE": "cowsync.integrations.django", "NAME": "not_configured_yet"}
    },
    "INSTALLED_APPS": [
        "cowsync.integrations.django",
        "tests.django.testapp",
        "tests.django.migrapp",
    ],
    "MIDDLEWARE": ["cowsync.integrations.django.middleware.CowSessionMiddleware"],
    "ROOT_URLCONF": "tests.django.testapp.urls",
    "USE_TZ": True,
    "SECRET_KEY": "cowsync-tests",
    "ALLOWED_HOSTS": ["*"],
    "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
    "COWSYNC": {},
}

if not settings.configured:
    settings.configure(**BASE_SETTINGS)
    django.setup()

from tests.django import _djdb  # noqa: E402


@pytest.fixture(scope="session")
def django_databases(
    request: pytest.FixtureRequest, pg_admin_dsn: str, pg_databases: Any
) -> Iterator[_djdb.Databases]:
    """The templates every Django test database is copied from (see _djdb.Databases)."""
    assert pg_databases.template is not None
    with _djdb.unblocked(request):
        databases = _djdb.Databases(pg_admin_dsn, pg_databases.template)
    try:
        yield databases
    finally:
        databases.close()


def _attached(
    request: pytest.FixtureRequest, databases: _djdb.Databases, enabled: bool
) -> Iterator[_djdb.DjangoDb]:
    with _djdb.unblocked(request):
        name = databases.copy(enabled)
        db = _djdb.DjangoDb.attach(databases.dsn_for(name))
        try:
            yield db
        finally:
            db.detach()
            databases.drop(name)


@pytest.fixture
def deployed_db(
    request: pytest.FixtureRequest, django_databases: _djdb.Databases
) -> Iterator[_djdb.DjangoDb]:
    """``default`` on a fresh database with the test app's tables and the engine deployed."""
    yield from _attached(request, django_databases, enabled=False)


@pytest.fixture
def enabled_db(
    request: pytest.FixtureRequest, django_databases: _djdb.Databases
) -> Iterator[_djdb.DjangoDb]:
    """``deployed_db`` with every test-app table enabled."""
    yield from _attached(request, django_databases, enabled=True)
