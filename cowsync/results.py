"""The public results of :func:`~cowsync.apply.commit` and :func:`~cowsync.apply.discard`:
what was applied, removed, or found in conflict, and the types of their arguments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .review_token import ReviewDrift

ConflictPolicy = Literal["abort", "skip", "overwrite", "merge"]
#: How a table is enabled: behind a view in its place, or untouched with the view in an
#: overlay schema.
Mode = Literal["in-place", "overlay"]
ProgressCallback = Callable[[str, str, int], None]


@dataclass(frozen=True)
class Conflict:
    """A row the session changed whose base row changed after the session first touched it."""

    table: str
    key: dict[str, Any]
    kind: str
    before: dict[str, Any] | None  # base when the session first touched the row
    base: dict[str, Any] | None  # base now
    session: dict[str, Any] | None  # the session's row (None for a delete)
    resolution: str = "abort"  # what on_conflict did: abort, skip, overwrite or merge
    columns: tuple[str, ...] = ()  # for merge: columns changed on both sides


@dataclass
class CommitResult:
    """What :func:`commit` applied, per table and kind, and the conflicts it handled."""

    session_id: str
    operations: list[str]
    applied: dict[str, dict[str, int]] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)
    #: With ``reviewed=``: how the session moved since the review (rows written after
    #: it, reviewed rows rewritten since). Those rows stayed in the session.
    drift: list[ReviewDrift] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Rows applied, all tables and kinds together."""
        return sum(sum(kinds.values()) for kinds in self.applied.values())

    @property
    def nothing_to_commit(self) -> bool:
        return self.total == 0 and not self.conflicts


@dataclass
class DiscardResult:
    """What :func:`discard` removed: history rows per table, and the operations."""

    session_id: str
    operations: list[str]
    discarded: dict[str, int] = field(default_factory=dict)
    #: With ``reviewed=``: rows written or rewritten after the review, left in the session.
    drift: list[ReviewDrift] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.discarded.values())
