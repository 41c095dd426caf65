"""Database operations: flush and sequence resets for enabled tables.

* ``flush`` (``manage.py flush``, ``TransactionTestCase``) truncates an enabled table's
  base; its change store inherits from the base, so the sessions' rows go too.
* Sequence resets (``loaddata``, ``sqlsequencereset``) read the sequence of the base
  column and the highest key over base and sessions, so new rows never reuse a key a
  session already took.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql.operations import DatabaseOperations as PostgresOperations

from ...binding import unbound
from .ddl_routing import qualified_base
from .relations import RelationMap, enabled_relations


class DatabaseOperations(PostgresOperations):  # type: ignore[misc]
    """Django's PostgreSQL operations, aware of enabled tables."""

    compiler_module = "cowsync.integrations.django.compiler"

    def _relations(self) -> RelationMap:
        self.connection.ensure_connection()
        with unbound():
            return enabled_relations(self.connection.connection)

    def sql_flush(
        self,
        style: Any,
        tables: list[str],
        *,
        reset_sequences: bool = False,
        allow_cascade: bool = False,
    ) -> list[str]:
        """``TRUNCATE`` the tables; an enabled table's base (and with it its change store)."""
        if not tables:
            return []
        relations = self._relations()
        if not relations:
            return super().sql_flush(  # type: ignore[no-any-return]
                style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
            )
        names = []
        for table in tables:
            relation = relations.find(None, table)
            names.append(self.quote_name(table) if relation is None else qualified_base(relation))
        parts = [style.SQL_KEYWORD("TRUNCATE"), ", ".join(style.SQL_FIELD(n) for n in names)]
        if reset_sequences:
            parts.append(style.SQL_KEYWORD("RESTART IDENTITY"))
        if allow_cascade:
            parts.append(style.SQL_KEYWORD("CASCADE"))
        return [" ".join(parts) + ";"]

    def sequence_reset_by_name_sql(self, style: Any, sequences: list[dict[str, Any]]) -> list[str]:
        """Restart the sequences; an enabled table's are owned by its base."""
        relations = self._relations()
        mapped = []
        for info in sequences:
            relation = relations.find(None, info["table"]) if relations else None
            mapped.append(info if relation is None else {**info, "table": relation.base})
        return super().sequence_reset_by_name_sql(style, mapped)  # type: ignore[no-any-return]

    def sequence_reset_sql(self, style: Any, model_list: Any) -> list[str]:
        """Move each sequence past the highest key; for an enabled table over base and sessions."""
        statements: list[str] = super().sequence_reset_sql(style, model_list)
        relations = self._relations()
        if not relations:
            return statements
        rewritten = []
        for statement in statements:
            for relation in relations:
                view = self.quote_name(relation.name)
                # The base's name for the sequence lookup; the base without ONLY for the
                # highest key, which takes in the change store's rows (it inherits).
                statement = statement.replace(
                    f"pg_get_serial_sequence('{view}',",
                    f"pg_get_serial_sequence('{qualified_base(relation)}',",
                ).replace(f"FROM {view};", f"FROM {qualified_base(relation)};")
            rewritten.append(statement)
        return rewritten
