"""Exceptions raised by cowsync.

Every error derives from :class:`CowError`, says what went wrong and what to do,
and carries the data a caller needs to act on it (the conflicting rows, the
missing operations) rather than only a message.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class CowError(Exception):
    """Base class of every cowsync error."""


class ConfigurationError(CowError):
    """cowsync was set up or called in a way it cannot work with."""


class InvalidNameError(ConfigurationError):
    """A table, schema or session name is malformed, too long or clashes with ours."""


class NotDeployedError(CowError):
    """The cowsync engine is not installed in this database: call ``cowsync.deploy(conn)``."""


class NotEnabledError(CowError):
    """The table is not COW-enabled (or does not exist)."""


class UnsupportedTableError(CowError):
    """The table cannot be COW-enabled (no key, a view, a partitioned table, ...)."""


class PendingChangesError(CowError):
    """An operation would lose session changes that are not yet committed or discarded.

    ``sessions`` maps each affected table to the session ids that have pending rows.
    """

    def __init__(self, message: str, sessions: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.sessions: dict[str, list[str]] = sessions or {}


class ConflictError(CowError):
    """A commit found base rows that changed after the session first touched them.

    ``conflicts`` holds one :class:`cowsync.Conflict` per row.
    """

    def __init__(self, message: str, conflicts: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.conflicts = list(conflicts)


class DependencyError(CowError):
    """Chosen operations depend on (or are depended on by) operations not chosen.

    ``missing`` is the set of operation ids that would have to be included.
    """

    def __init__(self, message: str, missing: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.missing: set[str] = set(missing)


class CommitError(CowError):
    """A commit failed on a constraint of the base; nothing was applied.

    ``table``, ``key`` and ``constraint`` name what failed when PostgreSQL told us.
    """

    def __init__(
        self,
        message: str,
        table: str | None = None,
        key: dict[str, Any] | None = None,
        constraint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.table = table
        self.key = key
        self.constraint = constraint


class SessionNotFoundError(CowError):
    """The session has nothing to commit or discard and is not in the registry: it never
    existed, or another call already committed or discarded all of it."""


class SessionBusyError(CowError):
    """A transaction of the session kept its write lock (an agent mid-transaction, or
    another commit or discard) for longer than the caller agreed to wait.

    Nothing was done; retry, or seal the session first (:func:`cowsync.seal`)."""


class StaleReviewError(CowError):
    """The session changed after the review whose token was given, and the caller asked
    to refuse then (``if_changed="refuse"``). Nothing was done.

    ``changes`` lists what changed: one :class:`cowsync.ReviewDrift` per table and reason.
    """

    def __init__(self, message: str, changes: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.changes = list(changes)


#: SQLSTATE of the error a write to a sealed session raises (see :func:`cowsync.seal`).
SEALED_SQLSTATE = "CW001"
