"""Commit and discard under concurrency: no double apply, no half apply."""

from __future__ import annotations

import threading

import psycopg
import pytest

import cowsync
from tests._mode import base_of, text
from tests.apply._state import base_state, rows, session_state, write
from tests.apply._threads import Background, lock_customer, wait_until_blocked


def test_two_concurrent_commits_of_a_session_apply_it_exactly_once(shop, connect):
    write(shop, "s1", "a", "INSERT INTO customers (id, name) VALUES (10, 'dee')")
    write(shop, "s1", "a", "UPDATE customers SET credit = credit + 5 WHERE id = 1")
    write(shop, "s1", "b", "INSERT INTO orders (id, customer_id, item) VALUES (10, 3, 'fig')")
    holder = connect(autocommit=False)
    lock_customer(holder, 3)  # the first commit will wait half-way, holding its own locks
    first_conn, second_conn = connect(), connect()

    first = Background(cowsync.commit, first_conn, "s1")
    wait_until_blocked(connect(), first_conn.info.backend_pid)
    second = Background(cowsync.commit, second_conn, "s1")
    wait_until_blocked(connect(), second_conn.info.backend_pid)
    holder.rollback()
    first.join()
    second.join()

    assert first.error is None
    # The first holds the session's lock while it waits; the second finds nothing left
    # and is told so.
    assert first.result.total == 3
    assert isinstance(second.error, cowsync.SessionNotFoundError)
    assert base_state(shop) == {
        "customers": [
            (1, "ann", "gold", 105),
            (2, "bob", "basic", 20),
            (3, "cy", "basic", 0),
            (10, "dee", "basic", 0),
        ],
        "orders": [(1, 1, "apple", 1), (2, 2, "pear", 2), (3, 2, "plum", 3), (10, 3, "fig", 1)],
    }


def test_two_concurrent_commits_started_together_never_double_apply(shop, connect):
    for n in range(20):
        write(
            shop,
            "s1",
            f"op{n}",
            "INSERT INTO orders (customer_id, item) VALUES (3, %s)",
            [f"item-{n}"],
        )
    barrier = threading.Barrier(2)
    conns = [connect(), connect()]

    def commit_after_barrier(conn):
        barrier.wait()
        return cowsync.commit(conn, "s1")

    runs = [Background(commit_after_barrier, c) for c in conns]
    for run in runs:
        run.join()

    winners = [r for r in runs if r.error is None]
    losers = [r for r in runs if r.error is not None]
    assert [r.result.total for r in winners] == [20]
    assert [type(r.error) for r in losers] == [cowsync.SessionNotFoundError]
    assert shop.execute("SELECT count(*) FROM orders WHERE customer_id = 3").fetchone() == (20,)


def test_a_commit_killed_mid_way_leaves_base_and_session_as_before(shop, connect):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    write(shop, "s1", "a", "INSERT INTO customers (id, name) VALUES (10, 'dee')")
    write(shop, "s1", "b", "INSERT INTO orders (id, customer_id, item) VALUES (10, 3, 'fig')")
    write(shop, "s1", "b", "DELETE FROM orders WHERE id = 1")
    base_before = base_state(shop)
    session_before = session_state(shop, "s1")
    holder = connect(autocommit=False)
    lock_customer(holder, 3)
    victim = connect()
    observer = connect()

    run = Background(cowsync.commit, victim, "s1")
    wait_until_blocked(observer, victim.info.backend_pid)
    # The commit was writing the base when it blocked (one statement for the session).
    waiting_on = observer.execute(
        "SELECT query FROM pg_stat_activity WHERE pid = %s", [victim.info.backend_pid]
    ).fetchone()[0]
    assert f"UPDATE ONLY {text(observer, base_of(observer, 'customers'))}" in waiting_on
    observer.execute("SELECT pg_terminate_backend(%s)", [victim.info.backend_pid])
    run.join()
    holder.rollback()

    assert isinstance(run.error, psycopg.OperationalError)
    assert base_state(observer) == base_before
    assert session_state(observer, "s1") == session_before
    # Nothing was lost: the session commits fine afterwards.
    cowsync.commit(observer, "s1")
    assert rows(observer, "orders")[-1] == (10, 3, "fig", 1)
    assert rows(observer, "customers")[0] == (1, "ann", "gold", 5)


def test_a_discard_waits_for_a_running_commit_and_then_finds_nothing(shop, connect):
    write(shop, "s1", "a", "INSERT INTO orders (id, customer_id, item) VALUES (10, 3, 'fig')")
    holder = connect(autocommit=False)
    lock_customer(holder, 3)
    committer, discarder = connect(), connect()

    commit_run = Background(cowsync.commit, committer, "s1")
    wait_until_blocked(connect(), committer.info.backend_pid)
    discard_run = Background(cowsync.discard, discarder, "s1")
    wait_until_blocked(connect(), discarder.info.backend_pid)
    holder.rollback()
    commit_run.join()
    discard_run.join()

    assert commit_run.error is None
    assert commit_run.result.total == 1
    assert isinstance(discard_run.error, cowsync.SessionNotFoundError)
    assert rows(shop, "orders")[-1] == (10, 3, "fig", 1)


