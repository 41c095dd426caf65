"""The session's write lock, taken by everything that changes a session.

Agent writes (the view's trigger), commit, discard and seal all take one
transaction-scoped lock per session, so they behave as if they ran one after another:
a commit or discard never works on a state an agent transaction is still changing,
and an agent write that waited for one re-reads what it left.

The lock is a row lock that only the engine's ``cowsync.lock_session`` takes
(cowsync/sql/engine_functions.sql), not an advisory lock: any role can see every
advisory lock's key in ``pg_locks`` and take it, so it could block a session forever.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from .errors import SessionBusyError, SessionNotFoundError
from .registry import EnabledTable

_LOCK = "SELECT cowsync.lock_session(%(sid)s, %(wait)s)"


def lock_session(conn: psycopg.Connection, session_id: str, wait: float | None) -> None:
    """Take the session's write lock until the transaction ends.

    ``wait`` is how many seconds to wait for a transaction of the session that holds it
    (``None``: as long as it takes); past it, :class:`SessionBusyError`.
    """
    if wait is None:
        conn.execute(_LOCK, {"sid": session_id, "wait": True})
        return
    row = conn.execute(_LOCK, {"sid": session_id, "wait": False}).fetchone()
    if row and row[0]:
        return
    if wait > 0:
        previous = conn.execute("SELECT pg_catalog.current_setting('lock_timeout')").fetchone()
        try:
            with conn.transaction():
                conn.execute(
                    "SELECT pg_catalog.set_config('lock_timeout', %(ms)s, true)",
                    {"ms": f"{max(1, int(wait * 1000))}ms"},
                )
                conn.execute(_LOCK, {"sid": session_id, "wait": True})
                conn.execute(
                    "SELECT pg_catalog.set_config('lock_timeout', %(old)s, true)",
                    {"old": previous[0] if previous else "0"},
                )
            return
        except psycopg.errors.LockNotAvailable:
            pass
    holder = conn.execute("SELECT cowsync.session_lock_holder(%s)", (session_id,)).fetchone()
    who = f"backend {holder[0]}" if holder and holder[0] is not None else "another transaction"
    raise SessionBusyError(
        f"session {session_id!r} is busy: {who} holds its write lock (an agent transaction "
        f"in progress, or another commit or discard) and did not let go within {wait:g} s. "
        "Retry, wait longer (wait=None), or seal the session first (cowsync.seal)"
    )


def require_session(conn: psycopg.Connection, session_id: str, tables: list[EnabledTable]) -> None:
    """Raise :class:`SessionNotFoundError` when the registry does not know the session
    and no change store holds a row of it."""
    known = conn.execute(
        "SELECT 1 FROM cowsync.sessions WHERE session_id = %s", (session_id,)
    ).fetchone()
    if known:
        return
    if tables:
        probe = sql.SQL(" UNION ALL ").join(
            sql.SQL("(SELECT 1 FROM ONLY {} WHERE _cow_session = %(sid)s LIMIT 1)").format(
                t.changes
            )
            for t in tables
        )
        if conn.execute(probe, {"sid": session_id}).fetchone():
            return
    raise SessionNotFoundError(
        f"session {session_id!r} has nothing to commit or discard: it never wrote, or "
        "another call already committed or discarded all of it (cowsync sessions lists "
        "the sessions with changes)"
    )
