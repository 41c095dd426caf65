"""Run the fidelity matrix and write docs/fidelity.md.

Every case of tests/fidelity/cases.py runs on a plain table, then with its tables
enabled, without a session and in a session (tests/fidelity/runner.py), in both of
cowsync's modes (in place and overlay); this prints one line per case and mode and
writes the Markdown matrix, so the gaps are visible.

Run from the repository root (it creates and drops its own database)::

    .venv/bin/python -m tests.fidelity.matrix
    .venv/bin/python -m tests.fidelity.matrix --dsn postgresql://postgres@127.0.0.1/postgres
    .venv/bin/python -m tests.fidelity.matrix --only merge,truncate --output -
    .venv/bin/python -m tests.fidelity.matrix --cow-mode overlay --output -

Without ``--dsn`` it finds a server the way the test suite does (tests/_pg.py).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg

import cowsync
from tests import _pg
from tests.fidelity.cases import CASES
from tests.fidelity.runner import (
    COW_MODE_TITLES,
    COW_MODES,
    DIFFERENT,
    DOCUMENTED,
    MODE_TITLES,
    MODES,
    SAME,
    STALE,
    Case,
    CaseOutcome,
    CowMode,
    Mode,
    Result,
    run_all_modes,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = ROOT / "docs" / "fidelity.md"

# Observations every run makes after its steps; the plain column summarises the steps.
_AFTER_STEPS = ("state: ", "final: ", "commit", "production untouched")


@contextmanager
def fidelity_database(admin_dsn: str | None) -> Iterator[str]:
    """A fresh database with the engine deployed; dropped on exit."""
    found = None
    if admin_dsn is None:
        found = _pg.discover_once()
        if found.server is None:
            raise SystemExit(found.unavailable_message())
        admin_dsn = found.server.admin_dsn
    databases = _pg.TestDatabases(admin_dsn)
    databases.create_template()
    name = databases.create_database()
    dsn = databases.dsn_for(name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            cowsync.deploy(conn)
        yield dsn
    finally:
        databases.drop_database(name)
        databases.close()
        _pg.shutdown()


def run_matrix(
    dsn: str, cases: Sequence[Case], cow_modes: Sequence[CowMode] = COW_MODES
) -> dict[CowMode, list[CaseOutcome]]:
    """Run every case in every mode of each of cowsync's modes, printing one line per
    case and cowsync mode as it finishes."""
    outcomes: dict[CowMode, list[CaseOutcome]] = {}
    for cow_mode in cow_modes:
        outcomes[cow_mode] = []
        for case in cases:
            started = time.monotonic()
            outcome = run_all_modes(dsn, case, case.name, cow_mode)
            outcomes[cow_mode].append(outcome)
            verdicts = "  ".join(f"{m}: {outcome.judgements[m].verdict}" for m in MODES[1:])
            print(
                f"{case.name:<34} {cow_mode:<8} {verdicts}  ({time.monotonic() - started:.2f} s)",
                flush=True,
            )
    return outcomes


# --- rendering --------------------------------------------------------------------------------


def brief(value: object, limit: int = 60) -> str:
    """A value as the matrix shows it."""
    if isinstance(value, Result):
        if value.sqlstate is None and value.rows is not None:
            text = repr(list(value.rows)) if value.rows else "no rows"
        else:
            text = value.brief()
    else:
        text = repr(value) if not isinstance(value, str) else value
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def row_difference(plain: object, value: object) -> str | None:
    """For two table contents: the rows only one of them has; else None."""
    if not (isinstance(plain, tuple) and isinstance(value, tuple)):
        return None
    missing = [row for row in plain if row not in value]
    extra = [row for row in value if row not in plain]
    parts = []
    if missing:
        parts.append(f"lacks {brief(missing, 100)}")
    if extra:
        parts.append(f"has {brief(extra, 100)}")
    return (", ".join(parts) + " compared with the plain table") if parts else None


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def steps_summary(observations: dict[str, object]) -> str:
    """The plain table's step results, e.g. ``1 row · 23505 items_pkey · ok (1)``."""
    parts: list[str] = []
    for label, value in observations.items():
        if label.startswith(_AFTER_STEPS):
            continue
        if isinstance(value, Result):
            parts.append(value.brief())
        elif isinstance(value, bool) and "waits" in label:
            parts.append("waits" if value else "does not wait")
        else:
            parts.append(brief(value, 24))
    collapsed: list[str] = []
    for part, group in itertools.groupby(parts):
        n = len(list(group))
        collapsed.append(f"{part} x{n}" if n > 1 else part)
    return " · ".join(collapsed) or "-"