def test_a_session_write_made_while_a_whole_session_commit_runs_waits_and_is_kept(shop, connect):
    # A whole-session commit holds the session's write lock: the agent's next write
    # waits for the commit, then lands in the session, measured against the new base.
    write(shop, "s1", "a", "INSERT INTO orders (id, customer_id, item) VALUES (10, 3, 'fig')")
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 2")
    holder = connect(autocommit=False)
    lock_customer(holder, 3)
    committer, agent = connect(), connect()

    run = Background(cowsync.commit, committer, "s1")
    wait_until_blocked(connect(), committer.info.backend_pid)
    later = Background(write, agent, "s1", "b", "UPDATE customers SET credit = 77 WHERE id = 2")
    wait_until_blocked(connect(), agent.info.backend_pid)  # waits for the commit
    holder.rollback()
    run.join()
    later.join()

    assert run.error is None and later.error is None
    assert run.result.applied["public.customers"]["update"] == 1
    assert rows(shop, "orders")[-1] == (10, 3, "fig", 1)
    assert rows(shop, "customers")[1] == (2, "bob", "basic", 5)  # what the commit applied
    assert rows(shop, "customers", "s1")[1] == (2, "bob", "basic", 77)
    [change] = cowsync.diff(shop, "s1")
    assert (change.key, change.operation, change.before["credit"]) == ({"id": 2}, "b", 5)


def test_a_session_write_made_while_a_commit_of_chosen_operations_runs_waits_and_is_kept(
    shop, connect
):
    # Every commit holds the session's write lock: the agent's write waits for the
    # commit of chosen operations, then lands in the session, not lost and not applied.
    write(shop, "s1", "a", "INSERT INTO orders (id, customer_id, item) VALUES (10, 3, 'fig')")
    holder = connect(autocommit=False)
    lock_customer(holder, 3)
    committer, agent = connect(), connect()

    run = Background(cowsync.commit, committer, "s1", operations=["a"])
    wait_until_blocked(connect(), committer.info.backend_pid)
    later = Background(write, agent, "s1", "b", "UPDATE customers SET credit = 77 WHERE id = 2")
    wait_until_blocked(connect(), agent.info.backend_pid)  # waits for the commit
    holder.rollback()
    run.join()
    later.join()

    assert run.error is None and later.error is None
    assert rows(shop, "orders")[-1] == (10, 3, "fig", 1)
    # The later write was not part of the commit: it must still be in the session.
    assert rows(shop, "customers", "s1")[1] == (2, "bob", "basic", 77)
    assert [(c.key, c.operation) for c in cowsync.diff(shop, "s1")] == [({"id": 2}, "b")]


def test_a_whole_session_commit_waits_for_an_agent_transaction_in_progress(shop, connect):
    # The agent is mid-transaction in the session: the commit waits for it (up to
    # ``wait``), then applies what the agent wrote too.
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    agent = connect(autocommit=False)
    with cowsync.session(agent, "s1", "b"):
        agent.execute("UPDATE customers SET credit = 9 WHERE id = 2")  # not committed yet
        committer = connect()
        run = Background(cowsync.commit, committer, "s1")
        wait_until_blocked(connect(), committer.info.backend_pid)
        assert [r[3] for r in rows(connect(), "customers")][:2] == [100, 20]
    agent.commit()
    run.join()

    assert run.error is None
    assert run.result.applied == {"public.customers": {"insert": 0, "update": 2, "delete": 0}}
    assert [r[3] for r in rows(shop, "customers")][:2] == [5, 9]
    assert cowsync.diff(shop, "s1") == []


def test_an_agent_holding_a_row_lock_the_commit_needs_retries_instead_of_deadlocking(shop, connect):
    # The agent locked a base row (select_for_update) before writing; the commit takes
    # the session's write lock and waits for that row; the agent's write would then wait
    # for the commit: a deadlock. The agent's write sees the commit waits for it and fails
    # with 40001 (retry); its transaction ends, and the commit goes through.
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    agent = connect(autocommit=False)
    with cowsync.session(agent, "s1", "b"):
        agent.execute("SELECT 1 FROM customers WHERE id = 1 FOR UPDATE")
        committer = connect()
        run = Background(cowsync.commit, committer, "s1")
        wait_until_blocked(connect(), committer.info.backend_pid)
        with pytest.raises(psycopg.errors.SerializationFailure, match="waits for a lock"):
            agent.execute("UPDATE customers SET credit = 9 WHERE id = 2")
        agent.rollback()
    run.join()

    assert run.error is None and run.result.total == 1
    assert [r[3] for r in rows(shop, "customers")][:2] == [5, 20]
    # The agent retries its transaction, now measured against the committed base.
    write(shop, "s1", "b", "UPDATE customers SET credit = 9 WHERE id = 2")
    assert [r[3] for r in rows(shop, "customers", "s1")][:2] == [5, 9]
