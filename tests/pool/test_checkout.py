"""CowPool hands out connections bound to the caller's session: context, overrides, costs."""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

import cowsync
from cowsync.pool import CowPool
from tests.pool._wire import traced
from tests.pool.conftest import probe, settings, wait_returned


def settings_of(pool, **kwargs):
    with pool.connection(**kwargs) as conn:
        return settings(conn)


UNBOUND = ("", "", "")


def test_connection_carries_the_current_binding_and_its_rows(cow_items, make_pool):
    cow_items("s1", "op1")
    pool = make_pool()
    with cowsync.bind("s1", "op1"), pool.connection() as conn:
        session, operation, visible, _, secrets = probe(conn)
    assert (session, operation, visible) == ("s1", "op1", "")
    assert secrets == ["secret-s1"]
    with pool.connection() as conn:
        assert probe(conn)[4] == []


def test_nested_bindings_apply_the_innermost_and_restore_the_outer(cow_items, make_pool):
    pool = make_pool()
    with cowsync.bind("outer", "op-a"):
        assert settings_of(pool) == ("outer", "op-a", "")
        with cowsync.bind("inner"):
            assert settings_of(pool) == ("inner", "", "")
        assert settings_of(pool) == ("outer", "op-a", "")
    assert settings_of(pool) == UNBOUND


def test_binding_is_restored_when_the_block_raises(cow_items, make_pool):
    pool = make_pool()
    with pytest.raises(RuntimeError), cowsync.bind("s1"), pool.connection() as conn:
        assert probe(conn)[0] == "s1"
        raise RuntimeError("boom")
    assert cowsync.current_binding() is None
    assert settings_of(pool) == UNBOUND


def test_threads_get_their_own_binding_concurrently(cow_items, make_pool):
    cow_items("s-main")
    cow_items("s-thread")
    pool = make_pool(min_size=2)
    both_checked_out = threading.Barrier(2, timeout=10)
    seen: dict[str, tuple] = {}

    def borrow(name, session_id):
        def run():
            with cowsync.bind(session_id), pool.connection() as conn:
                both_checked_out.wait()  # both connections are out, bound, at once
                seen[name] = probe(conn)

        return run

    def unbound_thread():
        # A new thread starts with an empty context: the main thread's binding is not its.
        seen["fresh"] = settings_of(pool)

    worker = threading.Thread(target=borrow("thread", "s-thread"))
    with cowsync.bind("s-main"):
        worker.start()
        borrow("main", "s-main")()
        worker.join()
        fresh = threading.Thread(target=unbound_thread)
        fresh.start()
        fresh.join()
    assert seen["main"][0] == "s-main" and seen["main"][4] == ["secret-s-main"]
    assert seen["thread"][0] == "s-thread" and seen["thread"][4] == ["secret-s-thread"]
    assert seen["main"][3] != seen["thread"][3]  # two server sessions at once
    assert seen["fresh"] == UNBOUND


def test_session_id_argument_overrides_the_context(cow_items, make_pool):
    pool = make_pool()
    with cowsync.bind("ctx", "ctx-op"):
        assert settings_of(pool, session_id="explicit") == ("explicit", "", "")
        assert settings_of(pool, session_id="explicit", operation_id="op9") == (
            "explicit",
            "op9",
            "",
        )
        assert settings_of(pool, session_id=None) == UNBOUND
        assert settings_of(pool) == ("ctx", "ctx-op", "")  # the context is untouched


def test_override_does_not_reach_nested_checkouts(cow_items, make_pool):
    pool = make_pool(min_size=2)
    with pool.connection(session_id="outer-only") as outer, pool.connection() as inner:
        assert probe(outer)[0] == "outer-only"
        assert probe(inner)[0] == ""


def test_operation_without_session_is_refused_before_checkout(make_pool):
    pool = make_pool()
    before = pool.get_stats().get("requests_num", 0)
    with (
        pytest.raises(cowsync.ConfigurationError, match="session_id"),
        pool.connection(operation_id="op1"),
    ):
        pass
    with (
        pytest.raises(cowsync.ConfigurationError),
        pool.connection(session_id=None, visible_operations=["op1"]),
    ):
        pass
    assert pool.get_stats().get("requests_num", 0) == before


@pytest.mark.parametrize("bad", ["", "a b", "x'; DROP TABLE items; --", "é", "a" * 201, "a,b"])
def test_invalid_session_id_is_refused_before_reaching_sql(make_pool, bad):
    pool = make_pool()
    with pytest.raises(cowsync.ConfigurationError), pool.connection(session_id=bad):
        pass
    assert pool.get_stats().get("requests_num", 0) == 0


def test_visible_operations_bind_a_read_only_preview(cow_items, make_pool):
    cow_items("s1", "op1", name="secret-first")
    cow_items("s1", "op2", name="secret-second")
    pool = make_pool()
    with pool.connection(session_id="s1", visible_operations=["op1"]) as conn:
        _session, _, visible, _, secrets = probe(conn)
        assert visible == "op1"
        assert secrets == ["secret-first"]
        with pytest.raises(psycopg.Error):
            conn.execute("INSERT INTO items (name) VALUES ('in-preview')")
    with pool.connection(session_id="s1") as conn:
        assert probe(conn)[4] == ["secret-first", "secret-second"]
    assert settings_of(pool) == UNBOUND


def test_failed_binding_returns_the_connection_and_raises(make_pool, dsn):
    pool = make_pool(dsn)  # a database without the engine: no preview can be materialised
    with (
        pytest.raises(psycopg.errors.InvalidSchemaName),
        pool.connection(session_id="s1", visible_operations=["op1"]),
    ):
        pass
    assert settings_of(pool) == UNBOUND
    wait_returned(pool)
    assert pool.get_stats()["pool_size"] == 1


