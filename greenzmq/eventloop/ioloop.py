"""The event loop that *is* the gevent hub: :class:`IOLoop`.

Callback-style code written for tornado's ``IOLoop`` (as pyzmq's
``zmq.eventloop`` uses it) runs here on the hub of the calling OS thread: no
second event loop, no tornado, no asyncio. Every readiness source is a hub
watcher (timers, io watchers on plain fds, and, for green zmq sockets, the
socket's own :class:`greenzmq._waiter.Waiters` listeners); the hub never runs
user code itself. It only appends work to the loop's FIFO of callbacks, which
the greenlet that called :meth:`IOLoop.start` runs, one after the other.

So callbacks run in order, one at a time, in one greenlet, exactly as on
tornado, and they *may* make green blocking calls (they then hold up the other
callbacks, as a blocking call does in tornado, while every other greenlet, the
gevent servers of the process included, keeps running).
"""

from __future__ import annotations

import datetime
import heapq
import itertools
import logging
import math
import numbers
import time
from collections import deque
from typing import Any, Callable, Literal, overload

import gevent
from gevent import getcurrent
from gevent.hub import get_hub
from gevent.monkey import get_original

from greenzmq._native import get_ident
from greenzmq.error import WrongThreadError
from greenzmq.eventloop._handlers import ERROR, NONE, READ, WRITE, handler_key, make_handler

__all__ = ["IOLoop", "TimeoutHandle"]

logger = logging.getLogger("greenzmq.eventloop")

_thread_local = get_original("_thread", "_local")

#: When more than this many cancelled timeouts sit in the heap, and they are
#: more than half of it, the heap is rebuilt without them (tornado's rule), so
#: a program that keeps setting and cancelling timeouts does not grow it.
_CANCELLED_TIMEOUTS_BEFORE_CLEANUP = 512


#: The current loop of each OS thread (a real thread-local, even when monkey-patched).
_current = _thread_local()


def _noop() -> None:
    pass


class TimeoutHandle:
    """The handle returned by :meth:`IOLoop.call_at` and friends; pass it to
    :meth:`IOLoop.remove_timeout` (or call :meth:`cancel`) to cancel."""

    __slots__ = ("deadline", "callback", "args", "kwargs", "cancelled", "_loop", "__weakref__")

    def __init__(self, loop: IOLoop, deadline: float, callback: Callable, args: tuple, kwargs: dict) -> None:
        self.deadline = deadline
        self.callback = callback
        self.args = args
        self.kwargs = kwargs
        self.cancelled = False
        self._loop = loop

    def cancel(self) -> None:
        """Cancel the timeout if it has not run yet (no error if it has)."""
        if not self.cancelled:
            self.cancelled = True
            self._loop._timeout_cancelled()

    def _run(self) -> None:
        if not self.cancelled:
            self.cancelled = True  # ran: a later cancel() is a no-op
            self.callback(*self.args, **self.kwargs)


