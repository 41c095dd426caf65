"""Bind the connections of a SQLAlchemy engine (psycopg driver) to the current cowsync binding.

Flask-SQLAlchemy apps, and plain SQLAlchemy ones, keep their engine, sessions and queries;
cowsync plugs into the engine's pool events:

* ``checkout``: the connection takes the binding of the current context
  (:func:`cowsync.bind`, which the Flask extension sets for each request): one
  ``SELECT set_config(...)`` committed on its own, so no rollback of the borrower's can
  undo it, which also puts the overlay schemas first on ``search_path`` (overlay mode,
  :mod:`cowsync.overlay_path`); nothing when the connection is known to carry exactly
  that binding already;
* ``reset`` (every return to the pool, before SQLAlchemy's own rollback): the borrower's
  transaction is rolled back, the variables are cleared and the unbound ``search_path``
  comes back. The ``reset`` event runs
  inside SQLAlchemy's guarded return path: if clearing fails, SQLAlchemy invalidates the
  connection instead of pooling it, so a connection that may still carry a session is
  never handed out again;
* ``before_cursor_execute``: a statement that would run under another binding than the
  one its connection was checked out with (a transaction begun before the binding
  changed) is refused with :class:`BindingMismatchError` instead of reaching production.

Transaction-local mode (pgbouncer in transaction pooling mode) makes the engine's new
connections :class:`cowsync.pool.TransactionLocalConnection` through the ``do_connect``
event; they state the binding inside every transaction and nothing stays on the server.

>>> from cowsync.integrations.flask.sqlalchemy_binding import bind_engine  # doctest: +SKIP
>>> bind_engine(engine)                                                    # doctest: +SKIP
>>> with cowsync.bind("agent-run-42", "tool-call-1"):                      # doctest: +SKIP
...     with Session(engine) as session: ...
"""

from __future__ import annotations

import enum
import threading
import weakref
from typing import Any, cast

import psycopg
from psycopg import pq
from sqlalchemy import event, exc
from sqlalchemy.engine import Engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.pool.base import PoolResetState

from ...binding import Binding, binding_statement, current_binding, execute_committed
from ...config import DEFAULT_CONFIG, CowConfig
from ...errors import ConfigurationError
from ...overlay_path import OverlayNaming
from ...pool import TransactionLocalConnection
from ...pool.transaction_local import check_psycopg_support, transaction_local_class

_IDLE = pq.TransactionStatus.IDLE


class BindingMismatchError(ConfigurationError):
    """A statement would run under another binding than its connection carries.

    ``checked_out`` is the binding the connection took at checkout, ``current`` the one of
    the code running the statement (None: no session).
    """

    def __init__(self, checked_out: Binding | None, current: Binding | None) -> None:
        super().__init__(
            f"this SQLAlchemy connection was checked out for {_describe(checked_out)}, but the "
            f"code running this statement is bound to {_describe(current)}: a transaction that "
            "began before the binding changed (db.session used in a before_request hook, in "
            "the authorize callable or before cowsync.bind()) would carry on with the old one. "
            "End it first (db.session.commit() or db.session.rollback()), then run the "
            "session's work"
        )
        self.checked_out = checked_out
        self.current = current


def _describe(binding: Binding | None) -> str:
    return "no session (production)" if binding is None else f"session {binding.session_id!r}"


class _Unknown(enum.Enum):
    TOKEN = "unknown"


_UNKNOWN = _Unknown.TOKEN


