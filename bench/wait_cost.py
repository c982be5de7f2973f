"""Where the time of one green wait goes: a cost breakdown for greenzmq's core.

Run from the repository root::

    python bench/wait_cost.py            # about 10 seconds
    python bench/wait_cost.py --n 50000 --reps 7

Everything runs in one thread over inproc (no I/O thread, no network), so the
numbers are pure CPU cost. It measures, side by side:

* the zmq calls a wait is made of: a ``recv(DONTWAIT)`` that fails with
  ``Again`` (libzmq drains the socket's mailbox, pyzmq builds the exception),
  building a ``zmq.Again`` alone, one ``getsockopt(EVENTS)``, one
  ``getsockopt(RCVTIMEO)``;
* the gevent floor: two greenlets ping-ponging over os pipes with nothing but
  ``hub.wait(io watcher)`` -- one hub round trip per wait, no zmq at all;
* the minimal possible green wait on a zmq socket: an io watcher on ``ZMQ_FD``,
  ``hub.wait`` until ``EVENTS`` says POLLIN (no queues, no fairness, no
  timeouts: what any gevent zmq binding must at least do);
* greenzmq: a REQ/REP round trip between two greenlets (two waits);
* the single-thread ceiling: the same round trip without any wait.

From those it derives greenzmq's cost per wait and how much of it is the
gevent hub, pyzmq's exception, the ``EVENTS`` readings and greenzmq's own
bookkeeping.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as a script: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gevent  # noqa: E402
import zmq  # noqa: E402
from gevent.hub import get_hub  # noqa: E402
from zmq.backend import Socket as _RawSocket  # noqa: E402

import greenzmq  # noqa: E402

__all__ = ["measure", "main"]

_raw_get = _RawSocket.get
_raw_recv = _RawSocket.recv
_READ = 1  # libev EV_READ
_MSG = b"x" * 100


def _ns_per(n: int, fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) / n * 1e9


def _pair(ctx: zmq.Context, name: str) -> tuple[zmq.Socket, zmq.Socket]:
    rep, req = ctx.socket(zmq.REP), ctx.socket(zmq.REQ)
    endpoint = f"inproc://wait-cost-{name}-{os.getpid()}"
    rep.bind(endpoint)
    req.connect(endpoint)
    return rep, req


def _calls(n: int) -> dict[str, float]:
    ctx = zmq.Context()
    rep, req = _pair(ctx, "calls")
    try:

        def failed_recv() -> None:
            for _ in range(n):
                try:
                    _raw_recv(rep, zmq.DONTWAIT)
                except zmq.Again:
                    pass

        def make_again() -> None:
            for _ in range(n):
                zmq.Again(zmq.EAGAIN)

        def events() -> None:
            for _ in range(n):
                _raw_get(rep, zmq.EVENTS)

        def rcvtimeo() -> None:
            for _ in range(n):
                _raw_get(rep, zmq.RCVTIMEO)

        def round_trips() -> None:
            for _ in range(n):
                req.send(_MSG)
                rep.send(rep.recv())
                req.recv()

        return {
            "failed recv(DONTWAIT)": _ns_per(n, failed_recv),
            "  of which building zmq.Again": _ns_per(n, make_again),
            "getsockopt(EVENTS)": _ns_per(n, events),
            "getsockopt(RCVTIMEO)": _ns_per(n, rcvtimeo),
            "ceiling round trip (no wait)": _ns_per(n, round_trips),
        }
    finally:
        rep.close(linger=0)
        req.close(linger=0)
        ctx.term()


def _gevent_floor(n: int) -> float:
    hub = get_hub()
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    io1, io2 = hub.loop.io(r1, _READ), hub.loop.io(r2, _READ)
    try:

        def ping() -> None:
            for _ in range(n):
                os.write(w1, b"x")
                hub.wait(io2)
                os.read(r2, 1)

        def pong() -> None:
            for _ in range(n):
                hub.wait(io1)
                os.read(r1, 1)
                os.write(w2, b"y")

        return _ns_per(n, lambda: gevent.joinall([gevent.spawn(pong), gevent.spawn(ping)], raise_error=True))
    finally:
        io1.close()
        io2.close()
        for fd in (r1, w1, r2, w2):
            os.close(fd)


def _minimal_green(n: int) -> float:
    hub = get_hub()
    ctx = zmq.Context()
    rep, req = _pair(ctx, "minimal")
    watchers = {s: hub.loop.io(s.getsockopt(zmq.FD), _READ) for s in (rep, req)}

    def recv(sock: zmq.Socket) -> bytes:
        while True:
            try:
                return _raw_recv(sock, zmq.DONTWAIT)
            except zmq.Again:
                pass
            while not _raw_get(sock, zmq.EVENTS) & zmq.POLLIN:
                hub.wait(watchers[sock])

    def serve() -> None:
        for _ in range(n):
            rep.send(recv(rep))

    def ask() -> None:
        for _ in range(n):
            req.send(_MSG)
            recv(req)

    try:
        return _ns_per(n, lambda: gevent.joinall([gevent.spawn(serve), gevent.spawn(ask)], raise_error=True))
    finally:
        for w in watchers.values():
            w.close()
        rep.close(linger=0)
        req.close(linger=0)
        ctx.term()


def _greenzmq(n: int) -> float:
    ctx = greenzmq.Context()
    rep, req = _pair(ctx, "greenzmq")

    def serve() -> None:
        for _ in range(n):
            rep.send(rep.recv())

    def ask() -> None:
        for _ in range(n):
            req.send(_MSG)
            req.recv()

    try:
        return _ns_per(n, lambda: gevent.joinall([gevent.spawn(serve), gevent.spawn(ask)], raise_error=True))
    finally:
        rep.close(linger=0)
        req.close(linger=0)
        ctx.term()


def measure(n: int, reps: int) -> dict[str, float]:
    """Median over ``reps`` of each measurement (ns), interleaved."""
    runs: dict[str, list[float]] = {}
    for _ in range(reps):
        sample = _calls(n)
        sample["gevent floor: pipe ping-pong, per round trip"] = _gevent_floor(n)
        sample["minimal green zmq round trip"] = _minimal_green(n)
        sample["greenzmq round trip"] = _greenzmq(n)
        for k, v in sample.items():
            runs.setdefault(k, []).append(v)
    return {k: statistics.median(v) for k, v in runs.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="iterations per measurement")
    p.add_argument("--reps", type=int, default=5, help="repetitions (median shown)")
    args = p.parse_args(argv)
    m = measure(args.n, args.reps)
    print(f"# cost of one green wait (inproc, one thread; median of {args.reps}, ns)\n")
    print("| measurement | ns |\n|---|---|")
    for k, v in m.items():
        print(f"| {k} | {v:,.0f} |")
    ceiling = m["ceiling round trip (no wait)"]
    per_wait = (m["greenzmq round trip"] - ceiling) / 2
    minimal = (m["minimal green zmq round trip"] - ceiling) / 2
    hub = m["gevent floor: pipe ping-pong, per round trip"] / 2
    print("\nA round trip between two greenlets makes two waits. Per wait:\n")
    print("| per wait | ns |\n|---|---|")
    print(f"| greenzmq: (round trip − ceiling round trip) / 2 | {per_wait:,.0f} |")
    print(f"| minimal green zmq wait, same formula | {minimal:,.0f} |")
    print(f"| greenzmq's own bookkeeping (greenzmq − minimal) | {per_wait - minimal:,.0f} |")
    print(f"| gevent hub round trip (pipe floor / 2) | {hub:,.0f} |")
    print(f"| failed recv(DONTWAIT) incl. zmq.Again | {m['failed recv(DONTWAIT)']:,.0f} |")
    print(f"| getsockopt(EVENTS) | {m['getsockopt(EVENTS)']:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
