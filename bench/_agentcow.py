"""Benchmark-only adapter around the agent-cow-postgresql package.

agent-cow (PyPI ``agent-cow-postgresql``) is the peer we measure cowsync
against.  It is *not* a dependency of cowsync: nothing here is imported by the
``cowsync`` package, and ``agentcow`` itself is imported lazily inside the one
function that needs it (``setup_agent_cow``), so ``bench/`` modules that only
use the session helpers import fine without it.

How agent-cow is wired (see docs/agent-cow-notes.md for details):

* Its engine is a set of PL/pgSQL functions in a schema named ``agentcow``.
  Deployment (``deploy_cow_functions``) and enabling a table (``enable_cow``)
  are async Python functions that take an object with
  ``async execute(sql) -> list[tuple]``.  We drive them with ``asyncio.run``
  over a psycopg ``AsyncConnection``, so asyncpg is not required.
* Enabling ``S.T`` renames the table to ``S.T_base``, creates ``S.T_changes``
  and puts a view named ``S.T`` (with INSTEAD OF triggers) in its place.
* The session is read from the GUCs ``app.session_id``,
  ``app.operation_id`` and (optional) ``app.visible_operations``.
* Commit/discard are SQL functions ``agentcow.commit_cow(...)`` and
  ``agentcow.discard_cow(...)``, called here directly with sync psycopg.

Install for benchmarks (kept out of the project's dependencies)::

    pip install agent-cow-postgresql==0.2.0

Every function below is synchronous.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

__all__ = [
    "AGENT_COW_VERSION",
    "agent_cow_available",
    "clear_session",
    "commit_session",
    "commit_session_schema",
    "discard_session",
    "new_uuid",
    "set_session",
    "set_visible_operations",
    "setup_agent_cow",
    "teardown_agent_cow",
]

#: The release these helpers were written and checked against.
AGENT_COW_VERSION = "0.2.0"

_GUC_SESSION = "app.session_id"
_GUC_OPERATION = "app.operation_id"
_GUC_VISIBLE = "app.visible_operations"


def agent_cow_available() -> bool:
    """True when the ``agentcow`` package can be imported."""
    try:
        import agentcow.postgres  # noqa: F401
    except ImportError:
        return False
    return True


def new_uuid() -> str:
    """A fresh random UUID string (agent-cow session/operation ids are UUIDs)."""
    return str(uuid.uuid4())


# ---------------------------------------------------------------------------
# setup / teardown (through agent-cow's own async Python API)
# ---------------------------------------------------------------------------


class _AsyncPsycopgExecutor:
    """Satisfies agent-cow's ``Executor`` protocol with a psycopg AsyncConnection.

    agent-cow hands us complete SQL strings (identifiers and literals already
    quoted by the library), so they are sent without parameters.  That also
    keeps psycopg from treating the ``%`` in PL/pgSQL ``format()`` calls as
    placeholders.
    """

    def __init__(self, aconn: psycopg.AsyncConnection[Any]) -> None:
        self._aconn = aconn

    async def execute(self, query: str) -> list[tuple[Any, ...]]:
        async with self._aconn.cursor() as cur:
            await cur.execute(query)  # no params: '%' is not a placeholder
            if cur.description is None:
                return []
            return [tuple(r) for r in await cur.fetchall()]


def _load_agentcow() -> Any:
    try:
        import agentcow.postgres as acp
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise RuntimeError(
            "agent-cow is not installed; for benchmarks run "
            "`pip install agent-cow-postgresql==0.2.0`"
        ) from exc
    return acp


def _run_with_executor(dsn: str, work: Any) -> Any:
    """Open an async psycopg connection, run ``await work(executor)`` in one
    transaction, commit, close.  Returns work's result."""

    async def main() -> Any:
        aconn = await psycopg.AsyncConnection.connect(dsn)
        try:
            async with aconn.transaction():
                return await work(_AsyncPsycopgExecutor(aconn))
        finally:
            await aconn.close()

    return asyncio.run(main())


