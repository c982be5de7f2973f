"""Forwarding throughput of devices, against libzmq's own proxy in a thread, and the hub's wake-ups.

Usage::

    python bench/bench_device.py                    # every kind, both setups, 5 rounds of 200,000 x 100 B
    python bench/bench_device.py -n 50000 --repeat 3 --kinds greenzmq,libzmq --setups threads

Every kind forwards from a PULL frontend to a PUSH backend in this process. The
kinds:

* ``greenzmq``: :func:`greenzmq.proxy` in a greenlet (its sockets lent to
  libzmq's proxy in a native thread);
* ``greenzmq-bg``: :class:`greenzmq.devices.GreenDevice` (the same, background API);
* ``steerable``: :func:`greenzmq.proxy_steerable` with a PAIR control socket
  (a steering greenlet reads it);
* ``monitored``: :func:`greenzmq.device.monitored_queue` copying to a PUB
  monitor (greenzmq's green engine, in the hub's thread);
* ``zmq.green``: pyzmq's ``zmq.green.device`` in a greenlet;
* ``libzmq``: ``zmq.proxy`` on plain sockets in a plain OS thread: the
  reference every ratio is taken against;
* ``libzmq-again``: the very same, run a second time in each round (not in the
  default set): its ratio to ``libzmq`` is the machine's own noise, the spread
  any kind's ratio would have if it forwarded exactly as fast.

Two setups, both over tcp://127.0.0.1 by default:

* ``processes``: a producer process (plain pyzmq PUSH) sends ``-n`` messages and
  a consumer process (plain pyzmq PULL) times them from the first to the last;
* ``threads``: the same producer and consumer as Python threads of this
  process, sharing its GIL with the device (``--transport inproc`` connects
  them to the device's own context instead).

While a device forwards, a "ticker" greenlet on this thread's hub sleeps 1 ms in
a loop and records how late each wake-up is. Each round also runs the ticker
on an idle hub (nothing forwarding, nothing else running) for
:data:`IDLE_WINDOW` seconds: the baseline the wake-ups are compared with.

Every round runs each setup's kinds once, back to back, in an order rotated
each round (so no kind always runs first, or right after another), so the load
of a shared machine falls on all kinds alike. ``--pin`` puts the device's side
(this thread, hence the device's native thread and libzmq's I/O threads) on one
CPU and the producer and consumer on the others, so that they do not trade
places with the device from run to run. The tables give medians over the
rounds; ratios are per-round pairs (a kind against libzmq in the same round
and setup; a kind's wake-up p99 against the idle hub of the same round), then
the median and the range of those. The load average is printed at the start
and the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Callable

#: The ticker's sleep: 1 ms is the granularity a latency-sensitive greenlet expects.
TICK = 0.001
#: How long (s) the ticker runs on the idle hub each round: about as long as a
#: forwarding run of the default size, and enough wake-ups for a p99.
IDLE_WINDOW = 1.0
#: How long the main process waits for the consumer before declaring the run stuck.
RUN_BOUND = 120.0
#: Producer and consumer socket high-water marks: 0 = unlimited, so the
#: producer never blocks and the proxy, not flow control, is what is measured.
HWM = 0
#: The kind every ratio is taken against.
REFERENCE = "libzmq"
SETUPS = ("processes", "threads")
#: With --pin: the CPUs of the device's side (the last one) and of the producer and consumer (the others).
_PINNED: dict[str, set[int]] = {}


def _pin(side: str) -> None:
    """Move the calling thread (and the threads it starts later) to ``side``'s CPUs, if pinning."""
    cpus = _PINNED.get(side)
    if cpus:
        os.sched_setaffinity(0, cpus)


def _plan_pinning() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least 2 CPUs")
    _PINNED["device"] = {cpus[-1]}
    _PINNED["load"] = set(cpus[:-1])


# -- producer and consumer: processes or threads, plain pyzmq -----------------------------


def _produce(ctx: Any, addr: str, count: int, size: int) -> None:
    import zmq

    _pin("load")
    s = ctx.socket(zmq.PUSH)
    s.sndhwm = HWM
    s.connect(addr)
    msg = b"x" * size
    send = s.send
    for _ in range(count):
        send(msg)
    s.close(linger=-1)


