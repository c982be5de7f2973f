"""Workloads written once, in plain blocking style, for every competitor whose calls block.

greenzmq, pyzmq's ``zmq.green``, eventlet's green zmq and plain pyzmq with one
OS thread per peer all run *this same code*; only the :class:`Runtime` differs
(which ``zmq`` module, how a task is spawned and joined). So every one of them
does the same socket pattern with the same message counts, and the peer of a
ping-pong is always the same kind of code as the side being measured.

Each workload returns a dict of metrics: ``rate`` (operations per second,
higher is better) and ``cpu_us_per_op`` (see :class:`Stopwatch`) for the speed
workloads, ``rate``, ``rate_one_per_socket`` and ``scaling`` for
:func:`sharing`, and ``cpu_percent``, ``rss_socket_kib``, ``rss_waiting_kib``,
``wake_all_ms`` for :func:`idle_scale`.
"""

from __future__ import annotations

import gc
import itertools
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from zmq import LAST_ENDPOINT

__all__ = [
    "Runtime",
    "WORKLOADS",
    "Sockets",
    "Stopwatch",
    "bind_endpoint",
    "cpu_seconds",
    "rss_bytes",
    "push_pull",
    "req_rep",
    "req_rep_peer",
    "ExternalPeer",
    "fan_in",
    "sharing",
    "idle_scale",
]

now = time.perf_counter
_inproc_names = itertools.count()
#: How long the idle measurement lets freshly spawned waiters settle into recv
#: before it starts counting CPU (threads need a moment to reach the call).
SETTLE_SECONDS = 0.2
#: How long a finished run waits for the external peer process to exit.
PEER_EXIT_SECONDS = 5.0


@dataclass
class Runtime:
    """How one competitor runs blocking-style tasks.

    ``zmq`` is the module whose ``Context`` makes the sockets (``greenzmq``,
    ``zmq.green``, ``eventlet.green.zmq`` or plain ``zmq``); ``spawn(fn, *args)``
    starts a task and returns a handle; ``join(handles)`` waits for all of them
    and re-raises the first failure; ``sleep(seconds)`` yields to the others.
    """

    name: str
    zmq: Any
    spawn: Callable[..., Any]
    join: Callable[[list[Any]], None]
    sleep: Callable[[float], None]


def bind_endpoint(sock: Any, transport: str) -> str:
    """Bind ``sock`` to a fresh loopback tcp port or inproc name; return the endpoint."""
    if transport == "tcp":
        sock.bind("tcp://127.0.0.1:*")
        return sock.getsockopt(LAST_ENDPOINT).decode()
    if transport == "inproc":
        endpoint = f"inproc://bench-{os.getpid()}-{next(_inproc_names)}"
        sock.bind(endpoint)
        return endpoint
    raise ValueError(f"unknown transport {transport!r}: use 'tcp' or 'inproc'")


class Sockets:
    """A context and every socket made from it; :meth:`close` closes them all
    with linger 0 and terms the context (``destroy`` alone does not find
    eventlet's green sockets, and then ``term`` hangs)."""

    def __init__(self, zmq_module: Any) -> None:
        self.ctx = zmq_module.Context()
        self.made: list[Any] = []

    def __call__(self, socket_type: int) -> Any:
        sock = self.ctx.socket(socket_type)
        sock.linger = 0
        self.made.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.made:
            sock.close(linger=0)
        self.ctx.term()


class Stopwatch:
    """Wall-clock and process CPU time of one timed region, started on creation.

    :meth:`result` gives the rate metrics of every speed workload: ``rate``
    (operations per wall-clock second) and ``cpu_us_per_op`` (CPU time of the
    whole process, libzmq's I/O thread included, per operation). CPU per
    operation hardly depends on how fast a loaded machine wakes a sleeping
    thread, so it stays comparable when wall-clock rates are noisy.
    """

    def __init__(self) -> None:
        self.t0, self.c0 = now(), cpu_seconds()

    def result(self, ops: int) -> dict[str, float]:
        seconds, cpu = now() - self.t0, cpu_seconds() - self.c0
        return {"rate": ops / seconds, "cpu_us_per_op": cpu / ops * 1e6}


