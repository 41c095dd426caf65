"""The schema editor: migrations keep working on enabled tables.

Each statement Django's PostgreSQL schema editor runs goes through
:func:`.ddl_routing.route`. A change to an enabled table is applied to its base with
:func:`cowsync.alter`, which rebuilds the view and the change store's trigger in the same
transaction and keeps the sessions' rows (renamed and retyped columns keep their values).
A change that would lose session rows (dropping a column they hold, changing the key,
renaming or deleting the model while sessions hold changes) is refused with
:class:`cowsync.PendingChangesError`, naming the sessions: commit or discard them, then
migrate again.

Statements that do not name an enabled table directly but change what one is built from
(a foreign key into it from a new table, an index on its base from ``RunSQL``) are
followed by :func:`cowsync.refresh` of the tables they changed.
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.db.backends.postgresql.schema import DatabaseSchemaEditor as PostgresSchemaEditor

from ... import ddl, install
from ...binding import unbound
from ...errors import ConfigurationError, PendingChangesError
from .ddl_routing import Plan, route, split_statements
from .relations import EnabledRelation, enabled_relations, fingerprints


class DatabaseSchemaEditor(PostgresSchemaEditor):  # type: ignore[misc]
    """Django's PostgreSQL schema editor, routing DDL on enabled tables through cowsync."""

    def execute(self, sql: Any, params: Any = ()) -> None:
        """Run one (possibly compound) DDL statement, routed for enabled tables."""
        if params is not None:
            # As Django's PostgreSQL editor does: merge parameters client-side, so the
            # statement text is complete before it is routed.
            sql = self.connection.ops.compose_sql(str(sql), params)
        text = str(sql)
        if self.collect_sql:
            super().execute(text, None)
            return
        # DDL is never sandboxed: run it unbound whatever the caller's context.
        with unbound():
            conn = self._psycopg_connection()
            relations = enabled_relations(conn)
            if not relations:
                super().execute(text, None)
                return
            for statement in split_statements(text):
                self._run(conn, route(statement, relations))
                relations = enabled_relations(conn)

    def _psycopg_connection(self) -> psycopg.Connection[Any]:
        self.connection.ensure_connection()
        return self.connection.connection  # type: ignore[no-any-return]

    def _run(self, conn: psycopg.Connection[Any], plan: Plan) -> None:
        if plan.refused is not None:
            raise ConfigurationError(plan.refused)
        if plan.alter is not None:
            relation, actions = plan.alter
            ddl.alter(conn, relation.label, actions)
            return
        if plan.rename is not None:
            self._rename(conn, *plan.rename)
            return
        for relation in plan.disable:
            self._disable(conn, relation, "delete its model (DROP TABLE)")
        assert plan.statement is not None
        before = fingerprints(conn)
        super().execute(plan.statement, None)
        for statement in plan.also:
            super().execute(statement, None)
        after = fingerprints(conn)
        for key, print_ in after.items():
            if before.get(key) != print_:
                ddl.refresh(conn, key)

    def _rename(
        self, conn: psycopg.Connection[Any], relation: EnabledRelation, new: str, statement: str
    ) -> None:
        # The engine keeps a table's derived names (base, change store) in step with its
        # own; renaming goes through a disabled table, so it needs no pending changes.
        self._disable(conn, relation, f"rename it to {new!r}")
        super().execute(statement, None)
        install.enable(conn, (relation.schema, new))

    def _disable(self, conn: psycopg.Connection[Any], relation: EnabledRelation, what: str) -> None:
        try:
            install.disable(conn, relation.label)
        except PendingChangesError as exc:
            sessions = exc.sessions.get(relation.label, [])
            raise PendingChangesError(
                f"cannot {what}: {relation.label} is COW-enabled and sessions "
                f"({', '.join(sessions[:5]) or 'some'}) hold changes to it. Commit or discard "
                "them first (manage.py cowsync commit/discard SESSION), then migrate again",
                exc.sessions,
            ) from exc
