"""SQL compilers: ``bulk_create(update_conflicts=True)`` on enabled tables.

PostgreSQL infers the arbiter of ``INSERT … ON CONFLICT (cols) DO UPDATE`` from the
target's unique indexes; a view has none, so the statement fails with ``42P10`` whether
or not a session is bound. For a view, the insert compiler writes the upsert as one
statement with data-modifying CTEs instead: update the rows whose unique fields match,
insert the others, and return the rows in the order of the objects::

    WITH input AS (VALUES (1, …), (2, …)),
         updated AS (UPDATE items SET … FROM input WHERE key matches RETURNING …),
         inserted AS (INSERT INTO items … SELECT … FROM input WHERE not updated RETURNING …)
    SELECT … ORDER BY input order

The upsert is emulated only when PostgreSQL would have found an arbiter on the table:
the ``unique_fields`` are exactly the key columns of one of the base's valid, non-partial
unique indexes on plain columns (its arbiter inference without ``WHERE``). Otherwise the
compiler hands back Django's own ``ON CONFLICT`` statement, which PostgreSQL refuses on
the view before running anything with the error a table gives (``42P10``, "there is no
unique or exclusion constraint matching the ON CONFLICT specification"), so Django
raises the same ``ProgrammingError`` as on a table, never an update of every row that
shares a non-unique value.

Differences from a real ``ON CONFLICT``, documented in docs/django.md: two transactions
upserting the same new key at the same moment may raise ``IntegrityError`` (23505) where
``ON CONFLICT`` would have updated; an object list that repeats a key raises 23505 instead
of ``21000``. ``ignore_conflicts=True`` needs nothing: ``ON CONFLICT DO NOTHING`` (no
target) works through the view.

Every other compiler is Django's own (re-exported).
"""

from __future__ import annotations

from importlib import import_module
from itertools import chain
from typing import Any

from django.db.backends.postgresql.operations import DatabaseOperations as PostgresOperations
from django.db.models.constants import OnConflict
from django.db.models.sql.compiler import SQLInsertCompiler as BaseSQLInsertCompiler

_parent = import_module(PostgresOperations.compiler_module)

SQLCompiler = _parent.SQLCompiler
SQLDeleteCompiler = _parent.SQLDeleteCompiler
SQLUpdateCompiler = _parent.SQLUpdateCompiler
SQLAggregateCompiler = _parent.SQLAggregateCompiler

__all__ = [
    "SQLAggregateCompiler",
    "SQLCompiler",
    "SQLDeleteCompiler",
    "SQLInsertCompiler",
    "SQLUpdateCompiler",
]


# The key columns of each unique index of an enabled table's base that PostgreSQL's
# arbiter inference for ``ON CONFLICT (columns)`` (no WHERE) may pick: valid, not
# partial, plain columns only. Empty when the view is not an enabled table. The view is
# found by its own schema: the table's in place, the overlay schema in overlay mode.
_UNIQUE_INDEX_COLUMNS_SQL = """
    SELECT ARRAY(SELECT a.attname::text FROM pg_catalog.generate_series(0, i.indnkeyatts - 1) k
                 JOIN pg_catalog.pg_attribute a
                   ON a.attrelid = i.indrelid AND a.attnum = i.indkey[k])
    FROM cowsync.tables t
    JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema_name
    JOIN pg_catalog.pg_class b ON b.relnamespace = n.oid AND b.relname = t.base_name
    JOIN pg_catalog.pg_index i ON i.indrelid = b.oid
    WHERE coalesce(t.view_schema, t.schema_name) = %s AND t.table_name = %s
      AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
"""


