#!/usr/bin/env bash
# Run the whole test suite: bash scripts/test.sh [pytest args...]
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
if [ "$workers" = "0" ]; then
    python -m pytest "$@" || status=$?
else
    python -m pytest -n "$workers" "$@" || status=$?
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
