"""``python manage.py cowsync COMMAND ...``: the ``cowsync`` command line on a Django database.

A thin adapter: the arguments go to :func:`cowsync.cli.run` unchanged, with a
:class:`cowsync.cli.CliContext` lending the connection of ``DATABASES[--database]``.
Commands, options, output and exit codes are those of docs/cli.md. One addition:
``enable`` with no table names enables what ``COWSYNC["MODELS"]`` / ``["TABLES"]`` choose.

    python manage.py cowsync status
    python manage.py cowsync diff agent-run-42 --stat
    python manage.py cowsync commit agent-run-42 -o req-1 -o req-2 --yes
    python manage.py cowsync --database replica sessions --json
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from .....binding import unbound
from .....cli import CliContext, run
from ...conf import cow_settings
from ...selection import selected_tables

_COMMANDS = "deploy, enable, disable, status, sessions, operations, deps, diff, commit, discard"


class Command(BaseCommand):  # type: ignore[misc]
    """Review and apply cowsync sessions on a Django database."""

    help = (
        "Review and apply what AI agents did in cowsync sessions: "
        f"{_COMMANDS}. `manage.py cowsync COMMAND --help` for a command's options."
    )
    # The engine's objects are not Django's models: nothing for the system checks to add.
    requires_system_checks: list[str] = []
    _exit_on_failure = False

    def add_arguments(self, parser: CommandParser) -> None:
        """``--database`` and everything else, passed on to the cowsync command line."""
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help='The database to work on (default: "default").',
        )
        parser.add_argument("cowsync_args", nargs=argparse.REMAINDER, metavar="COMMAND ...")

    def run_from_argv(self, argv: list[str]) -> None:
        """From the shell: exit with the cowsync command's own exit code."""
        self._exit_on_failure = True
        super().run_from_argv(argv)

    def handle(self, *args: Any, **options: Any) -> None:
        """Run one cowsync command against ``DATABASES[--database]``."""
        cli_args, alias = _split_database(list(options["cowsync_args"]), options["database"])
        if alias not in connections:
            raise CommandError(f"no database {alias!r} in settings.DATABASES")
        if cli_args[:1] == ["enable"] and not _names_tables(cli_args[1:]):
            cli_args = self._enable_from_settings(cli_args, alias)
        connection = connections[alias]
        connection.ensure_connection()
        context = CliContext.from_connection(connection.connection)
        with unbound(), _redirected(self.stdout, self.stderr):
            code = run(cli_args, obj=context, prog_name="manage.py cowsync")
        if code:
            if self._exit_on_failure:
                # cowsync already printed the error: leave with its exit code, no traceback.
                sys.exit(code)
            raise CommandError(
                f"cowsync {' '.join(cli_args[:1])} exited with code {code}", returncode=code
            )

    def _enable_from_settings(self, cli_args: list[str], alias: str) -> list[str]:
        tables = selected_tables(cow_settings(), alias)
        if not tables:
            raise CommandError(
                "enable needs table names, or COWSYNC['MODELS'] / COWSYNC['TABLES'] in settings "
                "(e.g. COWSYNC = {'MODELS': ['inventory']})"
            )
        mode = cow_settings().mode
        named = "--mode" in cli_args or any(a.startswith("--mode=") for a in cli_args)
        if mode is None or named:
            return [cli_args[0], *tables, *cli_args[1:]]
        return [cli_args[0], *tables, "--mode", mode, *cli_args[1:]]


def _split_database(args: list[str], default: str) -> tuple[list[str], str]:
    """Take ``--database X`` / ``--database=X`` out of the cowsync arguments."""
    alias = default
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--database" and i + 1 < len(args):
            alias = args[i + 1]
            i += 2
            continue
        if arg.startswith("--database="):
            alias = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return rest, alias


# enable's options that take a value: the value is not a table name.
_VALUED = ("--mode", "--overlay-schema", "--exclude", "-x", "--dsn")


def _names_tables(args: list[str]) -> bool:
    """True when ``enable``'s arguments name tables or a schema (not only options)."""
    previous = ""
    for arg in args:
        if arg in ("--schema", "-s") or arg.startswith("--schema="):
            return True
        if not arg.startswith("-") and previous not in _VALUED:
            return True
        previous = arg
    return False


@contextlib.contextmanager
def _redirected(stdout: Any, stderr: Any) -> Any:
    """Send the command line's output where Django's command output goes."""
    out = getattr(stdout, "_out", stdout)
    err = getattr(stderr, "_out", stderr)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield
