"""A small ZeroMQ service to load-test: a ROUTER front, green workers, an HTTP front.

::

    python -m greenzmq.service --zmq-port 5555 --http-port 8080 --workers 8

or in a gevent program::

    from greenzmq.service import Service
    service = Service(zmq_port=0, http_port=0).start()
    print(service.zmq_endpoint, service.http_url)
    ...
    service.stop()

Layout (one greenzmq context, one process)::

    clients (REQ/DEALER) --tcp--> ROUTER front --+
    HTTP (gevent.pywsgi) -> DEALER --inproc-----+
                                                 | request forwarder / reply forwarder greenlets
                                         DEALER back --inproc--> N green REP workers

A worker receives the request frames (REP strips the routing envelope) and
replies with ``handler(frames)``; the default handler sleeps ``work_s``
seconds (green) and echoes the frames. A request is *accepted* once the request
forwarder has read it from the front; a message without the empty delimiter
frame of a REQ envelope is not accepted: the client gets one frame
``b"error: ..."`` back and the service carries on.

Green behaviour
===============
Everything runs in greenlets of the calling thread's hub; nothing blocks the
OS thread. :meth:`Service.stop` is graceful: it stops the HTTP listener and
waits for its handlers, stops accepting ZMQ requests (requests still queued
in the front are left unread, so a client times out rather than getting half
an answer), waits up to ``timeout`` for every accepted request's reply to be
sent, then closes everything.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any

import gevent
from gevent import GreenletExit
from gevent.event import Event

import greenzmq
from greenzmq.context import Context

__all__ = ["Service", "echo_handler", "Handler", "DEFAULT_HOST", "DEFAULT_ZMQ_PORT", "DEFAULT_HTTP_PORT"]

#: Loopback by default: a test service should not listen on the network unless asked.
DEFAULT_HOST = "127.0.0.1"
#: Ports in the style of the ZeroMQ guide (5555) and the common HTTP alternative (8080); 0 picks a free one.
DEFAULT_ZMQ_PORT = 5555
#: The HTTP front's port (see :data:`DEFAULT_ZMQ_PORT`).
DEFAULT_HTTP_PORT = 8080
#: Workers in the pool: enough to overlap a few hundred users' short requests on one hub.
DEFAULT_WORKERS = 8
#: Seconds stop() waits for HTTP handlers and accepted requests' replies.
DEFAULT_STOP_TIMEOUT = 5.0
#: Prefix of the one-frame reply to a request without a REQ envelope.
ERROR_PREFIX = b"error: "

#: A worker's request handler: called with the request frames, returns the reply frames.
Handler = Callable[[list[bytes]], Sequence[bytes]]

_service_ids = itertools.count()


def echo_handler(work_s: float = 0.0) -> Handler:
    """A handler that sleeps ``work_s`` seconds (green) and returns the request frames."""

    def handle(frames: list[bytes]) -> list[bytes]:
        if work_s > 0:
            gevent.sleep(work_s)
        return frames

    return handle


class Service:
    """The ROUTER front, worker pool and HTTP front; see the module docstring.

    Parameters
    ----------
    host : str
        Interface the ZMQ front binds (default loopback).
    zmq_port : int
        TCP port of the ROUTER front; 0 picks a free one.
    http_host, http_port : str, int or None
        The HTTP front's address; ``http_port=None`` runs without it.
    workers : int
        Green REP workers in the pool (>= 1).
    handler : callable
        ``frames -> reply frames``, run in a worker greenlet. An exception
        becomes the one-frame reply ``b"error: <repr>"``; the worker carries on.
    request_timeout : float
        Seconds the HTTP front waits for a worker's reply before answering 504.
    context : greenzmq.Context
        Used instead of a context of the service's own (which stop() destroys).

    Green behaviour
    ---------------
    ``start`` and ``stop`` block only the calling greenlet; call them from
    the thread whose hub should serve the service.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        zmq_port: int = DEFAULT_ZMQ_PORT,
        http_host: str = DEFAULT_HOST,
        http_port: int | None = DEFAULT_HTTP_PORT,
        workers: int = DEFAULT_WORKERS,
        handler: Handler | None = None,
        request_timeout: float = DEFAULT_STOP_TIMEOUT,
        context: Context | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"Service: workers must be >= 1, not {workers}")
        self.host, self.zmq_port = host, zmq_port
        self.http_host, self.http_port = http_host, http_port
        self.workers = workers
        self.handler = handler if handler is not None else echo_handler()
        self.request_timeout = request_timeout
        self._own_context = context is None
        self.context = context if context is not None else Context()
        tag = f"{os.getpid()}-{next(_service_ids)}"
        #: inproc endpoints on the shared context: the front for the HTTP side, the workers' back.
        self.inproc_front = f"inproc://greenzmq-service-front-{tag}"
        self.inproc_back = f"inproc://greenzmq-service-back-{tag}"
        self.zmq_endpoint: str | None = None
        self.http_url: str | None = None
        #: Counters: requests accepted, replies sent, envelopes rejected.
        self.accepted = self.replied = self.rejected = 0
        self._drained = Event()
        self._drained.set()
        self._sockets: list[greenzmq.Socket] = []
        self._greenlets: list[gevent.Greenlet] = []
        self._accepting: gevent.Greenlet | None = None
        self._http: Any = None
        self._started = self._stopped = False

    @property
    def in_flight(self) -> int:
        """Requests accepted whose reply has not been sent yet."""
        return self.accepted - self.replied

    def _socket(self, kind: int) -> greenzmq.Socket:
        sock = self.context.socket(kind)
        sock.linger = 0
        self._sockets.append(sock)
        return sock

    def start(self) -> Service:
        """Bind, spawn the workers and forwarders, start the HTTP front; returns self.

        Raises ``ZMQError`` (address in use, ...) or ``OSError`` from the HTTP
        bind, after closing whatever was opened.
        """
        if self._started:
            raise RuntimeError("Service.start: already started")
        self._started = True
        try:
            front = self._socket(greenzmq.ROUTER)
            if self.zmq_port == 0:
                port = front.bind_to_random_port(f"tcp://{self.host}")
            else:
                front.bind(f"tcp://{self.host}:{self.zmq_port}")
                port = self.zmq_port
            self.zmq_endpoint = f"tcp://{self.host}:{port}"
            front.bind(self.inproc_front)
            back = self._socket(greenzmq.DEALER)
            back.bind(self.inproc_back)
            for _ in range(self.workers):
                worker = self._socket(greenzmq.REP)
                worker.connect(self.inproc_back)
                self._greenlets.append(gevent.spawn(self._work, worker))
            self._greenlets.append(gevent.spawn(self._forward_replies, back, front))
            self._accepting = gevent.spawn(self._forward_requests, front, back)
            if self.http_port is not None:
                from greenzmq.service.http import HttpFront

                self._http = HttpFront(self, self.http_host, self.http_port)
                self.http_url = self._http.start()
        except BaseException:
            self.stop(timeout=0)
            raise
        return self

    def _forward_requests(self, front: greenzmq.Socket, back: greenzmq.Socket) -> None:
        while True:
            msg = front.recv_multipart()
            if b"" not in msg[1:]:
                self.rejected += 1
                front.send_multipart(
                    [msg[0], ERROR_PREFIX + b"expected a REQ envelope (an empty delimiter frame)"]
                )
                continue
            self.accepted += 1
            self._drained.clear()
            try:
                back.send_multipart(msg)
            except GreenletExit:
                # stop() killed us while the workers' queue was full. greenzmq: the interrupted
                # send sent nothing, so hand the accepted request over before stopping.
                back.send_multipart(msg)
                raise

    def _forward_replies(self, back: greenzmq.Socket, front: greenzmq.Socket) -> None:
        while True:
            msg = back.recv_multipart()
            front.send_multipart(msg)
            self.replied += 1
            if self.in_flight == 0:
                self._drained.set()

    def _work(self, sock: greenzmq.Socket) -> None:
        while True:
            frames = sock.recv_multipart()
            try:
                reply = list(self.handler(frames))
            except Exception as e:
                reply = [ERROR_PREFIX + repr(e).encode()]
            sock.send_multipart(reply)

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> bool:
        """Stop gracefully (see the module docstring); True if every accepted request was answered.

        Idempotent. Waits at most about ``timeout`` seconds for the HTTP
        handlers and again for the accepted ZMQ requests.
        """
        if self._stopped:
            return self.in_flight == 0
        self._stopped = True
        if self._http is not None:
            self._http.stop(timeout)
        if self._accepting is not None:
            # greenzmq: a kill during recv takes nothing off the socket, so no request is half-accepted.
            self._accepting.kill()
        drained = self._drained.wait(timeout)
        gevent.killall(self._greenlets)
        for sock in self._sockets:
            sock.close(linger=0)
        if self._own_context:
            self.context.term()
        return bool(drained)

    def stats(self) -> dict[str, Any]:
        """Counters for ``/stats`` and tests."""
        return {
            "accepted": self.accepted,
            "replied": self.replied,
            "in_flight": self.in_flight,
            "rejected": self.rejected,
            "workers": self.workers,
            "zmq_endpoint": self.zmq_endpoint,
            "http_url": self.http_url,
        }

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
