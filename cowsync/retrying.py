"""Retrying transactions that PostgreSQL (or the COW view) refused with 40001 or 40P01.

With no session, writes through a COW-enabled view behave like writes to the table,
with one difference under READ COMMITTED: when a concurrent transaction changes a row
after the statement read it, a table re-reads the row and re-applies the statement,
while the view cannot (its trigger gets the statement's result, not its expressions),
so it refuses with ``40001 could not serialize access due to concurrent update``
rather than lose the other write. The same SQLSTATE comes from any REPEATABLE READ or
SERIALIZABLE transaction, and ``40P01`` from a deadlock: in all three cases PostgreSQL
has rolled the work back and running the *whole transaction* again is the fix.

:func:`retry_serialization_failures` does that, with jittered exponential backoff::

    @cowsync.retry_serialization_failures(conn=conn)
    def restock(item_id: int) -> None:
        conn.execute("UPDATE items SET qty = qty + 1 WHERE id = %s", [item_id])
        conn.execute("INSERT INTO restocks (item_id) VALUES (%s)", [item_id])

    restock(42)                  # one transaction, run again on 40001 / 40P01

    cowsync.retry_serialization_failures(lambda: restock_raw(conn), conn=conn)()

Retry the whole transaction, never one statement: a failed statement aborts its
transaction, and the transaction's earlier statements may have read what changed.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

import psycopg
from psycopg import pq

from .errors import ConfigurationError

__all__ = ["RETRYABLE_SQLSTATES", "retry_serialization_failures"]

P = ParamSpec("P")
R = TypeVar("R")

#: serialization_failure and deadlock_detected: the transaction was rolled back and may
#: succeed when run again. Nothing else is retried (a unique violation, a lost
#: connection or a commit whose outcome is unknown must reach the caller).
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})

_log = logging.getLogger(__name__)


def _retryable_state(exc: BaseException) -> str | None:
    """The retryable SQLSTATE ``exc`` carries, itself or through the exceptions it was
    raised from (an ORM's wrapper of the driver's error); None if it has none."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        if isinstance(seen, psycopg.Error) and seen.sqlstate in RETRYABLE_SQLSTATES:
            return seen.sqlstate
        seen = seen.__cause__
    return None


@overload
def retry_serialization_failures(
    fn: Callable[P, R],
    /,
    *,
    conn: psycopg.Connection[Any] | None = None,
    attempts: int = 5,
    backoff: float = 0.02,
    max_backoff: float = 1.0,
) -> Callable[P, R]: ...


@overload
def retry_serialization_failures(
    fn: None = None,
    /,
    *,
    conn: psycopg.Connection[Any] | None = None,
    attempts: int = 5,
    backoff: float = 0.02,
    max_backoff: float = 1.0,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def retry_serialization_failures(
    fn: Callable[P, R] | None = None,
    /,
    *,
    conn: psycopg.Connection[Any] | None = None,
    attempts: int = 5,
    backoff: float = 0.02,
    max_backoff: float = 1.0,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Wrap ``fn`` so a 40001 or 40P01 from it runs it again, up to ``attempts`` times.

    Usable as ``@retry_serialization_failures``, ``@retry_serialization_failures(conn=c,
    attempts=10)``, or as a function: ``retry_serialization_failures(fn, conn=c)(*args)``.

    ``fn`` must be the whole transaction:

    * with ``conn``, each attempt runs in its own transaction on it
      (``with conn.transaction()``: BEGIN, then COMMIT, or ROLLBACK on any error), so
      ``fn`` must not commit or roll back itself; calling the wrapper while ``conn`` is
      already inside a transaction raises :class:`~cowsync.errors.ConfigurationError`,
      since retrying part of a transaction cannot help (its earlier statements are
      rolled back with it);
    * without ``conn``, ``fn`` opens and ends its transaction itself (``with
      conn.transaction():`` inside it, an ORM's atomic block, a pool's connection
      context) and leaves no failed transaction behind.

    Before attempt ``n`` (from 2) it sleeps a random time between 0 and
    ``min(max_backoff, backoff * 2 ** (n - 2))`` seconds ("full jitter", so
    transactions that collided do not collide again in step). The last failure is
    re-raised unchanged. Other errors are never retried.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts}")
    if backoff < 0 or max_backoff < 0:
        raise ValueError("backoff and max_backoff must not be negative")

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            for attempt in range(1, attempts + 1):
                try:
                    if conn is None:
                        return func(*args, **kwargs)
                    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                        raise ConfigurationError(
                            "retry_serialization_failures must wrap a whole transaction, "
                            "but the connection is already inside one: call it outside "
                            "any transaction (retrying one statement or savepoint would "
                            "keep the rest of the transaction's stale reads)"
                        )
                    with conn.transaction():
                        return func(*args, **kwargs)
                except Exception as exc:
                    state = _retryable_state(exc)
                    if state is None or attempt == attempts:
                        raise
                    delay = random.uniform(0, min(max_backoff, backoff * 2 ** (attempt - 1)))
                    _log.debug(
                        "%s: SQLSTATE %s on attempt %d of %d, retrying in %.3fs",
                        getattr(func, "__qualname__", func),
                        state,
                        attempt,
                        attempts,
                        delay,
                    )
                    time.sleep(delay)
            raise AssertionError("unreachable")  # pragma: no cover

        return run

    if fn is None:
        return decorate
    return decorate(fn)
