"""Overlay mode, binding side: a bound connection looks in the overlay schemas first.

In overlay mode a table keeps its name and schema (``public.items``, which production
uses directly) and the view that shows a session's changes lives in an overlay schema
(``public_cow.items``; see :meth:`cowsync.CowConfig.overlay_schema_for`). A connection
bound to a session puts the overlay schemas first on its ``search_path``, so the
unqualified name ``items`` resolves to the view; unbinding gives the path back.

Both moves are select-list items that join the statement setting the COW variables
(:func:`cowsync.binding.settings_query`), with the same ``local`` flag, so they cost no
round trip of their own and a rollback that undoes one undoes the other:

* **bind** first saves the path the connection had before any binding in the custom
  setting ``cowsync.unbound_search_path`` (a value already saved is kept, so binding a
  bound connection again does not save its overlay path), puts that path back, then sets
  ``search_path`` to the overlay schema of each schema of
  ``pg_catalog.current_schemas(false)``, in that order, that exists, followed by the
  saved path. A database with no overlay schema keeps its path unchanged.
* **unbind** sets ``search_path`` back to the saved path (if one was saved) and clears
  ``cowsync.unbound_search_path``.

PostgreSQL evaluates a select list left to right, so the save comes before the path
changes. The overlay schema of each source schema is computed on the server from
parameters (the explicit pairs of ``CowConfig.overlay_schemas`` as two ``text[]``, the
suffix as ``text``): no schema name is ever part of the statement text. Only built-in
functions are called, fully qualified, so the statement works on a database where the
engine is not deployed.

A ``SET search_path`` the application runs while bound lasts until the next binding
statement: binding again starts from the saved path, and unbinding restores it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from psycopg import sql

from .config import CowConfig

#: The custom setting that holds a bound connection's search_path from before the binding.
UNBOUND_SEARCH_PATH = "cowsync.unbound_search_path"

#: What a binding statement does to search_path.
PathAction = Literal["bind", "unbind"]

# Every operator is named with OPERATOR(pg_catalog.x) (NULLIF would look "=" up on the
# caller's search_path, where a look-alike may come before pg_catalog).


def _non_empty(value: sql.Composable) -> sql.Composed:
    """``value``, or NULL when it is ''."""
    return sql.SQL("CASE WHEN {0} OPERATOR(pg_catalog.<>) '' THEN {0} END").format(value)


# The saved path, or the current one when nothing is saved.
_SAVED_OR_CURRENT = sql.SQL("COALESCE({}, pg_catalog.current_setting('search_path'))").format(
    _non_empty(
        sql.SQL("pg_catalog.current_setting({}, true)").format(sql.Literal(UNBOUND_SEARCH_PATH))
    )
)

# The overlay schemas of the schemas on the current path that exist, quoted, in path order,
# each once; NULL when there are none. {sources} and {overlays} are the explicit pairs,
# {suffix} names the overlay of any other schema.
_OVERLAY_SCHEMAS = sql.SQL(
    "(SELECT pg_catalog.string_agg(pg_catalog.quote_ident(o.overlay), ', ' ORDER BY o.ord) "
    "FROM (SELECT x.overlay, pg_catalog.min(x.ord) AS ord "
    "FROM (SELECT COALESCE("
    "(SELECT m.overlay FROM ROWS FROM (pg_catalog.unnest({sources}::pg_catalog.text[]), "
    "pg_catalog.unnest({overlays}::pg_catalog.text[])) AS m(source, overlay) "
    "WHERE m.source OPERATOR(pg_catalog.=) s.source::pg_catalog.text), "
    "pg_catalog.concat(s.source, {suffix}::pg_catalog.text)) AS overlay, s.ord "
    "FROM pg_catalog.unnest(pg_catalog.current_schemas(false)) WITH ORDINALITY AS s(source, ord)"
    ") AS x "
    "WHERE EXISTS (SELECT FROM pg_catalog.pg_namespace AS n "
    "WHERE n.nspname::pg_catalog.text OPERATOR(pg_catalog.=) x.overlay) "
    "GROUP BY x.overlay) AS o)"
)


def _set(name: str | sql.Composable, value: sql.Composable, local: bool) -> sql.Composed:
    setting = sql.Literal(name) if isinstance(name, str) else name
    return sql.SQL("pg_catalog.set_config({}, {}, {})").format(setting, value, sql.Literal(local))


@dataclass(frozen=True)
class OverlayNaming:
    """How the overlay schema of each source schema is named: the statement's parameters.

    >>> OverlayNaming.of(CowConfig(overlay_schemas={"public": "sandbox"})).params
    [['public'], ['sandbox'], '_cow']
    """

    sources: tuple[str, ...]
    overlays: tuple[str, ...]
    suffix: str

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def of(config: CowConfig) -> OverlayNaming:
        """The naming ``config`` describes (``overlay_schemas`` pairs, ``overlay_suffix``)."""
        pairs = config.overlay_schemas
        return OverlayNaming(
            tuple(source for source, _ in pairs),
            tuple(overlay for _, overlay in pairs),
            config.overlay_suffix,
        )

    @property
    def params(self) -> list[object]:
        """The parameters of :func:`bind_items`, for a psycopg cursor."""
        return [list(self.sources), list(self.overlays), self.suffix]

    @functools.cached_property
    def wire_params(self) -> list[bytes]:
        """The same as text-format parameters for libpq's ``send_query_params``."""
        return [
            _text_array(self.sources).encode(),
            _text_array(self.overlays).encode(),
            self.suffix.encode(),
        ]


def _text_array(values: Iterable[str]) -> str:
    """A PostgreSQL array literal of ``values``, every element quoted."""
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def bind_items(local: bool, placeholder: Callable[[], sql.Composable]) -> list[sql.Composed]:
    """The select-list items that put the overlay schemas first on ``search_path``.

    ``placeholder()`` makes the next parameter's placeholder; the items take three, in
    the order of :attr:`OverlayNaming.params`.
    """
    saved = sql.Literal(UNBOUND_SEARCH_PATH)
    overlays = _OVERLAY_SCHEMAS.format(
        sources=placeholder(), overlays=placeholder(), suffix=placeholder()
    )
    saved_path = sql.SQL("pg_catalog.current_setting({})").format(saved)
    return [
        _set(UNBOUND_SEARCH_PATH, _SAVED_OR_CURRENT, local),
        # Start from the unbound path, so that binding a bound connection again does not
        # look for overlays of its overlay schemas.
        _set("search_path", saved_path, local),
        _set(
            "search_path",
            sql.SQL("pg_catalog.concat_ws(', ', {}, {})").format(overlays, _non_empty(saved_path)),
            local,
        ),
    ]


def unbind_items(local: bool) -> list[sql.Composed]:
    """The select-list items that give back the saved ``search_path``; no parameters."""
    return [
        _set("search_path", _SAVED_OR_CURRENT, local),
        _set(UNBOUND_SEARCH_PATH, sql.Literal(""), local),
    ]


def path_items(
    action: PathAction | None, local: bool, placeholder: Callable[[], sql.Composable]
) -> list[sql.Composed]:
    """:func:`bind_items`, :func:`unbind_items` or nothing (``action`` None)."""
    if action == "bind":
        return bind_items(local, placeholder)
    if action == "unbind":
        return unbind_items(local)
    return []
