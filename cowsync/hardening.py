"""Hardening: an agent's database role cannot escape its session.

:func:`harden` registers agent and reviewer roles and rebuilds every enabled
table so that

* triggers and engine functions run with their owner's rights
  (``SECURITY DEFINER`` with a pinned ``search_path``), so an agent needs no
  privilege on base tables, change stores or the ``cowsync`` schema;
* an agent's write with no session is refused (42501): the check is role
  membership of the login role (``session_user``), which ``SET`` cannot change;
* the role that first writes a session owns it: another agent role can neither
  write nor read it by setting its id (42501);
* agents keep only what the views need; reviewers get the registry and bases;
* each view is owned by a role that may read, but not lock, what it reads (see
  :data:`VIEW_OWNER`): an agent's ``LOCK TABLE <view>`` cannot reach the base.

:func:`check_hardening` reports every privilege that would let an agent escape,
with the statement that fixes it. :func:`unharden` gives back what harden took.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from .errors import ConfigurationError
from .install import _install_table_objects, _layouts, _lock, _require_deployed, own_ddl
from .registry import EnabledTable, enabled_tables

_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
_VIEW_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
# Table-level privileges that let LOCK take a mode blocking production's reads or writes.
_LOCKING_PRIVILEGES = "INSERT, UPDATE, DELETE, TRUNCATE"

VIEW_OWNER = "cowsync_view_owner"
"""The NOLOGIN role :func:`harden` makes own the views, unless told another.

