"""Reading the registry: which tables are enabled, and how they are laid out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from .errors import NotDeployedError, NotEnabledError
from .names import parse_table_name


@dataclass(frozen=True)
class EnabledTable:
    """One enabled table: its view, base and change store, key and columns."""

    registry_id: int
    schema: str
    name: str
    base_name: str
    changes_name: str
    key_columns: tuple[str, ...]
    columns: tuple[str, ...]
    always_identity: tuple[str, ...]  # identity columns GENERATED ALWAYS
    view_schema: str | None = None  # overlay mode: where the view and change store live
    parent_name: str | None = None  # overlay mode: the empty parent of base and change store

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def mode(self) -> str:
        return "in-place" if self.view_schema is None else "overlay"

    @property
    def base(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.base_name)

    @property
    def changes(self) -> sql.Identifier:
        return sql.Identifier(self.view_schema or self.schema, self.changes_name)

    @property
    def view(self) -> sql.Identifier:
        return sql.Identifier(self.view_schema or self.schema, self.name)

    @property
    def scanned(self) -> sql.Identifier:
        """What the view reads: the base in place, the parent in overlay mode (privileges
        on a parent cover its children, so the parent is what a view owner needs)."""
        if self.view_schema is None or self.parent_name is None:
            return self.base
        return sql.Identifier(self.view_schema, self.parent_name)

    def cols(self, prefix: str | None = None) -> sql.Composed:
        """The table's columns as a list, optionally qualified by ``prefix``."""
        return _idents(self.columns, prefix)

    def keys(self, prefix: str | None = None) -> sql.Composed:
        """The key columns as a list, optionally qualified by ``prefix``."""
        return _idents(self.key_columns, prefix)

    def key_match(self, left: str, right: str) -> sql.Composed:
        """``left.k1 = right.k1 AND ...`` over the key columns."""
        return sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier(left, k), sql.Identifier(right, k))
            for k in self.key_columns
        )


def _idents(names: Iterable[str], prefix: str | None) -> sql.Composed:
    if prefix is None:
        return sql.SQL(", ").join(sql.Identifier(n) for n in names)
    return sql.SQL(", ").join(sql.Identifier(prefix, n) for n in names)


def require_engine(conn: psycopg.Connection) -> None:
    row = conn.execute("SELECT pg_catalog.to_regclass('cowsync.tables') IS NOT NULL").fetchone()
    if not row or not row[0]:
        raise NotDeployedError(
            "cowsync is not deployed in this database: call cowsync.deploy(conn)"
        )


def enabled_tables(
    conn: psycopg.Connection, tables: Iterable[str] | None = None
) -> list[EnabledTable]:
    """Enabled tables (all, or those named), ordered by schema and name.

    Raises :class:`NotEnabledError` for a named table that is not enabled.
    """
    require_engine(conn)
    rows = conn.execute(
        """
        SELECT t.id, t.schema_name, t.table_name, t.base_name, t.changes_name, t.key_columns,
               pg_catalog.array_agg(a.attname::text ORDER BY a.attnum),
               pg_catalog.array_agg(a.attname::text ORDER BY a.attnum)
                   FILTER (WHERE a.attidentity = 'a'),
               t.view_schema, t.parent_name
        FROM cowsync.tables t
        JOIN pg_namespace n ON n.nspname = t.schema_name
        JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.base_name
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        GROUP BY t.id
        ORDER BY t.schema_name, t.table_name
        """
    ).fetchall()
    found = [
        EnabledTable(
            r[0], r[1], r[2], r[3], r[4], tuple(r[5]), tuple(r[6]), tuple(r[7] or ()), r[8], r[9]
        )
        for r in rows
    ]
    if tables is None:
        return found
    search_path = [
        r[0] for r in conn.execute("SELECT pg_catalog.unnest(pg_catalog.current_schemas(false))")
    ]
    chosen: list[EnabledTable] = []
    for raw in tables:
        name = parse_table_name(raw)
        schemas = [name.schema] if name.schema else search_path
        match = next(
            (t for s in schemas for t in found if t.schema == s and t.name == name.name), None
        )
        if match is None:
            raise NotEnabledError(f"{name} is not a COW-enabled table")
        if match not in chosen:
            chosen.append(match)
    return chosen


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key from one enabled table to another (or itself)."""

    name: str
    child: EnabledTable
    child_columns: tuple[str, ...]
    parent: EnabledTable
    parent_columns: tuple[str, ...]
    on_delete: str  # 'a' no action, 'r' restrict, 'c' cascade, 'n' set null, 'd' set default


# Foreign keys whose child is one of the bases given (a regclass[] parameter): a
# database can hold many more. Both lookups below select from it.
_FOREIGN_KEYS_OF_BASES = """
    FROM pg_constraint con
    JOIN pg_class cc ON cc.oid = con.conrelid
    JOIN pg_namespace cn ON cn.oid = cc.relnamespace
    JOIN pg_class pc ON pc.oid = con.confrelid
    JOIN pg_namespace pn ON pn.oid = pc.relnamespace
    WHERE con.contype = 'f' AND con.conrelid = ANY(%s::regclass[])
