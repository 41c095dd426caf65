"""Fixtures and helpers for the engine tests (tests/engine/)."""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

import cowsync
from tests._catalog import snapshot_diff

# --- one database for the whole engine suite ------------------------------------------------
#
# Creating and dropping a database per test costs a few tenths of a second each (far more on
# a loaded machine); the engine suite instead reuses one database per process and wipes it
# before every test: every schema but the system ones is dropped (with the cowsync schema,
# extensions and everything in them) and an empty public schema is made as in template0.
# Set COWSYNC_TEST_FRESH_DB=1 to get the harness's fresh database per test instead.

_RESET = """
DO $reset$
DECLARE
    s text;
BEGIN
    PERFORM pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid();
    FOR s IN SELECT nspname FROM pg_namespace
             WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' LOOP
        EXECUTE format('DROP SCHEMA %I CASCADE', s);
    END LOOP;
END
$reset$;
CREATE SCHEMA public AUTHORIZATION pg_database_owner;
GRANT USAGE ON SCHEMA public TO PUBLIC;
COMMENT ON SCHEMA public IS 'standard public schema';
"""


@pytest.fixture(scope="session")
def engine_database(pg_databases: Any) -> Iterator[str]:
    """DSN of the database the engine tests share (one per process)."""
    name = pg_databases.create_database()
    try:
        yield pg_databases.dsn_for(name)
    finally:
        pg_databases.drop_database(name)


@pytest.fixture
def dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    """Overrides the harness's ``dsn``: the shared engine database, wiped clean."""
    if os.environ.get("COWSYNC_TEST_FRESH_DB", "").strip().lower() in {"1", "true", "yes"}:
        databases = request.getfixturevalue("pg_databases")
        name = databases.create_database()
        try:
            yield databases.dsn_for(name)
        finally:
            databases.drop_database(name)
        return
    shared = request.getfixturevalue("engine_database")
    with psycopg.connect(shared, autocommit=True) as admin:
        admin.execute("SET client_min_messages = warning")
        admin.execute(_RESET)
    yield shared


@pytest.fixture
def cow(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """``conn`` with the engine deployed."""
    cowsync.deploy(conn)
    return conn


@pytest.fixture
def make_role(conn: psycopg.Connection[Any], dsn: str) -> Iterator[Callable[..., str]]:
    """``make_role(login=False)`` creates a cluster-wide role with a random name.

    Roles outlive databases, so each one is dropped (with what it owns here) after the test.
    """
    made: list[str] = []

    def make(login: bool = False) -> str:
        name = "cow_role_" + secrets.token_hex(4)
        conn.execute(
            sql.SQL("CREATE ROLE {} {}").format(
                sql.Identifier(name), sql.SQL("LOGIN" if login else "NOLOGIN")
            )
        )
        made.append(name)
        return name

    try:
        yield make
    finally:
        for name in made:
            role = sql.Identifier(name)
            # The test's database is dropped after this; the role is cluster-wide.
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(role))
                admin.execute(sql.SQL("DROP ROLE {}").format(role))


def assert_same_catalog(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Snapshots equal, with the differences listed when they are not."""
    assert before == after, "catalog differs:\n" + "\n".join(snapshot_diff(before, after))


def without_sequence_positions(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A snapshot whose sequences' positions are blanked.

    Session inserts take their ids from the base's sequence (so they never collide with
    production's); like a rolled-back insert on a plain table, that advances the sequence
    for good. Everything else must come back exactly.
    """
    copy = dict(snapshot)
    copy["sequences"] = {
        name: {**seq, "last_value": None, "is_called": None}
        for name, seq in snapshot["sequences"].items()
    }
    return copy


def cowsync_catalog(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Everything in schema ``cowsync``, OIDs included (a re-created object shows up),
    with the registry's rows and the write sequence's position."""
    relations = conn.execute(
        """
        SELECT c.oid::int, c.relname, c.relkind::text, c.relacl::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'cowsync' ORDER BY c.relname
        """
    ).fetchall()
    functions = conn.execute(
        """
        SELECT p.oid::int, p.proname, pg_get_functiondef(p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'cowsync' ORDER BY p.proname
        """
    ).fetchall()
    data = {}
    for table in ("engine", "settings", "tables", "sessions", "operations"):
        data[table] = sorted(
            r[0]
            for r in conn.execute(
                sql.SQL("SELECT t::text FROM {} AS t").format(sql.Identifier("cowsync", table))
            )
        )
    seq = conn.execute("SELECT last_value, is_called FROM cowsync.write_seq").fetchone()
    return {"relations": relations, "functions": functions, "data": data, "write_seq": seq}


def error_of(
    conn: psycopg.Connection[Any], query: str | sql.Composable, params: Any = None
) -> tuple[str | None, str | None]:
    """Run a statement; return (sqlstate, constraint name) of its error, or (None, None)."""
    try:
        conn.execute(query, params)
    except psycopg.Error as exc:
        return exc.diag.sqlstate, exc.diag.constraint_name
    return None, None


def fetch(conn: psycopg.Connection[Any], query: str | sql.Composable, params: Any = None) -> list:
    return conn.execute(query, params).fetchall()


class Cases:
    """Soft assertions for tests that walk through many cases in one database: every case
    runs, and the test fails at the end listing each case that failed."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.verified = False

    @contextlib.contextmanager
    def case(self, label: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            text = " ".join(str(exc).split())
            self.failures.append(f"{label}: {type(exc).__name__}: {text[:1500]}")

    def verify(self) -> None:
        self.verified = True
        assert not self.failures, f"{len(self.failures)} case(s) failed:\n" + "\n".join(
            self.failures
        )


@pytest.fixture
def cases() -> Iterator[Cases]:
    """``with cases.case("label"): ...`` for each case, then ``cases.verify()``."""
    collected = Cases()
    yield collected
    if not collected.verified:
        collected.verify()


def run_blocked(conn, query, waiter):
    """Run ``query`` on ``conn`` in a thread; wait until it waits on a lock; return a joiner."""
    outcome = {}

    def target():
        try:
            cur = conn.execute(query)
            outcome["rowcount"] = cur.rowcount
        except psycopg.Error as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    pid = conn.info.backend_pid
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = waiter.execute(
            "SELECT CASE WHEN wait_event = 'PgSleep' THEN 'Lock' ELSE wait_event_type END "
            "FROM pg_stat_activity WHERE pid = %s",
            [pid],
        ).fetchone()
        if row and row[0] == "Lock":
            break
        if not thread.is_alive():
            break
        time.sleep(0.01)
    else:
        pytest.fail("the second statement never waited for the first transaction's lock")

    def join():
        thread.join(10)
        assert not thread.is_alive(), "the blocked statement never finished"
        return outcome

    return join
