"""Database features: what Django may assume about the tables it queries.

PostgreSQL lets a query select any column of a table grouped by its primary key (the
columns depend on the key), and Django uses that to shorten ``GROUP BY`` clauses. A view
has no primary key, so on an enabled table the same query fails (42803). The backend
turns the shortcut off: Django then groups by every selected column, which gives the
same groups. The one cost: a grouped model whose columns have no equality operator
(``json``, ``xml``, ``point``; Django's ``JSONField`` is ``jsonb`` and fine) cannot be
grouped by all its columns.
"""

from __future__ import annotations

from django.db.backends.postgresql.features import DatabaseFeatures as PostgresFeatures


class DatabaseFeatures(PostgresFeatures):  # type: ignore[misc]
    """Django's PostgreSQL features, without grouping by a view's (missing) primary key."""

    allows_group_by_selected_pks = False