``LOCK TABLE`` on a view locks what the view reads in the same mode, checking the view
*owner's* privileges on it. This role holds only ``SELECT`` and ``UPDATE`` on one key
column of each base and change store: enough for reads and ``SELECT ... FOR UPDATE``
through the view, not for a lock that blocks production (anything but ``ACCESS
SHARE``), whoever asks for it."""


@dataclass(frozen=True)
class HardeningIssue:
    """One way an agent role could escape its session, and the statement that fixes it."""

    role: str
    problem: str
    fix: str


def _role_exists(conn: psycopg.Connection, role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def _log_undo(conn: psycopg.Connection, statement: sql.Composable) -> None:
    conn.execute(
        "INSERT INTO cowsync.hardening_log (undo_sql) VALUES (%s)", (statement.as_string(conn),)
    )


def _revoke_table(
    conn: psycopg.Connection,
    relation: sql.Composable,
    oid: int,
    role: str,
    keep: tuple[str, ...] = (),
) -> None:
    """Revoke what ``role`` holds directly on a relation (but ``keep``), remembering it."""
    held = conn.execute(
        """
        SELECT a.privilege_type, a.is_grantable, c.relkind = 'S'
        FROM pg_class c, pg_catalog.aclexplode(c.relacl) a
        WHERE c.oid = %s AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)
        """,
        (oid, role),
    ).fetchall()
    for privilege, grantable, is_sequence in held:
        if privilege in keep:
            continue
        kind = sql.SQL("SEQUENCE" if is_sequence else "TABLE")
        _log_undo(
            conn,
            sql.SQL("GRANT {} ON {} {} TO {}{}").format(
                sql.SQL(privilege),
                kind,
                relation,
                sql.Identifier(role),
                sql.SQL(" WITH GRANT OPTION" if grantable else ""),
            ),
        )
        conn.execute(
            sql.SQL("REVOKE {} ON {} {} FROM {}").format(
                sql.SQL(privilege), kind, relation, sql.Identifier(role)
            )
        )


def _grant(conn: psycopg.Connection, grant: sql.Composed, undo: sql.Composed) -> None:
    conn.execute(grant)
    _log_undo(conn, undo)


def _grant_on_relation(
    conn: psycopg.Connection,
    relation: sql.Composable,
    role: str,
    privileges: Iterable[str],
    kind: str = "TABLE",
) -> None:
    """Grant what ``role`` does not hold directly yet; unharden revokes only those."""
    held = {
        r[0]
        for r in conn.execute(
            """
            SELECT a.privilege_type FROM pg_class c, pg_catalog.aclexplode(c.relacl) a
            WHERE c.oid = %s AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)
            """,
            (_oid(conn, relation), role),
        )
    }
    missing = [p for p in privileges if p not in held]
    if missing:
        listed = sql.SQL(", ").join(sql.SQL(p) for p in missing)  # fixed keywords
        _grant(
            conn,
            sql.SQL("GRANT {} ON {} {} TO {}").format(
                listed, sql.SQL(kind), relation, sql.Identifier(role)
            ),
            sql.SQL("REVOKE {} ON {} {} FROM {}").format(
                listed, sql.SQL(kind), relation, sql.Identifier(role)
            ),
        )


def harden(
    conn: psycopg.Connection,
    schema: str = "public",
    agent_roles: Iterable[str] = (),
    reviewer_roles: Iterable[str] = (),
    read_requires_session: bool = False,
    allow_schema_create: bool = False,
    view_owner: str = VIEW_OWNER,
) -> list[HardeningIssue]:
    """Lock agent roles into sessions on the enabled tables of ``schema``.

    Idempotent; undo with :func:`unharden`. Returns what :func:`check_hardening`
    still finds (empty when nothing lets an agent escape).

    Refuses (:class:`ConfigurationError`, naming the schema and the ``REVOKE`` to run)
    while an agent role can create objects in the schema of an enabled table, in
    ``schema`` or in ``cowsync``, directly, through a role or through ``PUBLIC``
    (PostgreSQL 14 and older let ``PUBLIC`` create in ``public``). The engine's own code
    never calls what is planted there, but the application's triggers and functions on
    those tables, and its other code, may. ``allow_schema_create=True`` goes ahead
    anyway; :func:`check_hardening` keeps reporting it.

    Every enabled view of ``schema`` becomes owned by ``view_owner`` (a dedicated NOLOGIN
    role, created if missing: that takes ``CREATEROLE`` or a superuser), which may read
    base and change store and update one key column of each, nothing more. So
    ``LOCK TABLE <view>`` in any mode but ``ACCESS SHARE`` is refused (42501) for every
    role, and an agent cannot lock production out: a production job that locks the table
    locks ``<table>_base`` instead. Reads, writes and ``FOR UPDATE`` through the view work
    as before. The caller (the tables' owner) is made a member of ``view_owner`` so that
    ``alter``, ``refresh``, ``deploy`` and ``disable`` can still drop and recreate the
    views; no agent may be one (refused). :func:`unharden` gives the views back to their
    previous owner.

    >>> cowsync.harden(conn, agent_roles=["agent"], reviewer_roles=["reviewer"])  # doctest: +SKIP
    []
    """
    agents = list(dict.fromkeys(agent_roles))
    reviewers = list(dict.fromkeys(reviewer_roles))
    for role in agents + reviewers:
        if not _role_exists(conn, role):
            raise ConfigurationError(f"role {role!r} does not exist; create it first")
    if set(agents) & set(reviewers):
        raise ConfigurationError(
            f"roles {sorted(set(agents) & set(reviewers))} cannot be both agent and reviewer"
        )
    if view_owner in agents or view_owner in reviewers:
        raise ConfigurationError(
            f"view_owner {view_owner!r} must be a role of its own, not an agent or reviewer"
        )
    with conn.transaction():
        config = _require_deployed(conn)
        _lock(conn)
        own_ddl(conn)
        for role in agents:
            conn.execute(
                "INSERT INTO cowsync.roles VALUES (%s, 'agent') "
                "ON CONFLICT (role_name) DO UPDATE SET kind = 'agent'",
                (role,),
            )
        for role in reviewers:
            conn.execute(
                "INSERT INTO cowsync.roles VALUES (%s, 'reviewer') "
                "ON CONFLICT (role_name) DO UPDATE SET kind = 'reviewer'",
                (role,),
            )
        if not allow_schema_create:
            _refuse_schema_create(conn, schema)
        for name, value in (
            ("hardened", "on"),
            ("read_requires_session", "on" if read_requires_session else "off"),
        ):
            conn.execute(
                "INSERT INTO cowsync.settings VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                (name, value),
            )
        # Engine functions: nobody but reviewers (and the owner) may call them;
        # views call current_session() as the reader, so everyone may call that one.
        conn.execute("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA cowsync FROM PUBLIC")
        conn.execute("REVOKE ALL ON ALL TABLES IN SCHEMA cowsync FROM PUBLIC")
        conn.execute("GRANT USAGE ON SCHEMA cowsync TO PUBLIC")
        conn.execute("GRANT EXECUTE ON FUNCTION cowsync.current_session(text) TO PUBLIC")
        conn.execute("GRANT EXECUTE ON FUNCTION cowsync.is_agent() TO PUBLIC")
        for layout in _layouts(conn):
            _install_table_objects(conn, layout, config, replace=True)
        tables = [t for t in enabled_tables(conn) if t.schema == schema]
        all_roles = [r[0] for r in conn.execute("SELECT role_name, kind FROM cowsync.roles")]
        kinds: dict[str, str] = dict(
            conn.execute("SELECT role_name, kind FROM cowsync.roles").fetchall()
        )
        for role in all_roles:
            ident = sql.Identifier(role)
            if kinds[role] == "agent":
                for t in tables:
                    for relation in _stored(t):
                        oid = _oid(conn, relation)
                        _revoke_table(conn, relation, oid, role)
                    _revoke_table(conn, t.view, _oid(conn, t.view), role, keep=_VIEW_PRIVILEGES)
                    _grant_on_relation(conn, t.view, role, _VIEW_PRIVILEGES)
                    for sequence in _sequences(conn, t.base):
                        seq = sql.SQL(sequence)
                        _revoke_table(conn, seq, _oid(conn, seq), role, keep=("USAGE",))
                        _grant_on_relation(conn, seq, role, ["USAGE"], "SEQUENCE")
            else:
                grants = [
                    (
                        "GRANT USAGE ON SCHEMA cowsync TO {}",
                        "REVOKE USAGE ON SCHEMA cowsync FROM {}",
                    ),
                    (
                        "GRANT ALL ON ALL TABLES IN SCHEMA cowsync TO {}",
                        "REVOKE ALL ON ALL TABLES IN SCHEMA cowsync FROM {}",
                    ),
                    (
                        "GRANT ALL ON ALL SEQUENCES IN SCHEMA cowsync TO {}",
                        "REVOKE ALL ON ALL SEQUENCES IN SCHEMA cowsync FROM {}",
                    ),
                    (
                        "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA cowsync TO {}",
                        "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA cowsync FROM {}",
                    ),
                ]
                for grant, undo in grants:
                    _grant(conn, sql.SQL(grant).format(ident), sql.SQL(undo).format(ident))
                for t in tables:
                    for relation in (*_stored(t), t.view):
                        _grant_on_relation(conn, relation, role, _TABLE_PRIVILEGES)
        _hand_views_to(conn, view_owner, tables)
    return check_hardening(conn)


def _stored(t: EnabledTable) -> tuple[sql.Identifier, ...]:
    """The relations holding a table's rows: base and change store, and in overlay mode
    the parent the view scans (a parent's privileges cover reading its children)."""
    if t.scanned == t.base:
        return (t.base, t.changes)
    return (t.base, t.changes, t.scanned)


def _hand_views_to(conn: psycopg.Connection, owner: str, tables: list[EnabledTable]) -> None:
    """Make ``owner`` own the views of ``tables``, with just what they need to read.

    Privileges on what a view reads are checked against the view's owner, for LOCK too
    (PostgreSQL locks the relations under a view in the mode asked for the view). An owner
    with no table-level write privilege on base and change store turns every blocking
    LOCK through the view into a permission error.
    """
    _ensure_view_owner(conn, owner)
    conn.execute(
        "INSERT INTO cowsync.settings VALUES ('view_owner', %s) "
        "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        (owner,),
    )
    ident = sql.Identifier(owner)
    for t in tables:
        for relation in _stored(t):
            _grant_on_relation(conn, relation, owner, ["SELECT"])
            # FOR UPDATE through the view needs UPDATE on some column of the base.
            _grant_update_on_column(conn, relation, owner, t.key_columns[0])
        previous = conn.execute(
            "SELECT pg_catalog.pg_get_userbyid(relowner) FROM pg_class WHERE oid = %s",
            (_oid(conn, t.view),),
        ).fetchone()
        assert previous is not None
        if previous[0] == owner:
            continue
        try:
            with conn.transaction():
                conn.execute(sql.SQL("ALTER VIEW {} OWNER TO {}").format(t.view, ident))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ConfigurationError(
                f"cowsync.harden cannot make {owner} own the view {t.label} ({exc}): run it as "
                f"a superuser, or GRANT CREATE ON SCHEMA {sql.Identifier(t.schema).as_string(conn)}"
                f" TO {ident.as_string(conn)} (PostgreSQL requires it of a view's new owner)"
            ) from exc
        _log_undo(
            conn,
            sql.SQL("ALTER VIEW {} OWNER TO {}").format(t.view, sql.Identifier(previous[0])),
        )


def _ensure_view_owner(conn: psycopg.Connection, owner: str) -> None:
    """Create the view owner if missing; refuse one that could log in or that agents reach."""
    ident = sql.Identifier(owner)
    row = conn.execute(
        "SELECT rolcanlogin, rolsuper FROM pg_roles WHERE rolname = %s", (owner,)
    ).fetchone()
    if row is None:
        try:
            with conn.transaction():
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ConfigurationError(
                f"cowsync.harden needs the role {owner!r} to own the views, and cannot create "
                f"it ({exc}): run harden as a superuser or a role with CREATEROLE, or create it "
                f"first (CREATE ROLE {ident.as_string(conn)} NOLOGIN) and grant it to this role"
            ) from exc
        except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            pass  # another connection created it meanwhile (roles are cluster-wide)
    elif row[0] or row[1]:
        raise ConfigurationError(
            f"view_owner {owner!r} must be NOLOGIN and not a superuser: whoever can act as "
            "the views' owner can lock production through them"
        )
    members = [
        r[0]
        for r in conn.execute(
            "SELECT role_name FROM cowsync.roles "
            "WHERE kind = 'agent' AND pg_catalog.pg_has_role(role_name, %s, 'MEMBER')",
            (owner,),
        )
    ]
    if members:
        raise ConfigurationError(
            f"agent roles {members} are members of the view owner {owner!r}: they could alter "
            f"or drop the views; REVOKE {ident.as_string(conn)} FROM them"
        )
    member = conn.execute(
        "SELECT pg_catalog.pg_has_role(current_user, %s, 'MEMBER')", (owner,)
    ).fetchone()
    if member is None or not member[0]:
        # The tables' owner must stay able to drop and recreate the views (alter, deploy).
        try:
            with conn.transaction():
                conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(ident))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ConfigurationError(
                f"cowsync.harden must be able to act as {owner!r} to give it the views ({exc}):"
                f" GRANT {ident.as_string(conn)} TO the role running harden"
            ) from exc


def _grant_update_on_column(
    conn: psycopg.Connection, relation: sql.Composable, role: str, column: str
) -> None:
    held = conn.execute(
        """
        SELECT 1 FROM pg_attribute a, pg_catalog.aclexplode(a.attacl) g
        WHERE a.attrelid = %s AND a.attname = %s AND g.privilege_type = 'UPDATE'
          AND g.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)
        """,
        (_oid(conn, relation), column, role),
    ).fetchone()
    if held is None:
        _grant(
            conn,
            sql.SQL("GRANT UPDATE ({}) ON TABLE {} TO {}").format(
                sql.Identifier(column), relation, sql.Identifier(role)
            ),
            sql.SQL("REVOKE UPDATE ({}) ON TABLE {} FROM {}").format(
                sql.Identifier(column), relation, sql.Identifier(role)
            ),
        )


def unharden(conn: psycopg.Connection) -> None:
    """Undo :func:`harden`: ordinary triggers and views, the privileges it took back."""
    with conn.transaction():
        config = _require_deployed(conn)
        _lock(conn)
        own_ddl(conn)
        for (undo,) in conn.execute(
            "SELECT undo_sql FROM cowsync.hardening_log ORDER BY id DESC"
        ).fetchall():
            conn.execute(undo)
        conn.execute("DELETE FROM cowsync.hardening_log")
        conn.execute("DELETE FROM cowsync.roles")
        conn.execute(
            "DELETE FROM cowsync.settings "
            "WHERE name IN ('hardened', 'read_requires_session', 'view_owner')"
        )
        conn.execute("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA cowsync TO PUBLIC")
        conn.execute("REVOKE USAGE ON SCHEMA cowsync FROM PUBLIC")
        for layout in _layouts(conn):
            _install_table_objects(conn, layout, config, replace=True)


def _oid(conn: psycopg.Connection, relation: sql.Composable) -> int:
    row = conn.execute("SELECT %s::regclass::oid::int", (relation.as_string(conn),)).fetchone()
    assert row is not None
    return int(row[0])


def _sequences(conn: psycopg.Connection, base: sql.Identifier) -> list[str]:
    """Sequences the base's columns draw defaults from (the view's defaults use them)."""
    rows = conn.execute(
        """
        SELECT DISTINCT d.refobjid::regclass::text
        FROM pg_depend d JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S'
        JOIN pg_attrdef ad ON ad.oid = d.objid AND d.classid = 'pg_attrdef'::regclass
        WHERE ad.adrelid = %s::regclass
        UNION
        SELECT DISTINCT s.oid::regclass::text
        FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
        WHERE d.refobjid = %s::regclass AND d.deptype IN ('a', 'i')
        """,
        (base.as_string(conn), base.as_string(conn)),
    ).fetchall()
    return [r[0] for r in rows]


def check_hardening(conn: psycopg.Connection) -> list[HardeningIssue]:
    """Every privilege that would let a registered agent role escape its session."""
    _require_deployed(conn)
    issues: list[HardeningIssue] = []
    hardened = conn.execute(
        "SELECT coalesce((SELECT value = 'on' FROM cowsync.settings WHERE name = 'hardened'), "
        "false)"
    ).fetchone()
    agents = [
        r[0] for r in conn.execute("SELECT role_name FROM cowsync.roles WHERE kind = 'agent'")
    ]
    if not hardened or not hardened[0]:
        issues.append(
            HardeningIssue(
                "*",
                "cowsync is not hardened: triggers run as the caller and writes with no "
                "session reach the base",
                "SELECT cowsync.harden(...) from Python: cowsync.harden(conn, agent_roles=[...])",
            )
        )
    tables = enabled_tables(conn)
    view_owner = _configured_view_owner(conn)
    if hardened and hardened[0]:
        for t in tables:
            issues.extend(_view_lock_issues(conn, t, view_owner))
    for role in agents:
        ident = sql.Identifier(role).as_string(conn)
        attrs = conn.execute(
            "SELECT rolsuper, rolbypassrls, rolcreaterole FROM pg_roles WHERE rolname = %s",
            (role,),
        ).fetchone()
        if attrs is None:
            issues.append(HardeningIssue(role, "role no longer exists", "re-run cowsync.harden"))
            continue
        if attrs[0]:
            issues.append(HardeningIssue(role, "is a superuser", f"ALTER ROLE {ident} NOSUPERUSER"))
        if attrs[2]:
            issues.append(
                HardeningIssue(
                    role,
                    "can create roles (and grant itself others)",
                    f"ALTER ROLE {ident} NOCREATEROLE",
                )
            )
        for (reviewer,) in conn.execute(
            "SELECT role_name FROM cowsync.roles WHERE kind = 'reviewer' "
            "AND pg_catalog.pg_has_role(%s, role_name, 'MEMBER')",
            (role,),
        ).fetchall():
            issues.append(
                HardeningIssue(
                    role,
                    f"is a member of reviewer role {reviewer}",
                    f"REVOKE {sql.Identifier(reviewer).as_string(conn)} FROM {ident}",
                )
            )
        for t in tables:
            relations: list[tuple[sql.Composable, tuple[str, ...]]] = [
                (relation, _TABLE_PRIVILEGES) for relation in _stored(t)
            ]
            relations.append((t.view, ("TRUNCATE", "REFERENCES", "TRIGGER")))
            relations += [(sql.SQL(s), ("UPDATE",)) for s in _sequences(conn, t.base)]
            for relation, forbidden in relations:
                issues.extend(
                    _relation_issues(
                        conn, role, relation, forbidden, _owner_fix(conn, t, view_owner)
                    )
                )
        issues.extend(_ownership_issues(conn, role, tables))
        issues.extend(_monitoring_issues(conn, role))
        for (table,) in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'cowsync' AND c.relkind = 'r' "
            "AND (pg_catalog.has_table_privilege(%s, c.oid, 'INSERT') "
            "OR pg_catalog.has_table_privilege(%s, c.oid, "
            "'UPDATE') OR pg_catalog.has_table_privilege(%s, c.oid, 'DELETE') "
            "OR pg_catalog.has_table_privilege(%s, c.oid, 'SELECT'))",
            (role, role, role, role),
        ).fetchall():
            issues.append(
                HardeningIssue(
                    role,
                    f"can read or write the registry table cowsync.{table}",
                    f"REVOKE ALL ON cowsync.{sql.Identifier(table).as_string(conn)} FROM {ident}",
                )
            )
        for (function,) in conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'cowsync' "
            "AND p.proname NOT IN ('current_session', 'is_agent') "
            "AND pg_catalog.has_function_privilege(%s, p.oid, 'EXECUTE')",
            (role,),
        ).fetchall():
            issues.append(
                HardeningIssue(
                    role,
                    f"can execute engine function {function}",
                    f"REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC, {ident}",
                )
            )
    return issues


