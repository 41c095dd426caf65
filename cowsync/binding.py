"""Binding a connection, or the current context, to a session.

Two ways to say "these statements belong to session S":

* :func:`session` sets the COW variables on one connection and restores the
  previous values on exit (``search_path`` included: see below).
* :func:`bind` records the binding in a :class:`contextvars.ContextVar`; pools and
  integrations read it with :func:`current_binding` when they hand out a connection.

Ids never appear in statement text: every statement here sends them as parameters,
through a server-side-binding cursor whatever the connection's ``cursor_factory``
(a ``ClientCursor`` would interpolate them), so ``pg_stat_activity.query`` shows
``set_config('app.session_id', $1, false)`` to every other backend, including those of
the same role.

Every statement that binds also puts the overlay schemas first on ``search_path``
(overlay mode: unqualified names resolve to the session's views), and every statement
that unbinds gives the unbound path back, saved meanwhile in the custom setting
``cowsync.unbound_search_path``; the same statement, no extra round trip. See
:mod:`cowsync.overlay_path`; :func:`settings_query` builds the statement for every path.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq, sql
from psycopg.rows import tuple_row

from .config import DEFAULT_CONFIG, CowConfig, validate_id
from .errors import ConfigurationError
from .overlay_path import UNBOUND_SEARCH_PATH, OverlayNaming, PathAction, path_items


@dataclass(frozen=True)
class Binding:
    """A session, an optional operation and an optional preview (visible operations)."""

    session_id: str
    operation_id: str | None = None
    visible_operations: tuple[str, ...] | None = None

    def settings(self, config: CowConfig = DEFAULT_CONFIG) -> dict[str, str]:
        """The values of the COW variables for this binding ('' means unset)."""
        return {
            config.session_variable: self.session_id,
            config.operation_variable: self.operation_id or "",
            config.visible_operations_variable: ",".join(self.visible_operations or ()),
        }


def make_binding(
    session_id: str,
    operation_id: str | None = None,
    visible_operations: Iterable[str] | None = None,
) -> Binding:
    """Validate ids and build a :class:`Binding`."""
    validate_id(session_id, "session id")
    if operation_id is not None:
        validate_id(operation_id, "operation id")
    visible = None
    if visible_operations is not None:
        visible = tuple(validate_id(op, "visible operation id") for op in visible_operations)
    return Binding(session_id, operation_id, visible)


def new_session_id() -> str:
    """A fresh session id (a random UUID)."""
    return str(uuid.uuid4())


def execute_bound(
    conn: psycopg.Connection,
    query: str | bytes,
    params: list[object] | None = None,
    *,
    prepare: bool | None = None,
) -> Any:
    """Run ``query`` with ``params`` sent apart from its text; return the first row (a tuple).

    A plain :class:`psycopg.Cursor` binds server-side, so the values never become part
    of the statement text other backends see in ``pg_stat_activity``, whatever cursor
    class the connection makes by default (a ``ClientCursor`` would interpolate them).
    """
    with psycopg.Cursor(conn, row_factory=tuple_row) as cursor:
        cursor.execute(query, params, prepare=prepare)
        return None if cursor.description is None else cursor.fetchone()


def read_settings(conn: psycopg.Connection, config: CowConfig = DEFAULT_CONFIG) -> dict[str, str]:
    """The current values of the COW variables on ``conn`` ('' when unset)."""
    return read_values(conn, config.variables)


def read_values(conn: psycopg.Connection, names: Iterable[str]) -> dict[str, str]:
    """The current values of the settings ``names`` on ``conn`` ('' when unset)."""
    names = tuple(names)
    row = execute_bound(
        conn,
        "SELECT " + ", ".join("coalesce(pg_catalog.current_setting(%s, true), '')" for _ in names),
        list(names),
    )
    assert row is not None
    return dict(zip(names, row))


def restorable_names(config: CowConfig = DEFAULT_CONFIG) -> tuple[str, ...]:
    """The settings a binding changes: the COW variables, ``search_path`` and the saved path.

    Read them before binding and set them back raw (:func:`apply_settings`) to restore
    exactly what was there, also an outer binding.
    """
    return (*config.variables, "search_path", UNBOUND_SEARCH_PATH)


@functools.lru_cache(maxsize=256)
def settings_query(
    names: tuple[str, ...],
    *,
    local: bool,
    path: PathAction | None = None,
    preview_name: str | None = None,
    empty: bool = False,
    numbered: bool = False,
) -> bytes:
    """The one statement every binding path sends: ``SELECT pg_catalog.set_config(...), ...``.

    One ``set_config(name, value, local)`` per setting in ``names`` (the names are
    validated setting names, in the text; the values are parameters, one each, in that
    order), then what ``path`` does to ``search_path`` (:mod:`cowsync.overlay_path`; its
    parameters, for "bind", follow the values). ``preview_name``: that setting's value is
    ``cowsync.prepare_preview(session, visible operations)``, two parameters in its place.
    ``empty``: every value is '' in the text, no parameter (the clear every pool return
    sends: half the client cost). ``numbered``: ``$1, $2, ...`` placeholders for libpq
    rather than psycopg's ``%s``.
    """
    counter = itertools.count(1)

    def placeholder() -> sql.Composable:
        return sql.SQL(f"${next(counter)}") if numbered else sql.Placeholder()

    items: list[sql.Composable] = []
    for name in names:
        if empty:
            value: sql.Composable = sql.Literal("")
        elif name == preview_name:
            value = sql.SQL("cowsync.prepare_preview({}, {})").format(placeholder(), placeholder())
        else:
            value = placeholder()
        items.append(
            sql.SQL("pg_catalog.set_config({}, {}, {})").format(
                sql.Literal(name), value, sql.Literal(local)
            )
        )
    items.extend(path_items(path, local, placeholder))
    return (sql.SQL("SELECT ") + sql.SQL(", ").join(items)).as_bytes(None)


def binding_statement(
    binding: Binding | None, config: CowConfig = DEFAULT_CONFIG, *, local: bool = False
) -> tuple[bytes, list[object]]:
    """One statement that applies ``binding`` (None: clears the variables).

    Binding also puts the overlay schemas first on ``search_path``; clearing gives the
    unbound path back (see :mod:`cowsync.overlay_path`). A preview (visible operations)
    binds the session variable to the preview copy that ``cowsync.prepare_preview``
    materialises, in the same round trip.
    """
    if binding is None:
        return settings_query(config.variables, local=local, path="unbind", empty=True), []
    values = binding.settings(config)
    preview = bool(binding.visible_operations)
    params: list[object] = []
    for name, value in values.items():
        if preview and name == config.session_variable:
            params.extend((value, values[config.visible_operations_variable]))
        else:
            params.append(value)
    params.extend(OverlayNaming.of(config).params)
    query = settings_query(
        config.variables,
        local=local,
        path="bind",
        preview_name=config.session_variable if preview else None,
    )
    return query, params


def apply_settings(
    conn: psycopg.Connection, values: dict[str, str], *, local: bool = False
) -> None:
    """Set settings to raw values in one round trip (``local``: this transaction)."""
    execute_bound(conn, settings_query(tuple(values), local=local), list(values.values()))


def apply_binding(
    conn: psycopg.Connection,
    binding: Binding | None,
    config: CowConfig = DEFAULT_CONFIG,
    *,
    local: bool = False,
) -> None:
    """Apply ``binding`` (or clear it) on ``conn`` in one round trip, ``search_path`` included."""
    query, params = binding_statement(binding, config, local=local)
    execute_bound(conn, query, params)


@contextlib.contextmanager
def session(
    conn: psycopg.Connection,
    session_id: str,
    operation_id: str | None = None,
    *,
    visible_operations: Iterable[str] | None = None,
    config: CowConfig = DEFAULT_CONFIG,
) -> Iterator[psycopg.Connection]:
    """Bind ``conn`` to a session for the duration of the block.

    The previous values of the COW variables, of ``search_path`` and of
    ``cowsync.unbound_search_path`` come back on exit, also when the block raises,
    so a nested block gives the outer binding back. Inside the block the overlay
    schemas come first on ``search_path`` (overlay mode; a database without them
    keeps its path). With ``visible_operations`` the connection reads the session as
    if only those operations had happened (a preview) and refuses writes.

    Enter it with no transaction open on ``conn``: the binding is committed on
    its own, so a rollback inside the block cannot silently unbind the
    connection. End the block's transactions inside it: if one is still open
    when the block ends, the unbinding happens inside that transaction, and
    rolling it back afterwards brings the binding back (writes then go to the
    session, never to production).

    >>> with cowsync.session(conn, "agent-run-42", "tool-call-1"):  # doctest: +SKIP
    ...     conn.execute("UPDATE items SET qty = 0 WHERE id = 1")
    """
    binding = make_binding(session_id, operation_id, visible_operations)
    _require_idle(conn)
    with conn.transaction():
        # search_path too: the exit gives back the caller's path (an outer binding's
        # overlay path included), byte for byte.
        previous = read_values(conn, restorable_names(config))
        apply_binding(conn, binding, config)
    try:
        yield conn
    finally:
        if not conn.closed and not conn.broken:
            if conn.info.transaction_status == pq.TransactionStatus.INERROR:
                conn.rollback()
            if conn.info.transaction_status == pq.TransactionStatus.IDLE:
                with conn.transaction():
                    apply_settings(conn, previous)
            else:
                # A transaction is still open (e.g. ``with psycopg.connect() as conn``
                # commits after this block): unbind inside it, so the rest of the
                # transaction and everything after its commit run unbound.
                apply_settings(conn, previous)


def _require_idle(conn: psycopg.Connection) -> None:
    status = conn.info.transaction_status
    if status != pq.TransactionStatus.IDLE:
        raise ConfigurationError(
            "cowsync.session() needs a connection with no transaction open: a setting made "
            "inside a transaction would be undone by a rollback and later writes would reach "
            "production. Commit or roll back first, or enter cowsync.session() before "
            "conn.transaction()"
        )


_current: contextvars.ContextVar[Binding | None] = contextvars.ContextVar(
    "cowsync_binding", default=None
)


def current_binding() -> Binding | None:
    """The binding of the current context (thread, task), or None."""
    return _current.get()


class bind(contextlib.ContextDecorator):
    """Bind the current context to a session: ``with cowsync.bind("s1"): ...``.

    Usable as a context manager and as a decorator. Bindings nest; the previous
    one comes back on exit. Pools and integrations apply it to the connections
    they hand out.
    """

    def __init__(
        self,
        session_id: str,
        operation_id: str | None = None,
        visible_operations: Iterable[str] | None = None,
    ) -> None:
        self.binding = make_binding(session_id, operation_id, visible_operations)
        self._tokens: list[contextvars.Token[Binding | None]] = []

    def __enter__(self) -> Binding:
        self._tokens.append(_current.set(self.binding))
        return self.binding

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._tokens.pop())


@contextlib.contextmanager
def unbound() -> Iterator[None]:
    """Run a block with no binding (e.g. a reviewer's query inside a bound request)."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)


def execute_committed(
    conn: psycopg.Connection, query: str | bytes, params: list[object] | None = None
) -> Any:
    """Run one statement in a transaction of its own, committed: one round trip.

    For an idle connection (pool checkout, configure, reset): autocommit is switched
    on client-side for the statement, because a session-level setting made inside a
    borrower's transaction would be undone by its rollback. ``prepare=False``: the
    same text runs at every checkout, and a server-side prepared statement would not
    survive a transaction pooler. The parameters travel apart from the text (see
    :func:`execute_bound`). Returns the first row, as a tuple.
    """
    previous = conn.autocommit
    if not previous:
        conn.autocommit = True
    try:
        return execute_bound(conn, query, params, prepare=False)
    finally:
        if not previous and not conn.closed:
            conn.autocommit = False
