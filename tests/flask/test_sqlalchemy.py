"""SQLAlchemy engines bound through pool events: sessions followed, never leaked.

The engine-level tests use a plain SQLAlchemy engine with one pooled connection, so the next
borrower gets the very connection the previous one returned; the Flask-level tests use
Flask-SQLAlchemy the way an app does.
"""

from __future__ import annotations

import contextlib

import psycopg
import pytest
from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import BigInteger, Text, create_engine, text
from sqlalchemy.orm import Mapped, Session, mapped_column

import cowsync
from cowsync.integrations.flask import CowSync
from cowsync.integrations.flask.sqlalchemy_binding import (
    BindingMismatchError,
    bind_engine,
    engine_binding,
)
from cowsync.pool import TransactionLocalConnection
from tests.flask.conftest import PROBE, base_config, production_names
from tests.pool._wire import traced

UNBOUND = ("", "", [])


def seen(sa_conn):
    """(session, operation, secrets) and the backend pid of a SQLAlchemy connection."""
    row = sa_conn.exec_driver_sql(PROBE).one()
    return (row[0], row[1], list(row[4])), row[3]


def server_side(pid_conn, pid):
    """Whether backend ``pid`` is idle, and its last statement (pg_stat_activity)."""
    row = pid_conn.execute(
        "SELECT state, query FROM pg_stat_activity WHERE pid = %s", [pid]
    ).fetchone()
    return row


@pytest.fixture
def engine(sa_url):
    """A bound engine with one pooled connection; s1 has a secret row."""
    engine = create_engine(sa_url, pool_size=1, max_overflow=0, pool_timeout=5)
    binding = bind_engine(engine)
    try:
        yield engine
    finally:
        binding.remove()
        engine.dispose()


def next_borrower(engine):
    with engine.connect() as sa_conn:
        return seen(sa_conn)


# -- checkout and return -----------------------------------------------------------------------


def test_bound_checkout_follows_the_context_and_unbound_reads_production(engine):
    with cowsync.bind("s1", "op-1"), engine.connect() as sa_conn:
        assert seen(sa_conn)[0] == ("s1", "op-1", ["secret-s1"])
    assert next_borrower(engine)[0] == UNBOUND


def test_borrower_that_raises_returns_the_connection_unbound(engine):
    with pytest.raises(ZeroDivisionError), cowsync.bind("s1"), engine.connect() as sa_conn:
        pid = seen(sa_conn)[1]
        1 / 0  # noqa: B018
    view, next_pid = next_borrower(engine)
    assert (view, next_pid) == (UNBOUND, pid)


def test_borrower_that_leaves_a_failed_transaction(engine):
    with cowsync.bind("s1"), engine.connect() as sa_conn:
        pid = seen(sa_conn)[1]
        with contextlib.suppress(Exception):
            sa_conn.exec_driver_sql("SELECT 1 / 0")
        dbapi = sa_conn.connection.dbapi_connection
        assert dbapi.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
    assert next_borrower(engine) == (UNBOUND, pid)


def test_rollback_inside_a_bound_checkout_keeps_the_binding(engine, conn):
    with cowsync.bind("s1"), Session(engine) as orm:
        orm.execute(text("INSERT INTO items (name) VALUES ('rolled-back')"))
        orm.rollback()
        # A rollback must not undo the binding: the next write still goes to the session.
        orm.execute(text("INSERT INTO items (name) VALUES ('after-rollback')"))
        orm.commit()
    assert "after-rollback" not in production_names(conn)
    with cowsync.session(conn, "s1"):
        names = production_names(conn)
    assert "after-rollback" in names and "rolled-back" not in names


def test_borrowers_own_set_is_cleared_on_return(engine):
    with engine.connect() as sa_conn:
        sa_conn.exec_driver_sql("SELECT set_config('app.session_id', 's1', false)")
        sa_conn.commit()
    assert next_borrower(engine)[0] == UNBOUND


def test_clear_unbound_false_spares_production_the_round_trip(sa_url, conn):
    engine = create_engine(sa_url, pool_size=1, max_overflow=0)
    binding = bind_engine(engine, clear_unbound=False)
    try:
        with engine.connect() as sa_conn:
            pid = sa_conn.exec_driver_sql("SELECT pg_backend_pid() AS production_read").scalar()
        # The connection's last statement is still the borrower's: nothing was sent on return.
        assert "set_config" not in server_side(conn, pid)[1]
        with cowsync.bind("s1"), engine.connect() as sa_conn:
            sa_conn.exec_driver_sql("SELECT 'bound_read'")
        # A bound checkout is always cleared.
        assert "set_config" in server_side(conn, pid)[1]
        assert next_borrower(engine)[0] == UNBOUND
    finally:
        binding.remove()
        engine.dispose()


def test_connection_killed_while_idle_is_replaced_at_checkout(engine, conn):
    pid = next_borrower(engine)[1]
    conn.execute("SELECT pg_terminate_backend(%s)", [pid])
    with cowsync.bind("s1"), engine.connect() as sa_conn:
        view, new_pid = seen(sa_conn)
    assert view == ("s1", "", ["secret-s1"]) and new_pid != pid
    assert next_borrower(engine)[0] == UNBOUND


