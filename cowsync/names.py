"""Parsing and checking the table names users pass to cowsync.

Tables are named ``"items"`` or ``"schema.items"``. Each part is taken exactly as
written (case-sensitive, like :class:`psycopg.sql.Identifier`); a part may also be
double-quoted to contain dots, e.g. ``'"my.schema".items'``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidNameError

# PostgreSQL truncates identifiers longer than NAMEDATALEN - 1 bytes.
MAX_IDENTIFIER_BYTES = 63
BASE_SUFFIX = "_base"
CHANGES_SUFFIX = "_changes"
RESERVED_COLUMN_PREFIX = "_cow_"


@dataclass(frozen=True)
class TableName:
    """A table's schema and name; ``schema`` is None until resolved."""

    schema: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


def _split_parts(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    i, quoted, was_quoted = 0, False, False
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == '"':
                if i + 1 < len(text) and text[i + 1] == '"':
                    current.append('"')
                    i += 1
                else:
                    quoted = False
            else:
                current.append(ch)
        elif ch == '"':
            if current:
                raise InvalidNameError(f"misplaced quote in table name {text!r}")
            quoted = was_quoted = True
        elif ch == ".":
            parts.append("".join(current))
            current, was_quoted = [], False
        else:
            if was_quoted:
                raise InvalidNameError(f"text after a closing quote in table name {text!r}")
            current.append(ch)
        i += 1
    if quoted:
        raise InvalidNameError(f"unterminated quote in table name {text!r}")
    parts.append("".join(current))
    return parts


def parse_table_name(value: str | tuple[str, str] | TableName) -> TableName:
    """Parse ``"items"``, ``"schema.items"`` or ``("schema", "items")``.

    >>> parse_table_name("public.items")
    TableName(schema='public', name='items')
    """
    if isinstance(value, TableName):
        return value
    if isinstance(value, tuple):
        if len(value) != 2:
            raise InvalidNameError(f"expected (schema, table), got {value!r}")
        parts = list(value)
    elif isinstance(value, str):
        parts = _split_parts(value.strip())
    else:
        raise InvalidNameError(f"a table name must be a string, got {type(value).__name__}")
    if len(parts) > 2:
        raise InvalidNameError(
            f"table name {value!r} has {len(parts)} parts; use 'table' or 'schema.table'"
        )
    for part in parts:
        check_identifier(part, f"table name {value!r}")
    if len(parts) == 1:
        return TableName(None, parts[0])
    return TableName(parts[0], parts[1])


def check_identifier(part: str, context: str) -> None:
    """Refuse empty identifiers, NUL bytes, and names PostgreSQL would truncate."""
    if not part:
        raise InvalidNameError(f"empty identifier in {context}")
    if "\x00" in part:
        raise InvalidNameError(f"NUL byte in {context}")
    if len(part.encode()) > MAX_IDENTIFIER_BYTES:
        raise InvalidNameError(
            f"{part!r} in {context} is longer than {MAX_IDENTIFIER_BYTES} bytes; "
            "PostgreSQL would truncate it"
        )


def derived_name(table: str, suffix: str) -> str:
    """``items`` -> ``items_base``; refused when PostgreSQL would truncate the result."""
    name = table + suffix
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise InvalidNameError(
            f"table name {table!r} is too long for cowsync: {name!r} would exceed "
            f"{MAX_IDENTIFIER_BYTES} bytes and PostgreSQL would truncate it; rename the table"
        )
    return name