def _consume(ctx: Any, addr: str, count: int, ready: Callable[[], None]) -> float:
    """Messages/s from the first message to the last."""
    import zmq

    _pin("load")
    s = ctx.socket(zmq.PULL)
    s.rcvhwm = HWM
    s.connect(addr)
    ready()
    recv = s.recv
    recv()
    t0 = time.perf_counter()
    for _ in range(count - 1):
        recv()
    dt = time.perf_counter() - t0
    s.close(linger=0)
    return (count - 1) / dt


def _producer_process(addr: str, count: int, size: int) -> None:
    import zmq

    ctx = zmq.Context()
    _produce(ctx, addr, count, size)
    ctx.term()


def _consumer_process(addr: str, count: int) -> None:
    import zmq

    ctx = zmq.Context()
    rate = _consume(ctx, addr, count, lambda: print("ready", flush=True))
    print(f"{rate:.1f}", flush=True)
    ctx.term()


def _drive_processes(front: str, back: str, count: int, size: int, ctx_address: int) -> float:
    """Run consumer and producer processes through the device; messages/s seen by the consumer."""
    pin = ["--load-cpus", ",".join(map(str, sorted(_PINNED["load"])))] if _PINNED else []
    me = [sys.executable, __file__, *pin]
    consumer = subprocess.Popen(
        [*me, "--role", "consumer", "--addr", back, "-n", str(count)], stdout=subprocess.PIPE, text=True
    )
    try:
        if consumer.stdout.readline().strip() != "ready":
            raise RuntimeError("consumer did not start")
        producer = subprocess.Popen(
            [*me, "--role", "producer", "--addr", front, "-n", str(count), "-s", str(size)]
        )
        out, _ = consumer.communicate(timeout=RUN_BOUND)
        producer.wait(timeout=RUN_BOUND)
        return float(out.strip())
    finally:
        if consumer.poll() is None:
            consumer.kill()


def _drive_threads(front: str, back: str, count: int, size: int, ctx_address: int) -> float:
    """The same with producer and consumer as OS threads of this process (on the device's context)."""
    import zmq

    ctx = zmq.Context.shadow(ctx_address)  # inproc endpoints of the device's context work too
    ready = threading.Event()
    rates: list[float] = []
    consumer = threading.Thread(
        target=lambda: rates.append(_consume(ctx, back, count, ready.set)), daemon=True
    )
    consumer.start()
    if not ready.wait(RUN_BOUND):
        raise RuntimeError("consumer did not start")
    producer = threading.Thread(target=_produce, args=(ctx, front, count, size), daemon=True)
    producer.start()
    consumer.join(RUN_BOUND)
    producer.join(RUN_BOUND)
    if not rates:
        raise RuntimeError("consumer did not finish")
    return rates[0]


DRIVERS = {"processes": _drive_processes, "threads": _drive_threads}


# -- the hub's wake-ups ----------------------------------------------------------------------


def _ticker(lateness: list[float], stop: Any) -> None:
    import gevent

    while not stop.is_set():
        t0 = time.perf_counter()
        gevent.sleep(TICK)
        lateness.append(time.perf_counter() - t0 - TICK)


def _tick_stats(lateness: list[float]) -> dict[str, float]:
    lateness.sort()
    if not lateness:
        return {"tick_p50_ms": float("nan"), "tick_p99_ms": float("nan")}
    return {
        "tick_p50_ms": 1000 * statistics.median(lateness),
        "tick_p99_ms": 1000 * lateness[int(0.99 * (len(lateness) - 1))],
    }


def _idle(count: int, size: int, setup: str, transport: str) -> dict[str, float]:
    """The ticker alone on an idle hub for IDLE_WINDOW seconds."""
    import gevent
    import gevent.event

    lateness: list[float] = []
    stop = gevent.event.Event()
    ticker = gevent.spawn(_ticker, lateness, stop)
    gevent.sleep(IDLE_WINDOW)
    stop.set()
    ticker.join()
    return _tick_stats(lateness)


