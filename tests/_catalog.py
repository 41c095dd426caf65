"""A name-based snapshot of everything ``cowsync.disable`` must give back.

``catalog_snapshot(conn, schema)`` returns plain dicts and lists keyed by qualified names, never
OIDs, so a snapshot taken before ``enable`` compares equal to one taken after ``disable`` even
though the table was renamed away and back. ``snapshot_diff(before, after)`` lists the
differences one per line, for assertion messages::

    before = catalog_snapshot(conn)
    cowsync.enable(conn, "items"); cowsync.disable(conn, "items")
    after = catalog_snapshot(conn)
    assert before == after, "\\n".join(snapshot_diff(before, after))

Everything is read in one transaction with ``search_path = pg_catalog``, so every name in the
output (defaults, constraint and index definitions, types) is schema-qualified the same way
whatever the caller's search_path.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

EXCLUDED_SCHEMAS = ("pg_catalog", "information_schema", "cowsync")

_RELATIONS = """
SELECT c.oid, n.nspname, c.relname, c.relkind::text,
       pg_get_userbyid(c.relowner), c.relpersistence::text, c.relreplident::text,
       c.relrowsecurity, c.relforcerowsecurity, c.reloptions, c.relacl::text[],
       obj_description(c.oid, 'pg_class'),
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
  AND n.nspname <> ALL (%(excluded)s)
  AND n.nspname NOT LIKE 'pg\\_toast%%'
  AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
  AND (%(schema)s::text IS NULL OR n.nspname = %(schema)s::text)
ORDER BY n.nspname, c.relname
"""

_COLUMNS = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text,
       CASE WHEN a.attcollation <> t.typcollation THEN co.collname::text END,
       a.attacl::text[], col_description(a.attrelid, a.attnum)
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE a.attrelid = ANY (%(oids)s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

_INDEXES = """
SELECT i.indrelid, ic.relname, pg_get_indexdef(i.indexrelid), i.indisclustered,
       i.indisreplident, obj_description(i.indexrelid, 'pg_class')
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = ANY (%(oids)s::oid[])
"""

# Constraints on our relations, and foreign keys from elsewhere that point at them.
_CONSTRAINTS = """
SELECT con.conrelid::regclass::text, con.conname, con.contype::text,
       pg_get_constraintdef(con.oid), con.convalidated,
       obj_description(con.oid, 'pg_constraint')
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE (con.conrelid = ANY (%(oids)s::oid[]) OR con.confrelid = ANY (%(oids)s::oid[]))
  AND n.nspname <> ALL (%(excluded)s)
"""

_TRIGGERS = """
SELECT t.tgrelid, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled::text,
       obj_description(t.oid, 'pg_trigger')
FROM pg_trigger t
WHERE t.tgrelid = ANY (%(oids)s::oid[]) AND NOT t.tgisinternal
"""

# deptype 'a': serial or OWNED BY; 'i': the sequence behind an identity column.
_SEQUENCES = """
SELECT s.seqrelid, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin,
       s.seqmax, s.seqcache, s.seqcycle,
       (SELECT d.refobjid::regclass::text || '.' || quote_ident(a.attname)
               || CASE d.deptype WHEN 'i' THEN ' (identity)' ELSE '' END
        FROM pg_depend d
        JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
          AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
FROM pg_sequence s
WHERE s.seqrelid = ANY (%(oids)s::oid[])
"""

_POLICIES = """
SELECT p.polrelid, p.polname, p.polcmd::text, p.polpermissive,
       ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END
             FROM unnest(p.polroles) AS r ORDER BY 1),
       pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