def test_connection_killed_while_checked_out_is_not_pooled(engine, conn):
    with (
        pytest.raises(Exception, match=r"terminat|closed|lost"),
        cowsync.bind("s1"),
        engine.connect() as sa_conn,
    ):
        pid = seen(sa_conn)[1]
        conn.execute("SELECT pg_terminate_backend(%s)", [pid])
        sa_conn.exec_driver_sql("SELECT 1")
    view, new_pid = next_borrower(engine)
    assert view == UNBOUND and new_pid != pid


def test_statement_under_another_binding_than_its_checkout_is_refused(engine, conn):
    with Session(engine) as orm:
        orm.execute(text("SELECT 1"))  # the transaction begins unbound
        with (
            cowsync.bind("s1"),
            pytest.raises(BindingMismatchError, match=r"no session \(production\)"),
        ):
            orm.execute(text("INSERT INTO items (name) VALUES ('would-be-production')"))
        orm.rollback()
    assert "would-be-production" not in production_names(conn)


def test_preview_binding(engine, cow_items):
    cow_items("p1", "op-a", name="secret-a")
    cow_items("p1", "op-b", name="secret-b")
    with cowsync.bind("p1", visible_operations=["op-a"]), engine.connect() as sa_conn:
        assert seen(sa_conn)[0][2] == ["secret-a"]
    assert next_borrower(engine)[0] == UNBOUND


def test_binding_an_engine_twice(engine):
    assert bind_engine(engine) is engine_binding(engine)
    with pytest.raises(cowsync.ConfigurationError, match="already bound"):
        bind_engine(engine, clear_unbound=False)


def test_only_psycopg_engines_can_be_bound():
    with pytest.raises(cowsync.ConfigurationError, match="postgresql\\+psycopg://"):
        bind_engine(create_engine("sqlite://"))


def test_transaction_local_engine(sa_url):
    engine = create_engine(sa_url, pool_size=1, max_overflow=0)
    with engine.connect() as sa_conn:  # a plain connection made before cowsync binds
        sa_conn.exec_driver_sql("SELECT 1")
    binding = bind_engine(engine, transaction_local=True)
    try:
        with cowsync.bind("s1", "tl-op"), engine.connect() as sa_conn:
            dbapi = sa_conn.connection.dbapi_connection
            assert isinstance(dbapi, TransactionLocalConnection)
            assert seen(sa_conn)[0] == ("s1", "tl-op", ["secret-s1"])
            sa_conn.commit()
            assert seen(sa_conn)[0] == ("s1", "tl-op", ["secret-s1"])  # stated again
        assert next_borrower(engine)[0] == UNBOUND
    finally:
        binding.remove()
        engine.dispose()


# -- Flask-SQLAlchemy --------------------------------------------------------------------------


def make_sa_app(dsn, sa_url, *, cow_first=False, cow_engine=None, **config):
    """An app with Flask-SQLAlchemy (an ``Item`` model on ``items``) and cowsync."""
    app = Flask("sa_app")
    app.config.update(base_config(dsn, **config))
    app.config["SQLALCHEMY_DATABASE_URI"] = sa_url
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_size": 1, "max_overflow": 0}
    db = SQLAlchemy()

    class Item(db.Model):
        __tablename__ = "items"
        id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
        name: Mapped[str] = mapped_column(Text)

    cow = CowSync()
    if cow_first:
        cow.init_app(app)
        db.init_app(app)
    else:
        db.init_app(app)
        cow.init_app(app, engine=cow_engine(db) if cow_engine else None)

    @app.post("/items")
    def add_item():
        db.session.add(Item(name=request.args["name"]))
        if request.args.get("raise"):
            db.session.flush()
            raise RuntimeError("after flush")
        db.session.commit()
        return {"names": [item.name for item in db.session.query(Item).order_by(Item.id)]}

    return app, cow, db, Item


@pytest.fixture
def sa_app(dsn, sa_url, request):
    apps = []

    def make(**kwargs):
        made = make_sa_app(dsn, sa_url, **kwargs)
        apps.append(made)
        return made

    yield make
    for app, cow, db, _ in apps:
        cow.close(app)
        with app.app_context():
            for engine in db.engines.values():
                binding = engine_binding(engine)
                if binding is not None:
                    binding.remove()
                engine.dispose()


@pytest.mark.parametrize(
    "setup",
    [
        {},
        {"cow_first": True},
        {"cow_engine": lambda db: db},
    ],
    ids=["detected", "detected-after-cowsync", "given-instance"],
)
def test_orm_writes_of_a_bound_request_stay_in_the_session(sa_app, conn, setup):
    app, *_ = sa_app(**setup)
    client = app.test_client()
    response = client.post("/items?name=orm-row", headers={"X-Cow-Session-Id": "orm"})
    assert response.status_code == 200
    assert "orm-row" in response.get_json()["names"]
    assert "orm-row" not in production_names(conn)
    # An unbound request right after, on the same pooled connection, reads production.
    unbound = client.post("/items?name=production-row").get_json()["names"]
    assert "orm-row" not in unbound and "production-row" in unbound


