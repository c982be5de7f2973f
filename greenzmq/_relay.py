"""The forwarding engine of the green devices (:mod:`greenzmq.device`).

How the green proxy forwards
============================

libzmq's ``zmq_proxy`` is fast because it forwards in *bursts*: once a socket is
readable it moves messages with non-blocking calls until the source runs dry
(or a burst limit is hit) and only then polls again. pyzmq's ``zmq.green``
device polls before every message, so most of its time goes into waiting
machinery. The green proxy here does what libzmq does:

* Each direction (frontend -> backend, and back) is a :class:`_Relay` that
  drains its source with non-blocking ``recv(copy=False)`` (zero-copy frames;
  ``Frame.more`` is far cheaper than a ``getsockopt(RCVMORE)``) and sends with
  non-blocking ``send``, at most :data:`BURST` messages per round.
* A message whose destination is full (high-water mark) is *held* by its relay,
  exactly as libzmq stops reading a source while its destination has no room:
  the relay then waits for ``POLLOUT`` on the destination instead of ``POLLIN``
  on its source, and the other direction keeps flowing.
* Only when a round moved nothing does the device block, in a green
  :class:`~greenzmq.poll.Poller` (which parks on the sockets' own waiters: no
  poll interval, no CPU while idle). After a round that moved messages it lets
  the hub's loop run once (a zero-delay timer, see :meth:`_Engine._yield`), so
  other greenlets' timers and sockets stay responsive under full load.
* The raw non-blocking calls bypass the green socket's bookkeeping, so after
  each round every socket that some other greenlet waits on gets its ``EVENTS``
  check scheduled (the rule of :mod:`greenzmq._waiter`).

Copies for the capture and monitor sockets go out with non-blocking sends too;
only when such a socket is full does the device fall back to the green blocking
``send_multipart`` (libzmq also blocks on its capture socket), so a full capture
socket of a blocking type (PUSH, DEALER) suspends the device greenlet, never the
hub; a PUB capture drops as usual.
"""

from __future__ import annotations

import struct
from typing import Any

import zmq
from gevent import getcurrent
from gevent.hub import get_hub
from zmq.backend import Socket as _RawSocket

from greenzmq.poll import Poller

__all__ = ["BURST"]

#: Messages one direction forwards per round before the device looks at the
#: other direction and the control socket and yields to the hub. libzmq uses
#: 1000 in C; at roughly 1 microsecond per message in Python, 256 keeps one
#: round (and so the longest stall of other greenlets) well under a millisecond
#: while amortising the yield over enough messages to keep throughput.
BURST = 256

_raw_recv = _RawSocket.recv
_raw_send = _RawSocket.send
_DONTWAIT = int(zmq.DONTWAIT)
_SNDMORE = int(zmq.SNDMORE)
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
#: Socket types that cannot receive: a device never reads from them (libzmq's
#: proxy polls them for POLLIN, which never comes; reading would be ENOTSUP).
_SEND_ONLY = frozenset(
    int(getattr(zmq, name)) for name in ("PUSH", "PUB", "RADIO", "SCATTER") if hasattr(zmq, name)
)

# proxy_steerable states and commands (libzmq's zmq_proxy_steerable(3))
_ACTIVE, _PAUSED, _TERMINATED = "active", "paused", "terminated"
_COMMANDS = {b"PAUSE": _PAUSED, b"RESUME": _ACTIVE, b"TERMINATE": _TERMINATED}
_STATISTICS = b"STATISTICS"
#: the STATISTICS reply: one native-endian uint64 per frame, as libzmq sends it
_UINT64 = struct.Struct("=Q")
# indices into the 8 counters, in libzmq's reply order
_FE_RECV, _FE_SEND, _BE_RECV, _BE_SEND = 0, 2, 4, 6


