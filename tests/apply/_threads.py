"""Helpers for tests that race commits against each other and against production."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from tests._mode import base_of


class Background:
    """Run a call in a thread; keep its result or exception for the test to check."""

    def __init__(self, target: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(target, args, kwargs))
        self._thread.start()

    def _run(self, target: Callable[..., Any], args: Any, kwargs: Any) -> None:
        try:
            self.result = target(*args, **kwargs)
        except BaseException as exc:  # handed to the test thread
            self.error = exc

    def join(self, timeout: float = 20.0) -> Background:
        self._thread.join(timeout=timeout)
        assert not self._thread.is_alive(), "background call did not finish"
        return self


def wait_until_blocked(observer: psycopg.Connection[Any], pid: int, timeout: float = 10.0) -> None:
    """Wait until backend ``pid`` waits on a lock; fail the test if it never does.

    A session write waiting for its session's write lock polls (``pg_sleep`` in
    ``cowsync.wait_for_session``) instead of queueing: that counts as waiting too."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = observer.execute(
            "SELECT CASE WHEN wait_event = 'PgSleep' THEN 'Lock' ELSE wait_event_type END "
            "FROM pg_stat_activity WHERE pid = %s",
            [pid],
        ).fetchone()
        if row and row[0] == "Lock":
            return
        time.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited on a lock")


def lock_customer(holder: psycopg.Connection[Any], customer_id: int) -> None:
    """Hold a base customer row FOR UPDATE in ``holder``'s open transaction, so a commit
    inserting an order for that customer waits half-way (the foreign key check needs a
    KEY SHARE lock on the customer) after it has written the customers."""
    holder.execute(
        sql.SQL("SELECT 1 FROM ONLY {} WHERE id = %s FOR UPDATE").format(
            base_of(holder, "customers")
        ),
        [customer_id],
    )
