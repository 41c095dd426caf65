"""The Flask extension: each request runs in the session its headers name.

>>> from cowsync.integrations.flask import CowSync          # doctest: +SKIP
>>> cow = CowSync()                                        # doctest: +SKIP
>>> def create_app():                                      # doctest: +SKIP
...     app = Flask(__name__)
...     app.config["COWSYNC_DATABASE_URL"] = "postgresql://app@db/shop"
...     cow.init_app(app)
...     return app

Per request (see docs/flask.md):

* the ``X-Cow-*`` headers are read before any other ``before_request`` hook; a malformed
  one answers 400 (:class:`CowHeaderError`), a session the ``authorize`` callable refuses
  answers 403 (:class:`CowSessionForbidden`), and the view never runs;
* otherwise the request is bound (:func:`cowsync.bind`) until its app context ends, so
  ``cow.connection()``, any :class:`cowsync.pool.CowPool` and the SQLAlchemy engines
  cowsync binds all work in the session;
* ``cow.connection()`` lends the request one pooled psycopg connection, kept on ``g`` and
  returned when the app context ends, whatever the view did; what the view did not commit
  is rolled back.

The state of each app lives in ``app.extensions["cowsync"]``, so one ``CowSync`` serves
several apps, each with its own configuration and pool.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import uuid
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import psycopg
from flask import Flask, Response, current_app, g, request
from psycopg import pq

from ...binding import Binding, bind, current_binding, unbound
from ...cli.context import normalise_dsn
from ...config import validate_id
from ...errors import ConfigurationError
from ...pool import CowPool
from ...pool.headers import HeaderError, binding_from_environ
from .cli import make_cli_group
from .http_errors import CowHeaderError, CowSessionForbidden
from .settings import DEFAULTS, Authorize, FlaskSettings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from .sqlalchemy_binding import EngineBinding

EXTENSION_KEY = "cowsync"

# Names on flask.g (one app context each, so they never mix apps).
_G_REQUEST = "_cowsync_request"
_G_CONNECTION = "_cowsync_connection"

_IDLE = pq.TransactionStatus.IDLE


@dataclass
class _RequestBinding:
    """What ``before_request`` bound, so that teardown can undo exactly that."""

    binding: Binding | None
    scope: bind | None
    generated_operation: str | None


@dataclass(frozen=True)
class _SessionConnection:
    """The connection of an open ``cow.session()`` block, for ``cow.connection()`` inside it."""

    app: Flask
    conn: psycopg.Connection[Any]


_session_connection: contextvars.ContextVar[_SessionConnection | None] = contextvars.ContextVar(
    "cowsync_flask_session_connection", default=None
)


class AppState:
    """One app's cowsync state: its settings, its pool and the engines bound for it.

    Stored as ``app.extensions["cowsync"]``; :class:`CowSync` methods find it there.
    """

    def __init__(
        self, extension: CowSync, app: Flask, settings: FlaskSettings, engine: Any
    ) -> None:
        self.extension = extension
        self.app_name = app.name
        # Weak: app.extensions holds this state; the app must not be kept alive by it.
        self._app = weakref.ref(app)
        self.settings = settings
        # Reentrant: making the pool reads the database URL, which may detect SQLAlchemy.
        self._lock = threading.RLock()
        self._pool: CowPool[Any] | None = settings.pool
        self._owns_pool = False
        self._pool_opened = settings.pool is not None
        self.engine_bindings: list[EngineBinding] = []
        # Flask-SQLAlchemy, when cowsync binds its engines (for the pending-changes check).
        self.flask_sqlalchemy: Any = None
        self._sqlalchemy_settled = False
        if engine is not None:
            self._bind_engines(app, engine)
            self._sqlalchemy_settled = True
        else:
            self.detect_flask_sqlalchemy()

    # -- SQLAlchemy --------------------------------------------------------------------------

    def detect_flask_sqlalchemy(self) -> None:
        """Bind Flask-SQLAlchemy's engines once the app has it (init order does not matter).

        Called at registration, and again before each request, ``cow.session()`` and each
        use of the database until Flask-SQLAlchemy shows up (a cheap flag test after that).
        """
        if self._sqlalchemy_settled:
            return
        with self._lock:
            app = self._app()
            if self._sqlalchemy_settled or app is None:
                return
            if not self.settings.bind_sqlalchemy:
                self._sqlalchemy_settled = True
                return
            db = app.extensions.get("sqlalchemy")
            if db is None:
                return  # perhaps registered later: look again at the next request
            self._bind_engines(app, db)
            self._sqlalchemy_settled = True

    def _bind_engines(self, app: Flask, engine: Any) -> None:
        from sqlalchemy.engine import Engine

        from .sqlalchemy_binding import bind_engine

        engines: Iterable[Engine]
        if isinstance(engine, Engine):
            engines = [engine]
        elif _is_flask_sqlalchemy(engine):
            # A Flask-SQLAlchemy instance: every engine (binds included) it made for this app.
            with app.app_context():
                engines = list(engine.engines.values())
            self.flask_sqlalchemy = engine
        else:
            raise ConfigurationError(
                f"engine must be a SQLAlchemy Engine or a Flask-SQLAlchemy instance, got {engine!r}"
            )
        for one in engines:
            self.engine_bindings.append(
                bind_engine(
                    one,
                    config=self.settings.config,
                    transaction_local=self.settings.transaction_local,
                    clear_unbound=self.settings.sqlalchemy_clear_unbound,
                )
            )

    def end_orm_transaction(self) -> None:
        """Roll back db.session's transaction, begun unbound (by ``authorize``), if any.

        Its connection was checked out with no session; the request's queries must take a
        new one, bound to the request's session. Nothing is lost: authorize only reads.
        """
        db = self.flask_sqlalchemy
        if db is not None and db.session().in_transaction():
            db.session.rollback()

    def check_orm_flushed(self) -> None:
        """Refuse to end a ``cow.session()`` block with ORM changes not yet written."""
        db = self.flask_sqlalchemy
        if db is None:
            return
        orm_session = db.session
        if orm_session.new or orm_session.dirty or orm_session.deleted:
            raise ConfigurationError(
                "cow.session() ended with changes still pending in db.session: written after "
                "the block, they would reach production instead of the session; call "
                "db.session.commit() inside the block (or db.session.rollback() to drop them)"
            )

    # -- the database ------------------------------------------------------------------------

    def database_url(self) -> str | None:
        """Where to connect: ``COWSYNC_DATABASE_URL``, else a bound engine's URL."""
        self.detect_flask_sqlalchemy()
        if self.settings.database_url is not None:
            return normalise_dsn(self.settings.database_url)
        if self.settings.pool is not None:
            return None  # the app gave its pool; its conninfo may lack what kwargs carry
        for engine_binding in self.engine_bindings:
            url = engine_binding.engine.url.set(drivername="postgresql")
            return url.render_as_string(hide_password=False)
        return None

    def given_pool(self) -> CowPool[Any] | None:
        """The pool given as ``COWSYNC_POOL``, or None."""
        return self.settings.pool

    @property
    def pool(self) -> CowPool[Any]:
        """The app's pool: the one given, or one made (and opened) on first use."""
        pool = self._pool
        if pool is not None and self._pool_opened:
            return pool
        with self._lock:
            if self._pool is None:
                self._pool = self._make_pool()
                self._owns_pool = True
            if not self._pool_opened:
                self._pool.open()
                self._pool_opened = True
            return self._pool

    def _make_pool(self) -> CowPool[Any]:
        url = self.database_url()
        if url is None:
            raise ConfigurationError(
                f"app {self.app_name!r} has no database for cowsync: set "
                "COWSYNC_DATABASE_URL or COWSYNC_POOL, or give CowSync a SQLAlchemy engine"
            )
        settings = self.settings
        return CowPool(
            url,
            config=settings.config,
            transaction_local=settings.transaction_local,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            timeout=settings.pool_timeout,
            kwargs=dict(settings.pool_kwargs),
            name=f"cowsync:{self.app_name}",
            open=False,
        )

    def close(self) -> None:
        """Close the pool cowsync made for the app (a pool given as COWSYNC_POOL stays open)."""
        with self._lock:
            pool, owned = self._pool, self._owns_pool
            if owned:
                self._pool = None
                self._owns_pool = False
                self._pool_opened = False
        if owned and pool is not None:
            pool.close()


