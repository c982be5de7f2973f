"""The green :class:`MessageTracker`: waiting for libzmq to let go of a buffer blocks only the greenlet.

How a zero-copy buffer is released, and how the right greenlet hears of it
==========================================================================

``send(data, copy=False, track=True)`` hands libzmq a pointer into ``data``.
libzmq frees the message from its own I/O thread (tcp: once the bytes are
written to the wire; inproc: once the peer closes the received frame) by
calling pyzmq's C free function, which posts the buffer's id to pyzmq's
garbage-collector thread (``zmq.utils.garbage``); that thread drops its
reference to ``data`` and calls ``set()`` on the frame's ``threading.Event``.
pyzmq's :class:`zmq.MessageTracker` is a set of those events, and its
``wait()`` is ``Event.wait()``: it blocks the OS thread, so under gevent the
whole hub freezes until libzmq is done.

Our ``wait()`` never blocks the thread and never polls:

1. ``threading.Event.set()`` runs ``notify_all()`` on the event's condition
   under its lock, which calls ``release()`` on every object in the
   condition's waiter list. :func:`_attach` puts a tiny :class:`_Hook` there
   (under the same lock, after checking the flag), so the ``set()`` in
   pyzmq's gc thread calls ``_Hook.release()``. Because the check and the
   append happen under the lock that ``set()`` holds, a ``set()`` either
   happened before (we see the flag) or will call the hook: no lost wake-up.
   (This leans on CPython's ``threading.Condition._waiters``, which has kept
   this shape since Python 3.2; :data:`HOOKABLE` checks it at import and a
   threadpool fallback covers an interpreter without it.)
2. ``_Hook.release()`` runs in the foreign thread, so it may only do
   thread-safe things: it appends a callback to the hub's :class:`_Channel`
   inbox (a deque) and calls ``send()`` on the channel's *async watcher*,
   libev/libuv's documented way to wake a loop from another thread.
3. The hub runs :meth:`_Channel._drain`, which calls the callbacks; the last
   event of a tracker switches its waiting greenlet back in.

There is one channel per hub (per OS thread running gevent), shared by every
tracker and context used in that thread: ten thousand pending trackers cost
ten thousand hooks and one watcher, no thread and no timer. The watcher is
unreferenced while nobody waits (an idle channel does not keep the loop
alive) and referenced while somebody does (a wait without timeout is not a
"blocking forever" ``LoopExit``: the wake-up comes from another thread).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

import zmq
from gevent import Timeout, getcurrent
from gevent.hub import Waiter, get_hub
from gevent.monkey import get_original

__all__ = ["MessageTracker", "green_tracker", "HOOKABLE"]

#: Whether ``threading.Event`` has the shape :func:`_attach` relies on.
HOOKABLE = hasattr(get_original("threading", "Condition")(), "_waiters") and hasattr(
    get_original("threading", "Event")(), "_cond"
)

_local = get_original("threading", "local")()


class _Channel:
    """One hub-safe channel: any thread posts callbacks, the hub runs them."""

    __slots__ = ("hub", "inbox", "watcher", "holds")

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.inbox: deque[Callable[[], None]] = deque()
        self.watcher = hub.loop.async_()
        self.watcher.start(self._drain)
        self.watcher.ref = False
        self.holds = 0

    def post(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` in the hub soon. Safe from any thread."""
        self.inbox.append(callback)
        self.watcher.send()

    def _drain(self) -> None:
        inbox = self.inbox
        while inbox:
            inbox.popleft()()

    def hold(self) -> None:
        """Keep the loop alive while a greenlet waits for a post (hub's thread only)."""
        self.holds += 1
        if self.holds == 1:
            self.watcher.ref = True

    def unhold(self) -> None:
        self.holds -= 1
        if not self.holds:
            self.watcher.ref = False


def _channel(hub: Any) -> _Channel:
    channel = getattr(_local, "channel", None)
    if channel is None or channel.hub is not hub:
        channel = _local.channel = _Channel(hub)
    return channel


class _Hook:
    """Stands in a ``threading.Condition``'s waiter list; ``release()`` posts to the hub."""

    __slots__ = ("channel", "callback")

    def __init__(self, channel: _Channel, callback: Callable[[], None]) -> None:
        self.channel = channel
        self.callback = callback

    def release(self) -> None:  # called by Condition.notify() in the setting thread
        self.channel.post(self.callback)

    def __call__(self, _source: Any) -> None:  # a gevent Event's rawlink callback
        self.channel.post(self.callback)