FROM pg_policy p
WHERE p.polrelid = ANY (%(oids)s::oid[])
"""


def catalog_snapshot(
    conn: psycopg.Connection[Any], schema: str | None = "public"
) -> dict[str, Any]:
    """Capture the relations of ``schema`` (all user schemas if None; never ``cowsync``).

    Keys: ``relations`` (kind, owner, persistence, replica identity, row security, options,
    ACL, comment, view definition), ``columns`` (in order: type, not null, default, identity,
    generated, collation, ACL, comment), ``indexes``, ``constraints`` (including foreign keys
    pointing in from other schemas, keyed by the referencing table), ``triggers`` (user
    triggers), ``sequences`` (parameters, position, owning column), ``policies`` and ``data``
    (each table's rows as text, sorted).
    """
    with conn.transaction():
        cur = conn.cursor(row_factory=tuple_row)
        old_path = cur.execute("SELECT current_setting('search_path')").fetchone()
        cur.execute("SELECT set_config('search_path', 'pg_catalog', true)")
        snapshot = _collect(cur, schema)
        # Restore for the rest of an enclosing transaction (a no-op when this one ends here).
        cur.execute("SELECT set_config('search_path', %s, true)", [old_path[0] if old_path else ""])
    return snapshot


def _collect(cur: psycopg.Cursor[Any], schema: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"schema": schema, "excluded": list(EXCLUDED_SCHEMAS)}
    names: dict[int, str] = {}
    identifiers: dict[int, sql.Identifier] = {}
    kinds: dict[int, str] = {}
    relations: dict[str, Any] = {}
    for row in cur.execute(_RELATIONS, params).fetchall():
        oid, nsp, rel, kind, owner, persistence, replident, rls, force_rls = row[:9]
        options, acl, comment, definition = row[9:]
        qualified = _qualify(nsp, rel)
        names[oid], identifiers[oid], kinds[oid] = qualified, sql.Identifier(nsp, rel), kind
        relations[qualified] = {
            "kind": kind,
            "owner": owner,
            "persistence": persistence,
            "replica_identity": replident,
            "row_security": rls,
            "force_row_security": force_rls,
            "options": sorted(options or []),
            "acl": sorted(acl or []) if acl is not None else None,
            "comment": comment,
            "definition": definition,
        }
    params["oids"] = list(names)

    columns: dict[str, list[dict[str, Any]]] = {name: [] for name in relations}
    for row in cur.execute(_COLUMNS, params).fetchall():
        rel, col, typ, notnull, default, identity, generated, collation, acl, comment = row
        columns[names[rel]].append(
            {
                "name": col,
                "type": typ,
                "not_null": notnull,
                "default": default,
                "identity": identity,
                "generated": generated,
                "collation": collation,
                "acl": sorted(acl) if acl is not None else None,
                "comment": comment,
            }
        )

    indexes: dict[str, dict[str, Any]] = {}
    for rel, index, definition, clustered, replident, comment in cur.execute(
        _INDEXES, params
    ).fetchall():
        indexes.setdefault(names[rel], {})[index] = {
            "definition": definition,
            "clustered": clustered,
            "replica_identity": replident,
            "comment": comment,
        }

    constraints: dict[str, dict[str, Any]] = {}
    for table, name, kind, definition, validated, comment in cur.execute(
        _CONSTRAINTS, params
    ).fetchall():
        constraints.setdefault(table, {})[name] = {
            "type": kind,
            "definition": definition,
            "validated": validated,
            "comment": comment,
        }

    triggers: dict[str, dict[str, Any]] = {}
    for rel, name, definition, enabled, comment in cur.execute(_TRIGGERS, params).fetchall():
        triggers.setdefault(names[rel], {})[name] = {
            "definition": definition,
            "enabled": enabled,
            "comment": comment,
        }

    sequences: dict[str, dict[str, Any]] = {}
    for row in cur.execute(_SEQUENCES, params).fetchall():
        oid, typ, start, increment, minimum, maximum, cache, cycle, owned_by = row
        position = cur.execute(
            sql.SQL("SELECT last_value, is_called FROM {}").format(identifiers[oid])
        ).fetchone()
        sequences[names[oid]] = {
            "type": typ,
            "start": start,
            "increment": increment,
            "min": minimum,
            "max": maximum,
            "cache": cache,
            "cycle": cycle,
            "last_value": position[0] if position else None,
            "is_called": position[1] if position else None,
            "owned_by": owned_by,
        }

    policies: dict[str, dict[str, Any]] = {}
    for rel, name, command, permissive, roles, using, check in cur.execute(
        _POLICIES, params
    ).fetchall():
        policies.setdefault(names[rel], {})[name] = {
            "command": command,
            "permissive": permissive,
            "roles": roles,
            "using": using,
            "with_check": check,
        }

    data: dict[str, list[str]] = {}
    for oid, name in names.items():
        if kinds[oid] in ("r", "p"):
            # Rows as text sort without any ordering operator, whatever the column types.
            rows = cur.execute(
                sql.SQL("SELECT t::text FROM {} AS t").format(identifiers[oid])
            ).fetchall()
            data[name] = sorted(row[0] for row in rows)

    return {
        "relations": relations,
        "columns": columns,
        "indexes": indexes,
        "constraints": constraints,
        "triggers": triggers,
        "sequences": sequences,
        "policies": policies,
        "data": data,
    }


def _qualify(schema: str, name: str) -> str:
    """``schema.name`` with each part quoted only where PostgreSQL would need it."""
    return f"{_quote_if_needed(schema)}.{_quote_if_needed(name)}"


def _quote_if_needed(name: str) -> str:
    plain = name.isidentifier() and name.isascii() and name == name.lower()
    return name if plain else '"' + name.replace('"', '""') + '"'


def snapshot_diff(before: Any, after: Any, path: str = "") -> list[str]:
    """Every difference between two snapshots, one ``path: before != after`` line each."""
    if isinstance(before, dict) and isinstance(after, dict):
        lines: list[str] = []
        for key in sorted(set(before) | set(after), key=str):
            where = f"{path}[{key!r}]" if path else str(key)
            if key not in after:
                lines.append(f"{where}: missing after")
            elif key not in before:
                lines.append(f"{where}: new after: {after[key]!r}")
            else:
                lines.extend(snapshot_diff(before[key], after[key], where))
        return lines
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            line
            for index, (old, new) in enumerate(zip(before, after, strict=True))
            for line in snapshot_diff(old, new, f"{path}[{index}]")
        ]
    return [] if before == after else [f"{path}: {before!r} != {after!r}"]
