"""A throwaway database for one benchmark run: created fresh, dropped at the end.

Benchmarks never touch the database their DSN names; they use it only to
create (and afterwards drop) a database of their own, so a run starts from an
empty catalog and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo


def connect(dsn: str, attempts: int = 30, **kwargs: Any) -> psycopg.Connection[Any]:
    """``psycopg.connect``, waiting while a shared server has no free connection slot.

    Other people's test suites on the same server come and go; a benchmark that
    dies on "too many clients" half way through would waste the whole run.
    """
    for attempt in range(attempts):
        try:
            return psycopg.connect(dsn, **kwargs)
        except psycopg.OperationalError as exc:
            if "too many clients" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def _drop(admin_dsn: str, name: str) -> None:
    with connect(admin_dsn, autocommit=True) as admin:
        # FORCE: a benchmark that crashed may have left a backend connected.
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextlib.contextmanager
def scratch_database(admin_dsn: str, prefix: str, *, keep: bool = False) -> Iterator[str]:
    """Create database ``<prefix>_<pid>``, yield its DSN, drop it on exit.

    With ``keep=True`` the database is left in place (for EXPLAIN by hand) and
    its name is printed.
    """
    name = f"{prefix}_{os.getpid()}"
    _drop(admin_dsn, name)
    with connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(admin_dsn, dbname=name)
    finally:
        if keep:
            print(f"\nkept database {name!r} (drop it with: DROP DATABASE {name})")
        else:
            _drop(admin_dsn, name)
