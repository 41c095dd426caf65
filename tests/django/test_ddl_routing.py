"""How the schema editor reads DDL (no database for the parsing tests), and what it runs."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, models, transaction

import cowsync
from cowsync.integrations.django import cow_session
from cowsync.integrations.django.ddl_routing import (
    mask_literals,
    route,
    split_statements,
)
from cowsync.integrations.django.relations import EnabledRelation, RelationMap
from tests.django._djdb import DjangoDb
from tests.django.testapp.models import Product, Tag

ITEMS = EnabledRelation("public", "items", "items_base", "items_changes")
RELATIONS = RelationMap([ITEMS], ["public"])


def test_split_keeps_semicolons_inside_literals_and_names() -> None:
    text = (
        'ALTER TABLE "items" ADD COLUMN "a;b" text DEFAULT \'x;y\' NOT NULL; '
        'SET CONSTRAINTS ALL IMMEDIATE; COMMENT ON TABLE "t" IS $$p;q$$'
    )
    assert split_statements(text) == [
        'ALTER TABLE "items" ADD COLUMN "a;b" text DEFAULT \'x;y\' NOT NULL',
        "SET CONSTRAINTS ALL IMMEDIATE",
        'COMMENT ON TABLE "t" IS $$p;q$$',
    ]


def test_masking_blanks_literals_only() -> None:
    text = "SELECT 'a''b', E'c\\'d', \"e'f\""
    masked = mask_literals(text)
    assert len(masked) == len(text)
    assert masked == "SELECT '    ', E'    ', \"e'f\""


def test_alter_table_on_an_enabled_table_goes_to_cowsync_alter() -> None:
    plan = route('ALTER TABLE "items" ADD COLUMN "note" text NULL', RELATIONS)
    assert plan.alter == (ITEMS, 'ADD COLUMN "note" text NULL')


def test_references_to_an_enabled_table_point_at_its_base() -> None:
    plan = route(
        'ALTER TABLE "orders" ADD CONSTRAINT "fk" FOREIGN KEY ("item_id") '
        'REFERENCES "items" ("id") DEFERRABLE INITIALLY DEFERRED',
        RELATIONS,
    )
    assert plan.statement is not None
    assert 'REFERENCES "public"."items_base" ("id")' in plan.statement
    inside = route(
        'ALTER TABLE "items" ADD COLUMN "parent_id" bigint NULL '
        'CONSTRAINT "p" REFERENCES "items"("id")',
        RELATIONS,
    )
    assert inside.alter is not None and 'REFERENCES "public"."items_base"("id")' in inside.alter[1]


def test_a_literal_that_looks_like_a_reference_is_left_alone() -> None:
    plan = route(
        """ALTER TABLE "orders" ADD COLUMN "x" text DEFAULT 'REFERENCES "items"'""", RELATIONS
    )
    assert plan.statement is not None and """DEFAULT 'REFERENCES "items"'""" in plan.statement


def test_indexes_on_an_enabled_table_go_on_its_base() -> None:
    plan = route('CREATE UNIQUE INDEX "u" ON "items" USING btree ("name")', RELATIONS)
    assert plan.statement == 'CREATE UNIQUE INDEX "u" ON "public"."items_base" USING btree ("name")'
    concurrent = route('CREATE INDEX CONCURRENTLY "i" ON "items" ("name")', RELATIONS)
    assert concurrent.statement == 'CREATE INDEX CONCURRENTLY "i" ON "public"."items_base" ("name")'


def test_rename_drop_and_comments() -> None:
    assert route('ALTER TABLE "items" RENAME TO "things"', RELATIONS).rename == (
        ITEMS,
        "things",
        'ALTER TABLE "items" RENAME TO "things"',
    )
    assert route('DROP TABLE "items" CASCADE', RELATIONS).disable == (ITEMS,)
    assert route('DROP TABLE "other" CASCADE', RELATIONS).disable == ()
    comment = route("COMMENT ON TABLE \"items\" IS 'stock'", RELATIONS)
    assert comment.statement == 'COMMENT ON TABLE "public"."items_base" IS \'stock\''
    assert comment.also == ("COMMENT ON VIEW \"items\" IS 'stock'",)
    column = route('COMMENT ON COLUMN "items"."name" IS \'label\'', RELATIONS)
    assert column.statement == 'COMMENT ON COLUMN "public"."items_base"."name" IS \'label\''
    assert route('ALTER TABLE "items" SET SCHEMA "archive"', RELATIONS).refused


def test_other_tables_pass_through_unchanged() -> None:
    statement = 'ALTER TABLE "other" ADD COLUMN "x" integer NULL'
    assert route(statement, RELATIONS).statement == statement
    assert route(statement, RelationMap([], ["public"])).statement == statement


# --- the schema editor on a real database -------------------------------------------------


def test_a_dropped_unique_index_stops_binding_sessions(enabled_db: DjangoDb) -> None:
    field = Tag._meta.get_field("name")
    relaxed = models.CharField(max_length=30)
    relaxed.set_attributes_from_name("name")
    relaxed.model = Tag
    with connection.schema_editor() as editor:
        editor.alter_field(Tag, field, relaxed)
    with cow_session("s1"):
        Tag.objects.create(name="twice")
        Tag.objects.create(name="twice")
    with connection.schema_editor() as editor:
        editor.add_index(Tag, models.Index(fields=["name"], name="tag_name_idx"))
    assert enabled_db.production(
        "SELECT indexname::text FROM pg_indexes WHERE indexname = 'tag_name_idx'"
    ) == [("tag_name_idx",)]


def test_an_added_unique_constraint_binds_sessions(enabled_db: DjangoDb) -> None:
    constraint = models.UniqueConstraint(fields=["name", "price"], name="name_price_once")
    with connection.schema_editor() as editor:
        editor.add_constraint(Product, constraint)
    with cow_session("s1"):
        Product.objects.create(sku="a", name="n", price=1)
        with pytest.raises(IntegrityError), transaction.atomic():
            Product.objects.create(sku="b", name="n", price=1)


def test_table_and_column_comments_reach_base_and_view(enabled_db: DjangoDb) -> None:
    with connection.schema_editor() as editor:
        editor.execute("COMMENT ON TABLE \"testapp_tag\" IS 'labels'")
        editor.execute('COMMENT ON COLUMN "testapp_tag"."name" IS \'the label\'')
    comments = enabled_db.production(
        "SELECT obj_description('testapp_tag'::regclass, 'pg_class'), "
        "obj_description('testapp_tag_base'::regclass, 'pg_class'), "
        "col_description('testapp_tag_base'::regclass, 2)"
    )
    assert comments == [("labels", "labels", "the label")]
    cowsync.disable(enabled_db.raw, "testapp_tag")
    assert enabled_db.production("SELECT obj_description('testapp_tag'::regclass, 'pg_class')") == [
        ("labels",)
    ]


def test_an_index_built_concurrently_goes_on_the_base(enabled_db: DjangoDb) -> None:
    index = models.Index(fields=["name"], name="product_name_cidx")
    with connection.schema_editor(atomic=False) as editor:
        editor.add_index(Product, index, concurrently=True)
    assert enabled_db.production(
        "SELECT tablename::text FROM pg_indexes WHERE indexname = 'product_name_cidx'"
    ) == [("testapp_product_base",)]
