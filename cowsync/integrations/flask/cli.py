"""``flask cowsync ...``: the ``cowsync`` review commands, run against the app's database.

The commands are cowsync's own (:func:`cowsync.cli.make_group`); this module only tells them
where the app's database is. The database is, in order: ``COWSYNC_DATABASE_URL``, the pool
given as ``COWSYNC_POOL`` (an unbound connection from it), the URL of the SQLAlchemy engine
cowsync binds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import click
import psycopg

from ...cli import CliContext, CliError, make_group
from ...cli.context import dsn_connector
from ...errors import ConfigurationError
from ...pool import CowPool

HELP = """Review and apply cowsync sessions in this app's database.

\b
Exit codes: 0 ok, 1 user error, 2 refused by the database
(conflict, dependency, constraint): nothing was applied.
"""


class DatabaseSource(Protocol):
    """Where the app's database is (the extension's per-app state provides it)."""

    def database_url(self) -> str | None:
        """A DSN for a new connection, or None."""

    def given_pool(self) -> CowPool[Any] | None:
        """The pool the app was given (``COWSYNC_POOL``), or None."""


def make_cli_group(source: Callable[[], DatabaseSource]) -> click.Group:
    """The ``cowsync`` click group for ``app.cli``, connecting where ``source()`` says.

    ``source`` is called when a command runs, not when the group is built, so the app's
    configuration is read as it stands then.
    """

    def context_factory(ctx: click.Context) -> CliContext:
        return CliContext(connect=_connector(source), dsn=None)

    return make_group(context_factory, name="cowsync", help=HELP)


def _connector(
    source: Callable[[], DatabaseSource],
) -> Callable[[], contextlib.AbstractContextManager[psycopg.Connection[Any]]]:
    @contextlib.contextmanager
    def connect() -> Iterator[psycopg.Connection[Any]]:
        try:
            where = source()
            dsn = where.database_url()
            pool = where.given_pool()
        except ConfigurationError as exc:
            raise CliError(str(exc)) from exc
        if dsn is not None:
            with dsn_connector(dsn)() as conn:
                yield conn
        elif pool is not None:
            # Review and apply are production work: never under a request's session.
            with pool.connection(session_id=None) as conn:
                yield conn
        else:
            raise CliError(
                "the app has no database for cowsync: set COWSYNC_DATABASE_URL (or "
                "COWSYNC_POOL), or give CowSync a SQLAlchemy engine"
            )

    return connect
