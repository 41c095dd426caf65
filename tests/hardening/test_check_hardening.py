"""``check_hardening`` reports every way out it knows of, with a statement that closes it.

Each test opens a hole in a freshly hardened database, checks that it is reported (and,
where cheap, that it really is a way out), then runs the suggested fixes and checks that the
report is empty again and the hole closed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

import cowsync
from tests._mode import OVERLAY, base_of, text
from tests.hardening._fortress import Fortress, RoleFactory, base_checksums, refused

Connect = Callable[[Fortress, str], psycopg.Connection[Any]]


def _issues_of(conn: psycopg.Connection[Any], role: str) -> list[cowsync.HardeningIssue]:
    return [i for i in cowsync.check_hardening(conn) if i.role == role]


def _fix_until_clean(conn: psycopg.Connection[Any], role: str) -> None:
    """Run the fix of the first issue reported for ``role``, check again, until none is left.

    That is how a user works through the report: one fix (e.g. NOSUPERUSER) can make
    several issues go away. Each fix must at least remove its own issue.
    """
    fixed: cowsync.HardeningIssue | None = None
    for _ in range(50):
        issues = _issues_of(conn, role)
        assert fixed not in issues, f"its fix did not remove: {fixed}"
        if not issues:
            return
        fixed = issues[0]
        conn.execute(fixed.fix)  # the report's own SQL, run as a user would
    raise AssertionError(f"still reported after 50 fixes: {_issues_of(conn, role)}")


def test_a_hardened_fortress_has_nothing_to_report(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any]
) -> None:
    assert cowsync.check_hardening(fresh_admin) == []


def test_an_unhardened_database_is_reported(conn: psycopg.Connection[Any]) -> None:
    cowsync.deploy(conn)
    issues = cowsync.check_hardening(conn)
    assert [i.role for i in issues] == ["*"]
    assert "not hardened" in issues[0].problem


PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


@pytest.mark.parametrize("relation", ["items_base", "items_changes", "shop_child_base"])
def test_each_privilege_on_a_base_or_change_store_is_reported_and_fixed(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    connect_as: Connect,
    relation: str,
) -> None:
    fresh_admin.execute(
        sql.SQL("GRANT ALL ON {} TO {}").format(
            sql.Identifier("public", relation), sql.Identifier(fresh_fortress.agent)
        )
    )
    issues = _issues_of(fresh_admin, fresh_fortress.agent)
    problems = sorted(i.problem for i in issues)
    assert problems == sorted(f'has {p} on "public"."{relation}"' for p in PRIVILEGES)
    # Why it matters: with those privileges the agent writes the base directly.
    if relation == "items_base":
        escaped = connect_as(fresh_fortress, fresh_fortress.agent)
        escaped.execute("UPDATE items_base SET qty = 42 WHERE id = 1")
        escaped.close()
    _fix_until_clean(fresh_admin, fresh_fortress.agent)
    assert cowsync.check_hardening(fresh_admin) == []
    before = base_checksums(fresh_admin)
    agent = connect_as(fresh_fortress, fresh_fortress.agent)
    refused(agent, sql.SQL("DELETE FROM {}").format(sql.Identifier("public", relation)))
    assert base_checksums(fresh_admin) == before


def test_a_superuser_agent_is_reported_and_fixed(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    fresh_agent: str,
    connect_as: Connect,
) -> None:
    fresh_admin.execute(sql.SQL("ALTER ROLE {} SUPERUSER").format(sql.Identifier(fresh_agent)))
    # Why it matters: a superuser is never treated as an agent, so it writes the base.
    superuser_agent = connect_as(fresh_fortress, fresh_agent)
    before = base_checksums(fresh_admin)
    superuser_agent.execute("UPDATE items SET qty = 42 WHERE id = 1")
    assert base_checksums(fresh_admin) != before
    superuser_agent.close()

    issues = _issues_of(fresh_admin, fresh_agent)
    assert any("superuser" in i.problem for i in issues), issues
    _fix_until_clean(fresh_admin, fresh_agent)
    assert cowsync.check_hardening(fresh_admin) == []
    agent_again = connect_as(fresh_fortress, fresh_agent)
    refused(agent_again, "UPDATE items SET qty = 0 WHERE id = 1")


def test_an_agent_that_is_a_member_of_a_reviewer_role_is_reported_and_fixed(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    fresh_agent: str,
    connect_as: Connect,
) -> None:
    reviewer = sql.Identifier(fresh_fortress.reviewer)
    fresh_admin.execute(sql.SQL("GRANT {} TO {}").format(reviewer, sql.Identifier(fresh_agent)))
    # Why it matters: the agent can become the reviewer and write the base directly.
    agent = connect_as(fresh_fortress, fresh_agent)
    agent.execute(sql.SQL("SET ROLE {}").format(reviewer))
    agent.execute("UPDATE items_base SET qty = 42 WHERE id = 1")
    agent.close()

    issues = _issues_of(fresh_admin, fresh_agent)
    assert any(f"member of reviewer role {fresh_fortress.reviewer}" in i.problem for i in issues)
    _fix_until_clean(fresh_admin, fresh_agent)
    assert cowsync.check_hardening(fresh_admin) == []
    agent = connect_as(fresh_fortress, fresh_agent)
    refused(agent, sql.SQL("SET ROLE {}").format(reviewer))


@pytest.mark.parametrize(
    ("grant", "problem"),
    [
        ("ALTER ROLE {agent} CREATEROLE", "can create roles"),
        ("GRANT CREATE ON SCHEMA cowsync TO {agent}", "can create objects in the cowsync schema"),
        ("GRANT SELECT ON cowsync.sessions TO {agent}", "registry table cowsync.sessions"),
        ("GRANT UPDATE ON cowsync.roles TO {agent}", "registry table cowsync.roles"),
        (
            "GRANT EXECUTE ON FUNCTION cowsync.prepare_preview(text, text) TO {agent}",
            "cowsync.prepare_preview(text,text)",
        ),
        (
            "GRANT EXECUTE ON FUNCTION cowsync.register_write(text, text) TO {agent}",
            "cowsync.register_write(text,text)",
        ),
        (
            "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA cowsync TO PUBLIC",
            "cowsync.drop_previews(text)",
        ),
    ],
    ids=[
        "createrole",
        "create-in-cowsync",
        "registry-select",
        "registry-update",
        "preview-function",
        "register-function",
        "functions-to-public",
    ],
)
def test_other_escapes_are_reported_and_fixed(
    fresh_admin: psycopg.Connection[Any], fresh_agent: str, grant: str, problem: str
) -> None:
    fresh_admin.execute(sql.SQL(grant).format(agent=sql.Identifier(fresh_agent)))
    issues = _issues_of(fresh_admin, fresh_agent)
    assert any(problem in i.problem for i in issues), issues
    _fix_until_clean(fresh_admin, fresh_agent)
    for issue in cowsync.check_hardening(fresh_admin):  # a grant to PUBLIC: every agent
        _fix_until_clean(fresh_admin, issue.role)
    assert cowsync.check_hardening(fresh_admin) == []


def test_an_agent_that_owns_a_view_is_reported(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any]
) -> None:
    fresh_admin.execute(
        sql.SQL("ALTER VIEW items OWNER TO {}").format(sql.Identifier(fresh_fortress.agent))
    )
    issues = _issues_of(fresh_admin, fresh_fortress.agent)
    assert any("owns" in i.problem and "items" in i.problem for i in issues), issues


def test_the_fix_for_an_owned_view_can_be_run(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any]
) -> None:
    fresh_admin.execute(
        sql.SQL("ALTER VIEW items OWNER TO {}").format(sql.Identifier(fresh_fortress.agent))
    )
    _fix_until_clean(fresh_admin, fresh_fortress.agent)
    assert cowsync.check_hardening(fresh_admin) == []


def test_a_table_enabled_after_harden_is_reported_until_harden_runs_again(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], connect_as: Connect
) -> None:
    fresh_admin.execute("CREATE TABLE later (id serial PRIMARY KEY, v int)")
    fresh_admin.execute("INSERT INTO later (v) VALUES (1)")
    fresh_admin.execute(
        sql.SQL("GRANT ALL ON later TO {}").format(sql.Identifier(fresh_fortress.agent))
    )
    cowsync.enable(fresh_admin, "later")
    issues = _issues_of(fresh_admin, fresh_fortress.agent)
    base = text(fresh_admin, base_of(fresh_admin, "later"))
    assert any(base in i.problem for i in issues), issues
    agent = connect_as(fresh_fortress, fresh_fortress.agent)
    if not OVERLAY:
        # Its trigger is hardened already: writing with no session is refused. (In
        # overlay mode the table is untouched: the agent's old grant on it is what the
        # report names until harden runs again.)
        refused(agent, "UPDATE later SET v = 2")
    cowsync.harden(
        fresh_admin,
        agent_roles=[fresh_fortress.agent, fresh_fortress.other_agent],
        reviewer_roles=[fresh_fortress.reviewer],
    )
    assert cowsync.check_hardening(fresh_admin) == []
    refused(agent, f"UPDATE {base} SET v = 2")


# --- holes check_hardening does not close (engine bugs) -----------------------------------


def test_a_privilege_granted_to_public_is_fixed_by_its_fix(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any]
) -> None:
    fresh_admin.execute("GRANT INSERT ON items_base TO PUBLIC")
    issues = _issues_of(fresh_admin, fresh_fortress.agent)
    assert [i.problem for i in issues] == ['has INSERT on "public"."items_base"']
    _fix_until_clean(fresh_admin, fresh_fortress.agent)
    assert cowsync.check_hardening(fresh_admin) == []


def test_a_privilege_inherited_from_a_group_is_fixed_by_its_fix(
    fresh_admin: psycopg.Connection[Any], fresh_agent: str, make_fresh_role: RoleFactory
) -> None:
    group = make_fresh_role("group", "NOLOGIN")
    fresh_admin.execute(sql.SQL("GRANT UPDATE ON items_base TO {}").format(sql.Identifier(group)))
    fresh_admin.execute(
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(fresh_agent))
    )
    issues = _issues_of(fresh_admin, fresh_agent)
    assert issues, "the inherited UPDATE is not even reported"
    _fix_until_clean(fresh_admin, fresh_agent)


def test_a_noinherit_membership_in_a_writer_role_is_reported(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    fresh_agent: str,
    connect_as: Connect,
    make_fresh_role: RoleFactory,
) -> None:
    writer = make_fresh_role("writer", "NOLOGIN")
    fresh_admin.execute(sql.SQL("GRANT ALL ON items_base TO {}").format(sql.Identifier(writer)))
    agent = sql.Identifier(fresh_agent)
    fresh_admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(writer), agent))
    fresh_admin.execute(sql.SQL("ALTER ROLE {} NOINHERIT").format(agent))
    # The way out is real:
    escaped = connect_as(fresh_fortress, fresh_agent)
    escaped.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(writer)))
    escaped.execute("UPDATE items_base SET name = 'escaped' WHERE id = 1")
    assert _issues_of(fresh_admin, fresh_agent) != []


@pytest.mark.parametrize("how", ["schema-owner", "database-owner"])
def test_an_agent_owning_the_schema_of_a_base_is_reported(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    connect_as: Connect,
    how: str,
) -> None:
    agent = sql.Identifier(fresh_fortress.agent)
    if how == "schema-owner":
        fresh_admin.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(agent))
    else:
        dbname = fresh_admin.info.dbname
        fresh_admin.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(dbname), agent)
        )
    # The way out is real (rolled back, so the rest of the test can look):
    escaped = connect_as(fresh_fortress, fresh_fortress.agent)
    with escaped.transaction():
        escaped.execute("DROP TABLE items_base CASCADE")
        raise psycopg.Rollback()
    assert _issues_of(fresh_admin, fresh_fortress.agent) != []


def test_a_trigger_privilege_on_a_view_is_reported(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any]
) -> None:
    # The fortress's agents were granted ALL on the tables before they were enabled.
    held = fresh_admin.execute(
        "SELECT has_table_privilege(%s, 'public.items', 'TRIGGER')", (fresh_fortress.agent,)
    ).fetchone()
    assert held == (False,) or _issues_of(fresh_admin, fresh_fortress.agent) != []


@pytest.mark.parametrize("monitoring", ["pg_read_all_stats", "pg_signal_backend"])
def test_an_agent_in_a_monitoring_role_is_reported_and_fixed(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    fresh_agent: str,
    connect_as: Connect,
    monitoring: str,
) -> None:
    fresh_admin.execute(
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(monitoring), sql.Identifier(fresh_agent))
    )
    if monitoring == "pg_read_all_stats":
        # Why it matters: it sees other agents' backends, their state and timings.
        agent = connect_as(fresh_fortress, fresh_agent)
        other = connect_as(fresh_fortress, fresh_fortress.other_agent)
        seen = agent.execute(
            "SELECT state FROM pg_stat_activity WHERE pid = %s", (other.info.backend_pid,)
        ).fetchone()
        assert seen is not None and seen[0] is not None
    issues = _issues_of(fresh_admin, fresh_agent)
    assert any(f"member of {monitoring}" in i.problem for i in issues), issues
    _fix_until_clean(fresh_admin, fresh_agent)
    assert cowsync.check_hardening(fresh_admin) == []


def test_an_agent_login_that_turned_its_timeouts_off_is_reported_and_fixed(
    fresh_fortress: Fortress,
    fresh_admin: psycopg.Connection[Any],
    fresh_agent: str,
    connect_as: Connect,
) -> None:
    agent = connect_as(fresh_fortress, fresh_agent)
    agent.execute("ALTER ROLE CURRENT_USER SET statement_timeout = 0")  # what an agent can do
    agent.execute("ALTER ROLE CURRENT_USER SET idle_in_transaction_session_timeout = 0")
    agent.close()

    problems = {i.problem for i in _issues_of(fresh_admin, fresh_agent)}
    assert problems == {
        f"login {fresh_agent} turns statement_timeout off for itself (a per-role setting)",
        f"login {fresh_agent} turns idle_in_transaction_session_timeout off for itself "
        "(a per-role setting)",
    }
    _fix_until_clean(fresh_admin, fresh_agent)
    assert cowsync.check_hardening(fresh_admin) == []
