"""Bad input gets one clear line on stderr, no traceback, and the documented exit code."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from cowsync.cli import cli

from .conftest import Invoke, first_line


def assert_user_error(result: Result, *fragments: str) -> None:
    """Exit code 1, one line on stderr starting with ``error:``, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_no_database_given_is_a_user_error() -> None:
    result = CliRunner().invoke(cli, ["status"])
    assert_user_error(result, "no database given", "--dsn", "COWSYNC_DSN", "DATABASE_URL")


def test_unreachable_server_is_a_one_line_user_error() -> None:
    # Port 1 on loopback: nothing listens there, the refusal is immediate.
    result = CliRunner().invoke(cli, ["--dsn", "postgresql://postgres@127.0.0.1:1/x", "status"])
    assert_user_error(result, "could not be reached", "127.0.0.1")


def test_malformed_dsn_is_a_user_error() -> None:
    result = CliRunner().invoke(cli, ["--dsn", "this is = not a dsn", "sessions"])
    assert_user_error(result)


def test_unknown_database_is_a_user_error(pg_admin_dsn: str) -> None:
    bad = psycopg.conninfo.make_conninfo(pg_admin_dsn, dbname="cowsync_no_such_database")
    result = CliRunner().invoke(cli, ["--dsn", bad, "status"])
    assert_user_error(result, "cowsync_no_such_database")


def test_engine_not_deployed_says_to_run_deploy(invoke: Invoke) -> None:
    assert_user_error(invoke("status"), "not deployed", "cowsync deploy")


@pytest.mark.parametrize(
    "command",
    [
        ["operations"],
        ["deps"],
        ["diff"],
        ["commit", "--yes"],
        ["discard", "--yes"],
    ],
)
def test_unknown_session_is_a_user_error(
    invoke: Invoke, session_id: str, command: list[str]
) -> None:
    result = invoke(*command[:1], "no-such-session", *command[1:])
    assert_user_error(result, "no session 'no-such-session'", "cowsync sessions")


def test_malformed_session_id_is_a_user_error(invoke: Invoke, items: str) -> None:
    assert_user_error(invoke("diff", "bad session id!"), "session id")


@pytest.mark.parametrize("command", ["diff", "commit", "discard"])
def test_unknown_operation_is_a_user_error(
    invoke: Invoke, session_id: str, command: str, conn: psycopg.Connection[Any]
) -> None:
    extra = [] if command == "diff" else ["--yes"]
    result = invoke(command, session_id, "--operation", "zz", *extra)
    assert_user_error(result, "no operation 'zz'", "a, b, c, d")


def test_unknown_table_in_diff_is_a_user_error(invoke: Invoke, session_id: str) -> None:
    assert_user_error(invoke("diff", session_id, "--table", "nosuch"), "nosuch")


def test_enabling_an_unknown_table_is_a_user_error_and_enables_nothing(
    invoke: Invoke, conn: psycopg.Connection[Any], make_table: Any
) -> None:
    make_table(name="items")
    invoke("deploy")
    result = invoke("enable", "items", "nosuch")
    assert_user_error(result, "nosuch")
    # The named tables are enabled together or not at all.
    assert invoke("status", "--json").stdout.count('"table"') == 0


def test_usage_errors_exit_with_1_not_clicks_2(invoke: Invoke) -> None:
    assert invoke("status", "--no-such-option").exit_code == 1
    assert invoke("no-such-command").exit_code == 1
    assert invoke("operations").exit_code == 1  # missing SESSION
    assert invoke("commit", "s", "--on-conflict", "sometimes").exit_code == 1


def test_enable_needs_tables_or_a_schema_not_both(invoke: Invoke) -> None:
    assert "one or the other" in invoke("enable").output
    assert invoke("enable").exit_code == 1
    assert invoke("enable", "items", "--schema", "public").exit_code == 1


def test_python_dash_m_cowsync_runs_the_same_command_line() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cowsync",
            "--dsn",
            "postgresql://postgres@127.0.0.1:1/x",
            "sessions",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert first_line(done.stderr).startswith("error: the database at ")
    assert "Traceback" not in done.stderr
    version = subprocess.run(
        [sys.executable, "-m", "cowsync", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.returncode == 0 and "cowsync" in version.stdout
