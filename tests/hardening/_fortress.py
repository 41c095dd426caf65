"""A hardened database to attack: roles, COW-enabled tables, sessions, and ways to tell
whether anything an agent must not touch has changed.

The fortress has three COW-enabled tables (``items``, and ``shop_parent``/``shop_child``
linked by a foreign key). Before hardening, the application granted its roles everything on
them, as apps commonly do, so :func:`cowsync.harden` has real privileges to take back:

- ``agent``: the role under attack, with a session of its own (``agent_session``);
- ``other_agent``: a second agent whose session (``victim_session``) the first must neither
  read nor write;
- ``reviewer``: reviews, commits and discards;
- ``production``: the application's ordinary role (not registered with cowsync).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

import cowsync
from tests._tables import create_table

# SQLSTATE of PostgreSQL's permission errors and of cowsync's hardening refusals.
INSUFFICIENT_PRIVILEGE = "42501"
# SQLSTATE cowsync raises for a malformed session or operation id.
INVALID_PARAMETER_VALUE = "22023"

TABLES = ("items", "shop_parent", "shop_child")


@dataclass(frozen=True)
class Fortress:
    """Where the hardened database is and who may do what in it."""

    dsn: str
    agent: str
    other_agent: str
    reviewer: str
    production: str
    agent_session: str
    victim_session: str

    def dsn_as(self, role: str) -> str:
        """This database's DSN, logging in as ``role`` (the server trusts local logins)."""
        return make_conninfo(self.dsn, user=role)

    def connect_as(self, role: str) -> psycopg.Connection[Any]:
        """A new autocommit connection as ``role``; the caller closes it."""
        return psycopg.connect(self.dsn_as(role), autocommit=True)


def unique_role_name(kind: str) -> str:
    """A cluster-wide role name no other test (or concurrent run) will pick."""
    return f"cowsync_{kind}_{secrets.token_hex(5)}"


class RoleFactory:
    """Creates login roles with random names and drops them afterwards.

    Roles belong to the cluster, not to the test's database, so every one made here must be
    dropped explicitly: first what it owns or was granted in the test database, then the role.
    """

    def __init__(self, admin_dsn: str, database_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.database_dsn = database_dsn
        self.made: list[str] = []

    def __call__(self, kind: str, attributes: str = "LOGIN", member_of: str | None = None) -> str:
        """Create a role ``cowsync_<kind>_<random>``; ``attributes`` are fixed keywords."""
        name = unique_role_name(kind)
        statement = sql.SQL("CREATE ROLE {} {}").format(sql.Identifier(name), sql.SQL(attributes))
        if member_of is not None:
            statement = sql.SQL("{} IN ROLE {}").format(statement, sql.Identifier(member_of))
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            admin.execute(statement)
        self.made.append(name)
        return name

    def drop_all(self) -> None:
        """Drop every role made here (and what it owns in the test database)."""
        with psycopg.connect(self.database_dsn, autocommit=True) as conn:
            # Connections still open as these roles would keep DROP ROLE from succeeding.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE usename = ANY(%s) AND pid <> pg_backend_pid()",
                (self.made,),
            )
            for name in self.made:
                conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name)))
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            for name in self.made:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        self.made.clear()


