"""The review contract: what a reviewer saw is exactly what commit or discard acts on.

Each race is forced, not hoped for: a caller's open transaction holds the session's
write lock (a commit or discard run inside it), the agent's statement takes its
snapshot and then waits for that lock, and the test lets go only once
``wait_until_blocked`` saw it wait.
"""

from __future__ import annotations

import time

import psycopg
import pytest

import cowsync
from tests._mode import sessions_path
from tests.apply._state import base_state, rows, session_state, write
from tests.apply._threads import Background, lock_customer, wait_until_blocked


def credit(conn, customer_id, session_id=None):
    return next(r[3] for r in rows(conn, "customers", session_id) if r[0] == customer_id)


# --- review tokens ------------------------------------------------------------------


def test_a_commit_with_a_token_applies_what_the_review_showed_and_keeps_later_writes(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 111 WHERE id = 1")
    reviewed = cowsync.review(shop, "s1")
    assert [(c.key, c.after["credit"]) for c in reviewed.changes] == [({"id": 1}, 111)]
    # The agent keeps writing while the reviewer reads: a new row, a new operation.
    write(shop, "s1", "a", "INSERT INTO customers (id, name) VALUES (20, 'eve')")
    write(shop, "s1", "b", "UPDATE customers SET credit = 222 WHERE id = 2")

    result = cowsync.commit(shop, "s1", reviewed=reviewed.token)

    assert result.applied == {"public.customers": {"insert": 0, "update": 1, "delete": 0}}
    assert [(d.table, d.reason, d.rows) for d in result.drift] == [("public.customers", "newer", 2)]
    assert [r[0] for r in rows(shop, "customers")] == [1, 2, 3]
    assert credit(shop, 1) == 111 and credit(shop, 2) == 20
    # What came after the review waits for the next one.
    assert sorted((c.key["id"], c.kind) for c in cowsync.diff(shop, "s1")) == [
        (2, "update"),
        (20, "insert"),
    ]


def test_a_commit_of_an_operation_with_a_token_ignores_rows_added_to_it_later(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")
    token = cowsync.review(shop, "s1", operations=["a"]).token
    write(shop, "s1", "a", "UPDATE customers SET credit = 2 WHERE id = 2")
    write(shop, "s1", "a", "UPDATE customers SET credit = 3 WHERE id = 3")

    result = cowsync.commit(shop, "s1", operations=["a"], reviewed=token)

    assert result.total == 1
    assert [credit(shop, i) for i in (1, 2, 3)] == [1, 20, 0]
    assert [credit(shop, i, "s1") for i in (1, 2, 3)] == [1, 2, 3]


def test_a_token_of_chosen_operations_commits_only_those_when_the_call_names_none(shop):
    # Operation a was written before the review, but the review showed only b.
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "s1", "b", "UPDATE customers SET credit = 2 WHERE id = 2")
    token = cowsync.review(shop, "s1", operations=["b"]).token

    result = cowsync.commit(shop, "s1", reviewed=token)

    assert result.operations == ["b"] and result.total == 1
    assert [credit(shop, i) for i in (1, 2)] == [100, 2]
    assert [(c.key["id"], c.operation) for c in cowsync.diff(shop, "s1")] == [(1, "a")]


def test_a_call_naming_operations_the_review_did_not_cover_is_refused(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "s1", "b", "UPDATE customers SET credit = 2 WHERE id = 2")
    token = cowsync.review(shop, "s1", operations=["b"]).token

    for call in (cowsync.commit, cowsync.discard):
        with pytest.raises(cowsync.ConfigurationError, match=r"covered operation.*b, not a"):
            call(shop, "s1", operations=["a", "b"], reviewed=token)
    assert credit(shop, 1) == 100 and credit(shop, 1, "s1") == 1


def test_dependencies_the_review_did_not_cover_are_refused(shop):
    write(shop, "s1", "a", "INSERT INTO customers (id, name) VALUES (10, 'dee')")
    write(shop, "s1", "b", "UPDATE customers SET credit = 5 WHERE id = 10")
    token = cowsync.review(shop, "s1", operations=["b"]).token

    with pytest.raises(cowsync.ConfigurationError, match="not a"):
        cowsync.commit(shop, "s1", operations=["b"], include_dependencies=True, reviewed=token)
    # Without naming operations, b alone needs a: the dependency rule still holds.
    with pytest.raises(cowsync.DependencyError):
        cowsync.commit(shop, "s1", reviewed=token)
    assert 10 not in [r[0] for r in rows(shop, "customers")]


def test_a_discard_with_a_token_of_chosen_operations_leaves_the_others(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "s1", "b", "UPDATE customers SET credit = 2 WHERE id = 2")
    token = cowsync.review(shop, "s1", operations=["a"]).token

    cowsync.discard(shop, "s1", reviewed=token)

    assert [(c.key["id"], c.operation) for c in cowsync.diff(shop, "s1")] == [(2, "b")]


def test_a_token_of_chosen_tables_commits_only_those(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "s1", "a", "UPDATE orders SET qty = 9 WHERE id = 1")
    token = cowsync.review(shop, "s1", tables=["orders"]).token

    with pytest.raises(cowsync.ConfigurationError, match="covered table"):
        cowsync.commit(shop, "s1", tables=["customers", "orders"], reviewed=token)
    result = cowsync.commit(shop, "s1", reviewed=token)

    assert result.applied == {"public.orders": {"insert": 0, "update": 1, "delete": 0}}
    assert credit(shop, 1) == 100
    assert [(c.table, c.key["id"]) for c in cowsync.diff(shop, "s1")] == [("public.customers", 1)]


def test_a_key_rewritten_after_the_review_stays_in_the_session(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    write(shop, "s1", "a", "UPDATE customers SET credit = 6 WHERE id = 2")
    token = cowsync.review(shop, "s1").token
    # The same operation changes a reviewed row again: what the review showed is gone.
    write(shop, "s1", "a", "UPDATE customers SET credit = 999 WHERE id = 1")

    result = cowsync.commit(shop, "s1", reviewed=token)

    assert (credit(shop, 1), credit(shop, 2)) == (100, 6)  # 999 was never reviewed
    assert [(d.reason, d.rows) for d in result.drift] == [("rewritten", 1)]
    [left] = cowsync.diff(shop, "s1")
    assert (left.key, left.before["credit"], left.after["credit"]) == ({"id": 1}, 100, 999)


def test_if_changed_refuse_raises_and_changes_nothing(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    token = cowsync.review(shop, "s1").token
    write(shop, "s1", "b", "DELETE FROM orders WHERE id = 1")
    before, session_before = base_state(shop), session_state(shop, "s1")

    with pytest.raises(cowsync.StaleReviewError) as caught:
        cowsync.commit(shop, "s1", reviewed=token, if_changed="refuse")
    with pytest.raises(cowsync.StaleReviewError):
        cowsync.discard(shop, "s1", reviewed=str(token), if_changed="refuse")

    assert [(d.table, d.reason) for d in caught.value.changes] == [("public.orders", "newer")]
    assert "public.orders: 1 row(s) written after the review" in str(caught.value)
    assert base_state(shop) == before and session_state(shop, "s1") == session_before


def test_a_token_whose_rows_another_call_took_is_refused(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    write(shop, "s1", "b", "UPDATE customers SET credit = 6 WHERE id = 2")
    token = cowsync.review(shop, "s1").token
    cowsync.commit(shop, "s1", operations=["b"])  # a second reviewer, meanwhile

    with pytest.raises(cowsync.StaleReviewError, match="already committed or discarded"):
        cowsync.commit(shop, "s1", reviewed=token)
    assert credit(shop, 1) == 100


def test_a_second_commit_with_the_same_token_is_told_it_lost(shop, connect):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    token = cowsync.review(shop, "s1").token
    cowsync.commit(connect(), "s1", reviewed=token)

    with pytest.raises(cowsync.SessionNotFoundError):
        cowsync.commit(connect(), "s1", reviewed=token)


def test_a_discard_with_a_token_keeps_what_the_review_did_not_show(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    token = cowsync.review(shop, "s1").token
    write(shop, "s1", "b", "UPDATE customers SET credit = 7 WHERE id = 2")

    result = cowsync.discard(shop, "s1", reviewed=token)

    assert result.discarded == {"public.customers": 1}
    assert [(d.reason, d.rows) for d in result.drift] == [("newer", 1)]
    assert [(c.key, c.after["credit"]) for c in cowsync.diff(shop, "s1")] == [({"id": 2}, 7)]
    assert credit(shop, 1, "s1") == 100


def test_a_token_is_a_string_that_round_trips_and_belongs_to_its_session(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    token = cowsync.review(shop, "s1").token
    assert cowsync.ReviewToken.parse(str(token)) == token
    with pytest.raises(cowsync.ConfigurationError, match="for session 's1'"):
        cowsync.commit(shop, "s2", reviewed=token)
    with pytest.raises(cowsync.ConfigurationError, match="not a cowsync review token"):
        cowsync.commit(shop, "s1", reviewed="12345")
    with pytest.raises(cowsync.ConfigurationError, match="damaged"):
        cowsync.commit(shop, "s1", reviewed=str(token)[:-6])


def test_a_review_inside_a_transaction_never_shows_a_write_its_token_does_not_cover(shop, connect):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    reviewer = connect(autocommit=False)  # READ COMMITTED, transaction already open
    reviewer.execute("SELECT 1")
    first = cowsync.review(reviewer, "s1")
    write(connect(), "s1", "b", "UPDATE customers SET credit = 6 WHERE id = 2")
    second = cowsync.review(reviewer, "s1")
    reviewer.commit()

    assert len(first.changes) == 1
    assert second.token.watermark > first.token.watermark
    assert {c.key["id"] for c in second.changes} == {1, 2}


# --- unknown sessions ---------------------------------------------------------------


def test_commit_and_discard_of_an_unknown_session_raise(shop):
    with pytest.raises(cowsync.SessionNotFoundError, match="'nobody'"):
        cowsync.commit(shop, "nobody")
    with pytest.raises(cowsync.SessionNotFoundError):
        cowsync.discard(shop, "nobody")


# --- seal ---------------------------------------------------------------------------


def test_a_sealed_session_refuses_writes_until_unsealed(shop):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    assert cowsync.seal(shop, "s1") is True
    assert cowsync.seal(shop, "s1") is False

    with pytest.raises(psycopg.Error) as caught:
        write(shop, "s1", "b", "UPDATE customers SET credit = 6 WHERE id = 2")
    assert caught.value.sqlstate == cowsync.SEALED_SQLSTATE == "CW001"
    assert "session s1 is sealed" in str(caught.value)
    assert [s.sealed for s in cowsync.sessions(shop)] == [True]
    assert cowsync.review(shop, "s1").sealed

    # Commit still works on a sealed session, and the session stays sealed.
    cowsync.commit(shop, "s1")
    assert cowsync.is_sealed(shop, "s1")
    assert cowsync.unseal(shop, "s1") is True
    write(shop, "s1", "b", "UPDATE customers SET credit = 6 WHERE id = 2")
    assert credit(shop, 2, "s1") == 6


def test_seal_waits_for_the_agent_transaction_in_progress(shop, connect):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    agent = connect(autocommit=False)
    with cowsync.session(agent, "s1", "b"):
        agent.execute("UPDATE customers SET credit = 6 WHERE id = 2")
        sealer = connect()
        run = Background(cowsync.seal, sealer, "s1")
        wait_until_blocked(connect(), sealer.info.backend_pid)
        agent.commit()  # the write in progress lands before the seal
        run.join()
        with pytest.raises(psycopg.Error) as caught:
            agent.execute("UPDATE customers SET credit = 7 WHERE id = 3")
        agent.rollback()
    assert run.error is None and caught.value.sqlstate == "CW001"
    assert credit(shop, 2, "s1") == 6 and credit(shop, 3, "s1") == 0


def test_seal_of_an_unknown_session_raises(shop):
    with pytest.raises(cowsync.SessionNotFoundError):
        cowsync.seal(shop, "nobody")


# --- linearizable session writes ----------------------------------------------------


def _hold_in_transaction(conn, call, *args, **kwargs):
    """Run ``call`` inside an open transaction of ``conn``: its session lock stays held
    until the test commits ``conn``."""
    conn.execute("SELECT 1")  # opens the transaction (autocommit=False)
    return call(conn, *args, **kwargs)


def test_an_agent_update_that_read_a_discarded_row_fails_instead_of_resurrecting_it(shop, connect):
    write(shop, "s1", "a", "UPDATE customers SET credit = 500 WHERE id = 1")
    reviewer = connect(autocommit=False)
    _hold_in_transaction(reviewer, cowsync.discard, "s1")
    agent = connect()
    # The agent's statement reads 500 (the discard is not committed), then waits.
    run = Background(
        write, agent, "s1", "b", "UPDATE customers SET credit = credit + 1 WHERE id = 1"
    )
    wait_until_blocked(connect(), agent.info.backend_pid)
    reviewer.commit()
    run.join()

    assert isinstance(run.error, psycopg.errors.SerializationFailure)
    assert credit(shop, 1, "s1") == 100  # nothing of the discarded 500 came back
    with pytest.raises(cowsync.SessionNotFoundError):
        cowsync.commit(shop, "s1")
    assert credit(shop, 1) == 100


def test_an_agent_update_of_a_discarded_insert_skips_the_row(shop, connect):
    write(shop, "s1", "a", "INSERT INTO customers (id, name) VALUES (30, 'zed')")
    reviewer = connect(autocommit=False)
    _hold_in_transaction(reviewer, cowsync.discard, "s1")
    agent = connect()
    run = Background(
        write, agent, "s1", "b", "UPDATE customers SET credit = 9 WHERE id = 30 RETURNING id"
    )
    wait_until_blocked(connect(), agent.info.backend_pid)
    reviewer.commit()
    run.join()

    assert run.error is None and run.result == []  # gone, as a deleted row is for a table
    assert [r[0] for r in rows(shop, "customers", "s1")] == [1, 2, 3]


def test_a_write_landing_after_a_commit_is_measured_against_the_committed_base(shop, connect):
    write(shop, "s1", "a", "UPDATE customers SET credit = 500 WHERE id = 1")
    reviewer = connect(autocommit=False)
    _hold_in_transaction(reviewer, cowsync.commit, "s1")
    agent = connect()
    run = Background(
        write, agent, "s1", "b", "UPDATE customers SET credit = credit + 1 WHERE id = 1"
    )
    wait_until_blocked(connect(), agent.info.backend_pid)
    reviewer.commit()
    run.join()

    assert run.error is None
    [change] = cowsync.diff(shop, "s1")
    assert (change.before["credit"], change.after["credit"]) == (500, 501)
    # No false conflict, and skip drops nothing that had none.
    result = cowsync.commit(shop, "s1", on_conflict="skip")
    assert result.conflicts == [] and credit(shop, 1) == 501


def test_a_commit_waits_for_an_agent_transaction_in_progress(shop, connect):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    agent = connect(autocommit=False)
    with cowsync.session(agent, "s1", "b"):
        agent.execute("UPDATE customers SET credit = 9 WHERE id = 2")
        with pytest.raises(cowsync.SessionBusyError, match=f"backend {agent.info.backend_pid}"):
            cowsync.commit(connect(), "s1", wait=0.2)
        committer = connect()
        run = Background(cowsync.commit, committer, "s1", wait=None)
        wait_until_blocked(connect(), committer.info.backend_pid)
        agent.commit()
        run.join()
    assert run.error is None and run.result.total == 2
    assert (credit(shop, 1), credit(shop, 2)) == (5, 9)


# --- no deadlock between transactions of one session --------------------------------


def test_an_update_of_a_row_another_session_transaction_locked_fails_at_once(shop, connect):
    # Waiting would deadlock: the locker's own write then waits for the session lock.
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    locker = connect(autocommit=False)
    with cowsync.session(locker, "s1", "a"):
        locker.execute("SELECT * FROM customers WHERE id = 1 FOR UPDATE")
        with pytest.raises(psycopg.errors.SerializationFailure, match="holds a row"):
            write(connect(), "s1", "b", "UPDATE customers SET credit = 7 WHERE id = 1")
        locker.execute("UPDATE customers SET credit = 6 WHERE id = 1")
        locker.commit()
    assert credit(shop, 1, "s1") == 6


def test_a_transaction_holding_the_session_lock_never_waits_for_a_row_lock(shop, connect):
    write(shop, "s1", "a", "UPDATE customers SET credit = 5 WHERE id = 1")
    locker = connect(autocommit=False)
    writer = connect(autocommit=False)
    with cowsync.session(locker, "s1", "a"), cowsync.session(writer, "s1", "b"):
        locker.execute("SELECT * FROM customers WHERE id = 1 FOR UPDATE")
        writer.execute("UPDATE customers SET credit = 8 WHERE id = 2")  # takes the lock
        with pytest.raises(psycopg.errors.SerializationFailure, match="holds a row"):
            writer.execute("UPDATE customers SET credit = 9 WHERE id = 1")
        writer.rollback()
        locker.execute("UPDATE customers SET credit = 6 WHERE id = 1")
        locker.commit()
    assert (credit(shop, 1, "s1"), credit(shop, 2, "s1")) == (6, 20)


def test_sealing_an_unknown_session_leaves_no_lock_row_behind(shop):
    with pytest.raises(cowsync.SessionNotFoundError):
        cowsync.seal(shop, "nobody")
    with pytest.raises(cowsync.SessionNotFoundError):
        cowsync.commit(shop, "nobody")
    assert shop.execute(
        "SELECT count(*) FROM cowsync.session_locks WHERE session_id = 'nobody'"
    ).fetchone() == (0,)


def test_a_commit_gives_way_instead_of_deadlocking_with_a_queued_agent_write(shop, connect):
    # The cycle that forms after an agent write stopped polling for the session's write
    # lock and queued for it (so its own check of the chain of waits is over): the commit
    # holds that lock and then needs a row the agent's transaction locked. PostgreSQL
    # would break it with 40P01 after deadlock_timeout; the commit must give way first
    # (its row waits are shorter), retry once the agent is done, and succeed.
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")
    write(shop, "s1", "a", "UPDATE customers SET credit = 2 WHERE id = 2")
    observer = connect()
    production = connect(autocommit=False)
    lock_customer(production, 2)
    agent = connect(autocommit=False, options="-c deadlock_timeout=50ms")
    agent.execute("SELECT set_config('app.session_id', 's1', false)")
    sessions_path(agent)
    agent.execute("SELECT * FROM customers WHERE id = 1 FOR UPDATE")  # the session's row
    # The commit's row waits end after a quarter of its deadlock_timeout (1 s here):
    # longer than the steps below take, so the commit still waits for production's row
    # when the agent queues, and PostgreSQL's detector (at 4 s) would come after it.
    reviewer = connect(options="-c deadlock_timeout=4s")

    committing = Background(cowsync.commit, reviewer, "s1", on_conflict="overwrite")
    try:
        wait_until_blocked(observer, reviewer.info.backend_pid)  # on production's row 2
    except AssertionError:
        committing.join()
        raise AssertionError(f"the commit did not wait: {committing.error!r}") from None
    writing = Background(agent.execute, "UPDATE customers SET tier = 'vip' WHERE id = 3")
    wait_until_blocked(observer, agent.info.backend_pid)
    time.sleep(0.2)  # past the agent's deadlock_timeout: it queued, its checks are over
    production.rollback()  # the commit goes on, to the agent's locked row: the cycle
    writing.join()
    agent.commit()
    committing.join()

    assert writing.error is None
    assert committing.error is None, committing.error
    assert credit(shop, 1) == 1 and credit(shop, 2) == 2


def test_a_commit_whose_rows_stay_locked_gives_up_after_wait_and_changes_nothing(shop, connect):
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")
    production = connect(autocommit=False)
    lock_customer(production, 1)
    reviewer = connect(options="-c deadlock_timeout=100ms")

    with pytest.raises(cowsync.SessionBusyError, match="stayed locked"):
        cowsync.commit(reviewer, "s1", wait=0.3)
    production.rollback()

    assert credit(shop, 1) == 100 and credit(shop, 1, "s1") == 1
    cowsync.commit(reviewer, "s1", wait=0.3)
    assert credit(shop, 1) == 1


def test_a_commit_in_a_callers_transaction_leaves_its_lock_timeout_alone(shop, connect):
    write(shop, "s1", "a", "UPDATE customers SET credit = 1 WHERE id = 1")
    conn = connect(autocommit=False)
    conn.execute("SET LOCAL lock_timeout = '5s'")

    cowsync.commit(conn, "s1")

    assert conn.execute("SHOW lock_timeout").fetchone() == ("5s",)
    conn.commit()
    assert credit(shop, 1) == 1