class CowSync:
    """Bind each Flask request to the cowsync session its headers name.

    :param app: the app to set up now; or call :meth:`init_app` later (application factory).
    :param engine: a SQLAlchemy engine (psycopg driver) or a Flask-SQLAlchemy instance whose
        connections should follow the request's session. Without it, the engines of
        Flask-SQLAlchemy are bound when the app uses it (``COWSYNC_BIND_SQLALCHEMY``).
    :param authorize: ``authorize(request, session_id) -> bool``, the default of
        ``COWSYNC_AUTHORIZE`` for every app: False answers 403.

    Configuration keys (``COWSYNC_*``, set before :meth:`init_app`) are listed in
    docs/flask.md and :mod:`cowsync.integrations.flask.settings`.

    >>> cow = CowSync(app)                                         # doctest: +SKIP
    >>> @app.post("/items/<int:item_id>/restock")                  # doctest: +SKIP
    ... def restock(item_id):
    ...     conn = cow.connection()        # bound to the request's session, if any
    ...     conn.execute("UPDATE items SET qty = qty + 10 WHERE id = %s", [item_id])
    ...     conn.commit()
    ...     return "", 204
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        engine: Engine | Any | None = None,
        authorize: Authorize | None = None,
    ) -> None:
        self._engine = engine
        self._authorize = authorize
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, engine: Engine | Any | None = None) -> None:
        """Register the extension on ``app``: config defaults, request hooks, ``flask cowsync``.

        ``engine`` overrides the constructor's for this app. Registering on an app that
        already has cowsync raises :class:`cowsync.ConfigurationError`.
        """
        if EXTENSION_KEY in app.extensions:
            raise ConfigurationError(
                f"cowsync is already registered on app {app.name!r}: use the CowSync instance "
                "that registered it (one per app, set up once)"
            )
        if self._authorize is not None:
            app.config.setdefault("COWSYNC_AUTHORIZE", self._authorize)
        for key, default in DEFAULTS.items():
            # A fresh copy of mutable defaults, so apps never share one dict.
            app.config.setdefault(key, dict(default) if isinstance(default, dict) else default)
        settings = FlaskSettings.from_config(app.config)
        state = AppState(self, app, settings, engine if engine is not None else self._engine)
        app.extensions[EXTENSION_KEY] = state

        # First of the app's before_request hooks: nothing may touch the database unbound
        # in the request and carry the connection into the view.
        app.before_request_funcs.setdefault(None, []).insert(0, self._bind_request)
        app.after_request(self._announce_operation)
        app.teardown_appcontext(self._teardown)
        app.cli.add_command(make_cli_group(lambda: state))

    # -- public API ----------------------------------------------------------------------------

    def state(self, app: Flask | None = None) -> AppState:
        """The per-app state (``app.extensions["cowsync"]``) of ``app`` or the current app."""
        if app is None:
            app = _current_app()
        state = app.extensions.get(EXTENSION_KEY)
        if not isinstance(state, AppState) or state.extension is not self:
            raise ConfigurationError(
                f"this CowSync is not registered on app {app.name!r}: call cow.init_app(app)"
            )
        return state

    @property
    def pool(self) -> CowPool[Any]:
        """The current app's :class:`cowsync.pool.CowPool` (opened on first use).

        For connections other than the request's: ``cow.pool.connection(session_id=None)``
        reads production in a bound request.
        """
        return self.state().pool

    def connection(self) -> psycopg.Connection[Any]:
        """The connection of the current request (or ``cow.session()`` block).

        Taken from the app's pool on first call, bound to the request's session (or to
        none), and returned when the app context ends, also when the view raised. Commit
        what should stay (``conn.commit()`` or ``with conn.transaction():``): the rest is
        rolled back at the end of the request.
        """
        app = _current_app()
        held = _session_connection.get()
        if held is not None and held.app is app:
            return held.conn
        conn = g.get(_G_CONNECTION)
        if conn is not None:
            return cast(psycopg.Connection[Any], conn)
        state = self.state(app)
        request_binding = g.get(_G_REQUEST)
        binding = request_binding.binding if request_binding is not None else current_binding()
        conn = _checkout(state.pool, binding)
        setattr(g, _G_CONNECTION, conn)
        return conn

    @contextlib.contextmanager
    def session(
        self,
        session_id: str,
        operation_id: str | None = None,
        *,
        visible_operations: Iterable[str] | None = None,
        app: Flask | None = None,
    ) -> Iterator[psycopg.Connection[Any]]:
        """Work in a session outside a request (a CLI command, a job, a test).

        Binds the current context (as :func:`cowsync.bind`) so the SQLAlchemy engines cowsync
        binds follow it too, and yields a connection from the app's pool bound to the session;
        ``cow.connection()`` returns that connection inside the block. On a clean exit the
        connection's transaction is committed, on an exception rolled back.

        >>> with app.app_context(), cow.session("run-42", "import-1") as conn:  # doctest: +SKIP
        ...     conn.execute("INSERT INTO items (name) VALUES ('new')")
        """
        state = self.state(app)
        flask_app = app if app is not None else _current_app()
        state.detect_flask_sqlalchemy()
        with (
            bind(session_id, operation_id, visible_operations),
            state.pool.connection() as conn,
        ):
            token = _session_connection.set(_SessionConnection(flask_app, conn))
            try:
                yield conn
            finally:
                _session_connection.reset(token)
            state.check_orm_flushed()

    def close(self, app: Flask | None = None) -> None:
        """Close the pool cowsync made for ``app`` (or the current app); e.g. at shutdown."""
        self.state(app).close()

    # -- request hooks -------------------------------------------------------------------------

    def _bind_request(self) -> None:
        app = _current_app()
        state = self.state(app)
        state.detect_flask_sqlalchemy()
        settings = state.settings
        try:
            binding = binding_from_environ(request.environ, settings.headers)
        except HeaderError as exc:
            raise CowHeaderError(exc) from None
        if binding is None:
            # The server's own context may be bound (CowMiddleware): keep what it says.
            setattr(g, _G_REQUEST, _RequestBinding(current_binding(), None, None))
            return
        authorize = settings.authorize
        # Asked unbound: what a session may have written must never grant it access.
        if authorize is not None:
            with unbound():
                allowed = authorize(request, binding.session_id)
            state.end_orm_transaction()
            if not allowed:
                raise CowSessionForbidden(binding.session_id)
        generated = None
        if (
            settings.operation_per_request
            and binding.operation_id is None
            and not binding.visible_operations
        ):
            generated = _new_operation_id(settings.operation_per_request)
        scope = bind(
            binding.session_id,
            binding.operation_id or generated,
            binding.visible_operations,
        )
        bound = scope.__enter__()
        setattr(g, _G_REQUEST, _RequestBinding(bound, scope, generated))

    def _announce_operation(self, response: Response) -> Response:
        request_binding = g.get(_G_REQUEST)
        if request_binding is not None and request_binding.generated_operation is not None:
            # The client learns which operation to review, commit or discard.
            header = self.state().settings.headers.operation
            response.headers[header] = request_binding.generated_operation
        return response

    def _teardown(self, exc: BaseException | None) -> None:
        conn = g.pop(_G_CONNECTION, None)
        request_binding = g.pop(_G_REQUEST, None)
        try:
            if conn is not None:
                _return(self.state().pool, conn)
        finally:
            if request_binding is not None and request_binding.scope is not None:
                _leave(request_binding.scope)


def _checkout(pool: CowPool[Any], binding: Binding | None) -> psycopg.Connection[Any]:
    """A connection from ``pool`` bound to ``binding`` (None: unbound), for :func:`_return`."""
    conn: psycopg.Connection[Any]
    if binding is None:
        with unbound():
            conn = pool.getconn()
    else:
        with bind(binding.session_id, binding.operation_id, binding.visible_operations):
            conn = pool.getconn()
    return conn


def _return(pool: CowPool[Any], conn: psycopg.Connection[Any]) -> None:
    """Roll back what the borrower left uncommitted, then give the connection back (unbound)."""
    try:
        if not conn.closed and conn.info.transaction_status != _IDLE:
            conn.rollback()
    except psycopg.Error:
        pass  # a broken connection: the pool discards it
    finally:
        pool.putconn(conn)


def _leave(scope: bind) -> None:
    # ValueError: teardown ran in another context than before_request (a copied context);
    # the binding lives only in that one, which ends with the request.
    with contextlib.suppress(ValueError):
        scope.__exit__(None, None, None)


def _is_flask_sqlalchemy(value: object) -> bool:
    try:
        from flask_sqlalchemy import SQLAlchemy
    except ImportError:
        return False
    return isinstance(value, SQLAlchemy)


def _current_app() -> Flask:
    return cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]


def _new_operation_id(factory: Any) -> str:
    if factory is True:
        return f"req-{uuid.uuid4().hex}"
    return validate_id(factory(request), "operation id from COWSYNC_OPERATION_PER_REQUEST")
