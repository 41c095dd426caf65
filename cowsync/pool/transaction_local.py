"""Transaction-local binding: every transaction states the COW variables itself.

Behind a transaction pooler (pgbouncer with ``pool_mode = transaction``) two
transactions of one client may run on different server connections, and two
clients may share one. A session-level ``SET`` would stay behind on a server
connection and reach whoever gets it next. In transaction-local mode nothing is
left on the server between transactions: the connection sends
``set_config(name, value, true)`` as the first statement of every transaction it
opens, with this checkout's values ('' when unbound); a bound transaction also puts
the overlay schemas first on its ``search_path`` in that statement, transaction-locally
(:mod:`cowsync.overlay_path`).

The values travel as parameters, never in the statement's text: another backend,
even one of the same role, reads ``pg_stat_activity.query`` as
``SELECT pg_catalog.set_config('app.session_id', $1, true), ...``. Where the statement
goes, so that it costs no extra round trip:

* a transaction opened by psycopg (``autocommit=False``, ``conn.transaction()``,
  two-phase commit): ``BEGIN`` and the parameterised ``set_config`` go out together
  in a libpq pipeline (one network flush, one ``Sync``), replacing the ``BEGIN``
  psycopg would have sent alone;
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

import contextlib
import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors, generators, pq
from psycopg.abc import PQGen
from psycopg.pq.abc import PGconn, PGresult

from ..binding import settings_query
from ..errors import ConfigurationError
from ..overlay_path import OverlayNaming, PathAction

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


@dataclass(frozen=True)
class LocalSettings:
    """COW variables to state in a transaction: the names go in the text, the values apart.

    The statement text depends only on the names (the setting names of a
    :class:`~cowsync.CowConfig`, validated) and on what it does to ``search_path``, so
    it is the same for every session; the values (session and operation ids) and the
    overlay naming are sent as parameters. ``overlay``: the statement also puts the
    overlay schemas first on ``search_path`` (a bound transaction); ``unbind_path``: it
    gives the unbound path back (a binding that ended inside a transaction). See
    :mod:`cowsync.overlay_path`.
    """

    names: tuple[str, ...]
    values: tuple[str, ...]
    overlay: OverlayNaming | None = None
    unbind_path: bool = False

    @classmethod
    def of(
        cls,
        values: Mapping[str, str],
        *,
        overlay: OverlayNaming | None = None,
        unbind_path: bool = False,
    ) -> LocalSettings:
        """The settings for ``values`` (setting name -> value)."""
        return cls(tuple(values), tuple(values.values()), overlay, unbind_path)

    @property
    def path(self) -> PathAction | None:
        """What the statement does to ``search_path``."""
        if self.overlay is not None:
            return "bind"
        return "unbind" if self.unbind_path else None

    @functools.cached_property
    def query(self) -> bytes:
        """``SELECT pg_catalog.set_config('name', %s, true), ...`` for a psycopg cursor."""
        return settings_query(self.names, local=True, path=self.path)

    @functools.cached_property
    def wire_query(self) -> bytes:
        """The same with ``$1, $2, ...`` placeholders, for libpq's ``send_query_params``."""
        return settings_query(self.names, local=True, path=self.path, numbered=True)

    @property
    def params(self) -> list[object]:
        """The parameters, for a psycopg cursor."""
        overlay = [] if self.overlay is None else self.overlay.params
        return [*self.values, *overlay]

    @functools.cached_property
    def wire_params(self) -> list[bytes]:
        """The parameters in text format for libpq (ids are ASCII, validated)."""
        overlay = [] if self.overlay is None else self.overlay.wire_params
        return [*(value.encode() for value in self.values), *overlay]


def in_one_pipeline(
    pgconn: PGconn, senders: Sequence[Callable[[], None]]
) -> PQGen[list[list[PGresult]]]:
    """Run ``senders`` (each sends one command) in one libpq pipeline; their results.

    One network flush and one ``Sync``: one round trip, as a single simple-query
    message would be, but each command may carry parameters. After an error the
    later commands are not run (their result is ``PIPELINE_ABORTED``).
    """
    pgconn.enter_pipeline_mode()
    results: list[list[PGresult]] = []
    try:
        sent = 0
        try:
            for send in senders:
                send()
                sent += 1
        finally:
            # Also after a sender failed: what went into the pipeline is run and read, so
            # the connection leaves pipeline mode clean.
            pgconn.pipeline_sync()
            yield from generators.send(pgconn)
            for _ in range(sent):
                results.append((yield from generators.fetch_many(pgconn)))
            yield from generators.fetch_many(pgconn)  # the Sync
    except BaseException:
        # Broken mid-way: whatever state libpq is left in, the error is the news.
        with contextlib.suppress(Exception):
            pgconn.exit_pipeline_mode()
        raise
    pgconn.exit_pipeline_mode()
    return results


def _raise_on_error(results: Sequence[PGresult], encoding: str) -> None:
    # A command aborted in a pipeline always follows one that failed: report that one.
    for result in results:
        if result.status == _FATAL_ERROR:
            raise errors.error_from_result(result, encoding=encoding)


# The private psycopg cursor methods execute_stated relies on.
_REQUIRED_CURSOR_METHODS = (
    "_start_query",
    "_convert_query",
    "_execute_send",
    "_check_results",
    "_set_results",
)


def can_execute_stated() -> bool:
    """Can :func:`execute_stated` share a pipeline with the statement here?"""
    return psycopg.Pipeline.is_supported() and all(
        hasattr(psycopg.Cursor, name) for name in _REQUIRED_CURSOR_METHODS
    )


