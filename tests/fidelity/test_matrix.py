"""Invariants 1 and 3: through the COW view, with and without a session, every case of
the fidelity matrix behaves like the plain table, or differs exactly as
docs/limitations.md says.

The cases are in tests/fidelity/cases.py; ``python -m tests.fidelity.matrix`` runs the
same cases in both of cowsync's modes and writes docs/fidelity.md. The tests run them
in the mode of the run: ``COWSYNC_TEST_MODE=overlay`` (tests/conftest.py) enables the
tables in overlay mode and checks each case against its overlay expectations.
"""

from __future__ import annotations

import os

import pytest

from tests.fidelity.cases import CASES
from tests.fidelity.runner import DOCUMENTED, SAME, Case, CowMode, run_all_modes

# As tests/conftest.py reads it.
COW_MODE: CowMode = "overlay" if os.environ.get("COWSYNC_TEST_MODE") == "overlay" else "in-place"


def _param(case: Case) -> object:
    bug = case.bug_in(COW_MODE)
    marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_case_behaves_like_the_table_or_as_documented(fidelity_dsn: str, case: Case) -> None:
    outcome = run_all_modes(fidelity_dsn, case, case.name, COW_MODE)

    documented = case.documented_in(COW_MODE)
    for mode, judgement in outcome.judgements.items():
        expected = DOCUMENTED if mode in documented else SAME
        assert judgement.verdict == expected, (
            f"{case.name} [{COW_MODE}, {mode}]: {judgement.verdict}, expected {expected}\n"
            + outcome.explain()
        )
