"""``CowSessionMiddleware``: each request runs in the session its headers name.

    MIDDLEWARE = [
        "cowsync.integrations.django.middleware.CowSessionMiddleware",  # first, or early
        ...
    ]

With ``X-Cow-Session-Id: S`` (and optionally ``X-Cow-Operation-Id: OP``) every query
the request makes through a cowsync database runs in session S, including the queries of
a streaming response's body. Without the header the request runs against production.

* A malformed header gets ``400`` with a JSON body naming the header and the problem; it
  never reaches SQL.
* ``COWSYNC["AUTHORIZE"]`` (``callable(request, session_id) -> bool``) refuses a session
  with ``403``; the view never runs.
* ``COWSYNC["OPERATION_PER_REQUEST"]`` gives each request that names a session but no
  operation an operation id of its own, so every request is one reviewable step.

Bound responses carry the session and operation back in the same headers. Subclass and
override :meth:`CowSessionMiddleware.get_binding` or :meth:`authorize` to take the
session from somewhere else (a token, the user).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase, JsonResponse

from ...binding import Binding, bind
from ...pool.headers import HeaderError, binding_from_environ
from .conf import CowSettings, cow_settings


class CowSessionMiddleware:
    """Bind each request to the cowsync session named by its headers (sync and async)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    # -- hooks ---------------------------------------------------------------------------

    def get_binding(self, request: HttpRequest, settings: CowSettings) -> Binding | None:
        """The binding the request asks for, or None; raises HeaderError for bad headers."""
        return binding_from_environ(request.META, settings.headers)

    def authorize(self, request: HttpRequest, session_id: str, settings: CowSettings) -> bool:
        """May this request use ``session_id``? ``COWSYNC["AUTHORIZE"]`` decides (default: yes)."""
        if settings.authorize is None:
            return True
        return bool(settings.authorize(request, session_id))

    # -- request handling ----------------------------------------------------------------

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        decided = self._decide(request)
        if isinstance(decided, HttpResponseBase):
            return decided
        if decided is None:
            return self.get_response(request)
        with bind(decided.session_id, decided.operation_id, decided.visible_operations):
            response = self.get_response(request)
        return _finish(response, decided)

    async def __acall__(self, request: HttpRequest) -> Any:
        decided = self._decide(request)
        if isinstance(decided, HttpResponseBase):
            return decided
        if decided is None:
            return await self.get_response(request)
        with bind(decided.session_id, decided.operation_id, decided.visible_operations):
            response = await self.get_response(request)
        return _finish(response, decided)

    def _decide(self, request: HttpRequest) -> Binding | HttpResponseBase | None:
        """The binding for the request, an error response, or None (production)."""
        settings = cow_settings()
        try:
            binding = self.get_binding(request, settings)
        except HeaderError as exc:
            return JsonResponse(
                {"error": "invalid_cow_header", "header": exc.header, "detail": str(exc)},
                status=400,
            )
        if binding is None:
            return None
        if not self.authorize(request, binding.session_id, settings):
            return JsonResponse(
                {
                    "error": "cow_session_forbidden",
                    "session_id": binding.session_id,
                    "detail": f"session {binding.session_id!r} is not available to this request",
                },
                status=403,
            )
        if binding.operation_id is None and not binding.visible_operations:
            operation = settings.new_operation_id(request)
            if operation is not None:
                binding = Binding(binding.session_id, operation, None)
        request.cow_binding = binding
        return binding


def _finish(response: Any, binding: Binding) -> Any:
    """Tell the client where its writes went; keep a streamed body in the session."""
    names = cow_settings().headers
    response[names.session] = binding.session_id
    if binding.operation_id:
        response[names.operation] = binding.operation_id
    if getattr(response, "streaming", False):
        # The body is produced after the middleware returns: each chunk is made inside
        # the binding again, so its queries still run in the session.
        content = response.streaming_content
        if hasattr(content, "__aiter__"):
            response.streaming_content = _bound_async(content, binding)
        else:
            response.streaming_content = _bound_sync(content, binding)
    return response


def _scope(binding: Binding) -> bind:
    return bind(binding.session_id, binding.operation_id, binding.visible_operations)


def _bound_sync(content: Any, binding: Binding) -> Iterator[Any]:
    iterator = iter(content)
    while True:
        with _scope(binding):
            try:
                chunk = next(iterator)
            except StopIteration:
                return
        yield chunk


async def _bound_async(content: Any, binding: Binding) -> AsyncIterator[Any]:
    iterator = content.__aiter__()
    while True:
        with _scope(binding):
            try:
                chunk = await iterator.__anext__()
            except StopAsyncIteration:
                return
        yield chunk
