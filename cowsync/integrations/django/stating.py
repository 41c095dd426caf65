"""What each statement must carry so that it runs in the bound session, and nothing else.

The backend never leaves a session on the server connection. Every statement sent while
a binding is active (:func:`cowsync.bind`, :func:`cow_session`, the middleware) carries
the COW variables itself, as *transaction-local* settings stated just before it, in the
same pipeline (one round trip; see :mod:`.cursors`):

    SELECT pg_catalog.set_config('app.session_id', $1, true), ...    -- $1 = 'S', apart
    <the statement>

The ids are parameters, never part of a statement's text: another backend, even one of
the same login role, reads ``pg_stat_activity.query`` and sees ``$1``, not the session.

The same statement puts the overlay schemas first on the transaction's ``search_path``
(overlay mode: unqualified names resolve to the session's views; see
:mod:`cowsync.overlay_path`), transaction-locally too, so it ends with the transaction.

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
that transaction states the variables as empty and gives the unbound ``search_path``
back. The flag is cleared only when psycopg reports the connection idle (no
transaction), when no local setting can survive.

A preview (visible operations) is materialised once per binding and connection with
``cowsync.prepare_preview``; statements then name the preview copy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq

from ...binding import Binding, binding_statement, current_binding, execute_bound
from ...config import CowConfig
from ...overlay_path import OverlayNaming
from ...pool.transaction_local import LocalSettings

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


def clear_values(config: CowConfig) -> dict[str, str]:
    """The COW variables, all empty (no session)."""
    return dict.fromkeys(config.variables, "")


def settings_to_state(conn: psycopg.Connection[Any], config: CowConfig) -> LocalSettings | None:
    """What the next statement on ``conn`` must state first, or None when it needs nothing.

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
            return _clear_settings(config)
        return None
    # Remembered even for an autocommit statement: if it opened a transaction block (a raw
    # BEGIN after our set_config), the next statement finds it open; otherwise it finds the
    # connection idle and forgets.
    state.stated_in_transaction = True
    if binding.visible_operations:
        return LocalSettings.of(
            binding_values(conn, binding, config), overlay=OverlayNaming.of(config)
        )
    return _binding_settings(binding, config)


@functools.lru_cache(maxsize=4096)
def _binding_settings(binding: Binding, config: CowConfig) -> LocalSettings:
    # Per binding, not per statement: a request's statements all reuse one object.
    return LocalSettings.of(binding.settings(config), overlay=OverlayNaming.of(config))


@functools.lru_cache(maxsize=64)
def _clear_settings(config: CowConfig) -> LocalSettings:
    # The binding ended inside a transaction a bound statement ran in: its local
    # overlay path must go too.
    return LocalSettings.of(clear_values(config), unbind_path=True)


def state_settings(conn: psycopg.Connection[Any], stated: LocalSettings) -> None:
    """Send ``stated`` as its own statement, the values as parameters.

    Inside a pipeline it is queued and goes out with the statement that follows it.
    """
    execute_bound(conn, stated.query, stated.params)


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
    # A plain psycopg cursor: this statement must not state anything itself.
    row = execute_bound(conn, query, params)
    assert row is not None
    # binding_statement sets the session variable first; set_config returns the value.
    state.preview_binding = binding
    state.preview_session = str(row[0])
    return state.preview_session