# -- the devices -----------------------------------------------------------------------------


def _endpoints(zmq_mod: Any, front: Any, back: Any, transport: str) -> tuple[str, str]:
    if transport == "inproc":
        names = (f"inproc://bench-front-{id(front)}", f"inproc://bench-back-{id(back)}")
        front.bind(names[0])
        back.bind(names[1])
        return names
    return (
        f"tcp://127.0.0.1:{front.bind_to_random_port('tcp://127.0.0.1')}",
        f"tcp://127.0.0.1:{back.bind_to_random_port('tcp://127.0.0.1')}",
    )


def _plain_pair(zmq_mod: Any, ctx: Any, transport: str) -> tuple[Any, Any, str, str]:
    front = ctx.socket(zmq_mod.PULL)
    back = ctx.socket(zmq_mod.PUSH)
    for s in (front, back):
        s.sndhwm = s.rcvhwm = HWM
        s.linger = 0
    return (front, back, *_endpoints(zmq_mod, front, back, transport))


def _run_device(
    zmq_mod: Any,
    start: Callable[[Any, str], tuple[str, str, Any]],
    count: int,
    size: int,
    setup: str,
    transport: str,
) -> dict[str, float]:
    """``start(ctx, transport) -> (frontend, backend, stop())`` starts the device under test."""
    import gevent
    import gevent.event

    from greenzmq._native import run_native

    ctx = zmq_mod.Context()
    front, back, stop_device = start(ctx, transport)
    lateness: list[float] = []
    stop = gevent.event.Event()
    ticker = gevent.spawn(_ticker, lateness, stop)
    try:
        # the driver blocks its thread (subprocesses, or joining threads): only this greenlet waits
        rate = run_native(DRIVERS[setup], front, back, count, size, ctx.underlying)
    finally:
        stop.set()
        ticker.join()
        stop_device()
        ctx.destroy(linger=0)
    return {"rate": rate, **_tick_stats(lateness)}


def _greenzmq(count: int, size: int, setup: str, transport: str) -> dict[str, float]:
    import gevent

    import greenzmq

    def start(ctx: Any, transport: str) -> tuple[str, str, Any]:
        front, back, faddr, baddr = _plain_pair(greenzmq, ctx, transport)
        g = gevent.spawn(greenzmq.proxy, front, back)
        return faddr, baddr, g.kill

    return _run_device(greenzmq, start, count, size, setup, transport)


def _greenzmq_bg(count: int, size: int, setup: str, transport: str) -> dict[str, float]:
    import greenzmq
    from greenzmq.devices import GreenDevice

    def start(ctx: Any, transport: str) -> tuple[str, str, Any]:
        dev = GreenDevice(greenzmq.QUEUE, greenzmq.PULL, greenzmq.PUSH, context=ctx)
        for setsockopt in (dev.setsockopt_in, dev.setsockopt_out):
            setsockopt(greenzmq.SNDHWM, HWM)
            setsockopt(greenzmq.RCVHWM, HWM)
            setsockopt(greenzmq.LINGER, 0)
        if transport == "inproc":
            faddr, baddr = f"inproc://bench-bg-front-{id(dev)}", f"inproc://bench-bg-back-{id(dev)}"
            dev.bind_in(faddr)
            dev.bind_out(baddr)
        else:
            faddr = f"tcp://127.0.0.1:{dev.bind_in_to_random_port('tcp://127.0.0.1')}"
            baddr = f"tcp://127.0.0.1:{dev.bind_out_to_random_port('tcp://127.0.0.1')}"
        dev.start()
        return faddr, baddr, dev.stop

    return _run_device(greenzmq, start, count, size, setup, transport)


def _greenzmq_steerable(count: int, size: int, setup: str, transport: str) -> dict[str, float]:
    import gevent

    import greenzmq

    def start(ctx: Any, transport: str) -> tuple[str, str, Any]:
        front, back, faddr, baddr = _plain_pair(greenzmq, ctx, transport)
        control = ctx.socket(greenzmq.PAIR)
        control.linger = 0
        control.bind(f"inproc://bench-control-{id(control)}")
        g = gevent.spawn(greenzmq.proxy_steerable, front, back, None, control)
        return faddr, baddr, g.kill

    return _run_device(greenzmq, start, count, size, setup, transport)


