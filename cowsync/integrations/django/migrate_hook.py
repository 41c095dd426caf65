"""``COWSYNC["ENABLE_AFTER_MIGRATE"]``: deploy the engine and enable the chosen tables after
``migrate`` (and so in test databases too), on every database that uses the cowsync backend.
"""

from __future__ import annotations

from typing import Any

from django.db import connections

from ... import install
from ...binding import unbound
from ...errors import NotEnabledError
from .conf import cow_settings
from .relations import enabled_relations
from .selection import selected_tables


def uses_cowsync(alias: str) -> bool:
    """True when database ``alias`` runs on the cowsync backend."""
    from .base import DatabaseWrapper

    return isinstance(connections[alias], DatabaseWrapper)


def enable_after_migrate(
    sender: Any, *, using: str, verbosity: int = 1, apps: Any = None, **kwargs: Any
) -> None:
    """The ``post_migrate`` receiver: deploy, then enable chosen tables not enabled yet.

    A chosen table that does not exist on this database (its app is not migrated here)
    is skipped.
    """
    settings = cow_settings()
    if not settings.enable_after_migrate or not uses_cowsync(using):
        return
    connection = connections[using]
    connection.ensure_connection()
    conn = connection.connection
    with unbound():
        install.deploy(conn, settings.config)
        relations = enabled_relations(conn)
        for table in selected_tables(settings, using, apps):
            schema, _, name = table.rpartition(".")
            if relations.find(schema or None, name) is not None:
                continue
            try:
                install.enable(conn, table)
            except NotEnabledError:
                if verbosity >= 2:
                    print(f"cowsync: {table} does not exist on database {using!r}; skipped")
                continue
            if verbosity >= 1:
                print(f"cowsync: enabled {table} on database {using!r}")
