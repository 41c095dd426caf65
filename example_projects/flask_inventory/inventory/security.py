"""Who may work in a session: the agent, and only with its token.

cowsync calls ``authorize(request, session_id)`` for every request that names a session
(``X-Cow-Session-Id``) before the view runs; False answers 403. Here one shared token
(``AGENT_TOKEN``) stands for a real check such as "this API key owns that agent run".
With no token configured (local development) every session is allowed.
"""

from __future__ import annotations

import hmac

from flask import Request, current_app


def authorize(request: Request, session_id: str) -> bool:
    """True when the request carries the agent's token (or no token is configured)."""
    expected = current_app.config.get("AGENT_TOKEN")
    if not expected:
        return True
    given = request.headers.get("X-Agent-Token", "")
    return hmac.compare_digest(given.encode(), expected.encode())
