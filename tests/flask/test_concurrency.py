"""200 requests from 8 threads, alternating between four sessions and none, through fewer
pooled connections than threads: no request ever reads another session's data or variables."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import text

from cowsync.integrations.flask import CowSync
from tests.flask.conftest import (
    PROBE,
    SHARED_SESSIONS,
    add_probe_routes,
    base_config,
    sqlalchemy_url,
)

REQUESTS = 200
THREADS = 8
# Four sessions, then a request with no session (production) in every fifth slot.
ROTATION = (*SHARED_SESSIONS, None)


def sa_probe(db):
    row = db.session.execute(text(PROBE)).one()
    return {"session": row[0], "operation": row[1], "secrets": list(row[4]), "pid": row[3]}


@pytest.fixture(params=["cow.connection", "flask-sqlalchemy"])
def app(request, dsn):
    app = Flask(f"concurrency_{request.param.replace('.', '_').replace('-', '_')}")
    app.config.update(base_config(dsn, COWSYNC_POOL_MIN_SIZE=2, COWSYNC_POOL_MAX_SIZE=4))
    cow = None
    if request.param == "cow.connection":
        cow = CowSync(app)
        add_probe_routes(app, cow)
    else:
        app.config["SQLALCHEMY_DATABASE_URI"] = sqlalchemy_url(dsn)
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            "pool_size": 4,
            "max_overflow": 0,
            "pool_timeout": 10,
        }
        db = SQLAlchemy(app)
        cow = CowSync(app)  # finds Flask-SQLAlchemy and binds its engine

        @app.get("/probe")
        def probe_view():
            return sa_probe(db)

    try:
        yield app
    finally:
        cow.close(app)
        if request.param != "cow.connection":
            with app.app_context():
                db.engine.dispose()


def test_alternating_requests_in_threads_never_cross_sessions(app):
    def one_request(i):
        session_id = ROTATION[i % len(ROTATION)]
        headers = {}
        if session_id is not None:
            headers = {"X-Cow-Session-Id": session_id, "X-Cow-Operation-Id": f"op-{i}"}
        response = app.test_client().get("/probe", headers=headers)
        return i, session_id, response.status_code, response.get_json()

    with ThreadPoolExecutor(THREADS) as executor:
        results = list(executor.map(one_request, range(REQUESTS)))

    wrong = []
    for i, session_id, status, body in results:
        expected = (
            ("", "", [])
            if session_id is None
            else (session_id, f"op-{i}", [f"secret-{session_id}"])
        )
        if status != 200 or (body["session"], body["operation"], body["secrets"]) != expected:
            wrong.append((i, session_id, status, body))
    assert wrong == []
    # The requests really shared connections: fewer backends than requests.
    assert len({body["pid"] for *_, body in results}) <= 4
