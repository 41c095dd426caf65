"""``cowsync.reap`` ends agent backends over their time limits, and nothing else.

An agent can ``SET statement_timeout = 0`` and ``ALTER ROLE CURRENT_USER SET ...``: the
limits PostgreSQL offers are defaults it can lift. These tests first pin that down, then
check the reaper another role runs: which backends it ends, which it cancels, which it
never touches, what it reports (never statement text) and what rights it needs.

Limits of 0 make "over the limit" deterministic: any open transaction, idle period or
running statement has lasted more than 0 seconds by the time the reaper looks.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

import cowsync
from cowsync.cli import cli
from tests.hardening._fortress import Fortress, RoleFactory

Connect = Callable[[Fortress, str], psycopg.Connection[Any]]

# Statement text the reaper must never report: it stands for what an agent wrote.
MARKER = "agent-secret-7f3a"


def _pid(conn: psycopg.Connection[Any]) -> int:
    return conn.info.backend_pid


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _state(admin: psycopg.Connection[Any], pid: int) -> str | None:
    """The backend's state, or None once it has gone (``admin`` is in autocommit, so each
    statement reads ``pg_stat_activity`` afresh)."""
    row = admin.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return None if row is None else str(row[0])


def _gone(admin: psycopg.Connection[Any], pid: int) -> bool:
    return _state(admin, pid) is None


def _idle_in_transaction(conn: psycopg.Connection[Any]) -> None:
    """Leave ``conn`` inside an open transaction that holds a lock on a view."""
    conn.execute("BEGIN")
    conn.execute(f"SELECT count(*), '{MARKER}' FROM items")


@contextmanager
def _sleeping(conn: psycopg.Connection[Any], admin: psycopg.Connection[Any]) -> Iterator[list[Any]]:
    """Run ``pg_sleep(30)`` on ``conn`` in a thread; yields a list that gets its outcome."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            conn.execute(f"SELECT pg_sleep(30), '{MARKER}'")
            outcome.append("finished")
        except psycopg.Error as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    pid = _pid(conn)
    _wait_for(lambda: _state(admin, pid) == "active", "the statement to start")
    try:
        yield outcome
    finally:
        thread.join(timeout=40)


def _still_works(conn: psycopg.Connection[Any]) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


# --- what PostgreSQL lets an agent do to its own limits --------------------------------------


