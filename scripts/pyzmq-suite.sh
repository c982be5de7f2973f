#!/usr/bin/env bash
# Run pyzmq's own public test suite against greenzmq.
#
#   scripts/pyzmq-suite.sh          # after: pip install ".[test]"
#
# Downloads the sdist of the *installed* pyzmq version (cached), unpacks it into
# a scratch directory (its tests/ is pyzmq's suite) and runs there, each in its
# own pytest process under a wall-clock limit:
#   - every *Green* test class, with greenzmq installed as zmq.green by
#     scripts/pyzmq_suite/sitecustomize.py (on PYTHONPATH);
#   - the zmq.green parametrizations of test_imports.py::test_all_exports;
#   - scripts/pyzmq_suite/test_context_greenzmq.py: pyzmq's TestContext on
#     greenzmq's Context (pyzmq's own TestContextGreen is disabled, 'if False:');
#   - scripts/pyzmq_suite/test_skipped_greenzmq.py: the tests the Green classes
#     skip, on greenzmq.
# Deselections: scripts/pyzmq_suite/pyzmq_suite_deselect.py, one list with
# reasons, mirrored in docs/pyzmq-suite.md. Prints a line per pytest process,
# the failures and a total; exits non-zero on any failure, timeout, unlisted
# skip, stale deselection or process left running.
#
# Environment:
#   PYTHON                        interpreter with greenzmq and pyzmq (default: python)
#   PYZMQ_SUITE_CACHE             sdist cache (default ~/.cache/greenzmq-pyzmq-suite;
#                                 the sdist goes to <cache>/<version>/)
#   PYZMQ_SUITE_FILE_TIMEOUT      wall-clock limit per pytest process, s (default 180)
#   PYZMQ_SUITE_TOTAL_TIMEOUT     limit for all of them together, s (default 360)
#   PYZMQ_SUITE_KEEP=1            keep the scratch directory (logs) even if all passed
#   PYZMQ_SUITE_ONLY=WORD         run only the pytest processes whose label contains WORD
#                                 (e.g. test_socket); for local use, CI runs them all
#   ZMQ_TEST_TIMEOUT              pyzmq's own per-test SIGALRM limit, s (pyzmq's default: 60)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE="$ROOT/scripts/pyzmq_suite"
PYTHON="${PYTHON:-python}"
CACHE="${PYZMQ_SUITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/greenzmq-pyzmq-suite}"
FILE_TIMEOUT="${PYZMQ_SUITE_FILE_TIMEOUT:-180}"
TOTAL_TIMEOUT="${PYZMQ_SUITE_TOTAL_TIMEOUT:-360}"
# pyzmq's per-test SIGALRM limit: ZMQ_TEST_TIMEOUT if the caller sets it, else pyzmq's 60 s
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1

