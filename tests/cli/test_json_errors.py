"""With ``--json`` an error is one JSON object on stdout too (issue 22, items 9 and 10).

``{"error": {"type", "message", "hint", "exit_code", ...}}``; the human message stays on
stderr and the exit code is the documented one. Hints name the host's command, and bad
DSNs give one clean line with the password masked.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from click.testing import CliRunner, Result

import cowsync
from cowsync.cli import CliContext, cli, make_group, run

from .conftest import Invoke


def json_error(result: Result, exit_code: int, type_: str) -> dict[str, Any]:
    """The error object of ``result``'s stdout, checked against the exit code and type."""
    assert result.exit_code == exit_code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    payload = json.loads(result.stdout)
    error = payload["error"]
    assert error["type"] == type_, error
    assert error["exit_code"] == exit_code
    assert error["message"] and "\n" not in error["message"]
    assert result.stderr.startswith(("error: ", "Usage: ")), result.stderr  # still for people
    return error


def test_unknown_session_is_a_json_error(invoke: Invoke, items: str) -> None:
    for command in ("operations", "deps", "diff"):
        error = json_error(invoke(command, "nope", "--json"), 1, "unknown_session")
        assert error["session_id"] == "nope"
        assert "`cowsync sessions`" in error["message"]


def test_unknown_operation_is_a_json_error(invoke: Invoke, session_id: str) -> None:
    error = json_error(invoke("diff", session_id, "-o", "zz", "--json"), 1, "unknown_operation")
    assert error["unknown"] == ["zz"] and error["operations"] == ["a", "b", "c", "d"]


def test_not_deployed_is_a_json_error(invoke: Invoke, conn: psycopg.Connection[Any]) -> None:
    error = json_error(invoke("sessions", "--json"), 1, "NotDeployedError")
    assert "run `cowsync deploy` first" in error["message"]


def test_dependency_refusal_is_a_json_error(invoke: Invoke, session_id: str) -> None:
    result = invoke("commit", session_id, "-o", "b", "--yes", "--json")
    error = json_error(result, 2, "DependencyError")
    assert error["missing"] == ["a"]
    assert "--include-dependencies" in error["hint"]


def test_conflict_at_commit_is_one_json_object(
    invoke: Invoke, session_id: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("UPDATE items SET qty = 55 WHERE id = 1")
    result = invoke("commit", session_id, "--yes", "--json")
    error = json_error(result, 2, "ConflictError")
    (conflict,) = error["conflicts"]
    assert conflict["key"] == {"id": 1} and conflict["base"]["qty"] == 55
    assert "--on-conflict" in error["hint"]
    payload = json.loads(result.stdout)  # the keys of before errors were JSON stay
    assert payload["session_id"] == session_id and payload["conflicts"] == error["conflicts"]


def test_confirmation_without_terminal_is_a_json_error(invoke: Invoke, session_id: str) -> None:
    error = json_error(invoke("discard", session_id, "--json"), 1, "confirmation")
    assert "--yes" in error["message"]


def test_usage_errors_are_json_with_json(invoke: Invoke, items: str) -> None:
    error = json_error(invoke("diff", "s", "--limit", "x", "--json"), 1, "usage")
    assert "--limit" in error["message"]
    json_error(invoke("diff", "s", "--on-conflict", "x", "--json"), 1, "usage")
    json_error(invoke("no-such-command", "--json"), 1, "usage")
    plain = invoke("diff", "s", "--limit", "x")
    assert plain.exit_code == 1 and plain.stdout == ""


def test_without_json_errors_stay_plain(invoke: Invoke, items: str) -> None:
    result = invoke("diff", "nope")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: no session 'nope'")


def test_malformed_dsn_is_one_clean_json_error() -> None:
    result = CliRunner().invoke(cli, ["--dsn", "not a dsn password=hunter2", "status", "--json"])
    error = json_error(result, 1, "bad_dsn")
    assert error["message"].startswith("the DSN 'not a dsn password=***' could not be parsed")
    assert "hunter2" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_dsn_is_one_clean_line_with_the_password_masked() -> None:
    dsn = "postgresql://postgres:hunter2@127.0.0.1:1/x"
    result = CliRunner().invoke(cli, ["--dsn", dsn, "sessions", "--json"])
    error = json_error(result, 1, "unreachable_database")
    assert error["dsn"] == "postgresql://postgres:***@127.0.0.1:1/x"
    assert "could not be reached" in error["message"]
    assert "connection is bad" not in result.output and "connection failed" not in result.output
    assert "hunter2" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    socket = CliRunner().invoke(cli, ["--dsn", "host=/nonexistent password=x", "status"])
    assert socket.exit_code == 1 and "connection is bad" not in socket.stderr
    assert len(socket.stderr.strip().splitlines()) == 1 and "password=***" in socket.stderr


def test_hints_name_the_hosts_command(conn: psycopg.Connection[Any], items: str) -> None:
    context = CliContext.from_connection(conn, interactive=False)
    runner = CliRunner()
    result = runner.invoke(
        make_group(lambda ctx: context, name="cowsync"),
        ["diff", "nope", "--json"],
        prog_name="manage.py cowsync",
    )
    error = json_error(result, 1, "unknown_session")
    assert "`manage.py cowsync sessions` lists them" in error["message"]


def test_run_names_its_prog_name_and_force_is_the_flag(
    conn: psycopg.Connection[Any], items: str, capsys: Any
) -> None:
    with cowsync.session(conn, "s1", "op"):
        conn.execute("UPDATE items SET qty = 7 WHERE id = 2")
    context = CliContext.from_connection(conn, interactive=False)
    assert run(["disable", "items"], obj=context, prog_name="tool cowsync") == 1
    err = capsys.readouterr().err
    assert "pass --force" in err and "force=True" not in err
