"""Review tokens: a watermark of what a reviewer saw, so commit and discard apply exactly that.

Every session write takes a number from ``cowsync.write_seq`` while it holds the
session's write lock, and a session's writing transactions take that lock in turn. So
in any snapshot, every write of the session numbered at most the highest number
visible (the *watermark*) is visible, and every write made later gets a higher number.
A review records the watermark and how many change rows it saw (per table); a commit
or discard given the token then works on the rows numbered at most the watermark:

* rows first written after the review (``newer``) stay in the session;
* a row the review saw and an operation rewrote since (``rewritten``: first written
  before the watermark, last after it) cannot be applied as seen: its key stays in the
  session (or, with ``if_changed="refuse"``, the call raises);
* rows the review saw that are gone (``missing``: another call committed or discarded
  them) always refuse the call: the rest of what was reviewed may no longer mean what
  the reviewer saw.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

from .errors import ConfigurationError, StaleReviewError
from .registry import EnabledTable

DriftReason = Literal["newer", "rewritten", "missing"]
IfChanged = Literal["keep", "refuse"]
_PREFIX = "cowsync-review-1."


@dataclass(frozen=True)
class ReviewToken:
    """What a review saw of a session: its write watermark and the rows in its scope.

    Pass it (or its string form, ``str(token)``, for forms and command lines) to
    :func:`cowsync.commit` or :func:`cowsync.discard` as ``reviewed=``.
    """

    session_id: str
    watermark: int
    rows: dict[str, int]  # change rows per table label, in the review's scope
    operations: tuple[str, ...] | None = None
    tables: tuple[str, ...] | None = None

    def __str__(self) -> str:
        payload = {
            "s": self.session_id,
            "w": self.watermark,
            "r": self.rows,
            "o": None if self.operations is None else list(self.operations),
            "t": None if self.tables is None else list(self.tables),
        }
        raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        return _PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def parse(cls, text: str | ReviewToken) -> ReviewToken:
        """The token a string form stands for; :class:`ConfigurationError` if malformed."""
        if isinstance(text, ReviewToken):
            return text
        if not isinstance(text, str) or not text.startswith(_PREFIX):
            raise ConfigurationError(
                "not a cowsync review token (it starts with 'cowsync-review-1.'); "
                "take it from cowsync.review(conn, session_id).token"
            )
        body = text[len(_PREFIX) :]
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            token = cls(
                session_id=str(data["s"]),
                watermark=int(data["w"]),
                rows={str(k): int(v) for k, v in dict(data["r"]).items()},
                operations=None if data["o"] is None else tuple(str(o) for o in data["o"]),
                tables=None if data["t"] is None else tuple(str(t) for t in data["t"]),
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise ConfigurationError(
                "the review token is damaged; review the session again"
            ) from exc
        return token


@dataclass(frozen=True)
class ReviewDrift:
    """How the session moved away from a review, for one table.

    ``reason`` is ``"newer"`` (rows written after the review: they stay in the session),
    ``"rewritten"`` (rows the review saw and an operation changed since: their keys stay
    in the session) or ``"missing"`` (rows the review saw that another call committed
    or discarded). ``rows`` counts change rows (one per key and operation).
    """

    table: str
    reason: DriftReason
    rows: int


def _scope_filter(ops: Iterable[str] | None) -> sql.Composable:
    return sql.SQL(" AND _cow_operation = ANY(%(ops)s)") if ops is not None else sql.SQL("")


def take_watermark(
    conn: psycopg.Connection,
    session_id: str,
    scope: list[EnabledTable],
    every_table: list[EnabledTable],
    operations: list[str] | None,
    tables: list[str] | None,
) -> ReviewToken:
    """The token of the session as this statement's snapshot sees it (one statement, so
    the watermark and the counts agree)."""
    if not every_table:
        return ReviewToken(session_id, 0, {}, _tuple(operations), _tuple(tables))
    in_scope = {t.registry_id for t in scope}
    parts = [
        sql.SQL(
            "SELECT {label}::text AS label, max(_cow_seq) AS w, "
            "count(*) FILTER (WHERE {in_scope}{ops}) AS n "
            "FROM ONLY {changes} WHERE _cow_session = %(sid)s"
        ).format(
            label=sql.Literal(t.label),
            in_scope=sql.SQL("true" if t.registry_id in in_scope else "false"),
            ops=sql.SQL(" AND _cow_operation = ANY(%(ops)s)")
            if operations is not None
            else sql.SQL(""),
            changes=t.changes,
        )
        for t in every_table
    ]
    query = sql.SQL("SELECT label, w, n FROM ({}) AS per_table").format(
        sql.SQL(" UNION ALL ").join(parts)
    )
    watermark = 0
    rows: dict[str, int] = {}
    for label, w, n in conn.execute(query, {"sid": session_id, "ops": operations}):
        watermark = max(watermark, w or 0)
        if n:
            rows[label] = n
    return ReviewToken(session_id, watermark, rows, _tuple(operations), _tuple(tables))


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


def measure_drift(
    conn: psycopg.Connection,
    token: ReviewToken,
    scope: list[EnabledTable],
    every_table: list[EnabledTable],
    operations: list[str] | None,
) -> list[ReviewDrift]:
    """How the session moved since ``token``'s review: ``newer`` and ``rewritten`` rows
    within the call's scope (``scope`` tables, ``operations``), ``missing`` rows within
    the review's. Run under the session's write lock, so nothing moves meanwhile."""
    if not every_table:
        return []
    by_label = {t.label: t for t in every_table}
    reviewed_scope = [by_label[label] for label in token.rows if label in by_label]
    wanted = {t.registry_id: t for t in [*scope, *reviewed_scope]}
    parts = [
        sql.SQL(
            "SELECT {label}::text AS label, _cow_operation AS op, "
            "count(*) FILTER (WHERE _cow_first_seq <= %(w)s) AS kept, "
            "count(*) FILTER (WHERE _cow_first_seq > %(w)s) AS newer, "
            "count(*) FILTER (WHERE _cow_first_seq <= %(w)s AND _cow_seq > %(w)s) AS rewritten "
            "FROM ONLY {changes} WHERE _cow_session = %(sid)s GROUP BY _cow_operation"
        ).format(label=sql.Literal(t.label), changes=t.changes)
        for t in wanted.values()
    ]
    query = sql.SQL(" UNION ALL ").join(parts)
    call_tables = {t.label for t in scope}
    call_ops = None if operations is None else set(operations)
    review_ops = None if token.operations is None else set(token.operations)
    kept: dict[str, int] = {}
    newer: dict[str, int] = {}
    rewritten: dict[str, int] = {}
    for label, op, n_kept, n_newer, n_rewritten in conn.execute(
        query, {"sid": token.session_id, "w": token.watermark}
    ):
        if label in token.rows and (review_ops is None or op in review_ops):
            kept[label] = kept.get(label, 0) + n_kept
        if label in call_tables and (call_ops is None or op in call_ops):
            newer[label] = newer.get(label, 0) + n_newer
            rewritten[label] = rewritten.get(label, 0) + n_rewritten
    drift = [
        ReviewDrift(label, "missing", n - kept.get(label, 0))
        for label, n in sorted(token.rows.items())
        if n > kept.get(label, 0)
    ]
    drift += [ReviewDrift(label, "rewritten", n) for label, n in sorted(rewritten.items()) if n]
    drift += [ReviewDrift(label, "newer", n) for label, n in sorted(newer.items()) if n]
    return drift


def check_drift(
    drift: list[ReviewDrift], if_changed: IfChanged, action: Literal["commit", "discard"]
) -> None:
    """Raise :class:`StaleReviewError` for drift the call may not go ahead with."""
    missing = [d for d in drift if d.reason == "missing"]
    refused = missing or (drift if if_changed == "refuse" else [])
    if not refused:
        return
    described = "; ".join(f"{d.table}: {d.rows} {_WORDS[d.reason]}" for d in refused)
    why = (
        "another commit or discard took rows the review showed"
        if missing
        else "the session changed after the review"
    )
    done = "committed" if action == "commit" else "discarded"
    raise StaleReviewError(
        f"nothing was {done}: {why} ({described}). Review the session again and "
        f"{action} with the new token",
        refused,
    )


_WORDS: dict[str, str] = {
    "newer": "row(s) written after the review",
    "rewritten": "reviewed row(s) rewritten since",
    "missing": "reviewed row(s) already committed or discarded",
}


def check_if_changed(value: str) -> IfChanged:
    if value not in ("keep", "refuse"):
        raise ConfigurationError(f"if_changed must be 'keep' or 'refuse', got {value!r}")
    return value  # type: ignore[return-value]


def token_for(session_id: str, reviewed: Any) -> ReviewToken:
    """The parsed token, checked to belong to ``session_id``."""
    token = ReviewToken.parse(reviewed)
    if token.session_id != session_id:
        raise ConfigurationError(
            f"the review token is for session {token.session_id!r}, not {session_id!r}"
        )
    return token
