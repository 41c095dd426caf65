"""The ``COWSYNC_*`` configuration keys of a Flask app, with their defaults, read and checked once.

Every key is set on ``app.config`` with ``setdefault`` when the extension is registered, so
``app.config`` shows the values in force. A wrong type or value raises
:class:`cowsync.ConfigurationError` naming the key, when the app is set up rather than at its
first request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...config import DEFAULT_CONFIG, CowConfig
from ...errors import ConfigurationError
from ...pool import CowPool
from ...pool.headers import (
    OPERATION_HEADER,
    SESSION_HEADER,
    VISIBLE_OPERATIONS_HEADER,
    HeaderNames,
)

PREFIX = "COWSYNC_"

# authorize(request, session_id) -> bool; the request is flask.request.
Authorize = Callable[[Any, str], bool]
# operation_id(request) -> str, for COWSYNC_OPERATION_PER_REQUEST given as a callable.
OperationIdFactory = Callable[[Any], str]

DEFAULTS: dict[str, Any] = {
    # Where the pool connects: a postgresql:// URL or libpq string. None: the URL of the
    # SQLAlchemy engine bound to the app, if any.
    "COWSYNC_DATABASE_URL": None,
    # An existing cowsync.pool.CowPool to use instead of creating one (the app does not close it).
    "COWSYNC_POOL": None,
    "COWSYNC_POOL_MIN_SIZE": 4,
    "COWSYNC_POOL_MAX_SIZE": None,
    "COWSYNC_POOL_TIMEOUT": 30.0,
    # Keyword arguments of psycopg.connect for the pool's connections, e.g. {"autocommit": True}.
    "COWSYNC_POOL_KWARGS": {},
    # The names of the COW variables: the CowConfig the engine was deployed with.
    "COWSYNC_CONFIG": DEFAULT_CONFIG,
    "COWSYNC_SESSION_HEADER": SESSION_HEADER,
    "COWSYNC_OPERATION_HEADER": OPERATION_HEADER,
    "COWSYNC_VISIBLE_OPERATIONS_HEADER": VISIBLE_OPERATIONS_HEADER,
    # authorize(request, session_id) -> bool; False answers 403. None: every session is allowed.
    "COWSYNC_AUTHORIZE": None,
    # True (or a callable request -> operation id): a request that names a session but no
    # operation becomes an operation of its own.
    "COWSYNC_OPERATION_PER_REQUEST": False,
    # State the COW variables inside every transaction (pgbouncer in transaction mode).
    "COWSYNC_TRANSACTION_LOCAL": False,
    # Bind the engines of Flask-SQLAlchemy when the app uses it.
    "COWSYNC_BIND_SQLALCHEMY": True,
    # Clear the variables when SQLAlchemy gets back a connection that was handed out unbound
    # too (one round trip per checkin), so a hand-made SET never outlives its checkout.
    "COWSYNC_SQLALCHEMY_CLEAR_UNBOUND": True,
}


@dataclass(frozen=True)
class FlaskSettings:
    """One app's cowsync configuration, checked (see the module docstring for the keys)."""

    database_url: str | None = None
    pool: CowPool[Any] | None = None
    pool_min_size: int = 4
    pool_max_size: int | None = None
    pool_timeout: float = 30.0
    pool_kwargs: Mapping[str, Any] = field(default_factory=dict)
    config: CowConfig = DEFAULT_CONFIG
    headers: HeaderNames = field(default_factory=HeaderNames)
    authorize: Authorize | None = None
    operation_per_request: bool | OperationIdFactory = False
    transaction_local: bool = False
    bind_sqlalchemy: bool = True
    sqlalchemy_clear_unbound: bool = True

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FlaskSettings:
        """Read and check the ``COWSYNC_*`` keys of ``config`` (a Flask ``app.config``)."""
        pool = config["COWSYNC_POOL"]
        if pool is not None and not isinstance(pool, CowPool):
            raise _wrong("COWSYNC_POOL", "a cowsync.pool.CowPool", pool)
        cow_config = config["COWSYNC_CONFIG"]
        if not isinstance(cow_config, CowConfig):
            raise _wrong("COWSYNC_CONFIG", "a cowsync.CowConfig", cow_config)
        if pool is not None and pool.config != cow_config:
            raise ConfigurationError(
                "COWSYNC_POOL was built with another CowConfig than COWSYNC_CONFIG; "
                "give both the config the engine was deployed with"
            )
        transaction_local = _flag(config, "COWSYNC_TRANSACTION_LOCAL")
        if pool is not None and pool.transaction_local != transaction_local:
            raise ConfigurationError(
                f"COWSYNC_TRANSACTION_LOCAL is {transaction_local} but COWSYNC_POOL was built "
                f"with transaction_local={pool.transaction_local}; make them agree"
            )
        try:
            headers = HeaderNames(
                config["COWSYNC_SESSION_HEADER"],
                config["COWSYNC_OPERATION_HEADER"],
                config["COWSYNC_VISIBLE_OPERATIONS_HEADER"],
            )
        except ConfigurationError as exc:
            raise ConfigurationError(f"COWSYNC_*_HEADER: {exc}") from None
        authorize = config["COWSYNC_AUTHORIZE"]
        if authorize is not None and not callable(authorize):
            raise _wrong("COWSYNC_AUTHORIZE", "a callable (request, session_id) -> bool", authorize)
        per_request = config["COWSYNC_OPERATION_PER_REQUEST"]
        if not (isinstance(per_request, bool) or callable(per_request)):
            raise _wrong(
                "COWSYNC_OPERATION_PER_REQUEST",
                "True, False or a callable request -> str",
                per_request,
            )
        database_url = config["COWSYNC_DATABASE_URL"]
        if database_url is not None and not isinstance(database_url, str):
            raise _wrong("COWSYNC_DATABASE_URL", "a string", database_url)
        pool_kwargs = config["COWSYNC_POOL_KWARGS"]
        if not isinstance(pool_kwargs, Mapping):
            raise _wrong("COWSYNC_POOL_KWARGS", "a dict of psycopg.connect arguments", pool_kwargs)
        min_size = _integer(config, "COWSYNC_POOL_MIN_SIZE", minimum=0)
        max_size = config["COWSYNC_POOL_MAX_SIZE"]
        if max_size is not None:
            max_size = _integer(config, "COWSYNC_POOL_MAX_SIZE", minimum=max(min_size, 1))
        timeout = config["COWSYNC_POOL_TIMEOUT"]
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise _wrong("COWSYNC_POOL_TIMEOUT", "a number of seconds above 0", timeout)
        return cls(
            database_url=database_url,
            pool=pool,
            pool_min_size=min_size,
            pool_max_size=max_size,
            pool_timeout=float(timeout),
            pool_kwargs=dict(pool_kwargs),
            config=cow_config,
            headers=headers,
            authorize=authorize,
            operation_per_request=per_request,
            transaction_local=transaction_local,
            bind_sqlalchemy=_flag(config, "COWSYNC_BIND_SQLALCHEMY"),
            sqlalchemy_clear_unbound=_flag(config, "COWSYNC_SQLALCHEMY_CLEAR_UNBOUND"),
        )


def _wrong(key: str, expected: str, value: object) -> ConfigurationError:
    return ConfigurationError(f"{key} must be {expected}, got {value!r}")


def _flag(config: Mapping[str, Any], key: str) -> bool:
    value = config[key]
    if not isinstance(value, bool):
        raise _wrong(key, "True or False", value)
    return value


def _integer(config: Mapping[str, Any], key: str, *, minimum: int) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _wrong(key, f"an integer of at least {minimum}", value)
    return value
