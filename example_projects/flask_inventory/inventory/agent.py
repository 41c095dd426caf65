"""A scripted inventory agent: the same tool calls every time, no model, no network but the API.

Each tool call is one HTTP request carrying the agent's session (``X-Cow-Session-Id``) and
its own operation (``X-Cow-Operation-Id``), so a reviewer can keep or drop each one.

    python -m inventory.agent --url http://127.0.0.1:5000 --session agent-run-1

Some calls are good, some are refused by the database inside the session, one is a
mistake no constraint catches (a reviewer must); production sees none of it until a
reviewer commits (``flask cowsync commit``).
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# transport(method, path, headers, json_body) -> (status, json_response)
Transport = Callable[[str, str, dict[str, str], Any], tuple[int, Any]]


@dataclass(frozen=True)
class ToolCall:
    """One step of the script: the operation id, the HTTP call, and the agent's reason."""

    operation_id: str
    method: str
    path: str
    body: Any
    reason: str


SCRIPT: tuple[ToolCall, ...] = (
    ToolCall(
        "1-restock-low-stock",
        "POST",
        "/stock/restock-low",
        None,
        "four stock levels are below their reorder level",
    ),
    ToolCall(
        "2-fulfil-order-1001",
        "POST",
        "/orders/1001/fulfil",
        None,
        "Ada's 6 lamps can ship now that North has lamps",
    ),
    ToolCall(
        "3-discontinue-desk",
        "DELETE",
        "/products/DESK-04",
        None,
        "standing desks sell slowly",
    ),
    ToolCall(
        "4-stocktake-mugs",
        "POST",
        "/stock/1/3/adjust",
        {"delta": -45},
        "the stocktake counted 45 fewer mugs at North",
    ),
    ToolCall(
        "5-reprice-chair",
        "PUT",
        "/products/CHAIR-02/price",
        {"price": "1.49"},
        "update the chair's price to 1.49",
    ),
)


@dataclass(frozen=True)
class Outcome:
    """What the API answered to one tool call."""

    call: ToolCall
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        """True when the API accepted the call (2xx)."""
        return 200 <= self.status < 300


def run(
    transport: Transport,
    session_id: str,
    *,
    token: str | None = None,
    say: Callable[[str], None] = print,
) -> list[Outcome]:
    """Look at the stock in the session, then make every tool call of :data:`SCRIPT`."""
    headers = {"X-Cow-Session-Id": session_id}
    if token:
        headers["X-Agent-Token"] = token
    status, body = transport("GET", "/stock", headers, None)
    if status != 200:
        raise RuntimeError(f"cannot read the stock in session {session_id}: {status} {body}")
    low = [level for level in body["stock"] if level["low"]]
    say(f"session {session_id}: {len(low)} stock level(s) below their reorder level")
    outcomes = []
    for call in SCRIPT:
        call_headers = {**headers, "X-Cow-Operation-Id": call.operation_id}
        status, answer = transport(call.method, call.path, call_headers, call.body)
        outcome = Outcome(call, status, answer)
        outcomes.append(outcome)
        verdict = "done" if outcome.ok else "refused"
        say(f"[{call.operation_id}] {call.reason}")
        say(f"    {call.method} {call.path} -> {status} {verdict}: {json.dumps(answer)}")
    return outcomes


def http_transport(base_url: str) -> Transport:
    """A transport that calls a running server (``flask run``) with urllib."""

    def send(method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            base_url.rstrip("/") + path, data=data, method=method, headers=dict(headers)
        )
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as error:
            return error.code, _decode(error.read())

    return send


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace").strip()


def main(argv: list[str] | None = None) -> int:
    """Run the script against a server; print the session id to review."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000", help="the inventory API")
    parser.add_argument("--session", default=None, help="session id (default: a new UUID)")
    parser.add_argument("--token", default=None, help="X-Agent-Token, if the API wants one")
    args = parser.parse_args(argv)
    session_id = args.session or f"agent-run-{uuid.uuid4().hex[:8]}"
    run(http_transport(args.url), session_id, token=args.token)
    print(f"\nreview it: flask --app inventory cowsync diff {session_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
