"""Transaction-local binding: every transaction states the COW variables itself.

Behind a transaction pooler (pgbouncer with ``pool_mode = transaction``) two
transactions of one client may run on different server connections, and two
clients may share one. A session-level ``SET`` would stay behind on a server
connection and reach whoever gets it next. In transaction-local mode nothing is
left on the server between transactions: the connection sends
``set_config(name, value, true)`` as the first statement of every transaction it
opens, with this checkout's values ('' when unbound).

Where the statement goes, so that it costs no extra round trip:

* a transaction opened by psycopg (``autocommit=False``, ``conn.transaction()``,
  two-phase commit): ``BEGIN`` and the ``set_config`` travel in one simple-query
  message, replacing the ``BEGIN`` psycopg would have sent alone;
* a pipeline: the ``set_config`` is queued before each statement (an autocommit
  pipeline's statements form one implicit transaction up to each sync);
* a bound ``execute()`` on an autocommit connection outside any transaction: the
  statement and the ``set_config`` go together in a pipeline, so they share one
  implicit transaction and one round trip.

An unbound autocommit statement outside a transaction is sent as it is, so
statements that cannot run in a transaction block or a pipeline (``VACUUM``,
``CREATE DATABASE``, ``CREATE INDEX CONCURRENTLY``) keep working on unbound
connections. A bound ``COPY``, ``stream()`` or named cursor on an autocommit
connection outside a transaction cannot be wrapped, so it is refused with
:class:`~cowsync.ConfigurationError` instead of silently running unbound. (The
pool still clears session-level values on every return, so a borrower's own
``SET`` cannot reach those unbound statements on a direct connection.)

The hooks are psycopg's own transaction-start points (``_exec_command`` for
``BEGIN``, ``_start_query`` before every statement), the narrowest place where
every path that opens a transaction passes. They are private psycopg methods:
:func:`check_psycopg_support` verifies they exist, and the test suite checks the
behaviour end to end.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors, generators, pq, sql
from psycopg.abc import PQGen
from psycopg.pq.abc import PGresult

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from typing_extensions import Self

_IDLE = pq.TransactionStatus.IDLE
_FATAL_ERROR = pq.ExecStatus.FATAL_ERROR

# The private psycopg methods this module relies on.
_REQUIRED_CONNECTION_METHODS = (
    "_exec_command",
    "_start_query",
    "_get_tx_start_command",
    "_check_connection_ok",
)


def check_psycopg_support() -> None:
    """Raise ConfigurationError if this psycopg lacks the hooks transaction-local mode uses."""
    missing = [
        name for name in _REQUIRED_CONNECTION_METHODS if not hasattr(psycopg.Connection, name)
    ]
    if not hasattr(generators, "execute"):
        missing.append("generators.execute")
    if missing:
        raise ConfigurationError(
            f"transaction_local=True needs psycopg's transaction hooks ({', '.join(missing)} "
            f"missing in psycopg {psycopg.__version__}); upgrade psycopg or use the "
            "session mode (transaction_local=False) without a transaction pooler"
        )


def settings_statement(values: Mapping[str, str]) -> sql.Composed:
    """``SELECT set_config(name, value, true), ...`` with the values as literals.

    Literals, not parameters: the statement rides in a simple-query message next
    to ``BEGIN``, which cannot carry parameters. The values are validated ids and
    setting names, and ``sql.Literal`` quotes them anyway.
    """
    calls = [
        sql.SQL("pg_catalog.set_config({}, {}, true)").format(sql.Literal(name), sql.Literal(value))
        for name, value in values.items()
    ]
    return sql.SQL("SELECT ") + sql.SQL(", ").join(calls)


@functools.lru_cache(maxsize=1024)
def _statement_bytes(items: tuple[tuple[str, str], ...]) -> bytes:
    # Cached: built at every checkout and return, and composing literals is not free.
    # Names and values are ASCII (validated), so the bytes do not depend on the
    # connection's encoding.
    return settings_statement(dict(items)).as_bytes(None)


class TransactionLocalConnection(psycopg.Connection[Any]):
    """A connection that states the COW variables at the start of every transaction.

    :class:`cowsync.pool.CowPool` builds a subclass of the pool's
    ``connection_class`` with this class mixed in and sets what to state at each
    checkout with :meth:`state_binding`; until then the connection behaves like
    its base class.
    """

    # What to send as the first statement of each transaction (None: nothing yet).
    _cow_statement: bytes | None = None
    # True while a checkout holds a session: unwrappable autocommit paths are refused.
    _cow_bound: bool = False

    def state_binding(self, values: Mapping[str, str] | None, *, bound: bool) -> None:
        """State ``values`` (setting name -> value) in every transaction from now on.

        ``None`` stops stating anything. ``bound`` says whether ``values`` hold a
        session (then statements that cannot carry them are refused).
        """
        if values is None:
            self._cow_statement = None
        else:
            self._cow_statement = _statement_bytes(tuple(values.items()))
        self._cow_bound = bound and values is not None

    # -- cursors: wrap bound autocommit statements in a pipeline -------------------------

    @property
    def cursor_factory(self) -> type[psycopg.Cursor[Any]]:
        return self._cow_cursor_factory

    @cursor_factory.setter
    def cursor_factory(self, factory: type[psycopg.Cursor[Any]]) -> None:
        # psycopg's __init__ and connect(cursor_factory=...) both assign here, and
        # so does user code, so every cursor class this connection makes is wrapped.
        self._cow_cursor_factory = stating_cursor_class(factory)

    # -- psycopg's transaction-start points -----------------------------------------------

    def _exec_command(
        self, command: Any, result_format: pq.Format = pq.Format.TEXT
    ) -> PQGen[PGresult | None]:
        statement = self._cow_statement
        if statement is None or command != self._get_tx_start_command():
            result: PGresult | None = yield from super()._exec_command(command, result_format)
            return result
        if self._pipeline:
            # Queued, not sent: both go out with the pipeline's next flush.
            yield from super()._exec_command(command, result_format)
            yield from super()._exec_command(statement, result_format)
            return None
        # One simple-query message, one round trip: "BEGIN ...; SELECT set_config(...)".
        self._check_connection_ok()
        self.pgconn.send_query(command + b"; " + statement)
        results: list[PGresult] = yield from generators.execute(self.pgconn)
        for result in results:
            if result.status == _FATAL_ERROR:
                raise errors.error_from_result(result, encoding=self.info.encoding)
        return results[0]

    def _start_query(self) -> PQGen[None]:
        if self._autocommit and self._cow_statement is not None:
            if self._pipeline:
                # Each statement of an autocommit pipeline may open the implicit
                # transaction that lasts to the next sync: state the binding first.
                yield from self._exec_command(self._cow_statement)
                return
            if self._cow_bound and self.pgconn.transaction_status == _IDLE:
                raise ConfigurationError(
                    "this autocommit statement would run in a transaction of its own without "
                    "the session binding (transaction-local mode wraps execute(), not COPY, "
                    "stream() or named cursors); run it inside `with conn.transaction():` or "
                    "use autocommit=False"
                )
        yield from super()._start_query()


class StatingCursor(psycopg.Cursor[Any]):
    """Cursor mixin: a bound autocommit ``execute()`` shares a pipeline with the binding."""

    __slots__ = ()

    def execute(
        self,
        query: Any,
        params: Any = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> Self:
        conn = self._conn
        if (
            isinstance(conn, TransactionLocalConnection)
            and conn._cow_bound
            and conn.autocommit
            and conn._pipeline is None
            and conn.info.transaction_status == _IDLE
        ):
            if psycopg.Pipeline.is_supported():
                with conn.pipeline():
                    super().execute(query, params, prepare=prepare, binary=binary)
            else:
                # Old libpq: an explicit transaction (BEGIN travels with the binding).
                with conn.transaction():
                    super().execute(query, params, prepare=prepare, binary=binary)
            return self
        return super().execute(query, params, prepare=prepare, binary=binary)


_classes_lock = threading.Lock()
_cursor_classes: dict[type[Any], type[Any]] = {}
_connection_classes: dict[type[Any], type[Any]] = {}


def stating_cursor_class(factory: type[psycopg.Cursor[Any]]) -> type[psycopg.Cursor[Any]]:
    """``factory`` with :class:`StatingCursor` mixed in (cached; idempotent)."""
    if issubclass(factory, StatingCursor):
        return factory
    with _classes_lock:
        derived = _cursor_classes.get(factory)
        if derived is None:
            derived = type(factory.__name__, (StatingCursor, factory), {"__slots__": ()})
            derived.__module__ = __name__
            _cursor_classes[factory] = derived
        return derived


def transaction_local_class(base: type[Any]) -> type[Any]:
    """``base`` (a psycopg Connection class) with :class:`TransactionLocalConnection` mixed in."""
    if not (isinstance(base, type) and issubclass(base, psycopg.Connection)):
        raise ConfigurationError(
            f"connection_class must be a psycopg.Connection subclass, got {base!r}"
        )
    if issubclass(base, TransactionLocalConnection):
        return base
    with _classes_lock:
        derived = _connection_classes.get(base)
        if derived is None:
            derived = type(
                f"TransactionLocal{base.__name__}", (TransactionLocalConnection, base), {}
            )
            derived.__module__ = __name__
            _connection_classes[base] = derived
        return derived
