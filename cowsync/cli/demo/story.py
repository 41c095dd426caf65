"""The demo's story: an agent works in a sandbox, a reviewer keeps the good and drops the bad.

The steps print to a rich console and return a :class:`DemoOutcome` that the tests check.
Everything happens in one schema of its own (tables created, enabled, and dropped again
unless asked to keep them), so the demo can run in any database.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import click
import psycopg
from psycopg import sql
from rich.console import Console
from rich.text import Text

from ... import apply, install, reviewing
from ...binding import session
from ...errors import CommitError, ConflictError, CowError, DependencyError
from .. import display
from ..errors import CliError, one_line
from . import inventory
from .agent import SCRIPT, ToolResult, run_tool_call

# The scripted reviewer's verdicts: (keep?, why). Interactive runs offer them as defaults.
VERDICTS: dict[str, tuple[bool, str]] = {
    "1-restock-low-stock": (True, "restocking to twice the reorder level is the policy"),
    "2-fulfil-order-1001": (True, "the order was open and the stock is there after restocking"),
    "3-discontinue-desk": (False, "order 1002 is still open for a standing desk"),
    "4-stocktake-mugs": (False, "stock cannot go below zero"),
    "5-reprice-chair": (False, "1.49 is a typo for 149.00"),
}


@dataclass
class DemoOutcome:
    """What the demo did, for callers and tests."""

    schema: str
    session_id: str
    refused_in_session: list[str] = field(default_factory=list)
    committed: list[str] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)
    production_before: inventory.Snapshot = field(default_factory=dict)
    production_after: inventory.Snapshot = field(default_factory=dict)
    kept: bool = False


Ask = Callable[[str, bool], bool]


def _no_questions(question: str, default: bool) -> bool:
    return default


def _ask(question: str, default: bool) -> bool:
    return click.confirm(question, default=default)


@contextlib.contextmanager
def demo_schema(conn: psycopg.Connection[Any], schema: str, keep: bool) -> Iterator[None]:
    """Create the inventory in a fresh ``schema`` with its tables enabled; drop it afterwards.

    The cowsync engine is deployed if the database lacks it, and removed again at the
    end when the demo was its only user.
    """
    exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    if exists:
        raise CliError(
            f"schema {schema} already exists (left by `cowsync demo --keep`?): "
            f"drop it (DROP SCHEMA {schema} CASCADE) or pass --schema with another name"
        )
    had_engine = install.installed_version(conn) is not None
    try:
        inventory.create(conn, schema)
        install.deploy(conn)
        install.enable_schema(conn, schema)
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        yield
    finally:
        if not keep and not conn.closed:
            conn.execute("RESET search_path")
            _drop_demo(conn, schema, had_engine)


def _drop_demo(conn: psycopg.Connection[Any], schema: str, had_engine: bool) -> None:
    with conn.transaction():
        if install.installed_version(conn) is not None and any(
            t.schema == schema for t in install.status(conn)
        ):
            install.disable_schema(conn, schema, force=True)
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        if not had_engine and not install.status(conn):
            # Nothing else uses the engine the demo installed: leave the database as found.
            conn.execute("DROP SCHEMA cowsync CASCADE")


def _section(console: Console, title: str) -> None:
    console.print()
    console.rule(Text(title, style="bold"), align="left")


def _show_snapshot(
    console: Console,
    current: inventory.Snapshot,
    baseline: inventory.Snapshot,
    tables: tuple[str, ...] = ("products", "stock", "orders"),
) -> None:
    for table in tables:
        columns, rows = current[table]
        console.print(
            display.versions_table(
                table, columns, inventory.key_width(table), baseline[table][1], rows
            )
        )


def _agent_works(
    console: Console, conn: psycopg.Connection[Any], session_id: str
) -> list[ToolResult]:
    results = []
    for call in SCRIPT:
        result = run_tool_call(conn, session_id, call)
        results.append(result)
        line = Text()
        line.append(
            "  ✓ " if result.ok else "  ✗ ", style="green bold" if result.ok else "red bold"
        )
        line.append(f"{call.tool}({call.arguments})", style="bold")
        line.append(f"  operation {call.operation_id}", style="dim")
        console.print(line)
        console.print(Text(f"      agent: {call.reason}", style="italic"))
        if result.ok:
            console.print(Text(f"      {result.message}"))
        else:
            where = f" [{result.sqlstate}" + (f" {result.constraint}" if result.constraint else "")
            console.print(
                Text(f"      refused inside the session: {result.message}{where}]", style="red")
            )
    return results


def _trial_commit(conn: psycopg.Connection[Any], session_id: str, ops: list[str]) -> str | None:
    """Commit ``ops`` in a transaction that is always rolled back; the refusal, or None."""
    try:
        with conn.transaction(force_rollback=True):
            apply.commit(conn, session_id, operations=ops)
    except DependencyError as exc:
        return f"it builds on {', '.join(sorted(exc.missing))}, which would be left out"
    except ConflictError as exc:
        return f"{len(exc.conflicts)} row(s) changed in production since the agent read them"
    except CommitError as exc:
        return one_line(str(exc))
    return None


def _review(
    console: Console, conn: psycopg.Connection[Any], session_id: str, ops: list[str]
) -> None:
    _section(console, "4. Review: the operations and what they build on")
    deps = reviewing.dependencies(conn, session_id)
    display.render_operations(console, session_id, reviewing.operations(conn, session_id), deps)

    _section(console, "5. Review: each operation's diff (base before → session after)")
    for op in ops:
        console.print(Text(f"operation {op}", style="bold underline"))
        display.render_diff(console, reviewing.diff(conn, session_id, operations=[op]))

    _section(console, "6. What the engine says about partial commits (trial runs, rolled back)")
    for op in ops:
        needs = sorted(deps.get(op, ()))
        if not needs and VERDICTS.get(op, (True, ""))[0]:
            continue
        refusal = _trial_commit(conn, session_id, [op])
        text = Text(f"  commit {op} alone: ", style="bold")
        if refusal is None:
            text.append("would apply cleanly", style="green")
            if not VERDICTS.get(op, (True, ""))[0]:
                text.append(" (no constraint forbids it: only a reviewer can catch this one)")
        else:
            text.append(f"refused — {refusal}", style="red")
        console.print(text)


def _choose(
    console: Console,
    conn: psycopg.Connection[Any],
    session_id: str,
    ops: list[str],
    ask: Ask,
    interactive: bool,
) -> list[str]:
    """The operations to commit: the scripted verdicts, or the user's answers."""
    _section(console, "7. The reviewer decides")
    if not interactive:
        keep = []
        for op in ops:
            good, why = VERDICTS.get(op, (False, "not part of the script"))
            mark = Text("  keep    " if good else "  discard ", style="green" if good else "red")
            console.print(mark + Text(f"{op}: {why}"))
            if good:
                keep.append(op)
        return keep
    console.print(
        "Which operations go to production? (the default answer is the reviewer's advice)"
    )
    while True:
        keep = [op for op in ops if ask(f"Keep {op}?", VERDICTS.get(op, (False, ""))[0])]
        refusal = _trial_commit(conn, session_id, keep) if keep else None
        if refusal is None:
            return keep
        console.print(Text(f"  that selection would be refused: {refusal}", style="red"))
        if not ask("Choose again?", True):
            return []