class SQLInsertCompiler(_parent.SQLInsertCompiler):  # type: ignore[misc,name-defined]
    """Django's insert compiler; an upsert into a view is written without ``ON CONFLICT``."""

    def as_sql(self) -> list[tuple[str, tuple[Any, ...]]]:
        """The INSERT statement(s); an ``update_conflicts`` upsert into a view as CTEs."""
        if self.query.on_conflict != OnConflict.UPDATE or not self._arbiter_on_base():
            return super().as_sql()  # type: ignore[no-any-return]
        return [self._upsert_sql()]

    def _arbiter_on_base(self) -> bool:
        """True when the target is an enabled table's view and its base has a unique
        index PostgreSQL would take as the arbiter of ``ON CONFLICT (unique_fields)``."""
        table = self.connection.ops.quote_name(self.query.get_meta().db_table)
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT c.relkind::text, n.nspname::text, c.relname::text "
                "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                "ON n.oid = c.relnamespace WHERE c.oid = pg_catalog.to_regclass(%s)",
                [table],
            )
            found = cursor.fetchone()
            if found is None or found[0] != "v":
                return False
            cursor.execute(_UNIQUE_INDEX_COLUMNS_SQL, [found[1], found[2]])
            indexes = [set(row[0]) for row in cursor.fetchall()]
        wanted = {f.column for f in self.query.unique_fields}
        return wanted in indexes

    def _upsert_sql(self) -> tuple[str, tuple[Any, ...]]:
        qn = self.connection.ops.quote_name
        opts = self.query.get_meta()
        table = qn(opts.db_table)
        fields = list(self.query.fields)
        columns = [qn(f.column) for f in fields]
        value_rows = [
            [self.prepare_value(f, self.pre_save_val(f, obj)) for f in fields]
            for obj in self.query.objs
        ]
        # Django's base assembly (not the UNNEST one): one placeholder per value, each cast
        # to its column's type, since VALUES in a CTE has no target to infer types from.
        placeholder_rows, param_rows = BaseSQLInsertCompiler.assemble_as_sql(
            self, fields, value_rows
        )
        types = [f.db_type(self.connection) for f in fields]
        rows_sql = ", ".join(
            "({}, {})".format(
                number,
                ", ".join(f"CAST({ph} AS {db_type})" for ph, db_type in zip(row, types)),
            )
            for number, row in enumerate(placeholder_rows, start=1)
        )
        unique = [qn(f.column) for f in self.query.unique_fields]
        update = [qn(f.column) for f in self.query.update_fields]
        returning = [qn(f.column) for f in (self.returning_fields or ())]

        match = " AND ".join(f'"_cow_t".{c} = "_cow_i".{c}' for c in unique)
        sets = ", ".join(f'{c} = "_cow_i".{c}' for c in update)
        updated_returning = ", ".join(
            ['"_cow_i"."_cow_ord"', *(f'"_cow_t".{c}' for c in returning)]
        )
        col_list = ", ".join(columns)
        parts = [
            f'WITH "_cow_input" ("_cow_ord", {col_list}) AS (VALUES {rows_sql}), '
            f'"_cow_updated" AS (UPDATE {table} AS "_cow_t" SET {sets} '
            f'FROM "_cow_input" AS "_cow_i" WHERE {match} RETURNING {updated_returning}), '
            f'"_cow_new" AS (SELECT "_cow_i".*, row_number() OVER (ORDER BY "_cow_i"."_cow_ord") '
            f'AS "_cow_n" FROM "_cow_input" AS "_cow_i" WHERE NOT EXISTS (SELECT 1 FROM '
            f'"_cow_updated" AS "_cow_u" WHERE "_cow_u"."_cow_ord" = "_cow_i"."_cow_ord")), '
            f'"_cow_inserted" AS (INSERT INTO {table} ({col_list}) SELECT {col_list} FROM '
            f'"_cow_new" ORDER BY "_cow_n"'
            + (f" RETURNING {', '.join(returning)}" if returning else "")
            + ") "
        ]
        if returning:
            picked = ", ".join(returning)
            parts.append(
                f'SELECT {picked} FROM (SELECT "_cow_ord", {picked} FROM "_cow_updated" '
                f'UNION ALL SELECT "_cow_new"."_cow_ord", '
                + ", ".join(f'"_cow_ins".{c}' for c in returning)
                + ' FROM (SELECT *, row_number() OVER () AS "_cow_n" FROM "_cow_inserted") '
                'AS "_cow_ins" JOIN "_cow_new" USING ("_cow_n")) AS "_cow_all" '
                'ORDER BY "_cow_ord"'
            )
        else:
            # A data-modifying CTE runs whether or not it is read; this one has RETURNING.
            parts.append('SELECT count(*) FROM "_cow_updated"')
        return "".join(parts), tuple(chain.from_iterable(param_rows))
