"""Machine-readable output for ``--json``: plain JSON that scripts parse back.

Dates and times are ISO 8601 strings, decimals are strings (no float rounding), sets are
sorted lists, bytes are hex, and dataclasses become objects with their field names.

Strings keep their text readable (``ensure_ascii`` is off: "café" stays "café"), but every
character :func:`cowsync.inert.inert` would escape is written as a JSON ``\\uXXXX`` escape:
``json`` itself escapes only C0 controls, and DEL, C1 controls (``\\u009b`` is a CSI),
bidirectional overrides and invisible characters would otherwise reach a terminal that
shows the JSON. ``json.loads`` gives back the exact values.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import click

from ..inert import inert


def jsonable(value: Any) -> Any:
    """``value`` as JSON-compatible data (dicts, lists, strings, numbers, bools, None)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    # Ranges, network addresses, enums of extensions...: their text form.
    return str(value)


class _JsonEscapes(dict[int, str]):
    """A ``str.translate`` table: characters ``inert`` escapes become JSON escapes.

    Below DEL, ``json.dumps`` has escaped what needs it already (and a backslash there is
    JSON's own). Filled on demand, and bounded.
    """

    def __missing__(self, code: int) -> str:
        char = chr(code)
        escaped = json.dumps(char)[1:-1] if code >= 0x7F and inert(char) != char else char
        if len(self) < 8192:
            self[code] = escaped
        return escaped


_JSON_ESCAPES = _JsonEscapes()


def dumps(value: Any) -> str:
    """JSON text for ``value`` (see :func:`jsonable`), indented for people who look at it.

    Control, bidirectional and invisible characters are ``\\uXXXX`` escapes: safe to print.
    """
    text = json.dumps(jsonable(value), indent=2, ensure_ascii=False)
    if text.isascii() and "\x7f" not in text:
        return text
    # Outside strings JSON text is ASCII, so only string contents are rewritten, and a
    # \uXXXX escape means the same character there.
    return text.translate(_JSON_ESCAPES)


def echo_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout, untouched by any styling."""
    click.echo(dumps(value))