def test_an_agent_lifts_its_own_timeouts_for_this_and_later_connections(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = fresh_fortress.agent
    fresh_admin.execute(
        sql.SQL("ALTER ROLE {} SET statement_timeout = '30s'").format(sql.Identifier(agent))
    )
    conn = connect_as(fresh_fortress, agent)
    assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
    conn.execute("SET statement_timeout = 0")
    conn.execute("ALTER ROLE CURRENT_USER SET statement_timeout = 0")
    conn.execute("ALTER ROLE CURRENT_USER SET idle_in_transaction_session_timeout = 0")
    later = connect_as(fresh_fortress, agent)
    assert later.execute("SHOW statement_timeout").fetchone() == ("0",)
    # What it cannot lift: its connection limit, and superuser-only settings.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("ALTER ROLE CURRENT_USER CONNECTION LIMIT -1")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SET temp_file_limit = -1")
    settings = fresh_admin.execute(
        "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
        "WHERE r.rolname = %s",
        (agent,),
    ).fetchall()
    assert settings == [(["statement_timeout=0", "idle_in_transaction_session_timeout=0"],)]
    fresh_admin.execute(sql.SQL("ALTER ROLE {} RESET ALL").format(sql.Identifier(agent)))


# --- the reaper ---------------------------------------------------------------------------


def test_an_agent_idle_in_a_transaction_past_the_limit_is_terminated(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    conn = connect_as(fortress, fortress.agent)
    _idle_in_transaction(conn)
    pid = _pid(conn)
    reaped = cowsync.reap(admin, max_idle_in_transaction_seconds=0)
    assert [(r.pid, r.role, r.reason, r.action, r.signalled) for r in reaped] == [
        (pid, fortress.agent, "idle_in_transaction", "terminate", True)
    ]
    assert reaped[0].seconds > 0 and reaped[0].limit == 0
    _wait_for(lambda: _gone(admin, pid), "the backend to end")
    assert not _still_works(conn)


def test_an_agent_transaction_past_the_limit_is_terminated_even_when_busy(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    conn = connect_as(fortress, fortress.agent)
    pid = _pid(conn)  # a broken connection forgets its pid
    conn.execute("BEGIN")
    with _sleeping(conn, admin) as outcome:
        reaped = cowsync.reap(admin, max_transaction_seconds=0)
        assert [(r.pid, r.reason, r.action) for r in reaped] == [(pid, "transaction", "terminate")]
    assert len(outcome) == 1 and isinstance(outcome[0], psycopg.OperationalError)


def test_an_agent_within_its_limits_is_left_alone(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    conn = connect_as(fortress, fortress.agent)
    _idle_in_transaction(conn)
    assert (
        cowsync.reap(
            admin,
            max_transaction_seconds=3600,
            max_idle_in_transaction_seconds=3600,
            max_statement_seconds=3600,
        )
        == []
    )
    # Still the same open transaction.
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert _still_works(conn)
    conn.execute("ROLLBACK")


def test_an_idle_agent_outside_a_transaction_is_left_alone(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    conn = connect_as(fortress, fortress.agent)
    conn.execute("SELECT 1")
    reaped = cowsync.reap(
        admin, max_transaction_seconds=0, max_idle_in_transaction_seconds=0, max_statement_seconds=0
    )
    assert reaped == []
    assert _still_works(conn)


def test_a_long_agent_statement_is_cancelled_and_the_connection_stays(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    conn = connect_as(fortress, fortress.agent)
    started = time.monotonic()
    with _sleeping(conn, admin) as outcome:
        reaped = cowsync.reap(admin, max_statement_seconds=0)
        assert [(r.pid, r.reason, r.action, r.signalled) for r in reaped] == [
            (_pid(conn), "statement", "cancel", True)
        ]
    assert len(outcome) == 1 and isinstance(outcome[0], psycopg.errors.QueryCanceled)
    assert time.monotonic() - started < 20
    assert _still_works(conn)


def test_the_statement_limit_does_not_end_an_idle_transaction(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    conn = connect_as(fortress, fortress.agent)
    _idle_in_transaction(conn)
    assert cowsync.reap(admin, max_statement_seconds=0) == []
    assert _still_works(conn)
    conn.execute("ROLLBACK")


def test_backends_of_other_roles_are_never_touched(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    agent = connect_as(fortress, fortress.agent)
    others = [connect_as(fortress, role) for role in (fortress.production, fortress.reviewer)]
    superuser = psycopg.connect(fortress.dsn, autocommit=True)
    try:
        for conn in [agent, *others, superuser]:
            _idle_in_transaction(conn)
        reaped = cowsync.reap(
            admin,
            max_transaction_seconds=0,
            max_idle_in_transaction_seconds=0,
            max_statement_seconds=0,
        )
        assert [r.pid for r in reaped] == [_pid(agent)]
        for conn in [*others, superuser]:
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            assert _still_works(conn)
            conn.execute("ROLLBACK")
    finally:
        superuser.close()


def test_a_long_statement_of_another_role_is_not_cancelled(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    production = connect_as(fortress, fortress.production)
    with _sleeping(production, admin) as outcome:
        assert cowsync.reap(admin, max_statement_seconds=0, max_transaction_seconds=0) == []
        admin.execute("SELECT pg_cancel_backend(%s)", (_pid(production),))  # end the test
    assert isinstance(outcome[0], psycopg.errors.QueryCanceled)


def test_dry_run_signals_nothing_and_says_what_it_would_do(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    idle = connect_as(fortress, fortress.agent)
    _idle_in_transaction(idle)
    busy = connect_as(fortress, fortress.other_agent)
    with _sleeping(busy, admin) as outcome:
        reaped = cowsync.reap(
            admin, max_idle_in_transaction_seconds=0, max_statement_seconds=0, dry_run=True
        )
        assert sorted((r.pid, r.reason, r.action, r.signalled) for r in reaped) == sorted(
            [
                (_pid(idle), "idle_in_transaction", "terminate", False),
                (_pid(busy), "statement", "cancel", False),
            ]
        )
        assert _state(admin, _pid(busy)) == "active"
        admin.execute("SELECT pg_cancel_backend(%s)", (_pid(busy),))  # end the test
    assert isinstance(outcome[0], psycopg.errors.QueryCanceled)
    assert idle.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert _still_works(idle)


def test_members_of_an_agent_role_are_agents_and_roles_narrows_the_choice(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    connect_as: Connect,
    make_fresh_role: RoleFactory,
) -> None:
    member = make_fresh_role("login", member_of=fresh_fortress.agent)
    by_member = connect_as(fresh_fortress, member)
    by_other = connect_as(fresh_fortress, fresh_fortress.other_agent)
    for conn in (by_member, by_other):
        _idle_in_transaction(conn)
    reaped = cowsync.reap(
        fresh_admin, max_idle_in_transaction_seconds=0, roles=[fresh_fortress.agent]
    )
    assert [(r.pid, r.role) for r in reaped] == [(_pid(by_member), member)]
    assert _still_works(by_other)


def test_a_reaper_needs_rights_to_see_and_signal_other_backends(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    connect_as: Connect,
    make_fresh_role: RoleFactory,
) -> None:
    reaper = make_fresh_role("reaper")
    agent = connect_as(fresh_fortress, fresh_fortress.agent)
    _idle_in_transaction(agent)
    as_reaper = connect_as(fresh_fortress, reaper)
    with pytest.raises(cowsync.CowError, match="pg_read_all_stats and pg_signal_backend"):
        cowsync.reap(as_reaper, max_idle_in_transaction_seconds=0, roles=[fresh_fortress.agent])
    fresh_admin.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(reaper)))
    # Seeing is enough for a dry run; ending needs the signal right too.
    dry = cowsync.reap(
        as_reaper, max_idle_in_transaction_seconds=0, roles=[fresh_fortress.agent], dry_run=True
    )
    assert [r.pid for r in dry] == [_pid(agent)]
    with pytest.raises(cowsync.CowError, match="GRANT pg_signal_backend TO"):
        cowsync.reap(as_reaper, max_idle_in_transaction_seconds=0, roles=[fresh_fortress.agent])
    fresh_admin.execute(sql.SQL("GRANT pg_signal_backend TO {}").format(sql.Identifier(reaper)))
    # The registry is for reviewers: a dedicated reaper names the roles.
    with pytest.raises(cowsync.CowError, match="roles="):
        cowsync.reap(as_reaper, max_idle_in_transaction_seconds=0)
    reaped = cowsync.reap(
        as_reaper, max_idle_in_transaction_seconds=0, roles=[fresh_fortress.agent]
    )
    assert [(r.pid, r.signalled) for r in reaped] == [(_pid(agent), True)]


def test_a_reviewer_with_the_signal_rights_reaps_the_registered_agents(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    reviewer = fresh_fortress.reviewer
    fresh_admin.execute(
        sql.SQL("GRANT pg_read_all_stats, pg_signal_backend TO {}").format(sql.Identifier(reviewer))
    )
    try:
        agent = connect_as(fresh_fortress, fresh_fortress.agent)
        _idle_in_transaction(agent)
        reaped = cowsync.reap(
            connect_as(fresh_fortress, reviewer), max_idle_in_transaction_seconds=0
        )
        assert [r.pid for r in reaped] == [_pid(agent)]
    finally:  # the reviewer role is shared by the module's fortresses
        fresh_admin.execute(
            sql.SQL("REVOKE pg_read_all_stats, pg_signal_backend FROM {}").format(
                sql.Identifier(reviewer)
            )
        )


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"max_statement_seconds": -1}, {"max_transaction_seconds": float("nan")}],
)
def test_reap_refuses_missing_or_negative_limits(
    admin: psycopg.Connection[Any], kwargs: dict[str, float]
) -> None:
    with pytest.raises(cowsync.ConfigurationError):
        cowsync.reap(admin, **kwargs)


def test_reap_refuses_unknown_roles(admin: psycopg.Connection[Any]) -> None:
    with pytest.raises(cowsync.ConfigurationError, match="no such role: nobody_here"):
        cowsync.reap(admin, max_statement_seconds=1, roles=["nobody_here"])


# --- the command line ---------------------------------------------------------------------


def test_cli_reap_json_reports_pids_and_timings_never_statement_text(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    conn = connect_as(fortress, fortress.agent)
    pid = _pid(conn)
    _idle_in_transaction(conn)
    runner = CliRunner()
    dry = runner.invoke(
        cli,
        ["--dsn", fortress.dsn, "reap", "--max-idle-in-transaction", "0", "--dry-run", "--json"],
    )
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["reaped"][0]["signalled"] is False
    assert _still_works(conn)
    result = runner.invoke(
        cli, ["--dsn", fortress.dsn, "reap", "--max-idle-in-transaction", "0", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["dry_run"] is False
    (entry,) = document["reaped"]
    assert entry["pid"] == pid
    assert entry["role"] == fortress.agent
    assert (entry["reason"], entry["action"], entry["signalled"]) == (
        "idle_in_transaction",
        "terminate",
        True,
    )
    assert entry["limit"] == 0 and entry["seconds"] > 0
    assert set(entry) == {"pid", "role", "reason", "seconds", "limit", "action", "signalled"}
    assert MARKER not in result.output and fortress.agent_session not in result.output
    _wait_for(lambda: _gone(admin, pid), "the backend to end")


def test_cli_reap_text_output_and_errors(
    fortress: Fortress, admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    runner = CliRunner()
    conn = connect_as(fortress, fortress.agent)
    with _sleeping(conn, admin):
        result = runner.invoke(
            cli, ["--dsn", fortress.dsn, "reap", "--max-statement", "0", "--role", fortress.agent]
        )
    assert result.exit_code == 0, result.output
    assert f"cancelled the statement of backend {_pid(conn)} ({fortress.agent})" in result.output
    assert MARKER not in result.output
    quiet = runner.invoke(cli, ["--dsn", fortress.dsn, "reap", "--max-statement", "3600"])
    assert quiet.exit_code == 0 and "no agent backend is over its limits" in quiet.output
    missing = runner.invoke(cli, ["--dsn", fortress.dsn, "reap", "--json"])
    assert missing.exit_code == 1 and "at least one limit" in missing.output
    reaper = runner.invoke(
        cli, ["--dsn", fortress.dsn_as(fortress.production), "reap", "--max-statement", "1"]
    )
    assert reaper.exit_code == 1 and "pg_signal_backend" in reaper.output