def setup_agent_cow(
    dsn: str,
    schema: str,
    table: str | Sequence[str],
    *,
    unsafe_canonical_writes: bool = False,
) -> None:
    """Deploy agent-cow's functions into the database and enable COW on
    ``schema.table`` (or on each table of a list, in order).

    The table must exist and have a primary key.  Afterwards ``schema.table``
    is agent-cow's view, the data lives in ``schema.<table>_base`` and pending
    changes in ``schema.<table>_changes``.

    ``unsafe_canonical_writes=True`` maps to agent-cow's
    ``allow_unsafe_canonical_writes``: writes through the view *without* a
    session go straight to the base table instead of failing with SQLSTATE
    22023 (agent-cow's default is to fail).
    """
    acp = _load_agentcow()
    tables = [table] if isinstance(table, str) else list(table)

    async def work(ex: _AsyncPsycopgExecutor) -> None:
        await acp.deploy_cow_functions(ex)
        for name in tables:
            await acp.enable_cow(
                ex,
                name,
                schema=schema,
                allow_unsafe_canonical_writes=unsafe_canonical_writes,
            )

    _run_with_executor(dsn, work)


def teardown_agent_cow(dsn: str, schema: str, table: str | Sequence[str]) -> None:
    """Disable agent-cow on the table(s): drops the view and the changes
    table and renames ``<table>_base`` back to ``<table>``.  Pending changes
    are lost.  The ``agentcow`` schema itself is left in place."""
    acp = _load_agentcow()
    tables = [table] if isinstance(table, str) else list(table)

    async def work(ex: _AsyncPsycopgExecutor) -> None:
        for name in tables:
            await acp.disable_cow(ex, name, schema=schema)

    _run_with_executor(dsn, work)


# ---------------------------------------------------------------------------
# session context (plain GUCs; no agent-cow import needed)
# ---------------------------------------------------------------------------


def _set_gucs(conn: psycopg.Connection[Any], values: dict[str, str], local: bool) -> None:
    parts = sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, {})").format(
            sql.Literal(name), sql.Literal(value), sql.Literal(local)
        )
        for name, value in values.items()
    )
    conn.execute(sql.SQL("SELECT ") + parts)


def set_session(
    conn: psycopg.Connection[Any],
    session_id: str | uuid.UUID,
    operation_id: str | uuid.UUID | None = None,
    *,
    visible_operations: Iterable[str | uuid.UUID] | None = None,
    local: bool = False,
) -> str:
    """Point ``conn`` at an agent-cow session; returns the operation id used.

    agent-cow reads ``app.session_id`` / ``app.operation_id`` with
    ``current_setting(..., true)`` in its view and triggers; any way of setting
    them works.  By default the values are session-level (``local=False``) so
    they survive autocommit statements and transaction ends, which is what a
    benchmark loop wants.  ``local=True`` mirrors agent-cow's own safe scope
    (transaction-local, like ``SET LOCAL``) and must be called inside a
    transaction.  Writes need an operation id; one is generated if omitted.
    """
    op = str(operation_id) if operation_id is not None else new_uuid()
    values = {
        _GUC_SESSION: str(uuid.UUID(str(session_id))),
        _GUC_OPERATION: str(uuid.UUID(op)),
        _GUC_VISIBLE: ",".join(str(uuid.UUID(str(v))) for v in visible_operations or ()),
    }
    _set_gucs(conn, values, local)
    return op


def set_visible_operations(
    conn: psycopg.Connection[Any],
    operation_ids: Iterable[str | uuid.UUID] | None,
    *,
    local: bool = False,
) -> None:
    """Restrict reads to the listed operations of the current session
    (agent-cow's operation preview); ``None``/empty shows all of them."""
    value = ",".join(str(uuid.UUID(str(v))) for v in operation_ids or ())
    _set_gucs(conn, {_GUC_VISIBLE: value}, local)


def clear_session(conn: psycopg.Connection[Any], *, local: bool = False) -> None:
    """Back to canonical (base-table) reads on ``conn``.

    Empty strings are what agent-cow treats as "no session" (it wraps every
    read of the GUCs in ``NULLIF(..., '')``).
    """
    _set_gucs(conn, {_GUC_SESSION: "", _GUC_OPERATION: "", _GUC_VISIBLE: ""}, local)


# ---------------------------------------------------------------------------
# commit / discard (agent-cow SQL functions, called with sync psycopg)
# ---------------------------------------------------------------------------


def _pk_columns(conn: psycopg.Connection[Any], schema: str, base: str) -> list[str]:
    rows = conn.execute(
        """
        SELECT a.attname
        FROM pg_index i
        JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, pos) ON true
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = to_regclass(format('%%I.%%I', %s::text, %s::text))
          AND i.indisprimary
        ORDER BY k.pos
        """,
        (schema, base),
    ).fetchall()
    if not rows:
        raise ValueError(f"{schema}.{base} has no primary key (is agent-cow enabled?)")
    return [r[0] for r in rows]


