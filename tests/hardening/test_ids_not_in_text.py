"""Session and operation ids never appear in statement text another backend can read.

Every backend of a login role reads the ``pg_stat_activity`` rows of the other backends of
that role, ``query`` included: the statement running, or the last one for an idle backend.
An id sent as a literal there lets one agent bind another's session (issue 15, item 2).

For each path that binds a connection, the tests bind distinctive ids, run a statement that
waits on an advisory lock the test holds, and read all of ``pg_stat_activity`` (as superuser,
so nothing is hidden) while it waits and again once the backend is idle: neither id may
appear anywhere. libpq's protocol trace then checks every statement the connection sent, also
those too quick to be caught running: no simple query and no parsed statement carries an id,
while the parameters (``Bind``) do. And the binding still works: the session sees its own
write, production does not.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from django.db import connection, transaction
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import create_engine
from sqlalchemy.engine import URL

import cowsync
from cowsync.integrations.django import cow_session
from cowsync.integrations.flask.sqlalchemy_binding import bind_engine
from cowsync.pool import CowPool
from tests import _pg
from tests._tables import create_table
from tests.django._djdb import DjangoDb

# Django's test database fixtures (importing them configures Django, as tests/django does).
from tests.django.conftest import django_databases, enabled_db  # noqa: F401
from tests.django.testapp.models import Tag
from tests.hardening._fortress import Fortress
from tests.pool._wire import Wire, traced
from tests.pool.conftest import wait_returned

# Waits until the test's observer lets it go: the statement a backend shows while it runs.
BLOCKING = "SELECT pg_catalog.pg_advisory_xact_lock(%s)"
WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class Ids:
    """A session id and an operation id no other test (or statement) contains."""

    session: str
    operation: str

    @classmethod
    def fresh(cls) -> Ids:
        token = secrets.token_hex(6)
        return cls(f"sess-{token}-qz", f"op-{token}-qz")

    def all(self) -> tuple[str, str]:
        return self.session, self.operation


@dataclass
class Sighting:
    """What the observer saw while the bound backend waited on the lock."""

    key: int
    waited: bool = False
    mentions: list[str] = field(default_factory=list)


def mentions(observer: psycopg.Connection[Any], ids: Ids) -> list[str]:
    """Every ``pg_stat_activity`` row (all columns, as text) that contains one of the ids.

    The ids are looked for here, not in SQL, so the observer's own statement holds none.
    """
    rows = observer.execute("SELECT a::text FROM pg_catalog.pg_stat_activity AS a").fetchall()
    return [row for (row,) in rows if any(value in row for value in ids.all())]


def activity_of(observer: psycopg.Connection[Any], pid: int) -> tuple[str, str]:
    """(state, query) of backend ``pid``."""
    row = observer.execute(
        "SELECT state, query FROM pg_catalog.pg_stat_activity WHERE pid = %s", [pid]
    ).fetchone()
    assert row is not None, f"backend {pid} is gone"
    return row[0], row[1]


@contextlib.contextmanager
def caught_waiting(dsn: str, pid: int, ids: Ids) -> Iterator[Sighting]:
    """Hold an advisory lock while the block runs ``BLOCKING`` with ``sighting.key`` on ``pid``.

    A thread waits until that backend waits on the lock, reads ``pg_stat_activity``, then
    lets it go. The block runs in the caller's thread: Django's connections are per thread.
    """
    sighting = Sighting(key=secrets.randbits(62))
    holder = psycopg.connect(dsn, autocommit=True)
    holder.execute("SELECT pg_catalog.pg_advisory_lock(%s)", [sighting.key])

    def observe() -> None:
        try:
            deadline = time.monotonic() + WAIT_SECONDS
            while time.monotonic() < deadline:
                row = holder.execute(
                    "SELECT wait_event_type, wait_event FROM pg_catalog.pg_stat_activity "
                    "WHERE pid = %s",
                    [pid],
                ).fetchone()
                if row == ("Lock", "advisory"):
                    sighting.waited = True
                    sighting.mentions = mentions(holder, ids)
                    return
                time.sleep(0.005)
        finally:
            holder.execute("SELECT pg_catalog.pg_advisory_unlock(%s)", [sighting.key])
            holder.close()

    thread = threading.Thread(target=observe, daemon=True)
    thread.start()
    try:
        yield sighting
    finally:
        thread.join(WAIT_SECONDS + 5)
    assert sighting.waited, f"backend {pid} never waited on the test's lock"


def assert_no_id_in_text(wire: Wire, ids: Ids) -> None:
    """No statement text on the wire holds an id; the parameters do (so the trace is real)."""
    texts = [text for text in wire.queries if any(value in text for value in ids.all())]
    assert texts == []
    bound = [m for m in wire.messages if m.startswith("Bind") and ids.session in m]
    assert bound, "the session id was not sent at all: nothing was bound"


# -- the database the psycopg, pool and SQLAlchemy paths share ---------------------------------


@pytest.fixture(scope="module")
def cow_database(pg_databases: _pg.TestDatabases) -> Iterator[str]:
    """One database for the module: the engine deployed, ``items`` enabled."""
    name = pg_databases.create_database()
    dsn = pg_databases.dsn_for(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        cowsync.deploy(conn)
        create_table(conn, name="items", shape="items", rows=3)
        cowsync.enable(conn, "items")
    try:
        yield dsn
    finally:
        pg_databases.drop_database(name)


@pytest.fixture
def observer(cow_database: str) -> Iterator[psycopg.Connection[Any]]:
    """A superuser connection: it sees every backend's ``query``, and production's rows."""
    with psycopg.connect(cow_database, autocommit=True) as conn:
        yield conn


def marker() -> str:
    return f"written-{secrets.token_hex(4)}"


def production_sees(observer: psycopg.Connection[Any], name: str) -> bool:
    row = observer.execute("SELECT count(*) FROM items WHERE name = %s", [name]).fetchone()
    return row == (1,)


# -- cowsync.session() -------------------------------------------------------------------------


@pytest.mark.parametrize("cursor_factory", [psycopg.Cursor, psycopg.ClientCursor])
def test_cowsync_session_sends_the_ids_as_parameters(
    cow_database: str, observer: psycopg.Connection[Any], cursor_factory: type[Any]
) -> None:
    """Also with a ClientCursor factory, which would merge parameters into the text."""
    ids = Ids.fresh()
    name = marker()
    with psycopg.connect(cow_database, autocommit=True, cursor_factory=cursor_factory) as conn:
        pid = conn.info.backend_pid
        with traced(conn) as wire, cowsync.session(conn, ids.session, ids.operation):
            conn.execute("INSERT INTO items (name) VALUES (%s)", [name])
            with caught_waiting(cow_database, pid, ids) as sighting:
                conn.execute(BLOCKING, [sighting.key])
            assert activity_of(observer, pid)[0] == "idle"
            assert mentions(observer, ids) == []
            seen = conn.execute("SELECT count(*) FROM items WHERE name = %s", [name])
            assert seen.fetchone() == (1,)
        assert sighting.mentions == []
        assert mentions(observer, ids) == []
    assert_no_id_in_text(wire, ids)
    assert not production_sees(observer, name)


# -- CowPool -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transaction_local", "autocommit"),
    [(False, True), (False, False), (True, True), (True, False)],
    ids=["session-autocommit", "session-transactions", "local-autocommit", "local-transactions"],
)
def test_cowpool_checkout_sends_the_ids_as_parameters(
    cow_database: str,
    observer: psycopg.Connection[Any],
    transaction_local: bool,
    autocommit: bool,
) -> None:
    ids = Ids.fresh()
    name = marker()
    pool: CowPool[Any] = CowPool(
        cow_database,
        min_size=1,
        max_size=1,
        open=True,
        timeout=10,
        transaction_local=transaction_local,
        kwargs={"autocommit": autocommit},
    )
    try:
        pool.wait(timeout=10)
        with pool.connection() as first:
            pid = first.info.backend_pid
        wait_returned(pool)
        with traced(first) as wire:
            with cowsync.bind(ids.session, ids.operation), pool.connection() as conn:
                assert conn is first
                conn.execute("INSERT INTO items (name) VALUES (%s)", [name])
                conn.commit()
                with caught_waiting(cow_database, pid, ids) as sighting:
                    conn.execute(BLOCKING, [sighting.key])
                conn.commit()
                assert activity_of(observer, pid)[0] == "idle"
                assert mentions(observer, ids) == []
                seen = conn.execute("SELECT count(*) FROM items WHERE name = %s", [name])
                assert seen.fetchone() == (1,)
            wait_returned(pool)
        assert sighting.mentions == []
        assert mentions(observer, ids) == []
        assert_no_id_in_text(wire, ids)
    finally:
        pool.close()
    assert not production_sees(observer, name)


# -- SQLAlchemy --------------------------------------------------------------------------------


def sqlalchemy_url(dsn: str) -> URL:
    params = conninfo_to_dict(dsn)
    return URL.create(
        "postgresql+psycopg",
        username=params.get("user"),
        password=params.get("password"),
        host=params.get("host"),
        port=int(params["port"]) if params.get("port") else None,
        database=params.get("dbname"),
    )


@pytest.mark.parametrize("transaction_local", [False, True], ids=["session", "local"])
def test_sqlalchemy_binding_sends_the_ids_as_parameters(
    cow_database: str, observer: psycopg.Connection[Any], transaction_local: bool
) -> None:
    ids = Ids.fresh()
    name = marker()
    engine = create_engine(sqlalchemy_url(cow_database), pool_size=1, max_overflow=0)
    binding = bind_engine(engine, transaction_local=transaction_local)
    try:
        with engine.connect() as sa_conn:
            dbapi = sa_conn.connection.dbapi_connection
            assert dbapi is not None
            pid = dbapi.info.backend_pid
        with (
            traced(dbapi) as wire,
            cowsync.bind(ids.session, ids.operation),
            engine.connect() as sa_conn,
        ):
            assert sa_conn.connection.dbapi_connection is dbapi
            sa_conn.exec_driver_sql("INSERT INTO items (name) VALUES (%s)", (name,))
            sa_conn.commit()
            with caught_waiting(cow_database, pid, ids) as sighting:
                sa_conn.exec_driver_sql(BLOCKING, (sighting.key,))
            sa_conn.commit()
            assert activity_of(observer, pid)[0] == "idle"
            assert mentions(observer, ids) == []
            seen = sa_conn.exec_driver_sql("SELECT count(*) FROM items WHERE name = %s", (name,))
            assert seen.scalar() == 1
        assert sighting.mentions == []
        assert mentions(observer, ids) == []
        assert_no_id_in_text(wire, ids)
    finally:
        binding.remove()
        engine.dispose()
    assert not production_sees(observer, name)


# -- the Django backend ------------------------------------------------------------------------


def django_backend() -> psycopg.Connection[Any]:
    connection.ensure_connection()
    raw: psycopg.Connection[Any] = connection.connection
    return raw


def tag_names(db: DjangoDb, name: str) -> list[tuple[Any, ...]]:
    return db.production("SELECT name FROM testapp_tag WHERE name = %s", [name])


@pytest.fixture(params=[False, True], ids=["client-binding", "server-binding"])
def django_db(request: pytest.FixtureRequest, enabled_db: DjangoDb) -> DjangoDb:  # noqa: F811
    """The Django test database, with Django's default cursors or ``server_side_binding``."""
    if request.param:
        enabled_db.configure(OPTIONS={"server_side_binding": True})
    return enabled_db


