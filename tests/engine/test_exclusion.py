"""EXCLUDE constraints in a session: judged like on the table, against what the session sees.

The fidelity matrix (tests/fidelity/cases.py, ``exclusion*``) compares SQLSTATE and
constraint name with a plain table; these tests pin the rest: message and detail,
expression elements, an operator outside the search_path, the change store's index,
alter/refresh, a commit that meets production's rows, and disable leaving no trace.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import cowsync
from tests._mode import OVERLAY, base_of, changes_of, text
from tests.engine.conftest import assert_same_catalog, fetch, without_sequence_positions

BOOKINGS = """
CREATE TABLE items (id serial PRIMARY KEY, during int4range,
                    CONSTRAINT items_no_overlap EXCLUDE USING gist (during WITH &&));
INSERT INTO items (during) VALUES ('[1,5)'), ('[10,20)');
"""

# Two elements over expressions, no extension needed: a room (as a one-value range,
# compared with =) and a time span built from two columns.
ROOMS = """
CREATE TABLE items (
    id int PRIMARY KEY, room int NOT NULL, lo int NOT NULL, hi int NOT NULL,
    CONSTRAINT items_room_booked EXCLUDE USING gist
        (int4range(room, room, '[]') WITH =, int4range(lo, hi) WITH &&)
);
INSERT INTO items VALUES (1, 1, 1, 5), (2, 2, 1, 5);
"""


def error(conn: psycopg.Connection[Any], query: str) -> psycopg.Error:
    """The error ``query`` raises (the statement's transaction is rolled back)."""
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(query)
    return caught.value


def table_error(conn: psycopg.Connection[Any], setup: str, query: str) -> psycopg.Error:
    """What a plain table (in a scratch schema) raises for ``query``."""
    conn.execute("CREATE SCHEMA plain")
    try:
        conn.execute("SET search_path = plain")
        conn.execute(setup)
        return error(conn, query)
    finally:
        conn.execute("RESET search_path")
        conn.execute("DROP SCHEMA plain CASCADE")


def same_error(session: psycopg.Error, table: psycopg.Error) -> None:
    """Session error and table error agree in everything a client reads."""
    got, want = session.diag, table.diag
    assert (got.sqlstate, got.message_primary, got.message_detail, got.constraint_name) == (
        want.sqlstate,
        want.message_primary,
        want.message_detail,
        want.constraint_name,
    )
    assert (got.table_name, got.schema_name) == ("items", "public")


@pytest.mark.parametrize(
    ("setup", "query"),
    [
        (BOOKINGS, "INSERT INTO items (during) VALUES ('[3,8)')"),
        (BOOKINGS, "UPDATE items SET during = '[15,30)' WHERE id = 1"),
        (ROOMS, "INSERT INTO items VALUES (3, 1, 4, 9)"),
        (ROOMS, "UPDATE items SET room = 1 WHERE id = 2"),
    ],
    ids=["insert", "update", "expressions-insert", "expressions-update"],
)
def test_a_session_raises_what_the_table_raises(cow, setup, query):
    expected = table_error(cow, setup, query)
    assert expected.diag.sqlstate == "23P01"
    cow.execute(setup)
    cowsync.enable(cow, "items")
    before = fetch(cow, "SELECT * FROM items ORDER BY id")
    with cowsync.session(cow, "s"):
        same_error(error(cow, query), expected)
        assert fetch(cow, "SELECT * FROM items ORDER BY id") == before


def test_expression_elements_see_session_rows_and_skip_the_row_itself(cow):
    cow.execute(ROOMS)
    cowsync.enable(cow, "items")
    with cowsync.session(cow, "s"):
        cow.execute("INSERT INTO items VALUES (3, 3, 1, 5)")
        cow.execute("UPDATE items SET hi = 6 WHERE id = 3")  # overlaps only itself
        assert error(cow, "INSERT INTO items VALUES (4, 3, 5, 7)").diag.message_detail == (
            "Key (int4range(room, room, '[]'::text), int4range(lo, hi))=([3,4), [5,7)) "
            "conflicts with existing key (int4range(room, room, '[]'::text), "
            "int4range(lo, hi))=([3,4), [1,6))."
        )
        cow.execute("DELETE FROM items WHERE id = 1")
        cow.execute("INSERT INTO items VALUES (4, 1, 2, 3)")  # id 1's span is free now
    cowsync.commit(cow, "s")
    assert fetch(cow, "SELECT * FROM items ORDER BY id") == [
        (2, 2, 1, 5),
        (3, 3, 1, 6),
        (4, 1, 2, 3),
    ]


def test_an_operator_and_operator_class_off_the_search_path(cow):
    """The constraint's own operator is named schema-qualified: the trigger's pinned
    search_path (pg_catalog, the table's schema) does not reach schema ``ops``."""
    cow.execute(
        """
        CREATE SCHEMA ops;
        CREATE OPERATOR ops.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = int4eq,
                                 COMMUTATOR = OPERATOR(ops.===));
        CREATE OPERATOR CLASS ops.int_same_ops FOR TYPE int USING hash
            AS OPERATOR 1 ops.===, FUNCTION 1 hashint4(int);
        CREATE TABLE items (id int PRIMARY KEY, code int,
            CONSTRAINT items_code_once EXCLUDE USING hash (code ops.int_same_ops WITH ops.===));
        INSERT INTO items VALUES (1, 10), (2, 20);
        """
    )
    cowsync.enable(cow, "items")
    (definition,) = fetch(
        cow,
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'items_changes' "
        "AND indexname LIKE 'cowsync\\_%\\_x\\_%'",
    )[0]
    store_schema = "public_cow" if OVERLAY else "public"
    assert definition.endswith(
        f" ON {store_schema}.items_changes USING hash (code ops.int_same_ops)"
    )
    with cowsync.session(cow, "s"):
        err = error(cow, "INSERT INTO items VALUES (3, 10)")
        assert (err.diag.sqlstate, err.diag.constraint_name) == ("23P01", "items_code_once")
        cow.execute("INSERT INTO items VALUES (3, 30)")
        err = error(cow, "UPDATE items SET code = 30 WHERE id = 2")
        assert err.diag.message_detail == (
            "Key (code)=(30) conflicts with existing key (code)=(30)."
        )


def test_the_check_probes_indexes_on_base_and_change_store(cow):
    cow.execute(
        """
        CREATE TABLE items (id serial PRIMARY KEY, during int4range,
                            CONSTRAINT items_no_overlap EXCLUDE USING gist (during WITH &&));
        INSERT INTO items (during) SELECT int4range(n * 10, n * 10 + 5)
        FROM generate_series(1, 20000) AS n;
        ANALYZE items;
        """
    )
    cowsync.enable(cow, "items")
    (index,) = fetch(
        cow,
        "SELECT indexname FROM pg_indexes WHERE tablename = 'items_changes' "
        "AND indexdef LIKE '%USING gist (during)'",
    )[0]

    base, store = text(cow, base_of(cow, "items")), text(cow, changes_of(cow, "items"))

    def scans() -> tuple[Any, ...]:
        cow.execute("SELECT pg_stat_force_next_flush()")
        cow.execute("SELECT pg_stat_clear_snapshot()")
        return fetch(
            cow,
            "SELECT (SELECT seq_scan FROM pg_stat_user_tables WHERE relid = %s::regclass), "
            "(SELECT seq_scan FROM pg_stat_user_tables WHERE relid = %s::regclass), "
            "(SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'items_no_overlap'),"
            " (SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = %s)",
            [base, store, index],
        )[0]

    with cowsync.session(cow, "s"):
        cow.execute(
            "INSERT INTO items (during) SELECT int4range(n * 10 + 6, n * 10 + 8) "
            "FROM generate_series(1, 3000) AS n"
        )
        cow.execute("ANALYZE items_changes")
        before = scans()
        for n in range(10):
            cow.execute("INSERT INTO items (during) VALUES (int4range(%s, %s))", [-10 - n, -9 - n])
        after = scans()
    assert None not in before, before
    assert after[:2] == before[:2], "a sequential scan of base or change store"
    assert after[2] > before[2] and after[3] > before[3], (before, after)


def test_alter_and_refresh_bring_new_constraints_to_sessions(cow):
    cow.execute(
        "CREATE TABLE items (id int PRIMARY KEY, during int4range);"
        "INSERT INTO items VALUES (1, '[1,5)')"
    )
    cowsync.enable(cow, "items")
    cowsync.alter(
        cow, "items", "ADD CONSTRAINT items_no_overlap EXCLUDE USING gist (during WITH &&)"
    )
    with cowsync.session(cow, "s"):
        assert error(cow, "INSERT INTO items VALUES (2, '[2,3)')").diag.sqlstate == "23P01"
    base = text(cow, base_of(cow, "items"))
    cow.execute(
        f"ALTER TABLE {base} DROP CONSTRAINT items_no_overlap, ADD CONSTRAINT items_no_touch "
        "EXCLUDE USING gist (during WITH -|-)"
    )
    cowsync.refresh(cow, "items")
    with cowsync.session(cow, "s"):
        cow.execute("INSERT INTO items VALUES (2, '[2,3)')")  # overlapping is allowed now
        err = error(cow, "INSERT INTO items VALUES (3, '[5,6)')")  # adjacent to [1,5)
        assert (err.diag.sqlstate, err.diag.constraint_name) == ("23P01", "items_no_touch")


def test_a_range_production_took_meanwhile_fails_the_commit(cow, connect):
    cow.execute(BOOKINGS)
    cowsync.enable(cow, "items")
    with cowsync.session(cow, "s"):
        cow.execute("INSERT INTO items (during) VALUES ('[30,40)')")
    connect().execute("INSERT INTO items (during) VALUES ('[35,36)')")
    with cowsync.session(cow, "s"):  # the session sees both rows until the commit
        assert fetch(cow, "SELECT count(*) FROM items WHERE during && '[30,40)'") == [(2,)]
    with pytest.raises(cowsync.CommitError) as caught:
        cowsync.commit(cow, "s")
    assert isinstance(caught.value.__cause__, psycopg.errors.ExclusionViolation)


@pytest.mark.parametrize("extension", [False, True], ids=["plain", "btree_gist"])
def test_disable_leaves_no_trace(cow, catalog_snapshot, extension):
    if extension:
        available = fetch(
            cow, "SELECT count(*) FROM pg_available_extensions WHERE name = 'btree_gist'"
        )
        if available != [(1,)]:
            pytest.skip("btree_gist is not available on this server")
        cow.execute("CREATE EXTENSION btree_gist")
        cow.execute(
            "CREATE TABLE items (id serial PRIMARY KEY, room int, during int4range, "
            "CONSTRAINT items_room_booked EXCLUDE USING gist (room WITH =, during WITH &&) "
            "WHERE (room > 0)); INSERT INTO items (room, during) VALUES (1, '[1,5)'), (2, '[1,5)')"
        )
        writes = [
            "INSERT INTO items (room, during) VALUES (1, '[6,9)')",
            "UPDATE items SET during = '[20,30)' WHERE id = 2",
        ]
    else:
        cow.execute(BOOKINGS)
        writes = ["INSERT INTO items (during) VALUES ('[6,9)')", "DELETE FROM items WHERE id = 1"]
    before = catalog_snapshot(cow, None)
    cowsync.enable(cow, "items")
    with cowsync.session(cow, "s"):
        for statement in writes:
            cow.execute(statement)
    cowsync.disable(cow, "items", force=True)
    after = catalog_snapshot(cow, None)
    assert_same_catalog(without_sequence_positions(before), without_sequence_positions(after))


def test_unique_and_exclusion_checks_of_one_table_take_turns(cow):
    """Both kinds of check reuse one record variable with different fields; every
    statement of a session (run more than once, so plans are cached) still works."""
    cow.execute(
        """
        CREATE TABLE items (id int PRIMARY KEY, name text UNIQUE, during int4range,
                            CONSTRAINT items_no_overlap EXCLUDE USING gist (during WITH &&));
        INSERT INTO items VALUES (1, 'a', '[1,5)');
        """
    )
    cowsync.enable(cow, "items")
    with cowsync.session(cow, "s"):
        for n in range(2, 8):
            cow.execute(
                "INSERT INTO items VALUES (%s, %s, int4range(%s, %s))",
                [n, f"n{n}", n * 10, n * 10 + 5],
            )
            cow.execute(
                "UPDATE items SET during = int4range(%s, %s) WHERE id = %s", [n * 10, n * 10 + 6, n]
            )
        err = error(cow, "INSERT INTO items VALUES (20, 'a', '[100,101)')")
        assert (err.diag.sqlstate, err.diag.constraint_name) == ("23505", "items_name_key")
        err = error(cow, "INSERT INTO items VALUES (20, 'z', '[71,72)')")
        assert (err.diag.sqlstate, err.diag.constraint_name) == ("23P01", "items_no_overlap")
        cow.execute("INSERT INTO items VALUES (20, 'z', '[1,5)') ON CONFLICT DO NOTHING")
        cow.execute("INSERT INTO items VALUES (20, 'a', '[200,201)') ON CONFLICT DO NOTHING")
        assert fetch(cow, "SELECT count(*) FROM items") == [(7,)]


def test_a_changed_constraint_leaves_no_change_store_index_behind(cow, catalog_snapshot):
    """Each change of the constraint gets its own change-store index and drops the
    previous one; an index named the way older versions named them (by position)
    goes too; after disable the catalog is as it was."""
    cow.execute(
        "CREATE TABLE items (id int PRIMARY KEY, room int, during int4range);"
        "INSERT INTO items VALUES (1, 1, '[1,5)')"
    )
    before = catalog_snapshot(cow, None)
    cowsync.enable(cow, "items")

    def indexes() -> list[str]:
        return [
            definition.split(" USING ", 1)[1]
            for (definition,) in fetch(
                cow,
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'items_changes' "
                "AND indexname LIKE 'cowsync\\_%' AND indexname NOT LIKE '%\\_current' "
                "AND indexname NOT LIKE '%\\_history' ORDER BY 1",
            )
        ]

    cowsync.alter(
        cow, "items", "ADD CONSTRAINT items_no_overlap EXCLUDE USING gist (during WITH &&)"
    )
    assert indexes() == ["gist (during)"]
    cowsync.alter(
        cow,
        "items",
        "DROP CONSTRAINT items_no_overlap, ADD CONSTRAINT items_no_overlap "
        "EXCLUDE USING gist (int4range(room, room, '[]') WITH =, during WITH &&)",
    )
    assert indexes() == ["gist (int4range(room, room, '[]'::text), during)"]
    store = text(cow, changes_of(cow, "items"))
    cow.execute(f"CREATE INDEX cowsync_1_u0 ON {store} (room)")  # an older version's
    cowsync.refresh(cow, "items")
    assert indexes() == ["gist (int4range(room, room, '[]'::text), during)"]
    cowsync.alter(cow, "items", "DROP CONSTRAINT items_no_overlap")
    assert indexes() == []
    cowsync.disable(cow, "items")
    assert_same_catalog(before, catalog_snapshot(cow, None))


DEFERRABLE = """
CREATE TABLE items (id int PRIMARY KEY, during int4range,
                    CONSTRAINT items_no_overlap EXCLUDE USING gist (during WITH &&) {timing});
INSERT INTO items VALUES (1, '[1,5)'), (2, '[10,20)');
"""


def outcome(conn: psycopg.Connection[Any], *statements: str) -> Any:
    """Run ``statements`` in one transaction: the rows after its COMMIT, or the first
    error's (SQLSTATE, constraint, detail)."""
    conn.execute("BEGIN")
    try:
        for statement in statements:
            conn.execute(statement)
        conn.execute("COMMIT")
    except psycopg.Error as exc:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
        return exc.diag.sqlstate, exc.diag.constraint_name, exc.diag.message_detail
    return fetch(conn, "SELECT id, during::text FROM items ORDER BY id")


@pytest.mark.parametrize(
    "timing", ["DEFERRABLE INITIALLY DEFERRED", "DEFERRABLE INITIALLY IMMEDIATE"]
)
def test_a_deferrable_constraint_is_checked_when_the_table_checks_it(cow, catalog_snapshot, timing):
    """A deferred EXCLUDE constraint is checked at COMMIT (or SET CONSTRAINTS ...
    IMMEDIATE): inside the transaction two rows may swap their ranges. Its check is a
    constraint trigger named like it; disable leaves no trace of it."""
    transactions = [
        (  # a swap: rows overlap in between
            "UPDATE items SET during = '[10,20)' WHERE id = 1",
            "UPDATE items SET during = '[1,5)' WHERE id = 2",
        ),
        ("SET CONSTRAINTS ALL DEFERRED", "INSERT INTO items VALUES (3, '[2,3)')"),
        ("INSERT INTO items VALUES (3, '[2,3)')", "DELETE FROM items WHERE id = 2"),
        (
            "SET CONSTRAINTS ALL DEFERRED",
            "INSERT INTO items VALUES (4, '[30,40)')",
            "UPDATE items SET during = '[35,36)' WHERE id = 1",
            "SET CONSTRAINTS items_no_overlap IMMEDIATE",
        ),
        ("UPDATE items SET during = '[0,100)' WHERE id = 1",),
        (
            "INSERT INTO items VALUES (5, '[50,60)')",
            "UPDATE items SET during = '[60,70)' WHERE id = 5",
        ),
    ]
    cow.execute("CREATE SCHEMA plain; SET search_path = plain")
    cow.execute(DEFERRABLE.format(timing=timing))
    expected = [outcome(cow, *t) for t in transactions]
    cow.execute("RESET search_path; DROP SCHEMA plain CASCADE")
    cow.execute(DEFERRABLE.format(timing=timing))
    before = catalog_snapshot(cow, None)
    cowsync.enable(cow, "items")
    assert fetch(
        cow,
        "SELECT tgname, tginitdeferred FROM pg_trigger WHERE tgrelid = %s::regclass",
        [text(cow, changes_of(cow, "items"))],
    ) == [("items_no_overlap", "INITIALLY DEFERRED" in timing)]
    with cowsync.session(cow, "s"):
        assert [outcome(cow, *t) for t in transactions] == expected
    assert "23P01" in str(expected)
    cowsync.commit(cow, "s")
    assert fetch(cow, "SELECT id, during::text FROM items ORDER BY id") == expected[-1]
    cowsync.disable(cow, "items")
    cow.execute("DELETE FROM items; INSERT INTO items VALUES (1, '[1,5)'), (2, '[10,20)')")
    assert_same_catalog(
        without_sequence_positions(before), without_sequence_positions(catalog_snapshot(cow, None))
    )


def test_on_conflict_refuses_a_deferrable_constraint_as_the_table_does(cow):
    """PostgreSQL cannot use a deferrable constraint as an ON CONFLICT arbiter: every
    INSERT ... ON CONFLICT DO NOTHING fails (55000), conflicting or not."""
    statements = [
        "INSERT INTO items VALUES (3, '[2,3)') ON CONFLICT DO NOTHING",
        "INSERT INTO items VALUES (4, '[30,31)') ON CONFLICT DO NOTHING",
    ]
    setup = DEFERRABLE.format(timing="DEFERRABLE")
    expected = [table_error(cow, setup, statement) for statement in statements]
    cow.execute(setup)
    cowsync.enable(cow, "items")
    with cowsync.session(cow, "s"):
        for statement, want in zip(statements, expected):
            got = error(cow, statement)
            assert (got.diag.sqlstate, got.diag.message_primary, got.diag.constraint_name) == (
                want.diag.sqlstate,
                want.diag.message_primary,
                want.diag.constraint_name,
            )
            assert want.diag.sqlstate == "55000"
        assert fetch(cow, "SELECT count(*) FROM items") == [(2,)]
