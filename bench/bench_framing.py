"""What it costs to receive a whole message: the framing behind ``recv_multipart`` and ZMQStream.

Run from the repository root::

    python bench/bench_framing.py                  # both transports, 5 rounds
    python bench/bench_framing.py --messages 50000 --reps 3 --transport inproc

A message is whole only when its last frame has been read, and libzmq tells
that by the frame's "more" flag. pyzmq offers two ways to read it:

* ``recv(copy=True)`` (bytes) and then ``getsockopt(RCVMORE)``: what pyzmq's
  own ``recv_multipart`` does; the option read goes through pyzmq's
  ``SocketOption`` enum lookup on every call;
* ``recv(copy=False)`` (a :class:`zmq.Frame`, whose ``more`` libzmq sets in C)
  and then ``Frame.bytes``: what greenzmq's ``recv_multipart`` and ZMQStream do.

Each round fills a PULL socket with ``--messages`` messages, then drains it
with each method in turn, plus greenzmq's and pyzmq's whole ``recv_multipart``
calls and, as the floor, plain ``recv`` of one-frame messages (which cannot
tell where a multipart message ends). It prints nanoseconds per message
(median [min, max] over the rounds) and each method's cost as a ratio to the
bytes + RCVMORE way, the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make greenzmq importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zmq  # noqa: E402
from zmq.backend import Socket as _RawSocket  # noqa: E402

import greenzmq  # noqa: E402

__all__ = ["METHODS", "main"]

#: Bytes per frame, as in the core benchmark.
MESSAGE_SIZE = 100
_recv = _RawSocket.recv
_get = _RawSocket.get
#: Blocking calls: over tcp the io thread may still be delivering the last
#: messages of a round; a message already there costs the same either way.
_BLOCK = 0
_RCVMORE = int(zmq.RCVMORE)


def _bytes_and_rcvmore(sock: Any) -> list:
    parts = [_recv(sock, _BLOCK, True, False)]
    while _get(sock, _RCVMORE):
        parts.append(_recv(sock, _BLOCK, True, False))
    return parts


def _frame_and_more(sock: Any) -> list:
    frame = _recv(sock, _BLOCK, False, False)
    parts = [frame.bytes]
    while frame.more:
        frame = _recv(sock, _BLOCK, False, False)
        parts.append(frame.bytes)
    return parts


def _greenzmq_recv_multipart(sock: Any) -> list:
    return sock.recv_multipart()


def _pyzmq_recv_multipart(sock: Any) -> list:
    return sock.recv_multipart()  # given a plain pyzmq socket: see PLAIN


def _recv_only(sock: Any) -> bytes:
    return _recv(sock, _BLOCK, True, False)


#: name -> (one message's receive, needs one-frame messages)
METHODS: dict[str, tuple[Callable[[Any], Any], bool]] = {
    "bytes + getsockopt(RCVMORE)": (_bytes_and_rcvmore, False),
    "Frame + .more + .bytes": (_frame_and_more, False),
    "greenzmq recv_multipart": (_greenzmq_recv_multipart, False),
    "pyzmq recv_multipart (plain shadow)": (_pyzmq_recv_multipart, False),
    "recv only (no framing; floor)": (_recv_only, True),
}
BASELINE = "bytes + getsockopt(RCVMORE)"
#: Methods that get a plain pyzmq socket sharing the green PULL socket's handle.
PLAIN = {"pyzmq recv_multipart (plain shadow)"}


def _pair(ctx: Any, transport: str) -> tuple[Any, Any]:
    push, pull = ctx.socket(greenzmq.PUSH), ctx.socket(greenzmq.PULL)
    for s in (push, pull):
        s.linger = 0
        s.sndhwm = s.rcvhwm = 0  # unlimited: the whole round is queued before it is read
    if transport == "tcp":
        push.connect(f"tcp://127.0.0.1:{pull.bind_to_random_port('tcp://127.0.0.1')}")
    else:
        pull.bind(f"inproc://bench-framing-{id(pull)}")
        push.connect(f"inproc://bench-framing-{id(pull)}")
    return push, pull


def _time_one(push: Any, pull: Any, receive: Callable[[Any], Any], n: int, frames: int) -> float:
    """Nanoseconds per message to drain ``n`` queued messages of ``frames`` frames with ``receive``."""
    msg = [b"x" * MESSAGE_SIZE] * frames
    for _ in range(n):
        push.send_multipart(msg)
    t0 = time.perf_counter()
    for _ in range(n):
        receive(pull)
    return (time.perf_counter() - t0) / n * 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--messages", type=int, default=100_000, help="messages per method per round")
    p.add_argument("--frames", type=int, default=1, help="frames per message (default 1)")
    p.add_argument("--transport", choices=["tcp", "inproc", "both"], default="both")
    args = p.parse_args(argv)
    if args.reps < 1 or args.messages < 1 or args.frames < 1:
        p.error("--reps, --messages and --frames must be >= 1")
    transports = ["tcp", "inproc"] if args.transport == "both" else [args.transport]
    ctx = greenzmq.Context()
    try:
        for transport in transports:
            push, pull = _pair(ctx, transport)
            plain = zmq.Socket.shadow(pull.underlying)
            costs: dict[str, list[float]] = {name: [] for name in METHODS}
            for _ in range(args.reps):
                for name, (receive, one_frame) in METHODS.items():
                    frames = 1 if one_frame else args.frames
                    sock = plain if name in PLAIN else pull
                    costs[name].append(_time_one(push, sock, receive, args.messages, frames))
            print(f"\n# Receiving whole messages: {args.frames} x {MESSAGE_SIZE} B frames, {transport}, "
                  f"{args.reps} rounds of {args.messages:,}\n")  # fmt: skip
            print(f"| method | ns per message | × {BASELINE} |")
            print("|---|---|---|")
            for name, values in costs.items():
                ratio = statistics.median(v / b for v, b in zip(values, costs[BASELINE]))
                print(
                    f"| {name} | {statistics.median(values):,.0f} [{min(values):,.0f}, {max(values):,.0f}] "
                    f"| {ratio:.2f} |"
                )
            push.close()
            pull.close()
    finally:
        ctx.destroy(linger=0)
    print(f"\npyzmq {zmq.pyzmq_version()}, libzmq {zmq.zmq_version()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
