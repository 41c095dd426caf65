"""Find a PostgreSQL server for the test suite and manage the databases the tests run in.

Discovery tries, in order, and uses the first that works:

1. ``COWSYNC_TEST_DSN``: a DSN or URL for a role that may ``CREATE DATABASE``. If it is set but
   does not work, that is an error, not a reason to look elsewhere.
2. A server on 127.0.0.1:5432 as user ``postgres`` (maintenance db ``postgres``, then ``test``).
   ``COWSYNC_TEST_SKIP_LOCAL=1`` skips this step (to exercise the next one).
3. A throwaway cluster made with the local server binaries (``pg_config --bindir``, then
   ``/usr/lib/postgresql/*/bin``, then ``initdb`` on PATH), run as the ``postgres`` OS user when
   we are root, reachable through a unix socket in its own temporary directory, and removed when
   the test run ends.
4. A container started by testcontainers, when Docker is running.

If none works, database tests are skipped with a message that says how to provide a server, or
they fail when ``COWSYNC_TEST_REQUIRE_DB=1`` (CI sets it, so a missing server cannot pass
silently).

Per process (and so per pytest-xdist worker) the suite creates one empty template database;
every test that asks for a database gets a fresh copy of it, dropped after the test. The names
are random, so concurrent runs and workers never collide.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ENV_DSN = "COWSYNC_TEST_DSN"
ENV_SKIP_LOCAL = "COWSYNC_TEST_SKIP_LOCAL"
ENV_REQUIRE_DB = "COWSYNC_TEST_REQUIRE_DB"
ENV_CONTAINER_IMAGE = "COWSYNC_TEST_PG_IMAGE"
# The pytest-xdist controller discovers once and hands the server to its workers through these.
ENV_SHARED_DSN = "_COWSYNC_TEST_SHARED_DSN"
ENV_SHARED_DESCRIPTION = "_COWSYNC_TEST_SHARED_DESCRIPTION"

LOCAL_HOST = "127.0.0.1"
LOCAL_PORT = 5432
CONNECT_TIMEOUT = 3
TEMPLATE_PREFIX = "cowsync_tpl_"
DATABASE_PREFIX = "cowsync_t_"

HOW_TO_PROVIDE = f"""\
no PostgreSQL server is available for the database tests. Provide one of:
  - a server you choose: export {ENV_DSN}=postgresql://USER:PASSWORD@HOST:5432/postgres
    (the role must be allowed to CREATE DATABASE; each test gets its own database)
  - a server on {LOCAL_HOST}:{LOCAL_PORT} that accepts user postgres without a password
  - the PostgreSQL server binaries (initdb, pg_ctl), e.g. `apt-get install postgresql`,
    so the tests can start a throwaway cluster
  - a running Docker engine, so testcontainers can start a postgres container"""


class Unavailable(Exception):
    """This way of getting a server does not work here; the message says why."""


@dataclass
class PgServer:
    """A server the tests may create databases on."""

    source: str  # "env", "local", "throwaway", "container" or "shared" (from the xdist controller)
    description: str
    admin_dsn: str  # DSN of a maintenance database, for CREATE/DROP DATABASE
    version: str = ""
    stop: Callable[[], None] | None = field(default=None, repr=False)

    def close(self) -> None:
        """Stop the server if the test run started it; harmless to call twice."""
        stop, self.stop = self.stop, None
        if stop is not None:
            stop()


@dataclass
class Discovery:
    """What discovery found: a server, or why there is none."""

    server: PgServer | None = None
    tried: list[str] = field(default_factory=list)  # "what: why it did not work"
    error: str | None = None  # a misconfiguration that must fail the tests, not skip them
    seconds: float = 0.0

    def header_lines(self) -> list[str]:
        """Lines for pytest's report header."""
        if self.server is not None:
            version = f", PostgreSQL {self.server.version}" if self.server.version else ""
            lines = [
                f"cowsync postgres: {self.server.description}{version} "
                f"(ready in {self.seconds:.2f} s)"
            ]
        elif self.error is not None:
            lines = [f"cowsync postgres: ERROR: {self.error}"]
        else:
            lines = ["cowsync postgres: none found; database tests will be skipped"]
        lines.extend(f"  not used: {reason}" for reason in self.tried)
        return lines

    def unavailable_message(self) -> str:
        """Why database tests cannot run and how to fix it."""
        if self.error is not None:
            return self.error
        tried = "".join(f"\n  - {reason}" for reason in self.tried)
        return f"{HOW_TO_PROVIDE}\nTried:{tried}"


