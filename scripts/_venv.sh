# shellcheck shell=bash
# Sourced by scripts/test.sh and scripts/lint.sh: makes sure .venv exists and holds the project
# (editable) with the dev, django and flask extras, then puts .venv/bin first on PATH.
#
# Sets: REPO_ROOT, VENV. Honours: COWSYNC_VENV (another venv location).
# Reinstalls only when pyproject.toml is newer than the stamp file, the stamp is missing, or the
# venv no longer finds the cowsync package, so a warm run costs a fraction of a second.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${COWSYNC_VENV:-$REPO_ROOT/.venv}"
_COWSYNC_STAMP="$VENV/.cowsync-install-stamp"
_COWSYNC_EXTRAS="dev,django,flask,sqlalchemy,demo"

_cowsync_log() { printf '%s\n' "[venv] $*" >&2; }

# This machine's pip config lists local package folders that do not exist for every package;
# pip warns once per package about each. Drop only those lines so real warnings stay visible.
_cowsync_pip() {
    local rc
    "$VENV/bin/python" -m pip "$@" 2> >(grep -v "Location 'file://.*' is ignored" >&2)
    rc=$?
    wait  # let the stderr filter flush before we go on
    return "$rc"
}

_cowsync_bootstrap_venv() {
    if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        _cowsync_log "$VENV is broken (its python does not start); recreating it"
        rm -rf "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        _cowsync_log "creating $VENV with $(python3 --version 2>&1)"
        python3 -m venv "$VENV" || return 1
        rm -f "$_COWSYNC_STAMP"
    fi

    local reason=""
    if [ ! -e "$_COWSYNC_STAMP" ]; then
        reason="first install"
    elif [ "$REPO_ROOT/pyproject.toml" -nt "$_COWSYNC_STAMP" ]; then
        reason="pyproject.toml changed"
    elif ! (cd / && "$VENV/bin/python" -I -c \
        'import importlib.util, sys; sys.exit(importlib.util.find_spec("cowsync") is None)'); then
        reason="cowsync is not importable from the venv"
    fi
    if [ -n "$reason" ]; then
        _cowsync_log "installing cowsync[$_COWSYNC_EXTRAS] in editable mode ($reason)"
        local started=$SECONDS
        _cowsync_pip install --quiet --editable "$REPO_ROOT[$_COWSYNC_EXTRAS]" || {
            _cowsync_log "pip install failed; see the messages above"
            return 1
        }
        touch "$_COWSYNC_STAMP"
        _cowsync_log "installed in $((SECONDS - started)) s"
    fi
}

_cowsync_bootstrap_venv || exit 1
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
