"""enable()/disable() and their schema-wide forms: reversible install (invariant 8)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import cowsync
from tests._mode import OVERLAY, base_of, changes_of, text, view_of
from tests.engine.conftest import (
    assert_same_catalog,
    cowsync_catalog,
    fetch,
    without_sequence_positions,
)

# Session writes per shape: updates, deletes, inserts (some taking ids from the base's
# sequence) and key changes. They must all vanish with disable(force=True).
SESSION_WRITES = {
    "items": [
        "UPDATE items SET qty = qty + 1 WHERE id = 1",
        "DELETE FROM items WHERE id = 3",
        "INSERT INTO items (name) VALUES ('new')",
        "UPDATE items SET id = 100 WHERE id = 4",
    ],
    "identity": [
        "UPDATE items SET note = 'changed' WHERE id = 1",
        "DELETE FROM items WHERE id = 2",
        "INSERT INTO items (note) VALUES ('new')",
    ],
    "composite": [
        "UPDATE items SET label = 'changed' WHERE code = 1",
        "DELETE FROM items WHERE code = 2",
        "INSERT INTO items (region, code, label) VALUES ('north', 99, 'new')",
        "UPDATE items SET region = 'up' WHERE code = 3",
    ],
    "uuid": [
        "UPDATE items SET body = 'changed' WHERE id = md5('row-1')::uuid",
        "DELETE FROM items WHERE id = md5('row-2')::uuid",
        "INSERT INTO items (body) VALUES ('new')",
    ],
    "unique_key": [
        "UPDATE items SET val = -1 WHERE code = 'code-1'",
        "DELETE FROM items WHERE code = 'code-2'",
        "INSERT INTO items (code, val) VALUES ('code-new', 0)",
        "UPDATE items SET code = 'renamed' WHERE code = 'code-3'",
    ],
}


def relkind(conn, name):
    rows = fetch(conn, "SELECT relkind::text FROM pg_class WHERE oid = to_regclass(%s)", [name])
    return rows[0][0] if rows else None


def test_disable_restores_catalog_exactly(cow, make_table, catalog_snapshot, cases):
    for shape in sorted(SESSION_WRITES):
        with cases.case(shape):
            _round_trip(cow, make_table, catalog_snapshot, shape)
    cases.verify()


def _round_trip(conn, make_table, catalog_snapshot, shape):
    conn.execute("DROP TABLE IF EXISTS items")
    make_table(shape=shape, rows=5)
    before = catalog_snapshot(conn, None)

    cowsync.enable(conn, "items")
    assert relkind(conn, text(conn, view_of(conn, "items"))) == "v"
    assert relkind(conn, "public.items") == ("r" if OVERLAY else "v")
    with cowsync.session(conn, "s1"):
        for statement in SESSION_WRITES[shape]:
            assert conn.execute(statement).rowcount == 1, statement
    assert cowsync.status(conn)[0].pending_rows > 0
    cowsync.disable(conn, "items", force=True)

    after = catalog_snapshot(conn, None)
    assert relkind(conn, "public.items") == "r"
    assert_same_catalog(without_sequence_positions(before), without_sequence_positions(after))
    assert fetch(conn, "SELECT count(*) FROM cowsync.tables") == [(0,)]
    assert fetch(
        conn,
        "SELECT count(*) FROM pg_proc WHERE pronamespace = 'cowsync'::regnamespace "
        "AND proname LIKE 'write\\_%'",
    ) == [(0,)]


def test_disable_without_writes_restores_sequences_too(conn, make_table, catalog_snapshot):
    make_table(rows=5)
    make_table(name="ident", shape="identity", rows=5)
    cowsync.deploy(conn)
    before = catalog_snapshot(conn, None)

    cowsync.enable(conn, "items")
    cowsync.enable(conn, "ident")
    with cowsync.session(conn, "s1"):
        conn.execute("UPDATE items SET qty = 3 WHERE id = 1")
        conn.execute("DELETE FROM ident WHERE id = 1")
    cowsync.disable(conn, "items", force=True)
    cowsync.disable(conn, "ident", force=True)

    assert_same_catalog(before, catalog_snapshot(conn, None))


def test_disable_restores_parent_and_child_with_their_foreign_key(
    conn, make_table, catalog_snapshot
):
    make_table(name="pc", shape="parent_child", rows=4)
    cowsync.deploy(conn)
    before = catalog_snapshot(conn, None)

    cowsync.enable(conn, "pc_parent")
    cowsync.enable(conn, "pc_child")
    with cowsync.session(conn, "s1"):
        conn.execute("UPDATE pc_parent SET name = 'renamed' WHERE id = 1")
        conn.execute("INSERT INTO pc_child (parent_id, note) VALUES (2, 'new')")
        conn.execute("DELETE FROM pc_child WHERE id = 3")
    # Production writes meanwhile go to the bases and stay after disable.
    conn.execute("INSERT INTO pc_parent (id, name) VALUES (50, 'prod')")
    conn.execute("DELETE FROM pc_parent WHERE id = 50")
    cowsync.disable(conn, "pc_child", force=True)
    cowsync.disable(conn, "pc_parent", force=True)

    after = catalog_snapshot(conn, None)
    assert_same_catalog(without_sequence_positions(before), without_sequence_positions(after))
    # The foreign key still works, both ways.
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("INSERT INTO pc_child (parent_id, note) VALUES (999, 'orphan')")
    conn.execute("DELETE FROM pc_parent WHERE id = 1")
    assert fetch(conn, "SELECT count(*) FROM pc_child WHERE parent_id = 1") == [(0,)]


def _decorate(conn, owner, reader):
    """Everything disable must give back besides columns and data."""
    conn.execute("CREATE SCHEMA other")
    conn.execute("CREATE TABLE other.refs (id int PRIMARY KEY, item_id bigint REFERENCES items)")
    conn.execute("INSERT INTO other.refs VALUES (1, 1)")
    conn.execute("CREATE TABLE suppliers (id int PRIMARY KEY)")
    conn.execute("INSERT INTO suppliers SELECT generate_series(1, 3)")
    conn.execute("ALTER TABLE items ADD COLUMN supplier_id int REFERENCES suppliers")
    conn.execute("UPDATE items SET supplier_id = 1 + id % 3")
    conn.execute("CREATE INDEX items_name_idx ON items (lower(name)) WHERE qty > 0")
    conn.execute(
        "ALTER TABLE items ADD CONSTRAINT items_price_check CHECK (price < 1000) NOT VALID"
    )
    conn.execute("COMMENT ON CONSTRAINT items_price_check ON items IS 'sanity'")
    conn.execute("COMMENT ON TABLE items IS 'the stock'")
    conn.execute("COMMENT ON COLUMN items.qty IS 'units on hand'")
    conn.execute("COMMENT ON INDEX items_name_idx IS 'search'")
    conn.execute(
        """
        CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN NEW.updated_at := timestamptz '2030-01-01'; RETURN NEW; END $$
        """
    )
    conn.execute(
        "CREATE TRIGGER items_touch BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION touch()"
    )
    conn.execute(f"ALTER TABLE items OWNER TO {owner}")
    conn.execute(f"ALTER TABLE suppliers OWNER TO {owner}")
    conn.execute(f"GRANT SELECT, INSERT ON items TO {reader}")
    conn.execute(f"GRANT UPDATE ON items TO {reader} WITH GRANT OPTION")
    conn.execute("GRANT SELECT ON items TO PUBLIC")
    conn.execute(f"GRANT UPDATE (qty) ON items TO {reader}")
    conn.execute(f"GRANT USAGE ON SEQUENCE items_id_seq TO {reader}")


def test_disable_restores_grants_comments_indexes_triggers_and_foreign_keys(
    conn, make_table, make_role, catalog_snapshot
):
    make_table(rows=6)
    owner, reader = make_role(), make_role()
    _decorate(conn, owner, reader)
    cowsync.deploy(conn)
    before = catalog_snapshot(conn, None)

    cowsync.enable(conn, "items")
    with cowsync.session(conn, "s1"):
        conn.execute("UPDATE items SET qty = 9 WHERE id = 2")
        conn.execute("DELETE FROM items WHERE id = 3")
    conn.execute("UPDATE items SET qty = 5 WHERE id = 5")  # production: the user trigger fires
    assert fetch(conn, "SELECT updated_at::date::text FROM items WHERE id = 5") == [("2030-01-01",)]
    cowsync.disable(conn, "items", force=True)

    # Only the production write differs: put it back and compare everything.
    conn.execute("ALTER TABLE items DISABLE TRIGGER items_touch")
    conn.execute("UPDATE items SET updated_at = timestamptz '2024-01-01 00:05:00+00' WHERE id = 5")
    conn.execute("ALTER TABLE items ENABLE TRIGGER items_touch")
    after = catalog_snapshot(conn, None)
    assert_same_catalog(before, after)


def test_enable_gives_the_view_the_tables_owner_grants_and_comments(conn, make_table, make_role):
    make_table(rows=2)
    owner, reader = make_role(), make_role()
    conn.execute(f"ALTER TABLE items OWNER TO {owner}")
    conn.execute(f"GRANT SELECT, INSERT ON items TO {reader}")
    conn.execute(f"GRANT UPDATE ON items TO {reader} WITH GRANT OPTION")
    conn.execute("COMMENT ON TABLE items IS 'the stock'")
    conn.execute("COMMENT ON COLUMN items.qty IS 'units on hand'")
    query = """
        SELECT pg_get_userbyid(c.relowner), obj_description(c.oid, 'pg_class'),
               col_description(c.oid, 3),
               ARRAY(SELECT format('%%s:%%s:%%s', pg_get_userbyid(a.grantee), a.privilege_type,
                                   a.is_grantable)
                     FROM aclexplode(c.relacl) a ORDER BY 1)
        FROM pg_class c WHERE c.oid = %s::regclass
    """
    table = fetch(conn, query, ["public.items"])
    cowsync.deploy(conn)
    cowsync.enable(conn, "items")

    assert fetch(conn, query, [text(conn, view_of(conn, "items"))]) == table
    assert fetch(conn, query, [text(conn, base_of(conn, "items"))]) == table
    changes_owner = fetch(
        conn,
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = %s::regclass",
        [text(conn, changes_of(conn, "items"))],
    )
    assert changes_owner == [(owner,)]


def test_enable_keeps_column_level_grants_working(conn, make_table, make_role, connect, dsn):
    make_table(rows=2)
    reader = make_role(login=True)
    conn.execute(f"GRANT SELECT (id, qty), UPDATE (qty) ON items TO {reader}")
    cowsync.deploy(conn)
    cowsync.enable(conn, "items")

    other = connect(user=reader)
    assert fetch(other, "SELECT id, qty FROM items ORDER BY id") == [(1, 1), (2, 2)]
    other.execute("UPDATE items SET qty = 4 WHERE id = 1")
    base = text(conn, base_of(conn, "items"))
    assert fetch(conn, f"SELECT qty FROM ONLY {base} WHERE id = 1") == [(4,)]


def test_enable_twice_changes_nothing(conn, make_table, catalog_snapshot):
    make_table(rows=3)
    cowsync.deploy(conn)
    first = cowsync.enable(conn, "items")
    with cowsync.session(conn, "s1"):
        conn.execute("UPDATE items SET qty = 0 WHERE id = 1")
    snapshot = catalog_snapshot(conn, None)
    registry = cowsync_catalog(conn)

    second = cowsync.enable(conn, "items")
    third = cowsync.enable(conn, "public.items")
    fourth = cowsync.enable(conn, ("public", "items"))

    assert first.table == second.table == third.table == fourth.table == "public.items"
    assert (second.key_columns, second.base, second.changes) == (
        ("id",),
        "items" if OVERLAY else "items_base",
        "items_changes",
    )
    assert second.pending_rows == 1 and second.sessions == 1
    assert_same_catalog(snapshot, catalog_snapshot(conn, None))
    assert cowsync_catalog(conn) == registry


def test_enable_reports_the_layout(conn, make_table):
    make_table(shape="composite", rows=2)
    cowsync.deploy(conn)

    status = cowsync.enable(conn, "items")

    assert status == cowsync.TableStatus(
        table="public.items",
        schema="public",
        name="items",
        base="items" if OVERLAY else "items_base",
        changes="items_changes",
        mode="overlay" if OVERLAY else "in-place",
        key_columns=("region", "code"),
        engine_version=cowsync.ENGINE_VERSION,
        sessions=0,
        pending_rows=0,
    )
    assert cowsync.status(conn) == [status]


def test_pending_changes_block_disable_and_change_nothing(conn, make_table, catalog_snapshot):
    make_table(rows=4)
    cowsync.deploy(conn)
    cowsync.enable(conn, "items")
    with cowsync.session(conn, "s-b"):
        conn.execute("UPDATE items SET qty = 6 WHERE id = 1")
    with cowsync.session(conn, "s-a"):
        conn.execute("DELETE FROM items WHERE id = 2")
    with cowsync.session(conn, "s-c"):  # inserted then deleted: nothing pending
        conn.execute("INSERT INTO items (id, name) VALUES (50, 'tmp')")
        conn.execute("DELETE FROM items WHERE id = 50")
    snapshot = catalog_snapshot(conn, None)
    registry = cowsync_catalog(conn)

    with pytest.raises(cowsync.PendingChangesError) as caught:
        cowsync.disable(conn, "items")

    assert caught.value.sessions == {"public.items": ["s-a", "s-b"]}
    assert "s-a" in str(caught.value) and "s-b" in str(caught.value)
    assert_same_catalog(snapshot, catalog_snapshot(conn, None))
    assert cowsync_catalog(conn) == registry
    with cowsync.session(conn, "s-b"):
        assert fetch(conn, "SELECT qty FROM items WHERE id = 1") == [(6,)]


def test_sessions_with_no_net_change_do_not_block_disable(conn, make_table):
    make_table(rows=2)
    cowsync.deploy(conn)
    cowsync.enable(conn, "items")
    with cowsync.session(conn, "s1"):
        conn.execute("INSERT INTO items (id, name) VALUES (50, 'tmp')")
        conn.execute("DELETE FROM items WHERE id = 50")

    cowsync.disable(conn, "items")

    assert relkind(conn, "public.items") == "r"


def test_disable_of_a_table_not_enabled_is_refused(conn, make_table, catalog_snapshot):
    make_table(rows=1)
    cowsync.deploy(conn)
    before = catalog_snapshot(conn, None)

    with pytest.raises(cowsync.NotEnabledError):
        cowsync.disable(conn, "items")
    with pytest.raises(cowsync.NotEnabledError):
        cowsync.disable(conn, "missing")

    assert_same_catalog(before, catalog_snapshot(conn, None))


def test_enable_schema_enables_eligible_tables_and_says_why_it_skipped_others(
    conn, make_table, catalog_snapshot
):
    make_table(name="alpha", rows=2)
    make_table(name="beta", shape="composite", rows=2)
    make_table(name="gamma", shape="unique_key", rows=2)
    make_table(name="nokey", shape="no_key", rows=2)
    make_table(name="skipme", rows=2)
    make_table(name="done", rows=1)
    make_table(name="elsewhere", schema="other", rows=1)
    conn.execute("CREATE TABLE parted (id int PRIMARY KEY) PARTITION BY RANGE (id)")
    conn.execute("CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (10)")
    conn.execute("CREATE TABLE watched (id int PRIMARY KEY)")
    conn.execute("CREATE VIEW watcher AS SELECT * FROM watched")
    cowsync.deploy(conn)
    cowsync.enable(conn, "done")

    result = cowsync.enable_schema(conn, "public", exclude=["skipme"])

    assert result.enabled == ["public.alpha", "public.beta", "public.gamma"]
    assert set(result.skipped) == {
        "public.done",
        "public.nokey",
        "public.skipme",
        "public.parted",
        "public.parted_1",
        "public.watched",
    }
    assert result.skipped["public.skipme"] == "excluded"
    assert result.skipped["public.done"] == "already enabled"
    assert "primary key" in result.skipped["public.nokey"]
    assert "partition" in result.skipped["public.parted"]
    assert "partition" in result.skipped["public.parted_1"]
    assert "watcher" in result.skipped["public.watched"]
    enabled = {s.table for s in cowsync.status(conn)}
    assert enabled == {"public.alpha", "public.beta", "public.gamma", "public.done"}
    for name in ("nokey", "skipme", "parted", "parted_1", "watched"):
        assert relkind(conn, f"public.{name}") in ("r", "p"), name
    assert relkind(conn, "other.elsewhere") == "r"
    # The enabled ones work as COW tables.
    with cowsync.session(conn, "s1"):
        conn.execute("UPDATE gamma SET val = 0 WHERE code = 'code-1'")
        assert fetch(conn, "SELECT val FROM gamma WHERE code = 'code-1'") == [(0,)]
    assert fetch(conn, "SELECT val FROM gamma WHERE code = 'code-1'") == [(1,)]

    # Enabling the schema again enables nothing new.
    again = cowsync.enable_schema(conn, "public", exclude=["skipme"])
    assert again.enabled == []
    assert again.skipped["public.alpha"] == "already enabled"


def test_enable_schema_skips_a_table_the_database_refuses_and_enables_the_others(
    conn, make_table, catalog_snapshot
):
    """A refusal from the database itself (here an event trigger refusing one change
    store) skips that table with the reason; the tables before and after it are enabled
    and the refused one is left exactly as it was."""
    make_table(name="alpha", rows=2)
    make_table(name="refused", rows=2)
    make_table(name="zeta", rows=2)
    make_table(name="nokey", shape="no_key", rows=2)
    conn.execute(
        """
        CREATE FUNCTION refuse_change_store() RETURNS event_trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands()
                       WHERE object_identity IN ('public.refused_changes',
                                                 'public_cow.refused_changes')) THEN
                RAISE EXCEPTION 'no change store for refused' USING ERRCODE = 'P0001';
            END IF;
        END $$;
        CREATE EVENT TRIGGER refuse_change_store ON ddl_command_end
            EXECUTE FUNCTION refuse_change_store();
        """
    )
    cowsync.deploy(conn)

    def refused_objects() -> dict[str, Any]:
        snapshot = catalog_snapshot(conn, "public")
        return {
            part: {name: value for name, value in entries.items() if "refused" in name}
            for part, entries in snapshot.items()
        }

    before = refused_objects()
    assert before["relations"] and before["data"]

    result = cowsync.enable_schema(conn, "public")

    assert result.enabled == ["public.alpha", "public.zeta"]
    assert set(result.skipped) == {"public.nokey", "public.refused"}
    assert result.skipped["public.refused"] == (
        "the database refused to enable it (P0001): no change store for refused"
    )
    assert "primary key" in result.skipped["public.nokey"]
    assert relkind(conn, "public.refused") == "r"
    assert refused_objects() == before
    assert {s.table for s in cowsync.status(conn)} == {"public.alpha", "public.zeta"}
    with cowsync.session(conn, "s1"):
        conn.execute("UPDATE zeta SET qty = 5 WHERE id = 1")
    assert fetch(conn, "SELECT qty FROM zeta WHERE id = 1") == [(1,)]
    conn.execute("DROP EVENT TRIGGER refuse_change_store")


def test_disable_schema_restores_every_table(conn, make_table, catalog_snapshot):
    make_table(name="alpha", rows=3)
    make_table(name="beta", shape="composite", rows=3)
    make_table(name="pc", shape="parent_child", rows=3)
    make_table(name="elsewhere", schema="other", rows=1)
    cowsync.deploy(conn)
    before = catalog_snapshot(conn, None)
    cowsync.enable_schema(conn, "public")
    cowsync.enable(conn, "other.elsewhere")
    with cowsync.session(conn, "s1"):
        conn.execute("UPDATE alpha SET qty = 0 WHERE id = 1")
        conn.execute("DELETE FROM pc_child WHERE id = 1")

    with pytest.raises(cowsync.PendingChangesError):
        cowsync.disable_schema(conn, "public")
    assert len(cowsync.status(conn)) == 5  # all or nothing: none was disabled

    result = cowsync.disable_schema(conn, "public", force=True)

    assert result.disabled == ["public.alpha", "public.beta", "public.pc_child", "public.pc_parent"]
    assert [s.table for s in cowsync.status(conn)] == ["other.elsewhere"]
    cowsync.disable(conn, "other.elsewhere")
    assert_same_catalog(before, catalog_snapshot(conn, None))


def test_status_names_tables_linked_by_foreign_keys_that_are_not_enabled(conn):
    conn.execute(
        """
        CREATE TABLE authors (id int PRIMARY KEY);
        CREATE TABLE books (id int PRIMARY KEY, author_id int REFERENCES authors);
        CREATE TABLE reviews (id int PRIMARY KEY, book_id int REFERENCES books);
        CREATE TABLE nodes (id int PRIMARY KEY, parent_id int REFERENCES nodes);
        """
    )
    cowsync.deploy(conn)
    cowsync.enable(conn, "books")
    cowsync.enable(conn, "nodes")

    linked = {s.table: s.linked_not_enabled for s in cowsync.status(conn)}
    assert linked == {
        "public.books": ("public.authors", "public.reviews"),  # its parent and its child
        "public.nodes": (),  # a self-reference links nothing else
    }

    cowsync.enable(conn, "authors")
    cowsync.enable(conn, "reviews")
    assert all(s.linked_not_enabled == () for s in cowsync.status(conn))
