"""Every command against a real database: what it prints, its JSON, and what it changes."""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import cowsync
from cowsync.cli import CliContext, make_group, run

from .conftest import Invoke, production


def parse(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --- install ---------------------------------------------------------------------------


def test_deploy_installs_the_engine_once(invoke: Invoke, conn: psycopg.Connection[Any]) -> None:
    first = invoke("deploy")
    assert first.exit_code == 0 and "deployed cowsync engine" in first.stdout
    again = invoke("deploy")
    assert again.exit_code == 0 and "already deployed" in again.stdout
    assert conn.execute("SELECT to_regclass('cowsync.tables') IS NOT NULL").fetchone() == (True,)


def test_enable_then_status_json_lists_the_tables(
    invoke: Invoke, make_table: Any, conn: psycopg.Connection[Any]
) -> None:
    make_table(name="items", rows=2)
    make_table(name="regions", shape="composite")
    invoke("deploy")
    result = invoke("enable", "items", "public.regions")
    assert result.exit_code == 0, result.output
    assert "enabled public.items (key: id)" in result.stdout
    assert "enabled public.regions (key: region, code)" in result.stdout
    assert "already enabled public.items" in invoke("enable", "items").stdout

    status = parse(invoke("status", "--json"))
    assert status["engine_version"] == cowsync.ENGINE_VERSION
    tables = {t["table"]: t for t in status["tables"]}
    assert set(tables) == {"public.items", "public.regions"}
    assert tables["public.regions"]["key_columns"] == ["region", "code"]
    assert tables["public.items"]["pending_rows"] == 0
    human = invoke("status")
    assert "public.items" in human.stdout and "2 table(s) enabled" in human.stdout


def test_enable_in_overlay_mode_from_the_command_line(
    invoke: Invoke, make_table: Any, conn: psycopg.Connection[Any]
) -> None:
    make_table(name="items", rows=2)
    make_table(name="a", schema="shop")
    invoke("deploy")

    result = invoke("enable", "items", "--mode", "overlay", "--overlay-schema", "sandbox")
    assert result.exit_code == 0, result.output
    assert "enabled public.items (key: id, overlay)" in result.stdout
    result = invoke("enable", "--schema", "shop", "--mode", "overlay", "--no-guard")
    assert result.exit_code == 0, result.output

    views = conn.execute(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'v' AND n.nspname IN ('public', 'sandbox', 'shop', 'shop_cow') "
        "ORDER BY 1"
    ).fetchall()
    assert views == [("sandbox",), ("shop_cow",)]
    guards = conn.execute(
        "SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname = 'cowsync_bound_guard'"
    ).fetchall()
    assert guards == [("items",)]  # shop.a went without one
    assert {t.mode for t in cowsync.status(conn)} == {"overlay"}
    refused = invoke("enable", "items", "--overlay-schema", "x")
    assert refused.exit_code != 0 and "only to mode='overlay'" in refused.output


def test_enable_and_disable_a_whole_schema(
    invoke: Invoke, make_table: Any, conn: psycopg.Connection[Any]
) -> None:
    make_table(name="a", schema="shop")
    make_table(name="b", schema="shop")
    make_table(name="c", schema="shop", shape="no_key")
    invoke("deploy")
    result = invoke("enable", "--schema", "shop", "--exclude", "b")
    assert result.exit_code == 0, result.output
    assert "enabled shop.a" in result.stdout
    assert "skipped shop.b: excluded" in result.stdout
    assert "skipped shop.c" in result.stdout
    assert [t.table for t in cowsync.status(conn)] == ["shop.a"]
    assert "disabled shop.a" in invoke("disable", "--schema", "shop").stdout
    assert cowsync.status(conn) == []


def test_disable_refuses_pending_changes_and_force_needs_confirmation(
    invoke: Invoke, session_id: str, conn: psycopg.Connection[Any]
) -> None:
    refused = invoke("disable", "items")
    assert refused.exit_code == 1
    assert "uncommitted changes" in refused.stderr
    no_tty = invoke("disable", "items", "--force")
    assert no_tty.exit_code == 1 and "--yes" in no_tty.stderr
    assert len(cowsync.status(conn)) == 1
    done = invoke("disable", "items", "--force", "--yes")
    assert done.exit_code == 0, done.output
    assert cowsync.status(conn) == []
    # The original table is back, with production's rows.
    assert conn.execute("SELECT relkind FROM pg_class WHERE relname = 'items'").fetchone() == ("r",)


# --- review ----------------------------------------------------------------------------


def test_sessions_json_and_table(invoke: Invoke, session_id: str) -> None:
    data = parse(invoke("sessions", "--json"))
    (found,) = data["sessions"]
    assert found["session_id"] == session_id
    assert found["operations"] == 4
    assert found["rows"] == 3  # item 1 updated, item 6 inserted, item 5 deleted
    assert found["tables"] == ["public.items"]
    assert "T" in found["created_at"]  # ISO 8601
    human = invoke("sessions")
    assert session_id in human.stdout


def test_sessions_when_there_are_none(invoke: Invoke, items: str) -> None:
    assert parse(invoke("sessions", "--json")) == {"sessions": []}
    assert "no sessions" in invoke("sessions").stdout


def test_operations_in_order_with_counts_and_dependencies(invoke: Invoke, session_id: str) -> None:
    data = parse(invoke("operations", session_id, "--json"))
    assert data["session_id"] == session_id
    ops = {op["operation_id"]: op for op in data["operations"]}
    assert [op["operation_id"] for op in data["operations"]] == ["a", "b", "c", "d"]
    assert ops["b"]["depends_on"] == ["a"]
    assert ops["c"]["inserted"] == 1 and ops["d"]["deleted"] == 1
    human = invoke("operations", session_id).stdout
    for op in "abcd":
        assert f" {op} " in human


def test_deps_json_and_table(invoke: Invoke, session_id: str) -> None:
    data = parse(invoke("deps", session_id, "--json"))
    assert data["dependencies"] == {"a": [], "b": ["a"], "c": [], "d": []}
    human = invoke("deps", session_id).stdout
    assert "depends on" in human and "needed by" in human


def test_diff_json_round_trips_values(invoke: Invoke, session_id: str) -> None:
    data = parse(invoke("diff", session_id, "--json"))
    changes = {(c["kind"], c["key"]["id"]): c for c in data["changes"]}
    assert set(changes) == {("update", 1), ("insert", 6), ("delete", 5)}
    update = changes[("update", 1)]
    assert update["changed"] == ["qty"]
    assert update["after"]["qty"] == 101 and update["before"]["qty"] == 1
    assert update["operation"] == "b"
    # Decimals as strings, timestamps as ISO 8601.
    assert changes[("insert", 6)]["after"]["price"] == "9.99"
    assert update["before"]["updated_at"].startswith("2024-01-01T00:01:00")
    assert changes[("delete", 5)]["after"] is None
    assert data["stat"] == {"public.items": {"insert": 1, "update": 1, "delete": 1}}


def test_diff_for_one_operation_and_stat_only(invoke: Invoke, session_id: str) -> None:
    data = parse(invoke("diff", session_id, "-o", "c", "--json"))
    assert data["operations"] == ["c"]
    assert [c["kind"] for c in data["changes"]] == ["insert"]
    stat = invoke("diff", session_id, "--stat")
    assert "public.items | 3" in stat.stdout
    assert "1 inserted, 1 updated, 1 deleted" in stat.stdout
    assert "→" not in stat.stdout  # no row detail


def test_diff_marks_changed_columns_before_and_after(invoke: Invoke, session_id: str) -> None:
    out = invoke("diff", session_id).stdout
    assert "public.items | 3" in out  # the summary comes first
    assert out.index("public.items | 3") < out.index("~ update")
    changed = next(line for line in out.splitlines() if line.startswith("* qty"))
    assert "1" in changed and "→" in changed and "101" in changed
    unchanged = next(line for line in out.splitlines() if line.strip().startswith("name"))
    assert "→" not in unchanged and not unchanged.startswith("*")
    assert "+ insert" in out and "- delete" in out


def test_diff_detail_stops_at_limit_but_the_summary_counts_every_row(
    invoke: Invoke, session_id: str
) -> None:
    out = invoke("diff", session_id, "--limit", "1").stdout
    headers = [
        line for line in out.splitlines() if re.match(r"^[~+-] (insert|update|delete) ", line)
    ]
    assert len(headers) == 1
    assert "2 more changed row(s) not shown" in out
    assert "1 inserted, 1 updated, 1 deleted" in out
    everything = invoke("diff", session_id, "--limit", "0").stdout
    assert "not shown" not in everything


def test_values_that_look_like_markup_print_as_themselves(
    invoke: Invoke, items: str, conn: psycopg.Connection[Any]
) -> None:
    with cowsync.session(conn, "s", "op"):
        conn.execute("UPDATE items SET name = '[bold red]x[/] :thumbs_up:' WHERE id = 2")
    assert "[bold red]x[/] :thumbs_up:" in invoke("diff", "s").stdout
    conn.execute('CREATE TABLE "odd[red]name" (id int PRIMARY KEY)')
    assert "enabled public.odd[red]name" in invoke("enable", "odd[red]name").stdout
    assert "public.odd[red]name" in invoke("status").stdout


# --- commit ----------------------------------------------------------------------------


def test_commit_without_yes_and_without_a_terminal_refuses(
    invoke: Invoke, session_id: str, conn: psycopg.Connection[Any]
) -> None:
    before = production(conn)
    result = invoke("commit", session_id)
    assert result.exit_code == 1
    assert "no terminal" in result.stderr and "--yes" in result.stderr
    assert production(conn) == before


def test_commit_asks_and_applies_on_yes(
    invoke: Invoke, session_id: str, conn: psycopg.Connection[Any]
) -> None:
    result = invoke("commit", session_id, interactive=True, input="y\n")
    assert result.exit_code == 0, result.output
    assert "Commit 3 row(s) to production?" in result.stdout
    assert "committed 3 row(s)" in result.stdout
    rows = production(conn)
    assert rows[1][1] == 101 and rows[6] == ("new", 3) and 5 not in rows
    assert cowsync.sessions(conn) == []


def test_commit_declined_at_the_prompt_changes_nothing(
    invoke: Invoke, session_id: str, conn: psycopg.Connection[Any]
) -> None:
    before = production(conn)
    result = invoke("commit", session_id, interactive=True, input="n\n")
    assert result.exit_code == 1
    assert "cancelled" in result.stderr
    assert production(conn) == before
    assert len(cowsync.operations(conn, session_id)) == 4


def test_commit_chosen_operations_json(
    invoke: Invoke, session_id: str, conn: psycopg.Connection[Any]
) -> None:
    data = parse(invoke("commit", session_id, "-o", "c", "-o", "d", "--yes", "--json"))
    assert data["operations"] == ["c", "d"]
    assert data["applied"] == {"public.items": {"insert": 1, "update": 0, "delete": 1}}
    assert data["total"] == 2
    rows = production(conn)
    assert 6 in rows and 5 not in rows and rows[1][1] == 1
    assert [op.operation_id for op in cowsync.operations(conn, session_id)] == ["a", "b"]


def test_commit_missing_dependency_exits_2_with_what_to_do(
    invoke: Invoke, session_id: str, conn: psycopg.Connection[Any]
) -> None:
    before = production(conn)
    result = invoke("commit", session_id, "-o", "b", "--yes")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "--include-dependencies" in result.stderr and "a" in result.stderr
    assert production(conn) == before
    ok = invoke("commit", session_id, "-o", "b", "--include-dependencies", "--yes")
    assert ok.exit_code == 0, ok.output
    assert production(conn)[1][1] == 101


def test_commit_conflict_exits_2_then_overwrite_wins(
    invoke: Invoke, session_id: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("UPDATE items SET qty = 55 WHERE id = 1")  # production moves on
    result = invoke("commit", session_id, "--yes")
    assert result.exit_code == 2
    assert "--on-conflict" in result.stderr and "skip" in result.stderr
    assert "conflicts" in result.stdout and "55" in result.stdout  # the conflicting row
    assert production(conn)[1][1] == 55 and 6 not in production(conn)
    json_result = invoke("commit", session_id, "--yes", "--json")
    assert json_result.exit_code == 2
    (conflict,) = json.loads(json_result.stdout)["conflicts"]
    assert conflict["key"] == {"id": 1} and conflict["base"]["qty"] == 55
    ok = invoke("commit", session_id, "--on-conflict", "overwrite", "--yes")
    assert ok.exit_code == 0, ok.output
    assert production(conn)[1][1] == 101


def test_commit_that_breaks_a_constraint_exits_2(
    invoke: Invoke, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("CREATE TABLE skus (id int PRIMARY KEY, code text UNIQUE NOT NULL)")
    cowsync.deploy(conn)
    cowsync.enable(conn, "skus")
    with cowsync.session(conn, "s", "add"):
        conn.execute("INSERT INTO skus VALUES (1, 'X')")
    conn.execute("INSERT INTO skus VALUES (2, 'X')")  # production takes the code first
    result = invoke("commit", "s", "--yes")
    assert result.exit_code == 2, result.output
    assert "Nothing was applied" in result.stderr or "nothing was applied" in result.stderr
    assert conn.execute("SELECT count(*) FROM skus").fetchone() == (1,)


# --- discard ---------------------------------------------------------------------------


def test_discard_refuses_to_orphan_dependents_then_includes_them(
    invoke: Invoke, session_id: str, conn: psycopg.Connection[Any]
) -> None:
    refused = invoke("discard", session_id, "-o", "a", "--yes")
    assert refused.exit_code == 2
    assert "--include-dependents" in refused.stderr
    data = parse(
        invoke("discard", session_id, "-o", "a", "--include-dependents", "--yes", "--json")
    )
    assert data["operations"] == ["a", "b"]
    assert [op.operation_id for op in cowsync.operations(conn, session_id)] == ["c", "d"]


def test_discard_asks_and_never_touches_production(
    invoke: Invoke, session_id: str, conn: psycopg.Connection[Any]
) -> None:
    before = production(conn)
    assert invoke("discard", session_id).exit_code == 1  # no terminal, no --yes
    result = invoke("discard", session_id, interactive=True, input="y\n")
    assert result.exit_code == 0, result.output
    assert "discarded" in result.stdout
    assert production(conn) == before
    assert cowsync.sessions(conn) == []


# --- hosts -----------------------------------------------------------------------------


def test_a_host_group_runs_the_same_commands_on_its_own_connection(
    session_id: str, conn: psycopg.Connection[Any]
) -> None:
    group = make_group(lambda ctx: CliContext.from_connection(conn), name="cow")
    result = CliRunner().invoke(group, ["operations", session_id, "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["operations"]) == 4
    assert not conn.closed  # the host's connection is lent, not closed
    refused = CliRunner().invoke(group, ["commit", session_id, "-o", "b", "--yes"])
    assert refused.exit_code == 2


def test_run_returns_exit_codes_for_hosts(
    session_id: str, conn: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    obj = CliContext.from_connection(conn, interactive=False)
    assert run(["deps", session_id, "--json"], obj=obj) == 0
    assert json.loads(capsys.readouterr().out)["dependencies"]["b"] == ["a"]
    assert run(["diff", "nope"], obj=obj) == 1
    assert "no session 'nope'" in capsys.readouterr().err
    assert run(["commit", session_id, "-o", "b", "--yes"], obj=obj) == 2
    assert run(["--help"], obj=obj) == 0


def test_status_notes_tables_linked_to_an_enabled_table_that_are_not_enabled(
    invoke: Invoke, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "CREATE TABLE authors (id int PRIMARY KEY);"
        "CREATE TABLE books (id int PRIMARY KEY, author_id int REFERENCES authors);"
    )
    invoke("deploy")
    invoke("enable", "books")

    human = invoke("status")
    assert human.exit_code == 0, human.output
    text = " ".join(human.stdout.split())
    assert "note: public.books has foreign keys to or from public.authors, not enabled" in text
    status = parse(invoke("status", "--json"))
    assert status["tables"][0]["linked_not_enabled"] == ["public.authors"]

    invoke("enable", "authors")
    assert "note:" not in invoke("status").stdout
