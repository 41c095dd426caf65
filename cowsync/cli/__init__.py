"""The ``cowsync`` command line: review and apply sessions, and the inventory demo.

``cowsync [--dsn DSN] COMMAND``; the DSN may also come from ``COWSYNC_DSN`` or
``DATABASE_URL``. Exit codes: 0 ok, 1 user error, 2 refused (conflict, dependency,
constraint at commit); see docs/cli.md.

Hosts (Django's management command, the Flask CLI) reuse these commands with their own
database: :func:`make_group` builds a click group for them, and :func:`run` runs the
``cowsync`` group with a given :class:`CliContext` and returns the exit code.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from .. import __version__
from .commands import (
    REVIEW_COMMANDS,
    CowGroup,
    context_from_options,
    demo,
    make_group,
    register_commands,
)
from .context import DSN_ENVIRONMENT, CliContext
from .errors import EXIT_OK, EXIT_REFUSED, EXIT_USER_ERROR, CliError, CliRefusal

__all__ = [
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USER_ERROR",
    "REVIEW_COMMANDS",
    "CliContext",
    "CliError",
    "CliRefusal",
    "CowGroup",
    "cli",
    "main",
    "make_group",
    "register_commands",
    "run",
]


@click.group(cls=CowGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--dsn",
    envvar=list(DSN_ENVIRONMENT),
    metavar="DSN",
    help="Database to work on, e.g. postgresql://user@host/db "
    "(default: $COWSYNC_DSN, then $DATABASE_URL).",
)
@click.version_option(__version__, "--version", "-V", prog_name="cowsync")
@click.pass_context
def cli(ctx: click.Context, dsn: str | None) -> None:
    """Review and apply what AI agents did in cowsync sessions.

    \b
    Exit codes: 0 ok, 1 user error, 2 refused by the database
    (conflict, dependency, constraint): nothing was applied.
    Try it with no setup: cowsync demo
    """
    ctx.obj = context_from_options(ctx, dsn)


register_commands(cli)
cli.add_command(demo)


def run(
    args: Sequence[str] | None = None,
    *,
    obj: CliContext | None = None,
    prog_name: str = "cowsync",
    group: click.Group | None = None,
) -> int:
    """Run the command line and return its exit code instead of exiting.

    ``obj`` supplies the connection (a host's :class:`CliContext`); without it ``--dsn``
    and the environment decide.

    >>> run(["status", "--json"], obj=CliContext.from_connection(conn))  # doctest: +SKIP
    0
    """
    try:
        result = (group or cli).main(
            args=list(args) if args is not None else None,
            prog_name=prog_name,
            obj=obj,
            standalone_mode=False,
        )
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return EXIT_USER_ERROR
    return result if isinstance(result, int) else EXIT_OK


def main() -> None:
    """Entry point of the ``cowsync`` console script and ``python -m cowsync``."""
    cli.main(prog_name="cowsync")