class EngineBinding:
    """The event listeners that bind one engine's connections; see the module docstring.

    Build it with :func:`bind_engine`; :meth:`remove` takes the listeners off again.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        config: CowConfig = DEFAULT_CONFIG,
        transaction_local: bool = False,
        clear_unbound: bool = True,
    ) -> None:
        if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
            raise ConfigurationError(
                f"cowsync binds SQLAlchemy engines that use the psycopg (3) driver; this one "
                f"uses {engine.dialect.name}+{engine.dialect.driver}: use a "
                "postgresql+psycopg:// URL"
            )
        if transaction_local:
            check_psycopg_support()
        self.engine = engine
        self.config = config
        self.transaction_local = transaction_local
        self.clear_unbound = clear_unbound
        self._connection_class = (
            transaction_local_class(psycopg.Connection) if transaction_local else None
        )
        self._lock = threading.Lock()
        # What each DBAPI connection carries on the server (session mode), and the binding
        # it was checked out with (both modes), keyed weakly like CowPool does.
        self._applied: weakref.WeakKeyDictionary[Any, Binding | _Unknown | None] = (
            weakref.WeakKeyDictionary()
        )
        self._checked_out: weakref.WeakKeyDictionary[Any, Binding | None] = (
            weakref.WeakKeyDictionary()
        )
        # Pool records whose plain connection was sent back to be replaced (transaction-local).
        self._replaced: weakref.WeakSet[ConnectionPoolEntry] = weakref.WeakSet()
        self._listeners: list[tuple[Any, str, Any]] = [
            (engine, "checkout", self._on_checkout),
            (engine, "reset", self._on_reset),
            (engine, "before_cursor_execute", self._on_before_cursor_execute),
        ]
        if transaction_local:
            self._listeners.append((engine, "do_connect", self._on_do_connect))
        for target, name, listener in self._listeners:
            event.listen(target, name, listener)
        if transaction_local:
            # Pooled connections made before the listeners were plain ones: let the pool make
            # new ones (those checked out now are replaced at their next checkout).
            engine.pool.dispose()

    def remove(self) -> None:
        """Take the listeners off the engine (connections in use keep their binding until reset)."""
        for target, name, listener in self._listeners:
            if event.contains(target, name, listener):
                event.remove(target, name, listener)
        with _registry_lock:
            if _registry.get(self.engine) is self:
                del _registry[self.engine]

    # -- events ------------------------------------------------------------------------------

    def _on_do_connect(
        self,
        dialect: Any,
        record: ConnectionPoolEntry,
        cargs: list[Any],
        cparams: dict[str, Any],
    ) -> Any:
        assert self._connection_class is not None
        return self._connection_class.connect(*cargs, **cparams)

    def _on_checkout(
        self, dbapi_conn: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        binding = current_binding()
        conn = cast(psycopg.Connection[Any], dbapi_conn)
        try:
            if self.transaction_local:
                self._state_in_transactions(conn, binding, record)
            else:
                self._apply_to_session(conn, binding)
        except psycopg.OperationalError as error:
            if conn.broken or conn.closed:
                # Died while it waited in the pool: SQLAlchemy replaces it and tries again.
                raise exc.DisconnectionError(str(error)) from error
            raise
        with self._lock:
            self._checked_out[conn] = binding

    def _apply_to_session(self, conn: psycopg.Connection[Any], binding: Binding | None) -> None:
        with self._lock:
            applied = self._applied.get(conn, _UNKNOWN)
        # A preview is materialised when applied, so it is never reused as it stands.
        if applied == binding and (binding is None or not binding.visible_operations):
            return
        self._remember(conn, _UNKNOWN)
        query, params = binding_statement(binding, self.config)
        _execute_committed(conn, query, params)
        self._remember(conn, binding)

    def _state_in_transactions(
        self, conn: psycopg.Connection[Any], binding: Binding | None, record: ConnectionPoolEntry
    ) -> None:
        if not isinstance(conn, TransactionLocalConnection):
            with self._lock:
                replaced_before = record in self._replaced
                self._replaced.add(record)
            if replaced_before:
                raise ConfigurationError(
                    "transaction-local binding needs the engine to make its connections "
                    "itself; this one makes plain ones (an engine created with creator=?): "
                    "create it without creator=, passing connection options in the URL or "
                    "connect_args"
                )
            # Made before cowsync bound the engine: have the pool replace it.
            raise exc.DisconnectionError(
                "cowsync: replacing a connection made before transaction-local binding"
            )
        with self._lock:
            self._replaced.discard(record)
        if conn.info.transaction_status != _IDLE:
            # The binding is stated when a transaction begins: none may be open already.
            conn.rollback()
        if binding is None:
            conn.state_binding(dict.fromkeys(self.config.variables, ""), bound=False)
            return
        values = binding.settings(self.config)
        if binding.visible_operations:
            # Materialise the preview once per checkout (it writes), not per transaction.
            row = _execute_committed(
                conn,
                "SELECT cowsync.prepare_preview(%s, %s)",
                [binding.session_id, values[self.config.visible_operations_variable]],
            )
            values[self.config.session_variable] = str(row[0])
        conn.state_binding(values, bound=True, overlay=OverlayNaming.of(self.config))

    def _on_reset(
        self, dbapi_conn: Any, record: ConnectionPoolEntry, reset_state: PoolResetState
    ) -> None:
        if reset_state.terminate_only or not reset_state.asyncio_safe:
            return  # the connection is being closed, not pooled
        conn = cast(psycopg.Connection[Any], dbapi_conn)
        with self._lock:
            checked_out = self._checked_out.pop(conn, None)
            applied = self._applied.get(conn, _UNKNOWN)
        if isinstance(conn, TransactionLocalConnection):
            conn.state_binding(dict.fromkeys(self.config.variables, ""), bound=False)
        known_clean = applied is None or self.transaction_local
        if checked_out is None and known_clean and not self.clear_unbound:
            return  # handed out unbound and known clean: production pays nothing
        # SQLAlchemy's own rollback comes after this event; the clear needs an idle
        # connection, and must not be part of (or undone by) the borrower's transaction.
        if conn.info.transaction_status != _IDLE:
            conn.rollback()
        self._remember(conn, _UNKNOWN)
        query, params = binding_statement(None, self.config)
        # An error here propagates into SQLAlchemy, which then invalidates the connection.
        _execute_committed(conn, query, params)
        self._remember(conn, None)

    def _on_before_cursor_execute(
        self,
        connection: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        dbapi_conn = cursor.connection
        with self._lock:
            checked_out = self._checked_out.get(dbapi_conn, _UNKNOWN)
        if checked_out is _UNKNOWN:
            return  # checked out before cowsync bound the engine
        current = current_binding()
        if checked_out != current:
            raise BindingMismatchError(checked_out, current)

    def _remember(self, conn: psycopg.Connection[Any], applied: Binding | _Unknown | None) -> None:
        with self._lock:
            self._applied[conn] = applied


def _execute_committed(
    conn: psycopg.Connection[Any], query: str | bytes, params: list[object] | None = None
) -> Any:
    """:func:`cowsync.binding.execute_committed`, after dropping a leftover transaction."""
    if conn.info.transaction_status != _IDLE:
        # A pre-ping or a dialect query may have left a transaction with nothing to keep.
        conn.rollback()
    return execute_committed(conn, query, params)


_registry_lock = threading.Lock()
_registry: weakref.WeakKeyDictionary[Engine, EngineBinding] = weakref.WeakKeyDictionary()


def bind_engine(
    engine: Engine,
    *,
    config: CowConfig = DEFAULT_CONFIG,
    transaction_local: bool = False,
    clear_unbound: bool = True,
) -> EngineBinding:
    """Bind ``engine``'s connections to the current cowsync binding (see the module docstring).

    Binding an engine again with the same options returns the existing
    :class:`EngineBinding`; with other options it raises :class:`cowsync.ConfigurationError`.

    :param config: the CowConfig the engine was deployed with.
    :param transaction_local: state the binding inside every transaction (pgbouncer).
    :param clear_unbound: also clear the variables when a connection handed out with no
        session comes back (one round trip per such checkin), so a borrower's own
        ``SET app.session_id`` never outlives its checkout. False saves that round trip on
        production traffic.
    """
    with _registry_lock:
        existing = _registry.get(engine)
        if existing is not None:
            if (existing.config, existing.transaction_local, existing.clear_unbound) != (
                config,
                transaction_local,
                clear_unbound,
            ):
                raise ConfigurationError(
                    "this SQLAlchemy engine is already bound by cowsync with other options "
                    "(config, transaction_local, clear_unbound); bind it once"
                )
            return existing
        binding = EngineBinding(
            engine,
            config=config,
            transaction_local=transaction_local,
            clear_unbound=clear_unbound,
        )
        _registry[engine] = binding
        return binding


def engine_binding(engine: Engine) -> EngineBinding | None:
    """The :class:`EngineBinding` of ``engine``, or None if cowsync does not bind it."""
    with _registry_lock:
        return _registry.get(engine)
