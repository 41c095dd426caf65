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

With ``--json`` an error is also printed to stdout as one JSON object,
``{"error": {"type", "message", "hint", "exit_code", ...details}}`` (see docs/cli.md);
the human message still goes to stderr.

Hints name the command as the host spells it (``cowsync``, ``manage.py cowsync``,
``flask cowsync``): see :func:`command_prefix`.
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
    PendingChangesError,
    SessionBusyError,
    StaleReviewError,
)
from ..inert import inert
from . import jsonout

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_REFUSED = 2

P = ParamSpec("P")
R = TypeVar("R")


def command_prefix() -> str:
    """How the running host spells the cowsync command: ``cowsync``, ``manage.py cowsync``,
    ``flask cowsync``... (the command path of the cowsync group), for hints in messages."""
    ctx = click.get_current_context(silent=True)
    found = None
    while ctx is not None:
        if getattr(ctx.command, "is_cowsync_group", False):
            found = ctx.command_path
        ctx = ctx.parent
    return found or "cowsync"


class CliError(click.ClickException):
    """A user error the command line reports as ``error: <message>`` (exit code 1).

    ``type`` names the kind of error in ``--json`` output and ``details`` adds fields to
    its JSON error object. With :attr:`as_json` set (the command got ``--json``), :meth:`show`
    also prints the JSON error object on stdout.
    """

    exit_code = EXIT_USER_ERROR
    error_type = "error"

    def __init__(
        self, message: str, *, type: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        if type is not None:
            self.error_type = type
        self.details: dict[str, Any] = dict(details or {})
        #: Keys printed next to ``"error"`` in the JSON object (kept for compatibility).
        self.json_extra: dict[str, Any] = {}
        self.as_json = False

    def json_payload(self) -> dict[str, Any]:
        """The JSON error object: ``{"error": {type, message, hint, exit_code, ...}}``."""
        first, *rest = self.format_message().split("\n")
        hint = " ".join(line.strip() for line in rest if line.strip())
        hint = hint.removeprefix("to go on: ")
        error: dict[str, Any] = {
            "type": self.error_type,
            "message": first,
            "hint": hint or None,
            "exit_code": self.exit_code,
        }
        for key, value in self.details.items():
            error.setdefault(key, value)
        return {**self.json_extra, "error": error}

    def show(self, file: Any = None) -> None:
        """Print the message to stderr, prefixed with ``error:``, each line made inert;
        with ``--json``, the JSON error object on stdout first."""
        if self.as_json:
            jsonout.echo_json(self.json_payload())
        click.secho("error: ", err=True, fg="red", bold=True, nl=False)
        click.echo("\n".join(map(inert, self.format_message().split("\n"))), err=True)


class CliRefusal(CliError):
    """The database refused to apply the session as it stands (exit code 2)."""

    exit_code = EXIT_REFUSED
    error_type = "refused"


class CliUsageError(CliError):
    """A click usage error (bad option, missing argument) of a command run with ``--json``:
    the JSON error object on stdout, click's usage message on stderr (exit code 1)."""

    error_type = "usage"

    def __init__(self, usage: click.UsageError) -> None:
        super().__init__(usage.format_message(), type="usage")
        self.usage = usage
        self.as_json = True

    def show(self, file: Any = None) -> None:
        """The JSON error object on stdout, then click's own usage message on stderr."""
        jsonout.echo_json(self.json_payload())
        self.usage.show()


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
    error = _as_cli_error(exc)
    if error is not None and error.error_type in ("error", "refused"):
        error.error_type = type(exc).__name__
    return error


def _as_cli_error(exc: BaseException) -> CliError | None:
    prefix = command_prefix()
    if isinstance(exc, ConflictError):
        return CliRefusal(
            f"{len(exc.conflicts)} row(s) changed in production after the session first "
            "touched them; nothing was applied\n"
            "  to go on: commit again with --on-conflict skip (keep production's rows), "
            "overwrite (the session wins) or merge (column by column), "
            "or discard the operations that conflict",
            details={"conflicts": exc.conflicts},
        )
    if isinstance(exc, DependencyError):
        missing = ", ".join(sorted(exc.missing))
        return CliRefusal(
            f"{one_line(str(exc))}\n"
            f"  to go on: add --operation for each of {missing}, or pass "
            "--include-dependencies (commit) / --include-dependents (discard)",
            details={"missing": sorted(exc.missing)},
        )
    if isinstance(exc, CommitError):
        return CliRefusal(
            f"{one_line(str(exc))}\n"
            f"  to go on: review the session with `{prefix} diff`, then commit fewer operations "
            "or discard the one that breaks the constraint",
            details={"table": exc.table, "key": exc.key, "constraint": exc.constraint},
        )
    if isinstance(exc, StaleReviewError | SessionBusyError):
        return CliRefusal(one_line(str(exc)))
    if isinstance(exc, NotDeployedError):
        return CliError(f"cowsync is not deployed in this database: run `{prefix} deploy` first")
    if isinstance(exc, PendingChangesError):
        # The library's hint names the Python argument; the command's flag is --force.
        message = one_line(str(exc)).replace("pass force=True", "pass --force")
        return CliError(message, details={"sessions": exc.sessions})
    if isinstance(exc, CowError):
        return CliError(one_line(str(exc)).replace("(cowsync sessions ", f"({prefix} sessions "))
    details = {"sqlstate": exc.sqlstate} if isinstance(exc, psycopg.Error) else {}
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return CliError(
            f"the database role lacks the rights for this ({one_line(str(exc))}): connect "
            "as the table owner or a reviewer role (cowsync.harden(..., reviewer_roles=[...]), "
            "see docs/security.md)",
            details=details,
        )
    if isinstance(exc, psycopg.OperationalError):
        return CliError(f"cannot use the database: {one_line(str(exc))}", details=details)
    if isinstance(exc, psycopg.Error):
        # A missing privilege, a statement timeout...
        return CliError(one_line(str(exc)) or type(exc).__name__, details=details)
    return None


def reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn cowsync and psycopg errors raised by a command into :class:`CliError`.

    Applied to every command callback, so the same exit codes hold whichever click
    group hosts the command (``cowsync``, ``manage.py cowsync``, ``flask cowsync``). A
    command called with ``as_json`` reports its error as JSON too.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except CliError as exc:
            exc.as_json = exc.as_json or bool(kwargs.get("as_json"))
            raise
        except (CowError, psycopg.Error) as exc:
            error = as_cli_error(exc)
            if error is None:  # pragma: no cover - every CowError and psycopg.Error maps
                raise
            error.as_json = bool(kwargs.get("as_json"))
            raise error from exc

    return wrapper
