"""cowsync: copy-on-write sandboxes for AI agents inside a real PostgreSQL database.

Sync, psycopg 3 native. Every function takes a :class:`psycopg.Connection` first.

>>> import cowsync                               # doctest: +SKIP
>>> cowsync.deploy(conn)                         # doctest: +SKIP
>>> cowsync.enable(conn, "items")                # doctest: +SKIP
>>> with cowsync.session(conn, "run-1"):         # doctest: +SKIP
...     conn.execute("UPDATE items SET qty = 0")
"""

from .apply import CommitResult, Conflict, DiscardResult, commit, discard
from .binding import Binding, bind, current_binding, new_session_id, session, unbound
from .config import CowConfig
from .errors import (
    CommitError,
    ConfigurationError,
    ConflictError,
    CowError,
    DependencyError,
    InvalidNameError,
    NotDeployedError,
    NotEnabledError,
    PendingChangesError,
    UnsupportedTableError,
)
from .review import (
    OperationInfo,
    RowChange,
    SessionInfo,
    annotate,
    dependencies,
    diff,
    operations,
    sessions,
)
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

__version__ = "0.1.0"

__all__ = [
    "CommitResult",
    "Conflict",
    "DiscardResult",
    "OperationInfo",
    "RowChange",
    "SessionInfo",
    "annotate",
    "commit",
    "dependencies",
    "diff",
    "discard",
    "operations",
    "sessions",
    "ENGINE_VERSION",
    "Binding",
    "CommitError",
    "ConfigurationError",
    "ConflictError",
    "CowConfig",
    "CowError",
    "DependencyError",
    "DeployResult",
    "DisableSchemaResult",
    "EnableSchemaResult",
    "InvalidNameError",
    "NotDeployedError",
    "NotEnabledError",
    "PendingChangesError",
    "TableStatus",
    "UnsupportedTableError",
    "bind",
    "current_binding",
    "deploy",
    "disable",
    "disable_schema",
    "enable",
    "enable_schema",
    "new_session_id",
    "session",
    "status",
    "unbound",
]
