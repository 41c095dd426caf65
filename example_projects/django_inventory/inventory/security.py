"""Who may use which session over HTTP (``COWSYNC["AUTHORIZE"]``)."""

from django.http import HttpRequest


def may_use_session(request: HttpRequest, session_id: str) -> bool:
    """Agents name their sessions ``agent-...``; anything else is refused with 403.

    A real project would check the caller too (an API token bound to the session).
    """
    return session_id.startswith("agent-")
