"""``manage.py cowsync``: the cowsync command line on Django's database."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.test import override_settings

import cowsync
from cowsync.integrations.django import cow_session
from tests.django._djdb import DjangoDb
from tests.django.testapp.models import Product, Tag, Warehouse


def cowsync_command(*args: str, **options: Any) -> str:
    out = io.StringIO()
    call_command("cowsync", *args, stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


def agent_session() -> None:
    Tag.objects.create(name="prod")
    with cow_session("run-1", "add-tags"):
        Tag.objects.create(name="agent")
        Tag.objects.create(name="agent-2")
    with cow_session("run-1", "rename"):
        Tag.objects.filter(name="prod").update(name="renamed")


def test_status_and_sessions_as_json(enabled_db: DjangoDb) -> None:
    agent_session()
    status = json.loads(cowsync_command("status", "--json"))
    tags = next(t for t in status["tables"] if t["name"] == "testapp_tag")
    assert (tags["sessions"], tags["pending_rows"]) == (1, 3)
    sessions = json.loads(cowsync_command("sessions", "--json"))["sessions"]
    assert [s["session_id"] for s in sessions] == ["run-1"]
    operations = json.loads(cowsync_command("operations", "run-1", "--json"))["operations"]
    assert [o["operation_id"] for o in operations] == ["add-tags", "rename"]


def test_diff_then_commit_chosen_operations(enabled_db: DjangoDb) -> None:
    agent_session()
    diff = json.loads(cowsync_command("diff", "run-1", "-o", "add-tags", "--json"))
    assert sorted(c["after"]["name"] for c in diff["changes"]) == ["agent", "agent-2"]
    text = cowsync_command("diff", "run-1")
    assert "renamed" in text and "agent-2" in text
    cowsync_command("commit", "run-1", "-o", "add-tags", "--yes")
    names = [r[0] for r in enabled_db.production("SELECT name FROM testapp_tag ORDER BY name")]
    assert names == ["agent", "agent-2", "prod"]
    cowsync_command("discard", "run-1", "--yes")
    assert cowsync.sessions(enabled_db.raw) == []


def test_refusals_keep_the_command_lines_exit_codes(enabled_db: DjangoDb) -> None:
    with pytest.raises(CommandError) as unknown:
        cowsync_command("commit", "no-such-session", "--yes")
    assert unknown.value.returncode == 1
    agent_session()
    Tag.objects.filter(name="prod").update(name="changed-in-production")
    with pytest.raises(CommandError) as conflict:
        cowsync_command("commit", "run-1", "--yes")
    assert conflict.value.returncode == 2
    assert [r[0] for r in enabled_db.production("SELECT name FROM testapp_tag")] == [
        "changed-in-production"
    ]


def test_from_the_shell_it_exits_with_the_code(enabled_db: DjangoDb, capsys: Any) -> None:
    from cowsync.integrations.django.management.commands.cowsync import Command

    with pytest.raises(SystemExit) as exit_:
        Command().run_from_argv(["manage.py", "cowsync", "diff", "no-such-session"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "error:" in err and "CommandError" not in err


@override_settings(COWSYNC={"MODELS": ["testapp.Warehouse", "testapp.Product"]})
def test_enable_without_names_enables_the_chosen_models(deployed_db: DjangoDb) -> None:
    cowsync_command("enable")
    enabled = sorted(t.name for t in cowsync.status(deployed_db.raw))
    # Product brings its many-to-many table along.
    assert enabled == ["testapp_product", "testapp_product_tags", "testapp_warehouse"]
    cowsync_command("enable", "testapp_tag")
    assert "testapp_tag" in {t.name for t in cowsync.status(deployed_db.raw)}


@override_settings(COWSYNC={"MODELS": ["testapp.Warehouse"]})
def test_enable_with_only_options_enables_the_chosen_models_in_that_mode(
    deployed_db: DjangoDb,
) -> None:
    cowsync_command("enable", "--mode", "overlay", "--overlay-schema", "sandbox")
    [status] = cowsync.status(deployed_db.raw)
    assert (status.name, status.mode) == ("testapp_warehouse", "overlay")
    assert deployed_db.production("SELECT count(*) FROM pg_views WHERE schemaname = 'sandbox'") == [
        (1,)
    ]


@override_settings(COWSYNC={"MODELS": ["testapp.Warehouse"], "MODE": "overlay"})
def test_the_mode_setting_picks_how_enable_enables(deployed_db: DjangoDb) -> None:
    cowsync_command("enable")
    assert [(t.name, t.mode) for t in cowsync.status(deployed_db.raw)] == [
        ("testapp_warehouse", "overlay")
    ]


def test_a_bad_mode_setting_is_refused_naming_the_key() -> None:
    from cowsync.integrations.django.conf import parse

    with pytest.raises(cowsync.ConfigurationError, match=r"COWSYNC\['MODE'\]"):
        parse({"MODE": "sideways"})
    assert parse({"MODE": "overlay"}).mode == "overlay"


@override_settings(COWSYNC={"MODELS": ["__all__"], "TABLES": ["testapp_review"]})
def test_all_models_means_the_projects_apps(deployed_db: DjangoDb) -> None:
    from cowsync.integrations.django.conf import cow_settings
    from cowsync.integrations.django.selection import selected_tables

    tables = selected_tables(cow_settings(), "default")
    assert "testapp_stock" in tables and "migrapp_box" in tables
    assert tables.count("testapp_review") == 1


def test_enable_without_names_or_settings_says_what_to_configure(deployed_db: DjangoDb) -> None:
    with pytest.raises(CommandError, match=r"COWSYNC\['MODELS'\]"):
        cowsync_command("enable")


def test_database_option_picks_the_alias(enabled_db: DjangoDb) -> None:
    connections.settings["other"] = {**connections.settings["default"]}
    try:
        Warehouse.objects.create(code="W1")
        with cow_session("other-run"):
            Product.objects.create(sku="x", name="X", price=1)
        out = cowsync_command("sessions", "--json", database="other")
        assert [s["session_id"] for s in json.loads(out)["sessions"]] == ["other-run"]
        out = cowsync_command("--database", "other", "status", "--json")
        assert json.loads(out)["tables"]
        with pytest.raises(CommandError, match="no database 'missing'"):
            cowsync_command("status", database="missing")
    finally:
        connections["other"].close()
        del connections["other"]
        del connections.settings["other"]


def test_errors_name_manage_py_cowsync_and_come_as_json(enabled_db: DjangoDb, capsys: Any) -> None:
    # Hints name the host's command (issue 22, item 9); --json errors are JSON (item 10).
    from cowsync.integrations.django.management.commands.cowsync import Command

    with pytest.raises(SystemExit) as exit_:
        Command().run_from_argv(["manage.py", "cowsync", "diff", "no-such-session", "--json"])
    assert exit_.value.code == 1
    captured = capsys.readouterr()
    error = json.loads(captured.out)["error"]
    assert error["type"] == "unknown_session"
    assert "`manage.py cowsync sessions` lists them" in error["message"]
    assert "`manage.py cowsync sessions`" in captured.err
