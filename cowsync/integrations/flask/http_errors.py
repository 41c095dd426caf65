"""The HTTP errors a request gets when its cowsync headers cannot be honoured.

Both are werkzeug ``HTTPException`` subclasses, raised before the view runs: Flask turns them
into responses, and an app that renders its errors itself (JSON APIs) catches them with
``@app.errorhandler(CowHeaderError)`` or ``@app.errorhandler(400)``. By default the body is
one line of plain text that says what is wrong.
"""

from __future__ import annotations

from typing import Any

from werkzeug.exceptions import BadRequest, Forbidden

from ...pool.headers import HeaderError

_PLAIN_TEXT = [
    ("Content-Type", "text/plain; charset=utf-8"),
    ("X-Content-Type-Options", "nosniff"),
]


class CowHeaderError(BadRequest):
    """400: a cowsync header is malformed; ``header`` names it, ``description`` says why."""

    def __init__(self, error: HeaderError) -> None:
        super().__init__(description=str(error))
        self.header = error.header

    def get_body(self, environ: Any = None, scope: Any = None) -> str:
        """The description, as one line of plain text."""
        return f"{self.description}\n"

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        """Plain-text headers (never sniffed as HTML)."""
        return list(_PLAIN_TEXT)


class CowSessionForbidden(Forbidden):
    """403: the authorize callable refused the session the request names (``session_id``)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(description=f"session {session_id!r} is not available to this request")
        self.session_id = session_id

    def get_body(self, environ: Any = None, scope: Any = None) -> str:
        """The description, as one line of plain text."""
        return f"{self.description}\n"

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        """Plain-text headers (never sniffed as HTML)."""
        return list(_PLAIN_TEXT)