def mode_cell(outcome: CaseOutcome, mode: Mode) -> str:
    """``= plain`` or the differences of one mode."""
    judgement = outcome.judgements[mode]
    if not judgement.differences:
        return "= plain"
    documented = outcome.documented.get(mode)
    announced = set(documented.expect) if documented is not None else set()
    # The differences that matter; the rest follow from them (e.g. table contents
    # after a refused statement) and are listed under "Differences in detail".
    key = [k for k in judgement.differences if k in announced or k in judgement.unexplained]
    steps = [k for k in key if not k.startswith(_AFTER_STEPS)]
    key = steps or key
    shown = []
    for label in key[:3]:
        plain, value = judgement.differences[label]
        shown.append(f"`{brief(label, 50)}`: {brief(value, 40)} (plain: {brief(plain, 30)})")
    rest = len(judgement.differences) - len(shown)
    if rest:
        shown.append(f"+{rest} more")
    return "<br>".join(shown)


def expected_verdict(case: Case, cow_mode: CowMode) -> str:
    """The verdict the case's test passes with in ``cow_mode`` (a known gap's test is
    an expected failure: it must not get this verdict)."""
    return DOCUMENTED if case.documented_in(cow_mode) else SAME


def as_expected(outcome: CaseOutcome) -> bool:
    """Whether the outcome is what the case's test expects, known gaps included."""
    passes = outcome.verdict == expected_verdict(outcome.case, outcome.cow_mode)
    return not passes if outcome.bug else passes


def verdict_cell(outcome: CaseOutcome) -> str:
    verdict = outcome.verdict
    if verdict == DIFFERENT:
        text = f"**{DIFFERENT}**"
    elif verdict == STALE:
        text = f"**{STALE}**"
    else:
        text = verdict
    if outcome.bug:
        text += f" ({outcome.bug.split(':', 1)[0]})"
    return text


def counts_line(cow_mode: CowMode, outcomes: Sequence[CaseOutcome]) -> str:
    """``in place: 79 cases: 55 same, …`` for one of cowsync's modes."""
    counts = Counter(o.verdict for o in outcomes)
    return (
        f"{COW_MODE_TITLES[cow_mode]}: {len(outcomes)} cases: {counts[SAME]} same, "
        f"{counts[DOCUMENTED]} documented difference, {counts[DIFFERENT]} DIFFERENT"
        + (f", {counts[STALE]} with a stale documented difference" if counts[STALE] else "")
        + "."
    )


