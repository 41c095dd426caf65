"""Common table shapes for tests, created on demand by the ``make_table`` fixture.

Each shape stands for a kind of key cowsync must handle. Seeded rows are deterministic (no
random UUIDs, no ``now()``), so two runs and two tests see the same data.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

SHAPES = ("items", "composite", "identity", "uuid", "unique_key", "no_key", "parent_child")

# Column definitions per shape; {t} is the table itself. parent_child is built separately.
_DEFINITIONS = {
    "items": """
        id bigserial PRIMARY KEY,
        name text NOT NULL,
        qty int NOT NULL DEFAULT 0 CHECK (qty >= 0),
        price numeric(10, 2),
        updated_at timestamptz DEFAULT now()
    """,
    "composite": """
        region text,
        code int,
        label text,
        PRIMARY KEY (region, code)
    """,
    "identity": """
        id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        note text
    """,
    "uuid": """
        id uuid DEFAULT gen_random_uuid() PRIMARY KEY,
        body text
    """,
    "unique_key": """
        code text NOT NULL,
        val int
    """,
    "no_key": """
        name text,
        val int
    """,
}

# Seed rows for n = 1..%(rows)s; {t} is the table.
_SEEDS = {
    "items": """
        INSERT INTO {t} (name, qty, price, updated_at)
        SELECT 'item-' || n, n %% 7, round(n * 1.25, 2),
               timestamptz '2024-01-01 00:00:00+00' + n * interval '1 minute'
        FROM generate_series(1, %(rows)s) AS n
    """,
    "composite": """
        INSERT INTO {t} (region, code, label)
        SELECT (ARRAY['north', 'south', 'east', 'west'])[n %% 4 + 1], n, 'label-' || n
        FROM generate_series(1, %(rows)s) AS n
    """,
    "identity": """
        INSERT INTO {t} (note) SELECT 'note-' || n FROM generate_series(1, %(rows)s) AS n
    """,
    "uuid": """
        INSERT INTO {t} (id, body)
        SELECT md5('row-' || n)::uuid, 'body-' || n FROM generate_series(1, %(rows)s) AS n
    """,
    "unique_key": """
        INSERT INTO {t} (code, val) SELECT 'code-' || n, n FROM generate_series(1, %(rows)s) AS n
    """,
    "no_key": """
        INSERT INTO {t} (name, val) SELECT 'row-' || n, n FROM generate_series(1, %(rows)s) AS n
    """,
}


def create_table(
    conn: psycopg.Connection[Any],
    name: str = "items",
    shape: str = "items",
    schema: str = "public",
    rows: int = 0,
) -> str | tuple[str, str]:
    """Create a table of ``shape`` named ``schema.name``, seed ``rows`` rows, return its name.

    ``parent_child`` creates ``<name>_parent`` and ``<name>_child`` (the child references the
    parent, ON DELETE CASCADE), seeds ``rows`` rows in each, and returns both names.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown table shape {shape!r}; choose one of {', '.join(SHAPES)}")
    if rows < 0:
        raise ValueError("rows must be >= 0")
    with conn.transaction():
        if schema != "public":
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        if shape == "parent_child":
            return _create_parent_child(conn, name, schema, rows)
        table = sql.Identifier(schema, name)
        conn.execute(sql.SQL(f"CREATE TABLE {{t}} ({_DEFINITIONS[shape]})").format(t=table))
        if shape == "unique_key":
            conn.execute(
                sql.SQL("CREATE UNIQUE INDEX {index} ON {t} (code)").format(
                    index=sql.Identifier(f"{name}_code_key"), t=table
                )
            )
        if rows:
            conn.execute(sql.SQL(_SEEDS[shape]).format(t=table), {"rows": rows})
    return f"{schema}.{name}"


def _create_parent_child(
    conn: psycopg.Connection[Any], name: str, schema: str, rows: int
) -> tuple[str, str]:
    parent = sql.Identifier(schema, f"{name}_parent")
    child = sql.Identifier(schema, f"{name}_child")
    conn.execute(
        sql.SQL("CREATE TABLE {p} (id serial PRIMARY KEY, name text UNIQUE NOT NULL)").format(
            p=parent
        )
    )
    conn.execute(
        sql.SQL(
            "CREATE TABLE {c} (id serial PRIMARY KEY,"
            " parent_id int NOT NULL REFERENCES {p} ON DELETE CASCADE, note text)"
        ).format(c=child, p=parent)
    )
    if rows:
        conn.execute(
            sql.SQL(
                "INSERT INTO {p} (name) SELECT 'parent-' || n FROM generate_series(1, %s) n"
            ).format(p=parent),
            [rows],
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {c} (parent_id, note)"
                " SELECT (n - 1) %% %s + 1, 'child-' || n FROM generate_series(1, %s) n"
            ).format(c=child),
            [rows, rows],
        )
    return f"{schema}.{name}_parent", f"{schema}.{name}_child"
