"""The same workloads as :mod:`bench.workloads`, for ``zmq.asyncio``.

Each workload is the blocking-style code with ``await`` added: the same
sockets, patterns, message counts and peers, tasks instead of greenlets, one
``asyncio.run`` per measurement (the default event loop).
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import zmq
import zmq.asyncio

from bench.workloads import (
    SETTLE_SECONDS,
    ExternalPeer,
    Sockets,
    Stopwatch,
    bind_endpoint,
    cpu_seconds,
    now,
    open_idle_sockets,
    rss_bytes,
)

__all__ = ["WORKLOADS"]


async def _push_pull(n: int, size: int, transport: str) -> dict[str, float]:
    socket = Sockets(zmq.asyncio)
    try:
        pull = socket(zmq.PULL)
        push = socket(zmq.PUSH)
        push.connect(bind_endpoint(pull, transport))
        await push.send(b"w")
        await pull.recv()
        msg = b"x" * size

        async def send_all() -> None:
            for _ in range(n):
                await push.send(msg)

        async def recv_all() -> None:
            for _ in range(n):
                await pull.recv()

        clock = Stopwatch()
        await asyncio.gather(recv_all(), send_all())
        metrics = clock.result(n)
    finally:
        socket.close()
    return metrics


async def _req_rep(n: int, size: int, transport: str) -> dict[str, float]:
    socket = Sockets(zmq.asyncio)
    try:
        rep = socket(zmq.REP)
        req = socket(zmq.REQ)
        req.connect(bind_endpoint(rep, transport))
        await req.send(b"w")
        await rep.send(await rep.recv())
        await req.recv()
        msg = b"x" * size

        async def serve() -> None:
            for _ in range(n):
                await rep.send(await rep.recv())

        async def ask() -> None:
            for _ in range(n):
                await req.send(msg)
                await req.recv()

        clock = Stopwatch()
        await asyncio.gather(serve(), ask())
        metrics = clock.result(n)
    finally:
        socket.close()
    return metrics


async def _req_rep_peer(n: int, size: int) -> dict[str, float]:
    peer = ExternalPeer(n + 1)
    socket = Sockets(zmq.asyncio)
    try:
        req = socket(zmq.REQ)
        req.connect(peer.endpoint)
        await req.send(b"w")
        await req.recv()
        msg = b"x" * size
        clock = Stopwatch()
        for _ in range(n):
            await req.send(msg)
            await req.recv()
        metrics = clock.result(n)
    finally:
        socket.close()
        peer.close()
    return metrics


async def _echo_clients(sockets: int, tasks: int, n: int, size: int, transport: str) -> dict[str, float]:
    socket = Sockets(zmq.asyncio)
    try:
        router = socket(zmq.ROUTER)
        endpoint = bind_endpoint(router, transport)
        dealers = []
        for _ in range(sockets):
            dealer = socket(zmq.DEALER)
            dealer.connect(endpoint)
            dealers.append(dealer)
        msg = b"x" * size

        async def serve(count: int) -> None:
            for _ in range(count):
                await router.send_multipart(await router.recv_multipart())

        async def client(dealer: Any, k: int) -> None:
            for _ in range(k):
                await dealer.send(msg)
                await dealer.recv()

        server = asyncio.ensure_future(serve(sockets + tasks * n))
        await asyncio.gather(*(client(d, 1) for d in dealers))
        clock = Stopwatch()
        await asyncio.gather(*(client(dealers[i % sockets], n) for i in range(tasks)))
        await server
        metrics = clock.result(tasks * n)
    finally:
        socket.close()
    return metrics


async def _idle_scale(sockets: int, idle_seconds: float) -> dict[str, float]:
    socket = Sockets(zmq.asyncio)
    try:
        push, pulls, rss0, rss_sockets = open_idle_sockets(socket, zmq, sockets)
        tasks = [asyncio.ensure_future(pull.recv()) for pull in pulls]
        await asyncio.sleep(SETTLE_SECONDS)
        cpu0, t0 = cpu_seconds(), now()
        await asyncio.sleep(idle_seconds)
        cpu_percent = 100.0 * (cpu_seconds() - cpu0) / (now() - t0)
        gc.collect()
        rss1 = rss_bytes()
        push.getsockopt(zmq.EVENTS)
        t0 = now()
        for _ in range(sockets):
            await push.send(b"w")
        await asyncio.gather(*tasks)
        wake_seconds = now() - t0
    finally:
        socket.close()
    return {
        "cpu_percent": cpu_percent,
        "rss_socket_kib": (rss_sockets - rss0) / sockets / 1024.0,
        "rss_waiting_kib": (rss1 - rss0) / sockets / 1024.0,
        "wake_all_ms": wake_seconds * 1000.0,
    }


def push_pull(n: int, size: int, transport: str) -> dict[str, float]:
    return asyncio.run(_push_pull(n, size, transport))


def req_rep(n: int, size: int, transport: str) -> dict[str, float]:
    return asyncio.run(_req_rep(n, size, transport))


def req_rep_peer(n: int, size: int) -> dict[str, float]:
    return asyncio.run(_req_rep_peer(n, size))


def fan_in(clients: int, n: int, size: int, transport: str) -> dict[str, float]:
    return asyncio.run(_echo_clients(clients, clients, n, size, transport))


def sharing(tasks: int, sockets: int, total: int, size: int, transport: str) -> dict[str, float]:
    if tasks % sockets:
        raise ValueError(f"sharing: tasks ({tasks}) must be a multiple of sockets ({sockets})")
    many = asyncio.run(_echo_clients(sockets, tasks, max(1, total // tasks), size, transport))["rate"]
    base = asyncio.run(_echo_clients(sockets, sockets, max(1, total // sockets), size, transport))["rate"]
    return {"rate": many, "rate_one_per_socket": base, "scaling": many / base}


def idle_scale(sockets: int, idle_seconds: float) -> dict[str, float]:
    return asyncio.run(_idle_scale(sockets, idle_seconds))


WORKLOADS = {
    "push_pull": push_pull,
    "req_rep": req_rep,
    "req_rep_peer": req_rep_peer,
    "fan_in": fan_in,
    "sharing": sharing,
    "idle_scale": idle_scale,
}
