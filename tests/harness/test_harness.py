"""The test harness itself: database discovery, per-test databases, table shapes, snapshots."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict

from tests import _pg
from tests._catalog import snapshot_diff
from tests._tables import SHAPES


def user_relations(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        """
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_toast%'
        """
    ).fetchall()
    return [row[0] for row in rows]


# --- databases ------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 2])
def test_each_test_gets_its_own_empty_database(conn, attempt):
    # Both runs create the same table: the second would fail if the database were shared.
    assert user_relations(conn) == []
    conn.execute("CREATE TABLE leftover (id int)")
    assert conn.info.dbname.startswith(_pg.DATABASE_PREFIX)


def test_dsn_names_a_database_copied_from_the_template(dsn, pg_databases):
    dbname = conninfo_to_dict(dsn)["dbname"]
    assert dbname.startswith(_pg.DATABASE_PREFIX)
    assert pg_databases.template.startswith(_pg.TEMPLATE_PREFIX)
    assert pg_databases.exists(dbname)
    assert pg_databases.exists(pg_databases.template)


def test_dropping_a_database_disconnects_its_sessions(pg_databases):
    name = pg_databases.create_database()
    straggler = psycopg.connect(pg_databases.dsn_for(name), autocommit=True)
    try:
        pg_databases.drop_database(name)
        assert not pg_databases.exists(name)
        with pytest.raises(psycopg.OperationalError):
            straggler.execute("SELECT 1")
    finally:
        straggler.close()


def test_connect_opens_more_connections_to_the_same_database(conn, connect):
    other = connect()
    manual = connect(autocommit=False)
    assert other.autocommit and not manual.autocommit
    assert other.info.dbname == manual.info.dbname == conn.info.dbname
    assert len({conn.info.backend_pid, other.info.backend_pid, manual.info.backend_pid}) == 3


def test_discovery_reports_its_source_for_the_header(pg_server):
    lines = _pg.discover_once().header_lines()
    assert lines[0].startswith("cowsync postgres: ")
    assert pg_server.description in lines[0]
    assert pg_server.source in {"env", "local", "throwaway", "container", "shared"}


def test_missing_server_message_says_how_to_provide_one():
    message = _pg.Discovery(tried=["server on 127.0.0.1:5432: refused"]).unavailable_message()
    assert "COWSYNC_TEST_DSN=postgresql://" in message
    assert "initdb" in message and "Docker" in message
    assert "refused" in message


# --- table shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [s for s in SHAPES if s != "parent_child"])
def test_make_table_creates_and_seeds_each_shape(conn, make_table, shape):
    name = make_table(name=f"t_{shape}", shape=shape, rows=5)
    assert name == f"public.t_{shape}"
    assert conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] == 5


def test_make_table_seeds_the_same_rows_every_time(conn, make_table):
    make_table(name="a", rows=3)
    make_table(name="b", rows=3)
    make_table(name="u1", shape="uuid", rows=3)
    make_table(name="u2", shape="uuid", rows=3)
    assert conn.execute("SELECT * FROM a EXCEPT SELECT * FROM b").fetchall() == []
    assert conn.execute("SELECT * FROM u1 EXCEPT SELECT * FROM u2").fetchall() == []


def test_make_table_items_keeps_its_constraints(conn, make_table):
    make_table(rows=1)
    with pytest.raises(errors.CheckViolation):
        conn.execute("INSERT INTO items (name, qty) VALUES ('x', -1)")
    with pytest.raises(errors.NotNullViolation):
        conn.execute("INSERT INTO items (qty) VALUES (1)")
    # Failed inserts still used up sequence values, as on any table.
    row = conn.execute("INSERT INTO items (name) VALUES ('y') RETURNING id, qty").fetchone()
    assert row == (4, 0)


def test_make_table_parent_child_cascades(conn, make_table):
    parent, child = make_table(name="shop", shape="parent_child", rows=4)
    assert (parent, child) == ("public.shop_parent", "public.shop_child")
    with pytest.raises(errors.ForeignKeyViolation):
        conn.execute("INSERT INTO shop_child (parent_id) VALUES (99)")
    conn.execute("DELETE FROM shop_parent WHERE id = 1")
    assert conn.execute("SELECT count(*) FROM shop_child").fetchone()[0] == 3


def test_make_table_in_another_schema(conn, make_table):
    assert make_table(schema="inventory", shape="composite", rows=2) == "inventory.items"
    assert conn.execute("SELECT count(*) FROM inventory.items").fetchone()[0] == 2


def test_make_table_unique_key_has_no_primary_key(conn, make_table):
    make_table(name="codes", shape="unique_key", rows=2)
    with pytest.raises(errors.UniqueViolation):
        conn.execute("INSERT INTO codes (code, val) VALUES ('code-1', 0)")
    kinds = conn.execute(
        "SELECT contype FROM pg_constraint WHERE conrelid = 'codes'::regclass"
    ).fetchall()
    assert ("p",) not in kinds


# --- catalog snapshot -----------------------------------------------------------------------


@pytest.fixture
def shop(conn, make_table):
    """A small schema with a bit of everything the snapshot must notice."""
    make_table(rows=3)
    make_table(name="shop", shape="parent_child", rows=2)
    conn.execute("COMMENT ON TABLE items IS 'stock on hand'")
    conn.execute("COMMENT ON COLUMN items.qty IS 'units'")
    conn.execute("CREATE INDEX items_name_idx ON items (lower(name))")
    conn.execute(
        """
        CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
        CREATE TRIGGER items_touch BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION touch();
        CREATE SCHEMA reports;
        CREATE TABLE reports.restock (item_id bigint REFERENCES public.items (id));
        """
    )


def assert_same(before, after):
    assert before == after, "\n".join(snapshot_diff(before, after))


def changes(before, after):
    return snapshot_diff(before, after)


def test_snapshot_sees_what_disable_must_restore(conn, shop, catalog_snapshot):
    snap = catalog_snapshot(conn)
    assert snap["relations"]["public.items"]["comment"] == "stock on hand"
    columns = {column["name"]: column for column in snap["columns"]["public.items"]}
    assert list(columns) == ["id", "name", "qty", "price", "updated_at"]
    qty = columns["qty"]
    assert (qty["type"], qty["not_null"], qty["default"]) == ("integer", True, "0")
    assert qty["comment"] == "units"
    assert "items_name_idx" in snap["indexes"]["public.items"]
    assert snap["constraints"]["public.shop_child"]["shop_child_parent_id_fkey"]["type"] == "f"
    # A foreign key from another schema pointing in is part of the table's picture.
    assert "restock_item_id_fkey" in snap["constraints"]["reports.restock"]
    assert "items_touch" in snap["triggers"]["public.items"]
    assert snap["sequences"]["public.items_id_seq"]["owned_by"] == "public.items.id"
    assert snap["sequences"]["public.items_id_seq"]["last_value"] == 3
    assert len(snap["data"]["public.items"]) == 3
    assert "reports.restock" not in snap["relations"]


def test_snapshot_is_stable_and_survives_a_rename_round_trip(conn, shop, catalog_snapshot):
    before = catalog_snapshot(conn)
    assert_same(before, catalog_snapshot(conn))
    conn.execute("ALTER TABLE items RENAME TO items_base")
    assert changes(before, catalog_snapshot(conn))
    conn.execute("ALTER TABLE items_base RENAME TO items")
    assert_same(before, catalog_snapshot(conn))


def test_snapshot_ignores_the_callers_search_path(conn, shop, catalog_snapshot):
    before = catalog_snapshot(conn)
    conn.execute("SET search_path TO reports, public")
    assert_same(before, catalog_snapshot(conn))
    assert conn.execute("SHOW search_path").fetchone()[0] == "reports, public"


def test_snapshot_covers_every_user_schema_but_cowsync(conn, shop, catalog_snapshot):
    conn.execute("CREATE SCHEMA cowsync; CREATE TABLE cowsync.registry (id int)")
    snap = catalog_snapshot(conn, schema=None)
    assert "reports.restock" in snap["relations"]
    assert not any(name.startswith("cowsync.") for name in snap["relations"])


@pytest.mark.parametrize(
    ("what", "statement", "where"),
    [
        ("an added index", "CREATE INDEX items_qty_idx ON items (qty)", "indexes"),
        ("a changed default", "ALTER TABLE items ALTER qty SET DEFAULT 1", "columns"),
        ("a changed comment", "COMMENT ON COLUMN items.qty IS 'pieces'", "columns"),
        ("a changed table comment", "COMMENT ON TABLE items IS NULL", "relations"),
        ("a changed ACL", "GRANT SELECT ON items TO PUBLIC", "relations"),
        ("a changed column ACL", "GRANT UPDATE (qty) ON items TO PUBLIC", "columns"),
        (
            "a dropped foreign key pointing in",
            "ALTER TABLE reports.restock DROP CONSTRAINT restock_item_id_fkey",
            "constraints",
        ),
        ("a disabled trigger", "ALTER TABLE items DISABLE TRIGGER items_touch", "triggers"),
        ("a moved sequence", "SELECT nextval('items_id_seq')", "sequences"),
        ("a changed row", "UPDATE items SET qty = qty + 1 WHERE id = 1", "data"),
        ("an added not null", "ALTER TABLE items ALTER price SET NOT NULL", "columns"),
        ("a replica identity", "ALTER TABLE items REPLICA IDENTITY FULL", "relations"),
        ("a policy", "CREATE POLICY mine ON items USING (qty > 0)", "policies"),
    ],
)
def test_snapshot_detects(conn, shop, catalog_snapshot, what, statement, where):
    before = catalog_snapshot(conn)
    conn.execute(statement)
    found = changes(before, catalog_snapshot(conn))
    assert found, f"the snapshot did not notice {what}"
    assert all(line.startswith(where) for line in found), found


def test_snapshot_diff_names_the_difference():
    before = {"columns": {"public.items": [{"name": "qty", "default": "0"}]}}
    after = {"columns": {"public.items": [{"name": "qty", "default": "1"}]}}
    assert snapshot_diff(before, after) == ["columns['public.items'][0]['default']: '0' != '1'"]