class _Relay:
    """One direction of a device: drains ``src`` into ``dst`` in bursts."""

    __slots__ = (
        "src",
        "dst",
        "capture",
        "mon",
        "prefix",
        "swap",
        "stats",
        "i_in",
        "i_out",
        "held",
        "held_at",
    )

    def __init__(
        self,
        src: Any,
        dst: Any,
        capture: Any = None,
        stats: list[int] | None = None,
        i_in: int = 0,
        i_out: int = 0,
        mon: Any = None,
        prefix: bytes = b"",
        swap: bool = False,
    ) -> None:
        self.src, self.dst, self.capture = src, dst, capture
        self.mon, self.prefix, self.swap = mon, prefix, swap
        self.stats, self.i_in, self.i_out = stats, i_in, i_out
        self.held: list[Any] | None = None  # a message waiting for room in dst
        self.held_at = 0  # frames of `held` already sent

    def pump(self, budget: int) -> int:
        """Forward up to ``budget`` messages without blocking; return how many moved."""
        if self.held is not None and not self._flush():
            return 0
        src, dst, recv, send = self.src, self.dst, _raw_recv, _raw_send
        # the fast path: single frames with no copy to make and no ids to swap
        plain = self.capture is None and self.mon is None and not self.swap
        stats, i_in, i_out = self.stats, self.i_in, self.i_out
        n = 0
        while n < budget:
            try:
                frame = recv(src, _DONTWAIT, False, False)
            except zmq.Again:
                break
            n += 1
            if plain and not frame.more:
                if stats is not None:
                    size = len(frame)
                    stats[i_in] += 1
                    stats[i_in + 1] += size
                try:
                    send(dst, frame, _DONTWAIT, False, False)
                except zmq.Again:
                    self.held, self.held_at = [frame], 0  # _flush counts it out
                    break
                if stats is not None:
                    stats[i_out] += 1
                    stats[i_out + 1] += size
                continue
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
        stats = self.stats
        if stats is not None:
            stats[self.i_in] += len(parts)
            stats[self.i_in + 1] += sum(len(p) for p in parts)
        if self.capture is not None:
            _copy_to(self.capture, parts)
        if self.mon is not None:
            _copy_to(self.mon, [self.prefix, *parts])
        self.held, self.held_at = parts, 0
        return self._flush()

    def _flush(self) -> bool:
        """Send the held message; False if ``dst`` is still full (it stays held)."""
        parts, dst, send = self.held, self.dst, _raw_send
        last = len(parts) - 1
        i = start = self.held_at
        try:
            while i < last:
                send(dst, parts[i], _DONTWAIT | _SNDMORE, False, False)
                i += 1
            send(dst, parts[last], _DONTWAIT, False, False)
        except zmq.Again:
            self.held_at = i
            self._count_out(parts[start:i])
            return False
        self.held = None
        self._count_out(parts[start:])
        return True

    def _count_out(self, sent: list[Any]) -> None:
        if self.stats is not None and sent:
            self.stats[self.i_out] += len(sent)
            self.stats[self.i_out + 1] += sum(len(p) for p in sent)


def _copy_to(sock: Any, parts: list[Any]) -> None:
    """Send a copy of a message to a capture/monitor socket; blocks (green) only if it is full."""
    send = _raw_send
    last = len(parts) - 1
    i = 0
    try:
        while i < last:
            send(sock, parts[i], _DONTWAIT | _SNDMORE, False, False)
            i += 1
        send(sock, parts[last], _DONTWAIT, False, False)
    except zmq.Again:
        # full (a PUSH or DEALER nobody reads): wait like libzmq's blocking
        # capture send, for this greenlet only; a half-sent message is finished
        sock.send_multipart(parts[i:], copy=False)


def _reschedule(sockets: list[Any]) -> None:
    # The raw calls may have consumed a ZMQ_FD edge that a greenlet blocked on
    # one of these sockets waits for: queue the EVENTS check the core needs.
    for sock in sockets:
        w = getattr(sock, "_waiters", None)
        if w is not None and w.armed:
            w.touched(sock)


class _SocketGone(Exception):
    """Thrown into a paused device when one of its sockets is closed."""