def _greenzmq_mq(count: int, size: int, setup: str, transport: str) -> dict[str, float]:
    import gevent

    import greenzmq
    from greenzmq.device import monitored_queue

    def start(ctx: Any, transport: str) -> tuple[str, str, Any]:
        front, back, faddr, baddr = _plain_pair(greenzmq, ctx, transport)
        mon = ctx.socket(greenzmq.PUB)  # nobody subscribes: measures the copying
        mon.linger = 0
        mon.bind(f"inproc://bench-mon-{id(mon)}")
        g = gevent.spawn(monitored_queue, front, back, mon)
        return faddr, baddr, g.kill

    return _run_device(greenzmq, start, count, size, setup, transport)


def _zmq_green(count: int, size: int, setup: str, transport: str) -> dict[str, float]:
    import gevent
    import zmq.green

    def start(ctx: Any, transport: str) -> tuple[str, str, Any]:
        front, back, faddr, baddr = _plain_pair(zmq.green, ctx, transport)
        g = gevent.spawn(zmq.green.device, zmq.green.QUEUE, front, back)
        return faddr, baddr, g.kill

    return _run_device(zmq.green, start, count, size, setup, transport)


def _libzmq(count: int, size: int, setup: str, transport: str) -> dict[str, float]:
    import zmq

    import greenzmq

    def start(ctx: Any, transport: str) -> tuple[str, str, Any]:
        # plain pyzmq sockets on the same libzmq context, used only by the thread
        plain = zmq.Context.shadow(ctx.underlying)
        front, back, faddr, baddr = _plain_pair(zmq, plain, transport)

        def run() -> None:
            try:
                zmq.proxy(front, back)
            except zmq.ContextTerminated:
                pass
            finally:
                front.close()
                back.close()

        threading.Thread(target=run, daemon=True).start()
        return faddr, baddr, lambda: None  # ctx.destroy() in _run_device ends it

    # the ticker still runs in this thread's hub: the machine's baseline lateness under load
    return _run_device(greenzmq, start, count, size, setup, transport)


KINDS: dict[str, Callable[[int, int, str, str], dict[str, float]]] = {
    "greenzmq": _greenzmq,
    "greenzmq-bg": _greenzmq_bg,
    "steerable": _greenzmq_steerable,
    "monitored": _greenzmq_mq,
    "zmq.green": _zmq_green,
    "libzmq": _libzmq,
    "libzmq-again": _libzmq,
}
#: What runs without --kinds: every kind but the noise control.
DEFAULT_KINDS = [kind for kind in KINDS if kind != "libzmq-again"]


# -- the report --------------------------------------------------------------------------------


def _spread(values: list[float], fmt: str = ",.0f") -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}, {max(values):{fmt}}]"


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (5 min: {five:.2f})"


