"""CPU time of a PostgreSQL backend, read from /proc on the same machine.

On a shared machine wall-clock time moves with everybody else's load, while
the CPU time the server spent on a statement barely does. When the server runs
on this host (and we may read its /proc entries), benchmarks report both.
/proc/<pid>/schedstat gives the task's time on CPU in nanoseconds, updated
when the backend goes idle, so reading it before and after a statement brackets
exactly that statement's work.
"""

from __future__ import annotations

from pathlib import Path


class BackendCpu:
    """Reads one backend's CPU time; ``available`` is False for a remote server."""

    def __init__(self, pid: int) -> None:
        self._path = Path(f"/proc/{pid}/schedstat")
        try:
            # The same pid on another host (or namespace) is somebody else.
            is_postgres = b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            is_postgres = False
        self.available = is_postgres and self._read() is not None

    def _read(self) -> int | None:
        try:
            return int(self._path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def now(self) -> int:
        """Nanoseconds on CPU so far (0 when unavailable)."""
        return (self._read() or 0) if self.available else 0
