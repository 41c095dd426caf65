"""Connection pooling with sessions bound on checkout and never leaked.

:class:`CowPool` is a :class:`psycopg_pool.ConnectionPool` that applies the
caller's session binding (:func:`cowsync.bind`, or ``pool.connection(session_id=...)``)
to every connection it hands out and clears it when the connection comes back.
:class:`cowsync.pool.wsgi.CowMiddleware` binds each WSGI request from its headers.
See docs/pool.md for the two modes (session and transaction-local) and their costs.
"""

from .pool import FROM_CONTEXT, CowPool
from .transaction_local import TransactionLocalConnection

__all__ = ["FROM_CONTEXT", "CowPool", "TransactionLocalConnection"]
