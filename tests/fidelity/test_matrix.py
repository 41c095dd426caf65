"""Invariants 1 and 3: through the COW view, with and without a session, every case of
the fidelity matrix behaves like the plain table, or differs exactly as
docs/limitations.md says.

The cases are in tests/fidelity/cases.py; ``python -m tests.fidelity.matrix`` runs the
same cases and writes docs/fidelity.md.
"""

from __future__ import annotations

import pytest

from tests.fidelity.cases import CASES
from tests.fidelity.runner import DOCUMENTED, SAME, Case, run_all_modes


def _param(case: Case) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_case_behaves_like_the_table_or_as_documented(fidelity_dsn: str, case: Case) -> None:
    outcome = run_all_modes(fidelity_dsn, case, case.name)

    for mode, judgement in outcome.judgements.items():
        expected = DOCUMENTED if mode in case.documented else SAME
        assert judgement.verdict == expected, (
            f"{case.name} [{mode}]: {judgement.verdict}, expected {expected}\n" + outcome.explain()
        )
