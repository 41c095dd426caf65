"""Output for people: aligned tables, a ``--stat`` summary and a coloured row diff.

Every function takes a :class:`rich.console.Console` and the values the core API returns.
Text from the database (values, keys, session and operation ids, labels, names) goes
through :func:`cowsync.inert.inert`, so control, bidirectional and invisible characters
show as escapes and cannot move the cursor or reorder a line, and is always wrapped in
:class:`rich.text.Text`, never parsed as markup, so a value like ``[red]`` prints as itself
whatever the console's settings.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from ..apply import CommitResult, Conflict, DiscardResult
from ..inert import inert
from ..install import TableStatus
from ..reviewing import OperationInfo, RowChange, SessionInfo

KIND_STYLE = {"insert": "green", "update": "yellow", "delete": "red"}
KIND_MARK = {"insert": "+", "update": "~", "delete": "-"}
CHANGED_MARK = "*"
_MAX_VALUE = 60  # characters of one value shown in a table; --json has them whole
_MAX_BAR = 30
# Past this many columns an update lists only the changed ones (and the key).
_FULL_ROW_COLUMNS = 12


# --- values -----------------------------------------------------------------------


def shown(text: str, style: str = "") -> Text:
    """Text from the database (a name, an id, a label) as inert :class:`Text`."""
    return Text(inert(text), style=style)


def _shorten(raw: str) -> str:
    """``inert(raw)``, cut to ``_MAX_VALUE`` characters without splitting an escape."""
    whole = inert(raw)
    if len(whole) <= _MAX_VALUE:
        return whole
    kept: list[str] = []
    width = 0
    for char in raw:  # inert works character by character, so escapes end on a boundary
        piece = inert(char)
        if width + len(piece) > _MAX_VALUE - 1:
            break
        kept.append(piece)
        width += len(piece)
    return "".join(kept) + "…"


def value_text(value: Any, style: str = "", whole: bool = False) -> Text:
    """One database value as inert text: NULL dimmed, long values shortened (unless
    ``whole``)."""
    if value is None:
        return Text("NULL", style="dim italic")
    if isinstance(value, (bytes, bytearray, memoryview)):
        # Hex digits only, nothing to escape; a text value written \x00 shows as \\x00.
        raw = "\\x" + bytes(value).hex()
        if len(raw) > _MAX_VALUE and not whole:
            raw = raw[: _MAX_VALUE - 1] + "…"
        return Text(raw, style=style)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        raw = value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    elif isinstance(value, Decimal):
        raw = str(value)
    elif isinstance(value, (dict, list)):
        raw = json.dumps(value, default=str, ensure_ascii=False)
    else:
        raw = str(value)
    return Text(inert(raw) if whole else _shorten(raw), style=style)


def key_text(key: Mapping[str, Any]) -> Text:
    """A row key as ``col=value col=value``."""
    text = Text()
    for i, (column, value) in enumerate(key.items()):
        if i:
            text.append(" ")
        text.append(f"{inert(column)}=", style="dim")
        text.append_text(value_text(value))
    return text


def when(value: dt.datetime | None) -> Text:
    """A timestamp to the second, in the timezone the database reported."""
    if value is None:
        return Text("—", style="dim")
    return Text(value.strftime("%Y-%m-%d %H:%M:%S"))


_RIGHT = frozenset(
    {"#", "rows", "sessions", "pending rows", "operations", "inserted", "updated", "deleted"}
)
# Ids are what people copy into the next command: never wrap them, shrink other columns.
_NO_WRAP = frozenset({"#", "operation", "session", "table"})


def _table(*columns: str, title: str | None = None) -> Table:
    # Headers and titles as Text too: a console with markup on must not parse them.
    table = Table(
        box=box.SIMPLE_HEAD,
        title=None if title is None else Text(title),
        title_justify="left",
        pad_edge=False,
    )
    for column in columns:
        table.add_column(
            Text(column),
            justify="right" if column in _RIGHT else "left",
            no_wrap=column in _NO_WRAP,
            overflow="fold",
        )
    return table


# --- status, sessions, operations, dependencies -----------------------------------------


def render_status(console: Console, tables: Sequence[TableStatus], engine_version: int) -> None:
    """Enabled tables and what sessions hold for them."""
    if not tables:
        console.print(
            f"cowsync engine {engine_version} is deployed; no table is enabled yet "
            "(cowsync enable TABLE)"
        )
        return
    table = _table("table", "key", "mode", "sessions", "pending rows")
    for t in tables:
        table.add_row(
            shown(t.table),
            shown(", ".join(t.key_columns)),
            Text(t.mode),
            str(t.sessions),
            str(t.pending_rows),
        )
    console.print(table)
    pending = sum(t.pending_rows for t in tables)
    console.print(
        f"cowsync engine {engine_version}: {len(tables)} table(s) enabled, "
        f"{pending} row(s) pending review"
    )
    for t in tables:
        if t.linked_not_enabled:
            console.print(
                Text(
                    f"note: {inert(t.table)} has foreign keys to or from "
                    f"{inert(', '.join(t.linked_not_enabled))}, not enabled: a session's writes "
                    "to those reach production and their rows are checked against "
                    "production only; enable them too (docs/limitations.md)",
                    style="yellow",
                )
            )


def render_sessions(console: Console, sessions: Sequence[SessionInfo]) -> None:
    """Sessions with pending changes, oldest first."""
    if not sessions:
        console.print("no sessions: nothing is waiting for review")
        return
    table = _table("session", "label", "operations", "rows", "tables", "created", "last write")
    for s in sessions:
        table.add_row(
            shown(s.session_id, style="bold"),
            shown(s.label or "") + (Text(" sealed", style="yellow") if s.sealed else Text("")),
            str(s.operations),
            str(s.rows),
            shown(", ".join(s.tables)),
            when(s.created_at),
            when(s.last_write_at),
        )
    console.print(table)


def _counts(inserted: int, updated: int, deleted: int) -> Text:
    text = Text()
    for mark, count, kind in (
        ("+", inserted, "insert"),
        ("~", updated, "update"),
        ("-", deleted, "delete"),
    ):
        if count:
            if text:
                text.append(" ")
            text.append(f"{mark}{count}", style=KIND_STYLE[kind])
    return text or Text("none", style="dim")


def render_operations(
    console: Console,
    session_id: str,
    operations: Sequence[OperationInfo],
    dependencies: Mapping[str, set[str]] | None = None,
) -> None:
    """A session's operations in order, with what each wrote (and what it builds on)."""
    if not operations:
        console.print(Text(f"session {inert(session_id)} has no operations"))
        return
    columns = ["#", "operation", "rows", "tables", "first write", "last write"]
    if dependencies is not None:
        columns.append("depends on")
    table = _table(*columns, title=f"session {inert(session_id)}")
    for i, op in enumerate(operations, 1):
        row: list[RenderableType] = [
            str(i),
            shown(op.operation_id, style="bold"),
            _counts(op.inserted, op.updated, op.deleted),
            shown(", ".join(op.tables)),
            when(op.first_write_at),
            when(op.last_write_at),
        ]
        if dependencies is not None:
            row.append(_dependency_text(dependencies.get(op.operation_id, set())))
        table.add_row(*row)
    console.print(table)


