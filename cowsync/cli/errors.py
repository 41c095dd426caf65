"""How the command line reports failures: one clear message and a documented exit code.

Exit codes (also in docs/cli.md):

* ``0`` the command did what was asked;
* ``1`` a user error: bad arguments, an unknown session, table or operation, a database that
  cannot be reached, an engine that is not deployed, a refused confirmation;
* ``2`` the database refused to apply the session as it stands: a conflict, a missing
  dependency, or a constraint the commit would break. Nothing was applied; the message says
  what to do next.

Any other exception is a bug in cowsync and keeps its traceback.

Messages can quote what an agent wrote (a key in a constraint violation, an operation id),
so each line of a message is shown through :func:`cowsync.inert.inert`: an escape sequence
in a value prints as ``\\x1b[...``, it does not drive the terminal.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import click
import psycopg

from ..errors import (
    CommitError,
    ConflictError,
    CowError,
    DependencyError,
    NotDeployedError,
    SessionBusyError,
    StaleReviewError,
)
from ..inert import inert

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_REFUSED = 2

P = ParamSpec("P")
R = TypeVar("R")


class CliError(click.ClickException):
    """A user error the command line reports as ``error: <message>`` (exit code 1)."""

    exit_code = EXIT_USER_ERROR

    def show(self, file: Any = None) -> None:
        """Print the message to stderr, prefixed with ``error:``, each line made inert."""
        click.secho("error: ", err=True, fg="red", bold=True, nl=False)
        click.echo("\n".join(map(inert, self.format_message().split("\n"))), err=True)


class CliRefusal(CliError):
    """The database refused to apply the session as it stands (exit code 2)."""

    exit_code = EXIT_REFUSED


def one_line(text: str) -> str:
    """Collapse a (possibly multi-line) message from PostgreSQL or libpq into one line.

    Only line feeds separate lines there: any other line-breaking character is part of a
    quoted value and stays, for :meth:`CliError.show` to print as an escape.
    """
    return " ".join(part.strip() for part in str(text).split("\n") if part.strip())


def as_cli_error(exc: BaseException) -> CliError | None:
    """The CLI error for an exception raised by cowsync or psycopg, or None for a bug."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, ConflictError):
        return CliRefusal(
            f"{len(exc.conflicts)} row(s) changed in production after the session first "
            "touched them; nothing was applied\n"
            "  to go on: commit again with --on-conflict skip (keep production's rows), "
            "overwrite (the session wins) or merge (column by column), "
            "or discard the operations that conflict",
        )
    if isinstance(exc, DependencyError):
        missing = ", ".join(sorted(exc.missing))
        return CliRefusal(
            f"{one_line(str(exc))}\n"
            f"  to go on: add --operation for each of {missing}, or pass "
            "--include-dependencies (commit) / --include-dependents (discard)",
        )
    if isinstance(exc, CommitError):
        return CliRefusal(
            f"{one_line(str(exc))}\n"
            "  to go on: review the session with `cowsync diff`, then commit fewer operations "
            "or discard the one that breaks the constraint",
        )
    if isinstance(exc, StaleReviewError | SessionBusyError):
        return CliRefusal(one_line(str(exc)))
    if isinstance(exc, NotDeployedError):
        return CliError("cowsync is not deployed in this database: run `cowsync deploy` first")
    if isinstance(exc, CowError):
        return CliError(one_line(str(exc)))
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return CliError(
            f"the database role lacks the rights for this ({one_line(str(exc))}): connect "
            "as the table owner or a reviewer role (cowsync.harden(..., reviewer_roles=[...]), "
            "see docs/security.md)"
        )
    if isinstance(exc, psycopg.OperationalError):
        return CliError(f"cannot use the database: {one_line(str(exc))}")
    if isinstance(exc, psycopg.Error):
        # Bad DSN syntax (ProgrammingError), a missing privilege, a statement timeout...
        return CliError(one_line(str(exc)) or type(exc).__name__)
    return None


def reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn cowsync and psycopg errors raised by a command into :class:`CliError`.

    Applied to every command callback, so the same exit codes hold whichever click
    group hosts the command (``cowsync``, ``manage.py cowsync``, ``flask cowsync``).
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (CowError, psycopg.Error) as exc:
            error = as_cli_error(exc)
            if error is None:  # pragma: no cover - every CowError and psycopg.Error maps
                raise
            raise error from exc

    return wrapper
