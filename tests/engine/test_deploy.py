"""deploy(): install, idempotence, configuration, upgrades (invariant 8)."""

from __future__ import annotations

import pytest

import cowsync
import cowsync.install
from tests._mode import base_of, changes_of, text, view_of
from tests.engine.conftest import cowsync_catalog, fetch

# An upgrade is simulated by a library one engine version ahead.
NOW = cowsync.ENGINE_VERSION
NEXT = NOW + 1


def test_first_deploy_installs_the_engine_and_reports_it(conn):
    result = cowsync.deploy(conn)

    assert result == cowsync.DeployResult(
        version=cowsync.ENGINE_VERSION, previous_version=None, changed=True
    )
    assert fetch(conn, "SELECT version FROM cowsync.engine") == [(cowsync.ENGINE_VERSION,)]
    settings = dict(fetch(conn, "SELECT name, value FROM cowsync.settings"))
    assert settings["session_variable"] == "app.session_id"
    assert settings["operation_variable"] == "app.operation_id"


def test_second_deploy_changes_nothing(conn, make_table):
    make_table(rows=3)
    cowsync.deploy(conn)
    cowsync.enable(conn, "items")
    with cowsync.session(conn, "s1"):
        conn.execute("UPDATE items SET qty = 5 WHERE id = 1")
    before = cowsync_catalog(conn)

    result = cowsync.deploy(conn)
    again = cowsync.deploy(conn, cowsync.CowConfig())  # the same config, spelled out

    assert result == cowsync.DeployResult(cowsync.ENGINE_VERSION, cowsync.ENGINE_VERSION, False)
    assert again.changed is False
    assert cowsync_catalog(conn) == before


def test_enable_requires_deploy(conn, make_table, catalog_snapshot):
    make_table(rows=2)
    before = catalog_snapshot(conn, None)

    with pytest.raises(cowsync.NotDeployedError):
        cowsync.enable(conn, "items")
    with pytest.raises(cowsync.NotDeployedError):
        cowsync.enable_schema(conn, "public")
    with pytest.raises(cowsync.NotDeployedError):
        cowsync.disable(conn, "items")
    with pytest.raises(cowsync.NotDeployedError):
        cowsync.status(conn)

    assert catalog_snapshot(conn, None) == before
    assert fetch(conn, "SELECT to_regnamespace('cowsync')") == [(None,)]


def test_redeploy_with_a_different_config_is_refused(conn):
    cowsync.deploy(conn)
    before = cowsync_catalog(conn)
    other = cowsync.CowConfig(session_variable="cow.session_id")

    with pytest.raises(cowsync.ConfigurationError):
        cowsync.deploy(conn, other)

    assert cowsync_catalog(conn) == before


def test_a_custom_config_is_what_the_engine_reads(conn, make_table):
    config = cowsync.CowConfig(
        session_variable="cow.sid",
        operation_variable="cow.op",
        visible_operations_variable="cow.visible",
        default_operation="op0",
    )
    make_table(rows=2)
    cowsync.deploy(conn, config)
    cowsync.enable(conn, "items")

    with cowsync.session(conn, "s1", config=config):
        conn.execute("UPDATE items SET qty = 6 WHERE id = 1")
        assert fetch(conn, "SELECT qty FROM items WHERE id = 1") == [(6,)]
    # agent-cow's default variable means nothing to this deployment: production.
    conn.execute("SET app.session_id = 's1'")
    assert fetch(conn, "SELECT qty FROM items WHERE id = 1") == [(1,)]
    conn.execute("RESET app.session_id")
    assert fetch(conn, "SELECT session_id, operation_id FROM cowsync.operations") == [("s1", "op0")]
    assert cowsync.deploy(conn, config).changed is False


