"""The session check is no oracle: whether a read is refused never depends on the rows.

An agent that binds a session another role owns (or reads with no session under
``read_requires_session``) is refused with 42501. That check ran when the first row
reached the view's filter, so a WHERE clause matching no row of the table (or of the
other session) was answered normally, and one matching was refused: a yes/no oracle on
the hidden rows. The check is now a one-time filter, made before any row is read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.hardening._fortress import Fortress

Connect = Callable[[Fortress, str], psycopg.Connection[Any]]

# Each pair: a guess that matches the victim's hidden row, and one that matches nothing.
GUESSES = [
    ("SELECT 1 FROM items WHERE name = 'victim secret'", "SELECT 1 FROM items WHERE name = 'x'"),
    ("SELECT 1 FROM items WHERE name >= 'victim'", "SELECT 1 FROM items WHERE name >= 'zzzz'"),
    ("SELECT 1 FROM items WHERE id = 1", "SELECT 1 FROM items WHERE id = -1"),
    (
        "SELECT 1 FROM shop_parent WHERE name = 'victim parent'",
        "SELECT 1 FROM shop_parent WHERE name = 'nobody'",
    ),
]


def _outcome(conn: psycopg.Connection[Any], query: str) -> tuple[str, str]:
    try:
        conn.execute(query).fetchall()
    except psycopg.Error as exc:
        conn.rollback()
        return ("error", exc.sqlstate or "")
    return ("ok", "")


@pytest.mark.parametrize(("hit", "miss"), GUESSES)
def test_binding_another_roles_session_is_refused_whatever_the_where_clause(
    fortress: Fortress, connect_as: Connect, hit: str, miss: str
) -> None:
    agent = connect_as(fortress, fortress.agent)
    agent.execute("SELECT set_config('app.session_id', %s, false)", (fortress.victim_session,))
    assert _outcome(agent, hit) == _outcome(agent, miss) == ("error", "42501")


@pytest.mark.parametrize(("hit", "miss"), GUESSES)
def test_reading_with_no_session_is_refused_whatever_the_where_clause(
    strict_fortress: Fortress, connect_as: Connect, hit: str, miss: str
) -> None:
    agent = connect_as(strict_fortress, strict_fortress.agent)
    assert _outcome(agent, hit) == _outcome(agent, miss) == ("error", "42501")


def test_the_check_is_a_one_time_filter_in_the_plan(
    fortress: Fortress, connect_as: Connect
) -> None:
    agent = connect_as(fortress, fortress.agent)
    agent.execute("SELECT set_config('app.session_id', %s, false)", (fortress.agent_session,))
    plan = "\n".join(
        r[0] for r in agent.execute("EXPLAIN SELECT * FROM items WHERE id = 1").fetchall()
    )
    assert "One-Time Filter" in plan and "current_session" in plan.split("One-Time Filter")[1]


def _counts(conn: psycopg.Connection[Any], query: str) -> list[str]:
    """EXPLAIN ANALYZE of ``query`` with timings and memory removed: node names, row
    counts, loops and filter counts."""
    lines = conn.execute(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF, BUFFERS OFF) " + query
    ).fetchall()
    text = [re.sub(r"Memory Usage: \d+kB", "", r[0]) for r in lines]
    # The guess itself appears in conditions: compare the shape, not the literal.
    return [re.sub(r"'[^']*'", "?", re.sub(r"-?\d+\)", "N)", t)) for t in text]


@pytest.mark.xfail(
    strict=True,
    reason="documented limitation (docs/security.md, 'What still leaks between sessions'): "
    "the view scans the change store with the reader's leakproof conditions before its "
    "session filter, so EXPLAIN ANALYZE counts rows of other sessions",
)
def test_explain_analyze_counts_are_the_same_for_a_right_and_a_wrong_guess(
    fortress: Fortress, connect_as: Connect
) -> None:
    agent = connect_as(fortress, fortress.agent)
    agent.execute("SELECT set_config('app.session_id', %s, false)", (fortress.agent_session,))
    hit = _counts(agent, "SELECT * FROM items WHERE name = 'victim secret'")
    miss = _counts(agent, "SELECT * FROM items WHERE name = 'victim secreT'")
    assert hit == miss