def run_in_django_session(
    db: DjangoDb, ids: Ids, body: Callable[[psycopg.Connection[Any], Sighting], None]
) -> tuple[Wire, Sighting]:
    """Bind ``ids`` with ``cow_session``, write a tag, run ``body``; check the idle backend."""
    raw = django_backend()
    pid = raw.info.backend_pid
    with psycopg.connect(db.dsn, autocommit=True) as observer:
        with traced(raw) as wire, cow_session(ids.session, ids.operation):
            with caught_waiting(db.dsn, pid, ids) as sighting:
                body(raw, sighting)
            state, _ = activity_of(observer, pid)
            assert state in ("idle", "idle in transaction")
            assert mentions(observer, ids) == []
        assert mentions(observer, ids) == []
    return wire, sighting


def test_django_autocommit_statements_send_the_ids_as_parameters(django_db: DjangoDb) -> None:
    ids = Ids.fresh()
    name = marker()

    def body(raw: psycopg.Connection[Any], sighting: Sighting) -> None:
        Tag.objects.create(name=name)
        assert Tag.objects.filter(name=name).exists()
        with connection.cursor() as cursor:
            cursor.execute(BLOCKING, [sighting.key])

    wire, sighting = run_in_django_session(django_db, ids, body)
    assert sighting.mentions == []
    assert_no_id_in_text(wire, ids)
    assert tag_names(django_db, name) == []


