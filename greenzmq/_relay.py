"""The green forwarding engine of :func:`greenzmq.device.monitored_queue`.

Why the monitored queue is still green
======================================

``proxy``, ``proxy_steerable`` and ``device`` lend their sockets to libzmq's
own loop in a native thread (:mod:`greenzmq._lending`), which stops on a
``TERMINATE`` sent to its control socket. The monitored queue has no such
loop: libzmq has none (``zmq_proxy`` neither prefixes the monitor copies nor
swaps ROUTER ids, and its capture socket cannot tell the two directions
apart), and pyzmq's C ``monitored_queue`` polls its two sockets forever
without a control socket. It ends only on an error of those sockets, and
the only one another thread can cause safely is terminating the whole
context (closing a socket under it is undefined behaviour in libzmq). A
device that a ``kill()``, a ``Timeout`` or a ``close()`` could not stop and
give back would break greenzmq's contract, so the monitored queue forwards
here, in the calling greenlet.

How it forwards
===============

libzmq's ``zmq_proxy`` is fast because it forwards in *bursts*: once a socket is
readable it moves messages with non-blocking calls until the source runs dry
(or a burst limit is hit) and only then polls again. This engine does the same:

* Each direction (in -> out, and back) is a :class:`Relay` that drains its
  source with non-blocking ``recv(copy=False)`` (zero-copy frames;
  ``Frame.more`` is far cheaper than a ``getsockopt(RCVMORE)``) and sends with
  non-blocking ``send``, at most :data:`BURST` messages per round.
* A message whose destination is full (high-water mark) is *held* by its relay,
  as libzmq stops reading a source while its destination has no room: the
  relay then waits for ``POLLOUT`` on the destination instead of ``POLLIN``
  on its source, and the other direction keeps flowing.
* Only when a round moved nothing does the device block, in a green
  :class:`~greenzmq.poll.Poller` (which parks on the sockets' own waiters: no
  poll interval, no CPU while idle). After a round that moved messages it lets
  the hub's loop run once (a zero-delay timer, see :meth:`Engine._yield`), so
  other greenlets' timers and sockets stay responsive under full load.
* The raw non-blocking calls bypass the green socket's bookkeeping, so after
  each round every socket that some other greenlet waits on is
  :meth:`~greenzmq._waiter.Waiters.touched` (the rule of :mod:`greenzmq._waiter`).

Copies for the monitor socket go out with non-blocking sends too; only when it
is full does the device fall back to the green blocking ``send_multipart``
(pyzmq's C queue blocks there too), so a full monitor of a blocking type (PUSH,
DEALER) suspends the device greenlet, never the hub; a PUB monitor drops as usual.
"""

from __future__ import annotations

from typing import Any

import zmq
from gevent.hub import get_hub
from zmq.backend import Socket as _RawSocket

from greenzmq._frames import MultipartSend
from greenzmq._waiter import PARTIAL, waiters_of
from greenzmq.poll import Poller

__all__ = ["BURST", "Relay", "Engine"]

#: Messages one direction forwards per round before the device looks at the
#: other direction and yields to the hub. libzmq uses 1000 in C; at roughly 1
#: microsecond per message in Python, 256 keeps one round (and so the longest
#: stall of other greenlets) well under a millisecond while amortising the
#: yield over enough messages to keep throughput.
BURST = 256

_raw_recv = _RawSocket.recv
_DONTWAIT = int(zmq.DONTWAIT)
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
#: Socket types that cannot receive: a device never reads from them (reading
#: would be ENOTSUP), but watches them so that closing one ends the device.
_SEND_ONLY = frozenset(
    int(getattr(zmq, name)) for name in ("PUSH", "PUB", "RADIO", "SCATTER") if hasattr(zmq, name)
)