def run_story(
    console: Console,
    conn: psycopg.Connection[Any],
    schema: str = "cowsync_demo",
    keep: bool = False,
    interactive: bool = False,
    ask: Ask | None = None,
) -> DemoOutcome:
    """Run the whole demo on ``conn`` (autocommit) in a fresh ``schema``."""
    ask = ask or (_ask if interactive else _no_questions)
    session_id = f"inventory-agent-{secrets.token_hex(3)}"
    outcome = DemoOutcome(schema=schema, session_id=session_id, kept=keep)
    with demo_schema(conn, schema, keep):
        try:
            _tell(console, conn, session_id, outcome, ask, interactive)
        finally:
            # Whatever happened, leave no session behind.
            with contextlib.suppress(CowError, psycopg.Error):
                if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                    conn.rollback()
                apply.discard(conn, session_id)
    return outcome


def _tell(
    console: Console,
    conn: psycopg.Connection[Any],
    session_id: str,
    outcome: DemoOutcome,
    ask: Ask,
    interactive: bool,
) -> None:
    before = inventory.snapshot(conn)
    outcome.production_before = before
    _section(console, f"1. Production: a small inventory in schema {outcome.schema}")
    _show_snapshot(console, before, before)
    console.print(
        "Four stock levels are below their reorder level; orders 1001 and 1002 are open. "
        f"Every table is COW-enabled, and the agent works in session {session_id}."
    )

    _section(console, "2. The agent works in its sandbox (one operation per tool call)")
    results = _agent_works(console, conn, session_id)
    outcome.refused_in_session = [r.call.operation_id for r in results if not r.ok]

    _section(console, "3. Production is untouched; the session sees its own changes")
    after_agent = inventory.snapshot(conn)
    if after_agent == before:
        console.print(Text("✓ production is exactly as it was before the agent ran", "green"))
    else:  # pragma: no cover - would mean the engine leaked a session write
        console.print(Text("✗ production changed while the agent worked!", "red bold"))
    with session(conn, session_id):
        in_session = inventory.snapshot(conn)
    console.print("What the session sees (compared with production):")
    _show_snapshot(console, in_session, before)

    ops = [op.operation_id for op in reviewing.operations(conn, session_id)]
    _review(console, conn, session_id, ops)
    keep = _choose(console, conn, session_id, ops, ask, interactive)

    _section(console, "8. Commit the good operations, discard the rest")
    if keep:
        result = apply.commit(conn, session_id, operations=keep)
        display.render_commit_result(console, result)
        outcome.committed = result.operations
    else:
        console.print("nothing to commit")
    rest = [op.operation_id for op in reviewing.operations(conn, session_id)]
    if rest:
        discarded = apply.discard(conn, session_id)
        display.render_discard_result(console, discarded)
        outcome.discarded = discarded.operations
    left = [s.session_id for s in reviewing.sessions(conn) if s.session_id == session_id]
    if not left:
        console.print(f"session {session_id} is gone: nothing is left to review")

    _section(console, "9. Production now (compared with the start)")
    final = inventory.snapshot(conn)
    outcome.production_after = final
    _show_snapshot(console, final, before)
    if outcome.kept:
        console.print(f"the demo schema {outcome.schema} is kept (--keep); drop it when done")
