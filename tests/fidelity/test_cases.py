"""The case list itself: documented differences cite docs/limitations.md, known gaps
are classified, and the judge tells same, documented and different apart."""

from __future__ import annotations

from pathlib import Path

from tests.fidelity.cases import CASES, KNOWN_GAPS
from tests.fidelity.matrix import render_markdown
from tests.fidelity.runner import (
    DIFFERENT,
    DOCUMENTED,
    MODES,
    SAME,
    STALE,
    CaseOutcome,
    Documented,
    Result,
    err,
    judge,
)

LIMITATIONS = Path(__file__).resolve().parents[2] / "docs" / "limitations.md"


def test_every_documented_difference_cites_limitations_md() -> None:
    text = " ".join(LIMITATIONS.read_text().split())  # the file wraps its lines
    missing = [
        f"{case.name} [{mode}]: {documented.cite!r}"
        for case in CASES
        for mode, documented in case.documented.items()
        if " ".join(documented.cite.split()) not in text
    ]
    assert missing == []


def test_every_known_gap_says_what_kind_it_is() -> None:
    kinds = ("engine bug:", "undocumented:", "docs bug:", "documented limitation:")
    assert [name for name, why in KNOWN_GAPS.items() if not why.startswith(kinds)] == []


def test_the_matrix_covers_every_statement_and_constraint_of_the_issue() -> None:
    names = {case.name for case in CASES}
    required = {
        "insert_returning", "insert_multirow", "insert_select", "on_conflict_do_nothing",
        "on_conflict_target_do_nothing", "on_conflict_do_update", "update_from",
        "update_returning", "delete_using", "delete_returning", "select_for_update",
        "skip_locked_nowait", "lock_waits_update", "session_lock_blocks_production",
        "copy_from", "truncate", "truncate_helper", "prepared", "prepared_generic",
        "named_cursor", "alter_add_column", "alter_helper_add_column", "user_triggers",
        "primary_key", "unique_multicolumn", "unique_partial", "unique_expression",
        "not_null", "check", "domain", "type_coercion", "fk_child_checks",
        "fk_on_delete_no_action", "fk_on_delete_restrict", "fk_on_delete_cascade",
        "fk_on_delete_set_null", "fk_on_delete_set_default", "fk_parent_not_enabled",
        "fk_child_not_enabled", "key_freed_by_delete", "savepoint_rollback", "get_or_create",
        "identity_always",
    }  # fmt: skip
    assert required - names == set()


# --- the judge ----------------------------------------------------------------------------------

PLAIN = {"INSERT": Result(rowcount=1), "state: items": ((1,),)}
REFUSED = {"INSERT": err("42P10"), "state: items": ()}


def test_equal_observations_are_the_same() -> None:
    assert judge(PLAIN, dict(PLAIN), None).verdict == SAME


def test_an_undocumented_difference_is_different() -> None:
    judgement = judge(PLAIN, REFUSED, None)
    assert judgement.verdict == DIFFERENT
    assert judgement.unexplained == ("INSERT", "state: items")


def test_a_difference_as_documented_is_documented() -> None:
    documented = Documented("cite", {"INSERT": err("42P10")}, loose=("state:",))
    assert judge(PLAIN, REFUSED, documented).verdict == DOCUMENTED


def test_a_documented_difference_with_another_outcome_is_different() -> None:
    documented = Documented("cite", {"INSERT": err("0A000")}, loose=("state:",))
    judgement = judge(PLAIN, REFUSED, documented)
    assert judgement.verdict == DIFFERENT
    assert judgement.unexplained == ("INSERT",)


def test_a_difference_beyond_the_documented_ones_is_different() -> None:
    documented = Documented("cite", {"INSERT": err("42P10")})
    assert judge(PLAIN, REFUSED, documented).unexplained == ("state: items",)


def test_a_documented_difference_that_no_longer_occurs_is_stale() -> None:
    documented = Documented("cite", {"INSERT": err("42P10")})
    assert judge(PLAIN, dict(PLAIN), documented).verdict == STALE


def test_the_markdown_has_a_row_per_case_and_the_counts() -> None:
    cases = CASES[:3]
    outcomes = [
        CaseOutcome(
            case,
            {mode: dict(PLAIN) for mode in MODES},
            {mode: judge(PLAIN, PLAIN, None) for mode in MODES[1:]},
        )
        for case in cases
    ]
    markdown = render_markdown(outcomes)
    assert f"{len(cases)} cases: {len(cases)} same, 0 documented difference, 0 DIFFERENT" in (
        markdown
    )
    for case in cases:
        assert f"(`{case.name}`) | ok (1) | = plain | = plain | same |" in markdown
