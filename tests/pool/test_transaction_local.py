"""Transaction-local mode: every transaction states its binding; nothing stays on the server."""

from __future__ import annotations

import threading

import psycopg
import pytest

import cowsync
from cowsync.pool import TransactionLocalConnection
from tests.pool._wire import traced
from tests.pool.conftest import probe, settings, wait_returned

UNBOUND = ("", "", "")
NO_PREPARE = {"prepare_threshold": None}  # pgbouncer 1.18 cannot keep named statements


def server_session_settings(conn):
    """The variables on the server session itself, bypassing psycopg (and our hooks)."""
    result = conn.pgconn.exec_(
        b"SELECT coalesce(current_setting('app.session_id', true), ''),"
        b" coalesce(current_setting('app.operation_id', true), '')"
    )
    return tuple(result.get_value(0, i).decode() for i in range(2))


@pytest.fixture
def tl_pool(cow_items, make_pool):
    cow_items("s1", "op1")

    def make(autocommit, **kwargs):
        return make_pool(transaction_local=True, kwargs={"autocommit": autocommit}, **kwargs)

    return make


def test_connections_are_transaction_local(tl_pool):
    pool = tl_pool(autocommit=False)
    with pool.connection() as conn:
        assert isinstance(conn, TransactionLocalConnection)
    assert pool.transaction_local


def test_transaction_states_the_binding_in_its_begin_message(tl_pool, cow_dsn):
    pool = tl_pool(autocommit=False)
    with pool.connection(session_id="s1", operation_id="op1") as conn, traced(conn) as wire:
        session, operation, _, _, secrets = probe(conn)
        conn.commit()
    assert (session, operation, secrets) == ("s1", "op1", ["secret-s1"])
    with psycopg.connect(cow_dsn) as plain, traced(plain) as reference:
        probe(plain)
        plain.commit()
    assert wire.requests == reference.requests  # no round trip added
    # BEGIN and set_config share one flush; the ids travel as parameters, not in the text.
    assert wire.queries[0] == '"" "BEGIN" 0'
    assert wire.queries[1].startswith('"" "SELECT pg_catalog.set_config(')
    assert not any("s1" in text or "op1" in text for text in wire.queries)


def test_checkout_costs_no_round_trip(tl_pool):
    pool = tl_pool(autocommit=False)
    with pool.connection() as conn:
        pass
    wait_returned(pool)
    with traced(conn) as wire, pool.connection(session_id="s1") as same:
        assert same is conn
    assert wire.requests == 0


def test_nothing_stays_on_the_server_session(tl_pool):
    pool = tl_pool(autocommit=False)
    with pool.connection(session_id="s1", operation_id="op1") as conn:
        assert settings(conn)[:2] == ("s1", "op1")
        conn.commit()
        assert server_session_settings(conn) == ("", "")


def test_rolled_back_transactions_and_new_ones_are_bound_again(tl_pool):
    pool = tl_pool(autocommit=False)
    with pool.connection(session_id="s1") as conn:
        for _ in range(3):
            assert probe(conn)[4] == ["secret-s1"]
            conn.rollback()


def test_writes_in_a_bound_transaction_go_to_the_session(tl_pool, cow_conn):
    pool = tl_pool(autocommit=False)
    with pool.connection(session_id="s1", operation_id="op1") as borrowed:
        borrowed.execute("INSERT INTO items (name) VALUES ('secret-tl')")
        borrowed.commit()
        with borrowed.pipeline():
            borrowed.execute("INSERT INTO items (name) VALUES ('secret-tl-piped')")
    with pool.connection(session_id="s1") as borrowed:
        assert probe(borrowed)[4] == ["secret-s1", "secret-tl", "secret-tl-piped"]
    assert probe(cow_conn)[4] == []  # production never saw it


@pytest.mark.parametrize("autocommit", [True, False])
def test_each_autocommit_statement_shares_a_pipeline_with_the_binding(tl_pool, autocommit):
    pool = tl_pool(autocommit=autocommit)
    with pool.connection(session_id="s1", operation_id="op1") as conn:
        conn.autocommit = True
        with traced(conn) as wire:
            first = probe(conn)
            second = probe(conn)
        assert server_session_settings(conn) == ("", "")
    assert first[:2] == second[:2] == ("s1", "op1")
    assert first[4] == ["secret-s1"]
    assert wire.requests == 2  # one per statement, as without cowsync


