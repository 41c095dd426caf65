"""``cow_session``: run code outside a request in a session (commands, tasks, shells)."""

from __future__ import annotations

from collections.abc import Iterable

from ...binding import bind


class cow_session(bind):
    """Bind the current context to a session: every query Django sends through a cowsync
    database, on any alias, runs in it until the block ends.

    Usable as a context manager and as a decorator; blocks nest (the previous binding
    comes back on exit), and the binding follows the context into threads started with
    ``contextvars.copy_context()`` and into ``sync_to_async``/``async_to_sync``.

    >>> from cowsync.integrations.django import cow_session       # doctest: +SKIP
    >>> with cow_session("agent-run-42", "restock"):              # doctest: +SKIP
    ...     Stock.objects.filter(quantity__lt=5).update(quantity=F("quantity") + 10)

    >>> @cow_session("nightly-cleanup")                          # doctest: +SKIP
    ... def cleanup(): ...

    ``visible_operations`` binds a read-only preview of the session as if only those
    operations had happened.
    """

    def __init__(
        self,
        session_id: str,
        operation_id: str | None = None,
        *,
        visible_operations: Iterable[str] | None = None,
    ) -> None:
        super().__init__(session_id, operation_id, visible_operations)
