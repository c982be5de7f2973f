"""Green devices: ``device``, ``proxy`` and ``proxy_steerable`` that block only the calling greenlet."""

from __future__ import annotations

from typing import Any

import zmq

from greenzmq.poll import Poller

__all__ = ["device", "proxy", "proxy_steerable"]


def proxy(frontend: Any, backend: Any, capture: Any = None) -> None:
    """Forward messages between ``frontend`` and ``backend``, as :func:`zmq.proxy`.

    Blocks only the calling greenlet. Returns by raising the error that ended
    it (:class:`zmq.ContextTerminated`, or ENOTSOCK when a socket is closed).
    """
    poller = Poller()
    poller.register(frontend, zmq.POLLIN)
    if backend is not frontend:
        poller.register(backend, zmq.POLLIN)
    while True:
        events = dict(poller.poll())
        if events.get(frontend, 0) & zmq.POLLIN:
            msg = frontend.recv_multipart(copy=False)
            if capture is not None:
                capture.send_multipart(msg, copy=False)
            backend.send_multipart(msg, copy=False)
        if backend is not frontend and events.get(backend, 0) & zmq.POLLIN:
            msg = backend.recv_multipart(copy=False)
            if capture is not None:
                capture.send_multipart(msg, copy=False)
            frontend.send_multipart(msg, copy=False)


def device(device_type: int, frontend: Any, backend: Any) -> None:
    """Green :func:`zmq.device` (QUEUE, FORWARDER, STREAMER): a proxy."""
    proxy(frontend, backend)


def proxy_steerable(frontend: Any, backend: Any, capture: Any = None, control: Any = None) -> None:
    """Green :func:`zmq.proxy_steerable` with PAUSE, RESUME and TERMINATE."""
    poller = Poller()
    for s in (frontend, backend, control):
        if s is not None:
            poller.register(s, zmq.POLLIN)
    paused = False
    while True:
        events = dict(poller.poll())
        if control is not None and events.get(control, 0) & zmq.POLLIN:
            cmd = control.recv()
            if cmd == b"PAUSE":
                paused = True
            elif cmd == b"RESUME":
                paused = False
            elif cmd == b"TERMINATE":
                return
        if paused:
            continue
        for src, dst in ((frontend, backend), (backend, frontend)):
            if events.get(src, 0) & zmq.POLLIN:
                msg = src.recv_multipart(copy=False)
                if capture is not None:
                    capture.send_multipart(msg, copy=False)
                dst.send_multipart(msg, copy=False)
