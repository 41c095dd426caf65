"""The ``COWSYNC = {...}`` Django setting: its keys, defaults and checks.

Read once and cached; the cache is dropped when the setting changes (``override_settings``
in tests). A wrong type or value raises :class:`cowsync.ConfigurationError` naming the key.

* ``SESSION_HEADER``, ``OPERATION_HEADER``, ``VISIBLE_OPERATIONS_HEADER``: the request
  headers naming the session, the operation and a preview's operations (defaults
  ``X-Cow-Session-Id``, ``X-Cow-Operation-Id``, ``X-Cow-Visible-Operations``).
* ``AUTHORIZE``: ``callable(request, session_id) -> bool`` or its dotted path; False
  answers 403. Default: every session is allowed.
* ``OPERATION_PER_REQUEST``: True, or ``callable(request) -> str`` (or its dotted path): a
  request that names a session but no operation gets an operation of its own.
* ``CONFIG``: the :class:`cowsync.CowConfig` (or a dict of its fields) the engine was
  deployed with.
* ``MODELS``: what ``manage.py cowsync enable`` sandboxes: ``"__all__"``, app labels
  (``"inventory"``) or models (``"inventory.Product"``); ``TABLES``: more tables by name.
* ``ENABLE_AFTER_MIGRATE``: deploy the engine and enable ``MODELS``/``TABLES`` after
  ``migrate``.
* ``MODE``: how ``migrate`` and ``manage.py cowsync enable`` enable them: ``"in-place"``
  (default) or ``"overlay"`` (docs/overlay.md).

See docs/django.md.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from ...config import DEFAULT_CONFIG, CowConfig, validate_id
from ...errors import ConfigurationError
from ...pool.headers import (
    OPERATION_HEADER,
    SESSION_HEADER,
    VISIBLE_OPERATIONS_HEADER,
    HeaderNames,
)

SETTING = "COWSYNC"
ALL = "__all__"

Authorize = Callable[[Any, str], bool]
OperationIdFactory = Callable[[Any], str]

_KEYS = frozenset(
    {
        "SESSION_HEADER",
        "OPERATION_HEADER",
        "VISIBLE_OPERATIONS_HEADER",
        "AUTHORIZE",
        "OPERATION_PER_REQUEST",
        "CONFIG",
        "MODELS",
        "TABLES",
        "ENABLE_AFTER_MIGRATE",
        "MODE",
    }
)


@dataclass(frozen=True)
class CowSettings:
    """The checked ``COWSYNC`` setting (see the module docstring for the keys)."""

    headers: HeaderNames = field(default_factory=HeaderNames)
    authorize: Authorize | None = None
    operation_per_request: bool | OperationIdFactory = False
    config: CowConfig = DEFAULT_CONFIG
    models: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    enable_after_migrate: bool = False
    mode: str | None = None  # None: cowsync.enable's default (in place)

    def new_operation_id(self, request: Any) -> str | None:
        """The operation id a request without one gets, or None when requests do not get one."""
        factory = self.operation_per_request
        if factory is False:
            return None
        if factory is True:
            return f"req-{uuid.uuid4().hex}"
        return validate_id(
            factory(request), f"operation id from {SETTING}['OPERATION_PER_REQUEST']"
        )


def _callable(key: str, value: Any) -> Callable[..., Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportError as exc:
            raise ConfigurationError(f"{SETTING}[{key!r}]: cannot import {value!r}: {exc}") from exc
    if not callable(value):
        raise ConfigurationError(f"{SETTING}[{key!r}] must be a callable or its dotted path")
    return value  # type: ignore[no-any-return]


def _names(key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ConfigurationError(
            f"{SETTING}[{key!r}] must be a list of non-empty strings, got {value!r}"
        )
    return tuple(value)


def _config(value: Any) -> CowConfig:
    if value is None:
        return DEFAULT_CONFIG
    if isinstance(value, CowConfig):
        return value
    if isinstance(value, Mapping):
        known = {f.name for f in fields(CowConfig)}
        unknown = set(value) - known
        if unknown:
            raise ConfigurationError(
                f"{SETTING}['CONFIG'] has unknown keys {sorted(unknown)}; known: {sorted(known)}"
            )
        return CowConfig(**value)
    raise ConfigurationError(f"{SETTING}['CONFIG'] must be a cowsync.CowConfig or a dict")


def parse(raw: Mapping[str, Any] | None) -> CowSettings:
    """Check a ``COWSYNC`` dict and return the settings it describes."""
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"settings.{SETTING} must be a dict, got {type(raw).__name__}")
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigurationError(
            f"settings.{SETTING} has unknown keys {sorted(unknown)}; known: {sorted(_KEYS)}"
        )
    per_request = raw.get("OPERATION_PER_REQUEST", False)
    if not isinstance(per_request, bool):
        per_request = _callable("OPERATION_PER_REQUEST", per_request)
    enable_after_migrate = raw.get("ENABLE_AFTER_MIGRATE", False)
    if not isinstance(enable_after_migrate, bool):
        raise ConfigurationError(f"{SETTING}['ENABLE_AFTER_MIGRATE'] must be True or False")
    mode = raw.get("MODE")
    if mode not in (None, "in-place", "overlay"):
        raise ConfigurationError(f"{SETTING}['MODE'] must be 'in-place' or 'overlay', got {mode!r}")
    return CowSettings(
        headers=HeaderNames(
            raw.get("SESSION_HEADER", SESSION_HEADER),
            raw.get("OPERATION_HEADER", OPERATION_HEADER),
            raw.get("VISIBLE_OPERATIONS_HEADER", VISIBLE_OPERATIONS_HEADER),
        ),
        authorize=_callable("AUTHORIZE", raw.get("AUTHORIZE")),
        operation_per_request=per_request,
        config=_config(raw.get("CONFIG")),
        models=_names("MODELS", raw.get("MODELS")),
        tables=_names("TABLES", raw.get("TABLES")),
        enable_after_migrate=enable_after_migrate,
        mode=mode,
    )


@functools.lru_cache(maxsize=1)
def cow_settings() -> CowSettings:
    """The project's ``COWSYNC`` setting, checked (cached until the setting changes)."""
    return parse(getattr(settings, SETTING, None))


def _forget(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING:
        cow_settings.cache_clear()


setting_changed.connect(_forget, dispatch_uid="cowsync-settings-changed")