def test_autocommit_writes_go_to_the_session(tl_pool, cow_conn):
    pool = tl_pool(autocommit=True)
    with pool.connection(session_id="s1", operation_id="op1") as borrowed:
        borrowed.execute("INSERT INTO items (name) VALUES ('secret-single')")
        borrowed.cursor().executemany(
            "INSERT INTO items (name) VALUES (%s)", [("secret-many-1",), ("secret-many-2",)]
        )
        with borrowed.pipeline():
            borrowed.execute("INSERT INTO items (name) VALUES ('secret-piped')")
        with borrowed.transaction():
            borrowed.execute("INSERT INTO items (name) VALUES ('secret-block')")
    with pool.connection(session_id="s1") as borrowed:
        assert probe(borrowed)[4] == [
            "secret-block",
            "secret-many-1",
            "secret-many-2",
            "secret-piped",
            "secret-s1",
            "secret-single",
        ]
    assert probe(cow_conn)[4] == []


def test_bound_copy_outside_a_transaction_is_refused_not_run_unbound(tl_pool):
    pool = tl_pool(autocommit=True)
    with pool.connection(session_id="s1") as conn:
        with (
            pytest.raises(cowsync.ConfigurationError, match="transaction"),
            conn.cursor().copy("COPY (SELECT name FROM items) TO STDOUT") as copy,
        ):
            list(copy)
        with (
            conn.transaction(),
            conn.cursor().copy(
                "COPY (SELECT name FROM items WHERE name LIKE 'secret-%') TO STDOUT"
            ) as copy,
        ):
            assert [bytes(row) for row in copy] == [b"secret-s1\n"]


def test_unbound_autocommit_statements_run_as_they_are(tl_pool):
    pool = tl_pool(autocommit=True)
    with pool.connection() as conn, traced(conn) as wire:
        conn.execute("VACUUM items_base")  # cannot run in a pipeline or a transaction
    assert not any("set_config" in query for query in wire.queries)


def test_preview_is_materialised_once_per_checkout(cow_items, tl_pool):
    cow_items("s1", "op2", name="secret-later")
    pool = tl_pool(autocommit=False)
    with pool.connection(session_id="s1", visible_operations=["op1"]) as conn:
        for _ in range(2):
            _session, _, visible, _, secrets = probe(conn)
            conn.rollback()
            assert visible == "op1"
            assert secrets == ["secret-s1"]
        with pytest.raises(psycopg.Error):
            conn.execute("INSERT INTO items (name) VALUES ('in-preview')")


def test_borrower_set_does_not_reach_the_next_borrower(tl_pool):
    pool = tl_pool(autocommit=True)
    with pool.connection() as conn:
        conn.execute("SET app.session_id = 'intruder'")
    wait_returned(pool)
    with pool.connection() as conn:
        assert settings(conn) == UNBOUND


# --- through pgbouncer in transaction pooling mode ---------------------------------------------


def test_bouncer_clients_share_one_server_session(bouncer_dsn):
    # The premise of the tests below: a session-level SET on one client reaches the other.
    with (
        psycopg.connect(bouncer_dsn, autocommit=True, **NO_PREPARE) as a,
        psycopg.connect(bouncer_dsn, autocommit=True, **NO_PREPARE) as b,
    ):
        a.execute("SET app.session_id = 'leaked'")
        assert (
            b.execute("SELECT pg_backend_pid()").fetchone()
            == a.execute("SELECT pg_backend_pid()").fetchone()
        )
        assert settings(b)[0] == "leaked"
        a.execute("RESET app.session_id")


ROUNDS = 60


def test_transaction_local_clients_on_one_server_session_never_see_each_other(
    cow_items, make_pool, bouncer_dsn
):
    cow_items("s-a")
    cow_items("s-b")
    pools = {
        "s-a": make_pool(
            bouncer_dsn,
            transaction_local=True,
            kwargs={"autocommit": False, **NO_PREPARE},
            max_size=1,
        ),
        "s-b": make_pool(
            bouncer_dsn,
            transaction_local=True,
            kwargs={"autocommit": True, **NO_PREPARE},
            max_size=1,
        ),
        None: make_pool(
            bouncer_dsn,
            transaction_local=True,
            kwargs={"autocommit": True, **NO_PREPARE},
            max_size=1,
        ),
    }
    pids: set[int] = set()
    wrong: list[tuple] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(pools), timeout=30)

    def client(session_id):
        pool = pools[session_id]
        expected = (
            (session_id, f"op-{session_id}", "", [f"secret-{session_id}"])
            if session_id
            else ("", "", "", [])
        )
        try:
            start.wait()
            for n in range(ROUNDS):
                operation_id = f"op-{session_id}" if session_id else None
                with pool.connection(session_id=session_id, operation_id=operation_id) as conn:
                    session, operation, visible, pid, secrets = probe(conn)
                    # In every other round, a second transaction on the same checkout.
                    if n % 2 and not conn.autocommit:
                        conn.commit()
                        session, operation, visible, pid, secrets = probe(conn)
                pids.add(pid)
                if (session, operation, visible, secrets) != expected:
                    wrong.append((session_id, session, operation, secrets))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(sid,)) for sid in pools]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert wrong == []
    assert len(pids) == 1, "the clients did not share one server connection"
