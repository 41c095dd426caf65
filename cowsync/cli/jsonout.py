"""Machine-readable output for ``--json``: plain JSON that scripts parse back.

Dates and times are ISO 8601 strings, decimals are strings (no float rounding), sets are
sorted lists, bytes are hex, and dataclasses become objects with their field names.
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


def dumps(value: Any) -> str:
    """JSON text for ``value`` (see :func:`jsonable`), indented for people who look at it."""
    return json.dumps(jsonable(value), indent=2, ensure_ascii=False)


def echo_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout, untouched by any styling."""
    click.echo(dumps(value))
