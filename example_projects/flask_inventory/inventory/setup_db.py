"""``flask init-db``: create the inventory tables, install cowsync and COW-enable them."""

from __future__ import annotations

from importlib import resources

import click
import psycopg
from flask import Flask
from psycopg import sql

import cowsync
from cowsync.integrations.flask import CowSync

TABLES = ("warehouses", "products", "stock", "orders")


def init_db(conn: psycopg.Connection, *, reset: bool = False) -> None:
    """Create and seed the tables, deploy cowsync, enable the tables (``reset``: start over)."""
    cowsync.deploy(conn)
    enabled = {status.name for status in cowsync.status(conn)}
    if reset:
        for table in reversed(TABLES):
            if table in enabled:
                # force: drop whatever sessions still hold; this is a demo reset.
                cowsync.disable(conn, table, force=True)
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
    elif enabled & set(TABLES):
        raise click.ClickException("the inventory exists already; use --reset to start over")
    with conn.transaction():
        conn.execute(resources.files(__package__).joinpath("schema.sql").read_text())
    for table in TABLES:
        cowsync.enable(conn, table)


def register(app: Flask, cow: CowSync) -> None:
    """Add ``flask init-db`` to ``app``, working on the database cowsync uses."""

    @app.cli.command("init-db")
    @click.option("--reset", is_flag=True, help="Drop the inventory tables first.")
    def init_db_command(reset: bool) -> None:
        """Create the inventory, install cowsync and COW-enable the tables."""
        url = cow.state(app).database_url()
        if url is None:
            raise click.ClickException("set DATABASE_URL to the inventory's database")
        with psycopg.connect(url, autocommit=True) as conn:
            init_db(conn, reset=reset)
        click.echo(f"inventory ready: {', '.join(TABLES)} are COW-enabled")
