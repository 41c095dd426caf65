"""The extension's life cycle: registration, configuration, several apps, per-request
connections returned at teardown (also when the view raised), and cow.session()."""

from __future__ import annotations

import psycopg
import pytest
from flask import Flask

import cowsync
from cowsync.integrations.flask import CowSync
from cowsync.integrations.flask.extension import AppState
from cowsync.pool import CowPool
from tests.flask.conftest import ViewRan, base_config, production_names, wait_returned

UNBOUND = {"session": "", "operation": "", "visible": "", "secrets": []}


def seen(response):
    """The probe's view without the pid (which connection served it does not matter here)."""
    body = dict(response.get_json())
    body.pop("pid")
    return body


# -- registration and configuration --------------------------------------------------------


def test_factory_pattern_stores_state_in_app_extensions(dsn):
    cow = CowSync()
    app = Flask("factory")
    app.config.update(base_config(dsn))
    cow.init_app(app)
    state = app.extensions["cowsync"]
    assert isinstance(state, AppState)
    assert cow.state(app) is state
    # Defaults are visible in app.config, as setdefault put them there.
    assert app.config["COWSYNC_SESSION_HEADER"] == "X-Cow-Session-Id"
    assert app.config["COWSYNC_OPERATION_PER_REQUEST"] is False
    cow.close(app)


def test_constructor_with_app_registers_at_once(dsn):
    app = Flask("direct")
    app.config.update(base_config(dsn))
    cow = CowSync(app)
    assert cow.state(app).settings.database_url == dsn
    cow.close(app)


def test_registering_twice_raises_a_clear_error(make_app):
    app, cow = make_app()
    with pytest.raises(cowsync.ConfigurationError, match="already registered"):
        cow.init_app(app)
    with pytest.raises(cowsync.ConfigurationError, match="already registered"):
        CowSync(app)


def test_config_set_before_init_app_wins_over_defaults(make_app):
    app, cow = make_app(COWSYNC_SESSION_HEADER="X-Agent-Run", COWSYNC_POOL_MAX_SIZE=3)
    settings = cow.state(app).settings
    assert settings.headers.session == "X-Agent-Run"
    assert settings.pool_max_size == 3


def test_constructor_authorize_is_the_default_of_every_app(make_app):
    def refuse(request, session_id):
        return False

    cow = CowSync(authorize=refuse)
    app_a, _ = make_app(cow=cow)
    app_b, _ = make_app(cow=cow, COWSYNC_AUTHORIZE=None)
    assert cow.state(app_a).settings.authorize is refuse
    assert cow.state(app_b).settings.authorize is None  # the app's own config wins


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("COWSYNC_POOL", "not a pool", "COWSYNC_POOL must be a cowsync.pool.CowPool"),
        ("COWSYNC_POOL_MIN_SIZE", -1, "COWSYNC_POOL_MIN_SIZE must be an integer"),
        ("COWSYNC_POOL_TIMEOUT", 0, "COWSYNC_POOL_TIMEOUT must be a number"),
        ("COWSYNC_AUTHORIZE", "yes", "COWSYNC_AUTHORIZE must be a callable"),
        ("COWSYNC_TRANSACTION_LOCAL", "yes", "COWSYNC_TRANSACTION_LOCAL must be True or False"),
        ("COWSYNC_SESSION_HEADER", "X Bad", "COWSYNC_\\*_HEADER"),
        ("COWSYNC_OPERATION_HEADER", "X-Cow-Session-Id", "distinct"),
        ("COWSYNC_CONFIG", {"session_variable": "a.b"}, "COWSYNC_CONFIG must be"),
    ],
)
def test_bad_config_is_refused_at_init_app_naming_the_key(dsn, key, value, message):
    app = Flask("bad_config")
    app.config.update(base_config(dsn, **{key: value}))
    with pytest.raises(cowsync.ConfigurationError, match=message):
        CowSync(app)
    assert "cowsync" not in app.extensions


def test_app_without_database_says_what_to_set():
    app = Flask("no_database")
    app.config["TESTING"] = True
    cow = CowSync(app)
    with app.app_context(), pytest.raises(cowsync.ConfigurationError, match="COWSYNC_DATABASE_URL"):
        cow.connection()