def _dependency_text(needs: Iterable[str]) -> Text:
    names = sorted(needs)
    return shown(", ".join(names)) if names else Text("—", style="dim")


def render_dependencies(
    console: Console, session_id: str, dependencies: Mapping[str, set[str]]
) -> None:
    """Which operations each operation builds on (and so must be committed with)."""
    if not dependencies:
        console.print(Text(f"session {inert(session_id)} has no operations"))
        return
    dependents: dict[str, set[str]] = {op: set() for op in dependencies}
    for op, needs in dependencies.items():
        for need in needs:
            dependents.setdefault(need, set()).add(op)
    table = _table("operation", "depends on", "needed by", title=f"session {inert(session_id)}")
    for op, needs in dependencies.items():
        table.add_row(
            shown(op, style="bold"), _dependency_text(needs), _dependency_text(dependents[op])
        )
    console.print(table)
    console.print(
        "an operation commits only with what it depends on, and is discarded only with "
        "what needs it",
        style="dim",
    )


# --- diff ----------------------------------------------------------------------------


def diff_stat(changes: Iterable[RowChange]) -> dict[str, dict[str, int]]:
    """Rows changed per table and kind: ``{table: {"insert": n, "update": n, "delete": n}}``."""
    stat: dict[str, Counter[str]] = {}
    for change in changes:
        stat.setdefault(change.table, Counter())[change.kind] += 1
    return {
        table: {kind: counts.get(kind, 0) for kind in ("insert", "update", "delete")}
        for table, counts in stat.items()
    }


