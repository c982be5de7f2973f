"""A locust ``User`` for ZeroMQ services: :class:`ZmqUser` and its :class:`ZmqClient`.

Subclass :class:`ZmqUser`, point it at an endpoint (``host`` attribute or
``locust --host tcp://127.0.0.1:5555``) and call :meth:`ZmqClient.request`
from tasks::

    from locust import between, task
    from greenzmq.locust import ZmqUser

    class EchoUser(ZmqUser):
        wait_time = between(0.5, 1.5)
        timeout = 2.0

        @task
        def echo(self):
            self.client.request(b"hello", name="echo")

Every request fires locust's ``request`` event (request_type ``"ZMQ"``), so
it shows in the web UI, headless stats, CSV/HTML reports, ``--processes``
and master/worker runs like any HTTP request.

Green behaviour
===============
Importing this module imports locust, which calls
``gevent.monkey.patch_all()``. Each simulated user owns one green socket;
``request`` blocks only the user's greenlet, for at most ``timeout`` seconds
(send and receive together, enforced with :class:`gevent.Timeout`, which
greenzmq makes safe: an interrupted call took nothing off the socket). A
request that times out or fails is recorded as a failure and its socket is
closed (linger 0) and replaced, so a REQ socket never stays stuck in the
"waiting for a reply" state and a late reply is never taken for the next
request's. The sockets come from ``greenzmq.Context.instance()`` (created in
the process that runs the users, so ``--processes`` forks are safe) unless the
class sets ``zmq_context``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, Union

import gevent
from gevent.lock import Semaphore
from locust import User
from locust.exception import LocustError
from locust.runners import WorkerRunner

import greenzmq
from greenzmq.context import Context

__all__ = ["ZmqUser", "ZmqClient", "ZmqTimeout", "ZmqBadReply", "REQUEST_TYPE", "write_totals_on_quit"]

#: The ``request_type`` of every event fired, the "Type" column of locust's stats.
REQUEST_TYPE = "ZMQ"
#: Endpoint schemes libzmq connects to; anything else in ``host`` is a configuration error.
ENDPOINT_SCHEMES = ("tcp://", "ipc://", "inproc://", "pgm://", "epgm://", "vmci://", "ws://", "wss://")
#: Milliseconds per second: locust reports response times in milliseconds.
MS_PER_S = 1000.0

Payload = Union[bytes, str, Sequence[Union[bytes, str]]]


class ZmqTimeout(Exception):
    """No reply arrived within the request's timeout (recorded as the failure's exception)."""


class ZmqBadReply(Exception):
    """A DEALER got a reply without REQ's envelope (recorded as the failure's exception)."""


def _frames(payload: Payload) -> list[bytes]:
    if isinstance(payload, (bytes, str)):
        payload = [payload]
    elif not isinstance(payload, Sequence):
        raise TypeError(
            f"request: payload is {type(payload).__name__}, expected bytes, str or a list of them"
        )
    frames: list[Any] = [p.encode() if isinstance(p, str) else p for p in payload]  # checked below
    if not frames:
        raise ValueError("request: the payload has no frames; send at least one frame")
    for i, frame in enumerate(frames):
        if not isinstance(frame, (bytes, bytearray, memoryview)):
            raise TypeError(f"request: frame {i} is {type(frame).__name__}, expected bytes or str")
    return frames


class ZmqClient:
    """One green REQ or DEALER socket to ``endpoint`` that times and reports each request.

    Parameters
    ----------
    endpoint : str
        A libzmq endpoint to connect to, such as ``"tcp://127.0.0.1:5555"``.
    request_event : locust.event.EventHook
        The event fired once per request (``environment.events.request``).
    socket_type : int
        ``zmq.REQ`` or ``zmq.DEALER``. A DEALER sends REQ's envelope (an empty
        delimiter frame first) and strips it from replies, so it talks to the
        same REP/ROUTER services; unlike REQ it never refuses a send.
    timeout : float
        Seconds a request may take, send and receive together.
    zmq_context : greenzmq.Context
        Where sockets are made (default ``greenzmq.Context.instance()``).

    Green behaviour
    ---------------
    Blocks only the calling greenlet. Requests made at the same time by
    several greenlets (a task spawning some) take turns on the one socket,
    in order, so each gets its own reply; a request's time and timeout start
    when its turn comes.
    """

    _socket: Any = None

    def __init__(
        self,
        endpoint: str | None,
        request_event: Any,
        socket_type: int = greenzmq.REQ,
        timeout: float = 5.0,
        zmq_context: Context | None = None,
    ) -> None:
        if socket_type not in (greenzmq.REQ, greenzmq.DEALER):
            raise LocustError(f"ZmqClient: socket_type must be zmq.REQ or zmq.DEALER, not {socket_type!r}")
        if not isinstance(endpoint, str) or not endpoint.startswith(ENDPOINT_SCHEMES):
            raise LocustError(
                f"ZmqClient: {endpoint!r} is not a ZeroMQ endpoint; set the user's host "
                f"(or --host) to one like 'tcp://127.0.0.1:5555'"
            )
        if not timeout > 0:
            raise LocustError(f"ZmqClient: timeout must be > 0 seconds, not {timeout!r}")
        self.endpoint = endpoint
        self.socket_type = socket_type
        self.timeout = timeout
        self.zmq_context = zmq_context if zmq_context is not None else Context.instance()
        self._request_event = request_event
        self._turn = Semaphore()
        #: How many sockets were replaced after a failed request (for tests and curiosity).
        self.replaced = 0

    @property
    def socket(self) -> greenzmq.Socket:
        """The current socket, connected on first use."""
        if self._socket is None:
            sock = self.zmq_context.socket(self.socket_type)
            sock.linger = 0
            sock.connect(self.endpoint)
            self._socket = sock
        return self._socket

    def request(
        self,
        payload: Payload,
        name: str | None = None,
        context: dict | None = None,
        validate: Callable[[list[bytes]], Any] | None = None,
    ) -> list[bytes] | None:
        """Send ``payload`` (bytes, str, or a list of frames), wait for the reply, report it.

        Returns the reply frames, or ``None`` when the request failed: the
        failure (:class:`ZmqTimeout` after ``timeout`` seconds,
        :class:`ZmqBadReply`, or the ``ZMQError`` raised) is already recorded in locust's stats and the
        socket has been replaced. ``name`` groups requests in the stats
        (default: the endpoint). A payload that is not bytes/str frames raises
        ``TypeError`` (an empty one ``ValueError``) before anything is sent
        or recorded, and the socket stays usable.

        ``validate(reply)``, if given, may raise to turn a reply into a
        failure (for example ``AssertionError`` for a wrong answer): the
        exception is recorded, ``None`` returned, and the socket kept (it is
        in a good state). ``context`` is locust's request context dict.
        """
        frames = _frames(payload)
        with self._turn:
            return self._request(frames, name, context, validate)

    def _request(
        self,
        frames: list[bytes],
        name: str | None,
        context: dict | None,
        validate: Callable[[list[bytes]], Any] | None,
    ) -> list[bytes] | None:
        dealer = self.socket_type == greenzmq.DEALER
        exception: BaseException | None = None
        reply: list[bytes] | None = None
        start = time.perf_counter()
        try:
            sock = self.socket
            with gevent.Timeout(
                self.timeout, ZmqTimeout(f"no reply from {self.endpoint} within {self.timeout} s")
            ):
                sock.send_multipart([b""] + frames if dealer else frames)
                reply = sock.recv_multipart()
            if dealer:
                if not reply or reply[0] != b"":
                    raise ZmqBadReply(f"DEALER reply without REQ's empty delimiter frame: {reply!r:.80}")
                reply = reply[1:]
        except (ZmqTimeout, ZmqBadReply, greenzmq.ZMQError) as e:
            exception, reply = e, None
            self.reset()
        elapsed_ms = (time.perf_counter() - start) * MS_PER_S
        if reply is not None and validate is not None:
            try:
                validate(reply)
            except Exception as e:
                exception = e
        self._fire(name, elapsed_ms, reply, context, exception)
        return reply if exception is None else None

    def _fire(
        self,
        name: str | None,
        elapsed_ms: float,
        reply: list[bytes] | None,
        context: dict | None,
        exception: BaseException | None,
    ) -> None:
        self._request_event.fire(
            request_type=REQUEST_TYPE,
            name=name if name is not None else self.endpoint,
            response_time=elapsed_ms,
            response_length=sum(len(f) for f in reply) if reply is not None else 0,
            response=reply,
            context=context or {},
            exception=exception,
        )

    def reset(self) -> None:
        """Close the socket (linger 0); the next request connects a fresh one."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
            self.replaced += 1

    def close(self) -> None:
        """Close the socket for good (a later request would open a new one)."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None


class ZmqUser(User):
    """An abstract locust user owning a :class:`ZmqClient` as ``self.client``.

    Class attributes to set in a subclass: ``host`` (the endpoint, or
    ``--host``), ``socket_type`` (``zmq.REQ`` default, or ``zmq.DEALER``),
    ``timeout`` (seconds per request, default 5), ``zmq_context`` (default
    ``greenzmq.Context.instance()``). Raises :class:`locust.exception.LocustError`
    when a user is made if ``host`` is not a ZeroMQ endpoint. The socket is
    closed when the user's greenlet ends (stopped, killed or failed).

    Green behaviour
    ---------------
    Each user is a greenlet; its requests block only itself.
    """

    abstract = True
    socket_type: int = greenzmq.REQ
    timeout: float = 5.0
    #: Named ``zmq_context`` because locust's ``User.context()`` is the request-context method.
    zmq_context: Context | None = None

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.client = ZmqClient(
            self.host,
            environment.events.request,
            socket_type=self.socket_type,
            timeout=self.timeout,
            zmq_context=self.zmq_context,
        )

    def request(
        self,
        payload: Payload,
        name: str | None = None,
        validate: Callable[[list[bytes]], Any] | None = None,
    ) -> list[bytes] | None:
        """``self.client.request(payload, name, context=self.context(), validate=validate)``."""
        return self.client.request(payload, name=name, context=self.context(), validate=validate)

    def start(self, group: Any) -> gevent.Greenlet:
        """Start the user's greenlet (locust's), and close the socket when it ends however it ends."""
        greenlet = super().start(group)
        greenlet.link(lambda _g: self.client.close())
        return greenlet


def write_totals_on_quit(environment: Any, path: str) -> None:
    """At locust's exit, write the run's final totals as JSON to ``path``.

    ``{"requests": n, "failures": n, "rps": x, "exit_code": n}``, taken from
    the aggregated stats when locust quits, in the process that holds them
    (a standalone run or the master; workers, including ``--processes``
    children, write nothing). Call it from an ``init`` listener. Locust's own
    CSVs are rewritten once a second and not at exit, so they can miss the last
    second; its ``--json-file`` is exact but replaces the printed stats table.
    """

    @environment.events.quit.add_listener
    def _write_totals(exit_code: int, **_kwargs: Any) -> None:
        if isinstance(environment.runner, WorkerRunner):
            return
        total = environment.runner.stats.total
        totals = {
            "requests": total.num_requests,
            "failures": total.num_failures,
            "rps": total.total_rps,
            "exit_code": exit_code,
        }
        with open(path, "w") as f:
            json.dump(totals, f)
