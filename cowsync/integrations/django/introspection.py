"""Introspection that sees an enabled table as the table it stands for.

Under its name an enabled table is a view, which carries no constraints, indexes or
sequences; the schema editor looks those up by name to change or drop them. Here each
lookup of an enabled table reads its base, and the table list shows the table (not the
view, the base or the change store), so ``flush`` and ``inspectdb`` see the model's table.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.base.introspection import TableInfo
from django.db.backends.postgresql.introspection import (
    DatabaseIntrospection as PostgresIntrospection,
)

from .relations import enabled_relations


class DatabaseIntrospection(PostgresIntrospection):  # type: ignore[misc]
    """Django's PostgreSQL introspection, reading an enabled table's base."""

    def _base_name(self, cursor: Any, table_name: str) -> str:
        relation = enabled_relations(cursor.connection).find(None, table_name)
        return table_name if relation is None else relation.base

    def get_table_list(self, cursor: Any) -> list[TableInfo]:
        """Tables and views; an enabled table is listed once, as a table, by its own name."""
        tables: list[TableInfo] = super().get_table_list(cursor)
        relations = list(enabled_relations(cursor.connection))
        if not relations:
            return tables
        views = {r.name for r in relations}
        hidden = {r.base for r in relations} | {r.changes for r in relations}
        listed = []
        for info in tables:
            if info.name in hidden:
                continue
            if info.name in views:
                info = info._replace(type="t")
            listed.append(info)
        return listed

    def get_table_description(self, cursor: Any, table_name: str) -> Any:
        """The columns of ``table_name`` (an enabled table's base columns)."""
        return super().get_table_description(cursor, self._base_name(cursor, table_name))

    def get_sequences(self, cursor: Any, table_name: str, table_fields: Any = ()) -> Any:
        """The sequences of ``table_name``'s columns (owned by an enabled table's base)."""
        sequences = super().get_sequences(cursor, self._base_name(cursor, table_name), table_fields)
        for sequence in sequences:
            sequence["table"] = table_name
        return sequences

    def get_relations(self, cursor: Any, table_name: str) -> Any:
        """Foreign keys out of ``table_name`` (an enabled table's base)."""
        found = super().get_relations(cursor, self._base_name(cursor, table_name))
        by_base = {r.base: r.name for r in enabled_relations(cursor.connection)}
        return {
            column: (target_column, by_base.get(target_table, target_table))
            for column, (target_column, target_table) in found.items()
        }

    def get_constraints(self, cursor: Any, table_name: str) -> Any:
        """Constraints and indexes of ``table_name`` (an enabled table's base)."""
        constraints = super().get_constraints(cursor, self._base_name(cursor, table_name))
        relations = list(enabled_relations(cursor.connection))
        by_base = {r.base: r.name for r in relations}
        for info in constraints.values():
            foreign_key = info.get("foreign_key")
            if foreign_key and foreign_key[0] in by_base:
                info["foreign_key"] = (by_base[foreign_key[0]], *foreign_key[1:])
        return constraints
