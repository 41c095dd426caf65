"""Commit and discard give way instead of taking part in a deadlock.

A commit or discard holds its session's write lock while it changes rows. An agent
transaction of that session may hold one of those rows (``SELECT ... FOR UPDATE``) and
wait for the write lock. The agent's write checks the chain of waits while it polls
(``cowsync.wait_for_session``) and steps back with 40001, but once it has queued, a
cycle that forms later is PostgreSQL's to break, after ``deadlock_timeout``, possibly by
failing a production transaction that waits in the cycle.

So the row waits of a commit or discard end sooner: ``lock_timeout`` is a quarter of
``deadlock_timeout`` (at least 10 ms; a shorter one already set stays) for its
transaction. When it runs out, the call rolls back everything it did, releasing the
write lock, which lets the agent through, and tries again after a short pause, for up
to ``wait`` seconds in all (``None``: until it succeeds).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

from .errors import SessionBusyError

T = TypeVar("T")

#: Shortens this transaction's lock waits (a select-list item: it shares a round trip).
SHORT_LOCK_WAITS = (
    "pg_catalog.set_config('lock_timeout', ("
    "SELECT (CASE WHEN x.cur > 0 AND x.cur < x.way THEN x.cur ELSE x.way END)::int::text "
    "|| 'ms' FROM (SELECT pg_catalog.date_part('epoch', "
    "pg_catalog.current_setting('lock_timeout')::interval) * 1000 AS cur, "
    "GREATEST(10, pg_catalog.date_part('epoch', "
    "pg_catalog.current_setting('deadlock_timeout')::interval) * 250) AS way) AS x), true)"
)


def gave_way(session_id: str, exc: psycopg.errors.DeadlockDetected) -> SessionBusyError:
    """The error of a call PostgreSQL failed to break a deadlock."""
    return SessionBusyError(
        f"session {session_id!r} is busy: an agent transaction holds rows this call needs "
        "and waits for the session's write lock, which this call held; PostgreSQL broke "
        "the deadlock by failing this call. Nothing was done: retry, or seal the session "
        f"first ({exc.diag.message_primary})"
    )


def giving_way(
    conn: psycopg.Connection, session_id: str, wait: float | None, call: Callable[[], T]
) -> T:
    """Run ``call`` (one transaction that executes :data:`SHORT_LOCK_WAITS` first),
    again after each lock wait it gave up, until it succeeds or ``wait`` runs out."""
    nested = conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    previous = None
    if nested:  # a transaction-local setting would outlive the call in the caller's
        row = conn.execute("SELECT pg_catalog.current_setting('lock_timeout')").fetchone()
        previous = row[0] if row else None
    deadline = None if wait is None else time.monotonic() + wait
    pause = 0.01
    while True:
        try:
            result = call()
        except psycopg.errors.DeadlockDetected as exc:
            raise gave_way(session_id, exc) from exc
        except psycopg.errors.LockNotAvailable as exc:
            if deadline is not None and time.monotonic() + pause > deadline:
                raise SessionBusyError(
                    f"session {session_id!r}: rows this call needs stayed locked by other "
                    f"transactions (an agent's SELECT ... FOR UPDATE, production) for "
                    f"{wait:g} s. Nothing was done: retry, or wait longer (wait=None)"
                ) from exc
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
            continue
        if previous is not None:
            conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, true)", (previous,))
        return result
