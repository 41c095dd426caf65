"""The unique indexes, EXCLUDE constraints and foreign keys a session must honour,
read from the catalog.

The base enforces them for production writes. Session writes land in the change
store, which does not inherit indexes or foreign keys, so the trigger judges
them against what the session sees; these descriptions feed that rendering.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

# An operator as (schema, name): rendered OPERATOR(schema.name), so the comparison is
# the one the constraint uses whatever the search_path (cowsync.render._operator).
Operator = tuple[str, str]

# The catalog's operator for an OID, as (schema, name).
_OPERATOR_NAME_SQL = """
    (SELECT ARRAY[opn.nspname::text, op.oprname::text] FROM pg_operator op
     JOIN pg_namespace opn ON opn.oid = op.oprnamespace WHERE op.oid = {oid})
"""

# The equality operator of each key column of an index (btree strategy 3 of its operator
# class), as (schema, name).
_INDEX_EQUALITY_SQL = """
    ARRAY(SELECT ARRAY[opn.nspname::text, op.oprname::text]
          FROM generate_series(1, i.indnkeyatts) AS k
          JOIN pg_opclass oc ON oc.oid = i.indclass[k - 1]
          JOIN pg_amop ao ON ao.amopfamily = oc.opcfamily AND ao.amopstrategy = 3
                         AND ao.amoplefttype = oc.opcintype AND ao.amoprighttype = oc.opcintype
                         AND ao.amopmethod = (SELECT oid FROM pg_am WHERE amname = 'btree')
          JOIN pg_operator op ON op.oid = ao.amopopr
          JOIN pg_namespace opn ON opn.oid = op.oprnamespace
          ORDER BY k)
"""


@dataclass(frozen=True)
class UniqueCheck:
    """A unique index of the base other than the row key."""

    name: str  # the constraint's name, else the index's: what PostgreSQL reports
    index_name: str
    expressions: tuple[str, ...]  # column names or index expressions, as the catalog prints them
    # Each element's bare column name (pg_attribute.attname, unquoted), None for an
    # expression: ``expressions`` prints a name that needs quoting quoted ("rAnK"), so
    # only these may go into sql.Identifier.
    columns: tuple[str | None, ...]
    predicate: str | None  # partial index predicate
    nulls_not_distinct: bool
    plain_columns: bool  # every expression is a bare column
    operators: tuple[Operator, ...] = ()  # each expression's equality operator (its opclass)


@dataclass(frozen=True)
class Relation:
    """Where session code should look for a table's rows: its view if enabled."""

    schema: str
    name: str
    enabled: bool

    @property
    def label(self) -> str:
        return self.name


@dataclass(frozen=True)
class ForeignKeyOut:
    """A foreign key from this table to a parent."""

    name: str
    columns: tuple[str, ...]
    parent: Relation
    parent_columns: tuple[str, ...]
    match_full: bool
    deferrable: bool = False  # pg_constraint.condeferrable
    initially_deferred: bool = False  # pg_constraint.condeferred
    parent_equals_child: tuple[Operator, ...] = ()  # conpfeqop: parent column = child column
    child_equals_child: tuple[Operator, ...] = ()  # conffeqop: child column = child column


@dataclass(frozen=True)
class ForeignKeyIn:
    """A foreign key from a child table to this one."""

    name: str
    child: Relation
    child_columns: tuple[str, ...]
    columns: tuple[str, ...]  # this table's referenced columns
    on_delete: str  # a, r, c, n, d (pg_constraint.confdeltype)
    on_update: str
    child_defaults: tuple[bool, ...]  # whether each child column has a default
    deferrable: bool = False  # pg_constraint.condeferrable
    initially_deferred: bool = False  # pg_constraint.condeferred
    # This table has a CHECK constraint of the same name, which its change store
    # inherits: a constraint trigger there cannot take the foreign key's name.
    name_taken: bool = False
    parent_equals_child: tuple[Operator, ...] = ()  # conpfeqop: this table's column = child's
    parent_equals_parent: tuple[Operator, ...] = ()  # conppeqop: this table's column = its own


def _relation(conn: psycopg.Connection, oid: int) -> Relation:
    """A relation by OID, mapped to its view when it is an enabled base."""
    row = conn.execute(
        """
        SELECT n.nspname, c.relname, t.table_name, t.view_schema
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN cowsync.tables t ON t.schema_name = n.nspname AND t.base_name = c.relname
        WHERE c.oid = %s
        """,
        (oid,),
    ).fetchone()
    assert row is not None
    schema, relname, view, view_schema = row
    return Relation(view_schema or schema, view or relname, view is not None)


