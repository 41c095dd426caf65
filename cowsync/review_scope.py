"""What a commit or discard with a review token may cover: at most what the review did.

A review of chosen operations or tables shows only those. A call with its token that
named no operations (or tables) would otherwise reach rows the reviewer never saw, so it
defaults to the review's scope, and naming more, directly or through dependencies, is an
error instead of a silent widening.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

from .errors import ConfigurationError
from .registry import EnabledTable, enabled_tables
from .review_token import ReviewToken


def operations_within_review(
    token: ReviewToken, asked: Iterable[str] | None, session_ops: list[str]
) -> list[str] | None:
    """The call's operations before closing them: the session's operations the review
    covered when the call names none."""
    if token.operations is None or asked is not None:
        return None if asked is None else list(asked)
    return [op for op in session_ops if op in token.operations]


def check_operations_reviewed(token: ReviewToken, chosen: list[str] | None, action: str) -> None:
    """Raise when the chosen operations (with what they pulled in) go beyond the review."""
    if token.operations is None or chosen is None:
        return
    outside = [op for op in chosen if op not in token.operations]
    if outside:
        raise ConfigurationError(
            f"the review covered operation(s) {', '.join(token.operations)}, not "
            f"{', '.join(outside)}: nothing was {action}. Review those operations too "
            "(cowsync.review with them) and use that token, or leave operations out to "
            "act on what the review covered"
        )


def tables_within_review(
    conn: psycopg.Connection,
    token: ReviewToken,
    asked: Iterable[str] | None,
    every_table: list[EnabledTable],
    action: str,
) -> list[EnabledTable]:
    """The call's tables: the review's when the call names none; an error for a table
    the review did not cover."""
    scope = enabled_tables(conn, asked) if asked is not None else every_table
    if token.tables is None:
        return scope
    reviewed = {t.registry_id for t in enabled_tables(conn, token.tables)}
    if asked is None:
        return [t for t in scope if t.registry_id in reviewed]
    outside = [t.label for t in scope if t.registry_id not in reviewed]
    if outside:
        raise ConfigurationError(
            f"the review covered table(s) {', '.join(token.tables)}, not "
            f"{', '.join(outside)}: nothing was {action}. Review those tables too and use "
            "that token, or leave tables out to act on what the review covered"
        )
    return scope
