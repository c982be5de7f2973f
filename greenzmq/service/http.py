"""The service's HTTP front: a ``gevent.pywsgi`` server whose handlers forward over greenzmq.

Routes:

* ``GET /healthz`` -> ``200 ok``, answered by the HTTP greenlet itself (no worker);
* ``GET /stats`` -> the service's counters as JSON, plus ``monkey_patched``;
* anything else -> the request body (or, without one, the path) is sent to the
  workers as one frame, and their reply frames come back as the body
  (``200``); ``504`` if no reply within the service's ``request_timeout``,
  ``502`` if the worker answered with an ``error:`` frame.

Every handler shares one DEALER socket connected over inproc to the
service's ROUTER front. A request carries a request id as its routing
envelope (``[id, b"", body]``), the workers' REP sockets hand it back
unchanged, and one reader greenlet resolves the waiting handler's
:class:`gevent.event.AsyncResult` by that id.

Green behaviour
===============
A handler blocks only its own greenlet; under ``gevent.monkey.patch_all()``
(as ``python -m greenzmq.service`` runs) handlers may also use the patched
standard library. A reply that arrives after its handler gave up is dropped.
"""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Any

import gevent
from gevent import monkey, pywsgi
from gevent.event import AsyncResult

import greenzmq
from greenzmq.service import ERROR_PREFIX

if TYPE_CHECKING:
    from greenzmq.service import Service

__all__ = ["HttpFront", "Forwarder"]

#: Bytes of request id: a 64-bit counter never wraps within a run.
ID_BYTES = 8


class Forwarder:
    """Request/reply over one shared DEALER socket, matched by request id.

    ``request(frames, timeout)`` returns the reply frames, or raises
    :class:`gevent.Timeout` after ``timeout`` seconds (the late reply is dropped).
    """

    def __init__(self, context: greenzmq.Context, endpoint: str) -> None:
        self._sock = context.socket(greenzmq.DEALER)
        self._sock.linger = 0
        self._sock.connect(endpoint)
        self._ids = itertools.count()
        self._waiting: dict[bytes, AsyncResult] = {}
        self._reader = gevent.spawn(self._read)

    def _read(self) -> None:
        while True:
            msg = self._sock.recv_multipart()
            # [id, b"", reply...]; an id nobody waits for is a reply that came too late.
            result = self._waiting.pop(msg[0], None)
            if result is not None:
                result.set(msg[2:])

    def request(self, frames: list[bytes], timeout: float) -> list[bytes]:
        rid = next(self._ids).to_bytes(ID_BYTES, "big")
        result = AsyncResult()
        self._waiting[rid] = result
        try:
            self._sock.send_multipart([rid, b"", *frames])
            return result.get(timeout=timeout)
        finally:
            self._waiting.pop(rid, None)

    def close(self) -> None:
        self._reader.kill()
        self._sock.close(linger=0)


class HttpFront:
    """A pywsgi server on ``(host, port)`` (0 picks a free port) for ``service``."""

    def __init__(self, service: Service, host: str, port: int) -> None:
        self.service = service
        self.host, self.port = host, port
        self.requests = 0
        self._forwarder: Forwarder | None = None
        # log=None: no access log line per request under load; errors still go to stderr.
        self._server = pywsgi.WSGIServer((host, port), self.app, log=None)

    def start(self) -> str:
        """Connect the forwarder, start listening; returns the base URL."""
        self._forwarder = Forwarder(self.service.context, self.service.inproc_front)
        self._server.start()
        return f"http://{self.host}:{self._server.server_port}"

    def stop(self, timeout: float) -> None:
        """Stop listening, wait up to ``timeout`` for running handlers, close the forwarder."""
        self._server.stop(timeout=timeout)
        if self._forwarder is not None:
            self._forwarder.close()

    def app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.requests += 1
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            return self._respond(start_response, "200 OK", b"ok", "text/plain")
        if path == "/stats":
            stats = dict(self.service.stats(), http_requests=self.requests)
            stats["monkey_patched"] = monkey.is_module_patched("socket")
            return self._respond(start_response, "200 OK", json.dumps(stats).encode(), "application/json")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else path.encode()
        assert self._forwarder is not None  # start() made it before serving
        try:
            reply = self._forwarder.request([body], timeout=self.service.request_timeout)
        except gevent.Timeout:
            return self._respond(
                start_response, "504 Gateway Timeout", b"no reply from the workers", "text/plain"
            )
        payload = b"".join(reply)
        status = "502 Bad Gateway" if payload.startswith(ERROR_PREFIX) else "200 OK"
        return self._respond(start_response, status, payload, "application/octet-stream")

    @staticmethod
    def _respond(start_response: Any, status: str, body: bytes, content_type: str) -> list[bytes]:
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]
