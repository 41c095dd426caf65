"""Shared pieces of the benchmark reports: size arguments, statistics, the
machine note and Markdown tables (so the output pastes into docs/benchmarks.md)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from typing import Any

import psycopg

_SUFFIXES = {"k": 1_000, "m": 1_000_000}


def parse_count(text: str) -> int:
    """``"10k"`` -> 10000, ``"1M"`` -> 1000000, ``"2500"`` -> 2500."""
    text = text.strip().lower().replace("_", "")
    factor = _SUFFIXES.get(text[-1:], 1)
    digits = text[:-1] if factor != 1 else text
    value = int(float(digits) * factor)
    if value < 0:
        raise ValueError(f"negative count {text!r}")
    return value


def parse_counts(text: str) -> list[int]:
    """A comma-separated list of counts: ``"10k,100k"``."""
    return [parse_count(part) for part in text.split(",") if part.strip()]


def human_count(value: int) -> str:
    """10000 -> ``"10k"``, 1000000 -> ``"1M"``."""
    if value >= 1_000_000 and value % 1_000_000 == 0:
        return f"{value // 1_000_000}M"
    if value >= 1_000 and value % 1_000 == 0:
        return f"{value // 1_000}k"
    return str(value)


def median(samples: Sequence[float]) -> float:
    """Median of a non-empty sample."""
    return statistics.median(samples)


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) of a non-empty sample."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


def ratio(value: float | None, reference: float | None) -> str:
    """``value / reference`` as ``"1.23x"``, or ``"—"`` when either is missing."""
    if value is None or reference is None or reference <= 0:
        return "—"
    r = value / reference
    if r >= 100:
        return f"{r:,.0f}x"
    if r >= 10:
        return f"{r:.1f}x"
    if r < 0.01:
        return f"{r:.4f}x"
    return f"{r:.2f}x"


def ms(seconds: float | None) -> str:
    """Seconds as milliseconds with 3 significant-ish digits; ``"—"`` if missing."""
    if seconds is None:
        return "—"
    value = seconds * 1000
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    lines.extend("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)
    return "\n".join(lines)


def machine_note(conn: psycopg.Connection[Any]) -> str:
    """One paragraph on where the numbers came from: server, JIT, cores, client."""
    settings = dict(
        conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ("
            "'jit', 'jit_above_cost', 'shared_buffers', 'work_mem', 'synchronous_commit',"
            "'server_version')"
        ).fetchall()
    )
    buffers_mb = int(settings.get("shared_buffers", "0")) * 8 // 1024
    load = os.getloadavg()
    return (
        f"PostgreSQL {settings.get('server_version')}, server default jit={settings.get('jit')} "
        f"(jit_above_cost={settings.get('jit_above_cost')}), shared_buffers={buffers_mb}MB, "
        f"work_mem={int(settings.get('work_mem', '0')) // 1024}MB, "
        f"synchronous_commit={settings.get('synchronous_commit')}; "
        f"{os.cpu_count()} cores, load average {load[0]:.2f} at start; "
        f"Python {platform.python_version()}, psycopg {psycopg.__version__}"
    )


def code_note() -> str:
    """Which cowsync was measured: the git commit, and whether cowsync/ had local edits."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--", "cowsync"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "cowsync from an unknown revision"
    return f"cowsync at {head}" + (" with uncommitted changes in cowsync/" if dirty else "")
