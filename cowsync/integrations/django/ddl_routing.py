"""Deciding what a DDL statement from Django's schema editor means for enabled tables.

An enabled table is a view in front of its base, and PostgreSQL will not ``ALTER``,
index, or reference a view as a table. This module reads the statements Django's
PostgreSQL schema editor writes (always with quoted names) and says, for each, what to
run instead:

* ``ALTER TABLE "items" <actions>`` → ``cowsync.alter(conn, "items", actions)``;
* ``ALTER TABLE "items" RENAME TO "x"`` → rename (disable, rename, enable);
* ``DROP TABLE "items"`` → disable first, then drop;
* ``CREATE [UNIQUE] INDEX … ON "items"`` and ``REFERENCES "items"`` → aimed at the base;
* ``COMMENT ON TABLE/COLUMN "items"…`` → on the base (what ``disable`` gives back) and
  on the view (what users see).

It only parses; :mod:`.schema` executes. String literals are masked before matching, so a
default such as ``'REFERENCES "items"'`` is never rewritten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .relations import EnabledRelation, RelationMap

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_QUALIFIED = rf"{_IDENT}(?:\s*\.\s*{_IDENT})?"
_FLAGS = re.IGNORECASE | re.DOTALL

_ALTER_TABLE = re.compile(
    rf"\A\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<table>{_QUALIFIED})\s+(?P<rest>.*?)\s*\Z",
    _FLAGS,
)
_RENAME_TO = re.compile(rf"\A\s*RENAME\s+TO\s+(?P<new>{_IDENT})\s*\Z", _FLAGS)
_SET_SCHEMA = re.compile(r"\A\s*SET\s+SCHEMA\b", _FLAGS)
_CREATE_INDEX = re.compile(
    rf"\A\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
    rf"(?:(?!ON\b){_IDENT}\s+)?ON\s+(?:ONLY\s+)?(?P<table>{_QUALIFIED})",
    _FLAGS,
)
_DROP_TABLE = re.compile(
    rf"\A\s*DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?P<tables>{_QUALIFIED}(?:\s*,\s*{_QUALIFIED})*)",
    _FLAGS,
)
_COMMENT_TABLE = re.compile(
    rf"\A\s*COMMENT\s+ON\s+(?P<kind>TABLE)\s+(?P<table>{_QUALIFIED})\s+IS\b", _FLAGS
)
_COMMENT_COLUMN = re.compile(
    rf"\A\s*COMMENT\s+ON\s+COLUMN\s+(?P<table>{_QUALIFIED})\s*\.\s*(?P<column>{_IDENT})\s+IS\b",
    _FLAGS,
)
_REFERENCES = re.compile(rf"\bREFERENCES\s+(?P<table>{_QUALIFIED})", _FLAGS)
_IDENT_ONLY = re.compile(_IDENT)


@dataclass(frozen=True)
class Plan:
    """What to run for one statement.

    Exactly one of ``alter``, ``rename`` or ``statement`` says what to do; ``disable``
    lists enabled tables to disable before ``statement`` (a ``DROP TABLE``), ``also``
    statements to run after it.
    """

    statement: str | None = None
    alter: tuple[EnabledRelation, str] | None = None
    rename: tuple[EnabledRelation, str, str] | None = None  # relation, new name, statement
    disable: tuple[EnabledRelation, ...] = ()
    also: tuple[str, ...] = ()
    refused: str | None = None


def quote(name: str) -> str:
    """``name`` as a quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


def qualified_base(relation: EnabledRelation) -> str:
    """The quoted, schema-qualified name of an enabled table's base."""
    return f"{quote(relation.schema)}.{quote(relation.base)}"


def unquote(ident: str) -> str:
    """An identifier as PostgreSQL reads it (quoted: as written; bare: lower-cased)."""
    if ident.startswith('"'):
        return ident[1:-1].replace('""', '"')
    return ident.lower()


def parse_qualified(text: str) -> tuple[str | None, str]:
    """``"s"."t"`` -> ``("s", "t")``; ``"t"`` -> ``(None, "t")``."""
    parts = [unquote(m.group(0)) for m in _IDENT_ONLY.finditer(text)]
    if len(parts) == 1:
        return None, parts[0]
    return parts[0], parts[1]