# Predefined roles that let a member read other backends' activity (and so the timing and
# state of other agents' sessions) or signal them (end another agent's session).
_MONITORING_ROLES = ("pg_read_all_stats", "pg_monitor", "pg_signal_backend", "pg_read_all_settings")
# Limits an agent login can lift for itself with ALTER ROLE ... SET (docs/security.md).
_LIFTABLE_LIMITS = ("statement_timeout", "idle_in_transaction_session_timeout", "lock_timeout")


def _monitoring_issues(conn: psycopg.Connection, role: str) -> list[HardeningIssue]:
    """Memberships in monitoring roles, and per-login settings that turn a limit off."""
    ident = sql.Identifier(role).as_string(conn)
    issues = [
        HardeningIssue(
            role,
            f"is a member of {granted}, which shows or ends other backends' sessions",
            f"REVOKE {granted} FROM {ident}",
        )
        for (granted,) in conn.execute(
            "SELECT r FROM pg_catalog.unnest(%s::text[]) AS r "
            "WHERE pg_catalog.pg_has_role(%s, r, 'MEMBER')",
            (list(_MONITORING_ROLES), role),
        ).fetchall()
    ]
    rows = conn.execute(
        """
        SELECT l.rolname, split_part(cfg, '=', 1)
        FROM pg_catalog.pg_roles l
        JOIN pg_catalog.pg_db_role_setting s ON s.setrole = l.oid
            AND s.setdatabase IN (0, (SELECT oid FROM pg_catalog.pg_database
                                      WHERE datname = pg_catalog.current_database()))
        CROSS JOIN LATERAL pg_catalog.unnest(s.setconfig) AS cfg
        WHERE l.rolcanlogin AND pg_catalog.pg_has_role(l.oid, %s, 'MEMBER')
          AND split_part(cfg, '=', 1) = ANY(%s) AND split_part(cfg, '=', 2) IN ('0', '')
        ORDER BY 1, 2
        """,
        (role, list(_LIFTABLE_LIMITS)),
    ).fetchall()
    issues += [
        HardeningIssue(
            role,
            f"login {login} turns {setting} off for itself (a per-role setting)",
            f"ALTER ROLE {sql.Identifier(login).as_string(conn)} RESET {setting}",
        )
        for login, setting in rows
    ]
    return issues


