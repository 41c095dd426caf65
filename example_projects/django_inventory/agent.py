"""A scripted agent (no LLM): five tool calls against the inventory API, in one session.

    python agent.py --url http://127.0.0.1:8000 --session agent-run-1

Every call sends ``X-Cow-Session-Id`` (the sandbox) and ``X-Cow-Operation-Id`` (one
reviewable step per tool call). Two calls are good, two are refused by the database's
rules inside the session, and one is accepted but wrong: a reviewer keeps the first two
and discards the last with ``manage.py cowsync``.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SESSION_HEADER = "X-Cow-Session-Id"
OPERATION_HEADER = "X-Cow-Operation-Id"

# transport(method, path, body, headers) -> (status, json body)
Transport = Callable[[str, str, "dict[str, Any] | None", "dict[str, str]"], "tuple[int, Any]"]


@dataclass(frozen=True)
class ToolCall:
    operation: str
    intent: str
    method: str
    path: str
    body: dict[str, Any] | None = None


SCRIPT = [
    ToolCall(
        "1-restock-low-stock",
        "three stock levels are below their reorder level",
        "POST",
        "/api/stock/restock-low/",
    ),
    ToolCall(
        "2-ship-order-1001",
        "Ada's six lamps can ship now that North has lamps",
        "POST",
        "/api/orders/1001/ship/",
    ),
    ToolCall(
        "3-discontinue-desk", "standing desks sell slowly", "POST", "/api/products/DESK-04/delete/"
    ),
    ToolCall(
        "4-stocktake-mugs",
        "the shelf count says 50 fewer mugs in North",
        "POST",
        "/api/stock/adjust/",
        {"sku": "MUG-11", "warehouse": "NORTH", "delta": -50},
    ),
    ToolCall(
        "5-reprice-chair",
        "match the competitor's chair price",
        "POST",
        "/api/products/CHAIR-01/price/",
        {"price": "1.49"},
    ),
]


def http_transport(base_url: str) -> Transport:
    """Calls over HTTP with urllib (the API must be running: ``manage.py runserver``)."""

    def call(method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str]):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            base_url.rstrip("/") + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", **headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    return call


def run(
    transport: Transport, session_id: str, echo: Callable[[str], Any] = print
) -> list[tuple[str, int]]:
    """Make the script's calls in ``session_id``; return (operation, status) for each."""
    status, stock = transport("GET", "/api/stock/", None, {SESSION_HEADER: session_id})
    low = [s for s in stock["stock"] if s["low"]] if status == 200 else []
    echo(f"session {session_id}: {len(low)} stock level(s) below their reorder level")
    outcomes = []
    for call in SCRIPT:
        headers = {SESSION_HEADER: session_id, OPERATION_HEADER: call.operation}
        status, body = transport(call.method, call.path, call.body, headers)
        verdict = "done" if status == 200 else "refused" if status == 409 else "error"
        echo(f"[{call.operation}] {call.intent}")
        echo(f"    {call.method} {call.path} -> {status} {verdict}: {json.dumps(body)}")
        outcomes.append((call.operation, status))
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--session", default="agent-run-1", help="session id (agent-...)")
    args = parser.parse_args()
    run(http_transport(args.url), args.session)
    print(f"\nreview it:  python manage.py cowsync diff {args.session}")


if __name__ == "__main__":
    main()
