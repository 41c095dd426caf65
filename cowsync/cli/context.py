"""What the commands need from whoever runs them: a database connection and a terminal.

The ``cowsync`` console script builds a :class:`CliContext` from ``--dsn`` (or the
environment). The Django management command and the Flask CLI build their own, with a
``connect`` that hands out their configured database, and run the very same commands.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from rich.console import Console

from .errors import CliError

DSN_ENVIRONMENT = ("COWSYNC_DSN", "DATABASE_URL")
# libpq reads these itself; when one is set an empty DSN is a real choice, not an omission.
LIBPQ_ENVIRONMENT = ("PGHOST", "PGHOSTADDR", "PGDATABASE", "PGSERVICE", "PGPORT", "PGUSER")
_CONNECT_TIMEOUT = 10
# SQLAlchemy-style URLs (postgresql+psycopg://) are common in DATABASE_URL.
_DRIVER_SUFFIX = re.compile(r"^(postgres(?:ql)?)\+[a-z0-9_]+://", re.IGNORECASE)

Connect = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]


def normalise_dsn(dsn: str) -> str:
    """Accept ``postgresql+psycopg://`` and similar driver-qualified URLs as plain ones."""
    return _DRIVER_SUFFIX.sub(lambda m: f"{m.group(1)}://", dsn.strip())


def dsn_from_environment() -> str | None:
    """The DSN from ``COWSYNC_DSN`` or ``DATABASE_URL`` (the first one set), else None."""
    for name in DSN_ENVIRONMENT:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def libpq_environment_set() -> bool:
    """True when libpq's own variables (PGHOST, PGDATABASE, ...) say where to connect."""
    return any(os.environ.get(name) for name in LIBPQ_ENVIRONMENT)


# A password in a DSN that does not parse: key=value (quoted or not), or user:password@ in a URL.
_PASSWORD_PAIR = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&]+)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@", re.IGNORECASE)
# What psycopg puts before libpq's own message.
_LIBPQ_PREFIXES = ("connection failed:", "connection is bad:")


def mask_dsn(dsn: str) -> str:
    """``dsn`` for messages, as written but its password (a parameter or in a URL) ``***``."""
    masked = _URL_PASSWORD.sub(r"\1***@", dsn.strip())
    return _PASSWORD_PAIR.sub(r"\1***", masked)


def libpq_reason(exc: BaseException) -> str:
    """libpq's message as one clean line, without psycopg's ``connection is bad:`` prefix."""
    lines = (line.strip() for line in str(exc).split("\n"))
    text = "; ".join(line for line in lines if line)
    for prefix in _LIBPQ_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :].strip()
    return text or type(exc).__name__


def open_connection(dsn: str) -> psycopg.Connection[Any]:
    """An autocommit connection to ``dsn``, giving up after a few seconds when unreachable."""
    dsn = normalise_dsn(dsn)
    options = conninfo_to_dict(dsn)  # raises ProgrammingError on a malformed DSN
    kwargs: dict[str, Any] = {"autocommit": True}
    if "connect_timeout" not in options and not os.environ.get("PGCONNECT_TIMEOUT"):
        kwargs["connect_timeout"] = _CONNECT_TIMEOUT
    return psycopg.connect(dsn, **kwargs)


def open_cli_connection(dsn: str) -> psycopg.Connection[Any]:
    """:func:`open_connection` for a command: a DSN that does not parse, or a database that
    does not answer, is a :class:`CliError` naming the DSN (password masked) and libpq's
    reason, on one line."""
    shown = mask_dsn(dsn) or "(empty: libpq's defaults)"
    try:
        conninfo_to_dict(normalise_dsn(dsn))
    except psycopg.ProgrammingError as exc:
        raise CliError(
            f"the DSN {shown!r} could not be parsed: {libpq_reason(exc)} "
            "(expected a URL such as postgresql://user@host/db, or key=value pairs)",
            type="bad_dsn",
            details={"dsn": shown},
        ) from exc
    try:
        return open_connection(dsn)
    except psycopg.OperationalError as exc:
        raise CliError(
            f"the database at {shown!r} could not be reached: {libpq_reason(exc)}",
            type="unreachable_database",
            details={"dsn": shown, "sqlstate": exc.sqlstate},
        ) from exc


def dsn_connector(dsn: str | None) -> Connect:
    """A ``connect`` callable for :class:`CliContext` that opens (and closes) ``dsn``."""

    @contextlib.contextmanager
    def connect() -> Iterator[psycopg.Connection[Any]]:
        if dsn is None:
            raise CliError(
                "no database given: pass --dsn, or set "
                + " or ".join(DSN_ENVIRONMENT)
                + " (e.g. postgresql://user@localhost/db)",
                type="no_database",
            )
        with open_cli_connection(dsn) as conn:
            yield conn

    return connect


def connection_connector(conn: psycopg.Connection[Any]) -> Connect:
    """A ``connect`` callable that lends an existing connection and leaves it open.

    For hosts that own the connection (a Django or Flask app). cowsync's write
    functions open their own transaction blocks, so autocommit and non-autocommit
    connections both work.
    """

    @contextlib.contextmanager
    def connect() -> Iterator[psycopg.Connection[Any]]:
        yield conn

    return connect


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):  # closed or replaced stdin
        return False


@dataclass
class CliContext:
    """Everything a command needs from its host.

    ``connect`` returns a context manager yielding a psycopg connection. ``interactive``
    says whether confirmations may be asked (a terminal on stdin); without it,
    ``commit`` and ``discard`` need ``--yes``. ``dsn`` is kept for ``cowsync demo``.

    >>> ctx = CliContext.from_dsn("postgresql://localhost/app")          # doctest: +SKIP
    >>> cowsync.cli.run(["status"], obj=ctx)                             # doctest: +SKIP
    """

    connect: Connect
    interactive: bool = field(default_factory=_stdin_is_tty)
    dsn: str | None = None
    _console: Console | None = field(default=None, init=False, repr=False)
    _err_console: Console | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_dsn(cls, dsn: str | None, **kwargs: Any) -> CliContext:
        """A context that connects to ``dsn`` (None: the command reports that none was given)."""
        return cls(connect=dsn_connector(dsn), dsn=dsn, **kwargs)

    @classmethod
    def from_connection(cls, conn: psycopg.Connection[Any], **kwargs: Any) -> CliContext:
        """A context that runs every command on ``conn`` and never closes it."""
        return cls(connect=connection_connector(conn), **kwargs)

    @property
    def console(self) -> Console:
        """Where people-facing output goes (stdout)."""
        if self._console is None:
            # Created on first use, so it writes to whatever stdout is at that time
            # (click's test runner swaps it).
            # Names and values come from the database: never read them as markup or emoji codes.
            self._console = Console(highlight=False, markup=False, emoji=False)
        return self._console

    @property
    def err_console(self) -> Console:
        """Where progress and notes go (stderr), so stdout stays clean for pipes."""
        if self._err_console is None:
            self._err_console = Console(stderr=True, highlight=False, markup=False, emoji=False)
        return self._err_console
