"""Access to the .sql files the engine installs (cowsync/sql/)."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from psycopg import sql

_MIGRATION = re.compile(r"^v(\d{3})_[a-z0-9_]+\.sql$")


@cache
def read(name: str) -> str:
    """The text of ``cowsync/sql/<name>``."""
    return resources.files("cowsync").joinpath("sql").joinpath(name).read_text(encoding="utf-8")


def template(name: str) -> sql.SQL:
    """A per-table template, ready for :meth:`psycopg.sql.SQL.format`.

    The leading comment block is dropped: it documents the file, and its prose may
    contain braces that ``format`` would read as placeholders.
    """
    lines = read(name).splitlines()
    while lines and (lines[0].startswith("--") or not lines[0].strip()):
        lines.pop(0)
    return sql.SQL("\n".join(lines))


def migrations() -> list[tuple[int, str]]:
    """``(version, file name)`` of every registry migration, in order."""
    names = [p.name for p in resources.files("cowsync").joinpath("sql").iterdir()]
    found = []
    for name in names:
        m = _MIGRATION.match(name)
        if m:
            found.append((int(m.group(1)), name))
    return sorted(found)
