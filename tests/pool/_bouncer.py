"""A throwaway pgbouncer in transaction pooling mode, for the transaction-local tests.

It listens on a free loopback port, forwards every database name to the test server
(a ``*`` fallback entry, so each test's fresh database works), and keeps ONE server
connection per database (``default_pool_size = 1``): two clients of the same database
then take turns on the same server session, which is exactly where a session-level
setting would leak from one to the other.

pgbouncer refuses to run as root, so when we are root it runs as the ``postgres`` OS
user, in a directory that user owns. The binary is looked up on PATH, then in
/usr/sbin (Debian's ``pgbouncer`` package). Anything that prevents it from running
raises :class:`BouncerUnavailable` with the reason, and the fixture skips on it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

LOCAL_HOST = "127.0.0.1"
START_TIMEOUT = 10.0


class BouncerUnavailable(Exception):
    """pgbouncer cannot run here; the message says why."""


def find_binary() -> str | None:
    """Path of the pgbouncer executable, or None."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    for candidate in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCAL_HOST, 0))
        return int(sock.getsockname()[1])


def _ini_value(value: str) -> str:
    """A value for a libpq-style connect string inside pgbouncer.ini."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Bouncer:
    """One pgbouncer process in front of the server that ``admin_dsn`` points at."""

    def __init__(self, admin_dsn: str) -> None:
        self.binary = find_binary()
        if self.binary is None:
            raise BouncerUnavailable(
                "pgbouncer is not installed (Debian: apt-get install pgbouncer; "
                ".ci/run installs it)"
            )
        self.server = conninfo_to_dict(admin_dsn)
        self.port = 0
        self.directory: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._account = self._run_as()

    @staticmethod
    def _run_as() -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError as exc:
            raise BouncerUnavailable(
                "running as root and there is no 'postgres' OS user to run pgbouncer as "
                "(pgbouncer refuses to run as root)"
            ) from exc

    def dsn_for(self, dsn: str) -> str:
        """``dsn`` (a database on the test server) rerouted through the bouncer."""
        params = conninfo_to_dict(dsn)
        return make_conninfo(
            host=LOCAL_HOST,
            port=self.port,
            dbname=str(params.get("dbname", "postgres")),
            user=str(params.get("user", "postgres")),
            connect_timeout=5,
        )

    def _write_config(self) -> Path:
        assert self.directory is not None
        target = {
            "host": str(self.server.get("host") or LOCAL_HOST),
            "port": str(self.server.get("port") or 5432),
            "user": str(self.server.get("user") or "postgres"),
        }
        if self.server.get("password"):
            target["password"] = str(self.server["password"])
        connect = " ".join(f"{key}={_ini_value(value)}" for key, value in target.items())
        ini = self.directory / "pgbouncer.ini"
        ini.write_text(
            f"""\
[databases]
* = {connect}

[pgbouncer]
listen_addr = {LOCAL_HOST}
listen_port = {self.port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = 1
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 100
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {self.directory / "pgbouncer.log"}
pidfile = {self.directory / "pgbouncer.pid"}
""",
            encoding="utf-8",
        )
        return ini

    def start(self) -> None:
        """Start pgbouncer and wait until it accepts connections."""
        self.directory = Path(tempfile.mkdtemp(prefix="cowsync-bouncer-"))
        if self._account is not None:
            os.chown(self.directory, self._account.pw_uid, self._account.pw_gid)
        last_error = ""
        for _ in range(3):  # another process may take the free port before pgbouncer binds it
            self.port = _free_port()
            ini = self._write_config()
            if self._account is not None:
                os.chown(ini, self._account.pw_uid, self._account.pw_gid)
            # stderr to a file: a pipe nobody reads would stall pgbouncer once full.
            with open(self.directory / "stderr.log", "ab") as stderr:
                self.process = subprocess.Popen(
                    [str(self.binary), str(ini)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    cwd=self.directory,
                    user=self._account.pw_uid if self._account else None,
                    group=self._account.pw_gid if self._account else None,
                )
            if self._wait_listening():
                return
            last_error = self._stop_process()
        self.stop()
        raise BouncerUnavailable(f"pgbouncer did not start: {last_error[-800:]}")

    def _wait_listening(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                socket.create_connection((LOCAL_HOST, self.port), timeout=0.5),
            ):
                return True
            time.sleep(0.05)
        return False

    def _log(self) -> str:
        if self.directory is None:
            return ""
        text = []
        for name in ("stderr.log", "pgbouncer.log"):
            with contextlib.suppress(OSError):
                text.append((self.directory / name).read_text(errors="replace"))
        return " ".join(" ".join(text).split())

    def _stop_process(self) -> str:
        """Stop the process we started (by its own handle); return its output."""
        process, self.process = self.process, None
        if process is None:
            return ""
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        return self._log()

    def stop(self) -> None:
        """Stop pgbouncer and remove its directory; harmless to call twice."""
        self._stop_process()
        directory, self.directory = self.directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
