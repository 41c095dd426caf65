"""Request headers: what binds a request, what is refused (400, 403) before the view runs."""

from __future__ import annotations

import pytest
from flask import Flask, jsonify

import cowsync
from cowsync.integrations.flask import CowHeaderError, CowSessionForbidden, CowSync
from tests.flask.conftest import add_probe_routes, base_config

# Who asked authorize what, and what binding it ran under.
_authorize_calls: list[tuple[str, str, object]] = []


def _authorize(request, session_id):
    _authorize_calls.append((request.path, session_id, cowsync.current_binding()))
    return not session_id.startswith("forbidden")


@pytest.fixture(scope="module")
def app(dsn):
    app = Flask("headers")
    app.config.update(base_config(dsn, COWSYNC_AUTHORIZE=_authorize))
    cow = CowSync(app)
    add_probe_routes(app, cow)

    @app.get("/view-runs")
    def view_runs():
        raise AssertionError("the view must not run")

    try:
        yield app
    finally:
        cow.close(app)


@pytest.fixture
def client(app):
    _authorize_calls.clear()
    return app.test_client()


def test_no_header_runs_unbound_and_skips_authorize(client):
    body = client.get("/probe").get_json()
    assert (body["session"], body["bound"], body["secrets"]) == ("", None, [])
    assert _authorize_calls == []


def test_session_and_operation_headers_bind_the_request(client):
    body = client.get(
        "/probe", headers={"X-Cow-Session-Id": "s2", "X-Cow-Operation-Id": "tool-7"}
    ).get_json()
    assert (body["session"], body["operation"]) == ("s2", "tool-7")
    assert body["secrets"] == ["secret-s2"]


def test_authorize_gets_the_flask_request_and_runs_unbound(client):
    client.get("/probe", headers={"X-Cow-Session-Id": "s3"})
    assert _authorize_calls == [("/probe", "s3", None)]


def test_refused_session_answers_403_and_the_view_never_runs(client):
    response = client.get("/view-runs", headers={"X-Cow-Session-Id": "forbidden-1"})
    assert response.status_code == 403
    assert response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == (
        "session 'forbidden-1' is not available to this request\n"
    )


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"X-Cow-Session-Id": "s1; DROP TABLE items"}, "X-Cow-Session-Id"),
        ({"X-Cow-Session-Id": "x" * 201}, "X-Cow-Session-Id"),
        ({"X-Cow-Session-Id": "s1", "X-Cow-Operation-Id": "a,b"}, "X-Cow-Operation-Id"),
        ({"X-Cow-Operation-Id": "tool-1"}, "X-Cow-Operation-Id"),
        ({"X-Cow-Visible-Operations": "a"}, "X-Cow-Visible-Operations"),
        (
            {"X-Cow-Session-Id": "s1", "X-Cow-Visible-Operations": "a,,b"},
            "X-Cow-Visible-Operations",
        ),
    ],
)
def test_malformed_header_answers_400_naming_it(client, headers, named):
    response = client.get("/view-runs", headers=headers)
    assert response.status_code == 400
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert text.startswith(f"{named}: ") and text.endswith("\n")
    assert _authorize_calls == []  # refused before anyone looks at the session


def test_empty_header_counts_as_absent(client):
    body = client.get("/probe", headers={"X-Cow-Session-Id": "  "}).get_json()
    assert body["bound"] is None and body["secrets"] == []


def test_visible_operations_header_previews_those_operations(make_app, cow_items, conn):
    cow_items("p1", "op-a", name="secret-a")
    cow_items("p1", "op-b", name="secret-b")
    app, _ = make_app()
    body = (
        app.test_client()
        .get("/probe", headers={"X-Cow-Session-Id": "p1", "X-Cow-Visible-Operations": "op-a"})
        .get_json()
    )
    assert body["secrets"] == ["secret-a"]