class _Gone:
    """A close-only listener: wakes a paused device whose socket went away."""

    __slots__ = ("glet", "waiting")

    def __init__(self, glet: Any) -> None:
        self.glet = glet
        self.waiting = True

    def __call__(self, events: int) -> None:
        if self.waiting and not events:
            self.waiting = False
            self.glet.throw(_SocketGone())


class _Engine:
    """The loop shared by every green device: relays, optional control socket."""

    def __init__(self, relays: list[_Relay], control: Any = None, stats: list[int] | None = None) -> None:
        self.relays = _receiving(relays)
        self.control = control
        self.stats = stats
        self.state = _ACTIVE
        self.reply_empty = control is not None and control.type == zmq.REP
        self.sockets = list(dict.fromkeys(s for r in self.relays for s in (r.src, r.dst)))
        copies = [s for r in self.relays for s in (r.capture, r.mon) if s is not None]
        self.touched = list(dict.fromkeys(self.sockets + copies))  # where raw calls happen
        # Send-only sockets (a PUSH backend, a PUB capture) are never polled for
        # what they carry; watching them for POLLIN (which never comes) makes the
        # device wake with ENOTSOCK when one of them is closed, instead of hanging.
        everything = [s for r in relays for s in (r.src, r.dst, r.capture, r.mon) if s is not None]
        self.watch_close = [s for s in dict.fromkeys(everything) if s.type in _SEND_ONLY]
        self._pollers: dict[tuple[tuple[Any, int], ...], Poller] = {}
        self._timer: Any = None

    def run(self) -> int:
        relays, touched = self.relays, self.touched
        try:
            while True:
                if self.control is not None:
                    self._obey()
                    if self.state is _TERMINATED:
                        return 0
                moved = 0
                if self.state is _ACTIVE:
                    for relay in relays:
                        moved += relay.pump(BURST)
                _reschedule(touched)
                if moved:
                    self._yield()
                else:
                    self._wait()
        finally:
            if self._timer is not None:
                self._timer.close()
            _reschedule(touched)  # an error may have left an fd edge consumed

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
        if self.state is _ACTIVE:
            for relay in self.relays:
                if relay.held is not None:
                    interest[relay.dst] = interest.get(relay.dst, 0) | _POLLOUT
                else:
                    interest[relay.src] = interest.get(relay.src, 0) | _POLLIN
        if self.control is not None:
            interest[self.control] = interest.get(self.control, 0) | _POLLIN
        for sock in self.watch_close:
            interest[sock] = interest.get(sock, 0) | _POLLIN
        key = tuple(interest.items())
        poller = self._pollers.get(key)
        if poller is None:
            poller = self._pollers[key] = Poller()
            for sock, flags in key:
                poller.register(sock, flags)
        if self.state is _ACTIVE:
            poller.poll()
            return
        # Paused: the relays' sockets must not be polled for what they carry
        # (that would spin on queued messages), yet their close must still end
        # the device. A listener whose mask matches no event is called only with
        # 0, when the socket is closed or its context terminated.
        gone = _Gone(getcurrent())
        watched = []
        try:
            for sock in self.sockets:
                w = getattr(sock, "_waiters", None)
                if w is not None and sock not in interest:
                    w.listen(sock, gone, 0, gone)
                    watched.append(w)
            poller.poll()
        except _SocketGone:
            for sock in self.sockets:
                sock.get(zmq.EVENTS)  # raises ENOTSOCK (closed) or ContextTerminated
        finally:
            gone.waiting = False
            for w in watched:
                w.unlisten(gone)

    def _obey(self) -> None:
        control = self.control
        while self.state is not _TERMINATED:
            try:
                parts = control.recv_multipart(_DONTWAIT)
            except zmq.Again:
                return
            command = parts[0]
            if command == _STATISTICS:
                control.send_multipart([_UINT64.pack(v) for v in self.stats])
                continue
            self.state = _COMMANDS.get(command, self.state)  # unknown commands are ignored
            if self.reply_empty:
                control.send(b"")


def _receiving(relays: list[_Relay]) -> list[_Relay]:
    return [r for r in relays if r.src.type not in _SEND_ONLY]
