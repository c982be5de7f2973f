#!/usr/bin/env bash
# The green core's tests on the other CPython versions greenzmq supports.
#
#   scripts/other-pythons.sh              # the versions in PYTHON_VERSIONS below
#   PYTHON_VERSIONS="3.12" scripts/other-pythons.sh
#
# CI runs the whole suite on the machine's default Python (3.11) and this
# script on the oldest and the newest supported version, so that setup.py's
# python_requires and classifiers state only what is tested. For each version
# found on the machine (pyenv's, or pythonX.Y on PATH) it makes a fresh venv
# under $GREENZMQ_PY_DIR (default ~/.cache/greenzmq-pythons), installs greenzmq
# with pytest and pytest-timeout only (not the heavy test extras, which the
# core's tests do not need), and runs the core's test files. A version that is
# not installed fails the run: the classifiers would then claim too much.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSIONS="${PYTHON_VERSIONS:-3.9 3.13}"
DIR="${GREENZMQ_PY_DIR:-$HOME/.cache/greenzmq-pythons}"
# The green core: the socket, its waiter, the context and the poller.
CORE_TESTS=(tests/test_socket.py tests/test_waiter.py tests/test_context.py tests/test_poll.py)

log() { printf 'other-pythons: %s\n' "$*" >&2; }

find_python() {
    local v="$1" p
    for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python; do
        [ -x "$p" ] && { echo "$p"; return 0; }
    done
    command -v "python$v" || return 1
}

status=0
for v in $VERSIONS; do
    if ! py="$(find_python "$v")"; then
        log "Python $v is not installed"
        status=1
        continue
    fi
    venv="$DIR/$v"
    if [ ! -x "$venv/bin/python" ]; then
        "$py" -m venv "$venv"
    fi
    log "Python $v ($py): installing greenzmq"
    "$venv/bin/pip" install -q --disable-pip-version-check "$ROOT" pytest pytest-timeout
    log "Python $v: the core's tests"
    # from outside the checkout, so that the installed greenzmq is the one tested
    if ! (cd "$DIR" && "$venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir "$ROOT" \
            -c "$ROOT/pyproject.toml" "${CORE_TESTS[@]/#/$ROOT/}"); then
        status=1
    fi
done
exit $status
