"""WSGI middleware that binds each request to the session its headers name.

>>> from cowsync.pool.wsgi import CowMiddleware         # doctest: +SKIP
>>> app = CowMiddleware(app, authorize=lambda environ, session_id: True)

Every connection the application takes from a :class:`cowsync.pool.CowPool`
while handling the request, including while the server iterates the response
body and calls its ``close()``, carries the request's session.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from ..binding import Binding, bind
from .headers import (
    OPERATION_HEADER,
    SESSION_HEADER,
    VISIBLE_OPERATIONS_HEADER,
    HeaderError,
    HeaderNames,
    binding_from_environ,
)

Environ = dict[str, Any]
Authorize = Callable[[Environ, str], bool]


class StartResponse(Protocol):
    """The WSGI ``start_response`` callable."""

    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = ..., /
    ) -> Callable[[bytes], object]: ...


WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class CowMiddleware:
    """Bind each request to the session named by its ``X-Cow-*`` headers.

    :param app: the WSGI application to wrap.
    :param session_header, operation_header, visible_operations_header: header
        names (defaults ``X-Cow-Session-Id``, ``X-Cow-Operation-Id``,
        ``X-Cow-Visible-Operations``, what agent-cow's clients send). The preview
        header is a comma-separated list of operation ids.
    :param authorize: ``authorize(environ, session_id) -> bool``, called for every
        request that names a session; ``False`` answers 403 and the application
        never runs.

    A malformed header gets ``400 Bad Request`` with a plain-text body saying which
    header and why; it never reaches SQL. A request without a session header runs
    unbound (or with whatever binding the server's context already had).
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        session_header: str = SESSION_HEADER,
        operation_header: str = OPERATION_HEADER,
        visible_operations_header: str = VISIBLE_OPERATIONS_HEADER,
        authorize: Authorize | None = None,
    ) -> None:
        self.app = app
        self.headers = HeaderNames(session_header, operation_header, visible_operations_header)
        self.authorize = authorize

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            binding = binding_from_environ(environ, self.headers)
        except HeaderError as exc:
            return _plain_text(start_response, "400 Bad Request", f"{exc}\n")
        if binding is None:
            return self.app(environ, start_response)
        if self.authorize is not None and not self.authorize(environ, binding.session_id):
            return _plain_text(
                start_response,
                "403 Forbidden",
                f"session {binding.session_id!r} is not available to this request\n",
            )
        # The request runs in a context of its own: the binding is set there, never in
        # the server's context, so nothing is left behind when the request ends, and
        # every later call into the application (body iteration, close) re-enters it.
        context = contextvars.copy_context()
        context.run(_enter, binding)
        result = context.run(self.app, environ, start_response)
        return _BoundBody(context, result)


def _enter(binding: Binding) -> None:
    # Entered for the life of the request context; the context is discarded after close().
    bind(binding.session_id, binding.operation_id, binding.visible_operations).__enter__()


class _BoundBody:
    """The application's response iterable, consumed inside the request's context."""

    def __init__(self, context: contextvars.Context, body: Iterable[bytes]) -> None:
        self._context = context
        self._body = body
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> _BoundBody:
        return self

    def __next__(self) -> bytes:
        if self._iterator is None:
            self._iterator = self._context.run(iter, self._body)
        return self._context.run(next, self._iterator)

    def close(self) -> None:
        """Close the application's iterable (inside the request's binding), per PEP 3333."""
        close = getattr(self._body, "close", None)
        if close is not None:
            self._context.run(close)


def _plain_text(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    body = text.encode("utf-8")
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("X-Content-Type-Options", "nosniff"),
        ],
    )
    return [body]