def test_django_atomic_blocks_send_the_ids_as_parameters(django_db: DjangoDb) -> None:
    ids = Ids.fresh()
    name = marker()
    observer = django_db.raw

    def body(raw: psycopg.Connection[Any], sighting: Sighting) -> None:
        with transaction.atomic():
            Tag.objects.create(name=name)
            with connection.cursor() as cursor:
                cursor.execute(BLOCKING, [sighting.key])
            # Idle inside the transaction: the backend shows its last statement.
            assert activity_of(observer, raw.info.backend_pid)[0] == "idle in transaction"
            assert mentions(observer, ids) == []
            with transaction.atomic():  # a savepoint, stated too
                assert Tag.objects.filter(name=name).exists()

    wire, sighting = run_in_django_session(django_db, ids, body)
    assert sighting.mentions == []
    assert_no_id_in_text(wire, ids)
    assert tag_names(django_db, name) == []


def test_django_server_side_cursors_send_the_ids_as_parameters(django_db: DjangoDb) -> None:
    """``iterator()`` declares a named cursor; the binding is stated before the DECLARE."""
    ids = Ids.fresh()
    name = marker()

    def body(raw: psycopg.Connection[Any], sighting: Sighting) -> None:
        Tag.objects.create(name=name)
        waiting = Tag.objects.filter(name=name).extra(
            where=["(SELECT count(*) FROM (SELECT pg_catalog.pg_advisory_xact_lock(%s)) AS w) = 1"],
            params=[sighting.key],
        )
        assert [tag.name for tag in waiting.iterator(chunk_size=10)] == [name]

    wire, sighting = run_in_django_session(django_db, ids, body)
    assert sighting.mentions == []
    assert_no_id_in_text(wire, ids)
    assert tag_names(django_db, name) == []