def unique_checks(
    conn: psycopg.Connection, base_oid: int, key_constraint: str
) -> list[UniqueCheck]:
    """Unique indexes of the base except the one that serves as the row key."""
    rows = conn.execute(
        """
        SELECT ic.relname, coalesce(con.conname, ic.relname),
               ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true)
                     FROM generate_series(1, i.indnkeyatts) AS k ORDER BY k),
               ARRAY(SELECT a.attname::text FROM generate_series(1, i.indnkeyatts) AS k
                     LEFT JOIN pg_attribute a
                            ON a.attrelid = i.indrelid AND a.attnum = i.indkey[k - 1]
                            AND i.indkey[k - 1] <> 0
                     ORDER BY k),
               pg_get_expr(i.indpred, i.indrelid),
               coalesce((to_jsonb(i) ->> 'indnullsnotdistinct')::boolean, false),
               i.indexprs IS NULL,
               """
        + _INDEX_EQUALITY_SQL
        + """
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
        WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid
        ORDER BY ic.relname
        """,
        (base_oid,),
    ).fetchall()
    return [
        UniqueCheck(
            name,
            index_name,
            tuple(exprs),
            tuple(columns),
            pred,
            bool(nnd),
            bool(plain),
            tuple((schema, op) for schema, op in operators),
        )
        for index_name, name, exprs, columns, pred, nnd, plain, operators in rows
        if name != key_constraint and index_name != key_constraint
    ]


def key_operators(
    conn: psycopg.Connection, base_oid: int, key_constraint: str
) -> tuple[Operator, ...]:
    """The equality operator of each row-key column: its index's operator class's."""
    row = conn.execute(
        """
        SELECT """
        + _INDEX_EQUALITY_SQL
        + """
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
        WHERE i.indrelid = %s AND (con.conname = %s OR ic.relname = %s)
        ORDER BY con.conname = %s DESC NULLS LAST
        LIMIT 1
        """,
        (base_oid, key_constraint, key_constraint, key_constraint),
    ).fetchone()
    if row is None:
        raise LookupError(f"no index for key constraint {key_constraint!r}")
    return tuple((schema, op) for schema, op in row[0])


@dataclass(frozen=True)
class ExclusionCheck:
    """An EXCLUDE constraint of the base: no two rows may match on every element."""

    name: str
    index_name: str
    method: str  # the index's access method (gist, spgist, btree, hash)
    expressions: tuple[str, ...]  # each element as pg_get_indexdef prints it
    columns: tuple[str | None, ...]  # each element's bare column name, None for an expression
    operators: tuple[tuple[str, str], ...]  # (schema, name) of each element's operator
    opclasses: tuple[tuple[str, str], ...]  # (schema, name) of each element's operator class
    predicate: str | None  # EXCLUDE ... WHERE (...)
    deferrable: bool = False  # pg_constraint.condeferrable
    initially_deferred: bool = False  # pg_constraint.condeferred


def exclusion_checks(conn: psycopg.Connection, base_oid: int) -> list[ExclusionCheck]:
    """The base's EXCLUDE constraints (pg_constraint.contype 'x')."""
    rows = conn.execute(
        """
        SELECT con.conname, ic.relname, am.amname,
               ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true)
                     FROM generate_series(1, i.indnkeyatts) AS k ORDER BY k),
               ARRAY(SELECT a.attname::text FROM generate_series(1, i.indnkeyatts) AS k
                     LEFT JOIN pg_attribute a
                            ON a.attrelid = i.indrelid AND a.attnum = i.indkey[k - 1]
                            AND i.indkey[k - 1] <> 0
                     ORDER BY k),
               ARRAY(SELECT ARRAY[opn.nspname::text, op.oprname::text]
                     FROM unnest(con.conexclop) WITH ORDINALITY AS x(oid, k)
                     JOIN pg_operator op ON op.oid = x.oid
                     JOIN pg_namespace opn ON opn.oid = op.oprnamespace ORDER BY x.k),
               ARRAY(SELECT ARRAY[ocn.nspname::text, oc.opcname::text]
                     FROM unnest(i.indclass::oid[]) WITH ORDINALITY AS x(oid, k)
                     JOIN pg_opclass oc ON oc.oid = x.oid
                     JOIN pg_namespace ocn ON ocn.oid = oc.opcnamespace
                     WHERE x.k <= i.indnkeyatts ORDER BY x.k),
               pg_get_expr(i.indpred, i.indrelid), con.condeferrable, con.condeferred
        FROM pg_constraint con
        JOIN pg_index i ON i.indexrelid = con.conindid
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_am am ON am.oid = ic.relam
        WHERE con.contype = 'x' AND con.conrelid = %s
        ORDER BY con.conname
        """,
        (base_oid,),
    ).fetchall()
    return [
        ExclusionCheck(
            name,
            index_name,
            method,
            tuple(exprs),
            tuple(columns),
            tuple((schema, op) for schema, op in operators),
            tuple((schema, opc) for schema, opc in opclasses),
            pred,
            deferrable,
            deferred,
        )
        for (
            name,
            index_name,
            method,
            exprs,
            columns,
            operators,
            opclasses,
            pred,
            deferrable,
            deferred,
        ) in rows
    ]


