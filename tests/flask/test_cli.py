"""``flask cowsync ...``: cowsync's review commands against the app's own database."""

from __future__ import annotations

import json

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

import cowsync
from cowsync.integrations.flask import CowSync
from cowsync.integrations.flask.sqlalchemy_binding import engine_binding
from cowsync.pool import CowPool
from tests.flask.conftest import base_config, production_names, sqlalchemy_url

COMMANDS = (
    "deploy",
    "enable",
    "disable",
    "status",
    "sessions",
    "operations",
    "deps",
    "diff",
    "commit",
    "discard",
)


@pytest.fixture
def cli(make_app):
    """``cli(*args, app=None)``: run ``flask cowsync ARGS`` on an app (default: a new one)."""
    default_app, _ = make_app(probe_routes=False)

    def run(*args, app=None):
        return (app or default_app).test_cli_runner().invoke(args=["cowsync", *args])

    return run


def test_group_lists_cowsyncs_commands(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert f"  {command} " in result.output


def test_deploy_is_idempotent(cli):
    result = cli("deploy")
    assert result.exit_code == 0
    assert "already deployed" in result.output


def test_status_and_sessions_read_the_apps_database(cli):
    status = json.loads(cli("status", "--json").output)
    assert [t["table"] for t in status["tables"]] == ["public.items"]
    sessions = json.loads(cli("sessions", "--json").output)
    assert {"s1", "s2"} <= {s["session_id"] for s in sessions["sessions"]}


def test_review_then_commit_and_discard(cli, cow_items, conn):
    cow_items("cli-1", "op-keep", name="approved")
    cow_items("cli-1", "op-drop", name="rejected")

    diff = json.loads(cli("diff", "cli-1", "--json").output)
    assert sorted(c["after"]["name"] for c in diff["changes"]) == ["approved", "rejected"]
    operations = json.loads(cli("operations", "cli-1", "--json").output)
    assert [op["operation_id"] for op in operations["operations"]] == ["op-keep", "op-drop"]

    refused = cli("commit", "cli-1", "-o", "op-keep")
    assert refused.exit_code == 1
    assert "--yes" in refused.output
    assert "approved" not in production_names(conn)

    committed = cli("commit", "cli-1", "-o", "op-keep", "--yes")
    assert committed.exit_code == 0, committed.output
    discarded = cli("discard", "cli-1", "--yes")
    assert discarded.exit_code == 0, discarded.output

    names = production_names(conn)
    assert "approved" in names and "rejected" not in names
    assert cowsync.diff(conn, "cli-1") == []


def test_unknown_session_exits_with_1(cli):
    result = cli("diff", "no-such-session")
    assert result.exit_code == 1
    assert "error:" in result.output


def test_commands_use_a_given_pool_unbound(make_app, cow_items, conn, dsn):
    cow_items("cli-pool", name="from-pool-cli")
    pool = CowPool(dsn, min_size=1, open=True)
    try:
        app, _ = make_app(COWSYNC_DATABASE_URL=None, COWSYNC_POOL=pool, probe_routes=False)
        with cowsync.bind("s1"):  # whatever the caller's context, review runs unbound
            result = app.test_cli_runner().invoke(args=["cowsync", "commit", "cli-pool", "--yes"])
        assert result.exit_code == 0, result.output
        assert "from-pool-cli" in production_names(conn)
    finally:
        pool.close()


def test_commands_fall_back_to_the_sqlalchemy_engine(dsn):
    app = Flask("cli_sqlalchemy")
    app.config.update(
        base_config(dsn, COWSYNC_DATABASE_URL=None, SQLALCHEMY_DATABASE_URI=sqlalchemy_url(dsn))
    )
    db = SQLAlchemy(app)
    CowSync(app)
    try:
        result = app.test_cli_runner().invoke(args=["cowsync", "status", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["tables"][0]["table"] == "public.items"
    finally:
        with app.app_context():
            engine_binding(db.engine).remove()
            db.engine.dispose()


def test_app_without_database_says_so():
    app = Flask("cli_nowhere")
    CowSync(app)
    result = app.test_cli_runner().invoke(args=["cowsync", "status"])
    assert result.exit_code == 1
    assert "COWSYNC_DATABASE_URL" in result.output


def test_errors_name_flask_cowsync_and_come_as_json(make_app):
    # Hints name the host's command (issue 22, item 9); --json errors are JSON (item 10).
    app, _ = make_app(probe_routes=False)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["cowsync", "diff", "no-such-session", "--json"], prog_name="flask")
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "unknown_session"
    assert "`flask cowsync sessions` lists them" in error["message"]
    assert "`flask cowsync sessions`" in result.stderr
