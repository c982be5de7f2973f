"""The green :class:`Context`: makes green sockets, and terminates without freezing the hub."""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any, TypeVar, overload

import zmq
from gevent.monkey import get_original

from greenzmq._native import NativeThread, get_ident
from greenzmq._waiter import waiters_of
from greenzmq.error import WrongThreadError
from greenzmq.serialize import SerializingContextMixin
from greenzmq.socket import Socket, _terminated_error

__all__ = ["Context"]

_raw_term = zmq.Context.term
_term_lock = get_original("_thread", "allocate_lock")()


#: The class of the sockets a context makes, for type checkers and subclasses:
#: ``class MyContext(greenzmq.Context[MySocket])`` as with pyzmq's generic Context.
_SocketType = TypeVar("_SocketType", bound=Socket, covariant=True)


class Context(SerializingContextMixin, zmq.Context[_SocketType]):
    """A :class:`zmq.Context` whose sockets are green :class:`greenzmq.Socket`.

    Generic in its socket class, like pyzmq's: a subclass written
    ``class SerializingContext(greenzmq.Context[SerializingSocket])`` with
    ``_socket_class = SerializingSocket`` makes green sockets of that class.

    Default socket options (``ctx.linger = 0``, ``ctx.setsockopt``) and
    ``ctx.socket(type, socket_class=...)`` work as in pyzmq.
    :meth:`instance` is greenzmq's own process-wide singleton, distinct from
    ``zmq.Context.instance()``.

    Green behaviour
    ---------------
    :meth:`term` and :meth:`destroy` called from a greenlet block only that
    greenlet: libzmq's blocking ``zmq_ctx_term`` runs in a native OS thread
    of its own (not gevent's bounded threadpool, which a plain ``os.fork()``
    leaves broken in the child) while the hub keeps running, so greenlets blocked on the context's sockets
    wake with :class:`zmq.ContextTerminated`, can close their sockets, and
    ``term`` completes. One Context may be shared by several OS threads, each
    with its own hub and its own sockets.
    """

    _socket_class: type[_SocketType] = Socket  # type: ignore[assignment]  # the default of a generic
    _repr_cls = "greenzmq.Context"
    # greenzmq's own singleton (pyzmq's lives on zmq.Context)
    _instance: Any = None
    _instance_pid: int | None = None
    # the zmq_ctx_term under way, if any: libzmq's term must run once per context
    _term_thread: NativeThread | None = None
    _term_pid = 0

    if TYPE_CHECKING:
        # pyzmq's constructor (inherited, not overridden), typed as pyzmq types it
        # (zmq/sugar/context.py) but with greenzmq's classes: ``greenzmq.Context()`` is
        # a ``greenzmq.Context[greenzmq.Socket[bytes]]``, as ``zmq.Context()`` is a
        # ``zmq.Context[zmq.Socket[bytes]]``.
        @overload
        def __init__(self: Context[Socket[bytes]], io_threads: int = 1) -> None: ...
        @overload
        def __init__(self: Context[Socket[bytes]], io_threads: zmq.Context[Any], /) -> None: ...
        @overload
        def __init__(self: Context[Socket[bytes]], *, shadow: zmq.Context[Any] | int) -> None: ...
        def __init__(self, *args: Any, **kwargs: Any) -> None: ...

    def term(self) -> None:
        """Terminate the context, blocking only the calling greenlet.

        As :meth:`zmq.Context.term`: returns once every socket of the context
        is closed and lingering messages are sent or dropped. Called from the
        hub itself (a callback, or garbage collection there), it cannot yield
        and blocks the thread as pyzmq does.
        """
        if self.closed:
            return
        # One zmq_ctx_term per context, ever: a term() interrupted by a Timeout
        # or kill leaves its native thread blocked in zmq_ctx_term, and a second
        # zmq_ctx_term on the same context aborts libzmq (or hangs). Later calls
        # (from any greenlet, thread, or the hub) wait for that same thread.
        with _term_lock:
            thread = self._term_thread
            if thread is None or self._term_pid != os.getpid():  # (a fork's child has no such thread)
                thread = self._term_thread = NativeThread(_raw_term, self, name="zmq_ctx_term").start()
                self._term_pid = os.getpid()
        thread.result()  # blocks the thread when called from the hub, as pyzmq's term does

    def destroy(self, linger: int | None = None) -> None:
        """Close every socket of the context, then :meth:`term`; green.

        Greenlets waiting on those sockets wake with
        :class:`zmq.ContextTerminated`. A socket that a greenlet of another
        thread waits on is closed by that thread's hub (the call is handed to
        it), so that thread must be running its hub for ``destroy`` to
        finish; sockets nobody waits on are closed here, whichever thread
        used them last.
        """
        if self.closed:
            return
        sockets = list(getattr(self, "_sockets", None) or [])
        me = get_ident()
        for s in sockets:
            if not s or s.closed:
                continue
            if self._warn_destroy_close:  # pyzmq's ResourceWarning on GC
                warnings.warn(
                    f"Destroying context with unclosed socket {s}", ResourceWarning, stacklevel=3, source=s
                )
            # close(linger) sets LINGER as it closes (after ending a device
            # that holds the socket: the option cannot be set while it runs)
            w = waiters_of(s)
            if w is None:
                s.close(linger)
            elif w.thread == me or w.movable():
                # ours, or nobody waits on it: it may be closed from this thread
                try:
                    s._close(linger, _terminated_error)
                except WrongThreadError:
                    # a greenlet of the owner began to wait meanwhile: hand it over
                    waiters_of(s).loop.run_callback_threadsafe(s._close, linger, _terminated_error)
            else:
                # a greenlet of another thread waits on it: that thread's hub
                # closes it and wakes the greenlet with ContextTerminated
                w.loop.run_callback_threadsafe(s._close, linger, _terminated_error)
        self.term()