def _names(conn: psycopg.Connection, rel: int, attnums: list[int]) -> tuple[str, ...]:
    rows = conn.execute(
        """
        SELECT a.attname FROM unnest(%s::int2[]) WITH ORDINALITY AS k(n, o)
        JOIN pg_attribute a ON a.attrelid = %s AND a.attnum = k.n ORDER BY k.o
        """,
        (attnums, rel),
    ).fetchall()
    return tuple(r[0] for r in rows)


def foreign_keys_out(conn: psycopg.Connection, base_oid: int) -> list[ForeignKeyOut]:
    rows = conn.execute(
        """
        SELECT conname, conkey::int2[], confrelid::int, confkey::int2[], confmatchtype::text,
               condeferrable, condeferred,
               ARRAY(SELECT """
        + _OPERATOR_NAME_SQL.format(oid="x.oid")
        + """ FROM unnest(conpfeqop) WITH ORDINALITY AS x(oid, k) ORDER BY x.k),
               ARRAY(SELECT """
        + _OPERATOR_NAME_SQL.format(oid="x.oid")
        + """ FROM unnest(conffeqop) WITH ORDINALITY AS x(oid, k) ORDER BY x.k)
        FROM pg_constraint WHERE contype = 'f' AND conrelid = %s ORDER BY conname
        """,
        (base_oid,),
    ).fetchall()
    return [
        ForeignKeyOut(
            name,
            _names(conn, base_oid, list(conkey)),
            _relation(conn, parent),
            _names(conn, parent, list(confkey)),
            match == "f",
            deferrable,
            deferred,
            tuple((schema, op) for schema, op in pf),
            tuple((schema, op) for schema, op in ff),
        )
        for name, conkey, parent, confkey, match, deferrable, deferred, pf, ff in rows
    ]


def foreign_keys_in(conn: psycopg.Connection, base_oid: int) -> list[ForeignKeyIn]:
    rows = conn.execute(
        """
        SELECT con.conname, con.conrelid::int, con.conkey::int2[], con.confkey::int2[],
               con.confdeltype::text, con.confupdtype::text,
               ARRAY(SELECT d.adrelid IS NOT NULL FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
                     LEFT JOIN pg_attrdef d ON d.adrelid = con.conrelid AND d.adnum = k.n
                     ORDER BY k.o),
               con.condeferrable, con.condeferred,
               EXISTS (SELECT 1 FROM pg_constraint own WHERE own.conrelid = con.confrelid
                       AND own.contype = 'c' AND own.conname = con.conname),
               ARRAY(SELECT """
        + _OPERATOR_NAME_SQL.format(oid="x.oid")
        + """ FROM unnest(con.conpfeqop) WITH ORDINALITY AS x(oid, k) ORDER BY x.k),
               ARRAY(SELECT """
        + _OPERATOR_NAME_SQL.format(oid="x.oid")
        + """ FROM unnest(con.conppeqop) WITH ORDINALITY AS x(oid, k) ORDER BY x.k)
        FROM pg_constraint con WHERE con.contype = 'f' AND con.confrelid = %s
        ORDER BY con.conname
        """,
        (base_oid,),
    ).fetchall()
    return [
        ForeignKeyIn(
            name=row[0],
            child=_relation(conn, row[1]),
            child_columns=_names(conn, row[1], list(row[2])),
            columns=_names(conn, base_oid, list(row[3])),
            on_delete=row[4],
            on_update=row[5],
            child_defaults=tuple(row[6]),
            deferrable=row[7],
            initially_deferred=row[8],
            name_taken=row[9],
            parent_equals_child=tuple((schema, op) for schema, op in row[10]),
            parent_equals_parent=tuple((schema, op) for schema, op in row[11]),
        )
        for row in rows
    ]
