"""What each statement must carry so that it runs in the bound session, and nothing else.

The backend never leaves a session on the server connection. Every statement sent while
a binding is active (:func:`cowsync.bind`, :func:`cow_session`, the middleware) carries
the COW variables itself, as *transaction-local* settings stated just before it:

    SELECT set_config('app.session_id', 'S', true), ...; <the statement>

Why per statement, not "SET once and remember":

* a ``set_config(..., false)`` made inside a transaction is undone by ``ROLLBACK`` and by
  ``ROLLBACK TO SAVEPOINT``; a cached "already applied" flag would then lie and the next
  write would silently reach production. Here there is no such flag to get wrong: the
  binding travels with the statement, so it survives every rollback that keeps the
  statement, and disappears with every rollback that drops it.
* nothing outlives the transaction, so a persistent (``CONN_MAX_AGE``) or pooled
  connection cannot carry a session into the next request, and transaction poolers
  (pgbouncer) are safe too.

One state per connection remains: after a bound statement ran inside a transaction block,
the transaction carries those local values until it ends. If the binding ends while the
transaction goes on (``cow_session`` left inside ``atomic()``), each later statement of
that transaction states the variables as empty. The flag is cleared only when psycopg
reports the connection idle (no transaction), when no local setting can survive.

A preview (visible operations) is materialised once per binding and connection with
``cowsync.prepare_preview``; statements then name the preview copy.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq

from ...binding import Binding, binding_statement, current_binding
from ...config import CowConfig
from ...pool.transaction_local import settings_statement
from .ddl_routing import mask_literals

_IDLE = pq.TransactionStatus.IDLE
_INERROR = pq.TransactionStatus.INERROR

# The attribute of a psycopg connection that holds its ConnectionState.
_STATE_ATTRIBUTE = "_cowsync_django_state"


@dataclass
class ConnectionState:
    """What the backend knows about one psycopg connection."""

    # A bound statement ran in the current transaction block: its local values persist.
    stated_in_transaction: bool = False
    # The binding whose preview was materialised on this connection, and the preview's id.
    preview_binding: Binding | None = None
    preview_session: str | None = None

    def forget_preview(self) -> None:
        """Drop the remembered preview (its rows may have been rolled back)."""
        self.preview_binding = None
        self.preview_session = None


def state_of(conn: psycopg.Connection[Any]) -> ConnectionState:
    """The :class:`ConnectionState` of ``conn`` (created on first use)."""
    state: ConnectionState | None = getattr(conn, _STATE_ATTRIBUTE, None)
    if state is None:
        state = ConnectionState()
        setattr(conn, _STATE_ATTRIBUTE, state)
    return state


@functools.lru_cache(maxsize=4096)
def _prefix(items: tuple[tuple[str, str], ...]) -> str:
    # Literals, not parameters: the prefix is glued to a statement whose parameters
    # are the caller's. Names and ids are validated (no quotes, no '%'), and
    # sql.Literal quotes them anyway.
    return settings_statement(dict(items)).as_string(None) + "; "


def prefix_for(values: dict[str, str]) -> str:
    """``SELECT set_config(name, value, true), ...; `` for these values (cached)."""
    return _prefix(tuple(values.items()))


def clear_values(config: CowConfig) -> dict[str, str]:
    """The COW variables, all empty (no session)."""
    return dict.fromkeys(config.variables, "")


def statement_prefix(conn: psycopg.Connection[Any], config: CowConfig) -> str | None:
    """What the next statement on ``conn`` must carry, or None when it needs nothing.

    Call it right before sending a statement; it updates the connection's state.
    """
    binding = current_binding()
    status = conn.pgconn.transaction_status
    state = state_of(conn)
    if status == _IDLE:
        # No transaction block: no local value survives from before.
        state.stated_in_transaction = False
    elif status == _INERROR:
        # The statement will fail with "current transaction is aborted" whatever it
        # carries; send it as it is so the error stays the usual one.
        return None
    if binding is None:
        if state.stated_in_transaction:
            return prefix_for(clear_values(config))
        return None
    # Remembered even for an autocommit statement: if it opened a transaction block (a raw
    # BEGIN after our prefix), the next statement finds it open; otherwise it finds the
    # connection idle and forgets.
    state.stated_in_transaction = True
    if binding.visible_operations:
        return prefix_for(binding_values(conn, binding, config))
    return _binding_prefix(binding, config)


@functools.lru_cache(maxsize=4096)
def _binding_prefix(binding: Binding, config: CowConfig) -> str:
    # Per binding, not per statement: a request's statements all reuse one string.
    return prefix_for(binding.settings(config))


def binding_values(
    conn: psycopg.Connection[Any], binding: Binding, config: CowConfig
) -> dict[str, str]:
    """The values of the COW variables for ``binding`` on ``conn``."""
    values = binding.settings(config)
    if binding.visible_operations:
        values[config.session_variable] = preview_session(conn, binding, config)
    return values


def preview_session(conn: psycopg.Connection[Any], binding: Binding, config: CowConfig) -> str:
    """The session id of ``binding``'s preview copy, materialising it on first use.

    Once per binding (a ``cowsync.bind`` block, a request) and connection: the preview
    shows the session as it was when the binding first queried.
    """
    state = state_of(conn)
    if state.preview_binding is binding and state.preview_session is not None:
        return state.preview_session
    query, params = binding_statement(binding, config, local=True)
    # A plain psycopg cursor: this statement must not be prefixed itself.
    with psycopg.Cursor(conn) as cursor:
        cursor.execute(query, params)
        row = cursor.fetchone()
    assert row is not None
    # binding_statement sets the session variable first; set_config returns the value.
    state.preview_binding = binding
    state.preview_session = str(row[0])
    return state.preview_session


# The engine's switch for "this statement is INSERT ... ON CONFLICT DO NOTHING".
IGNORE_CONFLICTS_SETTING = "cowsync.ignore_conflicts"
_CONFLICT = re.compile("conflict", re.IGNORECASE)
_INSERT = re.compile(r"\A\s*INSERT\s+INTO\b", re.IGNORECASE)
_DO_NOTHING = re.compile(r"\bON\s+CONFLICT\s+DO\s+NOTHING\b", re.IGNORECASE)


def ignores_conflicts(joined: Any) -> bool:
    """Is the statement after our prefix one ``INSERT … ON CONFLICT DO NOTHING``?"""
    if not isinstance(joined, str) or _CONFLICT.search(joined) is None:
        return False
    statement = mask_literals(joined.split("; ", 1)[1])
    return (
        bool(_INSERT.match(statement))
        and bool(_DO_NOTHING.search(statement))
        and ";" not in statement.rstrip().rstrip(";")
    )


def ignoring_conflicts(prefix: str, joined: str) -> str:
    """``joined`` with the engine's ignore-conflicts switch on for its statement only.

    The switch is transaction-local: it is turned off again right after the statement,
    in the same message, so the rest of an open transaction is unaffected (and a
    rollback takes it back with the statement).
    """
    statement = joined[len(prefix) :]
    switch = f"pg_catalog.set_config('{IGNORE_CONFLICTS_SETTING}', %s, true)"
    return (
        prefix[: -len("; ")]
        + ", "
        + (switch % "'on'")
        + "; "
        + statement
        + "; SELECT "
        + (switch % "''")
    )
