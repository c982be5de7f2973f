#!/usr/bin/env bash
# Build a DRAFT-enabled libzmq and pyzmq into a separate, cached prefix and venv,
# and install greenzmq (editable) with its test tools there.
#
#   scripts/build-draft.sh            # build once (~40 s on 2 cores), reuse afterwards
#   "$GREENZMQ_DRAFT_DIR/venv/bin/python" -m pytest tests/test_draft.py
#
# PyPI's pyzmq wheels and Debian's libzmq5 are built without the DRAFT API
# (CLIENT/SERVER, RADIO/DISH, ...). Building pyzmq with ZMQ_DRAFT_API=1 against
# Debian's libzmq fails at import (undefined symbol zmq_poller_destroy), and
# pyzmq's bundled build cannot download sources offline. So: libzmq from
# Debian's own source package with CMake and ENABLE_DRAFTS, then pyzmq from its
# sdist against it. Needs root for apt (Debian/Ubuntu with deb822 sources).
#
# Environment:
#   GREENZMQ_DRAFT_DIR  where everything goes (default ~/.cache/greenzmq-draft):
#                       src/ (sources, build tree), prefix/ (libzmq), venv/
#   PYTHON              the interpreter for the venv (default: python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRAFT_DIR="${GREENZMQ_DRAFT_DIR:-$HOME/.cache/greenzmq-draft}"
SRC="$DRAFT_DIR/src"
PREFIX="$DRAFT_DIR/prefix"
VENV="$DRAFT_DIR/venv"
PYTHON="${PYTHON:-python3}"

log() { printf 'build-draft: %s\n' "$*" >&2; }

libzmq_has_drafts() {
    [ -f "$PREFIX/lib/libzmq.so" ] && nm -D "$PREFIX/lib/libzmq.so" | grep -q ' T zmq_join$'
}

pyzmq_has_drafts() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import zmq; assert zmq.has("draft")' 2>/dev/null
}

if libzmq_has_drafts; then
    log "reusing libzmq with drafts in $PREFIX"
else
    log "building libzmq with drafts into $PREFIX"
    if ! command -v apt-get >/dev/null; then
        log "apt-get not found: this script needs a Debian-like system"; exit 1
    fi
    src_list=/etc/apt/sources.list.d/debian-src.sources
    if [ ! -f "$src_list" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
        # the machine's own apt sources, as source-package sources
        sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$src_list"
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        g++ cmake ninja-build pkgconf libsodium-dev dpkg-dev >/dev/null
    rm -rf "$SRC"
    mkdir -p "$SRC"
    (cd "$SRC" && apt-get source -qq zeromq3)
    zsrc="$(find "$SRC" -maxdepth 1 -type d -name 'zeromq3-*' | head -n1)"
    [ -n "$zsrc" ] || { log "apt-get source zeromq3 gave no source tree"; exit 1; }
    # The tarball has no ./configure: CMake. It prints "Not building draft
    # classes" even so; the draft functions are built (checked below).
    cmake -S "$zsrc" -B "$SRC/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_INSTALL_PREFIX="$PREFIX" -DENABLE_DRAFTS=ON -DWITH_LIBSODIUM=ON -DENABLE_CURVE=ON \
        -DBUILD_TESTS=OFF -DBUILD_STATIC=OFF -DWITH_DOCS=OFF -DWITH_PERF_TOOL=OFF >/dev/null
    cmake --build "$SRC/build" -j"$(nproc)" >/dev/null
    cmake --install "$SRC/build" >/dev/null
    # CMake may install into lib/ or lib64/; pyzmq and the check look in lib/
    if [ ! -e "$PREFIX/lib/libzmq.so" ] && [ -e "$PREFIX/lib64/libzmq.so" ]; then
        ln -s lib64 "$PREFIX/lib"
    fi
    libzmq_has_drafts || { log "libzmq in $PREFIX lacks zmq_join: drafts not built"; exit 1; }
    rm -rf "$VENV"  # a pyzmq built against an older prefix must be rebuilt
fi

if pyzmq_has_drafts; then
    log "reusing draft pyzmq in $VENV"
else
    log "building pyzmq with drafts into $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    # --no-cache-dir: pip would otherwise reuse a cached non-draft wheel.
    # pyzmq sets the RPATH to $PREFIX/lib itself.
    ZMQ_PREFIX="$PREFIX" ZMQ_DRAFT_API=1 \
        "$VENV/bin/pip" install -q --no-cache-dir --no-binary pyzmq pyzmq
    pyzmq_has_drafts || { log "pyzmq in $VENV was built without drafts"; exit 1; }
fi

# greenzmq itself, editable, with the test tools the draft tests need.
# --no-deps for greenzmq so that pip never swaps the draft pyzmq for a wheel.
"$VENV/bin/pip" install -q gevent greenlet pytest pytest-timeout psutil
"$VENV/bin/pip" install -q --no-deps -e "$ROOT"
"$VENV/bin/python" -c 'import zmq, greenzmq; assert zmq.has("draft"); print("build-draft: ok: pyzmq", zmq.__version__, "libzmq", zmq.zmq_version(), "drafts on")'
