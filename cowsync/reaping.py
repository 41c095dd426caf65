"""Ending agent backends that outlive their limits.

An agent with a SQL connection can lift every time limit PostgreSQL offers it:
``SET statement_timeout = 0`` for its own connection, ``ALTER ROLE CURRENT_USER SET ...``
for every later one (docs/security.md, "Limits an agent cannot lift"). What it cannot do
is stop another role from ending its backends. :func:`reap` is that other role's tool,
for a reviewer or a cron job: it reads ``pg_stat_activity`` and ends the backends of agent
roles that have been in a transaction, idle in a transaction, or running one statement for
too long.

It reads only timings, states and role names: never the statement text (it may hold what
the agent wrote, or an id), and it reports no session ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import psycopg

from .errors import ConfigurationError, CowError, NotDeployedError

Reason = Literal["idle_in_transaction", "transaction", "statement"]
Action = Literal["terminate", "cancel"]


@dataclass(frozen=True)
class Reaped:
    """One agent backend :func:`reap` ended (or, with ``dry_run``, would end).

    ``reason`` says which limit it was over: ``"idle_in_transaction"`` (idle inside an
    open transaction for ``seconds``), ``"transaction"`` (its transaction had run for
    ``seconds``) or ``"statement"`` (its current statement had run for ``seconds``).
    ``action`` is ``"terminate"`` (the backend was ended, its transaction rolled back) or
    ``"cancel"`` (only the statement was cancelled). ``signalled`` is false in a dry run,
    and when the backend had already gone by the time the signal was sent.
    """

    pid: int
    role: str
    reason: Reason
    seconds: float
    limit: float
    action: Action
    signalled: bool


# One statement picks the backends and signals them, so the time between seeing a
# backend over its limit and signalling it is as short as PostgreSQL makes it. The
# conditions mirror PostgreSQL's own timeouts: idle_in_transaction_session_timeout ends
# the session, statement_timeout cancels the statement.
_REAP = """
WITH agent_backends AS MATERIALIZED (
    SELECT a.pid,
           a.usename::text AS role,
           a.state,
           extract(epoch FROM pg_catalog.clock_timestamp() - a.xact_start)::float8 AS xact_s,
           extract(epoch FROM pg_catalog.clock_timestamp() - a.state_change)::float8 AS idle_s,
           extract(epoch FROM pg_catalog.clock_timestamp() - a.query_start)::float8 AS query_s
    FROM pg_catalog.pg_stat_activity a
    JOIN pg_catalog.pg_roles r ON r.oid = a.usesysid
    WHERE a.datname = pg_catalog.current_database()
      AND a.backend_type = 'client backend'
      AND a.pid <> pg_catalog.pg_backend_pid()
      AND NOT r.rolsuper
      AND EXISTS (SELECT 1 FROM pg_catalog.unnest(%(roles)s::oid[]) AS g(oid)
                  WHERE pg_catalog.pg_has_role(a.usesysid, g.oid, 'MEMBER'))
), over_limit AS MATERIALIZED (
    SELECT pid, role,
           CASE
               WHEN state IN ('idle in transaction', 'idle in transaction (aborted)')
                    AND idle_s > %(idle)s THEN 'idle_in_transaction'
               WHEN xact_s > %(xact)s THEN 'transaction'
               WHEN state IN ('active', 'fastpath function call')
                    AND query_s > %(statement)s THEN 'statement'
           END AS reason,
           idle_s, xact_s, query_s
    FROM agent_backends
)
SELECT pid, role, reason,
       CASE reason WHEN 'idle_in_transaction' THEN idle_s
                   WHEN 'transaction' THEN xact_s
                   ELSE query_s END,
       CASE WHEN %(dry_run)s THEN false
            WHEN reason = 'statement' THEN pg_catalog.pg_cancel_backend(pid)
            ELSE pg_catalog.pg_terminate_backend(pid) END