"""


def _bases_param(conn: psycopg.Connection, tables: list[EnabledTable]) -> list[str]:
    return [sql.Identifier(t.schema, t.base_name).as_string(conn) for t in tables]


def foreign_keys(conn: psycopg.Connection, tables: list[EnabledTable]) -> list[ForeignKey]:
    """Foreign keys between the bases of enabled tables."""
    if not tables:
        return []
    by_base = {(t.schema, t.base_name): t for t in tables}
    rows = conn.execute(
        """
        SELECT cn.nspname, cc.relname, pn.nspname, pc.relname, con.conname,
               ARRAY(SELECT a.attname::text
                     FROM pg_catalog.unnest(con.conkey) WITH ORDINALITY k(n, o)
                     JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n
                     ORDER BY k.o),
               ARRAY(SELECT a.attname::text
                     FROM pg_catalog.unnest(con.confkey) WITH ORDINALITY k(n, o)
                     JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n
                     ORDER BY k.o),
               con.confdeltype::text
        """
        + _FOREIGN_KEYS_OF_BASES
        + "ORDER BY con.conname",
        (_bases_param(conn, tables),),
    ).fetchall()
    keys = []
    for cschema, crel, pschema, prel, name, ccols, pcols, on_delete in rows:
        child = by_base.get((cschema, crel))
        parent = by_base.get((pschema, prel))
        if child is not None and parent is not None:
            keys.append(ForeignKey(name, child, tuple(ccols), parent, tuple(pcols), on_delete))
    return keys


def reference_links(
    conn: psycopg.Connection, tables: list[EnabledTable]
) -> list[tuple[EnabledTable, EnabledTable]]:
    """(child, parent) of each foreign key between these bases: all that ordering
    tables needs, read without the column names :func:`foreign_keys` adds (about
    half a millisecond less on a new connection, which a 1k-row commit notices)."""
    if not tables:
        return []
    by_base = {(t.schema, t.base_name): t for t in tables}
    rows = conn.execute(
        "SELECT cn.nspname, cc.relname, pn.nspname, pc.relname" + _FOREIGN_KEYS_OF_BASES,
        (_bases_param(conn, tables),),
    ).fetchall()
    links = []
    for cschema, crel, pschema, prel in rows:
        child, parent = by_base.get((cschema, crel)), by_base.get((pschema, prel))
        if child is not None and parent is not None:
            links.append((child, parent))
    return links


def parents_first(
    tables: list[EnabledTable], links: Iterable[tuple[EnabledTable, EnabledTable]]
) -> list[EnabledTable]:
    """Order tables so a referenced table comes before the tables referencing it.

    ``links`` are (child, parent) pairs. Cycles (other than self-references) keep
    their registry order; a commit that needs a particular order inside a cycle
    relies on deferrable constraints.
    """
    pairs = list(links)
    remaining = list(tables)
    ordered: list[EnabledTable] = []
    while remaining:
        ready = [
            t for t in remaining if not any(c == t and p != t and p in remaining for c, p in pairs)
        ]
        if not ready:  # a cycle: take the first to break it
            ready = [remaining[0]]
        for t in ready:
            ordered.append(t)
            remaining.remove(t)
    return ordered


def cyclic_tables(tables: list[EnabledTable], fks: list[ForeignKey]) -> set[str]:
    """Labels of tables on a foreign-key cycle through other tables (self-references aside)."""
    parents: dict[str, set[str]] = {t.label: set() for t in tables}
    for fk in fks:
        if fk.child != fk.parent and fk.child.label in parents:
            parents[fk.child.label].add(fk.parent.label)
    cyclic = set()
    for start in parents:
        seen: set[str] = set()
        todo = list(parents[start])
        while todo:
            node = todo.pop()
            if node == start:
                cyclic.add(start)
                break
            if node not in seen:
                seen.add(node)
                todo.extend(parents.get(node, ()))
    return cyclic
