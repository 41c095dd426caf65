"""psycopg cursors that carry the bound session with every statement.

Django's PostgreSQL backend builds three kinds of psycopg cursor; each gets a subclass
here that asks :func:`stating.statement_prefix` before sending anything:

* :class:`StatingClientCursor` (the default, client-side binding): the prefix and the
  statement go together in one simple-query message, one round trip. The cursor then
  moves to the statement's own result, so ``rowcount``, ``fetch*()``, ``description``
  and ``RETURNING`` are the statement's.
* :class:`StatingServerBindingCursor` (``OPTIONS={"server_side_binding": True}``): the
  extended protocol takes one statement per message, so the prefix and the statement
  share a pipeline: still one round trip, and one implicit transaction.
* :class:`StatingServerSideCursor` (named cursors, ``QuerySet.iterator()``): the
  ``DECLARE`` cannot be prefixed; the prefix runs just before it in the same transaction
  (an autocommit connection opens one for the two, and the ``WITH HOLD`` cursor Django
  declares there outlives it).

``executemany()``, ``copy()`` and ``stream()`` state the binding the same way as named
cursors do.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
from django.db.backends.postgresql.base import Cursor as DjangoCursor
from django.db.backends.postgresql.base import ServerBindingCursor as DjangoServerBindingCursor
from psycopg import pq, sql

from ...config import CowConfig
from .conf import cow_settings
from .stating import ignores_conflicts, ignoring_conflicts, statement_prefix

try:  # Django 5.0+ ships a named cursor with client-side binding
    from django.db.backends.postgresql.base import ServerSideCursor as DjangoServerSideCursor
except ImportError:  # Django 4.2: named cursors bind server-side
    DjangoServerSideCursor = None

_IDLE = pq.TransactionStatus.IDLE


def _config() -> CowConfig:
    return cow_settings().config


def _joined(prefix: str, query: Any, cursor: psycopg.Cursor[Any]) -> Any:
    """``prefix`` followed by ``query`` as one query string, or None if it cannot be glued."""
    if isinstance(query, str):
        return prefix + query
    if isinstance(query, bytes):
        return prefix.encode() + query
    if isinstance(query, sql.Composable):
        return prefix + query.as_string(cursor)
    return None


def _state_before(cursor: psycopg.Cursor[Any], prefix: str) -> None:
    """Send ``prefix`` alone, with a plain cursor (it must not be prefixed itself)."""
    with psycopg.Cursor(cursor.connection) as plain:
        plain.execute(prefix)


@contextlib.contextmanager
def _stated(cursor: psycopg.Cursor[Any], prefix: str) -> Iterator[None]:
    """Run the block in a transaction whose first statement is ``prefix``.

    An autocommit connection outside a transaction gets a transaction of its own for
    the block; otherwise the prefix joins the transaction already open.
    """
    conn = cursor.connection
    if conn.autocommit and conn.pgconn.transaction_status == _IDLE:
        with conn.transaction():
            _state_before(cursor, prefix)
            yield
    else:
        _state_before(cursor, prefix)
        yield


class StatingMixin:
    """The parts every stating cursor shares: ``executemany``, ``copy`` and ``stream``."""

    __slots__ = ()

    def executemany(self, query: Any, params_seq: Iterable[Any], **kwargs: Any) -> None:
        """``executemany`` with the bound session stated first (one transaction)."""
        cursor: psycopg.Cursor[Any] = self  # type: ignore[assignment]
        prefix = statement_prefix(cursor.connection, _config())
        if prefix is None:
            super().executemany(query, params_seq, **kwargs)  # type: ignore[misc]
            return
        with _stated(cursor, prefix):
            super().executemany(query, params_seq, **kwargs)  # type: ignore[misc]

    @contextlib.contextmanager
    def copy(self, statement: Any, params: Any = None, **kwargs: Any) -> Iterator[Any]:
        """``copy`` with the bound session stated first (one transaction)."""
        cursor: psycopg.Cursor[Any] = self  # type: ignore[assignment]
        prefix = statement_prefix(cursor.connection, _config())
        outer = contextlib.nullcontext() if prefix is None else _stated(cursor, prefix)
        with outer, super().copy(statement, params, **kwargs) as copy:  # type: ignore[misc]
            yield copy

    def stream(self, query: Any, params: Any = None, **kwargs: Any) -> Iterator[Any]:
        """``stream`` with the bound session stated first (one transaction)."""
        cursor: psycopg.Cursor[Any] = self  # type: ignore[assignment]
        prefix = statement_prefix(cursor.connection, _config())
        if prefix is None:
            yield from super().stream(query, params, **kwargs)  # type: ignore[misc]
            return
        with _stated(cursor, prefix):
            yield from super().stream(query, params, **kwargs)  # type: ignore[misc]


class ClientStatingMixin(StatingMixin):
    """For client-side-binding cursors: bound statements carry their session in-message."""

    __slots__ = ()

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        """Execute ``query``; when bound, prefixed with the session in the same message."""
        cursor: psycopg.Cursor[Any] = self  # type: ignore[assignment]
        conn = cursor.connection
        prefix = statement_prefix(conn, _config())
        if prefix is None:
            return super().execute(query, params, **kwargs)  # type: ignore[misc]
        joined = _joined(prefix, query, cursor)
        if joined is None or conn._pipeline is not None:
            # Not a string we can extend, or pipeline mode (one statement per message).
            with _stated(cursor, prefix):
                return super().execute(query, params, **kwargs)  # type: ignore[misc]
        if ignores_conflicts(joined):
            # Glued to our prefix, the statement is no longer the lone INSERT the engine
            # recognises as ON CONFLICT DO NOTHING from its text: say so explicitly, for
            # this statement only.
            joined = ignoring_conflicts(prefix, joined)
        super().execute(joined, params, **kwargs)  # type: ignore[misc]
        # The cursor stands on the first result (set_config's): move to the statement's.
        cursor.nextset()
        return self


class ServerBindingStatingMixin(StatingMixin):
    """For server-side-binding cursors: the session is stated in the same pipeline."""

    __slots__ = ()

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        """Execute ``query``; when bound, the session is stated first in the same pipeline."""
        cursor: psycopg.Cursor[Any] = self  # type: ignore[assignment]
        conn = cursor.connection
        prefix = statement_prefix(conn, _config())
        if prefix is None:
            return super().execute(query, params, **kwargs)  # type: ignore[misc]
        if not psycopg.Pipeline.is_supported():  # pragma: no cover - libpq < 14
            with _stated(cursor, prefix):
                return super().execute(query, params, **kwargs)  # type: ignore[misc]
        with conn.pipeline():
            with psycopg.Cursor(conn) as plain:
                plain.execute(prefix)
            super().execute(query, params, **kwargs)  # type: ignore[misc]
        return self


class NamedStatingMixin:
    """For named (server-side) cursors: the session is stated just before the ``DECLARE``."""

    __slots__ = ()

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        """Declare the cursor; when bound, in a transaction that states the session first."""
        cursor: psycopg.Cursor[Any] = self  # type: ignore[assignment]
        prefix = statement_prefix(cursor.connection, _config())
        if prefix is None:
            return super().execute(query, params, **kwargs)  # type: ignore[misc]
        with _stated(cursor, prefix):
            return super().execute(query, params, **kwargs)  # type: ignore[misc]


class StatingClientCursor(ClientStatingMixin, DjangoCursor):  # type: ignore[misc]
    """Django's default cursor (client-side binding), stating the bound session."""

    __slots__ = ()


