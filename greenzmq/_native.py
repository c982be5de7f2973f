"""Native OS threads under gevent: who is running, and blocking C calls waited for by a greenlet.

libzmq has calls that block their thread by design and cannot be made green:
``zmq_ctx_term`` (until every socket is closed) and the device loops
(``zmq_proxy``, ``zmq_proxy_steerable``, pyzmq's ``monitored_queue``), which
all release the GIL. greenzmq runs them in a :class:`NativeThread` and blocks
only the calling greenlet until they return.

Why not gevent's threadpool: its size is bounded (a long-running device, or a
``term()`` waiting for sockets, would hold a worker each, and the next call
would queue behind them), and after a plain ``os.fork()`` (no gevent
``reinit()``) its workers are gone while it still believes in them, so a call
queued there never runs. A thread started with the unpatched ``_thread`` module
is a real OS thread even under ``gevent.monkey.patch_all()``.

How the greenlet hears that the call ended: each waiting greenlet starts an
*async watcher* on its own hub (libev's documented way to wake a loop from
another thread) and registers it with the thread under a lock; the thread,
when the call returns, marks itself done and ``send()``\\ s every registered
watcher under that same lock. A waiter that finds the thread done under the
lock does not wait at all, and a waiter that leaves (timeout, kill) unregisters
under the lock before closing its watcher, so no wake-up is lost and no watcher
is signalled after it was closed.
"""

from __future__ import annotations

from typing import Any, Callable

from gevent import Timeout, getcurrent
from gevent.hub import Waiter, get_hub
from gevent.monkey import get_original

__all__ = ["NativeThread", "run_native", "get_ident"]

#: The OS thread's id, even after ``gevent.monkey.patch_all()`` (which makes
#: ``threading.get_ident`` return greenlet ids): whose hub a socket, a loop or
#: a log handler belongs to.
get_ident = get_original("_thread", "get_ident")
_start_new_thread = get_original("_thread", "start_new_thread")
_allocate_lock = get_original("_thread", "allocate_lock")


class NativeThread:
    """``fn(*args)`` in a new OS thread; :meth:`join` blocks only the calling greenlet.

    Green behaviour
    ---------------
    :meth:`join` and :meth:`result` park the calling greenlet until the call
    returns (other greenlets run); ``gevent.Timeout`` and ``kill()``
    interrupt the wait, not the call, which goes on in its thread. Called
    from the hub itself (a callback), they block the OS thread instead.
    Any number of greenlets, of any threads, may wait on one NativeThread.
    """

    __slots__ = ("fn", "args", "name", "done", "value", "error", "_finished", "_guard", "_watchers")

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str = "") -> None:
        self.fn = fn
        self.args = args
        self.name = name or getattr(fn, "__qualname__", repr(fn))
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self._finished = _allocate_lock()  # held while the call runs
        self._guard = _allocate_lock()  # orders `done` against watcher (un)registration
        self._watchers: list[Any] = []

    def __repr__(self) -> str:
        state = "done" if self.done else "running" if self._finished.locked() else "new"
        return f"<NativeThread {self.name} {state}>"

    def start(self) -> NativeThread:
        """Start the OS thread; returns ``self``."""
        self._finished.acquire()
        try:
            _start_new_thread(self._run, ())
        except BaseException:
            self._finished.release()
            raise
        return self

    def _run(self) -> None:
        try:
            self.value = self.fn(*self.args)
        except BaseException as exc:  # handed to whoever calls result()
            self.error = exc
        finally:
            with self._guard:
                self.done = True
                for watcher in self._watchers:
                    watcher.send()  # thread-safe: wakes the waiter's hub
                self._watchers.clear()
            self._finished.release()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the call returned; False if ``timeout`` seconds passed first."""
        if self.done:
            return True
        hub = get_hub()
        if getcurrent() is hub:  # cannot yield: block the thread
            if self._finished.acquire(True, -1 if timeout is None else timeout):
                self._finished.release()
                return True
            return False
        waiter = Waiter(hub)
        watcher = hub.loop.async_()
        watcher.start(waiter.switch, None)
        try:
            with self._guard:
                if self.done:
                    return True
                self._watchers.append(watcher)
            timer = Timeout._start_new_or_dummy(timeout)
            try:
                while not self.done:  # only the thread's send() may end this wait
                    waiter.get()
            except Timeout as exc:
                if exc is not timer:
                    raise
                return self.done
            finally:
                timer.close()
            return True
        finally:
            with self._guard:
                if watcher in self._watchers:
                    self._watchers.remove(watcher)
            watcher.close()

    def result(self) -> Any:
        """Wait (green) until the call returned; return its value or raise its exception."""
        self.join()
        if self.error is not None:
            raise self.error
        return self.value


def run_native(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` in a new OS thread and return its result, blocking only this greenlet."""
    return NativeThread(fn, *args).start().result()
