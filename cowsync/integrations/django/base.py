"""The database backend: Django's PostgreSQL backend whose statements carry the bound session.

``DATABASES["default"]["ENGINE"] = "cowsync.integrations.django"``. Everything the stock
backend does keeps working (pools, persistent connections, atomic blocks, named cursors,
test databases); see :mod:`.stating` for how a binding reaches the server and why it
cannot leak.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import base as postgresql

from .cursors import StatingNamedCursor, StatingServerSideCursor, stating_cursor_factory
from .features import DatabaseFeatures
from .introspection import DatabaseIntrospection
from .operations import DatabaseOperations
from .schema import DatabaseSchemaEditor
from .stating import state_of


class DatabaseWrapper(postgresql.DatabaseWrapper):  # type: ignore[misc]
    """Django's PostgreSQL ``DatabaseWrapper`` with cowsync sessions applied per statement."""

    SchemaEditorClass = DatabaseSchemaEditor
    features_class = DatabaseFeatures
    introspection_class = DatabaseIntrospection
    ops_class = DatabaseOperations

    def get_connection_params(self) -> dict[str, Any]:
        """Django's parameters, with a cursor class that states the bound session."""
        params: dict[str, Any] = super().get_connection_params()
        server_side_binding = self.settings_dict["OPTIONS"].get("server_side_binding") is True
        factory = self.settings_dict["OPTIONS"].get("cursor_factory")
        params["cursor_factory"] = stating_cursor_factory(factory, server_side_binding)
        return params

    def create_cursor(self, name: str | None = None) -> Any:
        """Django's cursor; a named one also states the bound session before its DECLARE."""
        cursor = super().create_cursor(name)
        if name:
            # Django builds named cursors itself (not through cursor_factory); the
            # stating classes add methods only, so the object can change class in place.
            if self.settings_dict["OPTIONS"].get("server_side_binding") is True:
                cursor.__class__ = StatingNamedCursor
            else:
                cursor.__class__ = StatingServerSideCursor
        return cursor

    # A rollback drops what the transaction wrote, including a preview materialised in
    # it: forget the preview so the next statement materialises it again.

    def _rollback(self) -> None:
        self._forget_preview()
        super()._rollback()

    def _savepoint_rollback(self, sid: str) -> None:
        self._forget_preview()
        super()._savepoint_rollback(sid)

    def _forget_preview(self) -> None:
        if self.connection is not None:
            state_of(self.connection).forget_preview()