def _as_list(tables: str | Sequence[str]) -> list[str]:
    return [tables] if isinstance(tables, str) else list(tables)


def _connect(dsn_or_conn: str | psycopg.Connection[Any]) -> tuple[psycopg.Connection[Any], bool]:
    if isinstance(dsn_or_conn, psycopg.Connection):
        return dsn_or_conn, False
    return psycopg.connect(dsn_or_conn), True


def commit_session(
    dsn: str | psycopg.Connection[Any],
    schema: str,
    tables: str | Sequence[str],
    session_id: str | uuid.UUID,
    *,
    operation_ids: Sequence[str | uuid.UUID] | None = None,
    overwrite: bool = False,
) -> None:
    """Promote a session's pending changes on the given view name(s) into the
    base tables, in one transaction, via ``agentcow.commit_cow``.

    Tables are committed in the order given (put FK parents first).  A
    conflict with a canonical change made since the session first touched a
    row raises ``psycopg.errors.SerializationFailure`` (SQLSTATE 40001) and
    nothing is applied; ``overwrite=True`` selects agent-cow's last-writer-wins
    policy instead.  ``operation_ids`` commits only those operations.

    With a DSN a fresh connection is used and committed.  With a connection
    the work runs in ``conn.transaction()`` (a savepoint if one is open), and
    the caller owns the outer commit.
    """
    conn, owned = _connect(dsn)
    policy = "overwrite" if overwrite else "error"
    ops = [str(uuid.UUID(str(o))) for o in operation_ids] if operation_ids else None
    try:
        with conn.transaction():
            for view in _as_list(tables):
                base = f"{view}_base"
                conn.execute(
                    "SELECT agentcow.commit_cow(%s, %s, %s::text[], %s::uuid, %s::uuid[], %s)",
                    (schema, base, _pk_columns(conn, schema, base), str(session_id), ops, policy),
                )
    finally:
        if owned:
            conn.close()


class _SyncBackedExecutor:
    """agent-cow's ``Executor`` protocol over a *sync* psycopg connection.

    agent-cow's schema-wide commit is an async function, but it only awaits
    ``execute``; answering from a sync connection lets it run inside the
    caller's own transaction, on the caller's connection, so a benchmark times
    agent-cow's work and not a second connection's setup.
    """

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    async def execute(self, query: str) -> list[tuple[Any, ...]]:
        cur = self._conn.execute(query)  # no params: '%' is not a placeholder
        if cur.description is None:
            return []
        return [tuple(r) for r in cur.fetchall()]


def commit_session_schema(
    dsn: str | psycopg.Connection[Any],
    schema: str,
    session_id: str | uuid.UUID,
    *,
    overwrite: bool = False,
) -> list[str]:
    """Commit every dirty table of a session in ``schema`` with agent-cow's own
    ``commit_cow_session_schema``, in one transaction; returns the tables in the
    order agent-cow processed them.

    This is agent-cow's foreign-key-aware path (upserts parents first, deletes
    children first), the one to use when a session deletes a child and its
    parent; :func:`commit_session` commits table by table in the order given,
    which cannot satisfy both directions.  Connection ownership is as in
    :func:`commit_session`.
    """
    acp = _load_agentcow()
    conn, owned = _connect(dsn)
    policy = "overwrite" if overwrite else "error"
    try:
        with conn.transaction():
            done: list[str] = asyncio.run(
                acp.commit_cow_session_schema(
                    _SyncBackedExecutor(conn),
                    str(uuid.UUID(str(session_id))),
                    schema=schema,
                    conflict_policy=policy,
                )
            )
    finally:
        if owned:
            conn.close()
    return done


def discard_session(
    dsn: str | psycopg.Connection[Any],
    schema: str,
    tables: str | Sequence[str],
    session_id: str | uuid.UUID,
    *,
    operation_ids: Sequence[str | uuid.UUID] | None = None,
) -> None:
    """Drop a session's pending changes on the given view name(s) via
    ``agentcow.discard_cow`` (all operations, or only ``operation_ids``)."""
    conn, owned = _connect(dsn)
    ops = [str(uuid.UUID(str(o))) for o in operation_ids] if operation_ids else None
    try:
        with conn.transaction():
            for view in _as_list(tables):
                conn.execute(
                    "SELECT agentcow.discard_cow(%s, %s, %s::uuid, %s::uuid[])",
                    (schema, f"{view}_base", str(session_id), ops),
                )
    finally:
        if owned:
            conn.close()