def render_stat(console: Console, changes: Sequence[RowChange]) -> None:
    """A ``git diff --stat``-like summary: rows per table, with a bar by kind."""
    stat = diff_stat(changes)
    if not stat:
        console.print("no changes")
        return
    biggest = max(sum(kinds.values()) for kinds in stat.values())
    scale = min(1.0, _MAX_BAR / biggest)
    table = Table.grid(padding=(0, 1))
    table.add_column()
    table.add_column()
    table.add_column(justify="right")
    table.add_column()
    for name, kinds in stat.items():
        bar = Text()
        for kind in ("insert", "update", "delete"):
            count = kinds[kind]
            if count:
                bar.append(KIND_MARK[kind] * max(1, round(count * scale)), style=KIND_STYLE[kind])
        table.add_row(shown(name), "|", str(sum(kinds.values())), bar)
    console.print(table)
    totals = Counter[str]()
    for kinds in stat.values():
        totals.update(kinds)
    console.print(
        f"{len(stat)} table(s), {sum(totals.values())} row(s) changed: "
        f"{totals['insert']} inserted, {totals['update']} updated, {totals['delete']} deleted"
    )


def _change_header(change: RowChange) -> Text:
    style = KIND_STYLE[change.kind]
    text = Text(f"{KIND_MARK[change.kind]} {change.kind:<6} ", style=f"bold {style}")
    text.append(inert(change.table), style="bold")
    text.append("  ")
    text.append_text(key_text(change.key))
    text.append(f"  by {inert(change.operation)}", style="dim")
    return text


def _change_body(change: RowChange) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=1)  # changed-column mark
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    row = change.after if change.after is not None else change.before
    assert row is not None
    columns = list(row)
    if change.kind != "update":
        style = KIND_STYLE[change.kind]
        for column in columns:
            grid.add_row(
                Text(KIND_MARK[change.kind], style=style),
                shown(column),
                value_text(row[column], style),
            )
        return grid
    assert change.before is not None and change.after is not None
    if len(columns) > _FULL_ROW_COLUMNS:
        columns = [c for c in columns if c in change.changed or c in change.key]
    for column in columns:
        if column in change.changed:
            value = _change_text(change.before[column], change.after[column])
            grid.add_row(Text(CHANGED_MARK, style="yellow bold"), shown(column), value)
        else:
            grid.add_row("", shown(column, style="dim"), value_text(change.after[column], "dim"))
    return grid


def _change_text(before: Any, after: Any, old: str = "red", new: str = "green") -> Text:
    """``before → after``; whole values when shortening would make them look the same."""
    was, now = value_text(before, old), value_text(after, new)
    if was.plain == now.plain:
        was, now = value_text(before, old, whole=True), value_text(after, new, whole=True)
    was.append(" → ", style="yellow")
    was.append_text(now)
    return was


def render_changes(console: Console, changes: Sequence[RowChange]) -> None:
    """Each changed row: before → after, the changed columns marked with ``*``."""
    for change in changes:
        console.print(_change_header(change))
        console.print(_change_body(change), style="", overflow="fold")
        console.print()


def render_diff(
    console: Console,
    changes: Sequence[RowChange],
    stat_only: bool = False,
    limit: int | None = None,
) -> None:
    """The summary, then (unless ``stat_only``) each changed row, at most ``limit`` of them."""
    render_stat(console, changes)
    if not changes or stat_only:
        return
    console.print()
    shown = changes if not limit else changes[:limit]
    render_changes(console, shown)
    if len(shown) < len(changes):
        console.print(
            f"… {len(changes) - len(shown)} more changed row(s) not shown "
            "(--limit 0 shows them all; --json gives every row)",
            style="dim",
        )


# --- commit and discard ---------------------------------------------------------------


