"""Names of the COW variables and other settings shared by the engine and its clients."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ConfigurationError

# A custom setting must be "prefix.name"; keep to plain identifiers so the names
# can be embedded as literals in generated SQL without surprises.
_SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class CowConfig:
    """Names of the PostgreSQL settings that carry the session binding.

    The defaults match agent-cow, so clients that already send its variables keep
    working. The engine embeds these names in the SQL it installs; clients (pools,
    middleware, integrations) must use the same config as :func:`cowsync.deploy`.

    >>> CowConfig().session_variable
    'app.session_id'
    """

    session_variable: str = "app.session_id"
    operation_variable: str = "app.operation_id"
    visible_operations_variable: str = "app.visible_operations"
    default_operation: str = "default"
    #: Overlay mode: the schema holding the views of source schema ``S`` is
    #: ``S + overlay_suffix`` unless ``overlay_schemas`` names another for ``S``
    #: (a mapping, stored as sorted pairs so the config stays hashable).
    overlay_suffix: str = "_cow"
    overlay_schemas: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        pairs = self.overlay_schemas
        if isinstance(pairs, Mapping):
            pairs = tuple(sorted(pairs.items()))
        object.__setattr__(self, "overlay_schemas", tuple(tuple(p) for p in pairs))
        if not self.overlay_suffix or len(self.overlay_suffix) > 20:
            raise ConfigurationError(
                f"CowConfig.overlay_suffix must be 1 to 20 characters, got {self.overlay_suffix!r}"
            )
        for source, overlay in self.overlay_schemas:
            if not source or not overlay or source == overlay:
                raise ConfigurationError(
                    f"CowConfig.overlay_schemas maps {source!r} to {overlay!r}: both must be "
                    "non-empty and differ"
                )
        for field in ("session_variable", "operation_variable", "visible_operations_variable"):
            value = getattr(self, field)
            if not _SETTING_NAME.match(value):
                raise ConfigurationError(
                    f"CowConfig.{field}={value!r} is not a valid custom setting name; "
                    "use a lower-case 'prefix.name' such as 'app.session_id'"
                )
        if (
            len({self.session_variable, self.operation_variable, self.visible_operations_variable})
            != 3
        ):
            raise ConfigurationError("CowConfig variable names must be distinct")
        if not self.default_operation:
            raise ConfigurationError("CowConfig.default_operation must not be empty")

    def overlay_schema_for(self, schema: str) -> str:
        """The overlay schema that holds the views of tables in ``schema``."""
        return dict(self.overlay_schemas).get(schema, schema + self.overlay_suffix)

    @property
    def variables(self) -> tuple[str, str, str]:
        """The three setting names, in (session, operation, visible operations) order."""
        return (self.session_variable, self.operation_variable, self.visible_operations_variable)


DEFAULT_CONFIG = CowConfig()

# Session and operation ids: bounded and printable, checked before they reach SQL.
MAX_ID_LENGTH = 200
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:@+=/-]+$")


def validate_id(value: str, what: str = "session id") -> str:
    """Return ``value`` if it is a usable session/operation id, else raise ConfigurationError."""
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_ID_LENGTH:
        raise ConfigurationError(
            f"{what} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}"
        )
    if not _ID_PATTERN.match(value):
        raise ConfigurationError(
            f"{what} {value!r} contains characters other than letters, digits and _.:@+=/-"
        )
    if "," in value:
        raise ConfigurationError(f"{what} must not contain a comma")
    return value