def test_unregistered_app_is_reported(make_app):
    _, cow = make_app()
    other = Flask("other")
    with other.app_context(), pytest.raises(cowsync.ConfigurationError, match="init_app"):
        cow.connection()


def test_pool_is_opened_on_first_use_only(make_app):
    app, cow = make_app()
    state = cow.state(app)
    assert state._pool is None  # nothing connects while the app is only set up
    app.test_client().get("/probe")
    assert state._pool is not None and not state._pool.closed


def test_two_apps_keep_their_own_config_and_pool(make_app, pg_databases):
    # A second database where items has other rows: app B works there only.
    other_name = pg_databases.create_database()
    try:
        other_dsn = pg_databases.dsn_for(other_name)
        with psycopg.connect(other_dsn, autocommit=True) as other:
            cowsync.deploy(other)
            other.execute("CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL)")
            cowsync.enable(other, "items")
            with cowsync.session(other, "s1"):
                other.execute("INSERT INTO items (name) VALUES ('secret-in-b')")

        cow = CowSync()
        app_a, _ = make_app(cow=cow)
        app_b, _ = make_app(cow=cow, database=other_dsn, COWSYNC_SESSION_HEADER="X-Run")
        assert cow.state(app_a).pool is not cow.state(app_b).pool

        a = app_a.test_client().get("/probe", headers={"X-Cow-Session-Id": "s1"})
        b = app_b.test_client().get("/probe", headers={"X-Run": "s1"})
        assert a.get_json()["secrets"] == ["secret-s1"]
        assert b.get_json()["secrets"] == ["secret-in-b"]
        # Each app reads only its own header name.
        b_default = app_b.test_client().get("/probe", headers={"X-Cow-Session-Id": "s1"})
        assert b_default.get_json()["secrets"] == []
        cow.close(app_b)
    finally:
        pg_databases.drop_database(other_name)


def test_given_pool_is_used_and_not_closed(make_app, dsn):
    pool = CowPool(dsn, min_size=1, open=True)
    try:
        app, cow = make_app(COWSYNC_DATABASE_URL=None, COWSYNC_POOL=pool)
        response = app.test_client().get("/probe", headers={"X-Cow-Session-Id": "s1"})
        assert response.get_json()["secrets"] == ["secret-s1"]
        assert cow.state(app).pool is pool
        cow.close(app)
        assert not pool.closed
    finally:
        pool.close()


def test_given_pool_must_agree_with_transaction_local(dsn):
    pool = CowPool(dsn, min_size=1, open=False)
    app = Flask("disagree")
    app.config.update(base_config(dsn, COWSYNC_POOL=pool, COWSYNC_TRANSACTION_LOCAL=True))
    with pytest.raises(cowsync.ConfigurationError, match="COWSYNC_TRANSACTION_LOCAL"):
        CowSync(app)


# -- the request's connection --------------------------------------------------------------


def test_one_connection_per_request_returned_at_teardown(make_app):
    app, cow = make_app()
    response = app.test_client().get("/probe", headers={"X-Cow-Session-Id": "s1"})
    assert response.status_code == 200
    assert response.get_json()["same_connection"] is True
    stats = wait_returned(app, cow)
    assert stats["requests_num"] == 1  # one checkout for two cow.connection() calls


def test_request_without_headers_reads_production(make_app):
    app, _ = make_app()
    body = seen(app.test_client().get("/probe"))
    assert {k: body[k] for k in UNBOUND} == UNBOUND


def test_binding_ends_with_the_request(make_app):
    app, _ = make_app()
    response = app.test_client().get("/probe", headers={"X-Cow-Session-Id": "s1"})
    assert response.get_json()["bound"] == "s1"
    assert cowsync.current_binding() is None


def test_committed_work_stays_in_the_session(make_app, conn):
    app, _ = make_app()
    client = app.test_client()
    assert client.post("/items?name=kept", headers={"X-Cow-Session-Id": "s1"}).status_code == 201
    assert "kept" not in production_names(conn)
    with cowsync.session(conn, "s1"):
        assert "kept" in production_names(conn)


