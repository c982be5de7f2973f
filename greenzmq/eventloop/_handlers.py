"""The handlers of :meth:`IOLoop.add_handler`: plain fds and green zmq sockets.

Both kinds are one-shot and re-armed after each dispatch: the hub only notes
readiness and queues the dispatch on the loop; the handler runs in the loop's
greenlet; then the source is watched again. So a handler is never queued
twice, and it is level-triggered like ``zmq_poll``: called again while the
condition holds.

A zmq socket is never watched through its own io watcher on ``ZMQ_FD`` (which
is edge-triggered and shared with every greenlet blocked on the socket): its
handler is a one-shot listener of the socket's :class:`greenzmq._waiter.Waiters`,
whose ``listen`` reads ``EVENTS`` after the watch starts, so readiness that
arrived while the handler ran is seen at once.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

import zmq

from greenzmq._native import get_ident
from greenzmq._waiter import waiters_of
from greenzmq.error import WrongThreadError

if TYPE_CHECKING:
    from greenzmq.eventloop.ioloop import IOLoop

__all__ = ["NONE", "READ", "WRITE", "ERROR", "handler_key", "make_handler"]

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


def make_handler(loop: IOLoop, fd: Any, key: Any, handler: Callable, events: int) -> Any:
    """The right handler object for ``fd`` (not armed yet)."""
    if isinstance(fd, zmq.Socket):
        return _SocketHandler(loop, fd, handler, events)
    return _FdHandler(loop, fd, key, handler, events)


def handler_key(fd: Any) -> Any:
    if isinstance(fd, zmq.Socket):
        return ("zmq", id(fd))
    if isinstance(fd, int):
        return fd
    try:
        return fd.fileno()
    except AttributeError:
        raise TypeError(f"{fd!r} is neither an fd, an object with fileno(), nor a zmq socket") from None


class _Handler:
    """One registered handler: one-shot readiness, dispatched in the loop, re-armed after."""

    __slots__ = ("loop", "obj", "handler", "events", "busy", "removed")

    def __init__(self, loop: IOLoop, obj: Any, handler: Callable, events: int) -> None:
        self.loop = loop
        self.obj = obj
        self.handler = handler
        self.events = events
        self.busy = False  # fired: a dispatch is queued or running; re-armed after it
        self.removed = False

    def _dispatch(self, events: int) -> None:
        self.busy = False
        if self.removed:
            return
        events &= self.events | ERROR
        if events:
            try:
                self.handler(self.obj, events)
            except Exception:
                self.loop.handle_callback_exception(self.handler)
        if not events & ERROR:
            self.arm()

    def update(self, events: int) -> None:
        if events != self.events:
            self.disarm()
            self.events = events
            self.arm()

    def remove(self) -> None:
        self.removed = True
        self.disarm()


class _FdHandler(_Handler):
    """A plain fd, on a libev io watcher that is stopped while its dispatch is pending."""

    __slots__ = ("fd", "watcher")

    def __init__(self, loop: IOLoop, obj: Any, fd: int, handler: Callable, events: int) -> None:
        super().__init__(loop, obj, handler, events)
        self.fd = fd
        self.watcher: Any = None

    def arm(self) -> None:
        flags = (_EV_READ if self.events & READ else 0) | (_EV_WRITE if self.events & WRITE else 0)
        if self.removed or self.busy or not flags:
            return
        watcher = self.watcher
        if watcher is None or watcher.events != flags:
            if watcher is not None:
                watcher.close()
            watcher = self.watcher = self.loop._hub_loop.io(self.fd, flags)
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
        self.loop._post(self._dispatch, (events,), None)

    def close_fd(self) -> None:
        close = getattr(self.obj, "close", None)
        if close is not None:
            close()
        else:
            os.close(self.fd)


class _SocketHandler(_Handler):
    """A green zmq socket, on one-shot listeners of the socket's own :class:`Waiters`."""

    __slots__ = ("listening",)

    def __init__(self, loop: IOLoop, sock: Any, handler: Callable, events: int) -> None:
        waiters = waiters_of(sock)
        if waiters is None:
            raise TypeError(
                f"{sock!r} is not a greenzmq socket: the IOLoop waits on a zmq socket through its green "
                "waiter. Use greenzmq.Context().socket(...) or greenzmq.Socket(shadow=sock)."
            )
        if waiters.thread != get_ident():
            waiters = waiters.claim(sock)  # ownership follows use (Waiters.claim)
        if waiters.hub is not loop._hub:
            raise WrongThreadError("this zmq socket belongs to another thread's hub than this IOLoop")
        super().__init__(loop, sock, handler, events)
        self.listening = False

    def arm(self) -> None:
        mask = (_POLLIN if self.events & READ else 0) | (_POLLOUT if self.events & WRITE else 0)
        if self.removed or self.busy or self.listening or not mask:
            return
        sock = self.obj
        try:
            waiters = sock._waiters
            if waiters.thread != get_ident():
                waiters = waiters.claim(sock)  # used by another thread meanwhile
            waiters.listen(sock, self, mask, self._fired)
        except zmq.ZMQError:  # closed: report it once
            self.busy = True
            self.loop._post(self._dispatch, (ERROR,), None)
            return
        self.listening = True

    def disarm(self) -> None:
        if self.listening:
            self.listening = False
            self.obj._waiters.unlisten(self)

    def _fired(self, zevents: int) -> None:
        self.listening = False
        self.busy = True
        if zevents:
            events = (READ if zevents & _POLLIN else 0) | (WRITE if zevents & _POLLOUT else 0)
        else:  # closed, or its context terminated
            events = ERROR
        self.loop._post(self._dispatch, (events,), None)

    def close_fd(self) -> None:
        self.obj.close(linger=0)
