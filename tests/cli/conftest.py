"""Fixtures for the command-line tests: a click runner against this test's database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

import cowsync
from cowsync.cli import CliContext, cli

# Variables that would point the CLI at some other database than the test's.
_DATABASE_ENVIRONMENT = (
    "COWSYNC_DSN",
    "DATABASE_URL",
    "PGHOST",
    "PGHOSTADDR",
    "PGDATABASE",
    "PGSERVICE",
    "PGPORT",
    "PGUSER",
)

SESSION = "agent-run-1"


@pytest.fixture(autouse=True)
def _no_database_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _DATABASE_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


Invoke = Callable[..., Result]


@pytest.fixture
def invoke(dsn: str) -> Invoke:
    """``invoke("status", "--json", input=None, interactive=False)`` runs ``cowsync`` on the
    test's database. ``interactive=True`` behaves as if stdin were a terminal."""
    runner = CliRunner()

    def run(
        *args: str,
        input: str | None = None,
        interactive: bool = False,
        env: dict[str, str] | None = None,
    ) -> Result:
        if interactive:
            return runner.invoke(
                cli,
                list(args),
                input=input,
                env=env,
                prog_name="cowsync",
                obj=CliContext.from_dsn(dsn, interactive=True),
            )
        return runner.invoke(cli, ["--dsn", dsn, *args], input=input, env=env, prog_name="cowsync")

    return run


@pytest.fixture
def items(conn: psycopg.Connection[Any], make_table: Callable[..., Any]) -> str:
    """``public.items`` (id, name, qty >= 0, price numeric, updated_at) with 5 rows, enabled."""
    make_table(name="items", rows=5)
    cowsync.deploy(conn)
    cowsync.enable(conn, "items")
    return "public.items"


@pytest.fixture
def session_id(conn: psycopg.Connection[Any], items: str) -> str:
    """Session ``agent-run-1`` with four operations:

    ``a`` sets item 1's qty to 100, ``b`` (depends on ``a``) sets it to 101, ``c`` inserts
    item 'new', ``d`` deletes item 5.
    """
    writes = {
        "a": "UPDATE items SET qty = 100 WHERE id = 1",
        "b": "UPDATE items SET qty = 101 WHERE id = 1",
        "c": "INSERT INTO items (id, name, qty, price) VALUES (6, 'new', 3, 9.99)",
        "d": "DELETE FROM items WHERE id = 5",
    }
    for op, statement in writes.items():
        with cowsync.session(conn, SESSION, op):
            conn.execute(statement)
    return SESSION


def production(conn: psycopg.Connection[Any]) -> dict[int, tuple[str, int]]:
    """``{id: (name, qty)}`` of items as production sees them."""
    return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, name, qty FROM items")}


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
