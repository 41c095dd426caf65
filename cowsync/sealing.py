"""Sealing a session: a reviewer freezes an agent's work while reviewing it."""

from __future__ import annotations

import psycopg

from .config import validate_id
from .errors import SessionNotFoundError
from .registry import require_engine
from .session_lock import lock_session


def seal(conn: psycopg.Connection, session_id: str, wait: float | None = 30.0) -> bool:
    """Seal a session: from now on every write to it fails with SQLSTATE ``CW001``
    (:data:`cowsync.SEALED_SQLSTATE`), naming the session, until :func:`unseal`.

    It first waits (up to ``wait`` seconds, see :class:`SessionBusyError`) for an agent
    transaction that is writing the session, so once it returns nothing more lands.
    Returns ``False`` when the session was already sealed. Commit and discard still work
    on a sealed session; it stays sealed (and listed) until unsealed.

    >>> cowsync.seal(conn, sid)  # doctest: +SKIP
    True
    """
    validate_id(session_id, "session id")
    require_engine(conn)
    with conn.transaction():
        lock_session(conn, session_id, wait)
        row = conn.execute(
            "UPDATE cowsync.sessions SET sealed_at = coalesce(sealed_at, pg_catalog.now()) "
            "WHERE session_id = %s AND preview_of IS NULL "
            "RETURNING sealed_at = pg_catalog.now()",
            (session_id,),
        ).fetchone()
        if row is None:  # raised inside the transaction: the lock row it made goes too
            raise SessionNotFoundError(
                f"session {session_id!r} is not in the registry: only a session that has "
                "written (or was annotated) can be sealed"
            )
    return bool(row[0])


def unseal(conn: psycopg.Connection, session_id: str) -> bool:
    """Let a sealed session take writes again. Returns ``False`` if it was not sealed."""
    validate_id(session_id, "session id")
    require_engine(conn)
    row = conn.execute(
        "UPDATE cowsync.sessions SET sealed_at = NULL WHERE session_id = %s "
        "AND preview_of IS NULL RETURNING (SELECT sealed_at IS NOT NULL "
        "FROM cowsync.sessions WHERE session_id = %s)",
        (session_id, session_id),
    ).fetchone()
    if row is None:
        raise SessionNotFoundError(f"session {session_id!r} is not in the registry")
    return bool(row[0])


def is_sealed(conn: psycopg.Connection, session_id: str) -> bool:
    """Whether the session is sealed."""
    row = conn.execute(
        "SELECT sealed_at IS NOT NULL FROM cowsync.sessions WHERE session_id = %s",
        (session_id,),
    ).fetchone()
    return bool(row and row[0])