FROM over_limit
WHERE reason IS NOT NULL
ORDER BY pid
"""


def reap(
    conn: psycopg.Connection,
    max_transaction_seconds: float | None = None,
    max_idle_in_transaction_seconds: float | None = None,
    max_statement_seconds: float | None = None,
    roles: Iterable[str] | None = None,
    dry_run: bool = False,
) -> list[Reaped]:
    """End the backends of agent roles that are over a limit, and say which.

    A backend is an agent's when its login role is a member of a role
    :func:`cowsync.harden` registered as an agent (or of one of ``roles``, when given),
    and is not a superuser: the same rule the engine uses. Only client backends connected
    to ``conn``'s database count, never ``conn``'s own.

    - ``max_idle_in_transaction_seconds``: idle inside a transaction for longer ends the
      backend (``pg_terminate_backend``), rolling the transaction back and freeing its locks;
    - ``max_transaction_seconds``: a transaction open for longer ends the backend;
    - ``max_statement_seconds``: a statement running for longer is cancelled
      (``pg_cancel_backend``); the connection stays.

    A limit left at ``None`` is not checked; at least one is needed. ``dry_run=True``
    signals nothing and returns what it would have done.

    The role ``conn`` logs in as must see other roles' backends and signal them: a
    superuser, or a role granted ``pg_signal_backend`` and ``pg_read_all_stats`` (never an
    agent role). Run it from a cron job or a reviewer's shell; PostgreSQL's own timeouts
    cannot hold an agent that can ``SET`` them off.

    >>> cowsync.reap(conn, max_idle_in_transaction_seconds=60, max_statement_seconds=30)
    ... # doctest: +SKIP
    [Reaped(pid=4242, role='agent_ana', reason='idle_in_transaction', seconds=75.1, ...)]
    """
    limits = {
        "max_transaction_seconds": max_transaction_seconds,
        "max_idle_in_transaction_seconds": max_idle_in_transaction_seconds,
        "max_statement_seconds": max_statement_seconds,
    }
    if all(value is None for value in limits.values()):
        raise ConfigurationError(
            "cowsync.reap needs at least one limit: max_transaction_seconds, "
            "max_idle_in_transaction_seconds or max_statement_seconds"
        )
    for name, value in limits.items():
        if value is not None and not value >= 0:
            raise ConfigurationError(f"{name} must be a number of seconds >= 0, not {value!r}")
    with conn.transaction():
        _require_rights(conn, signal=not dry_run)
        role_oids = _agent_role_oids(conn, roles)
        # pg_stat_activity is read once per transaction and then kept: start afresh.
        conn.execute("SELECT pg_catalog.pg_stat_clear_snapshot()")
        rows = conn.execute(
            _REAP,
            {
                "roles": role_oids,
                "xact": max_transaction_seconds,
                "idle": max_idle_in_transaction_seconds,
                "statement": max_statement_seconds,
                "dry_run": dry_run,
            },
        ).fetchall()
    limit_of = {
        "idle_in_transaction": max_idle_in_transaction_seconds,
        "transaction": max_transaction_seconds,
        "statement": max_statement_seconds,
    }
    return [
        Reaped(
            pid=pid,
            role=role,
            reason=reason,
            seconds=round(seconds, 3),
            limit=float(limit_of[reason] or 0),
            action="cancel" if reason == "statement" else "terminate",
            signalled=bool(signalled),
        )
        for pid, role, reason, seconds, signalled in rows
    ]


def _require_rights(conn: psycopg.Connection, signal: bool) -> None:
    """Refuse at once when the caller could not see or signal agent backends.

    Without ``pg_read_all_stats`` PostgreSQL hides other roles' states and timings (the
    backends would look idle), and without ``pg_signal_backend`` it refuses the signal:
    either way a reaper would quietly end nothing, so say so even when no agent is over
    its limit right now.
    """
    row = conn.execute(
        "SELECT current_user, pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE'), "
        "pg_catalog.pg_has_role('pg_signal_backend', 'USAGE')"
    ).fetchone()
    assert row is not None
    user, can_read, can_signal = row
    missing = [
        name
        for name, needed, held in (
            ("pg_read_all_stats", True, can_read),
            ("pg_signal_backend", signal, can_signal),
        )
        if needed and not held
    ]
    if missing:
        raise CowError(
            f"role {user} cannot reap agent backends: it needs {' and '.join(missing)} "
            "to see other roles' backends and end them. Run cowsync.reap as a superuser, "
            f"or GRANT {', '.join(missing)} TO {user} (a reviewer or a dedicated role, "
            "never an agent role)"
        )


def _agent_role_oids(conn: psycopg.Connection, roles: Iterable[str] | None) -> list[int]:
    if roles is not None:
        names = list(dict.fromkeys(roles))
        if not names:
            raise ConfigurationError("roles is empty: name at least one agent role")
    else:
        names = _registered_agents(conn)
    found: dict[str, int] = {
        name: oid
        for name, oid in conn.execute(
            "SELECT rolname::text, oid::int FROM pg_catalog.pg_roles WHERE rolname = ANY(%s)",
            (names,),
        )
    }
    unknown = [name for name in names if name not in found]
    if unknown and roles is not None:
        raise ConfigurationError(f"no such role: {', '.join(unknown)}")
    # A registered role that was dropped since matches no backend: leave it out.
    return [found[name] for name in names if name in found]


def _registered_agents(conn: psycopg.Connection) -> list[str]:
    registered = conn.execute("SELECT to_regclass('cowsync.roles') IS NOT NULL").fetchone()
    if not registered or not registered[0]:
        raise NotDeployedError(
            "cowsync is not deployed in this database, so no agent roles are registered: "
            "call cowsync.deploy and cowsync.harden, or pass roles=[...]"
        )
    try:
        with conn.transaction():
            rows = conn.execute(
                "SELECT role_name FROM cowsync.roles WHERE kind = 'agent' ORDER BY role_name"
            ).fetchall()
    except psycopg.errors.InsufficientPrivilege as exc:
        raise CowError(
            f"cannot read the registered agent roles ({exc.diag.message_primary}): run "
            "cowsync.reap as a reviewer role, or pass the agent roles as roles=[...]"
        ) from exc
    if not rows:
        raise ConfigurationError(
            "no agent roles are registered: cowsync.harden(conn, agent_roles=[...]) "
            "registers them, or pass roles=[...]"
        )
    return [name for (name,) in rows]
