"""The CLI keeps the review contract: it commits or discards exactly what it showed."""

from __future__ import annotations

import json
from typing import Any

import click
import psycopg
import pytest

import cowsync
from tests.cli.conftest import Invoke, production


def _agent_writes_at_the_prompt(
    monkeypatch: pytest.MonkeyPatch, dsn: str, statement: str, answer: bool = True
) -> None:
    """While the reviewer reads the summary, the agent writes more to the session."""

    def confirm(question: str, default: bool = False) -> bool:
        with (
            psycopg.connect(dsn, autocommit=True) as agent,
            cowsync.session(agent, "agent-run-1", "late"),
        ):
            agent.execute(statement)
        return answer

    monkeypatch.setattr(click, "confirm", confirm)


def test_commit_applies_what_its_summary_showed_not_what_came_at_the_prompt(
    invoke: Invoke,
    session_id: str,
    conn: psycopg.Connection[Any],
    dsn: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _agent_writes_at_the_prompt(monkeypatch, dsn, "UPDATE items SET qty = 7 WHERE id = 2")
    result = invoke("commit", session_id, interactive=True, input="y\n")

    assert result.exit_code == 0, result.output
    assert "committed 3 row(s)" in result.stdout
    assert "1 row(s) of public.items written after the review stayed" in result.stdout
    assert production(conn)[2][1] != 7
    [left] = cowsync.diff(conn, session_id)
    assert (left.key, left.after["qty"], left.operation) == ({"id": 2}, 7, "late")


def test_discard_drops_what_its_summary_showed(
    invoke: Invoke,
    session_id: str,
    conn: psycopg.Connection[Any],
    dsn: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _agent_writes_at_the_prompt(monkeypatch, dsn, "UPDATE items SET qty = 7 WHERE id = 2")
    result = invoke("discard", session_id, interactive=True, input="y\n")

    assert result.exit_code == 0, result.output
    assert [(c.key, c.operation) for c in cowsync.diff(conn, session_id)] == [({"id": 2}, "late")]


def test_diff_json_gives_a_token_that_commit_honours(
    invoke: Invoke, session_id: str, conn: psycopg.Connection[Any]
) -> None:
    shown = json.loads(invoke("diff", session_id, "--json").stdout)
    with cowsync.session(conn, session_id, "late"):
        conn.execute("UPDATE items SET qty = 7 WHERE id = 2")

    refused = invoke(
        "commit", session_id, "--reviewed", shown["review_token"], "--if-changed", "refuse", "--yes"
    )
    assert refused.exit_code == 2
    assert "written after the review" in refused.stderr

    done = json.loads(
        invoke("commit", session_id, "--reviewed", shown["review_token"], "--yes", "--json").stdout
    )
    assert done["total"] == 3
    assert done["drift"] == [{"table": "public.items", "reason": "newer", "rows": 1}]
    assert production(conn)[2][1] != 7


def test_seal_and_unseal(invoke: Invoke, session_id: str, conn: psycopg.Connection[Any]) -> None:
    result = invoke("seal", session_id)
    assert result.exit_code == 0, result.output
    assert "is sealed" in result.stdout
    assert json.loads(invoke("sessions", "--json").stdout)["sessions"][0]["sealed"] is True
    assert "sealed" in invoke("sessions").stdout
    with pytest.raises(psycopg.Error) as caught, cowsync.session(conn, session_id, "late"):
        conn.execute("UPDATE items SET qty = 7 WHERE id = 2")
    assert caught.value.sqlstate == "CW001"

    again = json.loads(invoke("seal", session_id, "--json").stdout)
    assert again == {"session_id": session_id, "sealed": True, "changed": False}
    assert invoke("unseal", session_id).exit_code == 0
    with cowsync.session(conn, session_id, "late"):
        conn.execute("UPDATE items SET qty = 7 WHERE id = 2")


def test_seal_of_an_unknown_session_is_a_user_error(invoke: Invoke, items: str) -> None:
    result = invoke("seal", "nobody")
    assert result.exit_code == 1
    assert "no session 'nobody'" in result.stderr
