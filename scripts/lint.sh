#!/usr/bin/env bash
# Static checks: bash scripts/lint.sh
#
# Runs every check even after one fails, so one run shows all problems; exits non-zero if any
# failed. Uses the same .venv as scripts/test.sh.
set -euo pipefail

# shellcheck source=scripts/_venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$REPO_ROOT"

failed=()
run() {
    echo "--- $*"
    if "$@"; then :; else failed+=("$*"); fi
}

run ruff check .
run ruff format --check .
run mypy cowsync

if [ "${#failed[@]}" -gt 0 ]; then
    printf 'lint.sh: failed: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "lint.sh: all checks passed"