class ExternalPeer:
    """The shared echo peer (:mod:`bench.peer`) in its own process, for ``count`` requests."""

    def __init__(self, count: int) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.peer", str(count)], stdout=subprocess.PIPE, cwd=root
        )
        self.endpoint = self.proc.stdout.readline().decode().strip()

    def close(self) -> None:
        try:
            self.proc.wait(timeout=PEER_EXIT_SECONDS)
        except subprocess.TimeoutExpired:  # the run failed midway: the peer still waits
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def open_idle_sockets(socket: Any, z: Any, count: int) -> tuple[Any, list[Any], int, int]:
    """One PUSH bound on inproc and ``count`` PULLs connected to it, made with
    the ``socket`` factory of module ``z``; with the resident memory just
    before and just after creating the PULLs (the idle-scale workload of
    every competitor measures from the same starting point)."""
    push = socket(z.PUSH)
    endpoint = bind_endpoint(push, "inproc")
    gc.collect()
    rss0 = rss_bytes()
    pulls = []
    for _ in range(count):
        pull = socket(z.PULL)
        pull.connect(endpoint)
        pulls.append(pull)
    gc.collect()
    return push, pulls, rss0, rss_bytes()


def rss_bytes() -> int:
    """Resident set size of this process now (psutil when installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return psutil.Process().memory_info().rss


def cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads, libzmq's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def push_pull(rt: Runtime, n: int, size: int, transport: str) -> dict[str, float]:
    """One sender task PUSHes ``n`` messages of ``size`` bytes to one PULLing task."""
    z = rt.zmq
    socket = Sockets(z)
    try:
        pull = socket(z.PULL)
        push = socket(z.PUSH)
        push.connect(bind_endpoint(pull, transport))
        push.send(b"w")
        pull.recv()  # the connection is up before the clock starts
        msg = b"x" * size

        def send_all() -> None:
            for _ in range(n):
                push.send(msg)

        def recv_all() -> None:
            for _ in range(n):
                pull.recv()

        clock = Stopwatch()
        rt.join([rt.spawn(recv_all), rt.spawn(send_all)])
        metrics = clock.result(n)
    finally:
        socket.close()
    return metrics


def req_rep(rt: Runtime, n: int, size: int, transport: str) -> dict[str, float]:
    """A REQ task makes ``n`` round trips to a REP echo task of the same kind."""
    z = rt.zmq
    socket = Sockets(z)
    try:
        rep = socket(z.REP)
        req = socket(z.REQ)
        req.connect(bind_endpoint(rep, transport))
        req.send(b"w")
        rep.send(rep.recv())
        req.recv()
        msg = b"x" * size

        def serve() -> None:
            for _ in range(n):
                rep.send(rep.recv())

        def ask() -> None:
            for _ in range(n):
                req.send(msg)
                req.recv()

        clock = Stopwatch()
        rt.join([rt.spawn(serve), rt.spawn(ask)])
        metrics = clock.result(n)
    finally:
        socket.close()
    return metrics


def req_rep_peer(rt: Runtime, n: int, size: int) -> dict[str, float]:
    """One REQ task makes ``n`` round trips over tcp to the shared external
    peer process (:mod:`bench.peer`, plain blocking pyzmq): only the client
    side is the competitor's code."""
    z = rt.zmq
    peer = ExternalPeer(n + 1)
    socket = Sockets(z)
    try:
        req = socket(z.REQ)
        req.connect(peer.endpoint)
        req.send(b"w")
        req.recv()
        msg = b"x" * size

        def ask() -> None:
            for _ in range(n):
                req.send(msg)
                req.recv()

        clock = Stopwatch()
        rt.join([rt.spawn(ask)])
        metrics = clock.result(n)
    finally:
        socket.close()
        peer.close()
    return metrics


