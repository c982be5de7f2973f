"""The single-thread ceiling: plain pyzmq non-blocking calls, no tasks, no hub.

The fastest single-threaded code for each workload: every call is made with
``DONTWAIT``, and only when no call can make progress does the thread block,
in one ``zmq.poll`` (libzmq's own poller, in C) over the sockets that matter.
No green library can beat this in one thread; each one is reported as a
fraction of it. Same sockets, patterns and message counts as
:mod:`bench.workloads`.
"""

from __future__ import annotations

import gc
from typing import Any

import zmq

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

__all__ = ["WORKLOADS", "push_pull", "req_rep", "req_rep_peer", "fan_in", "idle_scale"]

_DONTWAIT = zmq.DONTWAIT
_POLLIN = zmq.POLLIN
_POLLOUT = zmq.POLLOUT
_Again = zmq.Again


def push_pull(n: int, size: int, transport: str) -> dict[str, float]:
    """Send until the high-water mark, receive until empty, poll when stuck."""
    socket = Sockets(zmq)
    try:
        pull = socket(zmq.PULL)
        push = socket(zmq.PUSH)
        push.connect(bind_endpoint(pull, transport))
        push.send(b"w")
        pull.recv()
        msg = b"x" * size
        send, recv = push.send, pull.recv
        sent = received = 0
        clock = Stopwatch()
        while received < n:
            progress = False
            try:
                while sent < n:
                    send(msg, _DONTWAIT)
                    sent += 1
                    progress = True
            except _Again:
                pass
            try:
                while received < sent:
                    recv(_DONTWAIT)
                    received += 1
                    progress = True
            except _Again:
                pass
            if not progress:
                items = [(pull, _POLLIN)]
                if sent < n:
                    items.append((push, _POLLOUT))
                zmq.zmq_poll(items)
        metrics = clock.result(n)
    finally:
        socket.close()
    return metrics


def _recv_when_ready(sock: Any) -> Any:
    while True:
        try:
            return sock.recv(_DONTWAIT)
        except _Again:
            zmq.zmq_poll([(sock, _POLLIN)])


def req_rep(n: int, size: int, transport: str) -> dict[str, float]:
    """Both ends in one thread: request, echo, reply, each waiting only in zmq.poll."""
    socket = Sockets(zmq)
    try:
        rep = socket(zmq.REP)
        req = socket(zmq.REQ)
        req.connect(bind_endpoint(rep, transport))
        req.send(b"w")
        rep.send(rep.recv())
        req.recv()
        msg = b"x" * size
        clock = Stopwatch()
        for _ in range(n):
            req.send(msg, _DONTWAIT)
            rep.send(_recv_when_ready(rep), _DONTWAIT)
            _recv_when_ready(req)
        metrics = clock.result(n)
    finally:
        socket.close()
    return metrics


def req_rep_peer(n: int, size: int) -> dict[str, float]:
    """The client side only, against the shared external peer process."""
    peer = ExternalPeer(n + 1)
    socket = Sockets(zmq)
    try:
        req = socket(zmq.REQ)
        req.connect(peer.endpoint)
        req.send(b"w")
        req.recv()
        msg = b"x" * size
        clock = Stopwatch()
        for _ in range(n):
            req.send(msg, _DONTWAIT)
            _recv_when_ready(req)
        metrics = clock.result(n)
    finally:
        socket.close()
        peer.close()
    return metrics


def fan_in(clients: int, n: int, size: int, transport: str) -> dict[str, float]:
    """One thread drives the ROUTER echo and every DEALER client from one zmq.Poller."""
    socket = Sockets(zmq)
    try:
        router = socket(zmq.ROUTER)
        endpoint = bind_endpoint(router, transport)
        dealers = []
        for _ in range(clients):
            dealer = socket(zmq.DEALER)
            dealer.connect(endpoint)
            dealers.append(dealer)
        msg = b"x" * size

        def run(k: int) -> None:
            poller = zmq.Poller()
            poller.register(router, _POLLIN)
            left = {}
            for dealer in dealers:
                poller.register(dealer, _POLLIN)
                dealer.send(msg, _DONTWAIT)
                left[dealer] = k
            pending = len(dealers)
            while pending:
                for sock, _ in poller.poll():
                    if sock is router:
                        try:
                            while True:
                                router.send_multipart(router.recv_multipart(_DONTWAIT), _DONTWAIT)
                        except _Again:
                            pass
                        continue
                    try:
                        while True:
                            sock.recv(_DONTWAIT)
                            left[sock] -= 1
                            if left[sock]:
                                sock.send(msg, _DONTWAIT)
                            else:
                                pending -= 1
                    except _Again:
                        pass

        run(1)  # every connection is up
        clock = Stopwatch()
        run(n)
        metrics = clock.result(clients * n)
    finally:
        socket.close()
    return metrics


def idle_scale(sockets: int, idle_seconds: float) -> dict[str, float]:
    """``sockets`` PULL sockets registered in one zmq.Poller, the thread blocked in poll."""
    socket = Sockets(zmq)
    try:
        push, pulls, rss0, rss_sockets = open_idle_sockets(socket, zmq, sockets)
        poller = zmq.Poller()
        for pull in pulls:
            poller.register(pull, _POLLIN)
        poller.poll(SETTLE_SECONDS * 1000)
        cpu0, t0 = cpu_seconds(), now()
        poller.poll(idle_seconds * 1000)
        cpu_percent = 100.0 * (cpu_seconds() - cpu0) / (now() - t0)
        gc.collect()
        rss1 = rss_bytes()
        push.getsockopt(zmq.EVENTS)
        t0 = now()
        for _ in range(sockets):
            push.send(b"w")
        woken = 0
        while woken < sockets:
            for sock, _ in poller.poll():
                sock.recv(_DONTWAIT)  # one message each: not readable again
                woken += 1
        wake_seconds = now() - t0
    finally:
        socket.close()
    return {
        "cpu_percent": cpu_percent,
        "rss_socket_kib": (rss_sockets - rss0) / sockets / 1024.0,
        "rss_waiting_kib": (rss1 - rss0) / sockets / 1024.0,
        "wake_all_ms": wake_seconds * 1000.0,
    }


WORKLOADS = {
    "push_pull": push_pull,
    "req_rep": req_rep,
    "req_rep_peer": req_rep_peer,
    "fan_in": fan_in,
    "idle_scale": idle_scale,
}