class StatingServerBindingCursor(ServerBindingStatingMixin, DjangoServerBindingCursor):  # type: ignore[misc]
    """Django's ``server_side_binding`` cursor, stating the bound session."""

    __slots__ = ()


class StatingNamedCursor(NamedStatingMixin, psycopg.ServerCursor[Any]):
    """A named cursor with server-side binding (``server_side_binding=True``)."""

    __slots__ = ()


if DjangoServerSideCursor is not None:

    class StatingServerSideCursor(NamedStatingMixin, DjangoServerSideCursor):  # type: ignore[misc]
        """Django's named cursor with client-side binding (the default for ``iterator()``)."""

        __slots__ = ()

else:  # pragma: no cover - Django without ServerSideCursor binds named cursors server-side
    StatingServerSideCursor = StatingNamedCursor  # type: ignore[assignment,misc]


@functools.lru_cache(maxsize=64)
def stating_cursor_factory(factory: type[Any] | None, server_side_binding: bool) -> type[Any]:
    """The stating version of a ``cursor_factory`` (None: Django's default for the binding)."""
    if factory is None:
        return StatingServerBindingCursor if server_side_binding else StatingClientCursor
    if factory is DjangoCursor:
        return StatingClientCursor
    if factory is DjangoServerBindingCursor:
        return StatingServerBindingCursor
    if issubclass(factory, StatingMixin):
        return factory
    # A project's own cursor class: put the stating behaviour in front of it.
    mixin = (
        ClientStatingMixin
        if issubclass(factory, psycopg.ClientCursor)
        else ServerBindingStatingMixin
    )
    return type(
        f"Stating{factory.__name__}", (mixin, factory), {"__module__": __name__, "__slots__": ()}
    )
