"""The fidelity matrix: every case the tests and tests/fidelity/matrix.py run.

A case is a statement (or a short sequence) and the tables it needs; the runner
executes it on a plain table, on the COW view with no session and on the view in a
session, and compares (tests/fidelity/runner.py). Where cowsync documents a
difference, the case says which value the mode shows instead and cites the
sentence of docs/limitations.md that describes it.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from tests.fidelity import steps
from tests.fidelity.runner import Case, Documented, Mode, PerMode, Result, err

# --- tables -----------------------------------------------------------------------------------

ITEMS = """
CREATE TABLE items (
    id serial PRIMARY KEY,
    name text NOT NULL,
    qty int NOT NULL DEFAULT 0 CHECK (qty >= 0),
    price numeric(8, 2),
    code varchar(5)
);
INSERT INTO items (name, qty, price, code)
SELECT 'item-' || n, n, n * 1.5, 'c' || n FROM generate_series(1, 5) AS n;
"""

PRICES = """
CREATE TABLE prices (item_id int PRIMARY KEY, price numeric(8, 2) NOT NULL);
INSERT INTO prices VALUES (1, 10), (2, 20), (4, 40), (9, 90);
"""

UNIQUE_NAME = ITEMS + "ALTER TABLE items ADD CONSTRAINT items_name_key UNIQUE (name);"

EXCLUSION = """
CREATE TABLE items (id serial PRIMARY KEY, during int4range,
                    CONSTRAINT items_no_overlap EXCLUDE USING gist (during WITH &&));
INSERT INTO items (during) VALUES ('[1,5)'), ('[10,20)');
"""

IDENTITY = """
CREATE TABLE items (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text);
INSERT INTO items (note) VALUES ('a'), ('b'), ('c');
"""


def authors_books(
    on_delete: str = "NO ACTION", on_update: str = "NO ACTION", extra: str = ""
) -> str:
    """``authors`` (ids 0-3) and ``books`` referencing them (author 1 has two books,
    author 2 one); ``books.author_id`` defaults to 0, the author 'nobody'."""
    return f"""
    CREATE TABLE authors (id int PRIMARY KEY, name text NOT NULL);
    INSERT INTO authors VALUES (0, 'nobody'), (1, 'ann'), (2, 'bob'), (3, 'cy');
    CREATE TABLE books (
        id int PRIMARY KEY,
        author_id int DEFAULT 0 REFERENCES authors
            ON DELETE {on_delete} ON UPDATE {on_update} {extra},
        title text
    );
    INSERT INTO books VALUES (1, 1, 'a1'), (2, 1, 'a2'), (3, 2, 'b1');
    """


# Triggers a typical application puts on a table: a BEFORE UPDATE row trigger that
# bumps a version (an updated_at setter, made deterministic) and an AFTER row
# trigger that writes an audit table. They name the audit table through
# TG_TABLE_SCHEMA because triggers on an enabled base may run with cowsync's pinned
# search_path (see the unqualified case below).
TRIGGERS = """
CREATE TABLE items (
    id serial PRIMARY KEY,
    name text NOT NULL,
    qty int NOT NULL DEFAULT 0,
    version int NOT NULL DEFAULT 1
);
INSERT INTO items (name, qty) SELECT 'item-' || n, n FROM generate_series(1, 3) AS n;
CREATE TABLE audit (op text, item_id int);
CREATE FUNCTION bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END $$;
CREATE FUNCTION write_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('INSERT INTO %I.audit VALUES ($1, $2)', TG_TABLE_SCHEMA)
        USING TG_OP, CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END;
    RETURN NULL;
END $$;
CREATE TRIGGER items_version BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION bump_version();
CREATE TRIGGER items_audit AFTER INSERT OR UPDATE OR DELETE ON items
    FOR EACH ROW EXECUTE FUNCTION write_audit();
