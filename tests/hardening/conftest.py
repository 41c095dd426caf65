"""Fixtures for the hardening tests (tests/hardening/).

Two ways to get a hardened database (see tests/hardening/_fortress.py for what is in it):

- ``fortress`` + ``admin`` (module scope): one database per module, shared by tests that
  only attack it. Each attack is refused, so the tests cannot disturb one another; each
  still compares a snapshot taken before and after itself. Agent connections are opened
  fresh per test (``connect_as``) so no ``SET`` outlives its test.
- ``fresh_fortress`` + ``fresh_admin``: a private copy for one test that changes privileges,
  roles or settings, or commits. Building a fortress costs a second or more on a loaded
  machine, so each module builds one template and every test gets a ``CREATE DATABASE ...
  TEMPLATE`` copy of it (same roles, same sessions).

Roles are cluster-wide: every role made here has a random name and is dropped afterwards
(``make_role`` for the harness's database, ``make_fresh_role`` for a fresh fortress).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

import cowsync
from tests import _pg
from tests.hardening._fortress import Fortress, RoleFactory, build_fortress


def _fortress_database(pg_admin_dsn: str, pg_databases: _pg.TestDatabases) -> Iterator[Fortress]:
    name = pg_databases.create_database()
    dsn = pg_databases.dsn_for(name)
    roles = RoleFactory(pg_admin_dsn, dsn)
    try:
        with psycopg.connect(dsn, autocommit=True) as admin:
            fortress = build_fortress(admin, dsn, roles)
        yield fortress
    finally:
        roles.drop_all()
        pg_databases.drop_database(name)


@pytest.fixture(scope="module")
def fortress(pg_admin_dsn: str, pg_databases: _pg.TestDatabases) -> Iterator[Fortress]:
    """A hardened database that the tests of one module share (attacks only)."""
    yield from _fortress_database(pg_admin_dsn, pg_databases)


@pytest.fixture
def admin(fortress: Fortress) -> Iterator[psycopg.Connection[Any]]:
    """A superuser connection to the shared fortress, to look at what the agent did."""
    with psycopg.connect(fortress.dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def fortress_template(pg_admin_dsn: str, pg_databases: _pg.TestDatabases) -> Iterator[Fortress]:
    """A fortress nobody connects to, copied by ``fresh_fortress``."""
    yield from _fortress_database(pg_admin_dsn, pg_databases)


@pytest.fixture
def fresh_fortress(
    fortress_template: Fortress, pg_admin_dsn: str, pg_databases: _pg.TestDatabases
) -> Iterator[Fortress]:
    """A private copy of the module's fortress for one test."""
    template = psycopg.conninfo.conninfo_to_dict(fortress_template.dsn)["dbname"]
    name = _pg.random_name(_pg.DATABASE_PREFIX)
    with psycopg.connect(pg_admin_dsn, autocommit=True) as server:
        server.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(str(template))
            )
        )
    try:
        yield dataclasses.replace(fortress_template, dsn=pg_databases.dsn_for(name))
    finally:
        pg_databases.drop_database(name)


@pytest.fixture
def fresh_admin(fresh_fortress: Fortress) -> Iterator[psycopg.Connection[Any]]:
    """A superuser connection to this test's fresh fortress."""
    with psycopg.connect(fresh_fortress.dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def make_fresh_role(pg_admin_dsn: str, fresh_fortress: Fortress) -> Iterator[RoleFactory]:
    """``make_fresh_role(kind, attributes="LOGIN")`` for roles used in a fresh fortress."""
    roles = RoleFactory(pg_admin_dsn, fresh_fortress.dsn)
    try:
        yield roles
    finally:
        roles.drop_all()


@pytest.fixture
def fresh_agent(
    fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any], make_fresh_role: RoleFactory
) -> str:
    """One more agent role, registered by hardening the fresh fortress again.

    For tests that change role attributes or memberships: those are cluster-wide, so they
    must not touch the roles the module's fortresses share.
    """
    agent = make_fresh_role("agent")
    issues = cowsync.harden(
        fresh_admin,
        agent_roles=[fresh_fortress.agent, fresh_fortress.other_agent, agent],
        reviewer_roles=[fresh_fortress.reviewer],
    )
    assert issues == [], issues
    return agent


@pytest.fixture
def make_role(pg_admin_dsn: str, dsn: str) -> Iterator[RoleFactory]:
    """``make_role(kind, attributes="LOGIN")`` for roles used in the harness's database."""
    roles = RoleFactory(pg_admin_dsn, dsn)
    try:
        yield roles
    finally:
        roles.drop_all()


@pytest.fixture
def connect_as() -> Iterator[Callable[[Fortress, str], psycopg.Connection[Any]]]:
    """``connect_as(fortress, role)``: an autocommit connection as ``role``, closed after."""
    opened: list[psycopg.Connection[Any]] = []

    def open_as(fortress: Fortress, role: str) -> psycopg.Connection[Any]:
        conn = fortress.connect_as(role)
        opened.append(conn)
        return conn

    try:
        yield open_as
    finally:
        for conn in opened:
            conn.close()


@pytest.fixture
def strict_fortress(fresh_fortress: Fortress, fresh_admin: psycopg.Connection[Any]) -> Fortress:
    """A fresh fortress hardened again, now with ``read_requires_session``."""
    cowsync.harden(
        fresh_admin,
        agent_roles=[fresh_fortress.agent, fresh_fortress.other_agent],
        reviewer_roles=[fresh_fortress.reviewer],
        read_requires_session=True,
    )
    return fresh_fortress
