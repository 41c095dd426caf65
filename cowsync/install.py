"""Installing the engine and enabling/disabling copy-on-write on tables."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from . import catalog, constraints, overlay, render, sqlfiles
from .config import DEFAULT_CONFIG, CowConfig
from .errors import (
    ConfigurationError,
    CowError,
    InvalidNameError,
    NotDeployedError,
    NotEnabledError,
    PendingChangesError,
    UnsupportedTableError,
)
from .hardening_log import forget_after_overlay_disable, retarget_after_disable
from .names import (
    BASE_SUFFIX,
    CHANGES_SUFFIX,
    RESERVED_COLUMN_PREFIX,
    TableName,
    derived_name,
    parse_table_name,
)
from .results import Mode
from .search_path import pinned_search_path

ENGINE_VERSION = 4
# Serialises the first deploy of a database, before cowsync.engine exists ("cows").
_FIRST_DEPLOY_LOCK = 0x636F7773


@dataclass(frozen=True)
class DeployResult:
    """What :func:`deploy` did."""

    version: int
    previous_version: int | None
    changed: bool


@dataclass(frozen=True)
class TableStatus:
    """An enabled table and what sessions hold for it."""

    table: str
    schema: str
    name: str
    base: str
    changes: str
    mode: str
    key_columns: tuple[str, ...]
    engine_version: int
    sessions: int
    pending_rows: int
    # Tables a foreign key links to this one (either way) that are not COW-enabled:
    # a session's writes to them reach production (docs/limitations.md).
    linked_not_enabled: tuple[str, ...] = ()


@dataclass
class EnableSchemaResult:
    """What :func:`enable_schema` enabled, and what it skipped and why."""

    enabled: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class DisableSchemaResult:
    """What :func:`disable_schema` disabled."""

    disabled: list[str] = field(default_factory=list)


def _lock(conn: psycopg.Connection) -> None:
    """Serialise deploy, enable, disable, harden and alter across connections, until the
    transaction ends.

    A lock on the registry's ``cowsync.engine`` table, which only roles holding a
    privilege on it can take (agents hold none), not an advisory lock: any role can take
    an advisory lock's key and keep it while connected. Plain reads of the table do not
    wait. The very first deploy, before the table exists, takes an advisory lock.
    """
    row = conn.execute("SELECT pg_catalog.to_regclass('cowsync.engine') IS NOT NULL").fetchone()
    if row and row[0]:
        conn.execute("LOCK TABLE cowsync.engine IN EXCLUSIVE MODE")
    else:
        conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(%s)", (_FIRST_DEPLOY_LOCK,))


def installed_version(conn: psycopg.Connection) -> int | None:
    """The engine version installed in this database, or None."""
    row = conn.execute("SELECT pg_catalog.to_regclass('cowsync.engine') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    version = conn.execute("SELECT max(version) FROM cowsync.engine").fetchone()
    return None if version is None else version[0]


def is_hardened(conn: psycopg.Connection) -> bool:
    """Whether :func:`cowsync.harden` is in force in this database."""
    row = conn.execute(
        "SELECT value = 'on' FROM cowsync.settings WHERE name = 'hardened'"
    ).fetchone()
    return bool(row and row[0])


def stored_config(conn: psycopg.Connection) -> CowConfig:
    """The CowConfig the engine was deployed with."""
    if installed_version(conn) is None:
        raise NotDeployedError(
            "cowsync is not deployed in this database: call cowsync.deploy(conn)"
        )
    values: dict[str, str] = dict(
        conn.execute("SELECT name, value FROM cowsync.settings").fetchall()
    )
    return CowConfig(
        session_variable=values.get("session_variable", DEFAULT_CONFIG.session_variable),
        operation_variable=values.get("operation_variable", DEFAULT_CONFIG.operation_variable),
        visible_operations_variable=values.get(
            "visible_operations_variable", DEFAULT_CONFIG.visible_operations_variable
        ),
        default_operation=values.get("default_operation", DEFAULT_CONFIG.default_operation),
    )


def deploy(conn: psycopg.Connection, config: CowConfig | None = None) -> DeployResult:
    """Install or upgrade the cowsync engine in the connection's database.

    Idempotent: when the installed engine is current, nothing changes. A newer
    library upgrades the engine in place (registry migrations, then the engine
    functions and every enabled table's view and trigger). The COW variable
    names are fixed at first deploy; passing a different ``config`` later raises
    :class:`ConfigurationError`.

    >>> cowsync.deploy(conn)  # doctest: +SKIP
    DeployResult(version=1, previous_version=None, changed=True)
    """
    with conn.transaction():
        _lock(conn)
        previous = installed_version(conn)
        if previous is not None and previous > ENGINE_VERSION:
            raise ConfigurationError(
                f"this database runs cowsync engine version {previous}, newer than this "
                f"library's {ENGINE_VERSION}: upgrade the cowsync package"
            )
        if previous is not None:
            current = stored_config(conn)
            if config is not None and config != current:
                raise ConfigurationError(
                    f"cowsync is deployed with {current}; redeploying with a different "
                    f"config ({config}) is not supported"
                )
            if previous == ENGINE_VERSION:
                return DeployResult(ENGINE_VERSION, previous, changed=False)
        config = config or DEFAULT_CONFIG
        with pinned_search_path(conn):
            for version, name in sqlfiles.migrations():
                if previous is None or version > previous:
                    conn.execute(sqlfiles.read(name))
            conn.execute(sqlfiles.read("engine_functions.sql"))
            _install_ddl_guard(conn)
            if previous is not None and is_hardened(conn):
                restrict_engine_functions(conn)
        if previous is None:
            conn.cursor().executemany(
                "INSERT INTO cowsync.settings (name, value) VALUES (%s, %s) "
                "ON CONFLICT (name) DO NOTHING",
                [
                    ("session_variable", config.session_variable),
                    ("operation_variable", config.operation_variable),
                    ("visible_operations_variable", config.visible_operations_variable),
                    ("default_operation", config.default_operation),
                ],
            )
        else:
            config = stored_config(conn)
            own_ddl(conn)
            for layout in _layouts(conn):
                _install_table_objects(conn, layout, config, replace=True)
            conn.execute("UPDATE cowsync.tables SET engine_version = %s", (ENGINE_VERSION,))
        conn.execute("INSERT INTO cowsync.engine (version) VALUES (%s)", (ENGINE_VERSION,))
    return DeployResult(ENGINE_VERSION, previous, changed=True)


def restrict_engine_functions(conn: psycopg.Connection) -> None:
    """Functions of the engine: only the owner and reviewers may call them, but everyone
    the two the views call. Applied by harden, and by deploy to the functions an upgrade
    of a hardened database adds (which PostgreSQL makes executable by PUBLIC)."""
    conn.execute("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA cowsync FROM PUBLIC")
    conn.execute("GRANT EXECUTE ON FUNCTION cowsync.current_session(text) TO PUBLIC")
    conn.execute("GRANT EXECUTE ON FUNCTION cowsync.is_agent() TO PUBLIC")
    for (reviewer,) in conn.execute(
        "SELECT role_name FROM cowsync.roles WHERE kind = 'reviewer' ORDER BY 1"
    ).fetchall():
        conn.execute(
            sql.SQL("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA cowsync TO {}").format(
                sql.Identifier(reviewer)
            )
        )


def _install_ddl_guard(conn: psycopg.Connection) -> None:
    """The event trigger that refuses ALTERs which would desynchronise an enabled view.

    Event triggers need a superuser; without one cowsync works unguarded (the docs
    say to use cowsync.alter for schema changes either way).
    """
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if not row or not row[0]:
        return
    conn.execute("DROP EVENT TRIGGER IF EXISTS cowsync_guard_view_ddl")
    conn.execute(
        "CREATE EVENT TRIGGER cowsync_guard_view_ddl ON ddl_command_end "
        "WHEN TAG IN ('ALTER TABLE', 'ALTER VIEW') EXECUTE FUNCTION cowsync.guard_view_ddl()"
    )


def own_ddl(conn: psycopg.Connection) -> None:
    """Mark this transaction's DDL as cowsync's own, which the guard lets through."""
    conn.execute("SELECT pg_catalog.set_config('cowsync.ddl', 'on', true)")


def _require_deployed(conn: psycopg.Connection) -> CowConfig:
    version = installed_version(conn)
    if version is None:
        raise NotDeployedError(
            "cowsync is not deployed in this database: call cowsync.deploy(conn)"
        )
    if version != ENGINE_VERSION:
        raise ConfigurationError(
            f"the database runs cowsync engine version {version} but this library expects "
            f"{ENGINE_VERSION}: call cowsync.deploy(conn) to upgrade"
        )
    return stored_config(conn)


def _registry_row(conn: psycopg.Connection, table: TableName) -> tuple[object, ...] | None:
    """The registry row for a (possibly unqualified) enabled table name."""
    if table.schema is not None:
        return conn.execute(
            "SELECT * FROM cowsync.tables WHERE schema_name = %s AND table_name = %s",
            (table.schema, table.name),
        ).fetchone()
    return conn.execute(
        """
        SELECT t.* FROM pg_catalog.unnest(pg_catalog.current_schemas(false))
                        WITH ORDINALITY AS s(name, pos)
        JOIN cowsync.tables t ON t.schema_name = s.name
        WHERE t.table_name = %s ORDER BY s.pos LIMIT 1
        """,
        (table.name,),
    ).fetchone()


def _build_layout(
    conn: psycopg.Connection,
    registry_id: int,
    schema: str,
    view_name: str,
    base_name: str,
    changes_name: str,
    key_columns: tuple[str, ...],
    key_constraint: str,
    view_schema: str | None = None,
    parent_name: str | None = None,
) -> render.TableLayout:
    """Describe an enabled (or being enabled) table from the catalog as it is now.

    Read with the engine's search_path, so the catalog prints every name in constraint
    and default expressions that is not in pg_catalog schema-qualified: the triggers
    run them with that search_path.
    """
    located = catalog.resolve(conn, TableName(schema, base_name))
    if located is None:
        raise CowError(
            f"the base table {schema}.{base_name} of enabled table {schema}.{view_name} is "
            "missing; the registry is out of step with the catalog"
        )
    oid = located[2]
    with pinned_search_path(conn):
        info = catalog.describe(conn, oid)
        return render.TableLayout(
            registry_id=registry_id,
            schema=schema,
            view_name=view_name,
            base_name=base_name,
            changes_name=changes_name,
            key_columns=key_columns,
            key_constraint=key_constraint,
            columns=tuple(info.columns),
            uniques=tuple(constraints.unique_checks(conn, oid, key_constraint)),
            exclusions=tuple(constraints.exclusion_checks(conn, oid)),
            fks_out=tuple(constraints.foreign_keys_out(conn, oid)),
            fks_in=tuple(constraints.foreign_keys_in(conn, oid)),
            hardened=is_hardened(conn),
            key_operators=constraints.key_operators(conn, oid, key_constraint),
            view_schema=view_schema,
            parent_name=parent_name,
        )


def _layout_from_row(conn: psycopg.Connection, row: tuple[object, ...]) -> render.TableLayout:
    registry_id, schema, name, base, changes, _mode, keys, key_constraint = row[:8]
    view_schema, parent_name = row[10:12]
    return _build_layout(
        conn,
        int(registry_id),  # type: ignore[call-overload]
        str(schema),
        str(name),
        str(base),
        str(changes),
        tuple(keys),  # type: ignore[arg-type]
        str(key_constraint),
        None if view_schema is None else str(view_schema),
        None if parent_name is None else str(parent_name),
    )


def _refresh_triggers(conn: psycopg.Connection, config: CowConfig) -> None:
    """Re-render every enabled table's trigger: the foreign keys a trigger checks point
    at views or tables depending on what else is enabled."""
    for layout in _layouts(conn):
        with pinned_search_path(conn):
            _sync_changes_indexes(conn, layout)
            conn.execute(render.trigger_function(layout, config))
            _sync_fk_checks(conn, layout, config)


def _sync_changes_indexes(conn: psycopg.Connection, layout: render.TableLayout) -> None:
    """Create the change store's check indexes the constraints need now, and drop the
    ones a dropped or changed constraint left behind."""
    wanted = render.changes_indexes(layout)
    existing = conn.execute(
        "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = %s::regclass",
        (layout.changes.as_string(conn),),
    ).fetchall()
    for (name,) in existing:
        match = render.CHECK_INDEX_NAME.fullmatch(name)
        if match and int(match.group(1)) == layout.registry_id and name not in wanted:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(layout.store_schema, name)))
    for statement in wanted.values():
        conn.execute(statement)


def _sync_fk_checks(
    conn: psycopg.Connection, layout: render.TableLayout, config: CowConfig
) -> None:
    """Bring the change store's deferred checks (constraint triggers and their
    function) in line with the deferrable foreign keys and EXCLUDE constraints as they
    are now.

    A trigger whose definition is unchanged is kept, not recreated: dropping a
    trigger with events still pending in this transaction would lose them.
    """
    wanted = {c.name: c for c in render.deferred_checks(layout)}
    function = render.fk_check_function_name(layout.registry_id)
    existing = conn.execute(
        "SELECT t.tgname, t.tgargs FROM pg_trigger t "
        "WHERE t.tgrelid = %s::regclass AND t.tgfoid = pg_catalog.to_regprocedure(%s)",
        (layout.changes.as_string(conn), function.as_string(conn) + "()"),
    ).fetchall()
    kept = set()
    for name, args in existing:
        check = wanted.get(name)
        if check is not None and bytes(args) == check.signature.encode() + b"\0":
            kept.add(name)
            continue
        conn.execute(sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(name), layout.changes))
    if not wanted:
        conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(function))
        return
    conn.execute(render.fk_check_function(layout, config))
    if layout.hardened:  # like every engine function once hardened: not for PUBLIC
        conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(function))
    for name, check in wanted.items():
        if name not in kept:
            conn.execute(render.fk_check_trigger(layout, check))


def _layouts(conn: psycopg.Connection) -> list[render.TableLayout]:
    rows = conn.execute("SELECT * FROM cowsync.tables ORDER BY id").fetchall()
    return [_layout_from_row(conn, row) for row in rows]


def _check_enableable(conn: psycopg.Connection, info: catalog.TableInfo) -> None:
    label = f"{info.schema}.{info.name}"
    kinds = {
        "v": "a view",
        "m": "a materialized view",
        "p": "a partitioned table",
        "f": "a foreign table",
        "S": "a sequence",
        "i": "an index",
        "c": "a type",
    }
    if info.schema == "cowsync":
        raise UnsupportedTableError(f"{label} belongs to the cowsync engine and cannot be enabled")
    if info.relkind != "r":
        raise UnsupportedTableError(
            f"{label} is {kinds.get(info.relkind, 'not a plain table')}; "
            "cowsync can only enable plain tables"
        )
    if info.is_partition:
        raise UnsupportedTableError(f"{label} is a partition; partitioned tables are not supported")
    if info.has_parents or info.has_children:
        raise UnsupportedTableError(
            f"{label} takes part in table inheritance; cowsync cannot enable it"
        )
    if not info.key_columns or info.key_constraint is None:
        raise UnsupportedTableError(
            f"{label} has no primary key (nor a unique index on NOT NULL columns): "
            f"add one, e.g. ALTER TABLE {label} ADD PRIMARY KEY (...)"
        )
    for column in info.columns:
        if column.name.startswith(RESERVED_COLUMN_PREFIX):
            raise InvalidNameError(
                f"column {column.name!r} of {label} starts with {RESERVED_COLUMN_PREFIX!r}, "
                "a prefix cowsync reserves; rename it"
            )
        if column.generated:
            raise UnsupportedTableError(
                f"{label}.{column.name} is a generated column; cowsync does not support "
                "generated columns yet"
            )
    if info.dependent_views:
        raise UnsupportedTableError(
            f"views depend on {label} ({', '.join(info.dependent_views)}); they would keep "
            "reading the base table and bypass sessions. Drop them, enable, then recreate them"
        )
    for suffix in (BASE_SUFFIX, CHANGES_SUFFIX):
        name = derived_name(info.name, suffix)
        if catalog.relation_exists(conn, info.schema, name):
            raise InvalidNameError(
                f"cannot enable {label}: a relation named {info.schema}.{name} already exists"
            )


def enable(
    conn: psycopg.Connection,
    table: str | tuple[str, str],
    mode: Mode = "in-place",
    overlay_schema: str | None = None,
    guard: bool = True,
) -> TableStatus:
    """COW-enable a table.

    ``mode="in-place"`` (the default): ``items`` becomes ``items_base`` plus the change
    store ``items_changes``, behind a view named ``items`` that everyone, production
    included, goes through.

    ``mode="overlay"``: ``items`` stays as it is and production keeps using it directly;
    the view ``items``, its change store and their empty parent table go to an overlay
    schema (``overlay_schema``, by default the config's name for the table's schema,
    ``public_cow`` for ``public``), which connections bound to a session put first on
    their search_path. The table gets the parent (``ALTER TABLE ... INHERIT``, no
    rewrite) and a statement-level guard that refuses writes from a bound connection
    (``guard=False`` leaves it out: about 15 µs less per production write statement,
    when privileges already keep bound roles off the table, as :func:`cowsync.harden`
    does for agent roles).

    Idempotent: enabling an enabled table returns its status and changes nothing (a
    different mode raises :class:`ConfigurationError`). Everything happens in one
    transaction; a refusal changes nothing.

    >>> cowsync.enable(conn, "public.items")  # doctest: +SKIP
    >>> cowsync.enable(conn, "public.orders", mode="overlay")  # doctest: +SKIP
    """
    name = parse_table_name(table)
    check_mode(mode, overlay_schema, guard)
    with conn.transaction():
        config = _require_deployed(conn)
        _lock(conn)
        own_ddl(conn)
        row = _registry_row(conn, name)
        if row is not None:
            if row[5] != mode:
                raise ConfigurationError(
                    f"{name} is already enabled in {row[5]} mode; disable it first to "
                    f"enable it in {mode} mode"
                )
            return _status_of(conn, name)
        _enable_locked(conn, name, config, mode, overlay_schema, guard)
        _refresh_triggers(conn, config)
    return _status_of(conn, name)


def check_mode(mode: str, overlay_schema: str | None, guard: bool = True) -> None:
    """Refuse an unknown mode, and overlay options for an in place table."""
    if mode not in ("in-place", "overlay"):
        raise ConfigurationError(f"mode must be 'in-place' or 'overlay', got {mode!r}")
    if overlay_schema is not None and mode != "overlay":
        raise ConfigurationError("overlay_schema applies only to mode='overlay'")
    if not guard and mode != "overlay":
        raise ConfigurationError("guard=False applies only to mode='overlay'")


def _enable_locked(
    conn: psycopg.Connection,
    name: TableName,
    config: CowConfig,
    mode: Mode = "in-place",
    overlay_schema: str | None = None,
    guard: bool = True,
) -> str:
    located = catalog.resolve(conn, name)
    if located is None:
        raise NotEnabledError(f"no table named {name} (names are case-sensitive)")
    schema, relname, oid, _kind = located
    info = catalog.describe(conn, oid)
    _check_enableable(conn, info)
    assert info.key_constraint is not None
    if mode == "overlay":
        view_schema = overlay_schema or config.overlay_schema_for(schema)
        return _enable_overlay(conn, schema, relname, oid, info, config, view_schema, guard)
    base_name = derived_name(relname, BASE_SUFFIX)
    changes_name = derived_name(relname, CHANGES_SUFFIX)
    row = conn.execute(
        """
        INSERT INTO cowsync.tables (schema_name, table_name, base_name, changes_name,
                                    key_columns, key_constraint, engine_version)
        VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id
        """,
        (
            schema,
            relname,
            base_name,
            changes_name,
            info.key_columns,
            info.key_constraint,
            ENGINE_VERSION,
        ),
    ).fetchone()
    assert row is not None
    conn.execute(
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            sql.Identifier(schema, relname), sql.Identifier(base_name)
        )
    )
    layout = _build_layout(
        conn,
        row[0],
        schema,
        relname,
        base_name,
        changes_name,
        tuple(info.key_columns),
        info.key_constraint,
    )
    _create_store_and_view(conn, layout, config, info, oid)
    return f"{schema}.{relname}"


def _create_store_and_view(
    conn: psycopg.Connection,
    layout: render.TableLayout,
    config: CowConfig,
    info: catalog.TableInfo,
    oid: int,
) -> None:
    """The change store, view and trigger of a table being enabled (either mode), owned
    by the table's owner, the view carrying the table's grants and comments."""
    conn.execute(render.changes_table(layout))
    if info.owner:
        conn.execute(
            sql.SQL("ALTER TABLE {} OWNER TO {}").format(layout.changes, sql.Identifier(info.owner))
        )
    _install_table_objects(conn, layout, config, replace=False)
    if info.owner:
        conn.execute(
            sql.SQL("ALTER VIEW {} OWNER TO {}").format(layout.view, sql.Identifier(info.owner))
        )
    _copy_privileges_and_comments(conn, layout, oid)


def _enable_overlay(
    conn: psycopg.Connection,
    schema: str,
    relname: str,
    oid: int,
    info: catalog.TableInfo,
    config: CowConfig,
    view_schema: str,
    guard: bool = True,
) -> str:
    """Overlay mode: the table stays; view, change store and parent go to ``view_schema``."""
    assert info.key_constraint is not None
    changes_name = derived_name(relname, CHANGES_SUFFIX)
    parent_name = derived_name(relname, overlay.PARENT_SUFFIX)
    overlay.prepare_schema(conn, schema, view_schema, [relname, changes_name, parent_name])
    row = conn.execute(
        """
        INSERT INTO cowsync.tables (schema_name, table_name, base_name, changes_name, mode,
                                    key_columns, key_constraint, engine_version,
                                    view_schema, parent_name)
        VALUES (%s, %s, %s, %s, 'overlay', %s, %s, %s, %s, %s) RETURNING id
        """,
        (
            schema,
            relname,
            relname,
            changes_name,
            info.key_columns,
            info.key_constraint,
            ENGINE_VERSION,
            view_schema,
            parent_name,
        ),
    ).fetchone()
    assert row is not None
    overlay.adopt_base(conn, schema, relname, view_schema, parent_name, info.owner, config, guard)
    layout = _build_layout(
        conn,
        row[0],
        schema,
        relname,
        relname,
        changes_name,
        tuple(info.key_columns),
        info.key_constraint,
        view_schema,
        parent_name,
    )
    _create_store_and_view(conn, layout, config, info, oid)
    return f"{schema}.{relname}"


def _install_table_objects(
    conn: psycopg.Connection, layout: render.TableLayout, config: CowConfig, replace: bool
) -> None:
    """Create (or, on upgrade, recreate) the view and its trigger.

    Recreating keeps what the view carried: its grants, comments and owner. Everything
    is created with the engine's search_path (nothing it parses can resolve to an object
    a role planted in another schema).
    """
    with pinned_search_path(conn):
        _install_table_objects_pinned(conn, layout, config, replace)


def _install_table_objects_pinned(
    conn: psycopg.Connection, layout: render.TableLayout, config: CowConfig, replace: bool
) -> None:
    decorations: _Decorations | None = None
    owner: str | None = None
    if replace:
        found = conn.execute(
            "SELECT c.oid::int, pg_catalog.pg_get_userbyid(c.relowner) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            (layout.store_schema, layout.view_name),
        ).fetchone()
        if found is not None:
            decorations = _read_decorations(conn, found[0])
            owner = found[1]
        conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(layout.view))
    conn.execute(render.view(layout, config))
    for statement in render.view_defaults(layout):
        conn.execute(statement)
    _sync_changes_indexes(conn, layout)
    conn.execute(render.trigger_function(layout, config))
    conn.execute(render.trigger(layout))
    _sync_fk_checks(conn, layout, config)
    if decorations is not None:
        _apply_decorations(conn, layout, decorations)
    if owner is not None:
        conn.execute(
            sql.SQL("ALTER VIEW {} OWNER TO {}").format(layout.view, sql.Identifier(owner))
        )


@dataclass(frozen=True)
class _Decorations:
    """What a view carries besides its query: grants and comments."""

    grants: list[tuple[str | None, str, bool]]
    comments: list[tuple[str | None, str]]
    column_grants: list[tuple[str, str | None, str, bool]]


def _read_decorations(conn: psycopg.Connection, oid: int) -> _Decorations:
    grants = conn.execute(
        """
        SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(a.grantee) END,
               a.privilege_type, a.is_grantable
        FROM pg_class c, pg_catalog.aclexplode(c.relacl) a
        WHERE c.oid = %s AND a.grantee <> c.relowner
        """,
        (oid,),
    ).fetchall()
    comments = conn.execute(
        """
        SELECT NULL::text, pg_catalog.obj_description(%(oid)s, 'pg_class')
        UNION ALL
        SELECT a.attname::text, pg_catalog.col_description(%(oid)s, a.attnum)
        FROM pg_attribute a WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped
        """,
        {"oid": oid},
    ).fetchall()
    column_grants = conn.execute(
        """
        SELECT a.attname::text,
               CASE WHEN g.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(g.grantee) END,
               g.privilege_type, g.is_grantable
        FROM pg_attribute a, pg_catalog.aclexplode(a.attacl) g
        WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped AND a.attacl IS NOT NULL
        """,
        (oid,),
    ).fetchall()
    return _Decorations(
        grants,
        [(c, text) for c, text in comments if text is not None],
        [tuple(g) for g in column_grants],
    )


def _apply_decorations(
    conn: psycopg.Connection, layout: render.TableLayout, decorations: _Decorations
) -> None:
    for grantee, privilege, grantable in decorations.grants:
        conn.execute(
            sql.SQL("GRANT {} ON {} TO {}{}").format(
                sql.SQL(privilege),  # from aclexplode: a fixed set of keywords
                layout.view,
                sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee),
                sql.SQL(" WITH GRANT OPTION" if grantable else ""),
            )
        )
    columns = set(layout.column_names)
    for granted_column, grantee, privilege, grantable in decorations.column_grants:
        if granted_column not in columns:
            continue
        conn.execute(
            sql.SQL("GRANT {} ({}) ON {} TO {}{}").format(
                sql.SQL(privilege),  # from aclexplode: a fixed set of keywords
                sql.Identifier(granted_column),
                layout.view,
                sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee),
                sql.SQL(" WITH GRANT OPTION" if grantable else ""),
            )
        )
    for column, text in decorations.comments:
        if column is not None and column not in columns:
            continue
        target = (
            sql.SQL("VIEW {}").format(layout.view)
            if column is None
            else sql.SQL("COLUMN {}").format(
                sql.Identifier(layout.store_schema, layout.view_name, column)
            )
        )
        conn.execute(sql.SQL("COMMENT ON {} IS {}").format(target, sql.Literal(text)))


def _copy_privileges_and_comments(
    conn: psycopg.Connection, layout: render.TableLayout, base_oid: int
) -> None:
    """The view answers to the table's name, so it carries the table's grants and comments."""
    _apply_decorations(conn, layout, _read_decorations(conn, base_oid))


def enable_schema(
    conn: psycopg.Connection,
    schema: str = "public",
    exclude: Iterable[str] = (),
    mode: Mode = "in-place",
    overlay_schema: str | None = None,
    guard: bool = True,
) -> EnableSchemaResult:
    """Enable every eligible plain table of ``schema`` (in ``mode``, as :func:`enable`).

    Tables named in ``exclude``, already enabled, or not eligible (no key, a
    partition, ...) are listed in ``skipped`` with the reason; so is a table whose
    enabling the database refused (the error's SQLSTATE and message): each table is
    enabled in a savepoint, so one that cannot be enabled never stops the others. All
    enabling happens in one transaction. A lost connection, a cancelled statement or a
    timeout (:class:`psycopg.OperationalError`) still raises.

    >>> cowsync.enable_schema(conn, "public").skipped  # doctest: +SKIP
    {'public.audit': 'public.audit has no primary key ...'}
    """
    check_mode(mode, overlay_schema, guard)
    excluded = set(exclude)
    result = EnableSchemaResult()
    with conn.transaction():
        config = _require_deployed(conn)
        _lock(conn)
        own_ddl(conn)
        enabled = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM cowsync.tables WHERE schema_name = %s", (schema,)
            )
        }
        ours = {
            r[0]
            for r in conn.execute(
                # In place, the renamed base and the change store live in the schema; an
                # overlay table keeps its own name there (it is reported, not hidden).
                "SELECT pg_catalog.unnest(ARRAY[base_name, changes_name]) FROM cowsync.tables "
                "WHERE schema_name = %s AND view_schema IS NULL",
                (schema,),
            )
        }
        tables = [
            r[0]
            for r in conn.execute(
                """
                SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = %s AND (c.relkind IN ('r', 'p')
                      OR (c.relkind = 'v' AND c.relname IN
                          (SELECT table_name FROM cowsync.tables WHERE schema_name = %s)))
                ORDER BY c.relname
                """,
                (schema, schema),
            )
        ]
        for relname in tables:
            if relname in ours:
                continue  # our own base and change store
            label = f"{schema}.{relname}"
            if relname in excluded:
                result.skipped[label] = "excluded"
                continue
            if relname in enabled:
                result.skipped[label] = "already enabled"
                continue
            try:
                with conn.transaction():
                    _enable_locked(
                        conn, TableName(schema, relname), config, mode, overlay_schema, guard
                    )
            except (UnsupportedTableError, InvalidNameError, ConfigurationError) as exc:
                result.skipped[label] = str(exc)
            except psycopg.OperationalError:
                raise
            except psycopg.DatabaseError as exc:
                result.skipped[label] = refusal_reason(exc)
            else:
                result.enabled.append(label)
        _refresh_triggers(conn, config)
    return result


def refusal_reason(exc: psycopg.DatabaseError) -> str:
    """Why the database refused to enable a table, as ``EnableSchemaResult.skipped`` says it."""
    message = exc.diag.message_primary or str(exc)
    if exc.diag.message_detail:
        message += f" ({exc.diag.message_detail})"
    return f"the database refused to enable it ({exc.sqlstate}): {' '.join(message.split())}"


def _pending(conn: psycopg.Connection, changes: sql.Identifier) -> list[str]:
    rows = conn.execute(
        sql.SQL(
            "SELECT DISTINCT _cow_session FROM ONLY {} WHERE _cow_current "
            "AND (_cow_existed OR NOT _cow_deleted) AND pg_catalog.strpos(_cow_session, '~') = 0 "
            "ORDER BY 1"
        ).format(changes)
    ).fetchall()
    return [r[0] for r in rows]


def disable(conn: psycopg.Connection, table: str | tuple[str, str], force: bool = False) -> None:
    """Give the original table back exactly: drop the view and change store, rename
    ``items_base`` to ``items``.

    Refuses with :class:`PendingChangesError` while sessions hold unapplied changes
    for the table, unless ``force=True`` (which discards them).

    Connections that stay bound to a session are not told: from the commit on, ``items``
    is the plain table, and what they send reaches it directly. When the database is
    hardened, that fails closed for agents: :func:`cowsync.harden` took their privileges
    on the base, so the table handed back refuses their reads and writes (``42501``),
    whatever session they had bound, and with no trace of cowsync left on it. So disable
    refuses with :class:`ConfigurationError` while a login that counts as an agent can
    still use the base (a grant made after ``harden``, through a role it can ``SET ROLE``
    to, or through ``PUBLIC``): revoke it, or run :func:`cowsync.unharden` first if
    agents should use the plain table. Without ``harden`` nothing fences a bound
    connection: stop the processes that bind sessions first (``cowsync.reap`` ends agent
    backends). It waits for transactions that are using the table to finish.
    """
    name = parse_table_name(table)
    with conn.transaction():
        config = _require_deployed(conn)
        _lock(conn)
        own_ddl(conn)
        row = _registry_row(conn, name)
        if row is None:
            raise NotEnabledError(f"{name} is not COW-enabled")
        _disable_locked(conn, row, force)
        _refresh_triggers(conn, config)


def _disable_locked(conn: psycopg.Connection, row: tuple[object, ...], force: bool) -> str:
    registry_id, schema, view_name, base_name, changes_name = row[:5]
    assert isinstance(schema, str) and isinstance(view_name, str)
    label = f"{schema}.{view_name}"
    view_schema = str(row[10]) if row[10] is not None else schema
    changes = sql.Identifier(view_schema, str(changes_name))
    sessions = _pending(conn, changes)
    if sessions and not force:
        raise PendingChangesError(
            f"{label} has uncommitted changes in {len(sessions)} session(s) "
            f"({', '.join(sessions[:5])}{', ...' if len(sessions) > 5 else ''}): commit or "
            "discard them first, or pass force=True to drop them",
            {label: sessions},
        )
    _refuse_if_agents_reach_base(conn, label, schema, str(base_name))
    _release_from_view_owner(conn, view_schema, view_name, str(base_name), schema)
    try:
        conn.execute(sql.SQL("DROP VIEW {}").format(sql.Identifier(view_schema, view_name)))
    except psycopg.errors.DependentObjectsStillExist as exc:
        raise CowError(
            f"cannot disable {label}: other objects depend on its view "
            f"({exc.diag.message_detail}); drop them first"
        ) from exc
    conn.execute(sql.SQL("DROP TABLE {}").format(changes))
    conn.execute(
        sql.SQL("DROP FUNCTION IF EXISTS {}()").format(
            sql.Identifier("cowsync", f"write_{registry_id}")
        )
    )
    conn.execute(  # its constraint triggers went with the change store
        sql.SQL("DROP FUNCTION IF EXISTS {}()").format(
            render.fk_check_function_name(int(registry_id))  # type: ignore[call-overload]
        )
    )
    if row[11] is not None:  # overlay: the table keeps its name; its parent and guard go
        overlay.release_base(conn, schema, str(base_name), view_schema, str(row[11]))
        forget_after_overlay_disable(conn, view_schema, view_name, str(changes_name))
    else:
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                sql.Identifier(schema, str(base_name)), sql.Identifier(view_name)
            )
        )
        retarget_after_disable(conn, schema, view_name, str(base_name), str(changes_name))
    conn.execute("DELETE FROM cowsync.tables WHERE id = %s", (registry_id,))
    return label


def _release_from_view_owner(
    conn: psycopg.Connection,
    schema: str,
    view_name: str,
    base_name: str,
    base_schema: str | None = None,
) -> None:
    """Take back what harden granted the hardened views' owner on the base (reading it
    and updating a key column), so the table handed back carries none of it."""
    row = conn.execute(
        "SELECT s.value FROM cowsync.settings s JOIN pg_catalog.pg_roles r "
        "ON r.rolname = s.value WHERE s.name = 'view_owner' "
        "AND r.oid = (SELECT relowner FROM pg_class WHERE oid = %s::regclass)",
        (sql.Identifier(schema, view_name).as_string(conn),),
    ).fetchone()
    if row is None:
        return
    # REVOKE on a table takes the role's column privileges on it too.
    conn.execute(
        sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(
            sql.Identifier(base_schema or schema, base_name), sql.Identifier(row[0])
        )
    )


# Every privilege a table can carry; the column-level ones count when granted on any column.
_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
_COLUMN_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "REFERENCES")


def _refuse_if_agents_reach_base(
    conn: psycopg.Connection, label: str, schema: str, base_name: str
) -> None:
    """Refuse to hand back a table that agent logins could then use directly.

    A hardened agent's bound connections fail closed after disable only because it holds
    no privilege on the base. Logins count as agents as in ``cowsync.is_agent()``
    (members of a registered agent role, superusers never); each is checked with every
    role it can ``SET ROLE`` to, ``PUBLIC``'s grants included.
    """
    rows = conn.execute(
        """
        WITH agent_logins AS (
            SELECT r.oid, r.rolname FROM pg_catalog.pg_roles r
            WHERE NOT r.rolsuper AND EXISTS (
                SELECT 1 FROM cowsync.roles a
                JOIN pg_catalog.pg_roles ar ON ar.rolname = a.role_name
                WHERE a.kind = 'agent' AND pg_catalog.pg_has_role(r.oid, ar.oid, 'MEMBER'))
        )
        SELECT l.rolname::text, pg_catalog.array_agg(DISTINCT p.privilege ORDER BY p.privilege)
        FROM agent_logins l
        JOIN pg_catalog.pg_roles g ON pg_catalog.pg_has_role(l.oid, g.oid, 'MEMBER')
        CROSS JOIN pg_catalog.unnest(%(privileges)s::text[]) AS p(privilege)
        WHERE CASE WHEN p.privilege = ANY(%(column_privileges)s::text[])
                   THEN pg_catalog.has_any_column_privilege(g.oid, %(base)s::regclass,
                                                            p.privilege)
                   ELSE pg_catalog.has_table_privilege(g.oid, %(base)s::regclass, p.privilege)
              END
        GROUP BY l.rolname
        ORDER BY l.rolname
        """,
        {
            "privileges": list(_TABLE_PRIVILEGES),
            "column_privileges": list(_COLUMN_PRIVILEGES),
            "base": sql.Identifier(schema, base_name).as_string(conn),
        },
    ).fetchall()
    if not rows:
        return
    held = "; ".join(f"{role}: {', '.join(privileges)}" for role, privileges in rows)
    raise ConfigurationError(
        f"cannot disable {label}: agent roles could then use the plain table directly, "
        f"bound to a session or not, because they hold privileges on {schema}.{base_name} "
        f"({held}; granted to them, to a role they can SET ROLE to, or to PUBLIC). "
        "Revoke them (cowsync.check_hardening names the grants), or run cowsync.unharden "
        "first if agents should use the table without a sandbox"
    )


def disable_schema(
    conn: psycopg.Connection, schema: str = "public", force: bool = False
) -> DisableSchemaResult:
    """Disable every enabled table of ``schema`` in one transaction."""
    result = DisableSchemaResult()
    with conn.transaction():
        config = _require_deployed(conn)
        _lock(conn)
        own_ddl(conn)
        rows = conn.execute(
            "SELECT * FROM cowsync.tables WHERE schema_name = %s ORDER BY table_name", (schema,)
        ).fetchall()
        for row in rows:
            result.disabled.append(_disable_locked(conn, row, force))
        _refresh_triggers(conn, config)
    return result


def _status_of(conn: psycopg.Connection, name: TableName) -> TableStatus:
    row = _registry_row(conn, name)
    if row is None:
        raise NotEnabledError(f"{name} is not COW-enabled")
    return _status_row(conn, row)


def _status_row(conn: psycopg.Connection, row: tuple[object, ...]) -> TableStatus:
    _id, schema, name, base, changes, mode, keys, _constraint, version = row[:9]
    counts = conn.execute(
        sql.SQL(
            "SELECT pg_catalog.count(DISTINCT _cow_session), pg_catalog.count(*) FROM ONLY {} "
            "WHERE _cow_current AND (_cow_existed OR NOT _cow_deleted) "
            "AND pg_catalog.strpos(_cow_session, '~') = 0"
        ).format(sql.Identifier(str(row[10] or schema), str(changes)))
    ).fetchone()
    assert counts is not None
    linked = conn.execute(
        """
        SELECT DISTINCT n.nspname || '.' || c.relname
        FROM pg_constraint con
        JOIN pg_class c ON c.oid = CASE WHEN con.conrelid = %(base)s::regclass
                                        THEN con.confrelid ELSE con.conrelid END
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE con.contype = 'f'
          AND %(base)s::regclass IN (con.conrelid, con.confrelid)
          AND c.oid <> %(base)s::regclass
          AND NOT EXISTS (SELECT 1 FROM cowsync.tables t
                          WHERE t.schema_name = n.nspname AND t.base_name = c.relname)
        ORDER BY 1
        """,
        {"base": sql.Identifier(str(schema), str(base)).as_string(conn)},
    ).fetchall()
    return TableStatus(
        table=f"{schema}.{name}",
        schema=str(schema),
        name=str(name),
        base=str(base),
        changes=str(changes),
        mode=str(mode),
        key_columns=tuple(keys),  # type: ignore[arg-type]
        engine_version=int(version),  # type: ignore[call-overload]
        sessions=counts[0],
        pending_rows=counts[1],
        linked_not_enabled=tuple(r[0] for r in linked),
    )


def status(conn: psycopg.Connection) -> list[TableStatus]:
    """Every enabled table with the number of sessions and rows pending for it, and
    the tables foreign keys link it to that are not enabled (sessions do not sandbox
    those: their writes to them reach production)."""
    _require_deployed(conn)
    rows = conn.execute("SELECT * FROM cowsync.tables ORDER BY schema_name, table_name").fetchall()
    return [_status_row(conn, row) for row in rows]