def test_upgrade_rerenders_tables_in_place_and_keeps_sessions(conn, make_table, monkeypatch):
    make_table(rows=3)
    make_table(name="other", shape="composite", rows=3)
    cowsync.deploy(conn)
    cowsync.enable(conn, "items")
    cowsync.enable(conn, "other")
    with cowsync.session(conn, "s1", "op1"):
        conn.execute("UPDATE items SET qty = 42 WHERE id = 1")
        conn.execute("DELETE FROM other WHERE code = 2")
        conn.execute("INSERT INTO items (id, name) VALUES (100, 'new')")
    store = text(conn, changes_of(conn, "items"))
    changes_before = fetch(conn, f"SELECT t::text FROM ONLY {store} t ORDER BY 1")
    views = [text(conn, view_of(conn, name)) for name in ("items", "other")]
    views_query = "SELECT relname, oid::int FROM pg_class WHERE oid = ANY(%s::regclass[])"
    views_before = dict(fetch(conn, views_query, [views]))
    registry_before = fetch(conn, "SELECT t::text FROM cowsync.operations t")

    monkeypatch.setattr(cowsync.install, "ENGINE_VERSION", NEXT)
    result = cowsync.deploy(conn)

    assert result == cowsync.DeployResult(version=NEXT, previous_version=NOW, changed=True)
    assert sorted(fetch(conn, "SELECT version FROM cowsync.engine")) == [(NOW,), (NEXT,)]
    assert fetch(conn, "SELECT DISTINCT engine_version FROM cowsync.tables") == [(NEXT,)]
    assert {s.engine_version for s in cowsync.status(conn)} == {NEXT}
    # Views were re-rendered (new objects), the trigger is back on each.
    views_after = dict(fetch(conn, views_query, [views]))
    assert set(views_after) == {"items", "other"}
    assert all(views_after[name] != views_before[name] for name in views_before)
    assert fetch(
        conn, "SELECT tgrelid::int FROM pg_trigger WHERE tgname = 'cowsync_write' ORDER BY 1"
    ) == sorted((oid,) for oid in views_after.values())
    # Session data survived and the session still sees it; production still the base.
    assert fetch(conn, f"SELECT t::text FROM ONLY {store} t ORDER BY 1") == changes_before
    assert fetch(conn, "SELECT t::text FROM cowsync.operations t") == registry_before
    with cowsync.session(conn, "s1", "op2"):
        assert fetch(conn, "SELECT qty FROM items WHERE id = 1") == [(42,)]
        assert fetch(conn, "SELECT name FROM items WHERE id = 100") == [("new",)]
        assert fetch(conn, "SELECT count(*) FROM other WHERE code = 2") == [(0,)]
        conn.execute("UPDATE items SET qty = 43 WHERE id = 1")  # the new trigger works
        assert fetch(conn, "SELECT qty FROM items WHERE id = 1") == [(43,)]
    assert fetch(conn, "SELECT qty FROM items WHERE id = 1") == [(1,)]
    assert fetch(conn, "SELECT count(*) FROM other") == [(3,)]
    conn.execute("UPDATE items SET qty = 7 WHERE id = 2")
    base = text(conn, base_of(conn, "items"))
    assert fetch(conn, f"SELECT qty FROM ONLY {base} WHERE id = 2") == [(7,)]

    # Upgraded: a second deploy of the same version does nothing.
    assert cowsync.deploy(conn).changed is False

    # An older library refuses a newer engine instead of downgrading it.
    monkeypatch.undo()
    with pytest.raises(cowsync.ConfigurationError):
        cowsync.deploy(conn)
    with pytest.raises(cowsync.ConfigurationError):
        cowsync.enable(conn, "items")


def test_enable_before_an_upgrade_asks_for_deploy(conn, make_table, monkeypatch):
    make_table(rows=1)
    cowsync.deploy(conn)
    monkeypatch.setattr(cowsync.install, "ENGINE_VERSION", NEXT)

    with pytest.raises(cowsync.ConfigurationError, match="deploy"):
        cowsync.enable(conn, "items")
    assert fetch(conn, "SELECT count(*) FROM cowsync.tables") == [(0,)]


def test_upgrade_keeps_the_views_grants_comments_and_owner(
    conn, make_table, make_role, monkeypatch
):
    make_table(rows=2)
    owner, reader = make_role(), make_role()
    conn.execute(f"ALTER TABLE items OWNER TO {owner}")
    conn.execute(f"GRANT SELECT, UPDATE ON items TO {reader}")
    conn.execute("COMMENT ON TABLE items IS 'stock'")
    conn.execute("COMMENT ON COLUMN items.qty IS 'units'")
    cowsync.deploy(conn)
    cowsync.enable(conn, "items")
    query = """
        SELECT pg_get_userbyid(relowner), relacl::text, obj_description(oid, 'pg_class'),
               col_description(oid, 3)
        FROM pg_class WHERE oid = 'public.items'::regclass
    """
    before = fetch(conn, query)
    assert before[0][2] == "stock" and before[0][3] == "units"

    monkeypatch.setattr(cowsync.install, "ENGINE_VERSION", NEXT)
    cowsync.deploy(conn)

    assert fetch(conn, query) == before
