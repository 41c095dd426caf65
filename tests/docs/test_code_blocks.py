"""Every ```python block of README.md and docs/*.md runs as written.

Convention, on the line right before a block's opening fence:

- ``<!-- fragment -->``: the block is an excerpt that relies on names from its context
  (``conn``, ``app``, a Django project...); it is only compiled.
- ``<!-- check: NAME -->``: the block is executed, then :data:`CHECKS` ``[NAME]`` exercises
  what it defined (e.g. sends requests to the Flask app it builds).
- nothing: the block is executed as it stands.

Executed blocks run against a fresh test database holding a table ``items`` (id, name, qty,
price, updated_at) with 5 rows, not COW-enabled; every string literal that is a
``postgresql://`` (or ``postgresql+psycopg://``) URL is replaced by that database's URL.
Blocks that are not Python at all use another fence (```text).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

import cowsync
from cowsync.pool import CowPool
from tests._tables import create_table

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```python[ \t]*$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>fragment|check:\s*(?P<check>[\w-]+))\s*-->\s*$")
_URL_LITERAL = re.compile(r"""(?P<q>["'])postgres(?:ql)?(?P<driver>\+\w+)?://[^"']*(?P=q)""")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    code: str
    fragment: bool
    check: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        indent = fence.group("indent")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        assert j < len(lines), f"{path.name}:{i + 1}: unclosed ```python block"
        marker = _MARKER.match(lines[i - 1]) if i > 0 else None
        blocks.append(
            Block(
                path=path,
                line=i + 1,
                code=textwrap.dedent("\n".join(body)) + "\n",
                fragment=bool(marker and marker.group("kind") == "fragment"),
                check=marker.group("check") if marker else None,
            )
        )
        i = j + 1
    return blocks


ALL_BLOCKS = [block for path in DOCUMENTS for block in python_blocks(path)]


def url_of(dsn: str, driver: str = "") -> str:
    """The libpq DSN as a ``postgresql[+driver]://`` URL."""
    p = conninfo_to_dict(dsn)
    auth = quote(p.get("user", ""), safe="")
    if p.get("password"):
        auth += ":" + quote(p["password"], safe="")
    host = p.get("host", "")
    netloc = f"{auth}@" if auth else ""
    if host and not host.startswith("/"):
        netloc += host + (f":{p['port']}" if p.get("port") else "")
    url = f"postgresql{driver}://{netloc}/{quote(p.get('dbname', ''), safe='')}"
    query = []
    if host.startswith("/"):
        query.append(f"host={quote(host, safe='')}")
        if p.get("port"):
            query.append(f"port={p['port']}")
    return url + ("?" + "&".join(query) if query else "")


def with_test_database(code: str, dsn: str) -> str:
    def replace(match: re.Match[str]) -> str:
        return repr(url_of(dsn, match.group("driver") or ""))

    return _URL_LITERAL.sub(replace, code)


# --- checks: what an executed block's names must do -------------------------------------


def check_flask_quickstart(namespace: dict[str, Any], conn: psycopg.Connection[Any]) -> None:
    cowsync.deploy(conn)
    cowsync.enable(conn, "items")
    qty = conn.execute("SELECT qty FROM items WHERE id = 1").fetchone()[0]  # type: ignore[index]
    app = namespace["create_app"]()
    try:
        client = app.test_client()
        agent = {"X-Cow-Session-Id": "agent-run-42", "Authorization": "Bearer token-of-agent-1"}
        assert client.post("/items/1/restock", headers=agent).status_code == 204
        # Production does not see the session's write; the session does.
        assert conn.execute("SELECT qty FROM items WHERE id = 1").fetchone() == (qty,)
        with cowsync.session(conn, "agent-run-42"):
            assert conn.execute("SELECT qty FROM items WHERE id = 1").fetchone() == (qty + 10,)
        # A session the token does not own: 403, the view never runs.
        other = {**agent, "X-Cow-Session-Id": "agent-run-7"}
        assert client.post("/items/1/restock", headers=other).status_code == 403
        # No session header: production.
        assert client.post("/items/2/restock").status_code == 204
        row = conn.execute("SELECT qty FROM items_base WHERE id = 1").fetchone()
        assert row == (qty,)
    finally:
        namespace["cow"].close(app)


CHECKS: dict[str, Callable[[dict[str, Any], psycopg.Connection[Any]], None]] = {
    "flask-quickstart": check_flask_quickstart,
}


# --- the tests ----------------------------------------------------------------------------


def test_the_documents_have_python_blocks() -> None:
    assert len(ALL_BLOCKS) >= 10
    unknown = [b.id for b in ALL_BLOCKS if b.check is not None and b.check not in CHECKS]
    assert not unknown, f"blocks naming a check this test does not have: {unknown}"


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=lambda b: b.id)
def test_block_compiles(block: Block) -> None:
    compile(block.code, block.id, "exec")


@pytest.fixture
def shop(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    create_table(conn, name="items", shape="items", rows=5)
    yield conn


RUNNABLE = [b for b in ALL_BLOCKS if not b.fragment]


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.id)
def test_block_runs(block: Block, dsn: str, shop: psycopg.Connection[Any]) -> None:
    namespace: dict[str, Any] = {"__name__": f"doc_block_{block.line}"}
    code = compile(with_test_database(block.code, dsn), block.id, "exec")
    try:
        exec(code, namespace)
        if block.check is not None:
            CHECKS[block.check](namespace, shop)
    finally:
        for value in namespace.values():
            if isinstance(value, (psycopg.Connection, CowPool)):
                value.close()


def test_readme_quickstart_and_flask_quickstart_are_executed() -> None:
    runnable = {b.id for b in RUNNABLE}
    readme = [b for b in RUNNABLE if b.path.name == "README.md"]
    assert readme and "Quickstart" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert any(b.check == "flask-quickstart" for b in RUNNABLE), runnable
