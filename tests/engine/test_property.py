"""A session behaves like a table: random write sequences replayed on a plain table and,
inside a session, on the COW view must leave both showing the same rows after every step,
fail on the same statements with the same SQLSTATE, and leave production untouched.

NOT NULL / CHECK violations are generated only by statements that cannot also break a
unique index: which error wins when one statement breaks both is tested on its own
(test_session.py::test_row_errors_take_precedence_over_unique_errors_in_a_session).
"""

from __future__ import annotations

import uuid

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

import cowsync
from tests._mode import base_of

SEED = [(k, k, k * 10) for k in range(1, 6)]

keys = st.integers(min_value=1, max_value=8)
values = st.integers(min_value=0, max_value=9)
uniques = st.one_of(st.none(), st.sampled_from([10, 20, 30, 40, 50, 60, 70]))

statements = st.one_of(
    st.tuples(st.just("insert"), keys, values, uniques),
    st.tuples(st.just("insert_many"), keys, keys, values),
    st.tuples(st.just("update_v"), keys, st.integers(min_value=-2, max_value=9)),
    st.tuples(st.just("update_u"), keys, uniques),
    st.tuples(st.just("update_key"), keys, keys),
    st.tuples(st.just("update_key_and_v"), keys, keys, values),
    st.tuples(st.just("delete"), keys),
    st.tuples(st.just("bump_all"), st.integers(min_value=-3, max_value=3)),
    st.tuples(st.just("delete_where"), values),
)
steps = st.lists(
    st.tuples(statements, st.sampled_from(["op-a", "op-b", "op-c"])), min_size=10, max_size=40
)


def render(statement, table):
    kind, *args = statement
    t = sql.Identifier(table)
    if kind == "insert":
        return sql.SQL("INSERT INTO {} (k, v, u) VALUES (%s, %s, %s)").format(t), args
    if kind == "insert_many":
        first, second, v = args
        return sql.SQL("INSERT INTO {} (k, v) VALUES (%s, %s), (%s, %s)").format(t), [
            first,
            v,
            second,
            v,
        ]
    if kind == "update_v":
        key, v = args
        return sql.SQL("UPDATE {} SET v = %s WHERE k = %s").format(t), [v, key]
    if kind == "update_u":
        key, u = args
        return sql.SQL("UPDATE {} SET u = %s WHERE k = %s").format(t), [u, key]
    if kind == "update_key":
        old, new = args
        return sql.SQL("UPDATE {} SET k = %s WHERE k = %s").format(t), [new, old]
    if kind == "update_key_and_v":
        old, new, v = args
        return sql.SQL("UPDATE {} SET k = %s, v = %s WHERE k = %s").format(t), [new, v, old]
    if kind == "delete":
        return sql.SQL("DELETE FROM {} WHERE k = %s").format(t), args
    if kind == "bump_all":
        return sql.SQL("UPDATE {} SET v = v + %s").format(t), args
    if kind == "delete_where":
        return sql.SQL("DELETE FROM {} WHERE v > %s").format(t), args
    raise AssertionError(kind)


def run(conn, query, params):
    try:
        cur = conn.execute(query, params)
    except psycopg.Error as exc:
        return ("error", exc.diag.sqlstate)
    return ("ok", cur.rowcount)


def contents(conn, table):
    return conn.execute(
        sql.SQL("SELECT k, v, u FROM {} ORDER BY k").format(sql.Identifier(table))
    ).fetchall()


def set_operation(conn, operation):
    conn.execute("SELECT set_config('app.operation_id', %s, false)", [operation])


def test_a_session_behaves_like_a_table(cow):
    conn = cow
    for table in ("plain", "items"):
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (k int PRIMARY KEY, v int NOT NULL CHECK (v >= 0), u int UNIQUE)"
            ).format(sql.Identifier(table))
        )
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(sql.Identifier(table)), SEED[0]
        )
        conn.cursor().executemany(
            sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(sql.Identifier(table)), SEED[1:]
        )
    cowsync.enable(conn, "items")
    base_query = sql.SQL("SELECT * FROM ONLY {} ORDER BY k").format(base_of(conn, "items"))
    base = conn.execute(base_query).fetchall()

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(steps)
    def replay(sequence):
        # Reset: the plain table back to the seed; a fresh session for the view.
        conn.execute("TRUNCATE plain")
        conn.cursor().executemany("INSERT INTO plain VALUES (%s, %s, %s)", SEED)
        session_id = str(uuid.uuid4())
        for number, (statement, operation) in enumerate(sequence, 1):
            plain_query, params = render(statement, "plain")
            view_query, _ = render(statement, "items")
            expected = run(conn, plain_query, params)
            with cowsync.session(conn, session_id, operation):
                got = run(conn, view_query, params)
                seen = contents(conn, "items")
            where = f"step {number} {statement!r} in {operation}"
            assert got == expected, where
            assert seen == contents(conn, "plain"), where
        # Production saw none of it.
        assert contents(conn, "items") == SEED
        assert conn.execute(base_query).fetchall() == base

    replay()