log() { printf 'pyzmq-suite: %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }

start=$SECONDS

# -- what is installed ------------------------------------------------------
VERSION="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("pyzmq"))')" \
    || die "pyzmq is not installed for $PYTHON (pip install \".[test]\")"
"$PYTHON" -c 'import greenzmq, gevent, pytest' \
    || die "greenzmq, gevent or pytest missing for $PYTHON (pip install \".[test]\")"

# -- the sdist, cached per version -----------------------------------------
SDIST_DIR="$CACHE/$VERSION"
SDIST="$SDIST_DIR/pyzmq-$VERSION.tar.gz"
if [ ! -s "$SDIST" ]; then
    log "downloading the pyzmq $VERSION sdist into $SDIST_DIR"
    mkdir -p "$SDIST_DIR"
    dl="$(mktemp -d "$SDIST_DIR/.download.XXXXXX")"
    # --no-binary pyzmq, not :all: (which would build pyzmq's build tools from source)
    "$PYTHON" -m pip download --quiet --no-binary pyzmq --no-deps -d "$dl" "pyzmq==$VERSION" \
        || { rm -rf "$dl"; die "could not download the pyzmq $VERSION sdist"; }
    [ -s "$dl/pyzmq-$VERSION.tar.gz" ] || { ls -l "$dl" >&2; rm -rf "$dl"; die "no pyzmq-$VERSION.tar.gz downloaded"; }
    mv "$dl/pyzmq-$VERSION.tar.gz" "$SDIST"
    rm -rf "$dl"
fi

# -- a scratch copy of the suite, with our modules next to pyzmq's ----------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/greenzmq-pyzmq-suite.XXXXXX")"
tar -xzf "$SDIST" -C "$WORK" || die "could not unpack $SDIST (delete it to download it again)"
SRC="$WORK/pyzmq-$VERSION"
[ -f "$SRC/tests/conftest.py" ] && [ -f "$SRC/pytest.ini" ] || die "$SDIST has no tests/ with conftest.py, or no pytest.ini"
cp "$SUITE/test_context_greenzmq.py" "$SUITE/test_skipped_greenzmq.py" "$SRC/tests/"
RESULTS="$WORK/results"
mkdir -p "$RESULTS"
: >"$RESULTS/runs.tsv"

# sitecustomize.py (greenzmq as zmq.green) and the plugin; the caller's PYTHONPATH
# after ours, so a checkout can be tested with PYTHONPATH=/path/to/checkout
export PYTHONPATH="$SUITE${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c 'import sys, zmq, greenzmq; assert sys.modules["zmq.green"] is greenzmq is zmq.green' \
    || die "sitecustomize.py did not install greenzmq as zmq.green ($PYTHON -c 'import sitecustomize' shows why)"

PLAN="$("$PYTHON" "$SUITE/pyzmq_suite_plan.py" "$SRC")" || die "could not find the tests to run in $SRC"

greenzmq_at="$("$PYTHON" -c 'import greenzmq, os; print(os.path.dirname(greenzmq.__file__))')"
log "pyzmq $VERSION's suite on greenzmq from $greenzmq_at; logs in $RESULTS"

# -- one pytest process per file -------------------------------------------
current=""
cleanup_current() {
    if [ -n "$current" ]; then kill -KILL -- "-$current" 2>/dev/null || true; fi
}
trap 'cleanup_current; exit 130' INT TERM

i=0
while IFS=$'\t' read -r -a args; do
    i=$((i + 1))
    label="${args[0]}"
    tag="$(printf '%02d' "$i")"
    if [ -n "${PYZMQ_SUITE_ONLY:-}" ] && [[ "$label" != *"$PYZMQ_SUITE_ONLY"* ]]; then continue; fi
    remaining=$((TOTAL_TIMEOUT - (SECONDS - start)))
    limit=$FILE_TIMEOUT
    if [ "$remaining" -lt "$limit" ]; then limit=$remaining; fi
    if [ "$limit" -le 0 ]; then
        log "$label: not run, the total limit of ${TOTAL_TIMEOUT} s is used up"
        printf '%s\t124\t0\t0\t0\t%s\t%s\n' "$label" "$RESULTS/$tag.json" "$RESULTS/$tag.log" >>"$RESULTS/runs.tsv"
        continue
    fi
    t0=$(date +%s%N)
    # timeout(1) puts pytest in a process group of its own, whose id is its pid:
    # whatever pytest forked and left behind is still in that group afterwards
    (cd "$SRC" && PYZMQ_SUITE_REPORT="$RESULTS/$tag.json" exec timeout --kill-after=10 "$limit" \
        "$PYTHON" -m pytest -p pyzmq_suite_plugin -p no:cacheprovider -q -rfE "${args[@]:1}") \
        >"$RESULTS/$tag.log" 2>&1 &
    sub=$!
    # the subshell execs timeout, so $sub is timeout's pid and its process group
    current=$sub
    rc=0
    wait "$sub" || rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    secs="$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
    sleep 0.2
    leaked="$("$PYTHON" "$SUITE/pyzmq_suite_reap.py" "$sub")" || leaked=0
    current=""
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$rc" "$secs" "$leaked" "$limit" \
        "$RESULTS/$tag.json" "$RESULTS/$tag.log" >>"$RESULTS/runs.tsv"
    log "$(printf '%-28s exit %-3s %6.1fs%s' "$label" "$rc" "$secs" "$([ "$leaked" -gt 0 ] && echo ", $leaked process(es) left running, killed")")"
done <<<"$PLAN"
trap - INT TERM

# -- summary ----------------------------------------------------------------
# the logs of the processes that did not pass first, so the total is the last line
src=0
summary="$(cd "$SUITE" && "$PYTHON" pyzmq_suite_summary.py "$RESULTS")" || src=$?
if [ -s "$RESULTS/not-passed.txt" ]; then
    while IFS=$'\t' read -r label logfile; do
        echo
        echo "=============== pytest log of $label (last 300 lines) ==============="
        tail -n 300 "$logfile"
    done <"$RESULTS/not-passed.txt"
fi
echo
echo "pyzmq $VERSION test suite on greenzmq ($greenzmq_at), wall time $((SECONDS - start)) s"
echo "$summary"
if [ "$src" -eq 0 ] && [ -z "${PYZMQ_SUITE_KEEP:-}" ]; then
    rm -rf "$WORK"
else
    echo "(logs kept in $RESULTS)"
fi
exit "$src"
