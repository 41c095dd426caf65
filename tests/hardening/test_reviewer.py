"""A reviewer role reviews, commits and discards; an agent role cannot do any of it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import cowsync
from tests.hardening._fortress import Fortress, base_checksums, session_checksums

Connect = Callable[[Fortress, str], psycopg.Connection[Any]]


def test_reviewer_reviews_and_commits_an_agents_session(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    reviewer = connect_as(fresh_fortress, fresh_fortress.reviewer)
    sessions = {s.session_id for s in cowsync.sessions(reviewer)}
    assert {fresh_fortress.agent_session, fresh_fortress.victim_session} <= sessions
    assert [o.operation_id for o in cowsync.operations(reviewer, fresh_fortress.agent_session)] == [
        "own-op"
    ]
    changes = cowsync.diff(reviewer, fresh_fortress.agent_session)
    assert [(c.table, c.key, c.kind) for c in changes] == [("public.items", {"id": 2}, "update")]
    before = fresh_admin.execute("SELECT qty FROM ONLY items_base WHERE id = 2").fetchone()
    assert before is not None

    result = cowsync.commit(reviewer, fresh_fortress.agent_session)

    assert result.applied["public.items"]["update"] == 1
    after = fresh_admin.execute("SELECT qty FROM ONLY items_base WHERE id = 2").fetchone()
    assert after == (before[0] + 1,)


def test_reviewer_discards_an_agents_session(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    reviewer = connect_as(fresh_fortress, fresh_fortress.reviewer)
    bases = base_checksums(fresh_admin)
    cowsync.discard(reviewer, fresh_fortress.victim_session)
    assert base_checksums(fresh_admin) == bases
    assert set(session_checksums(fresh_admin, fresh_fortress.victim_session).values()) == {None}


def test_reviewer_previews_an_operation(fresh_fortress: Fortress, connect_as: Connect) -> None:
    reviewer = connect_as(fresh_fortress, fresh_fortress.reviewer)
    with cowsync.session(reviewer, fresh_fortress.victim_session, visible_operations=["victim-op"]):
        names = [r[0] for r in reviewer.execute("SELECT name FROM shop_parent")]
    assert "victim parent" in names


@pytest.mark.parametrize("action", ["sessions", "diff", "commit", "discard", "preview"])
def test_agent_cannot_review_commit_or_discard(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    connect_as: Connect,
    action: str,
) -> None:
    agent = connect_as(fresh_fortress, fresh_fortress.agent)
    own = fresh_fortress.agent_session
    bases = base_checksums(fresh_admin)
    own_rows = session_checksums(fresh_admin, own)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        if action == "sessions":
            cowsync.sessions(agent)
        elif action == "diff":
            cowsync.diff(agent, own)
        elif action == "commit":
            cowsync.commit(agent, own)
        elif action == "discard":
            cowsync.discard(agent, own)
        else:
            with cowsync.session(agent, own, visible_operations=["own-op"]):
                agent.execute("SELECT * FROM items")
    assert base_checksums(fresh_admin) == bases
    assert session_checksums(fresh_admin, own) == own_rows


def test_a_reviewer_writing_through_the_view_is_not_fenced(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    # Only agent roles are fail-closed; a reviewer (like production) writes the base.
    reviewer = connect_as(fresh_fortress, fresh_fortress.reviewer)
    reviewer.execute("UPDATE items SET qty = 6 WHERE id = 5")
    row = fresh_admin.execute("SELECT qty FROM ONLY items_base WHERE id = 5").fetchone()
    assert row == (6,)
