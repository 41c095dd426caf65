"""Reading a session binding from HTTP request headers, validated before it reaches SQL.

Framework-neutral: works on a WSGI ``environ`` (``HTTP_*`` keys). Used by
:class:`cowsync.pool.wsgi.CowMiddleware`; integrations can reuse it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..binding import Binding
from ..config import validate_id
from ..errors import ConfigurationError

SESSION_HEADER = "X-Cow-Session-Id"
OPERATION_HEADER = "X-Cow-Operation-Id"
VISIBLE_OPERATIONS_HEADER = "X-Cow-Visible-Operations"

# Far above any real list of operations, low enough that a hostile header costs nothing.
MAX_VISIBLE_OPERATIONS = 1000


class HeaderError(ConfigurationError):
    """A COW header is malformed; ``header`` names it and the message says why."""

    def __init__(self, header: str, message: str) -> None:
        super().__init__(f"{header}: {message}")
        self.header = header


@dataclass(frozen=True)
class HeaderNames:
    """The request headers that carry the session, the operation and the preview."""

    session: str = SESSION_HEADER
    operation: str = OPERATION_HEADER
    visible_operations: str = VISIBLE_OPERATIONS_HEADER

    def __post_init__(self) -> None:
        for name in (self.session, self.operation, self.visible_operations):
            if not name or not all(c.isascii() and (c.isalnum() or c == "-") for c in name):
                raise ConfigurationError(
                    f"header name {name!r} must be letters, digits and dashes "
                    "(e.g. X-Cow-Session-Id)"
                )
        keys = {environ_key(n) for n in (self.session, self.operation, self.visible_operations)}
        if len(keys) != 3:
            raise ConfigurationError("the three COW header names must be distinct")


def environ_key(header: str) -> str:
    """The WSGI environ key of a header: ``X-Cow-Session-Id`` -> ``HTTP_X_COW_SESSION_ID``."""
    return "HTTP_" + header.upper().replace("-", "_")


def binding_from_environ(
    environ: Mapping[str, Any], names: HeaderNames = HeaderNames()
) -> Binding | None:
    """The binding the request's headers ask for, or None when they name no session.

    Raises :class:`HeaderError` for a malformed value (length, characters), an
    operation or preview without a session, or an empty entry in the preview list.
    An empty header counts as absent.
    """
    session = _header(environ, names.session)
    operation = _header(environ, names.operation)
    visible = _header(environ, names.visible_operations)
    if session is None:
        for header, value in ((names.operation, operation), (names.visible_operations, visible)):
            if value is not None:
                raise HeaderError(header, f"needs a {names.session} header as well")
        return None
    _check(names.session, session, "session id")
    if operation is not None:
        _check(names.operation, operation, "operation id")
    visible_operations = None
    if visible is not None:
        parts = [part.strip() for part in visible.split(",")]
        if len(parts) > MAX_VISIBLE_OPERATIONS:
            raise HeaderError(
                names.visible_operations,
                f"lists {len(parts)} operations; the limit is {MAX_VISIBLE_OPERATIONS}",
            )
        for part in parts:
            if not part:
                raise HeaderError(
                    names.visible_operations, "is a comma-separated list with an empty entry"
                )
            _check(names.visible_operations, part, "operation id")
        visible_operations = tuple(parts)
    return Binding(session, operation, visible_operations)


def _header(environ: Mapping[str, Any], header: str) -> str | None:
    value = environ.get(environ_key(header))
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _check(header: str, value: str, what: str) -> None:
    try:
        validate_id(value, what)
    except ConfigurationError as exc:
        raise HeaderError(header, str(exc)) from None
