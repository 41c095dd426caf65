"""Whatever a borrower does, the next borrower sees exactly its own binding or none."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter

import psycopg
import pytest

import cowsync
from tests.pool.conftest import probe, wait_returned

UNBOUND_VIEW = ("", "", "", [])


def next_borrower(pool, **kwargs):
    """What the next borrower sees: (session, operation, visible, secrets) and its pid."""
    wait_returned(pool)
    with pool.connection(**kwargs) as conn:
        session, operation, visible, pid, secrets = probe(conn)
    return (session, operation, visible, secrets), pid


@pytest.fixture(
    params=[(True, "worker"), (False, "worker"), (True, "caller"), (False, "caller")],
    ids=lambda p: ("autocommit" if p[0] else "transactions") + f"-clear-in-{p[1]}",
)
def pool(request, cow_items, make_pool):
    autocommit, clear_on_return = request.param
    cow_items("s1")
    return make_pool(kwargs={"autocommit": autocommit}, clear_on_return=clear_on_return)


def test_borrower_that_raises(pool):
    with pytest.raises(ZeroDivisionError), pool.connection(session_id="s1") as conn:
        assert probe(conn)[4] == ["secret-s1"]
        pid = conn.info.backend_pid
        1 / 0  # noqa: B018
    seen, next_pid = next_borrower(pool)
    assert seen == UNBOUND_VIEW
    assert next_pid == pid  # the same connection, cleaned


def test_borrower_that_leaves_a_failed_transaction(pool):
    with pool.connection(session_id="s1") as conn:
        pid = conn.info.backend_pid
        with contextlib.suppress(psycopg.errors.DivisionByZero):
            if conn.autocommit:
                # An explicit transaction left aborted by the borrower.
                conn.execute("BEGIN")
            conn.execute("SELECT 1 / 0")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
    seen, next_pid = next_borrower(pool)
    assert seen == UNBOUND_VIEW
    assert next_pid == pid


OWN_SETS = [
    "SET app.session_id = 'intruder'",
    "SELECT set_config('app.session_id', 'intruder', false)",
    "SET app.operation_id = 'intruder'",
]


def test_borrower_that_runs_its_own_set(pool):
    for statement in OWN_SETS:
        for kwargs in ({}, {"session_id": "s1"}):  # an unbound and a bound borrower
            with pool.connection(**kwargs) as conn:
                conn.execute(statement)
                if not conn.autocommit:
                    conn.commit()  # make it stick on the server session
                assert "intruder" in probe(conn)[:2]
            seen, _ = next_borrower(pool)
            assert seen == UNBOUND_VIEW, statement
            seen, _ = next_borrower(pool, session_id="s2", operation_id="op2")
            assert seen == ("s2", "op2", "", []), statement


def test_borrower_whose_connection_is_killed(pool, cow_conn):
    with pool.connection(session_id="s1") as borrowed:
        pid = borrowed.info.backend_pid
        cow_conn.execute("SELECT pg_terminate_backend(%s)", [pid])
        with pytest.raises(psycopg.OperationalError):
            borrowed.execute("SELECT 1")
    seen, next_pid = next_borrower(pool)
    assert seen == UNBOUND_VIEW
    assert next_pid != pid
    assert pool.get_stats()["returns_bad"] == 1


def test_borrower_that_returns_a_connection_mid_transaction(pool):
    with cowsync.bind("s1"):
        conn = pool.getconn()  # getconn/putconn users can hand back an open transaction
    try:
        if conn.autocommit:
            conn.execute("BEGIN")
        conn.execute("SELECT set_config('app.session_id', 'left-open', false)")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    finally:
        pool.putconn(conn)
    seen, _ = next_borrower(pool)
    assert seen == UNBOUND_VIEW


# --- many threads, many sessions ------------------------------------------------------------

SESSIONS = [f"s{i}" for i in range(8)]
THREADS = 32
CHECKOUTS = 300


@pytest.mark.parametrize("clear_on_return", ["worker", "caller"])
def test_many_threads_never_read_another_sessions_data(cow_items, make_pool, clear_on_return):
    for session_id in SESSIONS:
        cow_items(session_id)
    pool = make_pool(min_size=4, max_size=8, timeout=60, clear_on_return=clear_on_return)
    choices = [*SESSIONS, None]  # eight sessions and "no session", taken in turn
    wrong: list[tuple] = []
    counts: Counter[str] = Counter()
    counts_lock = threading.Lock()
    start = threading.Barrier(THREADS, timeout=30)
    errors: list[BaseException] = []

    def borrower(index: int) -> None:
        try:
            start.wait()
            for n in range(CHECKOUTS):
                session_id = choices[(index + n) % len(choices)]
                operation_id = f"op-{index}-{n}" if session_id else None
                # Half the checkouts bind through the context, half through the argument.
                if session_id is not None and n % 2:
                    with cowsync.bind(session_id, operation_id), pool.connection() as conn:
                        seen = probe(conn)
                else:
                    with pool.connection(session_id=session_id, operation_id=operation_id) as conn:
                        seen = probe(conn)
                expected = (
                    (session_id, operation_id, "", [f"secret-{session_id}"])
                    if session_id
                    else ("", "", "", [])
                )
                got = (seen[0], seen[1], seen[2], seen[4])
                with counts_lock:
                    counts[session_id or "-"] += 1
                    if got != expected:
                        wrong.append((session_id, operation_id, got))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=borrower, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert wrong == [], f"{len(wrong)} cross-session reads, e.g. {wrong[:5]}"
    assert sum(counts.values()) == THREADS * CHECKOUTS
    assert set(counts) == {*SESSIONS, "-"}
    wait_returned(pool)
    stats = pool.get_stats()
    assert stats["cow_checkouts_bound"] + stats["cow_checkouts_unbound"] == THREADS * CHECKOUTS
    assert stats["cow_checkouts_unbound"] == counts["-"]
