"""The handlers of :meth:`IOLoop.add_handler`: plain fds and green zmq sockets.

Both kinds are one-shot and re-armed after each dispatch: the hub only notes
readiness and posts the dispatch to the loop; the handler runs in the loop's
greenlet; then the source is watched again. So a handler is never queued
twice, and it is level-triggered like ``zmq_poll``: called again while the
condition holds.

A handler knows nothing of :class:`~greenzmq.eventloop.IOLoop`: the loop
hands it, at construction, the three things it uses (as gevent hands a
watcher its loop, and tornado's asyncio loop hands ``add_reader`` its own
dispatch): the gevent *hub* it is served by, a *post* callable that queues
work for the loop's greenlet, and a *report* callable for an exception the
user's handler raised.

A zmq socket is never watched through its own io watcher on ``ZMQ_FD`` (which
is edge-triggered and shared with every greenlet blocked on the socket): its
handler is a one-shot listener of the socket's :class:`greenzmq._waiter.Waiters`,
whose ``listen`` reads ``EVENTS`` after the watch starts, so readiness that
arrived while the handler ran is seen at once.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from typing import Any, Callable, Optional

import zmq

from greenzmq._native import get_ident
from greenzmq._waiter import waiters_of
from greenzmq.error import WrongThreadError

__all__ = ["NONE", "READ", "WRITE", "ERROR", "Post", "Report", "handler_key", "make_handler"]

# tornado's event bits (epoll's)
NONE = 0
READ = 0x001
WRITE = 0x004
ERROR = 0x018

_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
# libev's io watcher event bits
_EV_READ = 1
_EV_WRITE = 2

#: ``post(fn, args, kwargs)``: queue ``fn(*args, **(kwargs or {}))`` for the
#: loop's greenlet and wake it. Called from the hub, in the loop's thread.
Post = Callable[[Callable[..., Any], tuple, Optional[dict]], None]
#: ``report(handler)``: handle the exception ``handler`` just raised (in the loop's greenlet).
Report = Callable[[Any], None]


def handler_key(obj: Any) -> Hashable:
    """The key a loop files ``obj``'s handler under: the fd number, or the zmq socket's identity.

    ``obj`` is an int, an object with ``fileno()``, or a zmq socket. Raises
    :class:`TypeError` for anything else.
    """
    if isinstance(obj, zmq.Socket):
        return ("zmq", id(obj))
    return _fileno(obj)


def _fileno(obj: Any) -> int:
    if isinstance(obj, int):
        return obj
    try:
        return obj.fileno()
    except AttributeError:
        raise TypeError(f"{obj!r} is neither an fd, an object with fileno(), nor a zmq socket") from None


def make_handler(
    obj: Any, handler: Callable[[Any, int], Any], events: int, hub: Any, post: Post, report: Report
) -> _Handler:
    """The handler object calling ``handler(obj, events)`` for ``obj`` (not armed yet).

    Green behaviour
    ---------------
    Made and used in the OS thread of ``hub`` (the loop's thread). Readiness
    is noted in ``hub`` (an io watcher on ``hub.loop`` for a plain fd, a
    listener of the socket's waiter for a green zmq socket), which only calls
    ``post``; ``handler`` runs where ``post`` runs the work (the loop's
    greenlet), and an exception it raises goes to ``report(handler)``.
    Raises :class:`TypeError` for an ``obj`` that is no fd, nor a *green*
    zmq socket, and :class:`~greenzmq.error.WrongThreadError` for a socket
    another thread's greenlets wait on, or served by another hub.
    """
    if isinstance(obj, zmq.Socket):
        return _SocketHandler(obj, handler, events, hub, post, report)
    return _FdHandler(obj, _fileno(obj), handler, events, hub.loop, post, report)


class _Handler:
    """One registered handler: one-shot readiness, dispatched in the loop, re-armed after."""

    __slots__ = ("obj", "handler", "events", "post", "report", "busy", "removed")

    def __init__(self, obj: Any, handler: Callable, events: int, post: Post, report: Report) -> None:
        self.obj = obj
        self.handler = handler
        self.events = events
        self.post = post
        self.report = report
        self.busy = False  # fired: a dispatch is queued or running; re-armed after it
        self.removed = False

    def arm(self) -> None:
        raise NotImplementedError

    def disarm(self) -> None:
        raise NotImplementedError

    def close_fd(self) -> None:
        raise NotImplementedError

    def _dispatch(self, events: int) -> None:
        self.busy = False
        if self.removed:
            return
        events &= self.events | ERROR
        if events:
            try:
                self.handler(self.obj, events)
            except Exception:
                self.report(self.handler)
        if not events & ERROR:
            try:
                self.arm()
            except WrongThreadError:  # lent to a device, or waited on by another thread
                self.report(self.arm)

    def update(self, events: int) -> None:
        if events != self.events:
            self.disarm()
            self.events = events
            self.arm()

    def remove(self) -> None:
        self.removed = True
        self.disarm()


class _FdHandler(_Handler):
    """A plain fd, on a libev io watcher of ``hub_loop`` that is stopped while its dispatch is pending.

    ``obj`` is what the user registered (passed back to the handler, closed
    by :meth:`close_fd`), ``fd`` its file descriptor number.
    """

    __slots__ = ("fd", "hub_loop", "watcher")

    def __init__(
        self, obj: Any, fd: int, handler: Callable, events: int, hub_loop: Any, post: Post, report: Report
    ) -> None:
        super().__init__(obj, handler, events, post, report)
        self.fd = fd
        self.hub_loop = hub_loop
        self.watcher: Any = None

    def arm(self) -> None:
        flags = (_EV_READ if self.events & READ else 0) | (_EV_WRITE if self.events & WRITE else 0)
        if self.removed or self.busy or not flags:
            return
        watcher = self.watcher
        if watcher is None or watcher.events != flags:
            if watcher is not None:
                watcher.close()
            watcher = self.watcher = self.hub_loop.io(self.fd, flags)
        if not watcher.active:
            watcher.start(self._fired, pass_events=True)

    def disarm(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            if self.removed:
                self.watcher.close()
                self.watcher = None

    def _fired(self, revents: int) -> None:
        self.watcher.stop()
        self.busy = True
        events = (READ if revents & _EV_READ else 0) | (WRITE if revents & _EV_WRITE else 0)
        self.post(self._dispatch, (events,), None)

    def close_fd(self) -> None:
        close = getattr(self.obj, "close", None)
        if close is not None:
            close()
        else:
            os.close(self.fd)


class _SocketHandler(_Handler):
    """A green zmq socket, on one-shot listeners of the socket's own :class:`Waiters`.

    ``waiters`` is the socket's waiters as last seen, kept so that re-arming
    (once per dispatch) needs no lookup. It is still the socket's current one
    while it is not closed: only :meth:`Waiters.claim` replaces a socket's
    waiters (when the socket moves to another thread), and it retires (closes)
    the old ones.
    """

    __slots__ = ("listening", "waiters")

    def __init__(
        self, sock: Any, handler: Callable, events: int, hub: Any, post: Post, report: Report
    ) -> None:
        waiters = waiters_of(sock)
        if waiters is None:
            raise TypeError(
                f"{sock!r} is not a greenzmq socket: the IOLoop waits on a zmq socket through its green "
                "waiter. Use greenzmq.Context().socket(...) or greenzmq.Socket(shadow=sock)."
            )
        if waiters.thread != get_ident():
            waiters = waiters.claim(sock)  # ownership follows use (Waiters.claim)
        if waiters.hub is not hub:
            raise WrongThreadError("this zmq socket belongs to another thread's hub than this IOLoop")
        super().__init__(sock, handler, events, post, report)
        self.listening = False
        self.waiters = waiters

    def arm(self) -> None:
        mask = (_POLLIN if self.events & READ else 0) | (_POLLOUT if self.events & WRITE else 0)
        if self.removed or self.busy or self.listening or not mask:
            return
        sock = self.obj
        try:
            waiters = self.waiters
            if waiters.closed or waiters.thread != get_ident():
                # replaced (the socket moved to another thread, and maybe back),
                # closed, or used by another thread meanwhile: as a first call would
                waiters = self.waiters = waiters_of(sock).claim(sock)
            waiters.listen(sock, self, mask, self._fired)
        except zmq.ZMQError:  # closed: report it once
            self.busy = True
            self.post(self._dispatch, (ERROR,), None)
            return
        self.listening = True

    def disarm(self) -> None:
        if self.listening:
            self.listening = False
            self.waiters.unlisten(self)  # where it listens (nobody can claim a socket listened on)

    def _fired(self, zevents: int) -> None:
        self.listening = False
        self.busy = True
        if zevents:
            events = (READ if zevents & _POLLIN else 0) | (WRITE if zevents & _POLLOUT else 0)
        else:  # closed, or its context terminated
            events = ERROR
        self.post(self._dispatch, (events,), None)

    def close_fd(self) -> None:
        self.obj.close(linger=0)
