"""The green :class:`Poller` and :func:`select`.

``poll()`` first asks libzmq (``zmq_poll`` with a zero timeout), exactly as
pyzmq's Poller does, so results are identical. Only when nothing is ready does
it park the calling greenlet: green sockets are watched through their own
:class:`~greenzmq._waiter.Waiters` (one-shot listeners, so the poller and the
greenlets blocked in ``recv``/``send`` on the same socket never steal each
other's fd signal), other fds through io watchers the poller creates once per
registration and reuses on every call. There is no poll interval: an idle
poller costs no CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, overload

import zmq
from gevent.hub import Waiter, get_hub

from greenzmq._native import get_ident
from greenzmq._waiter import drain_fd, socket_fd, waiters_of

if TYPE_CHECKING:
    from _typeshed import HasFileno
    from zmq.backend import Socket as _RawSocket

__all__ = ["Poller", "select", "zmq_poll"]

_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_POLLERR = int(zmq.POLLERR)
_READ, _WRITE = 1, 2  # libev EV_READ, EV_WRITE


def _fileno(item: Any) -> int:
    if isinstance(item, int):
        return item
    try:
        return int(item.fileno())
    except Exception:
        raise ValueError(f"fileno() must return a valid integer fd: {item!r}") from None


class Poller(zmq.Poller):
    """A :class:`zmq.Poller` whose ``poll()`` blocks only the calling greenlet.

    Registers green and plain zmq sockets, integer fds and objects with
    ``fileno()``, for POLLIN, POLLOUT and POLLERR, with pyzmq's API.

    Green behaviour
    ---------------
    ``poll(timeout)`` returns as soon as an event is ready, like pyzmq; while
    nothing is, the greenlet waits in the hub with no timer but its own
    timeout, and other greenlets run. Registration is cheap to keep: the io
    watchers of non-green items are created once and reused by every
    ``poll()``. One Poller is used by one greenlet at a time; any number of
    Pollers may watch the same sockets, alongside greenlets blocked on them.
    A POLLERR-only registration of a plain fd is reported when it is also
    readable, or when another item wakes the poller (libev cannot watch
    errors alone).
    """

    def __init__(self) -> None:
        super().__init__()
        self._watchers: dict[Any, tuple[Any, list[Any]]] = {}  # item -> (loop, its io watchers)
        # proxy fds of plain thread-safe (DRAFT) sockets, drained before zmq_poll
        self._drain_fds: dict[Any, int] = {}

    def register(self, socket: Any, flags: int = _POLLIN | _POLLOUT) -> None:
        """Register a socket or fd for ``flags``; 0 unregisters. As pyzmq."""
        self._drop_watchers(socket)
        super().register(socket, flags)

    def unregister(self, socket: Any) -> None:
        """Stop polling a socket or fd. As pyzmq (KeyError if not registered)."""
        super().unregister(socket)
        self._drop_watchers(socket)

    def _drop_watchers(self, item: Any) -> None:
        self._drain_fds.pop(item, None)
        cached = self._watchers.pop(item, None)
        if cached is None:
            return
        loop, watchers = cached
        if loop is get_hub().loop:
            for watcher in watchers:
                watcher.close()
        else:  # made by another thread's loop: closed by it (a libev watcher is its loop's)
            for watcher in watchers:
                try:
                    loop.run_callback_threadsafe(watcher.close)
                except Exception:  # that loop was destroyed with its thread
                    pass

    def _release_watchers(self) -> None:
        for item in list(self._watchers):
            self._drop_watchers(item)

    def _watchers_for(self, item: Any, flags: int) -> list[Any]:
        """The cached io watchers of a non-green item, made on first use."""
        loop = get_hub().loop
        cached = self._watchers.get(item)
        if cached is not None and cached[0] is not loop:
            # made for another thread's loop (the Poller moved, as its sockets may)
            self._drop_watchers(item)
            cached = None
        if cached is not None:
            watchers = cached[1]
        else:
            if isinstance(item, zmq.Socket):
                # a plain (non-green) zmq socket: its fd only signals readability
                fd, drain = socket_fd(item)
                if drain:
                    self._drain_fds[item] = fd
                watchers = [loop.io(fd, _READ)]
            else:
                fd = _fileno(item)
                watchers = []
                if flags & (_POLLIN | _POLLERR):
                    watchers.append(loop.io(fd, _READ))
                if flags & _POLLOUT:
                    watchers.append(loop.io(fd, _WRITE))
            self._watchers[item] = (loop, watchers)
        return watchers

    def poll(self, timeout: int | float | None = None) -> list[tuple[Any, int]]:
        """Poll the registered sockets and fds; as :meth:`zmq.Poller.poll`.

        ``timeout`` is in milliseconds; ``None`` or negative waits forever.
        Returns a list of ``(socket_or_fd, events)`` (objects with ``fileno()``
        are reported by their fd number, as pyzmq does). Blocks only the
        calling greenlet. Raises :class:`zmq.ZMQError` (ENOTSOCK) if a
        registered zmq socket is closed, also when it is closed while the
        poll waits (pyzmq would report it as fd 0), and
        :class:`zmq.ContextTerminated` if ``Context.destroy()`` closed it.
        """
        if timeout is None or timeout < 0:
            timeout = -1
        else:
            timeout = int(timeout)
        hub = get_hub()
        deadline = None
        if timeout > 0:
            hub.loop.update_now()
            deadline = hub.loop.now() + timeout / 1000.0
        muted: set[Any] = set()
        while True:
            # every round: between two rounds nobody listens on the sockets (and
            # a POLLERR-only one never has a listener), so another thread may
            # have taken one over while this greenlet was parked
            self._claim_sockets()
            self._check_open()
            for fd in self._drain_fds.values():
                # before zmq_poll reads EVENTS (see greenzmq._waiter)
                drain_fd(fd)
            events = super().poll(0)
            self._after_zmq_poll()
            if events or timeout == 0:
                return events
            if deadline is None:
                remaining = -1.0
            else:
                hub.loop.update_now()
                remaining = deadline - hub.loop.now()
                if remaining <= 0:
                    return []
            # A plain fd registered for POLLERR alone is watched for
            # readability; if it woke us without an error it would wake us
            # again at once (libev is level-triggered), so it is muted for the
            # rest of this call. Every other watcher only fires on news.
            muted.update(self._wait(hub, remaining, muted))

    def _check_open(self) -> None:
        # libzmq would report a closed socket as fd 0 with POLLERR: say it instead
        for sock, _ in self.sockets:
            if isinstance(sock, zmq.Socket) and sock.closed:
                w = waiters_of(sock)
                if w is not None and w.close_error is not None:
                    exc = w.close_error()
                    if isinstance(exc, zmq.ContextTerminated):
                        raise exc  # closed by Context.destroy()
                raise zmq.ZMQError(
                    zmq.ENOTSOCK, f"Socket operation on non-socket: {sock!r} is registered in the poller"
                )

    def _claim_sockets(self) -> None:
        # zmq_poll touches every registered socket: green ones must belong to
        # this thread (they move here if nobody waits on them elsewhere, see
        # Waiters.claim; WrongThreadError if a greenlet of another thread does)
        me = get_ident()
        for sock, _ in self.sockets:
            w = waiters_of(sock)
            if w is not None and w.thread != me:
                w.claim(sock)

    def _after_zmq_poll(self) -> None:
        # zmq_poll read EVENTS on every socket, consuming fd signals that
        # greenlets blocked on those sockets may be waiting for.
        for sock, _ in self.sockets:
            w = waiters_of(sock)
            if w is not None and w.armed:
                w.touched(sock)

    def _wait(self, hub: Any, remaining: float, muted: set[Any]) -> list[Any]:
        """Park until a registered item may be ready or ``remaining`` s pass;
        return the POLLERR-only items that woke it (see poll)."""
        wake = Waiter(hub)  # one-shot: the first event switches, later ones are kept in it
        fired: list[Any] = []

        def err_only_ready(item: Any) -> None:
            fired.append(item)
            wake.switch(item)

        listening = []
        started = []
        timer = None
        try:
            for sock, flags in self.sockets:
                w = waiters_of(sock)
                if w is not None:
                    if flags & (_POLLIN | _POLLOUT):
                        # zmq_poll just read EVENTS here with no yield since
                        w.listen_after_reading(sock, wake, flags & (_POLLIN | _POLLOUT), wake.switch)
                        listening.append(w)
                    continue
                if sock in muted:
                    continue
                callback = err_only_ready if not flags & (_POLLIN | _POLLOUT) else wake.switch
                for watcher in self._watchers_for(sock, flags):
                    watcher.start(callback, sock)
                    started.append(watcher)
            if remaining >= 0:
                timer = hub.loop.timer(remaining)
                timer.start(wake.switch, None, update=True)  # from the real now (see Waiters._wait)
            wake.get()
        finally:
            for w in listening:
                w.unlisten(wake)
            for watcher in started:
                watcher.stop()
            if timer is not None:
                timer.close()
        return fired


# pyzmq's two signatures (zmq/backend/__init__.pyi), with the timeouts Poller.poll takes
@overload
def zmq_poll(
    sockets: Sequence[tuple[_RawSocket, int]], timeout: int | float | None = -1
) -> list[tuple[_RawSocket, int]]: ...
@overload
def zmq_poll(
    sockets: Sequence[tuple[int | HasFileno, int]], timeout: int | float | None = -1
) -> list[tuple[int, int]]: ...
def zmq_poll(sockets: Sequence[tuple[Any, int]], timeout: int | float | None = -1) -> list[tuple[Any, int]]:
    """Green :func:`zmq.zmq_poll`: same arguments (``(socket_or_fd, flags)`` pairs, ms) and result.

    Blocks only the calling greenlet, and keeps the waiting rule for green
    sockets that other greenlets wait on (pyzmq's raw ``zmq_poll`` would
    consume their fd signal and block the hub). Raises as :meth:`Poller.poll`.
    """
    poller = Poller()
    for item, flags in sockets:
        poller.register(item, flags)
    try:
        return poller.poll(timeout)
    finally:
        poller._release_watchers()


def select(
    rlist: list[Any], wlist: list[Any], xlist: list[Any], timeout: float | None = None
) -> tuple[list[Any], list[Any], list[Any]]:
    """Green :func:`zmq.select`: same arguments (timeout in seconds) and result.

    Blocks only the calling greenlet until one of the sockets or fds is ready
    or the timeout passes.
    """
    poller = Poller()
    for item in dict.fromkeys(rlist + wlist + xlist):
        flags = 0
        if item in rlist:
            flags |= _POLLIN
        if item in wlist:
            flags |= _POLLOUT
        if item in xlist:
            flags |= _POLLERR
        poller.register(item, flags)
    ms = -1 if timeout is None or timeout < 0 else int(timeout * 1000.0)
    try:
        ready = poller.poll(ms)
    finally:
        poller._release_watchers()
    rready, wready, xready = [], [], []
    for item, events in ready:
        if events & _POLLIN:
            rready.append(item)
        if events & _POLLOUT:
            wready.append(item)
        if events & _POLLERR:
            xready.append(item)
    return rready, wready, xready