"""

UNQUALIFIED_TRIGGER = """
CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO items (name) VALUES ('a'), ('b');
CREATE TABLE audit (op text, item_id int);
CREATE FUNCTION write_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit VALUES (TG_OP, NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER items_audit AFTER INSERT ON items FOR EACH ROW EXECUTE FUNCTION write_audit();
"""

# --- documented differences -------------------------------------------------------------------

AFTER_REFUSAL = ("state:", "final:")


def refused(
    label: str, sqlstate: str, cite: str, loose: tuple[str, ...] = AFTER_REFUSAL
) -> Documented:
    """A statement the view refuses with ``sqlstate``; what follows may differ."""
    return Documented(cite=cite, expect={label: err(sqlstate)}, loose=loose)


def in_both_view_modes(documented: Documented) -> dict[Mode, Documented]:
    return {"view": documented, "session": documented}


def guard_refused(
    statement: str, then: dict[str, object], also_loose: tuple[str, ...] = ()
) -> Documented:
    """ALTER on the view refused by cowsync's DDL guard (0A000); the view keeps its
    name, columns and defaults, so the later steps ``then`` show these values."""
    return Documented(
        cite=VIEW_DDL_GUARD,
        expect={statement: err("0A000"), **then},
        loose=AFTER_REFUSAL + also_loose,
    )


ON_CONFLICT_TARGET = "PostgreSQL infers the conflict arbiter from the target's unique indexes"
UNCERTAIN_ON_CONFLICT = "Anything less certain (a CTE, several statements in one string)"
NO_MERGE = "PostgreSQL 15 cannot `MERGE` into a view"
NO_TRUNCATE = "A view cannot be truncated"
NO_COPY_TO = "Use `COPY (SELECT * FROM items) TO"
NO_ALTER = "Use `cowsync.alter(conn"
MULTI_ROW_FK = "fails with `23503` through the view even with no session"
CHILD_NOT_ENABLED = "raise `0A000` naming the child table"
IDENTITY_DEFAULT = "including `SET id = DEFAULT`, which the table would allow"
USER_TRIGGERS = "they do not fire for session writes, which land in the change store"
ALTER_IS_DDL = "it alters the base (the change store inherits the change)"
NO_ON_CONSTRAINT = "A view has no constraints, so PostgreSQL reports that the named constraint"
NO_CURRENT_OF = "PostgreSQL cannot do positioned updates through a view with INSTEAD OF triggers"
VIEW_DDL_GUARD = "an event trigger (`cowsync_guard_view_ddl`) refuses such commands with `0A000`"
# Overlay mode (docs/limitations.md, "Overlay mode").
OVERLAY_QUALIFIED = "A bound connection that names the table schema-qualified reaches the table"
OVERLAY_INHERITED = "PostgreSQL refuses to rename, drop or retype a column of the table"
OVERLAY_PRODUCTION_DDL = "Sessions do not see schema changes production makes to the table"
OVERLAY_RENAME = "Renaming or moving an overlay table is refused"
# An INSERT after a refused SET DEFAULT 5 gets the column's old default, 0.
OLD_DEFAULT = Result(rowcount=1, rows=((0,),))


# --- the cases --------------------------------------------------------------------------------

STATEMENTS: list[Case] = [
    Case(
        "insert_returning",
        "statements",
        "INSERT … RETURNING with defaults and serial",
        ITEMS,
        (
            "INSERT INTO items (name) VALUES ('new') RETURNING *",
            "INSERT INTO items VALUES (DEFAULT, 'all defaults', DEFAULT, DEFAULT, DEFAULT) "
            "RETURNING id, qty, price",
            "INSERT INTO items (id, name, qty) VALUES (100, 'explicit id', 2) RETURNING id, name",
            "INSERT INTO items (name) VALUES ('after explicit') RETURNING id",
        ),
    ),
    Case(
        "insert_multirow",
        "statements",
        "multi-row INSERT",
        ITEMS,
        (
            "INSERT INTO items (name, qty) VALUES ('a', 1), ('b', 2), ('c', 3) RETURNING id, name",
            "INSERT INTO items (id, name) VALUES (20, 'x'), (21, 'y'), (20, 'dup in statement')",
            "INSERT INTO items (id, name) VALUES (30, 'x'), (31, NULL)",
        ),
    ),
    Case(
        "insert_select",
        "statements",
        "INSERT … SELECT from the same table",
        ITEMS,
        (
            "UPDATE items SET name = 'renamed' WHERE id = 1",
            "INSERT INTO items (name, qty) SELECT name || '-copy', qty FROM items "
            "WHERE id <= 2 ORDER BY id RETURNING id, name, qty",
            "INSERT INTO items (id, name) SELECT id, name FROM items WHERE id = 3",
        ),
    ),
    Case(
        "on_conflict_do_nothing",
        "statements",
        "INSERT … ON CONFLICT DO NOTHING (no target)",
        UNIQUE_NAME,
        (
            "INSERT INTO items (id, name) VALUES (1, 'dup key'), (20, 'new'), (21, 'new') "
            "ON CONFLICT DO NOTHING RETURNING id, name",
            "DELETE FROM items WHERE id = 2",
            "INSERT INTO items (id, name) VALUES (2, 'freed key'), (22, 'item-3') "
            "ON CONFLICT DO NOTHING RETURNING id, name",
            "INSERT INTO items (name) VALUES ('item-4') ON CONFLICT DO NOTHING",
        ),
    ),
    Case(
        "on_conflict_do_nothing_cte",
        "statements",
        "ON CONFLICT DO NOTHING inside a CTE",
        ITEMS,
        (
            "WITH v AS (SELECT 1) INSERT INTO items (id, name) VALUES (1, 'dup') "
            "ON CONFLICT DO NOTHING",
        ),
        documented=in_both_view_modes(
            refused(
                "WITH v AS (SELECT 1) INSERT INTO items (id, name) VALUES (1, 'dup') "
                "ON CONFLICT DO NOTHING",
                "23505",
                UNCERTAIN_ON_CONFLICT,
            )
        ),
    ),
    Case(
        "on_conflict_ignore_setting",
        "statements",
        "ON CONFLICT DO NOTHING in a CTE with SET LOCAL cowsync.ignore_conflicts",
        ITEMS,
        (
            "BEGIN",
            "SET LOCAL cowsync.ignore_conflicts = on",
            "WITH v AS (SELECT 1) INSERT INTO items (id, name) VALUES (1, 'dup'), (40, 'new') "
            "ON CONFLICT DO NOTHING RETURNING id",
            "COMMIT",
        ),
    ),
    Case(
        "on_conflict_target_do_nothing",
        "statements",
        "INSERT … ON CONFLICT (id) DO NOTHING",
        ITEMS,
        ("INSERT INTO items (id, name) VALUES (1, 'x'), (50, 'y') ON CONFLICT (id) DO NOTHING",),
        documented=in_both_view_modes(
            refused(
                "INSERT INTO items (id, name) VALUES (1, 'x'), (50, 'y') "
                "ON CONFLICT (id) DO NOTHING",
                "42P10",
                ON_CONFLICT_TARGET,
            )
        ),
    ),
    Case(
        "on_conflict_do_update",
        "statements",
        "INSERT … ON CONFLICT (id) DO UPDATE",
        ITEMS,
        (
            "INSERT INTO items (id, name) VALUES (1, 'x') "
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name RETURNING id, name",
        ),
        documented=in_both_view_modes(
            refused(
                "INSERT INTO items (id, name) VALUES (1, 'x') "
                "ON CONFLICT (id) DO UPDATE SET name = excluded.name RETURNING id, name",
                "42P10",
                ON_CONFLICT_TARGET,
            )
        ),
    ),
    Case(
        "on_conflict_on_constraint",
        "statements",
        "INSERT … ON CONFLICT ON CONSTRAINT … DO UPDATE",
        ITEMS,
        (
            "INSERT INTO items (id, name) VALUES (2, 'y') "
            "ON CONFLICT ON CONSTRAINT items_pkey DO UPDATE SET qty = items.qty + 1",
        ),
        documented=in_both_view_modes(
            refused(
                "INSERT INTO items (id, name) VALUES (2, 'y') "
                "ON CONFLICT ON CONSTRAINT items_pkey DO UPDATE SET qty = items.qty + 1",
                "42704",
                NO_ON_CONSTRAINT,
            )
        ),
    ),
    Case(
        "merge",
        "statements",
        "MERGE",
        ITEMS,
        (
            "MERGE INTO items t USING (VALUES (1, 'm'), (60, 'n')) AS s(id, name) "
            "ON t.id = s.id WHEN MATCHED THEN UPDATE SET name = s.name "
            "WHEN NOT MATCHED THEN INSERT (id, name) VALUES (s.id, s.name)",
        ),
        documented=in_both_view_modes(
            refused(
                "MERGE INTO items t USING (VALUES (1, 'm'), (60, 'n')) AS s(id, name) "
                "ON t.id = s.id WHEN MATCHED THEN UPDATE SET name = s.name "
                "WHEN NOT MATCHED THEN INSERT (id, name) VALUES (s.id, s.name)",
                "0A000",
                NO_MERGE,
            )
        ),
    ),
    Case(
        "update_returning",
        "statements",
        "UPDATE … RETURNING, key change, no match",
        ITEMS,
        (
            "UPDATE items SET qty = qty + 1 WHERE id IN (1, 2) RETURNING id, qty",
            "UPDATE items SET qty = 0 WHERE id = 99 RETURNING *",
            "UPDATE items SET id = id + 100 WHERE id <= 2 RETURNING id, name",
            "UPDATE items SET qty = qty * 2",
            "SELECT id, qty FROM items ORDER BY id",
        ),
    ),
    Case(
        "update_from",
        "statements",
        "UPDATE … FROM another table",
        ITEMS + PRICES,
        (
            "UPDATE items SET price = p.price FROM prices p WHERE p.item_id = items.id "
            "RETURNING items.id, items.price",
            "UPDATE items AS a SET qty = b.qty FROM items AS b "
            "WHERE a.id = 1 AND b.id = 5 RETURNING a.id, a.qty",
        ),
        tables=("items", "prices"),
    ),
    Case(
        "delete_returning",
        "statements",
        "DELETE … RETURNING",
        ITEMS,
        (
            "DELETE FROM items WHERE qty > 3 RETURNING id, name",
            "DELETE FROM items WHERE id = 99 RETURNING id",
            "DELETE FROM items WHERE id = 1",
            "DELETE FROM items WHERE id = 1",
        ),
    ),
    Case(
        "delete_using",
        "statements",
        "DELETE … USING another table",
        ITEMS + PRICES,
        (
            "DELETE FROM items USING prices WHERE prices.item_id = items.id "
            "AND prices.price > 15 RETURNING items.id, prices.price",
        ),
        tables=("items", "prices"),
    ),
    Case(
        "write_cycle",
        "statements",
        "update, delete, re-insert one key; read your writes",
        ITEMS,
        (
            "UPDATE items SET qty = 9 WHERE id = 1",
            "DELETE FROM items WHERE id = 1",
            "SELECT count(*) FROM items WHERE id = 1",
            "UPDATE items SET qty = 8 WHERE id = 1",
            "INSERT INTO items (id, name) VALUES (1, 'again') RETURNING *",
            "SELECT * FROM items WHERE id = 1",
        ),
    ),
    Case(
        "transaction_rollback",
        "statements",
        "writes in a transaction rolled back",
        ITEMS,
        (
            "BEGIN",
            "INSERT INTO items (id, name) VALUES (10, 'gone')",
            "UPDATE items SET qty = 0 WHERE id = 1",
            "SELECT id, qty FROM items WHERE id IN (1, 10) ORDER BY id",
            "ROLLBACK",
            "SELECT id, qty FROM items WHERE id IN (1, 10) ORDER BY id",
        ),
    ),
    Case(
        "copy_from",
        "statements",
        "COPY FROM (psycopg copy)",
        ITEMS,
        (
            steps.copy_from("COPY items (name, qty) FROM STDIN", [("copied", 3), ("again", 4)]),
            steps.copy_from("COPY items (id, name) FROM STDIN", [(1, "dup key")]),
            steps.copy_from("COPY items (name, qty) FROM STDIN", [("negative", -1)]),
            "SELECT id, name, qty FROM items WHERE id > 5 ORDER BY id",
        ),
    ),
    Case(
        "copy_to",
        "statements",
        "COPY TO",
        ITEMS,
        (
            steps.copy_to("COPY (SELECT id, name FROM items ORDER BY id) TO STDOUT"),
            steps.copy_to("COPY items TO STDOUT"),
        ),
        documented=in_both_view_modes(
            Documented(cite=NO_COPY_TO, expect={"COPY items TO STDOUT": err("42809")})
        ),
    ),
    Case(
        "truncate",
        "statements",
        "TRUNCATE (refused on the view)",
        ITEMS,
        ("TRUNCATE items",),
        documented=in_both_view_modes(refused("TRUNCATE items", "42809", NO_TRUNCATE)),
    ),
    Case(
        "truncate_helper",
        "statements",
        "cowsync.truncate in place of TRUNCATE",
        ITEMS,
        (
            "UPDATE items SET qty = 50 WHERE id = 1",
            PerMode("TRUNCATE items", steps.truncate(), "TRUNCATE / cowsync.truncate"),
            "SELECT count(*) FROM items",
            "INSERT INTO items (name) VALUES ('after truncate') RETURNING id",
        ),
    ),
    Case(
        "truncate_helper_referenced",
        "statements",
        "cowsync.truncate of a table other tables reference",
        authors_books(),
        (PerMode("TRUNCATE authors", steps.truncate("authors"), "TRUNCATE / cowsync.truncate"),),
        enable=("authors", "books"),
    ),
    Case(
        "prepared",
        "statements",
        "prepared statements (psycopg prepare=True)",
        ITEMS,
        (
            steps.prepared("SELECT id, qty FROM items WHERE id = %s", [[1], [2], [3], [1], [9]]),
            steps.prepared(
                "UPDATE items SET qty = qty + %s WHERE id = %s RETURNING id, qty",
                [[1, 1], [1, 2], [1, 1], [1, 9], [2, 1], [3, 3]],
            ),
            steps.prepared(
                "INSERT INTO items (name) VALUES (%s) RETURNING id",
                [["p1"], ["p2"], ["p3"], ["p4"], ["p5"], ["p6"]],
            ),
            steps.prepared("DELETE FROM items WHERE id = %s RETURNING id", [[2], [2], [7]]),
        ),
    ),
    Case(
        "prepared_generic",
        "statements",
        "prepared statements with plan_cache_mode = force_generic_plan",
        ITEMS,
        (
            steps.prepared(
                "UPDATE items SET qty = qty + 1 WHERE id = %s RETURNING id, qty",
                [[1], [1], [2], [9], [1], [3]],
                generic=True,
            ),
            steps.prepared(
                "SELECT id, qty FROM items WHERE id = ANY(%s) ORDER BY id",
                [[[1, 2]], [[3]], [[1, 2, 3]], [[9]], [[1]], [[2]]],
                generic=True,
            ),
        ),
    ),
    Case(
        "prepared_before_binding",
        "statements",
        "a statement prepared before the connection was bound",
        ITEMS,
        (
            steps.prepared_before_binding("SELECT id, qty FROM items WHERE id = %s", [1]),
            steps.prepared_before_binding("UPDATE items SET qty = qty WHERE id = %s", [1]),
            steps.prepared("UPDATE items SET qty = qty WHERE id = %s", [[1]]),
            "UPDATE items SET qty = 42 WHERE id = 1",
            steps.prepared("SELECT id, qty FROM items WHERE id = %s", [[1], [1]]),
        ),
    ),
    Case(
        "named_cursor",
        "statements",
        "server-side (named) cursors",
        ITEMS,
        (
            "UPDATE items SET qty = 70 WHERE id = 3",
            "DELETE FROM items WHERE id = 4",
            steps.named_cursor("SELECT id, qty FROM items ORDER BY id"),
            steps.named_cursor("SELECT id, qty FROM items ORDER BY id DESC", withhold=True),
        ),
    ),
    Case(
        "where_current_of",
        "statements",
        "UPDATE … WHERE CURRENT OF a cursor",
        ITEMS,
        (
            "BEGIN",
            "DECLARE c CURSOR FOR SELECT id FROM items WHERE id = 2 FOR UPDATE",
            "FETCH c",
            "UPDATE items SET qty = 99 WHERE CURRENT OF c",
            "COMMIT",
        ),
        documented=in_both_view_modes(
            refused("UPDATE items SET qty = 99 WHERE CURRENT OF c", "0A000", NO_CURRENT_OF)
        ),
    ),
    Case(
        "schema_qualified",
        "statements",
        "the table named schema-qualified",
        ITEMS,
        (
            "UPDATE items SET qty = 77 WHERE id = 1",
            steps.schema_qualified("SELECT id, qty FROM {schema}.items WHERE id = 1"),
            steps.schema_qualified(
                "INSERT INTO {schema}.items (id, name) VALUES (90, 'qualified') RETURNING id"
            ),
            "SELECT count(*) FROM items",
        ),
        overlay={
            "session": Documented(
                cite=OVERLAY_QUALIFIED,
                expect={
                    "SELECT id, qty FROM {schema}.items WHERE id = 1": Result(
                        rowcount=1, rows=((1, 1),)
                    ),
                    "INSERT INTO {schema}.items (id, name) VALUES (90, 'qualified') "
                    "RETURNING id": err("42501"),
                    "SELECT count(*) FROM items": Result(rowcount=1, rows=((5,),)),
                },
                loose=AFTER_REFUSAL,
            )
        },
    ),
]


LOCKS: list[Case] = [
    Case(
        "select_for_update",
        "locks",
        "SELECT … FOR UPDATE / FOR SHARE, then UPDATE (select_for_update)",
        ITEMS + PRICES,
        (
            "BEGIN",
            "SELECT id, qty FROM items WHERE id = 1 FOR UPDATE",
            "UPDATE items SET qty = qty + 1 WHERE id = 1 RETURNING qty",
            "SELECT id, qty FROM items WHERE id = 1 FOR UPDATE",
            "COMMIT",
            "SELECT id, name FROM items WHERE id <= 2 ORDER BY id FOR SHARE",
            "SELECT id FROM items WHERE id <= 2 ORDER BY id FOR NO KEY UPDATE",
            "SELECT id FROM items WHERE id <= 2 ORDER BY id FOR KEY SHARE",
            "SELECT i.id, p.price FROM items i JOIN prices p ON p.item_id = i.id "
            "ORDER BY i.id FOR UPDATE OF i",
        ),
    ),
    Case(
        "skip_locked_nowait",
        "locks",
        "SKIP LOCKED / NOWAIT on a row another connection locked",
        ITEMS,
        (
            "BEGIN",
            "SELECT id FROM items WHERE id = 1 FOR UPDATE",
            steps.on_other("SELECT id FROM items ORDER BY id LIMIT 2 FOR UPDATE SKIP LOCKED"),
            steps.on_other("SELECT id FROM items WHERE id = 1 FOR UPDATE NOWAIT"),
            steps.on_other("SELECT id FROM items WHERE id = 1 FOR SHARE SKIP LOCKED"),
            "COMMIT",
        ),
    ),
    Case(
        "skip_locked_changed_row",
        "locks",
        "SKIP LOCKED / NOWAIT on a row changed earlier (a session's own row)",
        ITEMS,
        (
            "UPDATE items SET qty = 10 WHERE id = 1",
            "BEGIN",
            "SELECT id, qty FROM items WHERE id = 1 FOR UPDATE",
            steps.on_other("SELECT id FROM items ORDER BY id LIMIT 2 FOR UPDATE SKIP LOCKED"),
            steps.on_other("SELECT id FROM items WHERE id = 1 FOR UPDATE NOWAIT"),
            "COMMIT",
        ),
    ),
    Case(
        "lock_waits_for_update",
        "locks",
        "FOR UPDATE waits for another FOR UPDATE, then sees its update",
        ITEMS,
        (
            "BEGIN",
            "SELECT id, qty FROM items WHERE id = 1 FOR UPDATE",
            steps.waits_for_lock(
                "SELECT id, qty FROM items WHERE id = 1 FOR UPDATE",
                ("UPDATE items SET qty = 40 WHERE id = 1", "COMMIT"),
            ),
        ),
    ),
    Case(
        "lock_waits_update",
        "locks",
        "UPDATE waits for a FOR UPDATE lock",
        ITEMS,
        (
            "BEGIN",
            "SELECT id, qty FROM items WHERE id = 1 FOR UPDATE",
            steps.waits_for_lock("UPDATE items SET qty = qty + 10 WHERE id = 1 RETURNING qty"),
            "SELECT id, qty FROM items WHERE id = 1",
        ),
    ),
    Case(
        "lock_waits_update_changed",
        "locks",
        "UPDATE waits for a transaction that then changes the row",
        ITEMS,
        (
            "BEGIN",
            "UPDATE items SET qty = 40 WHERE id = 1",
            steps.waits_for_lock("UPDATE items SET qty = qty + 10 WHERE id = 1 RETURNING qty"),
            "SELECT id, qty FROM items WHERE id = 1",
        ),
        documented={
            "view": Documented(
                cite="An INSTEAD OF trigger cannot re-evaluate the statement",
                expect={
                    "second connection: UPDATE items SET qty = qty + 10 WHERE id = 1 "
                    "RETURNING qty [result]": err("40001")
                },
                loose=("SELECT id, qty", "state:", "final:"),
            )
        },
    ),
    Case(
        "session_lock_blocks_production",
        "locks",
        "a row locked in a session makes a production FOR UPDATE wait",
        ITEMS,
        (
            "BEGIN",
            "SELECT id FROM items WHERE id = 2 FOR UPDATE",
            steps.waits_for_lock("SELECT id, qty FROM items WHERE id = 2 FOR UPDATE", bound=False),
        ),
    ),
]

CONSTRAINTS: list[Case] = [
    Case(
        "primary_key",
        "constraints",
        "PRIMARY KEY against base rows and the session's own",
        ITEMS,
        (
            "INSERT INTO items (id, name) VALUES (1, 'dup')",
            "INSERT INTO items (id, name) VALUES (50, 'a')",
            "INSERT INTO items (id, name) VALUES (50, 'b')",
            "UPDATE items SET id = 2 WHERE id = 1",
            "UPDATE items SET id = 50 WHERE id = 3",
            "INSERT INTO items (id, name) VALUES (NULL, 'null key')",
            "UPDATE items SET id = NULL WHERE id = 4",
        ),
    ),
    Case(
        "key_freed_by_delete",
        "constraints",
        "a key freed by a delete is reused",
        ITEMS,
        (
            "DELETE FROM items WHERE id = 1",
            "INSERT INTO items (id, name) VALUES (1, 'reused') RETURNING *",
            "UPDATE items SET id = 2 WHERE id = 3",
            "DELETE FROM items WHERE id = 2",
            "UPDATE items SET id = 2 WHERE id = 3 RETURNING id, name",
        ),
    ),
    Case(
        "unique_freed_by_delete",
        "constraints",
        "a UNIQUE value freed by a delete is reused by a new row",
        UNIQUE_NAME,
        (
            "INSERT INTO items (name) VALUES ('item-1')",
            "DELETE FROM items WHERE id = 1",
            "INSERT INTO items (name) VALUES ('item-1') RETURNING id, name",
        ),
    ),
    Case(
        "unique_multicolumn",
        "constraints",
        "UNIQUE over two columns, and NULLS NOT DISTINCT",
        """
        CREATE TABLE items (
            id serial PRIMARY KEY, region text, code int, tag text,
            CONSTRAINT items_region_code_key UNIQUE (region, code)
        );
        CREATE UNIQUE INDEX items_tag_key ON items (tag) NULLS NOT DISTINCT;
        INSERT INTO items (region, code, tag) VALUES ('north', 1, 't1'), ('north', 2, 't2'),
            ('south', 1, 't3');
        """,
        (
            "INSERT INTO items (region, code, tag) VALUES ('north', 1, 'x1')",
            "INSERT INTO items (region, code, tag) VALUES ('south', 2, 'x2')",
            "INSERT INTO items (region, code, tag) VALUES ('south', 2, 'x3')",
            "INSERT INTO items (region, code, tag) VALUES (NULL, 1, 'x4'), (NULL, 1, 'x5')",
            "UPDATE items SET code = 2 WHERE region = 'south' AND code = 1",
            "UPDATE items SET code = 3, region = 'south' WHERE id = 1 RETURNING id",
            "INSERT INTO items (region, code) VALUES ('west', 1)",
            "INSERT INTO items (region, code) VALUES ('west', 2)",
            "UPDATE items SET tag = 't1' WHERE id = 2",
        ),
    ),
    Case(
        "unique_partial",
        "constraints",
        "partial UNIQUE index",
        """
        CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL,
                            active boolean NOT NULL DEFAULT true);
        CREATE UNIQUE INDEX items_active_name ON items (name) WHERE active;
        INSERT INTO items (name, active) VALUES ('a', true), ('b', true), ('a', false);
        """,
        (
            "INSERT INTO items (name) VALUES ('a')",
            "INSERT INTO items (name, active) VALUES ('a', false)",
            "INSERT INTO items (name) VALUES ('c')",
            "INSERT INTO items (name) VALUES ('c')",
            "UPDATE items SET active = true WHERE id = 3",
            "UPDATE items SET name = 'b' WHERE id = 1",
            "UPDATE items SET active = false, name = 'b' WHERE id = 1 RETURNING id",
        ),
    ),
    Case(
        "unique_expression",
        "constraints",
        "UNIQUE index on an expression (lower(name))",
        ITEMS + "CREATE UNIQUE INDEX items_lower_name ON items (lower(name));",
        (
            "INSERT INTO items (name) VALUES ('ITEM-1')",
            "UPDATE items SET name = 'Item-1' WHERE id = 2",
            "INSERT INTO items (name) VALUES ('New')",
            "INSERT INTO items (name) VALUES ('NEW')",
            "UPDATE items SET name = 'ITEM-2' WHERE id = 2 RETURNING name",
        ),
    ),
    Case(
        "exclusion",
        "constraints",
        "EXCLUDE constraint (non-overlapping ranges)",
        EXCLUSION,
        (
            "INSERT INTO items (during) VALUES ('[3,8)')",
            "INSERT INTO items (during) VALUES ('[5,10)')",
            "INSERT INTO items (during) VALUES ('[6,7)')",
            "UPDATE items SET during = '[15,30)' WHERE id = 1",
            "UPDATE items SET during = '[0,6)' WHERE id = 1 RETURNING during",
            "INSERT INTO items (during) VALUES (NULL), (NULL)",
            "INSERT INTO items (during) VALUES ('[2,3)') ON CONFLICT DO NOTHING",
            "INSERT INTO items (during) VALUES ('[2,3)'), ('[40,50)') ON CONFLICT DO NOTHING "
            "RETURNING during",
        ),
    ),
    Case(
        "exclusion_freed",
        "constraints",
        "EXCLUDE: a range freed by a delete or an update is reused",
        EXCLUSION,
        (
            "DELETE FROM items WHERE id = 1",
            "INSERT INTO items (during) VALUES ('[2,4)') RETURNING during",
            "UPDATE items SET during = '[30,40)' WHERE id = 2",
            "INSERT INTO items (during) VALUES ('[12,18)') RETURNING during",
            "INSERT INTO items (during) VALUES ('[35,36)')",
            "UPDATE items SET during = '[3,5)' WHERE during = '[12,18)'",
        ),
    ),
    Case(
        "exclusion_partial",
        "constraints",
        "partial EXCLUDE constraint (… WHERE (active))",
        """
        CREATE TABLE items (id serial PRIMARY KEY, during int4range NOT NULL,
                            active boolean NOT NULL DEFAULT true,
                            CONSTRAINT items_active_no_overlap
                                EXCLUDE USING gist (during WITH &&) WHERE (active));
        INSERT INTO items (during, active) VALUES ('[1,5)', true), ('[10,20)', false);
        """,
        (
            "INSERT INTO items (during) VALUES ('[3,8)')",
            "INSERT INTO items (during, active) VALUES ('[3,8)', false)",
            "INSERT INTO items (during) VALUES ('[12,14)')",
            "UPDATE items SET active = true WHERE id = 2",
            "UPDATE items SET active = false WHERE id = 1",
            "INSERT INTO items (during) VALUES ('[2,3)') RETURNING during, active",
        ),
    ),
    Case(
        "exclusion_multi_element",
        "constraints",
        "EXCLUDE over two elements (room WITH =, during WITH &&; btree_gist)",
        """
        CREATE EXTENSION IF NOT EXISTS btree_gist;
        CREATE TABLE items (id serial PRIMARY KEY, room int NOT NULL, during int4range,
                            CONSTRAINT items_room_booked
                                EXCLUDE USING gist (room WITH =, during WITH &&));
        INSERT INTO items (room, during) VALUES (1, '[1,5)'), (2, '[1,5)');
        """,
        (
            "INSERT INTO items (room, during) VALUES (1, '[3,8)')",
            "INSERT INTO items (room, during) VALUES (3, '[3,8)')",
            "UPDATE items SET room = 1 WHERE id = 2",
            "UPDATE items SET room = 1, during = '[5,9)' WHERE id = 2 RETURNING room, during",
            "INSERT INTO items (room, during) VALUES (1, '[8,9)')",
            "INSERT INTO items (room, during) VALUES (1, NULL)",
        ),
    ),
    Case(
        "not_null",
        "constraints",
        "NOT NULL",
        ITEMS,
        (
            "INSERT INTO items (name) VALUES (NULL)",
            "INSERT INTO items DEFAULT VALUES",
            "INSERT INTO items (name, qty) VALUES ('x', NULL)",
            "UPDATE items SET name = NULL WHERE id = 1",
            "UPDATE items SET name = CASE WHEN id = 5 THEN NULL ELSE name END",
        ),
    ),
    Case(
        "check",
        "constraints",
        "CHECK",
        ITEMS,
        (
            "INSERT INTO items (name, qty) VALUES ('neg', -1)",
            "UPDATE items SET qty = -1 WHERE id = 2",
            "UPDATE items SET qty = qty - 3",
            "INSERT INTO items (id, name, qty) VALUES (1, 'dup key and bad qty', -1)",
        ),
    ),
    Case(
        "check_not_valid",
        "constraints",
        "CHECK … NOT VALID (rows from before it may violate it)",
        ITEMS
        + """
        INSERT INTO items (id, name) VALUES (10, 'a long name');
        ALTER TABLE items ADD CONSTRAINT items_short_name CHECK (length(name) < 8) NOT VALID;
        """,
        (
            "UPDATE items SET qty = 3 WHERE id = 10",
            "UPDATE items SET name = 'short' WHERE id = 10 RETURNING id, name",
            "INSERT INTO items (name) VALUES ('another long name')",
            "INSERT INTO items (name) VALUES ('ok') RETURNING name",
        ),
    ),
    Case(
        "domain",
        "constraints",
        "domain CHECK and domain NOT NULL",
        """
        CREATE DOMAIN posint AS int CONSTRAINT posint_positive CHECK (VALUE > 0);
        CREATE DOMAIN label AS text CONSTRAINT label_present NOT NULL;
        CREATE TABLE items (id serial PRIMARY KEY, name label, stock posint NOT NULL DEFAULT 1);
        INSERT INTO items (name) VALUES ('a'), ('b');
        """,
        (
            "INSERT INTO items (name, stock) VALUES ('x', 0)",
            "UPDATE items SET stock = -5 WHERE id = 1",
            "INSERT INTO items (name, stock) VALUES (NULL, 3)",
            "INSERT INTO items (stock) VALUES (3)",
            "UPDATE items SET name = NULL WHERE id = 2",
            "INSERT INTO items (name, stock) VALUES ('ok', 2) RETURNING *",
        ),
    ),
    Case(
        "type_coercion",
        "constraints",
        "type coercion errors ('abc' into int, too long, out of range)",
        ITEMS,
        (
            "INSERT INTO items (name, qty) VALUES ('x', 'abc')",
            steps.query("INSERT INTO items (name, qty) VALUES (%s, %s)", ["x", "abc"]),
            "INSERT INTO items (name, code) VALUES ('x', 'toolong')",
            "UPDATE items SET code = 'abcdef' WHERE id = 1",
            "INSERT INTO items (name, price) VALUES ('x', 1e10)",
            "UPDATE items SET qty = 2147483648 WHERE id = 1",
            "INSERT INTO items (name, code) VALUES ('x', 'ok   ') RETURNING code",
        ),
    ),
]

FOREIGN_KEYS: list[Case] = [
    Case(
        "fk_child_checks",
        "foreign keys",
        "child rows need a parent the connection sees",
        authors_books(),
        (
            "INSERT INTO books VALUES (10, 99, 'orphan')",
            "UPDATE books SET author_id = 99 WHERE id = 1",
            "INSERT INTO authors VALUES (99, 'new')",
            "INSERT INTO books VALUES (10, 99, 'parent new')",
            "DELETE FROM authors WHERE id = 3",
            "INSERT INTO books VALUES (11, 3, 'parent deleted')",
            "INSERT INTO books (id, title) VALUES (12, 'default parent') RETURNING author_id",
            "INSERT INTO books VALUES (13, NULL, 'no parent')",
            "UPDATE authors SET id = 10 WHERE id = 1",
        ),
        enable=("authors", "books"),
    ),
]

for _action, _label in (
    ("NO ACTION", "no_action"),
    ("RESTRICT", "restrict"),
    ("CASCADE", "cascade"),
    ("SET NULL", "set_null"),
    ("SET DEFAULT", "set_default"),
):
    FOREIGN_KEYS.append(
        Case(
            f"fk_on_delete_{_label}",
            "foreign keys",
            f"ON DELETE {_action}, both tables enabled",
            authors_books(on_delete=_action),
            (
                "DELETE FROM authors WHERE id = 1",
                "DELETE FROM authors WHERE id = 3",
                "UPDATE books SET author_id = 2 WHERE id = 1",
                "DELETE FROM authors WHERE id = 1",
                "INSERT INTO books VALUES (20, 2, 'new child')",
                "DELETE FROM authors WHERE id = 2",
            ),
            enable=("authors", "books"),
        )
    )

FOREIGN_KEYS += [
    Case(
        "fk_on_update_cascade",
        "foreign keys",
        "ON UPDATE CASCADE, both tables enabled",
        authors_books(on_update="CASCADE"),
        ("UPDATE authors SET id = 10 WHERE id = 1", "SELECT id, author_id FROM books ORDER BY id"),
        enable=("authors", "books"),
    ),
    Case(
        "fk_child_before_parent",
        "foreign keys",
        "one INSERT with a child before its parent (self-reference)",
        """
        CREATE TABLE nodes (id int PRIMARY KEY, parent_id int REFERENCES nodes);
        INSERT INTO nodes VALUES (1, NULL);
        """,
        ("INSERT INTO nodes VALUES (3, 2), (2, 1)",),
        enable=("nodes",),
        documented=in_both_view_modes(
            refused("INSERT INTO nodes VALUES (3, 2), (2, 1)", "23503", MULTI_ROW_FK)
        ),
    ),
    Case(
        "fk_deferred",
        "foreign keys",
        "DEFERRABLE INITIALLY DEFERRED foreign key (child first in a transaction)",
        authors_books(extra="DEFERRABLE INITIALLY DEFERRED"),
        (
            "BEGIN",
            "INSERT INTO books VALUES (10, 50, 'early')",
            "INSERT INTO authors VALUES (50, 'late')",
            "COMMIT",
            "BEGIN",
            "INSERT INTO books VALUES (11, 51, 'never')",
            "COMMIT",
            "BEGIN",
            "INSERT INTO books VALUES (12, 52, 'orphan for now')",
            "UPDATE books SET author_id = 3 WHERE id = 12",
            "INSERT INTO books VALUES (13, 53, 'orphan, then deleted')",
            "DELETE FROM books WHERE id = 13",
            "COMMIT",
        ),
        enable=("authors", "books"),
    ),
    Case(
        "fk_deferred_parent_first",
        "foreign keys",
        "DEFERRABLE INITIALLY DEFERRED foreign key (parent deleted or re-keyed first)",
        authors_books(extra="DEFERRABLE INITIALLY DEFERRED"),
        (
            "BEGIN",
            "DELETE FROM authors WHERE id = 1",
            "DELETE FROM books WHERE author_id = 1",
            "COMMIT",
            "BEGIN",
            "DELETE FROM authors WHERE id = 2",
            "COMMIT",
            "BEGIN",
            "UPDATE authors SET id = 20 WHERE id = 2",
            "COMMIT",
            "BEGIN",
            "UPDATE authors SET id = 20 WHERE id = 2",
            "UPDATE books SET author_id = 20 WHERE author_id = 2",
            "COMMIT",
            "BEGIN",
            "INSERT INTO books VALUES (30, 3, 'c1')",
            "DELETE FROM authors WHERE id = 3",
            "INSERT INTO authors VALUES (3, 'cy again')",
            "COMMIT",
            "SELECT id, author_id FROM books ORDER BY id",
        ),
        enable=("authors", "books"),
    ),
    Case(
        "fk_deferred_set_constraints",
        "foreign keys",
        "SET CONSTRAINTS … IMMEDIATE on a deferred foreign key checks at that point",
        authors_books(extra="DEFERRABLE INITIALLY DEFERRED"),
        (
            "BEGIN",
            "INSERT INTO books VALUES (10, 50, 'early')",
            "INSERT INTO authors VALUES (50, 'in time')",
            "SET CONSTRAINTS books_author_id_fkey IMMEDIATE",
            "INSERT INTO books VALUES (11, 51, 'checked at once now')",
            "ROLLBACK",
            "BEGIN",
            "INSERT INTO books VALUES (12, 52, 'pending')",
            "SET CONSTRAINTS ALL IMMEDIATE",
            "ROLLBACK",
            "BEGIN",
            "DELETE FROM authors WHERE id = 1",
            "SET CONSTRAINTS books_author_id_fkey IMMEDIATE",
            "ROLLBACK",
            "BEGIN",
            "DELETE FROM authors WHERE id = 3",
            "SET CONSTRAINTS ALL IMMEDIATE",
            "SET CONSTRAINTS ALL DEFERRED",
            "INSERT INTO books VALUES (13, 53, 'deferred again')",
            "INSERT INTO authors VALUES (53, 'late')",
            "COMMIT",
        ),
        enable=("authors", "books"),
    ),
    Case(
        "fk_deferrable_initially_immediate",
        "foreign keys",
        "DEFERRABLE INITIALLY IMMEDIATE foreign key, deferred with SET CONSTRAINTS",
        authors_books(extra="DEFERRABLE INITIALLY IMMEDIATE"),
        (
            "INSERT INTO books VALUES (10, 50, 'checked at once')",
            "DELETE FROM authors WHERE id = 1",
            "BEGIN",
            "SET CONSTRAINTS books_author_id_fkey DEFERRED",
            "INSERT INTO books VALUES (10, 50, 'early')",
            "INSERT INTO authors VALUES (50, 'late')",
            "DELETE FROM authors WHERE id = 2",
            "DELETE FROM books WHERE id = 3",
            "COMMIT",
            "BEGIN",
            "SET CONSTRAINTS ALL DEFERRED",
            "DELETE FROM authors WHERE id = 1",
            "COMMIT",
        ),
        enable=("authors", "books"),
    ),
    Case(
        "fk_deferred_self_reference",
        "foreign keys",
        "one INSERT with a child before its parent, deferrable self-reference",
        """
        CREATE TABLE nodes (
            id int PRIMARY KEY,
            parent_id int REFERENCES nodes DEFERRABLE INITIALLY DEFERRED
        );
        INSERT INTO nodes VALUES (1, NULL);
        """,
        (
            "INSERT INTO nodes VALUES (3, 2), (2, 1)",
            "BEGIN",
            "DELETE FROM nodes WHERE id = 1",
            "DELETE FROM nodes WHERE id IN (2, 3)",
            "INSERT INTO nodes VALUES (5, 4)",
            "INSERT INTO nodes VALUES (4, NULL)",
            "COMMIT",
            "INSERT INTO nodes VALUES (6, 99)",
            "DELETE FROM nodes WHERE id = 4",
        ),
        enable=("nodes",),
    ),
    Case(
        "fk_parent_not_enabled",
        "foreign keys",
        "enabled child, parent table not enabled",
        authors_books(),
        (
            "INSERT INTO books VALUES (10, 99, 'orphan')",
            "INSERT INTO books VALUES (11, 3, 'ok')",
            "DELETE FROM authors WHERE id = 3",
        ),
        enable=("books",),
        tables=("authors", "books"),
    ),
    Case(
        "fk_child_not_enabled",
        "foreign keys",
        "enabled parent, child table not enabled, ON DELETE NO ACTION",
        authors_books(),
        ("DELETE FROM authors WHERE id = 1", "DELETE FROM authors WHERE id = 3"),
        enable=("authors",),
        tables=("authors", "books"),
    ),
    Case(
        "fk_child_not_enabled_cascade",
        "foreign keys",
        "enabled parent, child table not enabled, ON DELETE CASCADE",
        authors_books(on_delete="CASCADE"),
        ("DELETE FROM authors WHERE id = 1", "DELETE FROM authors WHERE id = 3"),
        enable=("authors",),
        tables=("authors", "books"),
        documented={
            "session": Documented(
                cite=CHILD_NOT_ENABLED,
                expect={"DELETE FROM authors WHERE id = 1": err("0A000")},
                loose=("state:", "final:"),
            )
        },
    ),
    Case(
        "fk_child_not_enabled_new_parent",
        "foreign keys",
        "child table not enabled, referencing a parent the session inserted",
        authors_books(),
        ("INSERT INTO authors VALUES (50, 'new')", "INSERT INTO books VALUES (10, 50, 'x')"),
        enable=("authors",),
        tables=("authors", "books"),
    ),
]

SAVEPOINTS: list[Case] = [
    Case(
        "savepoint_rollback",
        "savepoints",
        "an error in a savepoint undoes only that savepoint's writes",
        ITEMS,
        (
            "BEGIN",
            "INSERT INTO items (id, name) VALUES (20, 'before')",
            "SAVEPOINT s1",
            "UPDATE items SET qty = 0 WHERE id = 2",
            "DELETE FROM items WHERE id = 3",
            "INSERT INTO items (id, name) VALUES (21, 'inside')",
            "INSERT INTO items (id, name) VALUES (1, 'dup')",
            "ROLLBACK TO SAVEPOINT s1",
            "SELECT id, qty FROM items WHERE id IN (2, 3, 20, 21) ORDER BY id",
            "SAVEPOINT s2",
            "UPDATE items SET qty = 6 WHERE id = 2",
            "SAVEPOINT s3",
            "UPDATE items SET qty = 7 WHERE id = 2",
            "ROLLBACK TO SAVEPOINT s3",
            "RELEASE SAVEPOINT s2",
            "INSERT INTO items (id, name) VALUES (22, 'after')",
            "COMMIT",
        ),
    ),
    Case(
        "get_or_create",
        "savepoints",
        "Django get_or_create: IntegrityError caught in a savepoint",
        UNIQUE_NAME,
        (
            "BEGIN",
            "SELECT id FROM items WHERE name = 'fresh'",
            "SAVEPOINT create_1",
            "INSERT INTO items (name) VALUES ('fresh') RETURNING id",
            "RELEASE SAVEPOINT create_1",
            "SELECT id FROM items WHERE name = 'item-2'",
            "SAVEPOINT create_2",
            "INSERT INTO items (name) VALUES ('item-2') RETURNING id",
            "ROLLBACK TO SAVEPOINT create_2",
            "SELECT id, name FROM items WHERE name = 'item-2'",
            "COMMIT",
        ),
    ),
]

IDENTITY_CASES: list[Case] = [
    Case(
        "identity_always",
        "identity",
        "GENERATED ALWAYS AS IDENTITY",
        IDENTITY,
        (
            "INSERT INTO items (note) VALUES ('d') RETURNING *",
            "INSERT INTO items (id, note) VALUES (50, 'x')",
            "INSERT INTO items (id, note) OVERRIDING SYSTEM VALUE VALUES (60, 'y') RETURNING *",
            "INSERT INTO items (note) VALUES ('e') RETURNING id",
            "UPDATE items SET note = 'u' WHERE id = 1 RETURNING *",
            "UPDATE items SET id = 70 WHERE id = 2",
        ),
    ),
    Case(
        "identity_set_default",
        "identity",
        "UPDATE … SET id = DEFAULT on an ALWAYS identity",
        IDENTITY,
        ("UPDATE items SET id = DEFAULT WHERE id = 2 RETURNING id",),
        documented=in_both_view_modes(
            refused(
                "UPDATE items SET id = DEFAULT WHERE id = 2 RETURNING id", "428C9", IDENTITY_DEFAULT
            )
        ),
    ),
    Case(
        "identity_by_default",
        "identity",
        "GENERATED BY DEFAULT AS IDENTITY",
        """
        CREATE TABLE items (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, note text);
        INSERT INTO items (note) VALUES ('a'), ('b');
        """,
        (
            "INSERT INTO items (note) VALUES ('c') RETURNING *",
            "INSERT INTO items (id, note) VALUES (50, 'explicit') RETURNING *",
            "INSERT INTO items (id, note) VALUES (1, 'dup')",
            "UPDATE items SET id = 60 WHERE id = 2 RETURNING *",
        ),
    ),
]

TRIGGER_CASES: list[Case] = [
    Case(
        "user_triggers",
        "triggers",
        "BEFORE UPDATE (version bump) and AFTER row triggers on the base",
        TRIGGERS,
        (
            "UPDATE items SET qty = 7 WHERE id = 1 RETURNING id, qty, version",
            "INSERT INTO items (name) VALUES ('new') RETURNING id, version",
            "DELETE FROM items WHERE id = 3",
            "SELECT count(*) FROM audit",
        ),
        tables=("items", "audit"),
        documented={
            "session": Documented(
                cite=USER_TRIGGERS,
                expect={
                    "UPDATE items SET qty = 7 WHERE id = 1 RETURNING id, qty, version": Result(
                        rowcount=1, rows=((1, 7, 1),)
                    ),
                    "SELECT count(*) FROM audit": Result(rowcount=1, rows=((0,),)),
                },
                loose=("state:",),
            )
        },
    ),
    Case(
        "user_trigger_unqualified",
        "triggers",
        "AFTER trigger naming its table without a schema",
        UNQUALIFIED_TRIGGER,
        ("INSERT INTO items (name) VALUES ('c') RETURNING id",),
        tables=("items", "audit"),
        documented={
            "session": Documented(cite=USER_TRIGGERS, loose=("state: audit",)),
        },
    ),
]

ALTER_CASES: list[Case] = [
    Case(
        "alter_add_column",
        "alter",
        "ALTER TABLE … ADD COLUMN (refused on the view)",
        ITEMS,
        ("ALTER TABLE items ADD COLUMN color text",),
        documented=in_both_view_modes(
            refused("ALTER TABLE items ADD COLUMN color text", "42809", NO_ALTER)
        ),
    ),
    Case(
        "alter_helper_add_column",
        "alter",
        "cowsync.alter ADD COLUMN, with a session row pending",
        ITEMS,
        (
            "UPDATE items SET qty = 9 WHERE id = 2",
            PerMode(
                "ALTER TABLE items ADD COLUMN color text NOT NULL DEFAULT 'red'",
                steps.alter("ADD COLUMN color text NOT NULL DEFAULT 'red'"),
                "ALTER TABLE / cowsync.alter ADD COLUMN",
            ),
            "UPDATE items SET color = 'blue' WHERE id = 1 RETURNING id, color",
            "INSERT INTO items (name) VALUES ('new') RETURNING id, color",
            "INSERT INTO items (name, color) VALUES ('null color', NULL)",
            "SELECT id, qty, color FROM items ORDER BY id",
        ),
        documented={
            "session": Documented(cite=ALTER_IS_DDL, loose=("production untouched",)),
        },
    ),
    Case(
        "alter_helper_rename_column",
        "alter",
        "cowsync.alter RENAME COLUMN, with a session row pending",
        ITEMS,
        (
            "UPDATE items SET name = 'changed' WHERE id = 1",
            PerMode(
                "ALTER TABLE items RENAME COLUMN name TO title",
                steps.alter("RENAME COLUMN name TO title"),
                "ALTER TABLE / cowsync.alter RENAME COLUMN",
            ),
            "SELECT id, title FROM items WHERE id <= 2 ORDER BY id",
            "UPDATE items SET title = 'again' WHERE id = 2 RETURNING id, title",
            "INSERT INTO items (title) VALUES ('new') RETURNING id, title",
        ),
    ),
    Case(
        "alter_rename_column_on_view",
        "alter",
        "ALTER TABLE … RENAME COLUMN sent to the view",
        ITEMS,
        (
            "ALTER TABLE items RENAME COLUMN name TO title",
            "INSERT INTO items (title) VALUES ('new') RETURNING id, title",
            "UPDATE items SET title = 'x' WHERE id = 1",
        ),
        documented=in_both_view_modes(
            guard_refused(
                "ALTER TABLE items RENAME COLUMN name TO title",
                {  # the column keeps its name
                    "INSERT INTO items (title) VALUES ('new') RETURNING id, title": err("42703"),
                    "UPDATE items SET title = 'x' WHERE id = 1": err("42703"),
                },
            )
        ),
        overlay={
            # Production renames the table's column: the table inherits it from the
            # overlay parent, so PostgreSQL refuses (42P16) and it keeps its name.
            "view": Documented(
                cite=OVERLAY_INHERITED,
                expect={
                    "ALTER TABLE items RENAME COLUMN name TO title": err("42P16"),
                    "INSERT INTO items (title) VALUES ('new') RETURNING id, title": err("42703"),
                    "UPDATE items SET title = 'x' WHERE id = 1": err("42703"),
                },
                loose=AFTER_REFUSAL,
            ),
            "session": guard_refused(
                "ALTER TABLE items RENAME COLUMN name TO title",
                {
                    "INSERT INTO items (title) VALUES ('new') RETURNING id, title": err("42703"),
                    "UPDATE items SET title = 'x' WHERE id = 1": err("42703"),
                },
            ),
        },
    ),
    Case(
        "alter_drop_column",
        "alter",
        "ALTER TABLE … DROP COLUMN",
        ITEMS,
        ("ALTER TABLE items DROP COLUMN code", "SELECT * FROM items WHERE id = 1"),
        documented=in_both_view_modes(
            Documented(
                cite=NO_ALTER,
                expect={
                    "ALTER TABLE items DROP COLUMN code": err("42809"),
                    "SELECT * FROM items WHERE id = 1": Result(
                        rowcount=1, rows=((1, "item-1", 1, Decimal("1.50"), "c1"),)
                    ),
                },
                loose=AFTER_REFUSAL,
            )
        ),
        overlay={
            "view": Documented(
                cite=OVERLAY_INHERITED,
                expect={
                    "ALTER TABLE items DROP COLUMN code": err("42P16"),
                    "SELECT * FROM items WHERE id = 1": Result(
                        rowcount=1, rows=((1, "item-1", 1, Decimal("1.50"), "c1"),)
                    ),
                },
                loose=AFTER_REFUSAL,
            ),
            "session": Documented(
                cite=NO_ALTER,
                expect={
                    "ALTER TABLE items DROP COLUMN code": err("42809"),
                    "SELECT * FROM items WHERE id = 1": Result(
                        rowcount=1, rows=((1, "item-1", 1, Decimal("1.50"), "c1"),)
                    ),
                },
                loose=AFTER_REFUSAL,
            ),
        },
    ),
    Case(
        "alter_set_default_on_view",
        "alter",
        "ALTER TABLE … ALTER COLUMN SET DEFAULT sent to the view",
        ITEMS,
        (
            "ALTER TABLE items ALTER COLUMN qty SET DEFAULT 5",
            "INSERT INTO items (name) VALUES ('d') RETURNING qty",
        ),
        documented=in_both_view_modes(
            guard_refused(
                "ALTER TABLE items ALTER COLUMN qty SET DEFAULT 5",
                {"INSERT INTO items (name) VALUES ('d') RETURNING qty": OLD_DEFAULT},
            )
        ),
    ),
    Case(
        "alter_set_default_then_alter",
        "alter",
        "a default set on the view, then another cowsync.alter",
        ITEMS,
        (
            "ALTER TABLE items ALTER COLUMN qty SET DEFAULT 5",
            PerMode(
                "ALTER TABLE items ADD COLUMN note text",
                steps.alter("ADD COLUMN note text"),
                "ALTER TABLE / cowsync.alter ADD COLUMN",
            ),
            "INSERT INTO items (name) VALUES ('d') RETURNING qty",
        ),
        documented={
            "view": guard_refused(
                "ALTER TABLE items ALTER COLUMN qty SET DEFAULT 5",
                {"INSERT INTO items (name) VALUES ('d') RETURNING qty": OLD_DEFAULT},
            ),
            # In the session, cowsync.alter also changes production (ALTER_IS_DDL,
            # as in alter_helper_add_column); a Documented cites one phrase.
            "session": guard_refused(
                "ALTER TABLE items ALTER COLUMN qty SET DEFAULT 5",
                {"INSERT INTO items (name) VALUES ('d') RETURNING qty": OLD_DEFAULT},
                also_loose=("production untouched",),
            ),
        },
    ),
    Case(
        "alter_rename_table_on_view",
        "alter",
        "ALTER TABLE … RENAME TO sent to the view",
        ITEMS,
        (
            "ALTER TABLE items RENAME TO things",
            "INSERT INTO things (name) VALUES ('new') RETURNING id",
            "UPDATE things SET qty = 0 WHERE id = 1",
        ),
        tables=("things",),
        documented=in_both_view_modes(
            guard_refused(
                "ALTER TABLE items RENAME TO things",
                {  # the table keeps its name
                    "INSERT INTO things (name) VALUES ('new') RETURNING id": err("42P01"),
                    "UPDATE things SET qty = 0 WHERE id = 1": err("42P01"),
                },
            )
        ),
        overlay={
            # Production renames the table itself: the DDL guard refuses (0A000), since
            # the registry would be out of step; sessions rename the view: refused too.
            "view": Documented(
                cite=OVERLAY_RENAME,
                expect={
                    "ALTER TABLE items RENAME TO things": err("0A000"),
                    "INSERT INTO things (name) VALUES ('new') RETURNING id": err("42P01"),
                    "UPDATE things SET qty = 0 WHERE id = 1": err("42P01"),
                },
                loose=AFTER_REFUSAL,
            ),
            "session": guard_refused(
                "ALTER TABLE items RENAME TO things",
                {
                    "INSERT INTO things (name) VALUES ('new') RETURNING id": err("42P01"),
                    "UPDATE things SET qty = 0 WHERE id = 1": err("42P01"),
                },
            ),
        },
    ),
    Case(
        "refresh_unique_index",
        "alter",
        "a UNIQUE index added to the base, then cowsync.refresh",
        ITEMS,
        (
            PerMode(
                "CREATE UNIQUE INDEX items_code_key ON items (code)",
                steps.refresh_after("CREATE UNIQUE INDEX items_code_key ON {base} (code)"),
                "CREATE UNIQUE INDEX / + cowsync.refresh",
            ),
            "INSERT INTO items (name, code) VALUES ('x', 'c1')",
            "INSERT INTO items (name, code) VALUES ('y', 'c9')",
            "INSERT INTO items (name, code) VALUES ('z', 'c9')",
        ),
    ),
    Case(
        "alter_by_production_add_column",
        "alter",
        "production's ALTER TABLE … ADD COLUMN, then session writes",
        ITEMS,
        (
            steps.unbound("ALTER TABLE items ADD COLUMN color text NOT NULL DEFAULT 'red'"),
            "INSERT INTO items (name) VALUES ('new') RETURNING id, color",
            "UPDATE items SET color = 'blue' WHERE id = 1",
            "SELECT id, color FROM items WHERE id <= 2 ORDER BY id",
        ),
        documented=in_both_view_modes(
            Documented(
                cite=NO_ALTER,
                expect={
                    "unbound: ALTER TABLE items ADD COLUMN color text NOT NULL DEFAULT 'red'": (
                        err("42809")
                    ),
                    "INSERT INTO items (name) VALUES ('new') RETURNING id, color": err("42703"),
                    "UPDATE items SET color = 'blue' WHERE id = 1": err("42703"),
                    "SELECT id, color FROM items WHERE id <= 2 ORDER BY id": err("42703"),
                },
                loose=AFTER_REFUSAL,
            )
        ),
        overlay={
            "session": Documented(
                cite=OVERLAY_PRODUCTION_DDL,
                expect={
                    "INSERT INTO items (name) VALUES ('new') RETURNING id, color": err("42703"),
                    "UPDATE items SET color = 'blue' WHERE id = 1": err("42703"),
                    "SELECT id, color FROM items WHERE id <= 2 ORDER BY id": err("42703"),
                },
                loose=(*AFTER_REFUSAL, "production untouched"),
            )
        },
    ),
    Case(
        "alter_by_production_set_default",
        "alter",
        "production's ALTER TABLE … SET DEFAULT, then a session inserts",
        ITEMS,
        (
            steps.unbound("ALTER TABLE items ALTER COLUMN qty SET DEFAULT 5"),
            "INSERT INTO items (name) VALUES ('d') RETURNING qty",
        ),
        documented=in_both_view_modes(
            Documented(
                cite=VIEW_DDL_GUARD,
                expect={
                    "unbound: ALTER TABLE items ALTER COLUMN qty SET DEFAULT 5": err("0A000"),
                    "INSERT INTO items (name) VALUES ('d') RETURNING qty": OLD_DEFAULT,
                },
                loose=AFTER_REFUSAL,
            )
        ),
        overlay={
            "session": Documented(
                cite=OVERLAY_PRODUCTION_DDL,
                expect={"INSERT INTO items (name) VALUES ('d') RETURNING qty": OLD_DEFAULT},
                loose=AFTER_REFUSAL,
            )
        },
    ),
]

# Cases the engine (or docs/limitations.md) does not get right yet: their tests are
# expected failures (strict), so fixing one makes its test fail until the entry goes.
# "engine bug": cowsync should behave like the table. "undocumented": the
# difference may be unavoidable, but docs/limitations.md does not describe it (once
# it does, give the case a Documented entry instead). "docs bug": documented, but
# the docs state a different outcome than PostgreSQL gives.
KNOWN_GAPS: dict[str, str] = {
    "lock_waits_for_update": (
        "documented limitation: in a session, a FOR UPDATE that waited for another transaction of "
        "the session returns the row as it was before that transaction changed it "
        "(a table returns the new version), so select_for_update can lose updates"
    ),
    "lock_waits_update": (
        "documented limitation: in a session an UPDATE does not wait for a row lock another "
        "transaction of the session took with SELECT … FOR UPDATE"
    ),
    "lock_waits_update_changed": (
        "documented limitation: in a session an UPDATE that waited for another transaction of "
        "the session that changed the row fails with 40001 (docs/limitations.md "
        "describes this only without a session)"
    ),
    "fk_parent_not_enabled": (
        "documented limitation: a production delete of a parent in a table that is not enabled "
        "does not see the session's child rows; the session's commit then fails"
    ),
    "fk_child_not_enabled_new_parent": (
        "documented limitation: a table that is not enabled cannot reference a parent row that "
        "exists only in the session (23503)"
    ),
}

# The same for overlay mode, where its expectation differs from the one Case derives
# (the in place gap, if any, holds for sessions). "overlay bug": an engine bug of
# overlay mode (reported with a reproduction); "documented limitation": as above.
OVERLAY_GAPS: dict[str, str] = {}

CASES: list[Case] = [
    replace(case, bug=KNOWN_GAPS.get(case.name), overlay_bug=OVERLAY_GAPS.get(case.name))
    for case in (
        *STATEMENTS,
        *LOCKS,
        *CONSTRAINTS,
        *FOREIGN_KEYS,
        *SAVEPOINTS,
        *IDENTITY_CASES,
        *TRIGGER_CASES,
        *ALTER_CASES,
    )
]

BY_NAME: dict[str, Case] = {case.name: case for case in CASES}
assert len(BY_NAME) == len(CASES), "case names must be unique"
assert set(KNOWN_GAPS) <= set(BY_NAME), "KNOWN_GAPS names a case that does not exist"
assert set(OVERLAY_GAPS) <= set(BY_NAME), "OVERLAY_GAPS names a case that does not exist"