def _configured_view_owner(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT value FROM cowsync.settings WHERE name = 'view_owner'").fetchone()
    return str(row[0]) if row else VIEW_OWNER


def _owner_fix(conn: psycopg.Connection, table: EnabledTable, view_owner: str) -> str:
    """How to give a view to its proper owner: directly when that role can already read
    what the view reads, otherwise by hardening again (which grants it that)."""
    ready = conn.execute(
        "SELECT pg_catalog.has_table_privilege(r.oid, %(base)s::regclass, 'SELECT') "
        "AND pg_catalog.has_table_privilege(r.oid, %(changes)s::regclass, 'SELECT') "
        "AND pg_catalog.has_table_privilege(r.oid, %(scanned)s::regclass, 'SELECT') "
        "FROM pg_roles r WHERE r.rolname = %(owner)s",
        {
            "scanned": table.scanned.as_string(conn),
            "base": table.base.as_string(conn),
            "changes": table.changes.as_string(conn),
            "owner": view_owner,
        },
    ).fetchone()
    if ready is None or not ready[0]:
        return "re-run cowsync.harden (it gives the view to the role that owns hardened views)"
    return (
        f"ALTER VIEW {table.view.as_string(conn)} OWNER TO "
        f"{sql.Identifier(view_owner).as_string(conn)}"
    )


def _view_lock_issues(
    conn: psycopg.Connection, table: EnabledTable, view_owner: str
) -> list[HardeningIssue]:
    """A view whose owner may lock its base lets any role with UPDATE or DELETE on the
    view (every agent) take blocking locks on production with ``LOCK TABLE <view>``."""
    row = conn.execute(
        """
        SELECT pg_catalog.pg_get_userbyid(c.relowner), r.rolsuper
               OR pg_catalog.has_table_privilege(r.oid, %(base)s::regclass, %(locking)s)
               OR pg_catalog.has_table_privilege(r.oid, %(changes)s::regclass, %(locking)s)
               OR pg_catalog.has_table_privilege(r.oid, %(scanned)s::regclass, %(locking)s)
        FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
        WHERE c.oid = %(view)s::regclass
        """,
        {
            "scanned": table.scanned.as_string(conn),
            "base": table.base.as_string(conn),
            "changes": table.changes.as_string(conn),
            "view": table.view.as_string(conn),
            "locking": _LOCKING_PRIVILEGES,
        },
    ).fetchone()
    if row is None or not row[1]:
        return []
    return [
        HardeningIssue(
            "*",
            f"view {table.label} is owned by {row[0]}, which may lock {table.base_name}: "
            f"LOCK TABLE {table.name} by an agent blocks production's reads and writes",
            _owner_fix(conn, table, view_owner),
        )
    ]


def _relation_issues(
    conn: psycopg.Connection,
    role: str,
    relation: sql.Composable,
    forbidden: tuple[str, ...],
    owner_fix: str,
) -> list[HardeningIssue]:
    """Grants on a relation the agent can use (its own, PUBLIC's, or a role's it is a
    member of, inherited or reachable with SET ROLE), and whether it owns it."""
    name = relation.as_string(conn)
    rows = conn.execute(
        """
        SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END,
               a.privilege_type
        FROM pg_class c,
             pg_catalog.aclexplode(coalesce(c.relacl, pg_catalog.acldefault('r', c.relowner))) a
        WHERE c.oid = %(rel)s::regclass AND a.privilege_type = ANY(%(forbidden)s)
          AND a.grantee <> c.relowner
          AND (a.grantee = 0 OR pg_catalog.pg_has_role(%(role)s, a.grantee, 'MEMBER'))
        UNION ALL
        SELECT pg_catalog.pg_get_userbyid(c.relowner), 'OWNER' FROM pg_class c
        WHERE c.oid = %(rel)s::regclass AND pg_catalog.pg_has_role(%(role)s, c.relowner, 'MEMBER')
        """,
        {"rel": name, "forbidden": list(forbidden), "role": role},
    ).fetchall()
    relation_is_view = conn.execute(
        "SELECT relkind = 'v' FROM pg_class WHERE oid = %s::regclass", (name,)
    ).fetchone() == (True,)
    issues = []
    for grantee, privilege in rows:
        who = "PUBLIC" if grantee == "PUBLIC" else sql.Identifier(grantee).as_string(conn)
        if privilege == "OWNER":
            issues.append(
                HardeningIssue(
                    role,
                    f"owns {name}, through {grantee} (an owner can alter or drop it)",
                    owner_fix if relation_is_view else f"ALTER TABLE {name} OWNER TO CURRENT_USER",
                )
            )
        else:
            via = "" if grantee in (role, "PUBLIC") else f" through role {grantee}"
            issues.append(
                HardeningIssue(
                    role,
                    f"has {privilege} on {name}{via}",
                    f"REVOKE {privilege} ON {name} FROM {who}",
                )
            )
    return issues


def _refuse_schema_create(conn: psycopg.Connection, schema: str) -> None:
    """Raise while a registered agent role can create objects in (or owns) the schema of
    an enabled table, ``schema`` or ``cowsync``: the rollback undoes what harden did."""
    tables = enabled_tables(conn)
    overlays = {t.view_schema for t in tables if t.view_schema is not None}
    schemas = sorted({t.schema for t in tables} | overlays | {schema, "cowsync"})
    agents = [
        r[0] for r in conn.execute("SELECT role_name FROM cowsync.roles WHERE kind = 'agent'")
    ]
    found = []
    for name in schemas:
        issues = [issue for role in agents for issue in _schema_issues(conn, role, [name])]
        if issues:
            roles = ", ".join(dict.fromkeys(issue.role for issue in issues))
            fixes = "; ".join(dict.fromkeys(issue.fix for issue in issues))
            found.append(f"schema {name} (agent roles {roles}; run: {fixes})")
    if not found:
        return
    raise ConfigurationError(
        "cowsync.harden refuses: agent roles can create objects where enabled tables or the "
        f"engine live: {'; '.join(found)}. A function or operator planted there runs with "
        "the rights of whoever calls it by an unqualified name (the application's triggers "
        "and functions on those tables, for one). Revoke the right, or pass "
        "allow_schema_create=True to harden anyway (check_hardening keeps reporting it)"
    )


def _schema_issues(
    conn: psycopg.Connection, role: str, schemas: Iterable[str]
) -> list[HardeningIssue]:
    """Owning or creating objects in ``schemas``, directly, through a role or ``PUBLIC``."""
    issues = []
    for schema in schemas:
        row = conn.execute(
            """
            SELECT pg_catalog.pg_get_userbyid(n.nspowner),
                   pg_catalog.pg_has_role(%(role)s, n.nspowner, 'MEMBER'),
                   ARRAY(SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                     ELSE pg_catalog.pg_get_userbyid(a.grantee) END
                         FROM pg_catalog.aclexplode(
                             coalesce(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) a
                         WHERE a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner
                           AND (a.grantee = 0
                                OR pg_catalog.pg_has_role(%(role)s, a.grantee, 'MEMBER')))
            FROM pg_namespace n WHERE n.nspname = %(schema)s
            """,
            {"role": role, "schema": schema},
        ).fetchone()
        if row is None:
            continue
        owner, owns, creators = row
        ident = sql.Identifier(schema).as_string(conn)
        if owns:
            issues.append(
                HardeningIssue(
                    role,
                    f"owns schema {schema} through {owner} (it can drop what the schema holds)",
                    f"ALTER SCHEMA {ident} OWNER TO CURRENT_USER",
                )
            )
        for grantee in creators:
            who = "PUBLIC" if grantee == "PUBLIC" else sql.Identifier(grantee).as_string(conn)
            issues.append(
                HardeningIssue(
                    role,
                    (
                        "can create objects in the cowsync schema"
                        if schema == "cowsync"
                        else f"can create objects in schema {schema}"
                    )
                    + ("" if grantee in (role, "PUBLIC") else f" through role {grantee}"),
                    f"REVOKE CREATE ON SCHEMA {ident} FROM {who}",
                )
            )
    return issues


def _ownership_issues(
    conn: psycopg.Connection, role: str, tables: list[EnabledTable]
) -> list[HardeningIssue]:
    """Owning (or creating in) the schemas or the database lets a role drop what it cannot
    touch otherwise."""
    overlays = {t.view_schema for t in tables if t.view_schema is not None}
    issues = _schema_issues(conn, role, sorted({t.schema for t in tables} | overlays | {"cowsync"}))
    database = conn.execute(
        "SELECT datname, pg_catalog.pg_get_userbyid(datdba), "
        "pg_catalog.pg_has_role(%s, datdba, 'MEMBER') "
        "FROM pg_database WHERE datname = pg_catalog.current_database()",
        (role,),
    ).fetchone()
    if database and database[2]:
        issues.append(
            HardeningIssue(
                role,
                f"owns database {database[0]} through {database[1]} (and with it schema public)",
                f"ALTER DATABASE {sql.Identifier(database[0]).as_string(conn)} "
                "OWNER TO CURRENT_USER",
            )
        )
    return issues
