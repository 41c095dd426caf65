"""cowsync: copy-on-write sandboxes for AI agents inside a real PostgreSQL database.

Sync, psycopg 3 native. Every function takes a :class:`psycopg.Connection` first.

>>> import cowsync                               # doctest: +SKIP
>>> cowsync.deploy(conn)                         # doctest: +SKIP
>>> cowsync.enable(conn, "items")                # doctest: +SKIP
>>> with cowsync.session(conn, "run-1"):         # doctest: +SKIP
...     conn.execute("UPDATE items SET qty = 0")
"""

from .apply import CommitResult, Conflict, DiscardResult, close_operations, commit, discard
from .binding import Binding, bind, current_binding, new_session_id, session, unbound
from .config import CowConfig
from .ddl import alter, refresh, truncate
from .errors import (
    SEALED_SQLSTATE,
    CommitError,
    ConfigurationError,
    ConflictError,
    CowError,
    DependencyError,
    InvalidNameError,
    NotDeployedError,
    NotEnabledError,
    PendingChangesError,
    SessionBusyError,
    SessionNotFoundError,
    StaleReviewError,
    UnsupportedTableError,
)
from .hardening import HardeningIssue, check_hardening, harden, unharden
from .install import (
    ENGINE_VERSION,
    DeployResult,
    DisableSchemaResult,
    EnableSchemaResult,
    TableStatus,
    deploy,
    disable,
    disable_schema,
    enable,
    enable_schema,
    status,
)
from .reaping import Reaped, reap
from .retrying import retry_serialization_failures
from .review_token import ReviewDrift, ReviewToken
from .reviewing import (
    OperationInfo,
    Review,
    RowChange,
    SessionInfo,
    annotate,
    dependencies,
    diff,
    operations,
    review,
    sessions,
)
from .sealing import is_sealed, seal, unseal

__version__ = "0.1.0"

__all__ = [
    "ENGINE_VERSION",
    "SEALED_SQLSTATE",
    "Binding",
    "CommitError",
    "CommitResult",
    "ConfigurationError",
    "Conflict",
    "ConflictError",
    "CowConfig",
    "CowError",
    "DependencyError",
    "DeployResult",
    "DisableSchemaResult",
    "DiscardResult",
    "EnableSchemaResult",
    "HardeningIssue",
    "InvalidNameError",
    "NotDeployedError",
    "NotEnabledError",
    "OperationInfo",
    "PendingChangesError",
    "Reaped",
    "Review",
    "ReviewDrift",
    "ReviewToken",
    "RowChange",
    "SessionBusyError",
    "SessionInfo",
    "SessionNotFoundError",
    "StaleReviewError",
    "TableStatus",
    "UnsupportedTableError",
    "alter",
    "annotate",
    "bind",
    "check_hardening",
    "close_operations",
    "commit",
    "current_binding",
    "dependencies",
    "deploy",
    "diff",
    "disable",
    "disable_schema",
    "discard",
    "enable",
    "enable_schema",
    "harden",
    "is_sealed",
    "new_session_id",
    "operations",
    "reap",
    "refresh",
    "retry_serialization_failures",
    "review",
    "seal",
    "session",
    "sessions",
    "status",
    "truncate",
    "unbound",
    "unharden",
    "unseal",
]
