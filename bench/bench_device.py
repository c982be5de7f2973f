"""Forwarding throughput of devices: greenzmq's green proxy vs zmq.green.device vs libzmq's zmq_proxy.

Usage::

    python bench/bench_device.py                   # all kinds, 5 rounds of 200,000 messages of 100 bytes
    python bench/bench_device.py -n 50000 --repeat 3 --kinds greenzmq,libzmq

For each device kind the proxy runs in this process between a PULL frontend and
a PUSH backend on tcp://127.0.0.1; a producer process (plain pyzmq PUSH) sends
``-n`` messages and a consumer process (plain pyzmq PULL) times them from the
first to the last. The kinds:

* ``greenzmq``: :func:`greenzmq.proxy` in a greenlet;
* ``greenzmq-bg``: :class:`greenzmq.devices.GreenDevice` (the same engine, background API);
* ``steerable``: :func:`greenzmq.proxy_steerable` with a control socket (counts statistics);
* ``monitored``: :func:`greenzmq.device.monitored_queue` copying to a PUB monitor;
* ``zmq.green``: pyzmq's ``zmq.green.device`` in a greenlet;
* ``libzmq``: ``zmq.proxy`` (libzmq's C proxy) in a plain OS thread.

While a green device forwards, a "ticker" greenlet sleeps 1 ms in a loop and
records how late each wake-up is: the hub's responsiveness under load.

Every round runs each kind once, back to back, so the load of a shared machine
falls on all kinds alike. Prints one row per kind (the median rate over the
rounds, with its range, and the median ticker lateness) and the ratios: the
median of the per-round ratios, with their range. On a 2-core machine the
producer, the consumer and the device compete for the cores, so the C proxy's
rate (bounded by the Python producer and consumer) varies from round to round
far more than the green device's: per-round pairs and medians keep one lucky
or unlucky round from deciding the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Callable

#: The ticker's sleep: 1 ms is the granularity a latency-sensitive greenlet expects.
TICK = 0.001
#: How long the main process waits for the consumer before declaring the run stuck.
RUN_BOUND = 120.0
#: Producer and consumer socket high-water marks: 0 = unlimited, so the
#: producer never blocks and the proxy, not flow control, is what is measured.
HWM = 0


def _producer(addr: str, count: int, size: int) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.sndhwm = HWM
    s.connect(addr)
    msg = b"x" * size
    send = s.send
    for _ in range(count):
        send(msg)
    s.close(linger=-1)
    ctx.term()


def _consumer(addr: str, count: int) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.rcvhwm = HWM
    s.connect(addr)
    print("ready", flush=True)
    recv = s.recv
    recv()
    t0 = time.perf_counter()
    for _ in range(count - 1):
        recv()
    dt = time.perf_counter() - t0
    print(f"{(count - 1) / dt:.1f}", flush=True)
    s.close(linger=0)
    ctx.term()


def _drive(front: int, back: int, count: int, size: int) -> float:
    """Run consumer and producer processes through the proxy; messages/s seen by the consumer."""
    me = [sys.executable, __file__]
    consumer = subprocess.Popen(
        [*me, "--role", "consumer", "--addr", f"tcp://127.0.0.1:{back}", "-n", str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if consumer.stdout.readline().strip() != "ready":
            raise RuntimeError("consumer did not start")
        producer = subprocess.Popen(
            [
                *me,
                "--role",
                "producer",
                "--addr",
                f"tcp://127.0.0.1:{front}",
                "-n",
                str(count),
                "-s",
                str(size),
            ]
        )
        out, _ = consumer.communicate(timeout=RUN_BOUND)
        producer.wait(timeout=RUN_BOUND)
        return float(out.strip())
    finally:
        for p in (consumer,):
            if p.poll() is None:
                p.kill()


def _ticker(lateness: list[float], stop: Any) -> None:
    import gevent

    while not stop.is_set():
        t0 = time.perf_counter()
        gevent.sleep(TICK)
        lateness.append(time.perf_counter() - t0 - TICK)


def _plain_pair(zmq_mod: Any, ctx: Any) -> tuple[Any, Any, int, int]:
    front = ctx.socket(zmq_mod.PULL)
    back = ctx.socket(zmq_mod.PUSH)
    for s in (front, back):
        s.sndhwm = s.rcvhwm = HWM
        s.linger = 0
    return (
        front,
        back,
        front.bind_to_random_port("tcp://127.0.0.1"),
        back.bind_to_random_port("tcp://127.0.0.1"),
    )


def _run_green(
    zmq_mod: Any, start: Callable[[Any], tuple[int, int, Any]], count: int, size: int
) -> dict[str, float]:
    """``start(ctx) -> (frontend port, backend port, stop())`` starts the device under test."""
    import gevent
    import gevent.event

    ctx = zmq_mod.Context()
    fport, bport, stop_device = start(ctx)
    lateness: list[float] = []
    stop = gevent.event.Event()
    ticker = gevent.spawn(_ticker, lateness, stop)
    try:
        rate = gevent.get_hub().threadpool.apply(_drive, (fport, bport, count, size))
    finally:
        stop.set()
        ticker.join()
        stop_device()
        ctx.destroy(linger=0)
    lateness.sort()
    return {
        "rate": rate,
        "tick_p50_ms": 1000 * statistics.median(lateness) if lateness else float("nan"),
        "tick_p99_ms": 1000 * lateness[int(0.99 * (len(lateness) - 1))] if lateness else float("nan"),
        "tick_max_ms": 1000 * lateness[-1] if lateness else float("nan"),
    }


def _greenzmq(count: int, size: int) -> dict[str, float]:
    import gevent

    import greenzmq

    def start(ctx: Any) -> tuple[int, int, Any]:
        front, back, fport, bport = _plain_pair(greenzmq, ctx)
        g = gevent.spawn(greenzmq.proxy, front, back)
        return fport, bport, g.kill

    return _run_green(greenzmq, start, count, size)


def _greenzmq_bg(count: int, size: int) -> dict[str, float]:
    import greenzmq
    from greenzmq.devices import GreenDevice

    def start(ctx: Any) -> tuple[int, int, Any]:
        dev = GreenDevice(greenzmq.QUEUE, greenzmq.PULL, greenzmq.PUSH, context=ctx)
        for setsockopt in (dev.setsockopt_in, dev.setsockopt_out):
            setsockopt(greenzmq.SNDHWM, HWM)
            setsockopt(greenzmq.RCVHWM, HWM)
        fport = dev.bind_in_to_random_port("tcp://127.0.0.1")
        bport = dev.bind_out_to_random_port("tcp://127.0.0.1")
        dev.start()
        return fport, bport, dev.stop

    return _run_green(greenzmq, start, count, size)


def _greenzmq_steerable(count: int, size: int) -> dict[str, float]:
    import gevent

    import greenzmq

    def start(ctx: Any) -> tuple[int, int, Any]:
        front, back, fport, bport = _plain_pair(greenzmq, ctx)
        control = ctx.socket(greenzmq.PAIR)
        control.bind(f"inproc://bench-control-{id(control)}")
        g = gevent.spawn(greenzmq.proxy_steerable, front, back, None, control)
        return fport, bport, g.kill

    return _run_green(greenzmq, start, count, size)


def _greenzmq_mq(count: int, size: int) -> dict[str, float]:
    import gevent

    import greenzmq
    from greenzmq.device import monitored_queue

    def start(ctx: Any) -> tuple[int, int, Any]:
        front, back, fport, bport = _plain_pair(greenzmq, ctx)
        mon = ctx.socket(greenzmq.PUB)  # nobody subscribes: measures the copying
        mon.bind(f"inproc://bench-mon-{id(mon)}")
        g = gevent.spawn(monitored_queue, front, back, mon)
        return fport, bport, g.kill

    return _run_green(greenzmq, start, count, size)


def _zmq_green(count: int, size: int) -> dict[str, float]:
    import gevent
    import zmq.green

    def start(ctx: Any) -> tuple[int, int, Any]:
        front, back, fport, bport = _plain_pair(zmq.green, ctx)
        g = gevent.spawn(zmq.green.device, zmq.green.QUEUE, front, back)
        return fport, bport, g.kill

    return _run_green(zmq.green, start, count, size)


def _libzmq(count: int, size: int) -> dict[str, float]:
    import zmq

    import greenzmq

    def start(ctx: Any) -> tuple[int, int, Any]:
        # plain pyzmq sockets on the same libzmq context, used only by the thread
        plain = zmq.Context.shadow(ctx.underlying)
        front, back, fport, bport = _plain_pair(zmq, plain)

        def run() -> None:
            try:
                zmq.proxy(front, back)
            except zmq.ContextTerminated:
                pass
            finally:
                front.close()
                back.close()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return fport, bport, lambda: None  # ctx.destroy() in _run_green ends it

    # the ticker still runs in this thread's hub: the machine's baseline lateness
    return _run_green(greenzmq, start, count, size)


#: The ticker's lateness figures of one run.
TICK_KEYS = ("tick_p50_ms", "tick_p99_ms", "tick_max_ms")


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} [{min(values):,.0f}, {max(values):,.0f}]"


def _paired(runs: list[dict[str, float]], base: list[dict[str, float]]) -> list[float]:
    """Per-round ratios of rates: each round ran both kinds back to back."""
    return [r["rate"] / b["rate"] for r, b in zip(runs, base)]


KINDS: dict[str, Callable[[int, int], dict[str, float]]] = {
    "greenzmq": _greenzmq,
    "greenzmq-bg": _greenzmq_bg,
    "steerable": _greenzmq_steerable,
    "monitored": _greenzmq_mq,
    "zmq.green": _zmq_green,
    "libzmq": _libzmq,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--count", type=int, default=200_000, help="messages per run (default 200000)")
    p.add_argument("-s", "--size", type=int, default=100, help="message size in bytes (default 100)")
    p.add_argument("--repeat", type=int, default=5, help="rounds; each runs every kind once (default 5)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, from {','.join(KINDS)}")
    p.add_argument("--role", choices=["producer", "consumer"], help=argparse.SUPPRESS)
    p.add_argument("--addr", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "producer":
        _producer(args.addr, args.count, args.size)
        return 0
    if args.role == "consumer":
        _consumer(args.addr, args.count)
        return 0
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or args.count < 2 or args.repeat < 1:
        p.error(f"unknown kinds {unknown}" if unknown else "need --count >= 2 and --repeat >= 1")
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    # Round-robin over the kinds, so that the load of a shared machine at any
    # moment falls on every kind alike; ratios are taken within each round.
    for _ in range(args.repeat):
        for kind in kinds:
            runs[kind].append(KINDS[kind](args.count, args.size))
    print(f"{args.count} messages of {args.size} bytes, {args.repeat} rounds: median [min, max]")
    print(f"{'kind':<12} {'msgs/s':>34} {'tick p50 ms':>12} {'tick p99 ms':>12} {'tick max ms':>12}")
    for kind in kinds:
        rates = [r["rate"] for r in runs[kind]]
        ticks = {key: statistics.median(r[key] for r in runs[kind]) for key in TICK_KEYS}
        print(
            f"{kind:<12} {_spread(rates):>34} {ticks['tick_p50_ms']:>12.3f} "
            f"{ticks['tick_p99_ms']:>12.3f} {ticks['tick_max_ms']:>12.3f}",
            flush=True,
        )
    for kind in kinds:
        if kind in ("libzmq", "zmq.green"):
            continue
        parts = []
        if "libzmq" in runs:
            ratios = _paired(runs[kind], runs["libzmq"])
            parts.append(
                f"{statistics.median(ratios):.0%} of libzmq's proxy "
                f"(rounds: {min(ratios):.0%} to {max(ratios):.0%})"
            )
        if "zmq.green" in runs:
            parts.append(f"{statistics.median(_paired(runs[kind], runs['zmq.green'])):.1f}x zmq.green.device")
        if parts:
            print(f"{kind}: " + ", ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
