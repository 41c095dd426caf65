"""Steps of fidelity cases that are more than one SQL statement: COPY, cursors,
prepared statements, a second connection waiting on a lock, cowsync helpers.

Each builder returns a callable ``step(ctx)`` that records its observations on
``ctx`` (see tests/fidelity/runner.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

import cowsync
from tests.fidelity.runner import Ctx, Result, Step, error_result, execute

LOCK_WAIT_SECONDS = 5.0


def outcome_of(action: Callable[[], object]) -> Result:
    """Run a Python action; an error becomes its SQLSTATE (or the exception's class)."""
    try:
        action()
    except psycopg.Error as exc:
        return error_result(exc)
    except cowsync.CowError as exc:
        return Result(sqlstate=type(exc).__name__)
    return Result()


def copy_from(statement: str, rows: Sequence[tuple[Any, ...]], label: str | None = None) -> Step:
    """``COPY … FROM STDIN`` through psycopg's copy, writing ``rows``."""

    def step(ctx: Ctx) -> None:
        def run() -> None:
            with ctx.conn.cursor() as cur, cur.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)

        ctx.observe(label or statement, outcome_of(run))

    return step


def copy_to(statement: str) -> Step:
    """``COPY … TO STDOUT``; observes the rows it sent, or its error."""

    def step(ctx: Ctx) -> None:
        try:
            with ctx.conn.cursor() as cur, cur.copy(statement) as copy:
                data = sorted(bytes(chunk).decode() for chunk in copy)
        except psycopg.Error as exc:
            ctx.observe(statement, Result(sqlstate=exc.diag.sqlstate))
            return
        ctx.observe(statement, "".join(data))

    return step


def named_cursor(query: str, *, withhold: bool = False, batch: int = 2) -> Step:
    """A server-side cursor: ``fetchmany(batch)`` then the rest, inside a transaction
    (or, ``withhold``, after the transaction that declared it committed)."""

    def step(ctx: Ctx) -> None:
        label = f"named cursor{' WITH HOLD' if withhold else ''}: {query}"
        try:
            if withhold:
                cur = ctx.conn.cursor(name="fidelity_hold", withhold=True)
                with ctx.conn.transaction():
                    cur.execute(query)
                first, rest = cur.fetchmany(batch), cur.fetchall()
                cur.close()
            else:
                with ctx.conn.transaction(), ctx.conn.cursor(name="fidelity_cur") as cur:
                    cur.execute(query)
                    first, rest = cur.fetchmany(batch), cur.fetchall()
        except psycopg.Error as exc:
            ctx.observe(label, Result(sqlstate=exc.diag.sqlstate))
            return
        ctx.observe(label, (tuple(map(tuple, first)), tuple(map(tuple, rest))))

    return step


def prepared(query: str, params_list: Sequence[Sequence[Any]], *, generic: bool = False) -> Step:
    """Run ``query`` once per parameter set as a server-side prepared statement
    (psycopg ``prepare=True``); ``generic`` forces the generic plan."""

    def step(ctx: Ctx) -> None:
        if generic:
            ctx.conn.execute("SET plan_cache_mode = force_generic_plan")
        try:
            for params in params_list:
                ctx.sql(query, params, prepare=True, label=f"prepared: {query}")
        finally:
            if generic:
                ctx.conn.execute("RESET plan_cache_mode")

    return step


def prepared_before_binding(query: str, params: Sequence[Any], runs: int = 6) -> Step:
    """Prepare and run ``query`` with no session bound (a pooled connection before it
    is handed to an agent), then again bound: the cached plan must follow the binding."""

    def step(ctx: Ctx) -> None:
        with ctx.unbound():
            for _ in range(runs):
                execute(ctx.conn, query, params, prepare=True)

    return step


def alter(actions: str) -> Step:
    """``cowsync.alter(conn, "items", actions)``."""

    def step(ctx: Ctx) -> object:
        return outcome_of(lambda: cowsync.alter(ctx.conn, ctx.qualified("items"), actions))

    return step


def truncate(table: str = "items") -> Step:
    """``cowsync.truncate(conn, table)``."""

    def step(ctx: Ctx) -> object:
        return outcome_of(lambda: cowsync.truncate(ctx.conn, ctx.qualified(table)))

    return step


def refresh_after(statement: str, table: str = "items") -> Step:
    """Run DDL on the base directly, then ``cowsync.refresh`` so sessions honour it.

    ``{base}`` in ``statement`` names the base (``items_base`` in place, the table itself
    in overlay mode)."""

    def step(ctx: Ctx) -> object:
        def run() -> None:
            ctx.conn.execute(statement.format(base=ctx.base(table)))
            cowsync.refresh(ctx.conn, ctx.qualified(table))

        return outcome_of(run)

    return step


def on_other(query: str, *, bound: bool = True, label: str | None = None) -> Step:
    """Run ``query`` on a second connection (bound to the same session in session
    mode unless ``bound=False``)."""

    def step(ctx: Ctx) -> None:
        other = ctx.other(bound=bound)
        ctx.sql(query, conn=other, label=label or f"other connection: {query}")

    return step


def query(sql_text: str, params: Sequence[Any], label: str | None = None) -> Step:
    """A statement with parameters (sent separately, as an application does)."""

    def step(ctx: Ctx) -> None:
        ctx.sql(sql_text, params, label=label or f"{sql_text} {list(params)!r}")

    return step


def waits_for_lock(
    query: str,
    release: Sequence[str] = ("COMMIT",),
    *,
    bound: bool = True,
    label: str | None = None,
) -> Step:
    """Run ``query`` on a second connection while this one holds its locks.

    Observes whether it waited on a lock (``pg_stat_activity``), then runs the
    ``release`` statements here and observes what the waiting statement finally gave.
    """

    def step(ctx: Ctx) -> None:
        other = ctx.other(bound=bound)
        watcher = ctx.other(bound=False)
        outcome: dict[str, Result] = {}

        def target() -> None:
            outcome["result"] = execute(other, query)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        waited = False
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while thread.is_alive() and time.monotonic() < deadline:
            row = watcher.execute(
                "SELECT CASE WHEN wait_event = 'PgSleep' THEN 'Lock' ELSE wait_event_type END "
                "FROM pg_stat_activity WHERE pid = %s",
                [other.info.backend_pid],
            ).fetchone()
            if row and row[0] == "Lock":
                waited = True
                break
            time.sleep(0.01)
        name = label or f"second connection: {query}"
        ctx.observe(f"{name} [waits for the lock]", waited)
        for statement in release:
            ctx.sql(statement)
        thread.join(LOCK_WAIT_SECONDS)
        ctx.observe(f"{name} [result]", outcome.get("result", "still waiting"))
        if thread.is_alive():  # pragma: no cover - never leave a thread blocked behind
            other.cancel()
            thread.join(LOCK_WAIT_SECONDS)

    return step


def unbound(query: str) -> Step:
    """Run ``query`` with no session bound (production's connection), observed as
    ``unbound: query``; in the plain and no-session runs it simply runs."""

    def step(ctx: Ctx) -> None:
        with ctx.unbound():
            ctx.sql(query, label=f"unbound: {query}")

    return step


def schema_qualified(query: str) -> Step:
    """Run ``query`` with ``{schema}`` replaced by the case's schema (the schema the
    table was created in), observed under the query as written."""

    def step(ctx: Ctx) -> None:
        ctx.sql(query.format(schema=ctx.schema), label=query)

    return step