def _attach(event: Any, hook: _Hook) -> bool:
    """Make ``event.set()`` call ``hook``; False if the event is already set."""
    if hasattr(event, "rawlink"):  # gevent.event.Event: threading was monkey-patched before zmq
        if event.is_set():
            return False
        event.rawlink(hook)
        return True
    cond = event._cond
    with cond:
        if event._flag:
            return False
        cond._waiters.append(hook)
    return True


def _detach(event: Any, hook: _Hook) -> None:
    if hasattr(event, "rawlink"):
        event.unlink(hook)
        return
    cond = event._cond
    with cond:
        try:
            cond._waiters.remove(hook)
        except ValueError:
            pass  # already notified (set() removes it)


def _leaves(tracker: zmq.MessageTracker, into: list[Any]) -> list[Any]:
    for event in tracker.events:
        if not event.is_set():
            into.append(event)
    for peer in tracker.peers:
        _leaves(peer, into)
    return into


class MessageTracker(zmq.MessageTracker):
    """A :class:`zmq.MessageTracker` whose :meth:`wait` blocks only the calling greenlet.

    Built like pyzmq's (``MessageTracker(*frames_events_or_trackers)``), or
    from any pyzmq tracker with :func:`green_tracker`. :attr:`done` is
    pyzmq's: true once libzmq released every tracked buffer.

    Green behaviour
    ---------------
    :meth:`wait` parks the calling greenlet until libzmq's I/O thread
    releases the last buffer (woken through the hub's async channel, see the
    module docstring), or raises :class:`zmq.NotDone` after ``timeout``
    seconds; other greenlets keep running meanwhile. ``gevent.Timeout`` and
    ``kill()`` interrupt it cleanly. Any number of greenlets may wait on one
    tracker. Called from the hub itself (a callback) it cannot yield and
    blocks the thread as pyzmq does.
    """

    def wait(self, timeout: float | None = -1) -> None:
        """Wait until libzmq is done with the message(s), or raise :class:`zmq.NotDone`.

        ``timeout`` in seconds; negative, ``None`` or ``False``: wait forever.
        """
        pending = list(dict.fromkeys(_leaves(self, [])))  # peers may share events
        if not pending:
            return
        if timeout is None:
            timeout = -1
        forever = timeout is False or timeout < 0
        hub = get_hub()
        if getcurrent() is hub:
            super().wait(-1 if forever else timeout)
            return
        if not HOOKABLE:  # pragma: no cover - an interpreter without Condition._waiters
            hub.threadpool.apply(super().wait, (-1 if forever else timeout,))
            return
        channel = _channel(hub)
        waiter = Waiter(hub)
        left = [0]

        def one_released() -> None:  # in the hub, once per attached event
            left[0] -= 1
            if left[0] == 0:
                waiter.switch(None)

        hook = _Hook(channel, one_released)
        attached: list[Any] = []
        timer = Timeout._start_new_or_dummy(None if forever else timeout)
        channel.hold()
        try:
            for event in pending:
                if _attach(event, hook):
                    attached.append(event)
                    left[0] += 1
            if not attached:
                return
            try:
                waiter.get()
            except Timeout as exc:
                if exc is not timer:
                    raise
                raise zmq.NotDone(f"libzmq still holds the message after {timeout} s") from None
        finally:
            timer.close()
            channel.unhold()
            for event in attached:
                _detach(event, hook)


def green_tracker(tracker: zmq.MessageTracker | None) -> zmq.MessageTracker | None:
    """Return ``tracker`` in a form whose ``wait()`` blocks only the greenlet.

    Used by the green socket's ``send(..., track=True)``. A tracker that may
    still be pending becomes a green :class:`MessageTracker` following the
    same buffers; one that is already done is returned as pyzmq made it (its
    ``wait()`` returns at once), so a tracked send below ``copy_threshold``
    returns pyzmq's own ``zmq._FINISHED_TRACKER``, as with pyzmq. ``None``
    stays ``None``.
    """
    if tracker is None or isinstance(tracker, MessageTracker) or tracker.done:
        return tracker
    return MessageTracker(tracker)