def build_fortress(
    admin: psycopg.Connection[Any],
    dsn: str,
    make_role: Callable[..., str],
    *,
    read_requires_session: bool = False,
    mode: str = "in-place",
) -> Fortress:
    """Create the tables and roles in ``admin``'s database, enable and harden, seed sessions."""
    agent = make_role("agent")
    other_agent = make_role("agent")
    reviewer = make_role("reviewer")
    production = make_role("app")
    cowsync.deploy(admin)
    create_table(admin, name="items", shape="items", rows=5)
    create_table(admin, name="shop", shape="parent_child", rows=3)
    app_roles = sql.SQL(", ").join(sql.Identifier(r) for r in (agent, other_agent, production))
    admin.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA public TO {}").format(app_roles))
    admin.execute(sql.SQL("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {}").format(app_roles))
    for table in TABLES:
        cowsync.enable(admin, table, mode=mode)  # type: ignore[arg-type]
    issues = cowsync.harden(
        admin,
        agent_roles=[agent, other_agent],
        reviewer_roles=[reviewer],
        read_requires_session=read_requires_session,
    )
    assert issues == [], issues
    fortress = Fortress(
        dsn=dsn,
        agent=agent,
        other_agent=other_agent,
        reviewer=reviewer,
        production=production,
        agent_session="own-" + secrets.token_hex(4),
        victim_session="victim-" + secrets.token_hex(4),
    )
    views = "public_cow.items" if mode == "overlay" else "items"
    parents = "public_cow.shop_parent" if mode == "overlay" else "shop_parent"
    with (
        fortress.connect_as(other_agent) as victim,
        cowsync.session(victim, fortress.victim_session, "victim-op"),
    ):
        victim.execute(f"UPDATE {views} SET name = 'victim secret' WHERE id = 1")
        victim.execute(f"INSERT INTO {parents} (name) VALUES ('victim parent')")
    with (
        fortress.connect_as(agent) as conn,
        cowsync.session(conn, fortress.agent_session, "own-op"),
    ):
        conn.execute(f"UPDATE {views} SET qty = qty + 1 WHERE id = 2")
    return fortress


# --- what must not change -------------------------------------------------------------------


def _relations(conn: psycopg.Connection[Any]) -> list[tuple[str, str, str, str]]:
    """(schema, base, schema of the change store, change store) of each enabled table."""
    return [
        (r[0], r[1], r[2], r[3])
        for r in conn.execute(
            "SELECT schema_name, base_name, coalesce(view_schema, schema_name), changes_name "
            "FROM cowsync.tables ORDER BY id"
        )
    ]


def base_checksums(conn: psycopg.Connection[Any]) -> dict[str, str | None]:
    """An md5 of every row of every base table (rows as text, in a fixed order)."""
    sums: dict[str, str | None] = {}
    for schema, base, _, _ in _relations(conn):
        row = conn.execute(
            sql.SQL(
                "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM ONLY {} AS t"
            ).format(sql.Identifier(schema, base))
        ).fetchone()
        assert row is not None
        sums[f"{schema}.{base}"] = row[0]
    return sums


def session_checksums(conn: psycopg.Connection[Any], session_id: str) -> dict[str, str | None]:
    """An md5 of every change-store row of one session (all columns, history included)."""
    sums: dict[str, str | None] = {}
    for _, _, schema, changes in _relations(conn):
        row = conn.execute(
            sql.SQL(
                "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM ONLY {} AS t "
                "WHERE _cow_session = %s"
            ).format(sql.Identifier(schema, changes)),
            (session_id,),
        ).fetchone()
        assert row is not None
        sums[f"{schema}.{changes}"] = row[0]
    return sums


def registry_checksums(conn: psycopg.Connection[Any]) -> dict[str, str | None]:
    """An md5 of every table of the ``cowsync`` schema."""
    names = [
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'cowsync' AND c.relkind = 'r' ORDER BY 1"
        )
    ]
    sums: dict[str, str | None] = {}
    for name in names:
        row = conn.execute(
            sql.SQL("SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {} AS t").format(
                sql.Identifier("cowsync", name)
            )
        ).fetchone()
        assert row is not None
        sums[name] = row[0]
    return sums