def test_getconn_and_putconn_bind_and_unbind(cow_items, make_pool):
    pool = make_pool()
    with cowsync.bind("s1"):
        conn = pool.getconn()
    try:
        assert probe(conn)[0] == "s1"
    finally:
        pool.putconn(conn)
    conn = pool.getconn()
    try:
        assert probe(conn)[:3] == UNBOUND
    finally:
        pool.putconn(conn)


def test_user_configure_and_reset_callbacks_still_run(make_pool):
    configured, reset = [], []
    pool = make_pool(configure=configured.append, reset=reset.append)
    with pool.connection(session_id="s1"):
        pass
    wait_returned(pool)
    assert len(configured) == 1
    assert len(reset) == 1


def test_user_reset_cannot_leave_a_session_behind(make_pool):
    def reset(conn):
        conn.execute("SELECT set_config('app.session_id', 'from-reset', false)")

    pool = make_pool(reset=reset)
    with pool.connection(session_id="s1"):
        pass
    assert settings_of(pool) == UNBOUND


def test_new_connections_start_unbound_despite_database_defaults(conn, dsn, make_pool):
    # A value from the database's defaults would bind every new connection.
    conn.execute(
        sql.SQL("ALTER DATABASE {} SET app.session_id = 'from-defaults'").format(
            sql.Identifier(conn.info.dbname)
        )
    )
    pool = make_pool(dsn)
    assert settings_of(pool) == UNBOUND


def test_stats_count_bound_and_unbound_checkouts(cow_items, make_pool):
    pool = make_pool()
    for _ in range(3):
        settings_of(pool, session_id="s1")
    for _ in range(2):
        settings_of(pool)
    wait_returned(pool)
    stats = pool.get_stats()
    assert stats["cow_checkouts_bound"] == 3
    assert stats["cow_checkouts_unbound"] == 2
    assert stats["cow_bindings_applied"] == 3
    # The first unbound checkout follows a bound one (cleared on return), so reuses it too.
    assert stats["cow_bindings_reused"] == 2
    assert stats["cow_resets"] == 5
    assert stats["requests_num"] == 5  # psycopg_pool's own counters keep working
    popped = pool.pop_stats()
    assert popped["cow_checkouts_bound"] == 3
    assert "cow_checkouts_bound" not in pool.get_stats()


# --- round trips, counted on the wire ---------------------------------------------------------


def checkout_wire(pool, **kwargs):
    """The messages of one checkout (up to the block's first line) and of its return."""
    wait_returned(pool)
    with pool.connection(session_id=None) as conn:  # a handle on the pool's only connection
        pass
    wait_returned(pool)
    during_checkout = traced(conn)
    checkout = during_checkout.__enter__()
    with pool.connection(**kwargs) as same:
        during_checkout.__exit__(None, None, None)
        assert same is conn
        during_return = traced(conn)
        returned = during_return.__enter__()
    try:
        wait_returned(pool)  # the reset runs in the pool's worker thread
    finally:
        during_return.__exit__(None, None, None)
    return checkout, returned


def test_bound_checkout_costs_one_round_trip_and_unbound_none(make_pool):
    pool = make_pool()
    bound, bound_return = checkout_wire(pool, session_id="s1", operation_id="op1")
    assert bound.requests == 1
    assert "set_config" in bound.queries[0]
    assert bound_return.requests == 1  # the reset clears, in the pool's worker

    unbound, unbound_return = checkout_wire(pool)
    assert unbound.requests == 0
    assert unbound_return.requests == 1


def test_clear_in_caller_clears_inside_putconn(make_pool):
    pool = make_pool(clear_on_return="caller")
    with pool.connection(session_id="s1") as conn:
        pass
    with traced(conn) as returned:
        pool.putconn(pool.getconn())  # unbound checkout: nothing; return: the clear
    assert returned.requests == 1
    assert pool.get_stats()["pool_available"] == 1  # back at once, no worker involved
    assert settings_of(pool) == UNBOUND


def test_clear_in_caller_still_clears_after_a_user_reset(make_pool):
    def reset(conn):
        conn.execute("SELECT set_config('app.session_id', 'from-reset', false)")

    pool = make_pool(clear_on_return="caller", reset=reset)
    with pool.connection(session_id="s1"):
        pass
    assert settings_of(pool) == UNBOUND


def test_clear_on_return_must_be_worker_or_caller():
    with pytest.raises(cowsync.ConfigurationError, match="clear_on_return"):
        CowPool("", clear_on_return="never", open=False)


def test_statements_in_a_bound_checkout_pay_nothing_extra(make_pool, cow_dsn):
    pool = make_pool(kwargs={"autocommit": False})
    with pool.connection(session_id="s1") as conn, traced(conn) as wire:
        conn.execute("SELECT 1")
        conn.execute("SELECT 2")
        conn.commit()
    with psycopg.connect(cow_dsn) as plain, traced(plain) as reference:
        plain.execute("SELECT 1")
        plain.execute("SELECT 2")
        plain.commit()
    assert wire.requests == reference.requests
    assert wire.queries == reference.queries


def test_a_connection_killed_in_the_pool_is_replaced_at_bound_checkout(cow_conn, make_pool):
    pool = make_pool()
    first = settings_of(pool)
    with pool.connection() as victim:
        pid = victim.info.backend_pid
    wait_returned(pool)
    cow_conn.execute("SELECT pg_terminate_backend(%s)", [pid])
    with pool.connection(session_id="s1") as fresh:
        session = settings(fresh)[0]
        new_pid = fresh.info.backend_pid
    assert first == UNBOUND
    assert session == "s1"
    assert new_pid != pid


def test_cowpool_is_a_connection_pool():
    assert issubclass(CowPool, ConnectionPool)
