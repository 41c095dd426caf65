"""CowSessionMiddleware: requests run in the session their headers name, or are refused."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.http import HttpRequest
from django.test import AsyncClient, Client, override_settings

import cowsync
from tests.django._djdb import DjangoDb

SESSION = "X-Cow-Session-Id"
OPERATION = "X-Cow-Operation-Id"


def production_skus(db: DjangoDb) -> list[str]:
    return [r[0] for r in db.production("SELECT sku FROM testapp_product ORDER BY sku")]


def only_alice(request: HttpRequest, session_id: str) -> bool:
    return session_id.startswith("alice-")


def operation_from_path(request: HttpRequest) -> str:
    return "op-" + request.GET["sku"]


def test_without_headers_the_request_uses_production(enabled_db: DjangoDb) -> None:
    response = Client().post("/mark/?sku=prod")
    assert response.status_code == 200
    assert SESSION not in response.headers
    assert production_skus(enabled_db) == ["prod"]


def test_a_session_header_binds_the_request(enabled_db: DjangoDb) -> None:
    client = Client()
    client.post("/mark/?sku=prod")
    response = client.post("/mark/?sku=agent", headers={SESSION: "s1", OPERATION: "step-1"})
    assert response.status_code == 200
    assert response.json()["skus"] == ["agent", "prod"]
    assert response.headers[SESSION] == "s1"
    assert response.headers[OPERATION] == "step-1"
    assert production_skus(enabled_db) == ["prod"]
    seen = client.get("/products/", headers={SESSION: "s1"}).json()
    assert seen == {"skus": ["agent", "prod"], "session": "s1", "operation": None}
    assert client.get("/products/").json()["skus"] == ["prod"]
    assert [o.operation_id for o in cowsync.operations(enabled_db.raw, "s1")] == ["step-1"]


@pytest.mark.parametrize(
    ("headers", "bad_header"),
    [
        ({SESSION: "no spaces allowed"}, SESSION),
        ({SESSION: "x" * 300}, SESSION),
        ({OPERATION: "op-1"}, OPERATION),
        ({SESSION: "s1", OPERATION: "semi;colon"}, OPERATION),
        ({SESSION: "s1", "X-Cow-Visible-Operations": "a,,b"}, "X-Cow-Visible-Operations"),
    ],
)
def test_a_malformed_header_gets_400_naming_it(
    enabled_db: DjangoDb, headers: dict[str, str], bad_header: str
) -> None:
    response = Client().post("/mark/?sku=never", headers=headers)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_cow_header"
    assert body["header"] == bad_header
    assert body["detail"].startswith(bad_header)
    assert enabled_db.production("SELECT count(*) FROM testapp_product_changes") == [(0,)]
    assert production_skus(enabled_db) == []


@override_settings(COWSYNC={"AUTHORIZE": "tests.django.test_middleware.only_alice"})
def test_authorize_refuses_a_session_with_403(enabled_db: DjangoDb) -> None:
    client = Client()
    refused = client.post("/mark/?sku=mallory", headers={SESSION: "bob-1"})
    assert refused.status_code == 403
    assert refused.json() == {
        "error": "cow_session_forbidden",
        "session_id": "bob-1",
        "detail": "session 'bob-1' is not available to this request",
    }
    allowed = client.post("/mark/?sku=alice", headers={SESSION: "alice-1"})
    assert allowed.status_code == 200
    assert [s.session_id for s in cowsync.sessions(enabled_db.raw)] == ["alice-1"]


@override_settings(COWSYNC={"OPERATION_PER_REQUEST": True})
def test_each_request_without_an_operation_becomes_one(enabled_db: DjangoDb) -> None:
    client = Client()
    first = client.post("/mark/?sku=a", headers={SESSION: "s1"})
    second = client.post("/mark/?sku=b", headers={SESSION: "s1"})
    named = client.post("/mark/?sku=c", headers={SESSION: "s1", OPERATION: "mine"})
    generated = [first.headers[OPERATION], second.headers[OPERATION]]
    assert all(op.startswith("req-") for op in generated)
    assert generated[0] != generated[1]
    assert named.headers[OPERATION] == "mine"
    operations = [o.operation_id for o in cowsync.operations(enabled_db.raw, "s1")]
    assert operations == [*generated, "mine"]


@override_settings(
    COWSYNC={"OPERATION_PER_REQUEST": "tests.django.test_middleware.operation_from_path"}
)
def test_operation_ids_can_come_from_a_callable(enabled_db: DjangoDb) -> None:
    response = Client().post("/mark/?sku=lamp", headers={SESSION: "s1"})
    assert response.headers[OPERATION] == "op-lamp"


@override_settings(COWSYNC={"SESSION_HEADER": "X-Agent-Run", "OPERATION_HEADER": "X-Tool-Call"})
def test_header_names_come_from_settings(enabled_db: DjangoDb) -> None:
    response = Client().post("/mark/?sku=a", headers={"X-Agent-Run": "run-7", "X-Tool-Call": "t1"})
    assert response.headers["X-Agent-Run"] == "run-7"
    assert [o.operation_id for o in cowsync.operations(enabled_db.raw, "run-7")] == ["t1"]
    assert production_skus(enabled_db) == []


def test_a_streamed_body_is_read_in_the_session(enabled_db: DjangoDb) -> None:
    client = Client()
    client.post("/mark/?sku=agent", headers={SESSION: "s1"})
    streamed = client.get("/stream/", headers={SESSION: "s1"})
    assert json.loads(b"".join(streamed.streaming_content)) == ["agent"]
    plain = client.get("/stream/")
    assert json.loads(b"".join(plain.streaming_content)) == []


def test_a_preview_header_shows_chosen_operations(enabled_db: DjangoDb) -> None:
    client = Client()
    client.post("/mark/?sku=one", headers={SESSION: "s1", OPERATION: "first"})
    client.post("/mark/?sku=two", headers={SESSION: "s1", OPERATION: "second"})
    preview = client.get("/products/", headers={SESSION: "s1", "X-Cow-Visible-Operations": "first"})
    assert preview.json()["skus"] == ["one"]


def run_async(calls: Any) -> Any:
    """Run ``calls()`` in an event loop, then close the connections of asgiref's sync thread
    (it outlives the test, and the next test's database is another one)."""

    async def then_close() -> Any:
        try:
            return await calls()
        finally:
            await sync_to_async(connections.close_all)()

    return asyncio.run(then_close())


def test_the_async_stack_binds_the_request(enabled_db: DjangoDb) -> None:
    async def calls() -> list[Any]:
        client = AsyncClient()
        written = await client.post("/mark/?sku=agent", headers={SESSION: "s1"})
        seen = await client.get("/products/", headers={SESSION: "s1"})
        return [written.status_code, seen.json()["skus"]]

    assert run_async(calls) == [200, ["agent"]]
    assert production_skus(enabled_db) == []


def test_an_async_streamed_body_is_read_in_the_session(enabled_db: DjangoDb) -> None:
    Client().post("/mark/?sku=agent", headers={SESSION: "s1"})

    def read(headers: dict[str, str]) -> Any:
        async def call() -> Any:
            response = await AsyncClient().get("/astream/", headers=headers)
            return json.loads(b"".join([chunk async for chunk in response.streaming_content]))

        return run_async(call)

    assert read({SESSION: "s1"}) == ["agent"]
    assert read({}) == []