def engine_objects(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Views, their triggers and the engine's functions as the catalog describes them.

    An agent that could alter, disable, replace or add to any of these would change this.
    """
    return conn.execute(
        """
        SELECT 'relation', c.oid::regclass::text, c.relkind::text, c.relowner::regrole::text,
               pg_get_viewdef(c.oid), c.relhastriggers::text, NULL
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('public', 'cowsync') AND c.relkind IN ('r', 'v', 'S')
        UNION ALL
        SELECT 'trigger', t.tgrelid::regclass::text, t.tgname::text, t.tgenabled::text,
               t.tgfoid::regprocedure::text, NULL, NULL
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public'
        UNION ALL
        SELECT 'function', p.oid::regprocedure::text, p.prosecdef::text,
               p.proowner::regrole::text, md5(p.prosrc), p.proconfig::text,
               array(SELECT x::text FROM unnest(p.proacl) AS x ORDER BY 1)::text
        FROM pg_proc p WHERE p.pronamespace = 'cowsync'::regnamespace
        ORDER BY 1, 2, 3
        """
    ).fetchall()


@dataclass(frozen=True)
class Snapshot:
    """Everything an escape would change, taken by the (superuser) admin connection."""

    bases: dict[str, str | None]
    victim: dict[str, str | None]
    registry: dict[str, str | None]
    objects: list[tuple[Any, ...]]


def snapshot(conn: psycopg.Connection[Any], fortress: Fortress) -> Snapshot:
    """The state an agent must not be able to change."""
    return Snapshot(
        bases=base_checksums(conn),
        victim=session_checksums(conn, fortress.victim_session),
        registry=registry_checksums(conn),
        objects=engine_objects(conn),
    )


def assert_unchanged(before: Snapshot, after: Snapshot) -> None:
    """The bases byte for byte, the victim's session, the registry and the engine objects."""
    assert after.bases == before.bases, "a base table changed"
    assert after.victim == before.victim, "another agent's session changed"
    assert after.registry == before.registry, "the registry changed"
    assert after.objects == before.objects, "a view, trigger or engine function changed"


# --- attacks --------------------------------------------------------------------------------


def refused(
    conn: psycopg.Connection[Any],
    statement: str | sql.Composable,
    params: Iterable[Any] | None = None,
    sqlstates: Iterable[str] = (INSUFFICIENT_PRIVILEGE,),
) -> psycopg.Error:
    """Run ``statement`` expecting PostgreSQL to refuse it with one of ``sqlstates``."""
    expected = set(sqlstates)
    try:
        conn.execute(statement, params)
    except psycopg.Error as error:
        assert error.sqlstate in expected, (
            f"refused with {error.sqlstate} ({error}), expected one of {sorted(expected)}"
        )
        return error
    raise AssertionError(f"not refused: {statement!r}")


def acl_snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    """Who holds which privilege on every relation, function and schema cowsync touches.

    ACLs are compared as sets of grants with the owner's defaults spelled out, so a NULL ACL
    equals the explicit default and the order of the entries does not matter.
    """
    acls: dict[str, list[str]] = {}
    rows = conn.execute(
        """
        SELECT 'relation ' || c.oid::regclass::text,
               array(SELECT format('%s %s %s %s', a.grantor::regrole, a.grantee,
                                   a.privilege_type, a.is_grantable)
                     FROM aclexplode(coalesce(c.relacl, acldefault(
                         (CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END)::"char",
                         c.relowner))) a
                     ORDER BY 1)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('public', 'cowsync') AND c.relkind IN ('r', 'v', 'S')
        UNION ALL
        SELECT 'function ' || p.oid::regprocedure::text,
               array(SELECT format('%s %s %s %s', a.grantor::regrole, a.grantee,
                                   a.privilege_type, a.is_grantable)
                     FROM aclexplode(coalesce(p.proacl, acldefault('f'::"char", p.proowner))) a
                     ORDER BY 1)
        FROM pg_proc p WHERE p.pronamespace = 'cowsync'::regnamespace
        UNION ALL
        SELECT 'schema ' || n.nspname,
               array(SELECT format('%s %s %s %s', a.grantor::regrole, a.grantee,
                                   a.privilege_type, a.is_grantable)
                     FROM aclexplode(coalesce(n.nspacl, acldefault('n'::"char", n.nspowner))) a
                     ORDER BY 1)
        FROM pg_namespace n WHERE n.nspname IN ('public', 'cowsync')
        """
    ).fetchall()
    for name, grants in rows:
        acls[name] = list(grants)
    return acls
