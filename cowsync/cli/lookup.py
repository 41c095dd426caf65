"""Checks the commands make before they act, so a typo is a one-line error, not an empty result.

The review functions of the core answer an unknown session with "no operations" and an
unknown operation with "no changes"; on the command line both are almost always a typo.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import psycopg

from ..apply import close_operations
from ..config import validate_id
from ..errors import DependencyError
from ..registry import require_engine
from ..reviewing import operations
from .errors import CliError, CliRefusal, command_prefix


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
            f"no session {session_id!r} in this database "
            f"(`{command_prefix()} sessions` lists them)",
            type="unknown_session",
            details={"session_id": session_id},
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
            f"its operations are: {', '.join(known) or 'none'}",
            type="unknown_operation",
            details={"session_id": session_id, "unknown": unknown, "operations": known},
        )
    return [op for op in known if op in wanted]


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
    try:
        return close_operations(conn, session_id, chosen, include, direction)
    except DependencyError as exc:
        missing = sorted(exc.missing)
        names = ", ".join(missing)
        adds = " ".join(f"-o {op}" for op in missing)
        if direction == "dependencies":
            raise CliRefusal(
                f"the chosen operations build on operations not chosen: {names}; "
                "nothing was applied\n"
                f"  to go on: add {adds}, or pass --include-dependencies",
                type="DependencyError",
                details={"missing": missing},
            ) from None
        raise CliRefusal(
            f"operations not chosen build on the chosen ones: {names}; nothing was discarded\n"
            f"  to go on: add {adds}, or pass --include-dependents",
            type="DependencyError",
            details={"missing": missing},
        ) from None
