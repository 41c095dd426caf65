"""``cowsync seal`` and ``cowsync unseal``: freeze an agent's session while reviewing it."""

from __future__ import annotations

import click
from rich.text import Text

from .. import sealing
from ..inert import inert
from . import jsonout
from .context import CliContext
from .errors import reports_errors
from .lookup import require_session

pass_cli = click.make_pass_decorator(CliContext)
_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text."
)


@click.command()
@click.argument("session_id", metavar="SESSION")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait for an agent transaction writing the session.",
)
@_json_option
@pass_cli
@reports_errors
def seal(cli: CliContext, session_id: str, wait: float, as_json: bool) -> None:
    """Seal a session: the agent's further writes to it fail (SQLSTATE CW001).

    Waits for a write in progress to finish, so nothing lands after it returns.
    Commit and discard still work; `cowsync unseal` lets the agent write again.
    """
    with cli.connect() as conn:
        require_session(conn, session_id)
        changed = sealing.seal(conn, session_id, wait=wait)
    _report(cli, session_id, sealed=True, changed=changed, as_json=as_json)


@click.command()
@click.argument("session_id", metavar="SESSION")
@_json_option
@pass_cli
@reports_errors
def unseal(cli: CliContext, session_id: str, as_json: bool) -> None:
    """Let a sealed session take writes again."""
    with cli.connect() as conn:
        require_session(conn, session_id)
        changed = sealing.unseal(conn, session_id)
    _report(cli, session_id, sealed=False, changed=changed, as_json=as_json)


def _report(cli: CliContext, session_id: str, sealed: bool, changed: bool, as_json: bool) -> None:
    if as_json:
        jsonout.echo_json({"session_id": session_id, "sealed": sealed, "changed": changed})
        return
    state = "sealed" if sealed else "unsealed"
    note = "" if changed else f" (it was already {state})"
    cli.console.print(Text(f"session {inert(session_id)} is {state}{note}"))
