#!/usr/bin/env bash
# Run the whole test suite: bash scripts/test.sh [pytest args...]
# (with no arguments: then the table-enabling suites again in overlay mode)
#
# Creates .venv and installs the project on first use (see scripts/_venv.sh), then runs pytest
# with the arguments given. Exits non-zero when a test fails or when pytest ran no test at all.
# PostgreSQL is found by tests/_pg.py: COWSYNC_TEST_DSN, then 127.0.0.1:5432, then a throwaway
# cluster from local binaries, then Docker (testcontainers).
set -euo pipefail

# shellcheck source=scripts/_venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$REPO_ROOT"

status=0
# Two workers by default (the CI machine has two cores); COWSYNC_TEST_WORKERS=0 runs serially.
workers="${COWSYNC_TEST_WORKERS:-2}"
run_pytest() {
    if [ "$workers" = "0" ]; then
        python -m pytest "$@"
    else
        python -m pytest -n "$workers" "$@"
    fi
}
run_pytest "$@" || status=$?

# With no arguments (the whole suite, as CI runs it), the suites that enable tables run a
# second time with every table enabled in overlay mode (see tests/conftest.py).
# COWSYNC_TEST_OVERLAY=0 skips that pass.
if [ "$#" -eq 0 ] && [ "$status" -eq 0 ] && [ "${COWSYNC_TEST_OVERLAY:-1}" != "0" ]; then
    echo "test.sh: the same suites with tables enabled in overlay mode"
    COWSYNC_TEST_MODE=overlay run_pytest \
        tests/engine tests/apply tests/fidelity tests/hardening tests/pool tests/django \
        tests/flask || status=$?
fi

case "$status" in
    0) ;;
    5)
        echo "test.sh: pytest collected no tests; a run that tests nothing counts as a failure" >&2
        status=1
        ;;
    *) echo "test.sh: pytest exited with status $status" >&2 ;;
esac
exit "$status"
