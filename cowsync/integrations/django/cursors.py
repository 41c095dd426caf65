"""psycopg cursors that carry the bound session with every statement.

Django's PostgreSQL backend builds three kinds of psycopg cursor; each gets a subclass
here that asks :func:`stating.settings_to_state` before sending anything. What it states
is one ``SELECT pg_catalog.set_config('app.session_id', %s, true), ...`` whose values
(the ids) are parameters, bound server-side whatever the cursor's own binding: no id is
ever part of a statement's text, which every backend of the same role can read in
``pg_stat_activity``.

* :class:`StatingClientCursor` (the default, client-side binding) and
  :class:`StatingServerBindingCursor` (``OPTIONS={"server_side_binding": True}``): the
  ``set_config`` and the statement share a pipeline: one network flush, one round trip,
  one implicit transaction in autocommit. The statement is its own message, so
  ``rowcount``, ``fetch*()``, ``description`` and ``RETURNING`` are its own, and the
  engine reads it alone with ``current_query()``. The extended protocol takes one
  statement per message: a string holding several statements is stated the way named
  cursors are (below).
* :class:`StatingServerSideCursor` (named cursors, ``QuerySet.iterator()``): the
  ``DECLARE`` cannot share a pipeline; the ``set_config`` runs just before it in the same
  transaction (an autocommit connection opens one for the two, and the ``WITH HOLD``
  cursor Django declares there outlives it).

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
from ...pool.transaction_local import LocalSettings, can_execute_stated, execute_stated
from .conf import cow_settings
from .ddl_routing import split_statements
from .stating import settings_to_state, state_settings

try:  # Django 5.0+ ships a named cursor with client-side binding
    from django.db.backends.postgresql.base import ServerSideCursor as DjangoServerSideCursor
except ImportError:  # Django 4.2: named cursors bind server-side
    DjangoServerSideCursor = None

_IDLE = pq.TransactionStatus.IDLE
# libpq has pipelines and psycopg the cursor hooks execute_stated uses.
_PIPELINED = can_execute_stated()


def _config() -> CowConfig:
    return cow_settings().config


def _one_statement(query: Any, conn: psycopg.Connection[Any]) -> bool:
    """Does ``query`` hold a single statement (so that it can share a pipeline)?

    Cheap for the common case (no semicolon at all); otherwise semicolons inside
    literals and quoted names do not count. A semicolon in a comment counts: wrongly
    taking one statement for several only costs a round trip.
    """
    if isinstance(query, sql.Composable):
        query = query.as_string(conn)
    if isinstance(query, bytes):
        if b";" not in query:
            return True
        query = query.decode(conn.info.encoding, errors="replace")
    if not isinstance(query, str):
        return False
    return ";" not in query or len(split_statements(query)) <= 1


@contextlib.contextmanager
def _stated(cursor: psycopg.Cursor[Any], stated: LocalSettings) -> Iterator[None]:
    """Run the block in a transaction whose first statement states ``stated``.

    An autocommit connection outside a transaction gets a transaction of its own for
    the block; otherwise the statement joins the transaction already open (or the
    pipeline, and goes out with the block's statements).
    """
    conn = cursor.connection
    if conn.autocommit and conn.pgconn.transaction_status == _IDLE and conn._pipeline is None:
        with conn.transaction():
            state_settings(conn, stated)
            yield
    else:
        state_settings(conn, stated)
        yield


class StatingMixin:
    """What every stating cursor shares: ``executemany``, ``copy`` and ``stream``."""

    __slots__ = ()

    def executemany(self, query: Any, params_seq: Iterable[Any], **kwargs: Any) -> None:
        """``executemany`` with the bound session stated first (one transaction)."""
        cursor: psycopg.Cursor[Any] = self  # type: ignore[assignment]
        stated = settings_to_state(cursor.connection, _config())
        if stated is None:
            super().executemany(query, params_seq, **kwargs)  # type: ignore[misc]
            return
        with _stated(cursor, stated):
            super().executemany(query, params_seq, **kwargs)  # type: ignore[misc]

    @contextlib.contextmanager
    def copy(self, statement: Any, params: Any = None, **kwargs: Any) -> Iterator[Any]:
        """``copy`` with the bound session stated first (one transaction)."""
        cursor: psycopg.Cursor[Any] = self  # type: ignore[assignment]
        stated = settings_to_state(cursor.connection, _config())
        outer = contextlib.nullcontext() if stated is None else _stated(cursor, stated)
        with outer, super().copy(statement, params, **kwargs) as copy:  # type: ignore[misc]
            yield copy

    def stream(self, query: Any, params: Any = None, **kwargs: Any) -> Iterator[Any]:
        """``stream`` with the bound session stated first (one transaction)."""
        cursor: psycopg.Cursor[Any] = self  # type: ignore[assignment]
        stated = settings_to_state(cursor.connection, _config())
        if stated is None:
            yield from super().stream(query, params, **kwargs)  # type: ignore[misc]
            return
        with _stated(cursor, stated):
            yield from super().stream(query, params, **kwargs)  # type: ignore[misc]


class PipelinedStatingMixin(StatingMixin):
    """For unnamed cursors: the session is stated in the same pipeline as the statement."""

    __slots__ = ()

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        """Execute ``query``; when bound, the session is stated first in the same pipeline."""
        cursor: psycopg.Cursor[Any] = self  # type: ignore[assignment]
        conn = cursor.connection
        stated = settings_to_state(conn, _config())
        if stated is None:
            return super().execute(query, params, **kwargs)  # type: ignore[misc]
        if (
            not psycopg.Pipeline.is_supported()  # libpq < 14
            or conn._pipeline is not None
            or kwargs.get("prepare")
            or not _one_statement(query, conn)
        ):
            # Already in a pipeline (the two are queued together), or no pipeline to
            # share: the set_config goes just before, in the same transaction.
            with _stated(cursor, stated):
                return super().execute(query, params, **kwargs)  # type: ignore[misc]
        if _PIPELINED and _executes_as_psycopg(type(self)):
            execute_stated(cursor, stated, query, params, binary=kwargs.get("binary"))
            return self
        # A project's cursor with an execute() of its own: psycopg's pipeline keeps it in
        # the path (one round trip too, at a higher client CPU cost).
        with conn.pipeline():
            state_settings(conn, stated)
            super().execute(query, params, **kwargs)  # type: ignore[misc]
        return self


@functools.lru_cache(maxsize=64)
def _executes_as_psycopg(cls: type[Any]) -> bool:
    """Is the ``execute`` behind our mixin in ``cls`` psycopg's own (no override to keep)?"""
    mro = cls.__mro__
    for klass in mro[mro.index(PipelinedStatingMixin) + 1 :]:
        if "execute" in vars(klass):
            return klass is psycopg.Cursor
    return False


class NamedStatingMixin:
    """For named (server-side) cursors: the session is stated just before the ``DECLARE``."""

    __slots__ = ()

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        """Declare the cursor; when bound, in a transaction that states the session first."""
        cursor: psycopg.Cursor[Any] = self  # type: ignore[assignment]
        stated = settings_to_state(cursor.connection, _config())
        if stated is None:
            return super().execute(query, params, **kwargs)  # type: ignore[misc]
        with _stated(cursor, stated):
            return super().execute(query, params, **kwargs)  # type: ignore[misc]


class StatingClientCursor(PipelinedStatingMixin, DjangoCursor):  # type: ignore[misc]
    """Django's default cursor (client-side binding), stating the bound session."""

    __slots__ = ()


class StatingServerBindingCursor(PipelinedStatingMixin, DjangoServerBindingCursor):  # type: ignore[misc]
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
    return type(
        f"Stating{factory.__name__}",
        (PipelinedStatingMixin, factory),
        {"__module__": __name__, "__slots__": ()},
    )