def mask_literals(text: str) -> str:
    """``text`` with the inside of every string literal (and dollar quote) blanked out.

    Same length as ``text``, so positions found in the mask apply to the original.
    """
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            end = text.find('"', i + 1)
            while end != -1 and end + 1 < n and text[end + 1] == '"':
                end = text.find('"', end + 2)
            i = n if end == -1 else end + 1
        elif ch == "'":
            backslashes = i > 0 and text[i - 1] in "eE" and (i < 2 or not text[i - 2].isalnum())
            j = i + 1
            while j < n:
                if backslashes and text[j] == "\\":
                    j += 2
                    continue
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":
                        j += 2
                        continue
                    break
                j += 1
            for k in range(i + 1, min(j, n)):
                out[k] = " "
            i = j + 1
        elif ch == "$":
            match = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", text[i:])
            if match is None:
                i += 1
                continue
            tag = match.group(0)
            end = text.find(tag, i + len(tag))
            stop = n if end == -1 else end
            for k in range(i + len(tag), stop):
                out[k] = " "
            i = n if end == -1 else end + len(tag)
        else:
            i += 1
    return "".join(out)


def split_statements(text: str) -> list[str]:
    """Split on the semicolons that end statements (not those inside literals or names)."""
    masked = mask_literals(text)
    statements: list[str] = []
    start = 0
    in_ident = False
    for i, ch in enumerate(masked):
        if ch == '"':
            in_ident = not in_ident
        elif ch == ";" and not in_ident:
            statements.append(text[start:i])
            start = i + 1
    statements.append(text[start:])
    return [s.strip() for s in statements if s.strip()]


def _rewrite_references(text: str, relations: RelationMap) -> str:
    """Point ``REFERENCES "items"`` at the base of every enabled table named."""
    masked = mask_literals(text)
    pieces: list[str] = []
    last = 0
    for match in _REFERENCES.finditer(masked):
        relation = relations.find(*parse_qualified(match.group("table")))
        if relation is None:
            continue
        start, end = match.span("table")
        pieces.append(text[last:start])
        pieces.append(qualified_base(relation))
        last = end
    pieces.append(text[last:])
    return "".join(pieces)


def _replace_span(text: str, span: tuple[int, int], replacement: str) -> str:
    return text[: span[0]] + replacement + text[span[1] :]


def route(statement: str, relations: RelationMap) -> Plan:
    """What to run for ``statement`` (one statement, as :func:`split_statements` gives)."""
    masked = mask_literals(statement)

    match = _ALTER_TABLE.match(masked)
    if match is not None:
        relation = relations.find(*parse_qualified(match.group("table")))
        if relation is None:
            return Plan(statement=_rewrite_references(statement, relations))
        rest = statement[match.start("rest") : match.end("rest")]
        masked_rest = masked[match.start("rest") : match.end("rest")]
        rename = _RENAME_TO.match(masked_rest)
        if rename is not None:
            return Plan(rename=(relation, unquote(rename.group("new")), statement))
        if _SET_SCHEMA.match(masked_rest):
            return Plan(
                refused=f"moving the enabled table {relation.label} to another schema is not "
                "supported: disable it (cowsync.disable), move it, and enable it again"
            )
        return Plan(alter=(relation, _rewrite_references(rest, relations)))

    match = _CREATE_INDEX.match(masked)
    if match is not None:
        relation = relations.find(*parse_qualified(match.group("table")))
        if relation is not None:
            statement = _replace_span(statement, match.span("table"), qualified_base(relation))
        return Plan(statement=statement)

    match = _DROP_TABLE.match(masked)
    if match is not None:
        dropped = []
        for name in re.finditer(_QUALIFIED, match.group("tables")):
            relation = relations.find(*parse_qualified(name.group(0)))
            if relation is not None:
                dropped.append(relation)
        return Plan(statement=statement, disable=tuple(dropped))

    match = _COMMENT_TABLE.match(masked)
    if match is not None:
        relation = relations.find(*parse_qualified(match.group("table")))
        if relation is not None:
            on_base = _replace_span(statement, match.span("table"), qualified_base(relation))
            on_view = _replace_span(statement, match.span("kind"), "VIEW")
            return Plan(statement=on_base, also=(on_view,))
        return Plan(statement=statement)

    match = _COMMENT_COLUMN.match(masked)
    if match is not None:
        relation = relations.find(*parse_qualified(match.group("table")))
        if relation is not None:
            on_base = _replace_span(statement, match.span("table"), qualified_base(relation))
            return Plan(statement=on_base, also=(statement,))
        return Plan(statement=statement)

    return Plan(statement=_rewrite_references(statement, relations))