def test_django_strings_of_several_statements_send_the_ids_as_parameters(
    django_db: DjangoDb,
) -> None:
    """They cannot share a pipeline with the binding: it is stated just before them."""
    ids = Ids.fresh()
    name = marker()

    def body(raw: psycopg.Connection[Any], sighting: Sighting) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO testapp_tag (name) VALUES ('{name}'); "
                f"SELECT pg_catalog.pg_advisory_xact_lock({sighting.key})"
            )
        assert Tag.objects.filter(name=name).exists()

    wire, sighting = run_in_django_session(django_db, ids, body)
    assert sighting.mentions == []
    assert_no_id_in_text(wire, ids)
    assert tag_names(django_db, name) == []


class CountingCursor(psycopg.ClientCursor[Any]):
    """A project's own cursor class with an ``execute()`` of its own."""

    executed = 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        CountingCursor.executed += 1
        return super().execute(*args, **kwargs)


def test_django_custom_cursor_classes_send_the_ids_as_parameters(enabled_db: DjangoDb) -> None:  # noqa: F811
    enabled_db.configure(OPTIONS={"cursor_factory": CountingCursor})
    CountingCursor.executed = 0
    ids = Ids.fresh()
    name = marker()

    def body(raw: psycopg.Connection[Any], sighting: Sighting) -> None:
        Tag.objects.create(name=name)
        with connection.cursor() as cursor:
            cursor.execute(BLOCKING, [sighting.key])
        assert Tag.objects.filter(name=name).exists()

    wire, sighting = run_in_django_session(enabled_db, ids, body)
    assert CountingCursor.executed >= 3
    assert sighting.mentions == []
    assert_no_id_in_text(wire, ids)
    assert tag_names(enabled_db, name) == []


# -- what a backend of the same role sees ------------------------------------------------------


def test_a_same_role_backend_reads_the_query_column_but_finds_no_id(
    fortress: Fortress, connect_as: Callable[[Fortress, str], psycopg.Connection[Any]]
) -> None:
    """The exposure is real (same-role rows are visible in full); only the ids are missing."""
    ids = Ids(fortress.agent_session, f"op-{secrets.token_hex(6)}-qz")
    victim = connect_as(fortress, fortress.agent)
    attacker = connect_as(fortress, fortress.agent)
    pid = victim.info.backend_pid
    with cowsync.session(victim, ids.session, ids.operation):
        victim.execute("SELECT count(*) FROM items").fetchone()
        with caught_waiting(fortress.dsn, pid, ids) as sighting:
            victim.execute(BLOCKING, [sighting.key])
        state, query = activity_of(attacker, pid)
        assert (state, query) == ("idle", BLOCKING.replace("%s", "$1"))
        assert mentions(attacker, ids) == []
    assert sighting.mentions == []