def _report(
    runs: dict[str, dict[str, list[dict[str, float]]]], idle: list[dict[str, float]], kinds: list[str]
) -> list[str]:
    lines = []
    idle_p50 = statistics.median(r["tick_p50_ms"] for r in idle)
    idle_p99 = [r["tick_p99_ms"] for r in idle]
    for setup, by_kind in runs.items():
        lines += [
            "",
            f"**{setup}**: messages/s, median [min, max] over the rounds; ratio to libzmq's proxy per round;"
            " the ticker's wake-up lateness (ms, medians over the rounds)",
            "",
            "| kind | messages/s | × libzmq, median [min, max] | wake-up p50 | wake-up p99 | p99 − idle p99 |",
            "|---|---|---|---|---|---|",
        ]
        for kind in kinds:
            results = by_kind[kind]
            rates = [r["rate"] for r in results]
            if REFERENCE in by_kind and kind != REFERENCE:
                ratios = [r["rate"] / b["rate"] for r, b in zip(results, by_kind[REFERENCE])]
                ratio = f"{_spread(ratios, '.2f')}"
            else:
                ratio = "1" if kind == REFERENCE else "–"
            p50 = statistics.median(r["tick_p50_ms"] for r in results)
            p99 = [r["tick_p99_ms"] for r in results]
            over = [p - i for p, i in zip(p99, idle_p99)]
            lines.append(
                f"| {kind} | {_spread(rates)} | {ratio} | {p50:.3f} | {statistics.median(p99):.3f} "
                f"| {statistics.median(over):+.3f} |"
            )
        lines.append(f"| idle hub | – | – | {idle_p50:.3f} | {statistics.median(idle_p99):.3f} | 0 |")
    lines.append("")
    for setup, by_kind in runs.items():
        if REFERENCE not in by_kind:
            continue
        for kind in kinds:
            if kind == REFERENCE:
                continue
            ratios = [r["rate"] / b["rate"] for r, b in zip(by_kind[kind], by_kind[REFERENCE])]
            over = [r["tick_p99_ms"] - i["tick_p99_ms"] for r, i in zip(by_kind[kind], idle)]
            lines.append(
                f"{setup} {kind}: {statistics.median(ratios):.0%} of libzmq's proxy "
                f"(rounds: {min(ratios):.0%} to {max(ratios):.0%}), "
                f"wake-up p99 {statistics.median(over):+.2f} ms over the idle hub"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--count", type=int, default=200_000, help="messages per run (default 200000)")
    p.add_argument("-s", "--size", type=int, default=100, help="message size in bytes (default 100)")
    p.add_argument("--repeat", type=int, default=5, help="rounds; each runs every kind once (default 5)")
    p.add_argument(
        "--kinds", default=",".join(DEFAULT_KINDS), help=f"comma-separated, from {','.join(KINDS)}"
    )
    p.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, from {','.join(SETUPS)}")
    p.add_argument(
        "--transport",
        choices=["tcp", "inproc"],
        default="tcp",
        help="for the threads setup (processes always use tcp; default tcp)",
    )
    p.add_argument(
        "--pin",
        action="store_true",
        help="the device's side on the last CPU, producer and consumer on the others",
    )
    p.add_argument("--load-cpus", help=argparse.SUPPRESS)  # a pinned producer or consumer process
    p.add_argument("--role", choices=["producer", "consumer"], help=argparse.SUPPRESS)
    p.add_argument("--addr", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.pin:
        _plan_pinning()
    if args.load_cpus:
        _PINNED["load"] = {int(cpu) for cpu in args.load_cpus.split(",")}
    if args.role == "producer":
        _producer_process(args.addr, args.count, args.size)
        return 0
    if args.role == "consumer":
        _consumer_process(args.addr, args.count)
        return 0
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    setups = [k.strip() for k in args.setups.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS] + [s for s in setups if s not in SETUPS]
    if unknown or args.count < 2 or args.repeat < 1:
        p.error(f"unknown kinds or setups {unknown}" if unknown else "need --count >= 2 and --repeat >= 1")
    _pin("device")
    pinned = f" (device on CPU {_PINNED['device']}, load on {_PINNED['load']})" if _PINNED else ""
    print(
        f"{args.count:,} messages of {args.size} bytes, {args.repeat} rounds, {os.cpu_count()} CPUs{pinned}; "
        f"load average at start {_load()}",
        flush=True,
    )
    runs = {setup: {kind: [] for kind in kinds} for setup in setups}
    idle: list[dict[str, float]] = []
    # Round-robin over setups and kinds, so that the load of a shared machine at
    # any moment falls on every kind alike; ratios are taken within each round.
    for round_ in range(args.repeat):
        idle.append(_idle(args.count, args.size, "", ""))
        turn = round_ % len(kinds)
        for setup in setups:
            transport = "tcp" if setup == "processes" else args.transport
            for kind in kinds[turn:] + kinds[:turn]:
                runs[setup][kind].append(KINDS[kind](args.count, args.size, setup, transport))
    print(f"load average at end {_load()}")
    print("\n".join(_report(runs, idle, kinds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
