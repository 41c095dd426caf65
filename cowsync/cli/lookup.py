"""Checks the commands make before they act, so a typo is a one-line error, not an empty result.

The review functions of the core answer an unknown session with "no operations" and an
unknown operation with "no changes"; on the command line both are almost always a typo.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import psycopg

from ..config import validate_id
from ..errors import DependencyError
from ..registry import require_engine
from ..review import dependencies, operations
from .errors import CliError


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

    Without ``include``, a missing operation raises :class:`DependencyError` before the
    user is asked to confirm anything.
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
        verb = "depend on" if direction == "dependencies" else "are needed by"
        raise DependencyError(
            f"the chosen operations {verb} operations not chosen: {', '.join(sorted(missing))}",
            missing,
        )
    return [op for op in deps if op in closed]