def test_given_engine_inside_app_context(dsn, sa_url, conn):
    app = Flask("given_engine")
    app.config.update(base_config(dsn, SQLALCHEMY_DATABASE_URI=sa_url))
    db = SQLAlchemy(app)
    with app.app_context():
        cow = CowSync(app, engine=db.engine)
        assert engine_binding(db.engine) is not None
        engine_binding(db.engine).remove()
        db.engine.dispose()
    cow.close(app)


def test_bind_sqlalchemy_false_leaves_the_engine_alone(sa_app):
    app, _, db, _ = sa_app(COWSYNC_BIND_SQLALCHEMY=False)
    app.test_client().post("/items?name=x")  # a request runs the detection
    with app.app_context():
        assert engine_binding(db.engine) is None


def test_view_that_raises_after_flush_leaks_nothing(sa_app, conn):
    app, *_ = sa_app()
    app.config["TESTING"] = False  # let Flask answer 500 instead of raising in the test
    client = app.test_client()
    response = client.post("/items?name=half&raise=1", headers={"X-Cow-Session-Id": "orm"})
    assert response.status_code == 500
    names = client.post("/items?name=after").get_json()["names"]
    assert "half" not in names
    with cowsync.session(conn, "orm"):
        assert "half" not in production_names(conn)


def test_authorize_may_use_db_session(sa_app, conn):
    calls = []

    def authorize(request, session_id):
        calls.append(db.session.execute(text("SELECT count(*) FROM items")).scalar())
        return True

    app, _, db, _ = sa_app(COWSYNC_AUTHORIZE=authorize)
    response = app.test_client().post("/items?name=authorized", headers={"X-Cow-Session-Id": "a"})
    assert response.status_code == 200 and len(calls) == 1
    assert "authorized" not in production_names(conn)


def test_session_block_refuses_to_end_with_unwritten_orm_changes(sa_app, conn):
    app, cow, db, Item = sa_app()
    with app.app_context():
        with (
            pytest.raises(cowsync.ConfigurationError, match=r"db\.session\.commit"),
            cow.session("job-1"),
        ):
            db.session.add(Item(name="pending"))
        db.session.rollback()
        with cow.session("job-1", "import"):
            db.session.add(Item(name="imported"))
            db.session.commit()
    assert "imported" not in production_names(conn) and "pending" not in production_names(conn)
    with cowsync.session(conn, "job-1"):
        assert "imported" in production_names(conn)


def test_database_url_falls_back_to_the_engine(sa_app, conn):
    app, cow, *_ = sa_app(COWSYNC_DATABASE_URL=None)
    with app.app_context(), cow.session("fallback") as session_conn:
        session_conn.execute("INSERT INTO items (name) VALUES ('via-engine-url')")
    with cowsync.session(conn, "fallback"):
        assert "via-engine-url" in production_names(conn)


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clear_unbound", "bound", "extra_requests"),
    [
        (True, False, 1),  # the clear at return
        (False, False, 0),  # production pays nothing
        (True, True, 2),  # set at checkout, clear at return
        (False, True, 2),
    ],
)
def test_round_trips_cowsync_adds_to_a_checkout(sa_url, clear_unbound, bound, extra_requests):
    def requests_of_one_checkout(engine):
        with engine.connect() as sa_conn:  # warm up: the pool's one connection, known state
            dbapi = sa_conn.connection.dbapi_connection
            sa_conn.exec_driver_sql("SELECT 1")
        scope = cowsync.bind("s1") if bound else contextlib.nullcontext()
        with traced(dbapi) as wire, scope, engine.connect() as sa_conn:
            assert sa_conn.connection.dbapi_connection is dbapi
            sa_conn.exec_driver_sql("SELECT name FROM items WHERE id = 1").all()
        return wire

    plain = create_engine(sa_url, pool_size=1, max_overflow=0)
    cowed = create_engine(sa_url, pool_size=1, max_overflow=0)
    binding = bind_engine(cowed, clear_unbound=clear_unbound)
    try:
        baseline = requests_of_one_checkout(plain)
        wire = requests_of_one_checkout(cowed)
        assert wire.requests - baseline.requests == extra_requests
        assert sum("set_config" in q for q in wire.queries) == extra_requests
    finally:
        binding.remove()
        plain.dispose()
        cowed.dispose()


def test_transaction_local_needs_the_engine_to_connect_itself(sa_url, dsn):
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(dsn),
        pool_size=1,
        max_overflow=0,
    )
    binding = bind_engine(engine, transaction_local=True)
    try:
        with pytest.raises(cowsync.ConfigurationError, match="creator="), engine.connect():
            pass
    finally:
        binding.remove()
        engine.dispose()


def test_cli_finds_flask_sqlalchemy_registered_after_cowsync(sa_app):
    app, *_ = sa_app(cow_first=True, COWSYNC_DATABASE_URL=None)
    result = app.test_cli_runner().invoke(args=["cowsync", "status", "--json"])
    assert result.exit_code == 0, result.output