def database_required() -> bool:
    """True when a missing server must fail the tests instead of skipping them."""
    return _env_flag(ENV_REQUIRE_DB)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def server_version(dsn: str) -> str:
    """Connect and return ``server_version``; raises psycopg.Error when that fails."""
    with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
        return str(conn.info.parameter_status("server_version") or "")


def _may_create_databases(dsn: str) -> bool:
    with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
        row = conn.execute(
            "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    return bool(row and row[0])


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**{k: str(v) for k, v in params.items()})


# --- discovery ------------------------------------------------------------------------------


def discover() -> Discovery:
    """Find a server, trying each source in turn (see the module docstring)."""
    started = time.monotonic()
    found = Discovery()
    _discover_into(found)
    found.seconds = time.monotonic() - started
    return found


def _discover_into(found: Discovery) -> None:
    shared = os.environ.get(ENV_SHARED_DSN)
    if shared:
        description = os.environ.get(
            ENV_SHARED_DESCRIPTION, "server shared by the xdist controller"
        )
        try:
            version = server_version(shared)
        except psycopg.Error as exc:
            found.error = f"the server the xdist controller found is unreachable: {_one_line(exc)}"
            return
        found.server = PgServer("shared", description, shared, version)
        return

    configured = os.environ.get(ENV_DSN, "").strip()
    if configured:
        try:
            version = server_version(configured)
            if not _may_create_databases(configured):
                found.error = (
                    f"{ENV_DSN} ({_redact(configured)}) connects, but its role may not "
                    "CREATE DATABASE; grant CREATEDB or use a superuser"
                )
                return
        except psycopg.Error as exc:
            found.error = (
                f"{ENV_DSN} is set ({_redact(configured)}) but connecting failed: "
                f"{_one_line(exc)}; fix it or unset it to let the tests find a server"
            )
            return
        found.server = PgServer("env", f"{ENV_DSN} ({_redact(configured)})", configured, version)
        return

    for attempt in (_local_server, _throwaway_cluster, _container):
        try:
            found.server = attempt()
            return
        except Unavailable as exc:
            found.tried.append(str(exc))


def _local_server() -> PgServer:
    what = f"server on {LOCAL_HOST}:{LOCAL_PORT}"
    if _env_flag(ENV_SKIP_LOCAL):
        raise Unavailable(f"{what}: skipped because {ENV_SKIP_LOCAL} is set")
    errors = []
    for dbname in ("postgres", "test"):
        dsn = make_conninfo(host=LOCAL_HOST, port=LOCAL_PORT, user="postgres", dbname=dbname)
        try:
            version = server_version(dsn)
        except psycopg.Error as exc:
            errors.append(f"dbname {dbname}: {_one_line(exc)}")
            continue
        if not _may_create_databases(dsn):
            raise Unavailable(f"{what}: user postgres may not CREATE DATABASE")
        return PgServer("local", f"{what} (user postgres, dbname {dbname})", dsn, version)
    raise Unavailable(f"{what}: " + "; ".join(errors))


def _throwaway_cluster() -> PgServer:
    cluster = ThrowawayCluster(find_server_binaries())
    cluster.start()
    dsn = cluster.dsn
    try:
        version = server_version(dsn)
    except psycopg.Error as exc:
        cluster.stop()
        raise Unavailable(f"throwaway cluster started but refused us: {_one_line(exc)}") from exc
    return PgServer("throwaway", cluster.description, dsn, version, stop=cluster.stop)


def _container() -> PgServer:
    what = "Docker container (testcontainers)"
    try:
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:
            from testcontainers.postgres import PostgresContainer
    except ImportError as exc:
        raise Unavailable(f"{what}: testcontainers is not installed") from exc

    image = os.environ.get(ENV_CONTAINER_IMAGE, "postgres:15-alpine")
    container: Any = None
    try:
        container = PostgresContainer(image, driver=None)
        container.start()
        url = container.get_connection_url()
        version = server_version(url)
    except Exception as exc:  # docker, requests and testcontainers all raise their own errors
        if container is not None:
            with contextlib.suppress(Exception):
                container.stop()
        hint = "is Docker running? " if type(exc).__name__ == "DockerException" else ""
        raise Unavailable(f"{what}: {hint}{_one_line(exc)}") from exc
    return PgServer("container", f"{what}, image {image}", url, version, stop=container.stop)


# --- throwaway cluster ----------------------------------------------------------------------


