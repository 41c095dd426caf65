"""The search_path engine code runs with.

Every function and trigger cowsync installs runs with ``search_path = pg_catalog,
pg_temp`` and names everything else schema-qualified. A role that may create objects
in some schema (``public`` on PostgreSQL 14 and older) can then plant no look-alike
that engine code would call with its owner's rights: PostgreSQL never looks in
``pg_temp`` for functions or operators, and ``pg_catalog`` comes first for relations
and types.

Installing (deploy, enable, harden, alter) reads constraint and default expressions
from the catalog and creates views and functions under the same search_path, so the
catalog prints every name outside ``pg_catalog`` schema-qualified and nothing the
installer parses can resolve to a look-alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import pq, sql

ENGINE_SEARCH_PATH = "pg_catalog, pg_temp"


def base_search_path(schema: str) -> str:
    """The search_path of a production write to a base table (no session).

    The application's own triggers on the table, and functions its constraints call,
    run inside that write as they ran when the table was written directly, and may
    name the table's neighbours unqualified; so the table's schema follows
    ``pg_catalog``. Only statements that name every object of the engine
    schema-qualified run with it.
    """
    return f"pg_catalog, {sql.Identifier(schema).as_string(None)}, pg_temp"


@contextmanager
def pinned_search_path(conn: psycopg.Connection) -> Iterator[None]:
    """Run the block with the engine's search_path, then give the caller's back.

    Transaction-local: call it inside a transaction. If the block fails the transaction,
    its rollback (or the savepoint's) restores the caller's search_path.
    """
    if conn.info.transaction_status != pq.TransactionStatus.INTRANS:
        raise RuntimeError("pinned_search_path needs an open transaction")
    row = conn.execute(
        "SELECT pg_catalog.current_setting('search_path'), "
        "pg_catalog.set_config('search_path', %s, true)",
        (ENGINE_SEARCH_PATH,),
    ).fetchone()
    assert row is not None
    try:
        yield
    finally:
        if conn.info.transaction_status == pq.TransactionStatus.INTRANS:
            conn.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (row[0],))
