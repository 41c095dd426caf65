"""Reading what cowsync needs to know about a table from pg_catalog."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from .errors import NotEnabledError
from .names import TableName


@dataclass(frozen=True)
class Column:
    """One column of a base table."""

    name: str
    type_sql: str
    not_null: bool
    default_sql: str | None
    identity: str  # '' (none), 'a' (ALWAYS) or 'd' (BY DEFAULT)
    generated: str  # '' or 's' (STORED)
    serial_sequence: str | None = None


@dataclass(frozen=True)
class TableInfo:
    """A plain table as the catalog describes it."""

    oid: int
    schema: str
    name: str
    relkind: str
    is_partition: bool
    owner: str
    columns: list[Column]
    key_columns: list[str] = field(default_factory=list)
    key_constraint: str | None = None
    has_parents: bool = False
    has_children: bool = False
    dependent_views: list[str] = field(default_factory=list)
    comment: str | None = None

    @property
    def qualified(self) -> TableName:
        return TableName(self.schema, self.name)


def resolve(conn: psycopg.Connection, table: TableName) -> tuple[str, str, int, str] | None:
    """Find ``(schema, name, oid, relkind)`` for a table name, following search_path."""
    if table.schema is not None:
        row = conn.execute(
            """
            SELECT n.nspname, c.relname, c.oid::int, c.relkind::text
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = %s
            """,
            (table.schema, table.name),
        ).fetchone()
    else:
        row = conn.execute(
            """
            SELECT n.nspname, c.relname, c.oid::int, c.relkind::text
            FROM pg_catalog.unnest(pg_catalog.current_schemas(false))
                 WITH ORDINALITY AS s(name, pos)
            JOIN pg_namespace n ON n.nspname = s.name
            JOIN pg_class c ON c.relnamespace = n.oid
            WHERE c.relname = %s
            ORDER BY s.pos
            LIMIT 1
            """,
            (table.name,),
        ).fetchone()
    return None if row is None else (row[0], row[1], row[2], row[3])


def relation_exists(conn: psycopg.Connection, schema: str, name: str) -> bool:
    row = conn.execute(
        """
        SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = %s
        """,
        (schema, name),
    ).fetchone()
    return row is not None


def describe(conn: psycopg.Connection, oid: int) -> TableInfo:
    """Describe the relation with this OID (columns, key, inheritance, dependents)."""
    head = conn.execute(
        """
        SELECT n.nspname, c.relname, c.relkind::text, c.relispartition,
               pg_catalog.pg_get_userbyid(c.relowner), pg_catalog.obj_description(c.oid, 'pg_class')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = %s
        """,
        (oid,),
    ).fetchone()
    if head is None:
        raise NotEnabledError(f"relation with oid {oid} disappeared")
    schema, name, relkind, is_partition, owner, comment = head
    columns = [
        Column(*row)
        for row in conn.execute(
            """
            SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attidentity::text,
                   a.attgenerated::text,
                   pg_catalog.pg_get_serial_sequence(
                       pg_catalog.format('%%I.%%I', n.nspname, c.relname), a.attname)
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
            """,
            (oid,),
        )
    ]
    key_columns, key_constraint = _key(conn, oid)
    inheritance = conn.execute(
        """
        SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = %s),
               EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = %s)
        """,
        (oid, oid),
    ).fetchone()
    assert inheritance is not None
    dependent_views = [
        r[0]
        for r in conn.execute(
            """
            SELECT DISTINCT pg_catalog.format('%%I.%%I', vn.nspname, v.relname)
            FROM pg_depend d
            JOIN pg_rewrite r ON r.oid = d.objid AND d.classid = 'pg_rewrite'::regclass
            JOIN pg_class v ON v.oid = r.ev_class
            JOIN pg_namespace vn ON vn.oid = v.relnamespace
            WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = %s AND v.oid <> %s
            ORDER BY 1
            """,
            (oid, oid),
        )
    ]
    return TableInfo(
        oid=oid,
        schema=schema,
        name=name,
        relkind=relkind,
        is_partition=is_partition,
        owner=owner,
        columns=columns,
        key_columns=key_columns,
        key_constraint=key_constraint,
        has_parents=inheritance[0],
        has_children=inheritance[1],
        dependent_views=dependent_views,
        comment=comment,
    )


def _key(conn: psycopg.Connection, oid: int) -> tuple[list[str], str | None]:
    """The primary key, else the narrowest unique index on NOT NULL plain columns."""
    rows = conn.execute(
        """
        SELECT i.indisprimary, ic.relname,
               pg_catalog.array_agg(a.attname ORDER BY k.ord) AS cols,
               pg_catalog.bool_and(a.attnotnull) AS all_not_null,
               coalesce(con.conname, ic.relname) AS constraint_name
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        CROSS JOIN LATERAL pg_catalog.unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
        WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid
          AND i.indpred IS NULL AND i.indexprs IS NULL
          AND k.ord <= i.indnkeyatts
        GROUP BY i.indexrelid, i.indisprimary, ic.relname, con.conname
        ORDER BY i.indisprimary DESC, pg_catalog.count(*), ic.relname
        """,
        (oid,),
    ).fetchall()
    for is_primary, _index, cols, all_not_null, constraint in rows:
        if is_primary or all_not_null:
            return list(cols), constraint
    return [], None