def find_server_binaries() -> Path:
    """The directory holding initdb, pg_ctl and postgres, or raise Unavailable."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass

    def major(path: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", Path(path).parent.name))

    candidates.extend(
        Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True)
    )
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)

    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    looked = ", ".join(str(c) for c in candidates) or "pg_config, /usr/lib/postgresql/*/bin, PATH"
    raise Unavailable(f"throwaway cluster: no initdb/pg_ctl/postgres found (looked in {looked})")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCAL_HOST, 0))
        return int(sock.getsockname()[1])


class ThrowawayCluster:
    """A PostgreSQL cluster in a temporary directory, for one test run.

    PostgreSQL refuses to run as root, so when we are root the cluster belongs to the
    ``postgres`` OS user and every server command runs through ``runuser`` (or ``su``).
    Durability is switched off: nothing here must survive a crash.
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = 0
        self.directory: Path | None = None
        self._account: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._account = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise Unavailable(
                    "throwaway cluster: running as root and there is no 'postgres' OS user "
                    "to run the server as (PostgreSQL refuses to run as root)"
                ) from exc

    @property
    def data_directory(self) -> Path:
        assert self.directory is not None
        return self.directory / "data"

    @property
    def dsn(self) -> str:
        return make_conninfo(
            host=str(self.directory), port=self.port, user="postgres", dbname="postgres"
        )

    @property
    def description(self) -> str:
        runs_as = f", run as OS user {self._account.pw_name}" if self._account else ""
        return (
            f"throwaway cluster from {self.bindir} in {self.directory} "
            f"(port {self.port}, unix socket{runs_as})"
        )

    def _as_owner(self, argv: list[str]) -> list[str]:
        if self._account is None:
            return argv
        if shutil.which("runuser"):
            return ["runuser", "-u", self._account.pw_name, "--", *argv]
        return ["su", self._account.pw_name, "-s", "/bin/sh", "-c", shlex.join(argv)]

    def _run(
        self, argv: list[str], cwd: Path | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._as_owner(argv),
            cwd=cwd or self.directory or "/",  # the postgres user may not be able to enter ours
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _make_directory(self) -> Path:
        bases = [Path(tempfile.gettempdir())]
        if self._account is not None and bases[0] != Path("/tmp"):
            bases.append(Path("/tmp"))  # TMPDIR may sit where the postgres user cannot go
        for base in bases:
            directory = Path(tempfile.mkdtemp(prefix="cowsync-pg-", dir=base))
            if self._account is None:
                return directory
            os.chown(directory, self._account.pw_uid, self._account.pw_gid)
            if self._run(["test", "-w", str(directory)], cwd=directory).returncode == 0:
                return directory
            shutil.rmtree(directory, ignore_errors=True)
        who = self._account.pw_name if self._account else "the server's user"
        raise Unavailable(
            f"throwaway cluster: {who} cannot write to a directory "
            f"under {' or '.join(map(str, bases))}"
        )

    def start(self) -> None:
        """initdb and start the server; raises Unavailable with the server's words on failure."""
        self.directory = self._make_directory()
        atexit.register(self.stop)  # in case the run dies before the session ends
        initdb = self._run(
            [
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.data_directory),
                "--username",
                "postgres",
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ]
        )
        if initdb.returncode != 0:
            self.stop()
            raise Unavailable(f"throwaway cluster: initdb failed: {_tail(initdb)}")

        for _ in range(3):  # another process may grab the free port before the server binds it
            self.port = _free_port()
            self._write_settings()
            started = self._run(
                [
                    str(self.bindir / "pg_ctl"),
                    "--pgdata",
                    str(self.data_directory),
                    "--log",
                    str(self.directory / "server.log"),
                    "--wait",
                    "--timeout",
                    "60",
                    "start",
                ]
            )
            if started.returncode == 0:
                return
            log = self._server_log()
            if "could not bind" not in log and "already in use" not in log:
                break
        self.stop()
        raise Unavailable(f"throwaway cluster: pg_ctl start failed: {_tail(started)} {log[-800:]}")

    def _write_settings(self) -> None:
        socket_dir = str(self.directory).replace("'", "''")
        settings = f"""
# cowsync test suite: a throwaway cluster (the last setting of a name wins)
port = {self.port}
listen_addresses = '{LOCAL_HOST}'
unix_socket_directories = '{socket_dir}'
fsync = off
synchronous_commit = off
full_page_writes = off
"""
        with open(self.data_directory / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(settings)

    def _server_log(self) -> str:
        try:
            assert self.directory is not None
            return (self.directory / "server.log").read_text(errors="replace")
        except (OSError, AssertionError):
            return ""

    def stop(self) -> None:
        """Stop the server (immediate shutdown) and remove its directory."""
        directory, self.directory = self.directory, None
        if directory is None:
            return
        data = directory / "data"
        if (data / "postmaster.pid").exists():
            pg_ctl = str(self.bindir / "pg_ctl")
            self._run(
                [pg_ctl, "--pgdata", str(data), "-m", "immediate", "-w", "stop"], cwd=directory
            )
            _kill_postmaster(data / "postmaster.pid")
        shutil.rmtree(directory, ignore_errors=True)


def _kill_postmaster(pid_file: Path) -> None:
    """Last resort when pg_ctl could not stop the server."""
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGQUIT)
    except (OSError, ValueError, IndexError):
        pass