class Relay:
    """One direction of a monitored queue: drains ``src`` into ``dst`` in bursts, copying to ``mon``."""

    __slots__ = ("src", "dst", "mon", "prefix", "swap", "held")

    def __init__(self, src: Any, dst: Any, mon: Any, prefix: bytes, swap: bool) -> None:
        self.src, self.dst, self.mon, self.prefix, self.swap = src, dst, mon, prefix, swap
        # a message waiting for room in dst: the send that remembers how far it got
        self.held: MultipartSend | None = None

    def pump(self, budget: int) -> int:
        """Forward up to ``budget`` messages without blocking; return how many moved."""
        if self.held is not None and not self._flush():
            return 0
        src, recv = self.src, _raw_recv
        n = 0
        while n < budget:
            try:
                frame = recv(src, _DONTWAIT, False, False)
            except zmq.Again:
                break
            n += 1
            parts = [frame]
            while frame.more:  # libzmq delivers a message whole: never EAGAIN here
                frame = recv(src, _DONTWAIT, False, False)
                parts.append(frame)
            if not self._deliver(parts):
                break
        return n

    def _deliver(self, parts: list[Any]) -> bool:
        if self.swap and len(parts) > 1:
            # ROUTER to ROUTER: the sender's identity goes second, so the reply routes back
            parts[0], parts[1] = parts[1], parts[0]
        _copy_to(self.mon, [self.prefix, *parts])
        self.held = MultipartSend(self.dst, parts, 0, False, False)
        return self._flush()

    def _flush(self) -> bool:
        """Send (the rest of) the held message; False if ``dst`` is still full (it stays held)."""
        held = self.held
        assert held is not None  # called only while a message is held
        try:
            if held() is PARTIAL:
                return False
        except zmq.Again:
            return False
        self.held = None
        return True


def _copy_to(sock: Any, parts: list[Any]) -> None:
    """Send a copy of a message to the monitor socket; blocks (green) only if it is full."""
    send = MultipartSend(sock, parts, 0, False, False)
    try:
        if send() is not PARTIAL:
            return
    except zmq.Again:
        pass
    # full (a PUSH or DEALER nobody reads): wait like pyzmq's blocking monitor
    # send, for this greenlet only; a half-sent message is finished
    sock.send_multipart(parts[send.sent :], copy=False)


def _touch(sockets: list[Any]) -> None:
    # The raw calls may have consumed a ZMQ_FD edge that a greenlet blocked on
    # one of these sockets waits for: queue the EVENTS check the core needs.
    for sock in sockets:
        w = waiters_of(sock)
        if w is not None and w.armed:
            w.touched(sock)


class Engine:
    """The loop of a monitored queue: its relays, polled green when every source is dry."""

    def __init__(self, relays: list[Relay]) -> None:
        everything = list(dict.fromkeys(s for r in relays for s in (r.src, r.dst, r.mon)))
        self.relays = [r for r in relays if r.src.type not in _SEND_ONLY]
        self.touched = everything  # where raw calls happen
        # Send-only sockets (a PUSH out, a PUB monitor) are never polled for
        # what they carry; watching them for POLLIN (which never comes) makes the
        # device wake with ENOTSOCK when one of them is closed, instead of hanging.
        self.watch_close = [s for s in everything if s.type in _SEND_ONLY]
        self._pollers: dict[tuple[tuple[Any, int], ...], Poller] = {}
        self._timer: Any = None

    def run(self) -> None:
        relays, touched = self.relays, self.touched
        try:
            while True:
                moved = 0
                for relay in relays:
                    moved += relay.pump(BURST)
                _touch(touched)
                if moved:
                    self._yield()
                else:
                    self._wait()
        finally:
            if self._timer is not None:
                self._timer.close()
            _touch(touched)  # an error may have left an fd edge consumed

    def _yield(self) -> None:
        # Let the whole loop run once (io and timers included) before the next
        # round. gevent.sleep(0) would not: it only queues a callback, and the
        # hub runs callbacks for up to gevent.getswitchinterval() (5 ms) before
        # it polls, so a busy device would delay every timer and socket wake-up.
        # A zero-delay timer fires only after the loop's next poll.
        timer = self._timer
        if timer is None:
            timer = self._timer = get_hub().loop.timer(0.0)
        get_hub().wait(timer)

    def _wait(self) -> None:
        interest: dict[Any, int] = {}
        for relay in self.relays:
            if relay.held is not None:
                interest[relay.dst] = interest.get(relay.dst, 0) | _POLLOUT
            else:
                interest[relay.src] = interest.get(relay.src, 0) | _POLLIN
        for sock in self.watch_close:
            interest[sock] = interest.get(sock, 0) | _POLLIN
        key = tuple(interest.items())
        poller = self._pollers.get(key)
        if poller is None:
            poller = self._pollers[key] = Poller()
            for sock, flags in key:
                poller.register(sock, flags)
        poller.poll()