def test_custom_header_names(dsn, make_app):
    app, _ = make_app(
        database=dsn,
        COWSYNC_SESSION_HEADER="X-Agent-Run",
        COWSYNC_OPERATION_HEADER="X-Tool-Call",
    )
    client = app.test_client()
    body = client.get("/probe", headers={"X-Agent-Run": "s4", "X-Tool-Call": "t1"}).get_json()
    assert (body["session"], body["operation"], body["secrets"]) == ("s4", "t1", ["secret-s4"])
    # The default names mean nothing to this app.
    assert client.get("/probe", headers={"X-Cow-Session-Id": "s4"}).get_json()["secrets"] == []


def test_apps_render_the_errors_themselves_if_they_want(dsn, make_app):
    app, _ = make_app(database=dsn, COWSYNC_AUTHORIZE=lambda request, sid: False)

    @app.errorhandler(CowHeaderError)
    def bad_header(error):
        return jsonify(error="bad_header", header=error.header), 400

    @app.errorhandler(CowSessionForbidden)
    def forbidden(error):
        return jsonify(error="forbidden", session=error.session_id), 403

    client = app.test_client()
    bad = client.get("/probe", headers={"X-Cow-Session-Id": "no spaces"})
    assert (bad.status_code, bad.get_json()) == (
        400,
        {"error": "bad_header", "header": "X-Cow-Session-Id"},
    )
    refused = client.get("/probe", headers={"X-Cow-Session-Id": "s1"})
    assert (refused.status_code, refused.get_json()) == (
        403,
        {"error": "forbidden", "session": "s1"},
    )


def test_cowsync_binds_before_the_apps_own_before_request_hooks(dsn, make_app):
    app, _ = make_app(database=dsn)
    seen = []
    app.before_request(lambda: seen.append(cowsync.current_binding()))
    app.test_client().get("/probe", headers={"X-Cow-Session-Id": "s1"})
    assert seen and seen[0].session_id == "s1"


# -- operation per request ------------------------------------------------------------------


def test_operation_per_request_gives_each_request_its_own_operation(make_app, cow_items, conn):
    cow_items("opr")
    app, _ = make_app(COWSYNC_OPERATION_PER_REQUEST=True)
    client = app.test_client()
    first = client.post("/items?name=one", headers={"X-Cow-Session-Id": "opr"})
    second = client.post("/items?name=two", headers={"X-Cow-Session-Id": "opr"})
    announced = [first.headers["X-Cow-Operation-Id"], second.headers["X-Cow-Operation-Id"]]
    assert announced[0] != announced[1]
    assert all(op.startswith("req-") for op in announced)
    operations = [op.operation_id for op in cowsync.operations(conn, "opr")]
    assert operations[-2:] == announced
    changes = cowsync.diff(conn, "opr", operations=[announced[1]])
    assert [change.after["name"] for change in changes] == ["two"]


def test_operation_header_wins_over_operation_per_request(dsn, make_app):
    app, _ = make_app(database=dsn, COWSYNC_OPERATION_PER_REQUEST=True)
    response = app.test_client().get(
        "/probe", headers={"X-Cow-Session-Id": "s1", "X-Cow-Operation-Id": "mine"}
    )
    assert response.get_json()["operation"] == "mine"
    assert "X-Cow-Operation-Id" not in response.headers


def test_operation_per_request_with_a_factory(dsn, make_app):
    app, _ = make_app(
        database=dsn,
        COWSYNC_OPERATION_PER_REQUEST=lambda request: f"call-{request.path.strip('/')}",
    )
    response = app.test_client().get("/probe", headers={"X-Cow-Session-Id": "s1"})
    assert response.get_json()["operation"] == "call-probe"
    assert response.headers["X-Cow-Operation-Id"] == "call-probe"


def test_unbound_requests_get_no_operation(dsn, make_app):
    app, _ = make_app(database=dsn, COWSYNC_OPERATION_PER_REQUEST=True)
    response = app.test_client().get("/probe")
    assert response.get_json()["operation"] == ""
    assert "X-Cow-Operation-Id" not in response.headers