def test_uncommitted_work_is_rolled_back_at_teardown(make_app, conn):
    app, cow = make_app()
    response = app.test_client().post(
        "/items?name=forgotten&commit=0", headers={"X-Cow-Session-Id": "s1"}
    )
    assert response.status_code == 201
    wait_returned(app, cow)
    with cowsync.session(conn, "s1"):
        assert "forgotten" not in production_names(conn)


def test_view_that_raises_returns_its_connection_unbound(make_app, conn):
    app, cow = make_app()
    client = app.test_client()
    with pytest.raises(ViewRan):
        client.post("/boom?name=half-done", headers={"X-Cow-Session-Id": "s1"})
    wait_returned(app, cow)
    assert cowsync.current_binding() is None
    # The same (only) pooled connection, now unbound, and the half-done insert is gone.
    body = seen(client.get("/probe"))
    assert {k: body[k] for k in UNBOUND} == UNBOUND
    with cowsync.session(conn, "s1"):
        assert "half-done" not in production_names(conn)


def test_view_that_aborts_after_writing_keeps_nothing_uncommitted(make_app, conn):
    app, cow = make_app()
    response = app.test_client().post(
        "/items?name=refused&commit=0&fail=409", headers={"X-Cow-Session-Id": "s1"}
    )
    assert response.status_code == 409
    wait_returned(app, cow)
    with cowsync.session(conn, "s1"):
        assert "refused" not in production_names(conn)


def test_connection_outside_requests_follows_the_context(make_app):
    app, cow = make_app()
    with app.app_context():
        with cowsync.bind("s1"):
            conn = cow.connection()
        assert cow.connection() is conn  # kept for the app context
        assert conn.execute("SELECT count(*) FROM items WHERE name = 'secret-s1'").fetchone()[0]
    stats = wait_returned(app, cow)
    assert stats["pool_available"] == 1
    with app.app_context():
        query = "SELECT count(*) FROM items WHERE name = 'secret-s1'"
        assert cow.connection().execute(query).fetchone()[0] == 0


# -- cow.session() ---------------------------------------------------------------------------


def test_session_block_writes_in_the_session_and_commits(make_app, conn):
    app, cow = make_app()
    with app.app_context(), cow.session("s1", "import-1") as session_conn:
        session_conn.execute("INSERT INTO items (name) VALUES ('imported')")
        assert cow.connection() is session_conn
        assert cowsync.current_binding().session_id == "s1"
    assert cowsync.current_binding() is None
    assert "imported" not in production_names(conn)
    assert [op.operation_id for op in cowsync.operations(conn, "s1")][-1] == "import-1"
    with cowsync.session(conn, "s1"):
        assert "imported" in production_names(conn)


def test_session_block_rolls_back_when_it_raises(make_app, conn):
    app, cow = make_app()
    with pytest.raises(ZeroDivisionError), app.app_context(), cow.session("s1") as session_conn:
        session_conn.execute("INSERT INTO items (name) VALUES ('lost')")
        1 / 0  # noqa: B018
    wait_returned(app, cow)
    with cowsync.session(conn, "s1"):
        assert "lost" not in production_names(conn)


def test_session_block_takes_the_app_explicitly(make_app):
    app, cow = make_app()
    with cow.session("s1", app=app) as session_conn:
        names = [r[0] for r in session_conn.execute("SELECT name FROM items").fetchall()]
    assert "secret-s1" in names


def test_session_id_is_validated(make_app):
    app, cow = make_app()
    with (
        app.app_context(),
        pytest.raises(cowsync.ConfigurationError, match="session id"),
        cow.session("bad id; DROP TABLE items"),
    ):
        pass


def test_transaction_local_mode_binds_requests(make_app):
    app, cow = make_app(COWSYNC_TRANSACTION_LOCAL=True)
    assert cow.state(app).pool.transaction_local
    body = app.test_client().get("/probe", headers={"X-Cow-Session-Id": "s1"}).get_json()
    assert body["secrets"] == ["secret-s1"]
    assert body["session"] == "s1"
