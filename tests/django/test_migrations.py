"""``manage.py migrate`` keeps working on enabled tables, and keeps the sessions' rows.

The ``migrapp`` app's migrations: 0001 creates Box(name, weight) and Crate(code); 0002 adds
Box.color (default 'grey'), widens weight, renames name to label, adds an index and a
unique constraint on label; 0003 creates Lid (a foreign key to Box) and renames Crate to
Pallet; 0004 removes Box.color and deletes Pallet.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.test import override_settings

import cowsync
from cowsync.integrations.django import cow_session
from tests._mode import OVERLAY, base_of
from tests.django._djdb import DjangoDb

SANDBOX_MIGRAPP = {"MODELS": ["migrapp"], "ENABLE_AFTER_MIGRATE": True}


def migrate(target: str) -> None:
    call_command("migrate", "migrapp", target, verbosity=0)


def sql(statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run ``statement`` through Django's connection (so in the bound session, if any)."""
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def in_session(db: DjangoDb, session_id: str, statement: str) -> list[tuple[Any, ...]]:
    with cowsync.session(db.raw, session_id):
        return db.raw.execute(statement).fetchall()


def enabled_tables(db: DjangoDb) -> list[str]:
    return sorted(t.name for t in cowsync.status(db.raw) if t.name.startswith("migrapp_"))


@pytest.fixture
def at_0001(deployed_db: DjangoDb) -> Iterator[DjangoDb]:
    """Migrated to 0001 with Box and Crate enabled after migrate, one production box."""
    with override_settings(COWSYNC=SANDBOX_MIGRAPP):
        migrate("0001")
        sql("INSERT INTO migrapp_box (name, weight) VALUES ('prod', 1)")
        yield deployed_db


def test_post_migrate_enables_in_the_mode_the_settings_name(deployed_db: DjangoDb) -> None:
    with override_settings(COWSYNC={**SANDBOX_MIGRAPP, "MODE": "overlay"}):
        migrate("0001")
    assert {t.mode for t in cowsync.status(deployed_db.raw) if t.name.startswith("migrapp")} == {
        "overlay"
    }


def test_post_migrate_enables_the_chosen_models(at_0001: DjangoDb) -> None:
    assert enabled_tables(at_0001) == ["migrapp_box", "migrapp_crate"]
    kinds = sql("SELECT relkind FROM pg_class WHERE relname = 'migrapp_box' ORDER BY 1")
    # In overlay mode the table stays and the view is in the overlay schema.
    assert kinds == ([("r",), ("v",)] if OVERLAY else [("v",)])


def test_altering_fields_keeps_the_sessions_rows(at_0001: DjangoDb) -> None:
    with cow_session("s1"):
        sql("INSERT INTO migrapp_box (name, weight) VALUES ('agent', 7)")
        sql("UPDATE migrapp_box SET weight = 2 WHERE name = 'prod'")
    migrate("0002")
    assert at_0001.production("SELECT label, weight, color FROM migrapp_box ORDER BY label") == [
        ("prod", 1, "grey")
    ]
    assert in_session(
        at_0001, "s1", "SELECT label, weight, color FROM migrapp_box ORDER BY label"
    ) == [
        ("agent", 7, "grey"),
        ("prod", 2, "grey"),
    ]
    # The new unique constraint holds in the session too.
    with cow_session("s1"), pytest.raises(IntegrityError), transaction.atomic():
        sql("INSERT INTO migrapp_box (label, weight, color) VALUES ('agent', 1, 'red')")
    assert ("box_label_idx",) in sql(
        "SELECT indexname::text FROM pg_indexes WHERE tablename = %s",
        [base_of(at_0001.raw, "migrapp_box").as_string(at_0001.raw).split(".")[-1].strip('"')],
    )
    change = cowsync.diff(at_0001.raw, "s1")
    assert {c.after["label"] for c in change} == {"agent", "prod"}


def test_a_new_model_can_reference_an_enabled_one(at_0001: DjangoDb) -> None:
    migrate("0002")
    migrate("0003")
    assert "migrapp_lid" in enabled_tables(at_0001)
    with cow_session("s1"):
        sql("INSERT INTO migrapp_box (label, weight, color) VALUES ('agent', 1, 'red')")
        sql(
            "INSERT INTO migrapp_lid (box_id, colour) "
            "SELECT id, 'blue' FROM migrapp_box WHERE label = 'agent'"
        )
        assert sql("SELECT b.label FROM migrapp_lid l JOIN migrapp_box b ON b.id = l.box_id") == [
            ("agent",)
        ]
    assert at_0001.production("SELECT count(*) FROM migrapp_lid") == [(0,)]
    cowsync.commit(at_0001.raw, "s1")
    assert at_0001.production("SELECT colour FROM migrapp_lid") == [("blue",)]


def test_renaming_a_model_waits_for_its_pending_sessions(at_0001: DjangoDb) -> None:
    migrate("0002")
    with cow_session("s1"):
        sql("INSERT INTO migrapp_crate (code) VALUES ('c-1')")
    with pytest.raises(cowsync.PendingChangesError, match=r"rename it to 'migrapp_pallet'.*s1"):
        migrate("0003")
    assert enabled_tables(at_0001) == ["migrapp_box", "migrapp_crate"]
    assert in_session(at_0001, "s1", "SELECT code FROM migrapp_crate") == [("c-1",)]
    cowsync.commit(at_0001.raw, "s1")
    migrate("0003")
    assert enabled_tables(at_0001) == ["migrapp_box", "migrapp_lid", "migrapp_pallet"]
    assert at_0001.production("SELECT code FROM migrapp_pallet") == [("c-1",)]


