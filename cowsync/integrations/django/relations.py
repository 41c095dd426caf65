"""Which relations of the database are enabled tables, by the names Django uses for them.

Django names a table by its bare ``db_table`` (``"items"``), resolved on the
``search_path``; the schema editor, introspection and operations map such a name to the
enabled table's base (``items_base``) and change store through :class:`RelationMap`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from ...errors import NotDeployedError
from ...registry import enabled_tables


@dataclass(frozen=True)
class EnabledRelation:
    """An enabled table: the view under its name, its base and its change store."""

    schema: str
    name: str
    base: str
    changes: str

    @property
    def label(self) -> str:
        """``schema.name``, the form the cowsync API takes."""
        return f"{self.schema}.{self.name}"


class RelationMap:
    """Enabled tables, found by ``(schema, name)`` or by a bare name on the search path."""

    def __init__(self, relations: list[EnabledRelation], search_path: list[str]) -> None:
        self._by_qualified = {(r.schema, r.name): r for r in relations}
        self._search_path = search_path

    def __bool__(self) -> bool:
        return bool(self._by_qualified)

    def __iter__(self) -> Iterator[EnabledRelation]:
        return iter(self._by_qualified.values())

    def find(self, schema: str | None, name: str) -> EnabledRelation | None:
        """The enabled table called ``name`` (in ``schema``, or the first on the search path)."""
        if schema is not None:
            return self._by_qualified.get((schema, name))
        for candidate in self._search_path:
            found = self._by_qualified.get((candidate, name))
            if found is not None:
                return found
        return None

    def by_base(self, schema: str, base: str) -> EnabledRelation | None:
        """The enabled table whose base is ``schema.base``."""
        for relation in self._by_qualified.values():
            if relation.schema == schema and relation.base == base:
                return relation
        return None


def enabled_relations(conn: psycopg.Connection[Any]) -> RelationMap:
    """Every enabled table of ``conn``'s database (empty when the engine is not deployed)."""
    try:
        tables = enabled_tables(conn)
    except NotDeployedError:
        return RelationMap([], [])
    search_path = [row[0] for row in conn.execute("SELECT unnest(current_schemas(false))")]
    return RelationMap(
        [EnabledRelation(t.schema, t.name, t.base_name, t.changes_name) for t in tables],
        search_path,
    )


def fingerprints(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], str]:
    """What each enabled table's view and trigger are built from, as a comparable string.

    Columns, keys, unique indexes and foreign keys in and out of the base: when a
    statement changes any of them, the table's view and trigger must be rebuilt.
    """
    if not conn.execute("SELECT to_regclass('cowsync.tables') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
        return {}
    rows = conn.execute(
        """
        SELECT t.schema_name, t.table_name,
               coalesce((SELECT string_agg(a.attname || ':' || a.atttypid || ':' || a.atttypmod
                                           || ':' || a.attnotnull, ',' ORDER BY a.attnum)
                         FROM pg_attribute a
                         WHERE a.attrelid = b.oid AND a.attnum > 0 AND NOT a.attisdropped), '')
               || '|' ||
               coalesce((SELECT string_agg(con.oid || ':' || con.conname, ',' ORDER BY con.oid)
                         FROM pg_constraint con
                         WHERE con.contype IN ('p', 'u', 'f', 'x')
                           AND (con.conrelid = b.oid OR con.confrelid = b.oid)), '')
               || '|' ||
               coalesce((SELECT string_agg(i.indexrelid || ':' || ic.relname, ',' ORDER BY
                                           i.indexrelid)
                         FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                         WHERE i.indrelid = b.oid AND i.indisunique), '')
        FROM cowsync.tables t
        JOIN pg_namespace n ON n.nspname = t.schema_name
        JOIN pg_class b ON b.relnamespace = n.oid AND b.relname = t.base_name
        """
    ).fetchall()
    return {(schema, name): str(print_) for schema, name, print_ in rows}