class IOLoop:
    """tornado's ``IOLoop`` API, on the gevent hub of the OS thread that makes it.

    Green behaviour
    ---------------
    * One loop per thread's hub: :meth:`current` and :meth:`instance` return
      (and if needed create) the calling thread's loop.
    * :meth:`start` blocks only the calling greenlet (never the hub itself)
      until :meth:`stop`; it runs every callback, timeout and handler in that
      greenlet, in order. Other greenlets run while the loop waits, and while
      a callback blocks on a green call.
    * Nothing runs while the loop is not started: callbacks and events queue
      up (in order) until :meth:`start`.
    * A callback that raises :class:`Exception` is logged (logger
      ``greenzmq.eventloop``, with its traceback) and the loop goes on.
    * :meth:`add_callback`, :meth:`spawn_callback` and :meth:`stop` may be
      called from any OS thread; every other method only from the loop's own
      thread (:class:`~greenzmq.error.WrongThreadError` otherwise).
    """

    NONE = NONE
    READ = READ
    WRITE = WRITE
    ERROR = ERROR

    def __init__(self) -> None:
        self._hub = get_hub()
        self._hub_loop = self._hub.loop
        self._thread = get_ident()
        self._callbacks: deque[tuple[Callable, tuple, dict | None]] = deque()
        self._timeouts: list[tuple[float, int, TimeoutHandle]] = []
        self._timeout_seq = itertools.count()
        self._cancellations = 0
        self._timer: Any = None
        self._timer_deadline = math.inf
        self._handlers: dict[Any, Any] = {}
        self._runner: Any = None
        self._running = False
        self._stopping = False
        self._sleeping = False  # the runner is parked in the hub, waiting for work
        self._wake_pending = False
        self._closed = False
        # keeps the hub from exiting (LoopExit) while start() waits for work
        self._keepalive = self._hub_loop.async_()
        if getattr(_current, "loop", None) is None:
            self.make_current()

    # -- which loop ----------------------------------------------------------------

    @overload
    @classmethod
    def current(cls, instance: Literal[True] = True) -> IOLoop: ...
    @overload
    @classmethod
    def current(cls, instance: bool) -> IOLoop | None: ...
    @classmethod
    def current(cls, instance: bool = True) -> IOLoop | None:
        """The calling thread's loop; created if there is none (unless ``instance=False``)."""
        loop = getattr(_current, "loop", None)
        if loop is None and instance:
            loop = cls()
        return loop

    @classmethod
    def instance(cls) -> IOLoop:
        """Alias of :meth:`current` (pyzmq's and old tornado's name)."""
        return cls.current()

    def make_current(self) -> None:
        """Make this the loop :meth:`current` returns in its thread."""
        self._check_thread()
        _current.loop = self

    @staticmethod
    def clear_current() -> None:
        """Forget the calling thread's current loop."""
        _current.loop = None

    def time(self) -> float:
        """The loop's clock (:func:`time.monotonic`); deadlines are in this unit."""
        return time.monotonic()

    # -- running -----------------------------------------------------------------------

    def start(self) -> None:
        """Run callbacks and events in the calling greenlet until :meth:`stop`.

        Raises :class:`RuntimeError` if the loop is already running or closed,
        or if called from the hub (which must never block). A ``stop()`` made
        before ``start()`` makes it return at once. An exception thrown into
        the greenlet (``gevent.Timeout``, ``kill()``) ends ``start`` with it.
        """
        self._check_thread()
        if self._closed:
            raise RuntimeError("IOLoop is closed")
        if self._running:
            raise RuntimeError("IOLoop is already running")
        runner = getcurrent()
        if runner is self._hub:
            raise RuntimeError("IOLoop.start() blocks: call it from a greenlet, not from the gevent hub")
        self._running = True
        self._runner = runner
        self._keepalive.start(_noop)
        callbacks = self._callbacks
        try:
            while not self._stopping:
                if not callbacks:
                    self._sleeping = True
                    try:
                        self._hub.switch()
                    finally:
                        self._sleeping = False
                    continue
                # run the callbacks present now; later ones after the hub had a turn
                for _ in range(len(callbacks)):
                    fn, args, kwargs = callbacks.popleft()
                    try:
                        if kwargs:
                            fn(*args, **kwargs)
                        else:
                            fn(*args)
                    except Exception:
                        self.handle_callback_exception(fn)
                if callbacks and not self._stopping:
                    gevent.sleep(0)  # let the hub poll io and run timers between batches
        finally:
            self._keepalive.stop()
            self._running = False
            self._stopping = False
            self._runner = None

    def stop(self) -> None:
        """Make :meth:`start` return after the current batch of callbacks.

        Safe from any thread. Callbacks still queued run at the next ``start()``.
        """
        if get_ident() != self._thread:
            self._hub_loop.run_callback_threadsafe(self.stop)
            return
        self._stopping = True
        self._wake()

    def is_running(self) -> bool:
        return self._running

    def run_sync(self, func: Callable[[], Any], timeout: float | None = None) -> Any:
        """Start the loop, run ``func()`` in its own greenlet, stop when it returns.

        Returns what ``func`` returned or raises what it raised;
        :class:`TimeoutError` after ``timeout`` seconds (``func`` is killed).
        """
        outcome: list[Any] = []
        waiting = [True]

        def run() -> None:
            try:
                outcome.append((True, func()))
            except BaseException as exc:  # handed to the caller, not printed by the hub
                outcome.append((False, exc))
            finally:
                if waiting[0]:
                    self.stop()

        glet = gevent.Greenlet(run)
        self.add_callback(glet.start)
        timer = None
        if timeout is not None:
            timer = self.call_later(timeout, self.stop)
        try:
            self.start()
        finally:
            if timer is not None:
                self.remove_timeout(timer)
        waiting[0] = False
        if not outcome:
            glet.kill()
            raise TimeoutError(f"operation timed out after {timeout} seconds")
        ok, value = outcome[0]
        if ok:
            return value
        raise value

    def close(self, all_fds: bool = False) -> None:
        """Release the loop's timers and handlers; ``all_fds`` also closes them.

        Raises :class:`RuntimeError` while the loop runs. Safe to call twice.
        Handlers are removed (zmq sockets are closed with ``all_fds``, with
        linger 0), pending callbacks and timeouts are dropped.
        """
        self._check_thread()
        if self._running:
            raise RuntimeError("cannot close a running IOLoop; stop() it first")
        if self._closed:
            return
        self._closed = True
        for handler in list(self._handlers.values()):
            self.remove_handler(handler.obj)
            if all_fds:
                handler.close_fd()
        for _, _, timeout in self._timeouts:
            timeout.cancelled = True
        self._timeouts.clear()
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        self._callbacks.clear()
        self._keepalive.close()
        if getattr(_current, "loop", None) is self:
            _current.loop = None

    # -- callbacks ----------------------------------------------------------------------

    def add_callback(self, callback: Callable, *args: Any, **kwargs: Any) -> None:
        """Run ``callback(*args, **kwargs)`` on the loop's next iteration.

        Safe from any OS thread and from signal handlers (a foreign thread's
        call goes through gevent's ``run_callback_threadsafe``). Raises
        :class:`RuntimeError` if the loop is closed.
        """
        if self._closed:
            raise RuntimeError("IOLoop is closed")
        if get_ident() != self._thread:
            self._hub_loop.run_callback_threadsafe(self._post, callback, args, kwargs)
        else:
            self._post(callback, args, kwargs)

    add_callback_from_signal = add_callback

    def spawn_callback(self, callback: Callable, *args: Any, **kwargs: Any) -> None:
        """Run ``callback`` on the next iteration in a greenlet of its own.

        It may block as long as it likes without holding up the loop; an
        exception it raises is logged like any callback's.
        """
        self.add_callback(self._spawn, callback, args, kwargs)

    def _spawn(self, callback: Callable, args: tuple, kwargs: dict) -> None:
        gevent.spawn(self._run_logged, callback, args, kwargs)

    def _run_logged(self, callback: Callable, args: tuple, kwargs: dict) -> None:
        try:
            callback(*args, **kwargs)
        except Exception:
            self.handle_callback_exception(callback)

    def handle_callback_exception(self, callback: Any) -> None:
        """Log the exception being handled, raised by ``callback`` (override to change)."""
        logger.error("Exception in callback %r", callback, exc_info=True)

    def _post(self, fn: Callable, args: tuple, kwargs: dict | None) -> None:
        """Queue work and wake the runner (loop's thread only, hub or greenlet)."""
        self._callbacks.append((fn, args, kwargs))
        if self._sleeping:
            self._wake()

    def _wake(self) -> None:
        """Resume the runner parked in :meth:`start`: at once when called from
        the hub (which is what the runner parked in), else from a hub callback
        (switching from another greenlet would strand that greenlet)."""
        if not self._sleeping:
            return
        if getcurrent() is self._hub:
            self._sleeping = False
            self._runner.switch()
        elif not self._wake_pending:
            self._wake_pending = True
            self._hub_loop.run_callback(self._switch_to_runner)

    def _switch_to_runner(self) -> None:
        self._wake_pending = False
        if self._sleeping:  # not if the runner is blocked in a green call of a callback
            self._sleeping = False
            self._runner.switch()

    # -- timeouts -----------------------------------------------------------------------

    def call_at(self, when: float, callback: Callable, *args: Any, **kwargs: Any) -> TimeoutHandle:
        """Run ``callback(*args, **kwargs)`` at :meth:`time` ``when``; returns a handle.

        Timeouts with equal deadlines run in the order they were set.
        """
        self._check_thread()
        if self._closed:
            raise RuntimeError("IOLoop is closed")
        timeout = TimeoutHandle(self, float(when), callback, args, kwargs)
        heapq.heappush(self._timeouts, (timeout.deadline, next(self._timeout_seq), timeout))
        if timeout.deadline < self._timer_deadline:
            self._arm_timer()
        return timeout

    def call_later(self, delay: float, callback: Callable, *args: Any, **kwargs: Any) -> TimeoutHandle:
        """Run ``callback(*args, **kwargs)`` after ``delay`` seconds; returns a handle."""
        return self.call_at(self.time() + delay, callback, *args, **kwargs)

    def add_timeout(
        self, deadline: float | datetime.timedelta, callback: Callable, *args: Any, **kwargs: Any
    ) -> TimeoutHandle:
        """tornado's form: ``deadline`` is a :meth:`time` value, or a
        :class:`datetime.timedelta` from now. Raises :class:`TypeError` otherwise."""
        if isinstance(deadline, numbers.Real) and not isinstance(deadline, bool):
            return self.call_at(deadline, callback, *args, **kwargs)
        if isinstance(deadline, datetime.timedelta):
            return self.call_later(deadline.total_seconds(), callback, *args, **kwargs)
        raise TypeError(
            f"add_timeout: deadline must be a number (IOLoop.time()) or a timedelta, not {deadline!r}"
        )

    def remove_timeout(self, timeout: TimeoutHandle) -> None:
        """Cancel a timeout that has not run (no error if it has run or was cancelled)."""
        if not isinstance(timeout, TimeoutHandle):
            raise TypeError(f"remove_timeout: expected the handle add_timeout returned, not {timeout!r}")
        timeout.cancel()

    def _timeout_cancelled(self) -> None:
        self._cancellations += 1
        if (
            self._cancellations > _CANCELLED_TIMEOUTS_BEFORE_CLEANUP
            and self._cancellations > len(self._timeouts) >> 1
        ):
            self._timeouts = [entry for entry in self._timeouts if not entry[2].cancelled]
            heapq.heapify(self._timeouts)
            self._cancellations = 0

    def _arm_timer(self) -> None:
        """Point the one hub timer at the earliest live deadline."""
        heap = self._timeouts
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
            self._cancellations = max(0, self._cancellations - 1)
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        self._timer_deadline = math.inf
        if heap:
            deadline = heap[0][0]
            self._timer = self._hub_loop.timer(max(0.0, deadline - self.time()))
            self._timer.start(self._on_timer, update=True)
            self._timer_deadline = deadline

    def _on_timer(self) -> None:
        """In the hub: queue every due timeout, in deadline order, then re-arm."""
        now = self.time()
        heap = self._timeouts
        while heap and heap[0][0] <= now:
            timeout = heapq.heappop(heap)[2]
            if timeout.cancelled:
                self._cancellations = max(0, self._cancellations - 1)
            else:
                self._callbacks.append((timeout._run, (), None))
        self._arm_timer()
        self._wake()

    # -- handlers -------------------------------------------------------------------------

    def add_handler(self, fd: Any, handler: Callable[[Any, int], Any], events: int) -> None:
        """Call ``handler(fd, events)`` whenever ``fd`` is ready for ``events``.

        ``fd`` is an int, an object with ``fileno()``, or a green zmq socket;
        ``events`` is a mask of :attr:`READ`, :attr:`WRITE`, :attr:`ERROR`.
        Level-triggered like ``zmq_poll``: the handler is called again while
        the condition holds. For a zmq socket readiness is its ``EVENTS``
        (never its edge-triggered ``ZMQ_FD``), served by the socket's own
        waiter, so greenlets blocked in ``recv``/``send`` on the same socket
        lose nothing; the handler gets :attr:`ERROR` once if the socket is
        closed or its context terminated. Raises :class:`ValueError` if ``fd``
        already has a handler, :class:`TypeError` for a non-green zmq socket.
        """
        self._check_thread()
        if self._closed:
            raise RuntimeError("IOLoop is closed")
        key = handler_key(fd)
        if key in self._handlers:
            raise ValueError(f"{fd!r} already has a handler in this IOLoop; use update_handler")
        # the handler's seams: the hub that notes readiness, the queue its dispatch goes to
        entry = make_handler(fd, handler, events, self._hub, self._post, self.handle_callback_exception)
        self._handlers[key] = entry
        entry.arm()

    def update_handler(self, fd: Any, events: int) -> None:
        """Change the events ``fd``'s handler is called for. KeyError if it has none."""
        self._check_thread()
        self._handlers[handler_key(fd)].update(events)

    def remove_handler(self, fd: Any) -> None:
        """Stop calling ``fd``'s handler (no error if it has none). Call it before closing ``fd``."""
        self._check_thread()
        entry = self._handlers.pop(handler_key(fd), None)
        if entry is not None:
            entry.remove()

    def _check_thread(self) -> None:
        if get_ident() != self._thread:
            raise WrongThreadError(
                f"this IOLoop belongs to the gevent hub of thread {self._thread}; it was used from "
                f"thread {get_ident()}. Only add_callback, spawn_callback and stop are thread-safe."
            )
