"""Checks the commands make before they act, so a typo is a one-line error, not an empty result.

The review functions of the core answer an unknown session with "no operations" and an
unknown operation with "no changes"; on the command line both are almost always a typo.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import psycopg

from ..config import validate_id
from ..registry import require_engine
from ..review import dependencies, operations
from .errors import CliError, CliRefusal


def require_session(conn: psycopg.Connection[Any], session_id: str) -> None:
    """Raise :class:`CliError` unless ``session_id`` names a session of this database."""
    validate_id(session_id, "session id")
    require_engine(conn)
    row = conn.execute(
        "SELECT 1 FROM cowsync.sessions WHERE session_id = %s AND preview_of IS NULL",
        (session_id,),
    ).fetchone()
    if row is None:
        raise CliError(
            f"no session {session_id!r} in this database (`cowsync sessions` lists them)"
        )


def require_operations(
    conn: psycopg.Connection[Any], session_id: str, chosen: Iterable[str]
) -> list[str]:
    """The chosen operation ids, in session order; raise :class:`CliError` for unknown ones."""
    known = [op.operation_id for op in operations(conn, session_id)]
    wanted = list(dict.fromkeys(chosen))
    unknown = [op for op in wanted if op not in known]
    if unknown:
        raise CliError(
            f"session {session_id!r} has no operation {', '.join(map(repr, unknown))}; "
            f"its operations are: {', '.join(known) or 'none'}"
        )
    return [op for op in known if op in wanted]


def _closure(start: set[str], edges: Mapping[str, set[str]]) -> set[str]:
    seen = set(start)
    todo = list(start)
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def close_over(
    conn: psycopg.Connection[Any],
    session_id: str,
    chosen: list[str],
    include: bool,
    direction: Literal["dependencies", "dependents"],
) -> list[str]:
    """``chosen`` plus what it needs (commit) or what needs it (discard), in session order.

    Without ``include``, a missing operation is refused (exit code 2) before the user is
    asked to confirm anything.
    """
    deps = dependencies(conn, session_id)
    edges: dict[str, set[str]] = deps
    if direction == "dependents":
        edges = {op: set() for op in deps}
        for op, needs in deps.items():
            for need in needs:
                edges.setdefault(need, set()).add(op)
    closed = _closure(set(chosen), edges)
    missing = closed - set(chosen)
    if missing and not include:
        names = ", ".join(sorted(missing))
        adds = " ".join(f"-o {op}" for op in sorted(missing))
        if direction == "dependencies":
            raise CliRefusal(
                f"the chosen operations build on operations not chosen: {names}; "
                "nothing was applied\n"
                f"  to go on: add {adds}, or pass --include-dependencies"
            )
        raise CliRefusal(
            f"operations not chosen build on the chosen ones: {names}; nothing was discarded\n"
            f"  to go on: add {adds}, or pass --include-dependents"
        )
    return [op for op in deps if op in closed]