def execute_stated(
    cursor: psycopg.Cursor[Any],
    stated: LocalSettings,
    query: Any,
    params: Any = None,
    *,
    binary: bool | None = None,
) -> None:
    """``cursor.execute(query, params)`` with ``stated`` sent just before it: one round trip.

    Both go out in one libpq pipeline (one flush, one ``Sync``), so in autocommit they
    share one implicit transaction; the ids are parameters of their own statement,
    whatever the cursor's binding (a ``ClientCursor`` merges only the statement's own
    parameters). What psycopg's ``with conn.pipeline():`` would do, without the client
    CPU its general machinery costs (tens of µs per statement). The statement is
    sent unprepared, with the extended protocol: one statement, no ``COPY``. Check
    :func:`can_execute_stated` first.
    """
    conn = cursor.connection
    with conn.lock:
        conn.wait(_execute_stated_gen(cursor, stated, query, params, binary))


def _execute_stated_gen(
    cursor: psycopg.Cursor[Any], stated: LocalSettings, query: Any, params: Any, binary: bool | None
) -> PQGen[None]:
    # Mirrors psycopg's Cursor._execute_gen, with the pipeline around the send.
    yield from cursor._start_query(query)  # may BEGIN (autocommit=False), as psycopg does
    pgq = cursor._convert_query(query, params)
    pgconn = cursor.connection.pgconn
    stated_results, results = yield from in_one_pipeline(
        pgconn,
        [
            partial(pgconn.send_query_params, stated.wire_query, stated.wire_params),
            partial(cursor._execute_send, pgq, force_extended=True, binary=binary),
        ],
    )
    _raise_on_error(stated_results, cursor.connection.info.encoding)
    cursor._check_results(results)
    cursor._set_results(results)
    cursor._last_query = query


class TransactionLocalConnection(psycopg.Connection[Any]):
    """A connection that states the COW variables at the start of every transaction.

    :class:`cowsync.pool.CowPool` builds a subclass of the pool's
    ``connection_class`` with this class mixed in and sets what to state at each
    checkout with :meth:`state_binding`; until then the connection behaves like
    its base class.
    """

    # What to state as the first statement of each transaction (None: nothing yet).
    _cow_settings: LocalSettings | None = None
    # True while a checkout holds a session: unwrappable autocommit paths are refused.
    _cow_bound: bool = False

    def state_binding(
        self,
        values: Mapping[str, str] | None,
        *,
        bound: bool,
        overlay: OverlayNaming | None = None,
    ) -> None:
        """State ``values`` (setting name -> value) in every transaction from now on.

        ``None`` stops stating anything. ``bound`` says whether ``values`` hold a
        session (then statements that cannot carry them are refused). ``overlay``
        (with ``bound``): each transaction also puts the overlay schemas first on its
        ``search_path``, transaction-locally, like the values (see
        :mod:`cowsync.overlay_path`); nothing outlives the transaction, so an unbound
        checkout has no path to give back.
        """
        if values is None:
            self._cow_settings = None
        else:
            self._cow_settings = LocalSettings.of(values, overlay=overlay if bound else None)
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
        stated = self._cow_settings
        if stated is None or command != self._get_tx_start_command():
            result: PGresult | None = yield from super()._exec_command(command, result_format)
            return result
        if self._pipeline:
            # Queued, not sent: both go out with the pipeline's next flush.
            yield from super()._exec_command(command, result_format)
            self._queue_settings(stated)
            return None
        self._check_connection_ok()
        pgconn = self.pgconn
        settings = partial(pgconn.send_query_params, stated.wire_query, stated.wire_params)
        if not psycopg.Pipeline.is_supported():  # pragma: no cover - libpq < 14
            # No pipeline to share: the parameterised statement costs a round trip of its own.
            begun: PGresult | None = yield from super()._exec_command(command, result_format)
            settings()
            _raise_on_error((yield from generators.execute(pgconn)), self.info.encoding)
            return begun
        # One flush, one round trip: BEGIN, then set_config with the ids as parameters.
        begin = partial(pgconn.send_query_params, command, None, result_format=result_format)
        results = yield from in_one_pipeline(pgconn, [begin, settings])
        _raise_on_error([result for group in results for result in group], self.info.encoding)
        return results[0][0]

    def _start_query(self) -> PQGen[None]:
        stated = self._cow_settings
        if self._autocommit and stated is not None:
            if self._pipeline:
                # Each statement of an autocommit pipeline may open the implicit
                # transaction that lasts to the next sync: state the binding first.
                self._check_connection_ok()
                self._queue_settings(stated)
                return
            if self._cow_bound and self.pgconn.transaction_status == _IDLE:
                raise ConfigurationError(
                    "this autocommit statement would run in a transaction of its own without "
                    "the session binding (transaction-local mode wraps execute(), not COPY, "
                    "stream() or named cursors); run it inside `with conn.transaction():` or "
                    "use autocommit=False"
                )
        yield from super()._start_query()

    def _queue_settings(self, stated: LocalSettings) -> None:
        """Queue the parameterised ``set_config`` in the open pipeline (as psycopg queues BEGIN)."""
        pipeline = self._pipeline
        assert pipeline is not None
        pipeline.command_queue.append(
            partial(self.pgconn.send_query_params, stated.wire_query, stated.wire_params)
        )
        pipeline.result_queue.append(None)


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