def _tail(result: subprocess.CompletedProcess[str]) -> str:
    text = " ".join((result.stdout + " " + result.stderr).split())
    return text[-800:] or f"exit status {result.returncode}"


# --- databases ------------------------------------------------------------------------------


def random_name(prefix: str) -> str:
    """A database name no other run or xdist worker will pick."""
    return prefix + secrets.token_hex(6)


class TestDatabases:
    """The template and the per-test databases of one test process.

    The template is created empty from ``template0`` (which nobody may connect to, so copying it
    never waits for other sessions). Each test database is a copy of our template, which no one
    connects to either. One maintenance connection does all the CREATE and DROP work.
    """

    __test__ = False  # not a test class, whatever its name says

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.template: str | None = None
        self._conn: psycopg.Connection[Any] | None = None

    def _admin(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(
                self.admin_dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT
            )
        return self._conn

    def dsn_for(self, dbname: str) -> str:
        """The admin DSN pointed at another database."""
        return make_conninfo(self.admin_dsn, dbname=dbname)

    def create_template(self) -> str:
        """Create this process's template database and return its name."""
        name = random_name(TEMPLATE_PREFIX)
        self._admin().execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
        )
        self.template = name
        return name

    def create_database(self) -> str:
        """Create a fresh copy of the template and return its name."""
        if self.template is None:
            raise RuntimeError("create_template() first")
        name = random_name(DATABASE_PREFIX)
        self._admin().execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(self.template)
            )
        )
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still connected to it."""
        self._admin().execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def exists(self, name: str) -> bool:
        row = self._admin().execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        return row.fetchone() is not None

    def close(self) -> None:
        """Drop the template and close the maintenance connection."""
        try:
            if self.template is not None:
                self.drop_database(self.template)
                self.template = None
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# --- one discovery per process ----------------------------------------------------------------

_discovery: Discovery | None = None


def discover_once() -> Discovery:
    """Discover on first call, then return the same answer for the rest of the process."""
    global _discovery
    if _discovery is None:
        _discovery = discover()
    return _discovery


def share_with_workers(found: Discovery) -> None:
    """Let pytest-xdist workers (started after this) use the server this process found."""
    if found.server is not None:
        os.environ[ENV_SHARED_DSN] = found.server.admin_dsn
        os.environ[ENV_SHARED_DESCRIPTION] = found.server.description


def shutdown() -> None:
    """Stop whatever server this process started."""
    if _discovery is not None and _discovery.server is not None:
        _discovery.server.close()


def drop_leftovers(admin_dsn: str) -> list[str]:
    """Drop test databases that a killed run left behind; returns their names.

    Only for use by hand when no other test run is going on against the same server: a
    running session's template looks exactly like a leftover.
    """
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s OR datname LIKE %s",
                [TEMPLATE_PREFIX + "%", DATABASE_PREFIX + "%"],
            )
        ]
        for name in names:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    return names


if __name__ == "__main__":
    # python -m tests._pg            which server would the tests use?
    # python -m tests._pg --drop-leftovers   drop cowsync_t_*/cowsync_tpl_* databases there
    import sys

    found = discover()
    print("\n".join(found.header_lines()))
    try:
        if found.server is not None and "--drop-leftovers" in sys.argv[1:]:
            dropped = drop_leftovers(found.server.admin_dsn)
            print(f"dropped {len(dropped)} database(s): {' '.join(dropped) or '-'}")
    finally:
        if found.server is not None:
            found.server.close()
    sys.exit(0 if found.server is not None else 1)