def _conflict_columns(c: Conflict) -> list[str]:
    """The columns worth showing: changed on both sides, else changed on either."""
    if c.columns:
        return list(c.columns)
    before, base, mine = c.before or {}, c.base or {}, c.session or {}
    names = list(dict.fromkeys([*before, *base, *mine]))
    changed = [n for n in names if before.get(n) != base.get(n) or before.get(n) != mine.get(n)]
    return changed or [""]


def render_conflicts(console: Console, conflicts: Sequence[Conflict]) -> None:
    """Rows production changed after the session read them: then, now, and the session's."""
    table = _table(
        "table",
        "key",
        "kind",
        "column",
        "session read",
        "production now",
        "session",
        title="conflicts",
    )
    for c in conflicts:
        kind = c.kind if c.resolution == "abort" else f"{c.kind}, {c.resolution}"
        for i, column in enumerate(_conflict_columns(c)):
            first = i == 0
            table.add_row(
                shown(c.table) if first else "",
                key_text(c.key) if first else "",
                Text(kind) if first else "",
                shown(column),
                _cell(c.before, column),
                _cell(c.base, column, missing="row deleted"),
                _cell(c.session, column, missing="deleted"),
            )
    console.print(table)


def _cell(row: Mapping[str, Any] | None, column: str, missing: str = "no row") -> Text:
    if row is None:
        return Text(missing, style="dim italic")
    if not column:
        return Text("")
    return value_text(row.get(column))


def render_commit_result(console: Console, result: CommitResult) -> None:
    """What a commit applied, per table."""
    if result.nothing_to_commit:
        console.print(Text(f"nothing to commit in session {inert(result.session_id)}"))
        return
    table = _table("table", "inserted", "updated", "deleted")
    for name, kinds in result.applied.items():
        table.add_row(
            shown(name),
            str(kinds.get("insert", 0)),
            str(kinds.get("update", 0)),
            str(kinds.get("delete", 0)),
        )
    console.print(table)
    if result.conflicts:
        render_conflicts(console, result.conflicts)
    console.print(
        Text.assemble(
            ("committed ", "green bold"),
            f"{result.total} row(s) of session {inert(result.session_id)} "
            f"(operations: {inert(', '.join(result.operations)) or 'none'})",
        )
    )


def render_discard_result(console: Console, result: DiscardResult) -> None:
    """What a discard removed."""
    if not result.total:
        console.print(Text(f"nothing to discard in session {inert(result.session_id)}"))
        return
    console.print(
        Text.assemble(
            ("discarded ", "red bold"),
            f"{result.total} change row(s) of session {inert(result.session_id)} "
            f"(operations: {inert(', '.join(result.operations)) or 'none'}; production untouched)",
        )
    )


def versions_table(
    title: str,
    columns: Sequence[str],
    key_width: int,
    baseline: Sequence[Sequence[Any]],
    rows: Sequence[Sequence[Any]],
) -> Table:
    """Query results compared with a baseline by key: new rows ``+``, changed ``~`` (the
    changed values marked), rows gone ``-`` (shown as they were)."""
    table = _table("", *columns, title=title)
    before = {tuple(r[:key_width]): r for r in baseline}
    now = {tuple(r[:key_width]): r for r in rows}
    for key in sorted(before.keys() | now.keys(), key=lambda k: tuple(map(str, k))):
        old, new = before.get(key), now.get(key)
        if new is None:
            assert old is not None
            table.add_row(Text("-", style="red bold"), *(value_text(v, "red strike") for v in old))
        elif old is None:
            table.add_row(Text("+", style="green bold"), *(value_text(v, "green") for v in new))
        elif tuple(old) != tuple(new):
            cells: list[RenderableType] = [Text("~", style="yellow bold")]
            for was, value in zip(old, new):
                if was == value:
                    cells.append(value_text(value))
                else:
                    cells.append(_change_text(was, value, "red strike", "green bold"))
            table.add_row(*cells)
        else:
            table.add_row("", *(value_text(v) for v in new))
    return table


__all__ = [
    "diff_stat",
    "render_changes",
    "render_commit_result",
    "render_conflicts",
    "render_dependencies",
    "render_diff",
    "render_discard_result",
    "render_operations",
    "render_sessions",
    "render_stat",
    "render_status",
    "shown",
    "value_text",
    "versions_table",
]
