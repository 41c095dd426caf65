"""Pointing Django's ``default`` database at a test's database, and looking at it from outside.

Django reads ``settings.DATABASES`` once; the ``default`` alias's settings dict is shared by
every thread's connection, so a test changes it in place and closes the connections
(and Django's connection pool) before and after.
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from django.apps import apps
from django.db import connection, connections
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import cowsync

TEST_APP = "testapp"

# Deleting a product deletes its reviews in the database itself (Django's DO_NOTHING leaves
# it to PostgreSQL), to check the ON DELETE actions sessions carry out.
REVIEW_CASCADE = """
ALTER TABLE testapp_review ADD CONSTRAINT review_product_fk
FOREIGN KEY (product_id) REFERENCES testapp_product (id) ON DELETE CASCADE
"""


def settings_for(dsn: str) -> dict[str, Any]:
    """The parts of a Django DATABASES entry that say where ``dsn`` points."""
    params = conninfo_to_dict(dsn)
    return {
        "NAME": params.get("dbname", ""),
        "USER": params.get("user", ""),
        "PASSWORD": params.get("password", ""),
        "HOST": params.get("host", ""),
        "PORT": str(params.get("port", "")),
    }


def close_everything() -> None:
    """Close this thread's connections and Django's pool for ``default``."""
    connections.close_all()
    wrapper_class = type(connections["default"])
    pools = getattr(wrapper_class, "_connection_pools", {})
    for alias in list(pools):
        pools.pop(alias).close()


@dataclass
class DjangoDb:
    """The test's database as Django's ``default``, plus an independent psycopg connection."""

    dsn: str
    _raw: psycopg.Connection[Any] | None = field(default=None, repr=False)

    @classmethod
    def attach(cls, dsn: str, **overrides: Any) -> DjangoDb:
        """Point ``default`` at ``dsn``; ``overrides`` replace keys (CONN_MAX_AGE, OPTIONS)."""
        close_everything()
        entry = connections.settings["default"]
        entry.update(settings_for(dsn))
        entry.update({"CONN_MAX_AGE": 0, "OPTIONS": {}, "CONN_HEALTH_CHECKS": False})
        entry.update(overrides)
        return cls(dsn)

    def configure(self, **overrides: Any) -> None:
        """Change ``default``'s settings (closing connections first)."""
        close_everything()
        connections.settings["default"].update(overrides)

    def detach(self) -> None:
        """Close everything that points at the test's database."""
        close_everything()
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    @property
    def raw(self) -> psycopg.Connection[Any]:
        """An autocommit psycopg connection of its own, never bound: production's view."""
        if self._raw is None or self._raw.closed:
            self._raw = psycopg.connect(self.dsn, autocommit=True)
        return self._raw

    def create_test_app_tables(self) -> None:
        """Create the test app's tables as ``migrate`` would, without migrations."""
        with connection.schema_editor() as editor:
            for model in apps.get_app_config(TEST_APP).get_models():
                editor.create_model(model)
        self.raw.execute(REVIEW_CASCADE)

    def deploy(self) -> None:
        """Install the cowsync engine."""
        cowsync.deploy(self.raw)

    def tables(self) -> list[str]:
        """The test app's tables, with the many-to-many ones."""
        return [
            model._meta.db_table
            for model in apps.get_app_config(TEST_APP).get_models(include_auto_created=True)
        ]

    def enable_all(self) -> None:
        """Enable every table of the test app."""
        for table in self.tables():
            cowsync.enable(self.raw, table)

    def production(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Rows ``query`` returns with no session bound (what production sees)."""
        return self.raw.execute(query, params).fetchall()


class Databases:
    """Copies of two template databases, made once per test process: the test app's tables
    with the engine deployed (``plain``), and the same with every table enabled (``enabled``).

    Copying a template costs a few tens of milliseconds; enabling the tables for each test
    would cost ten times that.
    """

    def __init__(self, admin_dsn: str, empty_template: str) -> None:
        self.admin_dsn = admin_dsn
        self._admin = psycopg.connect(admin_dsn, autocommit=True)
        self.plain = self._copy(empty_template)
        db = DjangoDb.attach(self.dsn_for(self.plain))
        try:
            db.create_test_app_tables()
            db.deploy()
        finally:
            db.detach()
        self.enabled = self._copy(self.plain)
        db = DjangoDb.attach(self.dsn_for(self.enabled))
        try:
            db.enable_all()
        finally:
            db.detach()

    def dsn_for(self, name: str) -> str:
        return make_conninfo(self.admin_dsn, dbname=name)

    def _copy(self, template: str) -> str:
        name = f"cowsync_t_{secrets.token_hex(6)}"
        self._admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
        return name

    def copy(self, enabled: bool) -> str:
        """A fresh database copied from one of the templates; its name."""
        return self._copy(self.enabled if enabled else self.plain)

    def drop(self, name: str) -> None:
        self._admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def close(self) -> None:
        try:
            self.drop(self.enabled)
            self.drop(self.plain)
        finally:
            self._admin.close()


def unblocked(request: pytest.FixtureRequest) -> contextlib.AbstractContextManager[Any]:
    """With pytest-django installed, let these tests use the database they set up themselves.

    pytest-django blocks database access outside its own fixtures; these tests do not use
    its test database (each gets one of its own), so they lift the block for their run.
    """
    if not request.config.pluginmanager.hasplugin("django"):
        return contextlib.nullcontext()
    blocker = request.getfixturevalue("django_db_blocker")
    return blocker.unblock()  # type: ignore[no-any-return]
