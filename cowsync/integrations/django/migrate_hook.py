"""``COWSYNC["ENABLE_AFTER_MIGRATE"]``: deploy the engine and enable the chosen tables after
``migrate`` (and so in test databases too), on every database that uses the cowsync backend.
"""

from __future__ import annotations

import warnings
from typing import Any

import psycopg
from django.db import connections

from ... import install
from ...binding import unbound
from ...errors import InvalidNameError, NotEnabledError, UnsupportedTableError
from .conf import cow_settings
from .relations import enabled_relations
from .selection import selected_tables


class TableSkippedWarning(UserWarning):
    """``ENABLE_AFTER_MIGRATE`` could not enable a chosen table; ``migrate`` went on.

    Fix the table (the message says why) and migrate again, or leave it out of
    ``COWSYNC["MODELS"]``; ``warnings.simplefilter("error", TableSkippedWarning)``
    makes ``migrate`` fail instead.
    """


def uses_cowsync(alias: str) -> bool:
    """True when database ``alias`` runs on the cowsync backend."""
    from .base import DatabaseWrapper

    return isinstance(connections[alias], DatabaseWrapper)


def enable_after_migrate(
    sender: Any, *, using: str, verbosity: int = 1, apps: Any = None, **kwargs: Any
) -> None:
    """The ``post_migrate`` receiver: deploy, then enable chosen tables not enabled yet.

    A chosen table that does not exist on this database (its app is not migrated here)
    is skipped. A table that cannot be enabled (no key, a refusal from the database) is
    skipped with a :class:`TableSkippedWarning` saying why: it never makes ``migrate``
    fail nor stops the other tables. A lost connection or a timeout still raises.
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
                if settings.mode is None:
                    install.enable(conn, table)
                else:
                    install.enable(conn, table, mode=settings.mode)  # type: ignore[arg-type]
            except NotEnabledError:
                if verbosity >= 2:
                    print(f"cowsync: {table} does not exist on database {using!r}; skipped")
                continue
            except (UnsupportedTableError, InvalidNameError) as exc:
                _skipped(table, using, str(exc))
                continue
            except psycopg.OperationalError:
                raise
            except psycopg.DatabaseError as exc:
                _skipped(table, using, install.refusal_reason(exc))
                continue
            if verbosity >= 1:
                print(f"cowsync: enabled {table} on database {using!r}")


def _skipped(table: str, using: str, reason: str) -> None:
    warnings.warn(
        f"cowsync: did not enable {table} on database {using!r}: {reason}",
        TableSkippedWarning,
        stacklevel=2,
    )