def render_markdown(outcomes: Mapping[CowMode, Sequence[CaseOutcome]]) -> str:
    """docs/fidelity.md: one row per case, with a column per mode for each of
    cowsync's modes in ``outcomes`` (their case lists in the same order)."""
    cow_modes = list(outcomes)
    first = outcomes[cow_modes[0]]
    lines = [
        "# Fidelity matrix",
        "",
        "Generated by `.venv/bin/python -m tests.fidelity.matrix`; do not edit by hand.",
        "The cases live in `tests/fidelity/cases.py`; `tests/fidelity/` runs the same",
        "cases as tests (`COWSYNC_TEST_MODE=overlay` runs them in overlay mode), and a",
        "test checks that this page's verdicts are the ones the cases expect.",
        "",
        "Each case runs on a **plain table** (the reference), then, for each of",
        "cowsync's modes, with its tables enabled **with no session** (production) and",
        "**in a session**, which is then committed; each run in a fresh schema. In place",
        "(the default) production goes through the COW view; in overlay mode",
        "([overlay.md](overlay.md)) production uses the table itself and sessions reach",
        "the view through their search_path. A mode matches the plain table when every",
        "step gives the same rows, rowcount and RETURNING, or the same SQLSTATE with the",
        "same constraint (or column) name, and when the tables end up the same: as the",
        "connection sees them, and in production after the session's commit.",
        "",
        "Verdicts: **same**; **documented difference** (the case states the value the",
        "mode shows instead and cites `docs/limitations.md`); **DIFFERENT** (not",
        "documented: an engine bug, a limitation whose test is an expected failure, or",
        "a gap in the docs; the kind follows in parentheses).",
        "",
        *[f"- {counts_line(cow_mode, outcomes[cow_mode])}" for cow_mode in cow_modes],
        "",
    ]
    header = ["case", MODE_TITLES["plain"]]
    for cow_mode in cow_modes:
        title = COW_MODE_TITLES[cow_mode]
        header += [f"{title}: {MODE_TITLES[m]}" for m in MODES[1:]] + [title]
    group = None
    for index, outcome in enumerate(first):
        case = outcome.case
        if case.group != group:
            group = case.group
            lines += [
                f"## {group.capitalize()}",
                "",
                "| " + " | ".join(header) + " |",
                "|" + "---|" * len(header),
            ]
        row = [f"{case.title} (`{case.name}`)", steps_summary(outcome.observations["plain"])]
        for cow_mode in cow_modes:
            this = outcomes[cow_mode][index]
            row += [mode_cell(this, m) for m in MODES[1:]] + [verdict_cell(this)]
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
        following = first[index + 1 :]
        if not following or following[0].case.group != group:
            lines.append("")
    details = [
        (cow_mode, o) for cow_mode in cow_modes for o in outcomes[cow_mode] if o.verdict != SAME
    ]
    if details:
        lines += ["## Differences in detail", ""]
    for cow_mode, outcome in details:
        case = outcome.case
        lines += [f"### `{case.name}` ({COW_MODE_TITLES[cow_mode]}): {outcome.verdict}", ""]
        if outcome.bug:
            lines += [f"Known: {outcome.bug}", ""]
        for mode, judgement in outcome.judgements.items():
            documented = outcome.documented.get(mode)
            if documented is not None:
                lines.append(f"- {MODE_TITLES[mode]}: documented: “{documented.cite}”.")
            for label, (plain, value) in judgement.differences.items():
                if label in judgement.unexplained:
                    flag = " **(not documented)**"
                elif documented is not None and label not in documented.expect:
                    flag = " (follows from the above)"
                else:
                    flag = ""
                rows = row_difference(plain, value)
                what = rows or f"gives {brief(value, 80)}, plain table {brief(plain, 80)}"
                lines.append(f"- {MODE_TITLES[mode]}: `{brief(label, 90)}` {what}{flag}")
            for label in judgement.unexplained:
                if label not in judgement.differences and documented is not None:
                    lines.append(
                        f"- {MODE_TITLES[mode]}: documented `{brief(label, 90)}` = "
                        f"{brief(documented.expect.get(label), 60)} **not seen**"
                    )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--dsn", help="a server's maintenance database (default: as the tests)")
    parser.add_argument(
        "--output", default=str(DEFAULT_OUTPUT), help="Markdown file to write, or - for stdout"
    )
    parser.add_argument("--only", help="comma-separated case names")
    parser.add_argument(
        "--cow-mode",
        choices=COW_MODES,
        action="append",
        help="run only this mode of cowsync's (repeatable; default: both)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the matrix; exit 1 when a case's verdict is not the one its test expects
    (DIFFERENT or stale without a known gap, or a known gap that no longer shows)."""
    args = parse_args(argv)
    cases = CASES
    if args.only:
        wanted = set(args.only.split(","))
        cases = [c for c in CASES if c.name in wanted]
        unknown = wanted - {c.name for c in cases}
        if unknown:
            raise SystemExit(f"unknown case(s): {', '.join(sorted(unknown))}")
    with fidelity_database(args.dsn) as dsn:
        outcomes = run_matrix(dsn, cases, args.cow_mode or COW_MODES)
    markdown = render_markdown(outcomes)
    if args.output == "-":
        sys.stdout.write(markdown)
    else:
        Path(args.output).write_text(markdown)
        print(f"wrote {args.output}")
    unexpected = []
    for cow_mode, mode_outcomes in outcomes.items():
        print(counts_line(cow_mode, mode_outcomes))
        unexpected += [
            f"{o.case.name} ({cow_mode}): {o.verdict}" for o in mode_outcomes if not as_expected(o)
        ]
    for line in unexpected:
        print(f"unexpected: {line}")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