def _echo_clients(
    rt: Runtime, sockets: int, tasks: int, n: int, size: int, transport: str
) -> dict[str, float]:
    """``tasks`` client tasks spread over ``sockets`` DEALERs, each making ``n``
    request/reply round trips against one ROUTER echo task. Rate = round trips/s."""
    z = rt.zmq
    socket = Sockets(z)
    try:
        router = socket(z.ROUTER)
        endpoint = bind_endpoint(router, transport)
        dealers = []
        for _ in range(sockets):
            dealer = socket(z.DEALER)
            dealer.connect(endpoint)
            dealers.append(dealer)
        msg = b"x" * size

        def serve(count: int) -> None:
            for _ in range(count):
                router.send_multipart(router.recv_multipart())

        def client(dealer: Any, k: int) -> None:
            for _ in range(k):
                dealer.send(msg)
                dealer.recv()

        server = rt.spawn(serve, sockets + tasks * n)
        rt.join([rt.spawn(client, d, 1) for d in dealers])  # every connection is up
        clock = Stopwatch()
        rt.join([rt.spawn(client, dealers[i % sockets], n) for i in range(tasks)])
        rt.join([server])
        metrics = clock.result(tasks * n)
    finally:
        socket.close()
    return metrics


def fan_in(rt: Runtime, clients: int, n: int, size: int, transport: str) -> dict[str, float]:
    """``clients`` concurrent DEALER clients, one task each, against one ROUTER echo."""
    return _echo_clients(rt, clients, clients, n, size, transport)


def sharing(rt: Runtime, tasks: int, sockets: int, total: int, size: int, transport: str) -> dict[str, float]:
    """Many tasks per socket vs one task per socket, measured back to back.

    ``tasks`` tasks share ``sockets`` DEALERs (``tasks // sockets`` per socket),
    then ``sockets`` tasks use one DEALER each; both make ``total`` round trips
    against one ROUTER echo. ``scaling`` is the first rate over the second.
    """
    if tasks % sockets:
        raise ValueError(f"sharing: tasks ({tasks}) must be a multiple of sockets ({sockets})")
    many = _echo_clients(rt, sockets, tasks, max(1, total // tasks), size, transport)["rate"]
    base = _echo_clients(rt, sockets, sockets, max(1, total // sockets), size, transport)["rate"]
    return {"rate": many, "rate_one_per_socket": base, "scaling": many / base}


def idle_scale(rt: Runtime, sockets: int, idle_seconds: float) -> dict[str, float]:
    """``sockets`` PULL sockets, one task each waiting in ``recv``.

    Measures the CPU the process burns while they all wait (percent of one
    core over ``idle_seconds``), the resident memory added per socket once
    created and connected (``rss_socket_kib``: the socket and its inproc pipe)
    and once its task waits in ``recv`` (``rss_waiting_kib``: plus the task and
    the wait), and the time from the first of ``sockets`` messages sent to the
    last waiter woken.
    """
    z = rt.zmq
    socket = Sockets(z)
    try:
        push, pulls, rss0, rss_sockets = open_idle_sockets(socket, z, sockets)
        tasks = [rt.spawn(pull.recv) for pull in pulls]
        rt.sleep(SETTLE_SECONDS)
        cpu0, t0 = cpu_seconds(), now()
        rt.sleep(idle_seconds)
        cpu_percent = 100.0 * (cpu_seconds() - cpu0) / (now() - t0)
        gc.collect()
        rss1 = rss_bytes()
        # Attach every pipe first (EVENTS processes all pending commands), so
        # that PUSH's round robin gives each PULL exactly one message.
        push.getsockopt(z.EVENTS)
        t0 = now()
        for _ in range(sockets):
            push.send(b"w")
        rt.join(tasks)
        wake_seconds = now() - t0
    finally:
        socket.close()
    return {
        "cpu_percent": cpu_percent,
        "rss_socket_kib": (rss_sockets - rss0) / sockets / 1024.0,
        "rss_waiting_kib": (rss1 - rss0) / sockets / 1024.0,
        "wake_all_ms": wake_seconds * 1000.0,
    }


#: name -> the blocking-style implementation
WORKLOADS: dict[str, Callable[..., dict[str, float]]] = {
    "push_pull": push_pull,
    "req_rep": req_rep,
    "req_rep_peer": req_rep_peer,
    "fan_in": fan_in,
    "sharing": sharing,
    "idle_scale": idle_scale,
}