def test_dropping_what_sessions_hold_is_refused_until_they_are_discarded(
    at_0001: DjangoDb,
) -> None:
    migrate("0003")
    with cow_session("s1"):
        sql("UPDATE migrapp_box SET color = 'pink'")
    with pytest.raises(cowsync.PendingChangesError, match=r"color.*s1"):
        migrate("0004")
    assert in_session(at_0001, "s1", "SELECT color FROM migrapp_box") == [("pink",)]
    cowsync.discard(at_0001.raw, "s1")
    with cow_session("s2"):
        sql("INSERT INTO migrapp_pallet (code) VALUES ('p-1')")
    with pytest.raises(cowsync.PendingChangesError, match=r"delete its model.*s2"):
        migrate("0004")
    cowsync.discard(at_0001.raw, "s2")
    migrate("0004")
    assert enabled_tables(at_0001) == ["migrapp_box", "migrapp_lid"]
    assert sql("SELECT to_regclass('migrapp_pallet') IS NULL") == [(True,)]


def test_migrating_back_works_on_enabled_tables(at_0001: DjangoDb) -> None:
    migrate("0004")
    with cow_session("s1"):
        sql("INSERT INTO migrapp_box (label, weight) VALUES ('agent', 3)")
    migrate("0002")
    assert in_session(at_0001, "s1", "SELECT label, color FROM migrapp_box ORDER BY label") == [
        ("agent", "grey"),
        ("prod", "grey"),
    ]
    assert enabled_tables(at_0001) == ["migrapp_box", "migrapp_crate"]


def test_introspection_sees_an_enabled_table_as_its_base(enabled_db: DjangoDb) -> None:
    introspection = connection.introspection
    with connection.cursor() as cursor:
        tables = {t.name: t.type for t in introspection.get_table_list(cursor)}
        constraints = introspection.get_constraints(cursor, "testapp_product")
        sequences = introspection.get_sequences(cursor, "testapp_product")
        relations = introspection.get_relations(cursor, "testapp_stock")
        description = introspection.get_table_description(cursor, "testapp_product")
    assert tables["testapp_product"] == "t"
    assert "testapp_product_base" not in tables and "testapp_product_changes" not in tables
    assert any(c["unique"] and c["columns"] == ["sku"] for c in constraints.values())
    assert any(c["primary_key"] for c in constraints.values())
    assert [s["column"] for s in sequences] == ["id"]
    assert relations["product_id"] == ("id", "testapp_product")
    assert {c.name: c.null_ok for c in description}["sku"] is False


def test_sequence_reset_moves_past_session_keys(enabled_db: DjangoDb) -> None:
    from django.core.management.color import no_style

    from tests.django.testapp.models import Warehouse

    with cow_session("s1"):
        sql("INSERT INTO testapp_warehouse (id, code, city) VALUES (40, 'session', 'Rome')")
    sql("INSERT INTO testapp_warehouse (id, code, city) VALUES (30, 'prod', 'Oslo')")
    for statement in connection.ops.sequence_reset_sql(no_style(), [Warehouse]):
        sql(statement)
    assert Warehouse.objects.create(code="next").pk == 41


def test_a_table_that_cannot_be_enabled_never_makes_migrate_fail(deployed_db: DjangoDb) -> None:
    """With every model chosen, a table the database refuses to enable (here an event
    trigger refuses Crate's change store) is skipped with a warning saying why; migrate
    finishes and the other tables are enabled."""
    from cowsync.integrations.django.migrate_hook import TableSkippedWarning

    sql(
        """
        CREATE FUNCTION refuse_crate() RETURNS event_trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands()
                       WHERE object_identity LIKE 'public%.migrapp_crate_changes') THEN
                RAISE EXCEPTION 'no change store for crates';
            END IF;
        END $$;
        CREATE EVENT TRIGGER refuse_crate ON ddl_command_end EXECUTE FUNCTION refuse_crate();
        SELECT 1
        """
    )
    settings = {"MODELS": ["__all__"], "ENABLE_AFTER_MIGRATE": True}
    with override_settings(COWSYNC=settings), pytest.warns(TableSkippedWarning) as caught:
        migrate("0001")
    assert [str(w.message) for w in caught] == [
        "cowsync: did not enable migrapp_crate on database 'default': the database "
        "refused to enable it (P0001): no change store for crates"
    ]
    assert enabled_tables(deployed_db) == ["migrapp_box"]
    assert "public.testapp_product" in {t.table for t in cowsync.status(deployed_db.raw)}
    assert sql("SELECT relkind FROM pg_class WHERE relname = 'migrapp_crate'") == [("r",)]
    sql("INSERT INTO migrapp_crate (code) VALUES ('c-1')")
    assert deployed_db.production("SELECT code FROM migrapp_crate") == [("c-1",)]
