"""CowPool: a psycopg_pool ConnectionPool whose connections carry the caller's session.

The pool is psycopg_pool's own; CowPool only plugs into its hooks:

* ``getconn()`` (and so ``connection()``) applies the binding the caller asked for,
  or the one of the current context (:func:`cowsync.bind`), to the connection it
  hands out;
* the ``configure`` hook clears the COW variables of every new connection;
* every return clears them and gives back the ``search_path`` a binding changed
  (overlay mode, :mod:`cowsync.overlay_path`), so a connection waiting in the pool
  never carries a borrower's session: in the ``reset`` hook, on the pool's worker thread (the
  default), or in ``putconn()`` on the borrower's thread (``clear_on_return="caller"``);
* ``get_stats()`` adds counters of bound and unbound checkouts.

Two modes (see docs/pool.md):

* session mode (default): the variables are set on the server session at checkout,
  one round trip, none when the connection already carries exactly that binding;
* transaction-local mode (``transaction_local=True``), for transaction poolers such
  as pgbouncer: every transaction states the variables itself with
  ``set_config(..., true)``; see :mod:`cowsync.pool.transaction_local`.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from time import monotonic
from typing import Any, Literal, cast
from weakref import WeakKeyDictionary

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool
from psycopg_pool.abc import CT, ConnectionCB, ConninfoParam

from ..binding import (
    Binding,
    binding_statement,
    current_binding,
    execute_committed,
    make_binding,
)
from ..config import DEFAULT_CONFIG, CowConfig
from ..errors import ConfigurationError
from ..overlay_path import OverlayNaming
from .transaction_local import (
    TransactionLocalConnection,
    check_psycopg_support,
    transaction_local_class,
)

_IDLE = pq.TransactionStatus.IDLE


class _FromContext(enum.Enum):
    TOKEN = "the current binding"


FROM_CONTEXT: Literal[_FromContext.TOKEN] = _FromContext.TOKEN
"""Default of ``CowPool.connection(session_id=...)``: use :func:`cowsync.current_binding`."""


class _Unknown(enum.Enum):
    TOKEN = "unknown"


# What a connection is known to carry: a Binding, None (no session), or unknown.
_Applied = Binding | None | _Unknown
_UNKNOWN = _Unknown.TOKEN

# The binding requested by connection(session_id=...), handed to getconn() for the
# duration of one checkout. A one-element tuple so that "requested: no session"
# (None) differs from "nothing requested" (the default).
_requested: contextvars.ContextVar[tuple[Binding | None] | None] = contextvars.ContextVar(
    "cowsync_pool_requested_binding", default=None
)


class CowPool(ConnectionPool[CT]):
    """A :class:`psycopg_pool.ConnectionPool` that binds the connections it hands out.

    Accepts every argument of ``ConnectionPool`` (``configure`` and ``reset``
    callbacks run before cowsync's own), plus:

    :param config: the names of the COW variables; the same config the engine was
        deployed with.
    :param transaction_local: state the variables inside every transaction instead
        of on the server session (for pgbouncer in transaction pooling mode).
    :param clear_on_return: where a returned connection's variables are cleared:
        ``"worker"`` (default), the pool's worker thread after ``putconn()`` has
        returned, so the borrower never waits for it; ``"caller"``, inside
        ``putconn()``, on the borrower's thread: one round trip the borrower waits
        for, but no hand-off to another thread (cheaper when the server is local and
        CPU is scarce; see docs/pool.md). With a ``reset`` callback of your own the
        pool's worker runs it, and the clear follows it there, whatever this says.

    >>> with CowPool(dsn, open=True) as pool:               # doctest: +SKIP
    ...     with cowsync.bind("agent-run-42", "tool-call-1"):
    ...         with pool.connection() as conn:
    ...             conn.execute("UPDATE items SET qty = 0 WHERE id = 1")
    ...     with pool.connection(session_id="agent-run-42") as conn:
    ...         conn.execute("SELECT * FROM items").fetchall()
    """

    def __init__(
        self,
        conninfo: ConninfoParam = "",
        *,
        config: CowConfig = DEFAULT_CONFIG,
        transaction_local: bool = False,
        clear_on_return: Literal["worker", "caller"] = "worker",
        connection_class: type[CT] = cast(type[CT], psycopg.Connection),  # noqa: B008
        configure: ConnectionCB[CT] | None = None,
        reset: ConnectionCB[CT] | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(config, CowConfig):
            raise ConfigurationError(f"config must be a cowsync.CowConfig, got {config!r}")
        if clear_on_return not in ("worker", "caller"):
            raise ConfigurationError(
                f"clear_on_return must be 'worker' or 'caller', got {clear_on_return!r}"
            )
        if transaction_local:
            check_psycopg_support()
            connection_class = cast(type[CT], transaction_local_class(connection_class))
        # Set before the pool opens: its workers may connect (and configure) at once.
        self._config = config
        self._transaction_local = bool(transaction_local)
        self._user_configure = configure
        self._user_reset = reset
        self._applied: WeakKeyDictionary[CT, _Applied] = WeakKeyDictionary()
        self._cow_lock = threading.Lock()
        self._cow_stats: Counter[str] = Counter()
        self._clear_statement = _clear_statement(config)
        # psycopg_pool hands every return to a worker when there is a reset callback.
        self._clear_in_putconn = clear_on_return == "caller" and reset is None
        super().__init__(
            conninfo,
            connection_class=connection_class,
            configure=self._configure_connection,
            reset=None if self._clear_in_putconn else self._reset_connection_binding,
            **kwargs,
        )

    @property
    def config(self) -> CowConfig:
        """The names of the COW variables this pool sets."""
        return self._config

    @property
    def transaction_local(self) -> bool:
        """True when the variables are stated inside every transaction (pgbouncer mode)."""
        return self._transaction_local

    # -- checkout --------------------------------------------------------------------------

    @contextlib.contextmanager
    def connection(
        self,
        timeout: float | None = None,
        *,
        session_id: str | Literal[_FromContext.TOKEN] | None = FROM_CONTEXT,
        operation_id: str | None = None,
        visible_operations: Iterable[str] | None = None,
    ) -> Iterator[CT]:
        """A connection bound to the current binding, or to the session given here.

        ``session_id`` (with ``operation_id`` and ``visible_operations``) overrides
        :func:`cowsync.bind` for this connection only; ``session_id=None`` asks for
        an unbound connection whatever the context says. Otherwise behaves as
        ``ConnectionPool.connection()``: the transaction is committed or rolled
        back on exit and the connection goes back to the pool, unbound.
        """
        requested = _requested_binding(session_id, operation_id, visible_operations)
        with contextlib.ExitStack() as stack:
            token = _requested.set(requested)
            try:
                conn = stack.enter_context(super().connection(timeout))
            finally:
                _requested.reset(token)
            yield conn

    def getconn(self, timeout: float | None = None) -> CT:
        """Obtain a connection bound to the current binding (see ``connection()``).

        Pair it with :meth:`putconn`, which unbinds the connection.
        """
        requested = _requested.get()
        binding = current_binding() if requested is None else requested[0]
        deadline = monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            conn = super().getconn(max(deadline - monotonic(), 0.001))
            try:
                self._bind(conn, binding)
            except psycopg.OperationalError:
                broken = conn.broken
                self.putconn(conn)
                if broken and monotonic() < deadline:
                    # Killed while it waited in the pool: the pool replaces it; try another.
                    continue
                raise
            except BaseException:
                self.putconn(conn)
                raise
            return conn

    def putconn(self, conn: CT) -> None:
        """Return a connection to the pool, unbound (see ``clear_on_return``)."""
        if self._clear_in_putconn and getattr(conn, "_pool", None) is self and not self.closed:
            self._clear_returned(conn)
        super().putconn(conn)

    def _bind(self, conn: CT, binding: Binding | None) -> None:
        if self._transaction_local:
            self._state_in_transactions(conn, binding)
        else:
            self._apply_to_session(conn, binding)
        self._count("cow_checkouts_bound" if binding is not None else "cow_checkouts_unbound")

    def _apply_to_session(self, conn: CT, binding: Binding | None) -> None:
        with self._cow_lock:
            applied = self._applied.get(conn, _UNKNOWN)
        # A preview is materialised when applied, so it is never reused as it stands.
        if applied == binding and (binding is None or not binding.visible_operations):
            self._count("cow_bindings_reused")
            return
        self._remember(conn, _UNKNOWN)
        if binding is None:
            execute_committed(conn, self._clear_statement)
        else:
            query, params = binding_statement(binding, self._config)
            execute_committed(conn, query, params)
        self._remember(conn, binding)
        self._count("cow_bindings_applied")

    def _state_in_transactions(self, conn: CT, binding: Binding | None) -> None:
        tl_conn = cast(TransactionLocalConnection, conn)
        if binding is None:
            tl_conn.state_binding(dict.fromkeys(self._config.variables, ""), bound=False)
            return
        values = binding.settings(self._config)
        if binding.visible_operations:
            # Materialise the preview once per checkout (it writes), not per transaction.
            row = execute_committed(
                conn,
                "SELECT cowsync.prepare_preview(%s, %s)",
                [binding.session_id, values[self._config.visible_operations_variable]],
            )
            values[self._config.session_variable] = str(row[0])
            self._count("cow_bindings_applied")
        tl_conn.state_binding(values, bound=True, overlay=OverlayNaming.of(self._config))

    # -- pool hooks ------------------------------------------------------------------------

    def _configure_connection(self, conn: CT) -> None:
        if self._user_configure is not None:
            self._user_configure(conn)
        # A new connection may carry values from role or database defaults or from
        # the conninfo's options; start from a known state.
        self._clear(conn)

    def _reset_connection_binding(self, conn: CT) -> None:
        if self._user_reset is not None:
            self._user_reset(conn)
        if conn.info.transaction_status != _IDLE:
            return  # the pool discards a connection a reset left in a transaction
        # Unconditional: the borrower may have run its own SET, which no client-side
        # state reveals; one statement, run by the pool's worker, not the borrower.
        self._clear(conn)
        self._count("cow_resets")

    def _clear_returned(self, conn: CT) -> None:
        # What psycopg_pool's return does before a reset callback: end the transaction.
        status = conn.info.transaction_status
        try:
            if status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR):
                conn.rollback()
            if conn.info.transaction_status != _IDLE:
                return  # busy or broken: psycopg_pool closes and replaces it
            self._clear(conn)
        except Exception:
            # Not provably clean: close it, so the pool replaces it instead of reusing it.
            conn.close()
            return
        self._count("cow_resets")

    def _clear(self, conn: CT) -> None:
        if isinstance(conn, TransactionLocalConnection):
            conn.state_binding(None, bound=False)
        self._remember(conn, _UNKNOWN)
        execute_committed(conn, self._clear_statement)
        self._remember(conn, None)
        if isinstance(conn, TransactionLocalConnection):
            conn.state_binding(dict.fromkeys(self._config.variables, ""), bound=False)

    def _remember(self, conn: CT, applied: _Applied) -> None:
        with self._cow_lock:
            self._applied[conn] = applied

    # -- statistics ------------------------------------------------------------------------

    def _count(self, key: str) -> None:
        with self._cow_lock:
            self._cow_stats[key] += 1

    def get_stats(self) -> dict[str, int]:
        """psycopg_pool's statistics plus cowsync's counters.

        ``cow_checkouts_bound`` / ``cow_checkouts_unbound``: connections handed out
        with and without a session; ``cow_bindings_applied``: checkouts that spent a
        round trip on the binding; ``cow_bindings_reused``: checkouts that found the
        connection already carrying it; ``cow_resets``: returns that cleared the
        variables.
        """
        stats = super().get_stats()
        with self._cow_lock:
            stats.update(self._cow_stats)
        return stats

    def pop_stats(self) -> dict[str, int]:
        """Like :meth:`get_stats`, then reset the counters to zero."""
        stats = super().pop_stats()
        with self._cow_lock:
            stats.update(self._cow_stats)
            self._cow_stats = Counter()
        return stats


def _requested_binding(
    session_id: str | Literal[_FromContext.TOKEN] | None,
    operation_id: str | None,
    visible_operations: Iterable[str] | None,
) -> tuple[Binding | None] | None:
    if session_id is FROM_CONTEXT:
        if operation_id is not None or visible_operations is not None:
            raise ConfigurationError(
                "pool.connection(operation_id=..., visible_operations=...) needs session_id "
                "too; to change the operation of the current binding use cowsync.bind()"
            )
        return None
    if session_id is None:
        if operation_id is not None or visible_operations is not None:
            raise ConfigurationError("operation_id and visible_operations need a session_id")
        return (None,)
    return (make_binding(session_id, operation_id, visible_operations),)


def _clear_statement(config: CowConfig) -> bytes:
    """The statement that clears the three variables and gives the unbound path back.

    Built once: the values are '' in the text rather than parameters, which costs the
    client half as much, and it runs on every return.
    """
    query, params = binding_statement(None, config)
    assert not params
    return query
