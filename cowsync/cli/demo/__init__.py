"""``cowsync demo``: the inventory story, runnable with one command and no setup.

>>> from cowsync.cli.demo import run_demo          # doctest: +SKIP
>>> outcome = run_demo(console, dsn="postgresql://localhost/scratch")  # doctest: +SKIP
>>> outcome.committed                              # doctest: +SKIP
['1-restock-low-stock', '2-fulfil-order-1001']
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from ..context import open_connection
from .server import DemoServer, demo_server
from .story import VERDICTS, Ask, DemoOutcome, run_story

__all__ = ["VERDICTS", "DemoOutcome", "DemoServer", "run_demo"]


def run_demo(
    console: Console,
    dsn: str | None = None,
    schema: str = "cowsync_demo",
    keep: bool = False,
    interactive: bool = False,
    embedded: bool = False,
    ask: Ask | None = None,
) -> DemoOutcome:
    """Find (or start) a server, then run the story in a fresh ``schema`` there.

    ``dsn`` None tries libpq's defaults, then (saying why) an embedded server; a ``dsn``
    that does not answer is an error that suggests ``--embedded``; ``embedded`` skips
    straight to the embedded one. ``keep`` leaves the schema in place (not possible on
    an embedded server, which is removed when the demo ends).
    """

    def note(line: str) -> None:
        console.print(Text(line, style="yellow"))

    with demo_server(dsn, embedded=embedded, note=note) as server:
        console.print(Text(f"cowsync demo: using {server.description}", style="bold"))
        if keep and server.embedded:
            console.print("(--keep has no effect on the embedded server, which is removed after)")
        with open_connection(server.dsn) as conn:
            outcome = run_story(
                console,
                conn,
                schema=schema,
                keep=keep and not server.embedded,
                interactive=interactive,
                ask=ask,
            )
    if server.embedded:
        console.print("the embedded server has been stopped and its directory removed")
    return outcome
