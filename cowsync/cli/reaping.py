"""``cowsync reap``: end agent backends that are over their time limits."""

from __future__ import annotations

import click
from rich.text import Text

from .. import reaping
from ..inert import inert
from . import jsonout
from .context import CliContext
from .errors import reports_errors

pass_cli = click.make_pass_decorator(CliContext)
_seconds = click.FloatRange(min=0)

_REASONS = {
    "idle_in_transaction": "idle in a transaction",
    "transaction": "in one transaction",
    "statement": "running one statement",
}


@click.command()
@click.option(
    "--max-transaction",
    "max_transaction",
    type=_seconds,
    metavar="S",
    help="End agent backends whose transaction has been open longer than S seconds.",
)
@click.option(
    "--max-idle-in-transaction",
    "max_idle_in_transaction",
    type=_seconds,
    metavar="S",
    help="End agent backends idle inside a transaction for longer than S seconds.",
)
@click.option(
    "--max-statement",
    "max_statement",
    type=_seconds,
    metavar="S",
    help="Cancel agent statements running longer than S seconds (the connection stays).",
)
@click.option(
    "--role",
    "roles",
    multiple=True,
    metavar="ROLE",
    help="Reap the backends of this role and its members (repeat for more). "
    "Default: the agent roles cowsync.harden registered.",
)
@click.option("--dry-run", is_flag=True, help="Only say which backends would be ended.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text."
)
@pass_cli
@reports_errors
def reap(
    cli: CliContext,
    max_transaction: float | None,
    max_idle_in_transaction: float | None,
    max_statement: float | None,
    roles: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
) -> None:
    """End agent backends over their time limits (for a reviewer or a cron job).

    An agent can SET statement_timeout and the like off; it cannot stop another role
    from ending its backends. Needs a superuser, or a role granted pg_signal_backend and
    pg_read_all_stats. Prints process ids, roles and timings, never statement text.
    """
    if max_transaction is None and max_idle_in_transaction is None and max_statement is None:
        raise click.UsageError(
            "give at least one limit: --max-transaction, --max-idle-in-transaction "
            "or --max-statement"
        )
    with cli.connect() as conn:
        found = reaping.reap(
            conn,
            max_transaction_seconds=max_transaction,
            max_idle_in_transaction_seconds=max_idle_in_transaction,
            max_statement_seconds=max_statement,
            roles=roles or None,
            dry_run=dry_run,
        )
    if as_json:
        jsonout.echo_json({"dry_run": dry_run, "reaped": found})
        return
    if not found:
        cli.console.print("no agent backend is over its limits")
        return
    for backend in found:
        if dry_run:
            verb = f"would {backend.action}"
        elif not backend.signalled:
            verb = f"did not {backend.action} (it had already gone)"
        else:
            verb = "terminated" if backend.action == "terminate" else "cancelled the statement of"
        cli.console.print(
            Text(
                f"{verb} backend {backend.pid} ({inert(backend.role)}): "
                f"{_REASONS[backend.reason]} for {backend.seconds:.1f} s "
                f"(limit {backend.limit:g} s)"
            )
        )
