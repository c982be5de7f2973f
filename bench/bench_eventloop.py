"""ZMQStream on greenzmq's hub-native IOLoop vs the plain green socket loop.

Run from the repository root::

    python bench/bench_eventloop.py                 # defaults: well under a minute
    python bench/bench_eventloop.py --reps 9 --messages 200000

Two workloads, each written twice in one process and run back to back in every
round (so machine load hits both alike):

* REQ/REP echo round trips: a REP ``ZMQStream`` echoing to a REQ ``ZMQStream``
  that sends the next request from its ``on_recv`` callback, against the
  greenlet pair of :func:`bench.workloads.req_rep` (the core benchmark's code);
* PUSH→PULL one-way throughput: a PUSH stream with every message queued, into
  a PULL stream counting in ``on_recv``, against
  :func:`bench.workloads.push_pull`, and against the same loop receiving
  whole messages with ``recv_multipart`` (which a stream must do).

It prints each rate (median [min, max]) and the ratio stream / green socket,
the median of the per-round ratios. The target: ≥ 0.80. When tornado is
installed (``pip install tornado``), pyzmq's own ZMQStream on tornado's IOLoop
runs the same two workloads in the same rounds, as a reference: what code
ported from ``zmq.eventloop`` ran at before.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gevent  # noqa: E402

import greenzmq  # noqa: E402
from bench.workloads import Runtime, Sockets, bind_endpoint, now, push_pull, req_rep  # noqa: E402
from greenzmq.eventloop import IOLoop, ZMQStream  # noqa: E402

__all__ = ["stream_req_rep", "stream_push_pull", "green_push_pull_multipart", "main"]

#: Message size, as in the core benchmark.
MESSAGE_SIZE = 100
#: The target for both workloads: stream rate / green socket rate.
TARGET_RATIO = 0.80

GREEN = Runtime(
    "greenzmq",
    greenzmq,
    gevent.spawn,
    lambda handles: gevent.joinall(handles, raise_error=True),
    gevent.sleep,
)


def _flavor(name: str) -> tuple[Any, Any, Any]:
    """``(zmq module, loop, ZMQStream class)``: greenzmq's, or pyzmq's own on tornado."""
    if name == "greenzmq":
        return greenzmq, IOLoop.current(), ZMQStream
    import zmq
    from tornado.ioloop import IOLoop as TornadoLoop
    from zmq.eventloop.zmqstream import ZMQStream as PyzmqStream

    return zmq, TornadoLoop.current(), PyzmqStream


def stream_req_rep(n: int, size: int, transport: str, flavor: str = "greenzmq") -> dict[str, float]:
    """``n`` round trips between a REQ stream and a REP echo stream on one loop."""
    z, loop, Stream = _flavor(flavor)
    socket = Sockets(z)
    try:
        rep = socket(z.REP)
        req = socket(z.REQ)
        req.connect(bind_endpoint(rep, transport))
        req.send(b"w")
        rep.send(rep.recv())
        req.recv()
        server, client = Stream(rep, loop), Stream(req, loop)
        server.on_recv(server.send_multipart)
        msg = b"x" * size
        left = [n]

        def on_reply(_reply: list) -> None:
            left[0] -= 1
            if left[0]:
                client.send(msg)
            else:
                loop.stop()

        client.on_recv(on_reply)
        t0 = now()
        client.send(msg)
        loop.start()
        seconds = now() - t0
        server.close(linger=0)
        client.close(linger=0)
    finally:
        socket.close()
    return {"rate": n / seconds}


def stream_push_pull(n: int, size: int, transport: str, flavor: str = "greenzmq") -> dict[str, float]:
    """``n`` messages queued on a PUSH stream, counted by a PULL stream."""
    z, loop, Stream = _flavor(flavor)
    socket = Sockets(z)
    try:
        pull = socket(z.PULL)
        push = socket(z.PUSH)
        push.connect(bind_endpoint(pull, transport))
        push.send(b"w")
        pull.recv()
        sink, source = Stream(pull, loop), Stream(push, loop)
        msg = b"x" * size
        left = [n]

        def on_recv(_msg: list) -> None:
            left[0] -= 1
            if not left[0]:
                loop.stop()

        sink.on_recv(on_recv)
        t0 = now()
        for _ in range(n):
            source.send(msg)
        loop.start()
        seconds = now() - t0
        sink.close(linger=0)
        source.close(linger=0)
    finally:
        socket.close()
    return {"rate": n / seconds}


def _have_tornado() -> bool:
    try:
        import tornado  # noqa: F401
    except ImportError:
        return False
    return True


def green_push_pull_multipart(rt: Runtime, n: int, size: int, transport: str) -> dict[str, float]:
    """:func:`bench.workloads.push_pull` receiving whole messages (``recv_multipart``),
    as a stream does: the same work per message as the stream, minus the stream."""
    z = rt.zmq
    socket = Sockets(z)
    try:
        pull = socket(z.PULL)
        push = socket(z.PUSH)
        push.connect(bind_endpoint(pull, transport))
        push.send(b"w")
        pull.recv()
        msg = b"x" * size

        def send_all() -> None:
            for _ in range(n):
                push.send(msg)

        def recv_all() -> None:
            for _ in range(n):
                pull.recv_multipart()

        t0 = now()
        rt.join([rt.spawn(recv_all), rt.spawn(send_all)])
        seconds = now() - t0
    finally:
        socket.close()
    return {"rate": n / seconds}


def _summary(rates: list[float]) -> str:
    return f"{statistics.median(rates):>10,.0f} [{min(rates):,.0f}, {max(rates):,.0f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--messages", type=int, default=100_000, help="PUSH→PULL messages per run")
    p.add_argument("--round-trips", type=int, default=10_000, help="REQ/REP round trips per run")
    p.add_argument("--transport", choices=["tcp", "inproc"], default="tcp")
    args = p.parse_args(argv)
    tornado = _have_tornado()
    workloads = [
        ("REQ/REP echo round trips/s", args.round_trips, req_rep, stream_req_rep, True),
        ("PUSH→PULL messages/s", args.messages, push_pull, stream_push_pull, True),
        (
            "PUSH→PULL messages/s, green loop with recv_multipart",
            args.messages,
            green_push_pull_multipart,
            stream_push_pull,
            False,  # pyzmq's stream: the row above
        ),
    ]
    print(f"# ZMQStream vs green socket loop, {MESSAGE_SIZE} B, {args.transport}, {args.reps} rounds\n")
    load_before = _load()
    print(
        f"| workload | green socket | ZMQStream | ratio (target ≥ {TARGET_RATIO:.2f}) "
        "| pyzmq's ZMQStream (tornado) | ZMQStream ÷ pyzmq's |"
    )
    print("|---|---|---|---|---|---|")
    for title, n, plain, stream, reference in workloads:
        plain_rates, stream_rates, ref_rates, ratios, ref_ratios = [], [], [], [], []
        for _ in range(args.reps):
            a = plain(GREEN, n, MESSAGE_SIZE, args.transport)["rate"]
            b = stream(n, MESSAGE_SIZE, args.transport)["rate"]
            plain_rates.append(a)
            stream_rates.append(b)
            ratios.append(b / a)
            if reference and tornado:
                c = stream(n, MESSAGE_SIZE, args.transport, "pyzmq")["rate"]
                ref_rates.append(c)
                ref_ratios.append(b / c)
        ratio = statistics.median(ratios)
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        if ref_rates:
            ref = f"{_summary(ref_rates)} | {statistics.median(ref_ratios):.2f}"
        else:
            ref = "(tornado not installed) | " if reference else "(row above) | "
        print(
            f"| {title} | {_summary(plain_rates)} | {_summary(stream_rates)} | {ratio:.2f} ({verdict}) | {ref} |"
        )
    print(f"\ngevent {gevent.__version__}, pyzmq {greenzmq.pyzmq_version()}, libzmq {greenzmq.zmq_version()}")
    print(f"load average (1 min) before {load_before}, after {_load()} on {os.cpu_count()} CPUs")
    return 0


def _load() -> str:
    """The 1-minute load average: numbers from a busy machine are not comparable with an idle one's."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:  # not available on this platform
        return "n/a"


if __name__ == "__main__":
    sys.exit(main())
