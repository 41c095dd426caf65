"""Refusals and odd names (invariant 9): each refusal is a CowError and changes nothing;
legitimate odd names work end to end and come back exactly."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

import cowsync
from tests._mode import OVERLAY, view_of
from tests.engine.conftest import (
    assert_same_catalog,
    cowsync_catalog,
    fetch,
    without_sequence_positions,
)


@pytest.fixture
def unchanged(conn, catalog_snapshot):
    """Call after arranging: returns a checker that the catalog (all user schemas and the
    registry) is as it was at that moment."""

    def take():
        before = catalog_snapshot(conn, None), cowsync_catalog(conn)

        def check():
            after = catalog_snapshot(conn, None), cowsync_catalog(conn)
            assert_same_catalog(before[0], after[0])
            assert after[1] == before[1]

        return check

    return take


def refuse(conn, table, error=cowsync.CowError, match=None):
    with pytest.raises(error, match=match) as caught:
        cowsync.enable(conn, table)
    assert isinstance(caught.value, cowsync.CowError)
    return caught.value


def test_unknown_table_is_refused(cow, unchanged):
    check = unchanged()
    refuse(cow, "missing", cowsync.NotEnabledError, match="missing")
    refuse(cow, "public.missing", cowsync.NotEnabledError)
    refuse(cow, "nosuchschema.items", cowsync.NotEnabledError)
    check()


def test_table_names_are_case_sensitive(cow, make_table, unchanged):
    make_table(name="items", rows=1)
    check = unchanged()
    refuse(cow, "Items", cowsync.NotEnabledError)
    refuse(cow, "ITEMS", cowsync.NotEnabledError)
    check()


UNSUPPORTED = [
    ("CREATE VIEW v AS SELECT 1 AS id", "v", "view"),
    ("CREATE MATERIALIZED VIEW mv AS SELECT 1 AS id", "mv", "materialized view"),
    ("CREATE TABLE p (id int PRIMARY KEY) PARTITION BY RANGE (id)", "p", "partition"),
    (
        "CREATE TABLE p (id int PRIMARY KEY) PARTITION BY RANGE (id);"
        "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10)",
        "p1",
        "partition",
    ),
    ("CREATE SEQUENCE s", "s", "sequence"),
    ("CREATE TYPE ty AS (a int)", "ty", None),
    ("CREATE TABLE nokey (a int, b text)", "nokey", "primary key"),
    ("CREATE TABLE nullable_unique (a int UNIQUE, b text)", "nullable_unique", "primary key"),
    (
        "CREATE TABLE partial_unique (a int NOT NULL, b text);"
        "CREATE UNIQUE INDEX ON partial_unique (a) WHERE b IS NULL",
        "partial_unique",
        "primary key",
    ),
    (
        "CREATE TABLE gen (id int PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2) STORED)",
        "gen",
        "generated",
    ),
    (
        "CREATE TABLE parent (id int PRIMARY KEY); CREATE TABLE kid () INHERITS (parent)",
        "parent",
        "inheritance",
    ),
    (
        "CREATE TABLE parent (id int PRIMARY KEY); CREATE TABLE kid (id int PRIMARY KEY) "
        "INHERITS (parent)",
        "kid",
        "inheritance",
    ),
    (
        "CREATE TABLE watched (id int PRIMARY KEY); CREATE VIEW watcher AS SELECT * FROM watched",
        "watched",
        "watcher",
    ),
]


def test_relations_that_cannot_be_enabled_are_refused(cow, unchanged, cases):
    for create, name, match in UNSUPPORTED:
        # Each case runs in a transaction rolled back afterwards: it leaves nothing behind.
        with cases.case(create), cow.transaction(force_rollback=True):
            cow.execute(create)
            check = unchanged()
            refuse(cow, name, cowsync.UnsupportedTableError, match=match)
            check()
    cases.verify()


def test_a_foreign_table_is_refused(cow, unchanged):
    try:
        cow.execute("CREATE EXTENSION IF NOT EXISTS file_fdw")
    except psycopg.Error:
        pytest.skip("file_fdw is not available")
    cow.execute("CREATE SERVER files FOREIGN DATA WRAPPER file_fdw")
    cow.execute("CREATE FOREIGN TABLE ft (id int) SERVER files OPTIONS (filename '/dev/null')")
    check = unchanged()
    refuse(cow, "ft", cowsync.UnsupportedTableError, match="foreign table")
    check()


def test_the_engines_own_relations_cannot_be_enabled(cow, make_table):
    make_table(rows=2)
    cowsync.enable(cow, "items")
    check_registry = cowsync_catalog(cow)
    if OVERLAY:  # the table keeps its name; the engine's relations are in public_cow
        own = ["public_cow.items", "public_cow.items_changes", "public_cow.items_parent"]
    else:
        own = ["items_base", "items_changes"]
    for name in own:
        refuse(cow, name, cowsync.UnsupportedTableError)
    refuse(cow, "cowsync.tables")
    assert cowsync_catalog(cow) == check_registry


def test_a_name_the_engine_needs_that_is_taken_is_refused(cow, make_table, unchanged, cases):
    make_table(rows=2)
    for suffix in ("_base", "_changes"):
        for kind in ("TABLE {} (x int)", "VIEW {} AS SELECT 1 AS x", "SEQUENCE {}"):
            with cases.case(f"{kind} with {suffix}"), cow.transaction(force_rollback=True):
                cow.execute(sql.SQL("CREATE " + kind).format(sql.Identifier("items" + suffix)))
                check = unchanged()
                refuse(cow, "items", cowsync.InvalidNameError, match="items" + suffix)
                check()
    cases.verify()


def test_a_taken_name_in_another_schema_does_not_matter(cow, make_table, catalog_snapshot):
    make_table(rows=2)
    make_table(name="items_base", schema="other", rows=1)
    before = catalog_snapshot(cow, None)
    cowsync.enable(cow, "items")
    cowsync.disable(cow, "items")
    assert_same_catalog(before, catalog_snapshot(cow, None))


def test_a_name_too_long_once_suffixed_is_refused(cow, unchanged, cases):
    for length in (56, 58, 59, 63):
        name = "t" * length
        with cases.case(f"{length} bytes"), cow.transaction(force_rollback=True):
            cow.execute(
                sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(sql.Identifier(name))
            )
            check = unchanged()
            refuse(cow, name, cowsync.InvalidNameError, match="63 bytes")
            check()
    cases.verify()


def test_a_multibyte_name_is_measured_in_bytes(cow, unchanged):
    name = "é" * 28  # 56 bytes: "_changes" makes 64
    cow.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(sql.Identifier(name)))
    check = unchanged()
    refuse(cow, name, cowsync.InvalidNameError)
    check()


def test_a_name_that_just_fits_works_or_is_refused_cleanly(cow, catalog_snapshot, cases):
    """Up to 55 bytes, "<t>_changes" fits in 63; whatever the engine derives from the name
    must not be truncated into a clash: enable either works end to end or refuses with a
    CowError and changes nothing."""
    for length in (47, 48, 53, 54, 55):
        with cases.case(f"{length} bytes"):
            _just_fits(cow, catalog_snapshot, "t" * length)
    cases.verify()


def _just_fits(cow, catalog_snapshot, name):
    table = sql.Identifier(name)
    cow.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v int)").format(table))
    cow.execute(sql.SQL("INSERT INTO {} VALUES (1, 1), (2, 2)").format(table))
    before = catalog_snapshot(cow, None), cowsync_catalog(cow)
    try:
        cowsync.enable(cow, name)
    except cowsync.CowError:
        assert_same_catalog(before[0], catalog_snapshot(cow, None))
        assert cowsync_catalog(cow) == before[1]
    else:
        with cowsync.session(cow, "s1"):
            cow.execute(sql.SQL("UPDATE {} SET v = 10 WHERE id = 1").format(table))
            cow.execute(sql.SQL("INSERT INTO {} VALUES (3, 3)").format(table))
            assert fetch(cow, sql.SQL("SELECT id, v FROM {} ORDER BY id").format(table)) == [
                (1, 10),
                (2, 2),
                (3, 3),
            ]
        assert fetch(cow, sql.SQL("SELECT id, v FROM {} ORDER BY id").format(table)) == [
            (1, 1),
            (2, 2),
        ]
        cowsync.disable(cow, name, force=True)
        assert_same_catalog(before[0], catalog_snapshot(cow, None))
    finally:
        if cowsync.status(cow):
            cowsync.disable(cow, name, force=True)
        cow.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))


def test_a_column_with_the_reserved_prefix_is_refused(cow, unchanged, cases):
    for column in ("_cow_x", "_cow_session", "_cow_"):
        with cases.case(column), cow.transaction(force_rollback=True):
            cow.execute(
                sql.SQL("CREATE TABLE t (id int PRIMARY KEY, {} int)").format(
                    sql.Identifier(column)
                )
            )
            check = unchanged()
            refuse(cow, "t", cowsync.InvalidNameError, match=column)
            check()
    cases.verify()


MALFORMED = [
    "",
    " ",
    ".",
    "a.b.c",
    '"unterminated',
    '"a"b',
    "x" * 64,
    "nul\x00byte",
    ("a", "b", "c"),
    42,
]


def test_malformed_table_names_are_refused(cow, make_table, unchanged, cases):
    make_table(rows=1)
    check = unchanged()
    for name in MALFORMED:
        with cases.case(repr(name)):
            with pytest.raises(cowsync.CowError):
                cowsync.enable(cow, name)
            with pytest.raises(cowsync.CowError):
                cowsync.disable(cow, name)
    check()
    cases.verify()


def test_only_the_table_of_that_exact_case_is_enabled(cow, catalog_snapshot):
    cow.execute('CREATE TABLE "MyTable" (id int PRIMARY KEY, "Value" text)')
    cow.execute("CREATE TABLE mytable (id int PRIMARY KEY, value text)")
    cow.execute("""INSERT INTO "MyTable" VALUES (1, 'upper')""")
    cow.execute("INSERT INTO mytable VALUES (1, 'lower')")
    before = catalog_snapshot(cow, None)

    status = cowsync.enable(cow, "MyTable")

    assert (status.table, status.base, status.changes) == (
        "public.MyTable",
        "MyTable" if OVERLAY else "MyTable_base",
        "MyTable_changes",
    )
    assert fetch(cow, "SELECT relkind::text FROM pg_class WHERE relname = 'mytable'") == [("r",)]
    with cowsync.session(cow, "s1"):
        cow.execute("""UPDATE "MyTable" SET "Value" = 'session' WHERE id = 1""")
        cow.execute("""INSERT INTO "MyTable" VALUES (2, 'new')""")
        assert fetch(cow, 'SELECT * FROM "MyTable" ORDER BY id') == [(1, "session"), (2, "new")]
        assert fetch(cow, "SELECT * FROM mytable") == [(1, "lower")]
    assert fetch(cow, 'SELECT * FROM "MyTable"') == [(1, "upper")]
    with pytest.raises(cowsync.NotEnabledError):
        cowsync.disable(cow, "mytable")
    cowsync.disable(cow, "MyTable", force=True)
    assert_same_catalog(before, catalog_snapshot(cow, None))


ODD_TABLES = [
    'x"; drop table y; --',
    "it's",
    "with space",
    "semi;colon",
    "dot.ted",
    "ünïcödé",
    "select",
    "%s %(x)s {x}",
]


def test_odd_but_legal_names_work_end_to_end(cow, catalog_snapshot, cases):
    cow.execute("CREATE TABLE y (id int PRIMARY KEY)")
    cow.execute('CREATE SCHEMA "Odd Schema"')
    for name in ODD_TABLES:
        with cases.case(repr(name)):
            _odd_name_round_trip(cow, catalog_snapshot, name)
    cases.verify()


def _odd_name_round_trip(cow, catalog_snapshot, name):
    table = sql.Identifier("Odd Schema", name)
    cow.execute(
        sql.SQL(
            'CREATE TABLE {} ({} serial PRIMARY KEY, "Na""me" text NOT NULL DEFAULT {}, '
            '"semi;col" int CHECK ("semi;col" >= 0))'
        ).format(table, sql.Identifier(name), sql.Literal(name))
    )
    cow.execute(sql.SQL('INSERT INTO {} ("semi;col") VALUES (1), (2)').format(table))
    cow.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(table, sql.Literal(name)))
    before = catalog_snapshot(cow, None)
    # Quote the parts as PostgreSQL would; dots and quotes need it.
    spelled = '"Odd Schema".' + '"' + name.replace('"', '""') + '"'

    status = cowsync.enable(cow, spelled)
    assert status.schema == "Odd Schema" and status.name == name
    assert cowsync.enable(cow, ("Odd Schema", name)) == status

    key = sql.Identifier(name)
    with cowsync.session(cow, "s1"):
        # What sessions write through: the table's name in place; in overlay mode a
        # schema-qualified name is the table itself, so the view's own name.
        table = view_of(cow, ("Odd Schema", name))
        inserted = fetch(
            cow, sql.SQL('INSERT INTO {} ("semi;col") VALUES (3) RETURNING *').format(table)
        )
        assert inserted == [(3, name, 3)]
        cow.execute(
            sql.SQL('UPDATE {} SET "Na""me" = {} WHERE {} = 1').format(
                table, sql.Literal("changed"), key
            )
        )
        cow.execute(sql.SQL("UPDATE {} SET {} = 10 WHERE {} = 2").format(table, key, key))
        with pytest.raises(psycopg.errors.UniqueViolation):
            cow.execute(sql.SQL("INSERT INTO {} ({}) VALUES (1)").format(table, key))
        with pytest.raises(psycopg.errors.CheckViolation):
            cow.execute(sql.SQL('UPDATE {} SET "semi;col" = -1 WHERE {} = 1').format(table, key))
        assert fetch(cow, sql.SQL("SELECT * FROM {} ORDER BY 1").format(table)) == [
            (1, "changed", 1),
            (3, name, 3),
            (10, name, 2),
        ]
    table = sql.Identifier("Odd Schema", name)
    assert fetch(cow, sql.SQL("SELECT * FROM {} ORDER BY 1").format(table)) == [
        (1, name, 1),
        (2, name, 2),
    ]
    cow.execute(sql.SQL('INSERT INTO {} ("semi;col") VALUES (4)').format(table))  # production
    assert fetch(cow, "SELECT to_regclass('public.y') IS NOT NULL") == [(True,)]

    cowsync.disable(cow, spelled, force=True)
    cow.execute(sql.SQL("DELETE FROM {} WHERE {} = 4").format(table, key))
    assert_same_catalog(
        without_sequence_positions(before), without_sequence_positions(catalog_snapshot(cow, None))
    )


def test_columns_named_like_the_engines_variables_work(cow, catalog_snapshot):
    """The trigger's PL/pgSQL must not confuse a user column with one of its variables."""
    names = [
        "sid",
        "op",
        "seq",
        "cur",
        "has_cur",
        "existed",
        "before",
        "base_row",
        "new",
        "old",
        "found",
        "tg_op",
        "row",
    ]
    columns = sql.SQL(", ").join(sql.SQL("{} int").format(sql.Identifier(n)) for n in names)
    cow.execute(sql.SQL("CREATE TABLE t (id int PRIMARY KEY, {})").format(columns))
    cow.execute("INSERT INTO t (id, sid, op, seq) VALUES (1, 1, 1, 1), (2, 2, 2, 2)")
    before = catalog_snapshot(cow, None)
    cowsync.enable(cow, "t")

    cow.execute("UPDATE t SET seq = 5 WHERE id = 1")  # production
    with cowsync.session(cow, "s1"):
        cow.execute("INSERT INTO t (id, sid, op, seq, before) VALUES (3, 3, 3, 3, 3)")
        cow.execute("UPDATE t SET op = 9, existed = 9 WHERE id = 2")
        cow.execute("UPDATE t SET id = 4 WHERE id = 3")
        cow.execute("DELETE FROM t WHERE id = 1")
        assert fetch(cow, "SELECT id, sid, op, seq, existed, before FROM t ORDER BY id") == [
            (2, 2, 9, 2, 9, None),
            (4, 3, 3, 3, None, 3),
        ]
    assert fetch(cow, "SELECT id, seq FROM t ORDER BY id") == [(1, 5), (2, 2)]
    cowsync.disable(cow, "t", force=True)
    cow.execute("UPDATE t SET seq = 1 WHERE id = 1")
    assert_same_catalog(before, catalog_snapshot(cow, None))


def test_schema_wide_calls_with_odd_schema_names(cow, catalog_snapshot):
    cow.execute('CREATE SCHEMA "we""ird; schema"')
    cow.execute('CREATE TABLE "we""ird; schema".t (id int PRIMARY KEY)')
    before = catalog_snapshot(cow, None)

    result = cowsync.enable_schema(cow, 'we"ird; schema')
    assert result.enabled == ['we"ird; schema.t']
    cowsync.disable_schema(cow, 'we"ird; schema')

    assert_same_catalog(before, catalog_snapshot(cow, None))
