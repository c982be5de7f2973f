"""greenzmq's codecs and numpy frames vs the same operation on plain pyzmq.

Run from the repository root::

    python bench/bench_serialize.py                  # defaults: well under a minute
    python bench/bench_serialize.py --reps 7 --round-trips 20000 --transport inproc

Each case is an echo round trip between two PAIR sockets in one thread
(encode, send, receive, decode, and back):

* an object of a few hundred bytes with ``json``, ``msgpack`` and ``pickle``:
  greenzmq's ``send_obj``/``recv_obj`` against pyzmq's ``send_json``/
  ``recv_json``, ``send(msgpack.packb(o))``/``unpackb(recv())`` and
  ``send_pyobj``/``recv_pyobj``;
* a 16 MB float64 array: greenzmq's ``send_array``/``recv_array`` against
  pyzmq's documented recipe (``send_json`` metadata + ``send(A)``, then
  ``recv_json`` + ``recv`` + ``np.frombuffer``), with and without copy.

Repetitions alternate greenzmq and pyzmq; each rate is the median of the
repetitions, and the ratio (greenzmq / pyzmq, higher is better) is the median
of the per-repetition ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make greenzmq importable from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack  # noqa: E402
import numpy as np  # noqa: E402
import zmq  # noqa: E402

import greenzmq  # noqa: E402
from greenzmq.serialize import SerializingContextMixin, SerializingSocketMixin  # noqa: E402

__all__ = ["main"]

#: The array case's size: a 16 MiB float64 array, large enough that copies show.
ARRAY_BYTES = 16 * 1024 * 1024
OBJ = {
    "id": 12345,
    "name": "greenzmq benchmark object",
    "values": [i * 0.5 for i in range(20)],
    "tags": ["a", "b", "c"],
    "nested": {"ok": True, "none": None, "n": [1, 2, 3]},
}

if issubclass(greenzmq.Context, SerializingContextMixin):
    GreenContext: Any = greenzmq.Context
else:  # before the mixins are wired into greenzmq.Context

    class _S(SerializingSocketMixin, greenzmq.Socket):
        pass

    class GreenContext(SerializingContextMixin, greenzmq.Context):  # type: ignore[no-redef]
        _socket_class = _S


def _pair(ctx: Any, transport: str) -> tuple[Any, Any]:
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    for s in (a, b):
        s.linger = 0
    if transport == "tcp":
        b.connect(f"tcp://127.0.0.1:{a.bind_to_random_port('tcp://127.0.0.1')}")
    else:
        a.bind(f"inproc://bench-serialize-{id(a)}")
        b.connect(f"inproc://bench-serialize-{id(a)}")
    return a, b


def _echo_green_obj(codec: str) -> Callable[[Any, Any], None]:
    def once(a: Any, b: Any) -> None:
        a.send_obj(OBJ, codec=codec)
        b.send_obj(b.recv_obj(codec=codec), codec=codec)
        a.recv_obj(codec=codec)

    return once


def _echo_plain_json(a: Any, b: Any) -> None:
    a.send_json(OBJ)
    b.send_json(b.recv_json())
    a.recv_json()


def _echo_plain_pickle(a: Any, b: Any) -> None:
    a.send_pyobj(OBJ)
    b.send_pyobj(b.recv_pyobj())
    a.recv_pyobj()


def _echo_plain_msgpack(a: Any, b: Any) -> None:
    a.send(msgpack.packb(OBJ))
    b.send(msgpack.packb(msgpack.unpackb(b.recv())))
    msgpack.unpackb(a.recv())


_ARRAY = np.ones(ARRAY_BYTES // 8, dtype="<f8")


def _echo_green_array(copy: bool) -> Callable[[Any, Any], None]:
    def once(a: Any, b: Any) -> None:
        a.send_array(_ARRAY, copy=copy)
        b.send_array(b.recv_array(copy=copy), copy=copy)
        a.recv_array(copy=copy)

    return once


def _plain_send_array(sock: Any, A: Any, copy: bool) -> None:
    sock.send_json({"dtype": A.dtype.str, "shape": A.shape}, zmq.SNDMORE)
    sock.send(A, copy=copy)


def _plain_recv_array(sock: Any, copy: bool) -> Any:
    md = sock.recv_json()
    return np.frombuffer(sock.recv(copy=copy), dtype=md["dtype"]).reshape(md["shape"])


def _echo_plain_array(copy: bool) -> Callable[[Any, Any], None]:
    def once(a: Any, b: Any) -> None:
        _plain_send_array(a, _ARRAY, copy)
        _plain_send_array(b, _plain_recv_array(b, copy), copy)
        _plain_recv_array(a, copy)

    return once


def cases(round_trips: int, array_round_trips: int) -> list[tuple[str, int, Callable, Callable]]:
    """(label, round trips, greenzmq echo, pyzmq echo) of every case."""
    return [
        ("json object", round_trips, _echo_green_obj("json"), _echo_plain_json),
        ("msgpack object", round_trips, _echo_green_obj("msgpack"), _echo_plain_msgpack),
        ("pickle object", round_trips, _echo_green_obj("pickle"), _echo_plain_pickle),
        ("16 MB array, copy=False", array_round_trips, _echo_green_array(False), _echo_plain_array(False)),
        ("16 MB array, copy=True", array_round_trips, _echo_green_array(True), _echo_plain_array(True)),
    ]


def _rate(ctx: Any, transport: str, n: int, echo: Callable[[Any, Any], None]) -> float:
    a, b = _pair(ctx, transport)
    try:
        echo(a, b)  # warm up: connection, gc thread, first allocations
        t0 = time.perf_counter()
        for _ in range(n):
            echo(a, b)
        return n / (time.perf_counter() - t0)
    finally:
        a.close()
        b.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5, help="repetitions per implementation (default 5)")
    p.add_argument("--round-trips", type=int, default=5000, help="object round trips per repetition")
    p.add_argument("--array-round-trips", type=int, default=20, help="16 MB array round trips per repetition")
    p.add_argument("--transport", choices=["tcp", "inproc"], default="tcp")
    args = p.parse_args(argv)
    green_ctx, plain_ctx = GreenContext(), zmq.Context()
    print(f"round trips/s, median of {args.reps} reps, {args.transport}; ratio = greenzmq / pyzmq")
    print(f"{'case':<26}{'greenzmq':>12}{'pyzmq':>12}{'ratio':>8}")
    try:
        for label, n, green, plain in cases(args.round_trips, args.array_round_trips):
            g_rates, p_rates = [], []
            for rep in range(args.reps):
                order = [(green_ctx, green, g_rates), (plain_ctx, plain, p_rates)]
                for ctx, echo, rates in order if rep % 2 == 0 else order[::-1]:
                    rates.append(_rate(ctx, args.transport, n, echo))
            ratio = statistics.median(g / q for g, q in zip(g_rates, p_rates))
            print(
                f"{label:<26}{statistics.median(g_rates):>12,.0f}{statistics.median(p_rates):>12,.0f}{ratio:>8.2f}"
            )
    finally:
        green_ctx.destroy(linger=0)
        plain_ctx.destroy(linger=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
