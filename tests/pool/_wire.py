"""Watching what a connection sends, with libpq's own protocol trace.

Round trips are counted on the wire, not inferred from the code: each simple
``Query`` message and each ``Sync`` (the end of an extended-protocol batch) is one
request the client waits on.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import pq


@dataclass
class Wire:
    """The frontend messages a connection sent while it was traced."""

    messages: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """Messages that end a request: simple ``Query`` and ``Sync``."""
        return sum(1 for m in self.messages if m.split("\t", 1)[0] in ("Query", "Sync"))

    @property
    def queries(self) -> list[str]:
        """The SQL text of each simple query and each parsed statement, in order."""
        texts = []
        for message in self.messages:
            kind, _, rest = message.partition("\t")
            if kind in ("Query", "Parse"):
                texts.append(rest)
        return texts


@contextlib.contextmanager
def traced(conn: psycopg.Connection[Any]) -> Iterator[Wire]:
    """Record the frontend messages ``conn`` sends inside the block.

    libpq buffers the trace until ``untrace()``, so the result is filled on exit.
    """
    wire = Wire()
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            yield wire
        finally:
            conn.pgconn.untrace()
            trace.seek(0)
            for line in trace.read().splitlines():
                direction, _, rest = line.partition("\t")
                if direction == "F":
                    # "F <length> <message> <details>": keep "<message>\t<details>".
                    wire.messages.append(rest.partition("\t")[2].replace("\t ", "\t", 1))
