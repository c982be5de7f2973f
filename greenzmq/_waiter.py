"""The one way greenzmq waits on a ZeroMQ socket.

Some facts about ``ZMQ_FD``, and why no wake-up is ever lost
=============================================================

libzmq gives each socket a *mailbox*: other threads (the I/O thread, inproc
peers, ``zmq_ctx_term``) post commands to it, and the socket only learns that a
message arrived, that its pipe has room again, or that the context is being
terminated when it *processes* those commands. ``getsockopt(ZMQ_FD)`` is the
mailbox's signalling file descriptor. Three facts follow:

1. The fd becomes readable when a command is posted to an idle mailbox. It is
   drained (made unreadable) by whichever call processes the commands:
   ``send``, ``recv`` and ``getsockopt(ZMQ_EVENTS)``. So the fd says "something
   changed", never what, and any call on the socket may consume that signal on
   behalf of somebody else: a ``send`` can swallow the news that a message
   arrived for a greenlet blocked in ``recv``.
2. Readiness (``EVENTS``: POLLIN/POLLOUT) also changes without any command,
   as a side effect of ``send``/``recv`` (a REQ socket becomes writable by
   receiving).
3. ``getsockopt(ZMQ_EVENTS)`` processes *every* pending command (it is never
   throttled). After it returns, the mailbox is idle, so the *next* command
   makes the fd readable again.

The rule that makes wake-ups impossible to lose therefore is:

    Whenever somebody is waiting on a socket, every call that touches the
    socket must be followed by a fresh ``EVENTS`` reading, and only an
    ``EVENTS`` reading that served nobody may end the watch until the fd's next
    signal.

:class:`Waiters` implements exactly that, and it is the only code in greenzmq
that waits on a ZeroMQ socket (the socket, the poller and the event loop all
go through it):

* Blocked operations wait in two FIFO queues (readers, writers) and
  *listeners* (pollers, event-loop handlers) register one-shot interest.
* One io watcher on ``ZMQ_FD`` is active while anybody waits (and lazily a
  little longer, see below), so an idle socket costs nothing and an unwatched
  fd cannot spin the loop.
* :meth:`Waiters.service` runs in the hub: it reads ``EVENTS``, performs the
  head reader's and head writer's operation itself (non-blocking), switches the
  result straight into the waiting greenlet, fires matching listeners, and
  loops, reading ``EVENTS`` again after every delivery, until a reading serves
  nobody. That last reading left the mailbox idle (fact 3), so the next change
  raises the fd and the watcher calls ``service`` again.
* Every call made on the socket by anybody else while someone waits
  (a fast-path ``send``/``recv``, a user's ``EVENTS`` query, a poller's
  ``zmq_poll``, a stream's non-blocking calls), *whether it succeeds or
  fails* (a send refused with EHOSTUNREACH or EFSM may have processed the
  commands before refusing), is followed by :meth:`Waiters.touched`: the rule
  as one call, which queues one ``service`` run unless one is already queued
  or running (a running pass reads ``EVENTS`` again before it may stop, so it
  covers calls made while it runs). Code that calls libzmq on a green socket
  outside :class:`Waiters` owes that call after each of its calls; the hot
  paths may skip it while ``armed`` is false (nobody waits), and nothing else.
* The ``EVENTS`` check *after* the watch started: :meth:`Waiters.listen`
  queues one when a listener (event loop) starts listening. A blocked
  ``send``/``recv`` (:meth:`Waiters.wait_after_attempt`) needs none, and
  neither does a poller that has just run ``zmq_poll``
  (:meth:`Waiters.listen_after_reading`), because their own failed
  ``DONTWAIT`` attempt or ``EVENTS`` reading, made just before with no yield
  since, already left the mailbox in the state fact 3 describes:
  libzmq's non-blocking ``recv`` processes every pending command before it
  returns EAGAIN, and a non-blocking ``send`` either does the same or (when
  throttled) processes none, leaving the fd raised by whatever is pending.
  Either way the next news raises the fd. ``tests/test_waiter.py`` forces
  each way an edge can be consumed and fails if any of these checks is lost.
* The watcher is stopped lazily: when the last waiter leaves it stays started
  (but no longer keeps the loop alive), and stops itself the first time it
  fires with nobody waiting. A request/reply loop thus never pays to stop and
  restart it, and an idle socket still cannot keep waking the hub.

Because the hub performs the operation and delivers its result in the same
step, a message is never taken off the socket for a greenlet that is no longer
there: a ``gevent.Timeout`` or ``kill()`` either lands before the operation
(the greenlet leaves the queue, nothing was taken) or after it returned (the
greenlet has the message). Queues are strictly first come, first served, and
a multipart operation is one queue entry, so frames of two greenlets never
interleave. There is no timer anywhere except the caller's own timeout.

Thread-safe (DRAFT) sockets: a fd that nothing drains
======================================================

SERVER, CLIENT, RADIO, DISH, SCATTER, GATHER, PEER and CHANNEL are
*thread-safe* sockets (``ZMQ_THREAD_SAFE`` is 1). libzmq 4.3.4 gives them a
different mailbox (``mailbox_safe_t``) with no fd of its own:
``getsockopt(ZMQ_FD)`` fails with EINVAL. pyzmq (>= 27, with a warning,
``DraftFDWarning``) falls back on a proxy: it creates a ``zmq_poller`` for the
socket and returns that poller's signaler fd, an ``eventfd``. The mailbox
signals it exactly when the classic fd would be raised (a command posted to an
idle mailbox), so facts 1-3 hold, with one difference:

4. Nothing in libzmq drains the proxy fd except ``zmq_poller_wait`` on that
   (private) poller, which nobody calls: ``send``, ``recv`` and ``EVENTS``
   leave it readable. An io watcher on it would fire on every loop iteration
   (a busy loop at 100% CPU, which is what ``zmq.green`` does).

So for these sockets :meth:`Waiters.service` drains the fd itself (one
non-blocking ``read``) right *before* each ``EVENTS`` reading. A command
posted before the drain is processed by that reading; one posted after it
raises the fd again. Everything above is unchanged: a pass that serves nobody
again leaves the fd unreadable until the next change, a failed ``DONTWAIT``
attempt leaves the mailbox idle (and an fd still readable from earlier
signals only costs one extra pass), and a watcher woken with nobody waiting
stops without draining.

Threads: ownership follows use
==============================

libzmq sockets are not thread-safe, but a socket may *migrate* from one
thread to another provided a full memory barrier separates the two threads'
uses of it (the GIL is one). pyzmq code relies on that (a monitor socket made
in one thread and read in a worker). A :class:`Waiters` belongs to one OS
thread's hub (its watcher lives in that hub's loop, its waiters are that
thread's greenlets), so the socket has an owner, and the rule is:

    A socket that nobody waits on (no queued operation, no listener)
    belongs to whichever thread calls it next.

Every green call compares the calling thread with :attr:`Waiters.thread`
first (one comparison: the owner pays nothing else). Another thread goes to
:meth:`Waiters.claim`, which raises :class:`WrongThreadError` if a greenlet
of the owner waits on the socket (two threads using it at the same time, which
libzmq forbids), and otherwise moves it: a *fresh* :class:`Waiters` bound to
the caller's hub replaces ``sock._waiters`` (the only place that replaces
it: code that keeps a socket's waiters, as the event loop's handlers do, may
rely on the ones it holds being ``closed`` once they are no longer the
socket's). The former owner keeps the old object, retired (closed), so that code of the old hub still in
flight (a lazily kept watcher firing, a service pass suspended in a greenlet
it served) only ever reads that object and stops; it closes the old watcher
in its own loop (a libev watcher may only be touched by its loop's thread).
Two things make "nobody waits" a sound test:

5. "Nobody waits" means the queues and listeners are empty, not that the
   watcher is disarmed: the hub disarms only when its pass resumes after
   serving the last waiter, and a thread may end, or hand the socket on,
   without ever giving its hub back.
6. A service pass whose delivery left nobody waiting ends without touching
   the socket again (the rule above binds only while somebody waits), so a
   pass suspended in a served greenlet never resumes into a socket that has
   moved on.

A socket lent to a device (:meth:`Waiters.lend`: libzmq's own proxy runs on it
in a native thread) has no green owner until it is given back; its
:attr:`~Waiters.thread` matches no thread, so every green call reaches
:meth:`~Waiters.claim` and raises :class:`SocketLentError` without touching it.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, overload

import zmq
from gevent.hub import Waiter, get_hub
from gevent.hub import reinit as gevent_reinit
from gevent.monkey import get_original
from zmq.backend import Socket as _RawSocket

from greenzmq._native import get_ident
from greenzmq.error import ForkedSocketError, SocketLentError, WrongThreadError

if TYPE_CHECKING:
    from greenzmq.socket import Socket

__all__ = ["Waiters", "PARTIAL", "socket_fd", "drain_fd", "waiters_of"]


#: pyzmq types every option's value as ``int | bytes``; the options read
#: through this one (EVENTS, FD, THREAD_SAFE) are ints.
_raw_get: Callable[[_RawSocket, int], Any] = _RawSocket.get
_EVENTS = int(zmq.EVENTS)
_FD = int(zmq.FD)
_THREAD_SAFE = int(zmq.THREAD_SAFE)
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_READ = 1  # libev EV_READ: ZMQ_FD only ever signals readability

#: How many deliveries one :meth:`Waiters.service` pass makes before it yields
#: the hub to other callbacks and watchers (it re-schedules itself). Without a
#: bound, a socket with a steady stream of messages and waiters would keep the
#: hub inside one callback and starve every other socket and timer.
MAX_DELIVERIES_PER_PASS = 64

#: Returned by an operation that made progress but must stay at the head of its
#: queue (a multipart send interrupted by the high-water mark mid-message).
PARTIAL = object()

#: Bytes read from a thread-safe socket's proxy fd per drain: an eventfd
#: (Linux) is emptied by one 8-byte read whatever its count; the socketpair
#: libzmq uses elsewhere holds one byte per signal, and anything left over
#: only costs one spurious wake-up.
DRAIN_READ_SIZE = 4096

_DraftFDWarning = getattr(zmq.error, "DraftFDWarning", None)


def _proxy_fd(sock: Any) -> int:
    # pyzmq warns DraftFDWarning when ZMQ_FD is read on a thread-safe socket,
    # because libzmq never drains its proxy fd. greenzmq drains it (see above),
    # so the warning is silenced for greenzmq's own read, and only that: pyzmq
    # attributes it to the caller of this function, socket_fd() in this module.
    # The filter is (re)installed on every call rather than once at import:
    # a catch_warnings() block around the import (pytest's collection, for
    # one) would discard it on exit. Re-adding an existing filter only moves
    # it to the front, so the list does not grow. Not catch_warnings() here:
    # it swaps the process-wide filter list and is not thread-safe.
    if _DraftFDWarning is not None:
        warnings.filterwarnings("ignore", category=_DraftFDWarning, module=r"greenzmq\._waiter\Z")
    return _raw_get(sock, _FD)


@overload
def waiters_of(sock: Socket[Any]) -> Waiters: ...
@overload
def waiters_of(sock: object) -> Waiters | None: ...
def waiters_of(sock: Any) -> Waiters | None:
    """The :class:`Waiters` of a green socket; ``None`` for a plain zmq socket or an fd.

    The one way code outside the socket reaches a socket's waiters. The
    caller must still be the owning thread to use them (compare
    :attr:`Waiters.thread`, or :meth:`Waiters.claim`).
    """
    return getattr(sock, "_waiters", None)


def socket_fd(sock: Any) -> tuple[int, bool]:
    """The fd that signals ``sock``'s mailbox, and whether it must be drained.

    Classic sockets: their ``ZMQ_FD``, drained by libzmq (``False``).
    Thread-safe (DRAFT) sockets: pyzmq's proxy fd, which only the waiter
    drains (``True``, see :func:`drain_fd`). Raises :class:`zmq.ZMQError`
    (EINVAL) for a thread-safe socket on a pyzmq without the proxy (< 27).
    """
    try:
        thread_safe = _raw_get(sock, _THREAD_SAFE)
    except zmq.ZMQError:  # a libzmq without ZMQ_THREAD_SAFE has no such sockets
        thread_safe = 0
    if not thread_safe:
        return _raw_get(sock, _FD), False
    try:
        return _proxy_fd(sock), True
    except zmq.ZMQError as exc:
        raise zmq.ZMQError(
            exc.errno,
            "greenzmq needs pyzmq >= 27 (built with DRAFT support) to wait on thread-safe "
            f"sockets: ZMQ_FD failed with {exc.strerror}",
        ) from None


def drain_fd(fd: int) -> None:
    """Consume the pending signals of a thread-safe socket's proxy fd.

    Must come *before* the ``EVENTS`` reading that accounts for them.
    """
    try:
        os.read(fd, DRAIN_READ_SIZE)
    except OSError:
        # EAGAIN: nothing pending. Anything else means the socket is gone,
        # which the EVENTS reading that follows reports.
        pass


#: The ``thread`` of every Waiters inherited by a forked child: matches no thread.
_FORKED = -1
#: The ``thread`` of a socket lent to a device's native thread (see Waiters.lend):
#: matches no thread, so the hot paths' owner check sends every call to claim().
_LENT = -2
#: The ``thread`` of a Waiters whose owning thread has exited: matches no thread,
#: so the next caller (even one the OS gave the dead thread's id) goes to claim().
_EXITED = -3
_live: weakref.WeakSet = weakref.WeakSet()
#: Waiters by owning thread id, so that a thread's exit can let go of them.
_owned_by: dict[int, weakref.WeakSet] = {}
_thread_local = get_original("_thread", "_local")()


class _ThreadExit:
    """Kept in an (unpatched) thread-local: deleted when its OS thread exits.

    OS thread ids are reused at once (a new thread often gets the id of the
    one that just ended), so an id alone cannot say who owns a socket: its
    Waiters would still name the dead thread's hub, and the new thread's
    first blocking call would fail with greenlet's "cannot switch to a
    different thread". On exit, the thread's sockets become nobody's.
    """

    __slots__ = ("ident",)

    def __init__(self, ident: int) -> None:
        self.ident = ident

    def __del__(self, _owned_by: dict = _owned_by, _exited: int = _EXITED) -> None:
        # (defaults: module globals may already be None at interpreter exit)
        for w in list(_owned_by.pop(self.ident, ())):
            if w.thread == self.ident:
                w.thread = _exited


def _own(w: Waiters, ident: int) -> None:
    if getattr(_thread_local, "exit", None) is None:
        _thread_local.exit = _ThreadExit(ident)
    owned = _owned_by.get(ident)
    if owned is None:
        owned = _owned_by[ident] = weakref.WeakSet()
    owned.add(w)


def _after_fork_in_child() -> None:
    # Sockets made before fork() belong to the parent's libzmq context; using
    # them in the child is undefined behaviour in libzmq. Make every such use
    # fail the (free) thread check on the fast path, with a clear error.
    me = get_ident()
    _owned_by.clear()  # the other threads are gone; this one registers afresh
    mine = []
    for w in list(_live):
        if w.thread == me or (w.thread == _LENT and w.lender == me):
            mine.append(w)
        w.thread = _FORKED
        # Never serve it here: its fd is shared with the parent, and a pass of
        # this hub would call libzmq on the parent's socket (and read the
        # parent's signals). close_error: what a greenlet parked on it gets.
        w.closed = True
        w.close_error = _forked_error
    # A plain os.fork() (gevent not monkey-patched) leaves the forking thread's
    # hub sharing its event loop's epoll and wake-up fds with the parent, and
    # its threadpool believing in workers that do not exist in the child.
    # gevent's fork() calls reinit() for that; do it for a plain fork too, so
    # that greenzmq works in the child (gevent documents reinit() as
    # idempotent, so gevent.fork()'s own call after this one is harmless).
    # It does nothing in a thread that has no hub.
    gevent_reinit()
    for w in mine:
        # this thread's hub (the only one left) still has their watchers and
        # greenlets: stop the watchers, wake the greenlets with ForkedSocketError
        ops = list(w.readers) + list(w.writers)
        listeners = list(w.listeners.values())
        w.readers.clear()
        w.writers.clear()
        w.listeners.clear()
        for op in ops:
            op.queued = False
            w.loop.run_callback(w._throw_if_waiting, op, _forked_error())
        for _, callback in listeners:
            w.loop.run_callback(callback, 0)
        w.armed = False
        w._release_watcher()


def _forked_error() -> ForkedSocketError:
    return ForkedSocketError(
        "this greenzmq socket was created before os.fork(); libzmq sockets "
        "cannot be used in a forked child. Create a new Context in the child."
    )


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Op(Waiter):
    """One blocked call: gevent's one-shot :class:`~gevent.hub.Waiter` (the
    greenlet parks in ``get()``, the hub delivers with ``switch(result)`` or
    ``throw(exc)``), plus the non-blocking attempt the hub retries for it.

    ``committed`` is set once the attempt made progress it cannot take back
    (part of a multipart message sent): the operation then stays queued until
    the hub finishes it, even if its greenlet leaves.
    """

    __slots__ = ("run", "queued", "committed")

    def __init__(self, hub: Any, run: Callable[[], Any], committed: bool = False) -> None:
        Waiter.__init__(self, hub)
        self.run = run
        self.queued = True
        self.committed = committed


class Waiters:
    """Wait queues and the one ``ZMQ_FD`` watcher of one socket.

    Green behaviour
    ---------------
    Created by the green socket in the OS thread that creates it; that
    thread's hub is the socket's hub, until another thread uses the socket
    while nobody waits on it (:meth:`claim` then moves it). Every method
    except :meth:`claim` and :meth:`close` must be called from the owning
    thread (:class:`WrongThreadError` otherwise). :meth:`service` runs only
    in the hub; the ``wait_*`` and ``finish_first`` methods only in a greenlet
    that may block.
    """

    __slots__ = (
        "hub",
        "loop",
        "thread",
        "fd",
        "drain",
        "readers",
        "writers",
        "listeners",
        "watcher",
        "armed",
        "watching",
        "pending",
        "quiet",
        "lazy",
        "closed",
        "close_error",
        "lent_to",
        "lender",
        "__weakref__",
    )

    def __init__(self, fd: int, drain: bool = False) -> None:
        self.hub = get_hub()
        self.loop = self.hub.loop
        self.thread = get_ident()
        self.fd = fd
        # a thread-safe socket's proxy fd: drained here before each EVENTS
        self.drain = drain
        self.readers: deque[_Op] = deque()
        self.writers: deque[_Op] = deque()
        # key -> (mask, callback); one-shot: removed before the callback runs
        self.listeners: dict[Any, tuple[int, Callable[[int], Any]]] = {}
        self.watcher: Any = None
        self.armed = False  # somebody waits or listens: calls must be followed by a check
        self.watching = False  # the watcher is started (stopped lazily, see service)
        self.pending = False  # a service pass is queued or running
        # the last call on the socket was a waiter's own failed attempt (see service)
        self.quiet = False
        # stop the watcher lazily (see _disarm_if_idle); off for a shadow socket,
        # whose fd its owner may close behind our back
        self.lazy = True
        self.closed = False
        self.close_error: Callable[[], BaseException] | None = None  # why it closed
        self.lent_to: Any = None  # the device a lent socket runs in (see lend)
        self.lender = 0  # the thread that lent it, which gets it back
        _live.add(self)
        _own(self, self.thread)

    # -- called from the socket's own thread --------------------------------

    def claim(self, sock: Any) -> Waiters:
        """Make the calling OS thread the owner of ``sock``; return its waiters.

        The socket calls this when the calling thread is not the recorded
        owner (their hot paths compare :attr:`thread` first, so the owner's
        calls pay nothing). libzmq lets a socket migrate between threads
        provided a full memory barrier separates their uses (the GIL is one);
        the rule here ("ownership follows use"): a socket that nobody waits
        on (no queued operation, no listener; a pending service pass does not
        count, see the essay's point 5) belongs
        to whichever thread uses it next. Its waiter state then moves to a
        fresh :class:`Waiters` bound to the calling thread's hub, installed
        as ``sock._waiters`` and returned; the former owner's hub keeps the
        old object, which nobody else touches, and closes its watcher there
        (a libev watcher may only be touched by its own loop's thread).

        Raises :class:`WrongThreadError` if a greenlet of the owning thread is
        waiting on the socket (two threads would use it at the same time),
        :class:`SocketLentError` while a device runs on it in a native thread,
        and :class:`ForkedSocketError` in a child process for a socket made
        before the fork.
        """
        me = get_ident()
        if self.thread == me:
            return self
        if self.thread == _FORKED:
            raise ForkedSocketError(
                "this greenzmq socket was created before os.fork(); libzmq sockets "
                "cannot be used in a forked child. Create a new Context in the child."
            )
        if self.thread == _LENT:
            raise SocketLentError(
                f"this greenzmq socket is lent to {self.lent_to}, which runs libzmq's loop on it "
                "in a native thread; it cannot be used until that device ends."
            )
        if self.closed:
            return self  # the call itself raises ENOTSOCK, as pyzmq's would
        if self._busy():
            raise WrongThreadError(
                f"this greenzmq socket is in use by thread {self.thread}: a greenlet there is "
                f"waiting on it, and thread {me} called it at the same time. A socket may move "
                "to another thread only while nobody waits on it (use one socket per thread, "
                "or hand it over once its waiters are done)."
            )
        self._retire()
        moved = Waiters(self.fd, self.drain)
        moved.lazy = self.lazy
        sock._waiters = moved
        return moved

    def lend(self, sock: Any, holder: Any) -> None:
        """Hand ``sock`` to ``holder`` (a device running libzmq's loop in a native thread).

        Until :meth:`give_back`, every green call on the socket raises
        :class:`SocketLentError` naming ``str(holder)``, without touching the
        socket; the socket's ``close()`` calls ``holder.stop()`` first, which
        must end the device and give the socket back. Must be called by the
        owning thread while nobody waits on the socket (raises
        :class:`WrongThreadError` otherwise, or :class:`SocketLentError` if it
        is lent already).
        """
        if self.thread == _LENT:
            raise SocketLentError(f"this greenzmq socket is already lent to {self.lent_to}")
        if self.thread != get_ident() or self._busy():
            raise WrongThreadError(
                "a greenzmq socket can only be lent by its own thread while no greenlet waits on it"
            )
        self._disarm_if_idle()
        # the watcher stays where it is: the device's traffic may raise the fd,
        # and a watcher firing with nobody waiting stops itself (see service)
        self.lent_to = holder
        self.lender = get_ident()
        self.thread = _LENT

    def give_back(self) -> None:
        """End a :meth:`lend`: the socket is green again, owned by the thread that lent it."""
        if self.thread == _LENT:
            self.thread = self.lender
            self.lent_to = None

    def touched(self, sock: Any) -> None:
        """The rule of this module: call after every call on the socket.

        Any call on a socket (``send``, ``recv``, ``EVENTS``, ``zmq_poll``),
        whether it succeeded or failed, may have processed libzmq's commands
        and so consumed the fd signal that a waiting greenlet needs (fact 1).
        While somebody waits (:attr:`armed`), this queues one :meth:`service`
        pass, which reads ``EVENTS`` afresh, unless one is already queued or
        running (a running pass reads ``EVENTS`` again before it may stop, so
        it covers calls made while it runs). Hot paths may test ``armed``
        first to skip the call; nothing else may be left out.
        """
        if self.armed and not self.pending and not self.closed:
            self.pending = True
            self.quiet = False
            self.loop.run_callback(self.service, sock)

    def _arm(self, sock: Any, check: bool) -> None:
        if not self.watching:
            watcher = self.watcher
            if watcher is None:
                watcher = self.watcher = self.loop.io(self.fd, _READ)
            # a weak reference: a watcher left running must not keep an
            # abandoned socket alive (its __del__ closes the watcher)
            watcher.start(self._on_fd, weakref.ref(sock))
            self.watching = True
        if not self.armed:
            self.watcher.ref = True  # keeps the loop alive while somebody waits
        self.armed = True
        if check:
            # the EVENTS check *after* the watch started
            self.touched(sock)

    def _disarm_if_idle(self) -> None:
        # The watcher keeps running: a socket whose greenlets come back to wait
        # (a request/reply loop) would otherwise pay for stopping and
        # restarting it on every call. It stops itself the first time it
        # fires with nobody waiting (see service), so an idle socket cannot
        # keep waking the hub.
        if self.armed and not (self.readers or self.writers or self.listeners):
            self.armed = False
            if not self.lazy:
                self._stop_watching()
                return
            # an idle watcher must not keep gevent.wait() or hub.join() waiting
            self.watcher.ref = False

    def _stop_watching(self) -> None:
        if self.watching:
            self.watcher.stop()
            self.watching = False

    def _release_watcher(self) -> None:
        # run by the loop the watcher belongs to (see claim and close)
        if self.readers or self.writers or self.listeners:
            # A greenlet of this thread began to wait between another thread's
            # claim() test and its _retire() (the GIL may switch between the
            # two): nothing would ever serve it here. Wake it with the error.
            self._fail_all(self._unusable())
        self._stop_watching()
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None

    def wait_after_attempt(self, sock: Any, queue: deque, run: Callable[[], Any], timeout_ms: int) -> Any:
        """Block until ``run()`` succeeds in the hub; the caller's own ``run()`` just failed.

        For a caller whose own non-blocking attempt failed with EAGAIN just
        before, with no yield since: that attempt left the mailbox as an
        ``EVENTS`` reading would (see the essay), so the watch needs no check
        after it starts, and a pass that serves nobody else may end on it.
        ``run`` raises :class:`zmq.Again` while the socket is not ready;
        returns what it returned. Raises :class:`zmq.Again` after
        ``timeout_ms`` (negative: no timeout), and whatever ``run`` raised
        otherwise. Interrupting the wait (Timeout, kill) removes the caller
        from the queue with nothing taken.
        """
        op = _Op(self.hub, run)
        queue.append(op)
        return self._wait(sock, queue, op, timeout_ms, False, True)

    def wait_in_turn(self, sock: Any, queue: deque, run: Callable[[], Any], timeout_ms: int) -> Any:
        """Block behind the greenlets already waiting in this direction (first come, first served).

        The caller made no attempt (it would overtake them); the watch is
        already armed for them. Otherwise as :meth:`wait_after_attempt`.
        """
        op = _Op(self.hub, run)
        queue.append(op)
        return self._wait(sock, queue, op, timeout_ms, False, False)

    def finish_first(self, sock: Any, queue: deque, run: Callable[[], Any]) -> Any:
        """Finish an operation already under way, ahead of everybody, without timeout.

        For a multipart send stalled by the high-water mark after some of its
        frames went out (``run`` returned :data:`PARTIAL`): a half message
        cannot be taken back, so it is finished before anything else is sent,
        by the hub if the caller is interrupted meanwhile.
        """
        op = _Op(self.hub, run, committed=True)
        queue.appendleft(op)
        return self._wait(sock, queue, op, -1, True, False)

    def _wait(self, sock: Any, queue: deque, op: _Op, timeout_ms: int, check: bool, quiet: bool) -> Any:
        if self.thread != get_ident() or self.closed:
            queue.remove(op)
            raise self._unusable()
        timer = None
        try:
            self._arm(sock, check)
            self.quiet = quiet
            if timeout_ms >= 0:
                timer = self.loop.timer(timeout_ms / 1000.0)
                # update=True: count from the real now, not the loop's cached
                # time, which is stale by however long this thread ran (or
                # blocked) since the loop last polled; else RCVTIMEO fires early
                timer.start(self._expire, op, update=True)
            return op.get()
        finally:
            if timer is not None:
                timer.close()
            if op.queued and not op.committed:
                op.queued = False
                queue.remove(op)
                self._disarm_if_idle()
            # else: a multipart message already half sent stays queued and
            # is finished by the hub (a half message cannot be taken back)

    def listen(self, sock: Any, key: Any, mask: int, callback: Callable[[int], Any]) -> None:
        """Call ``callback(events)`` once, from the hub, when ``EVENTS & mask``.

        A listener is one-shot: it is removed before it is called. It runs
        in the hub and must not block; it may switch straight into a waiting
        greenlet (as the waiter does to deliver a result), provided that
        greenlet later gives the hub back by blocking as usual. It must ignore
        a call that comes after its owner stopped waiting. ``callback(0)``
        means the socket was closed or its context terminated; every listener
        gets that call, so ``mask=0`` listens for close and termination alone.
        An ``EVENTS`` check follows the start of the watch, so readiness that
        is already there is reported at once.
        """
        self._listen(sock, key, mask, callback, True)

    def listen_after_reading(self, sock: Any, key: Any, mask: int, callback: Callable[[int], Any]) -> None:
        """:meth:`listen`, for a caller that has just read ``EVENTS`` itself, with no yield since.

        The poller, right after ``zmq_poll`` found nothing ready: that reading
        left the mailbox idle (fact 3), so the next change raises the fd and
        no check after the watch starts is needed.
        """
        self._listen(sock, key, mask, callback, False)

    def _listen(self, sock: Any, key: Any, mask: int, callback: Callable[[int], Any], check: bool) -> None:
        if self.thread != get_ident() or self.closed:
            raise self._unusable()
        self.listeners[key] = (mask, callback)
        self._arm(sock, check)

    def unlisten(self, key: Any) -> None:
        """Remove a listener that has not fired (no error if it has)."""
        if self.listeners.pop(key, None) is not None:
            self._disarm_if_idle()

    # -- run in the hub --------------------------------------------------------

    @staticmethod
    def _expire(op: _Op) -> None:
        if op.greenlet is not None:  # still parked in get()
            op.throw(zmq.Again(zmq.EAGAIN))

    def _on_fd(self, sockref: Any) -> None:
        sock = sockref()
        if sock is None:
            self._stop_watching()
        else:
            self.service(sock)

    def service(self, sock: Any) -> None:
        """Serve waiters from fresh ``EVENTS`` readings until one serves nobody."""
        self.pending = True
        deliveries = 0
        if not self.armed:
            # woken with nobody waiting: stop watching until somebody waits
            # (the fd may stay readable; the next waiter's watch sees that)
            self.pending = False
            self._stop_watching()
            return
        try:
            while not self.closed:
                # set again only by a greenlet served below that comes straight
                # back to wait after its own failed attempt
                self.quiet = False
                if self.readers and not (self.writers or self.listeners or self.drain):
                    # Only readers wait: the head reader's own non-blocking
                    # receive is the reading. libzmq's recv(DONTWAIT) processes
                    # every pending command before it reports EAGAIN (as EVENTS
                    # does, fact 3), so a failed one ends the pass exactly as an
                    # EVENTS reading that served nobody would, and a successful
                    # one saves that reading.
                    served = self._serve(self.readers)
                else:
                    if self.drain:
                        drain_fd(self.fd)
                    try:
                        events = _raw_get(sock, _EVENTS)
                    except zmq.ZMQError as exc:  # ETERM (ContextTerminated), ENOTSOCK
                        self._fail_all(exc)
                        return
                    served = False
                    if events & _POLLIN and self.readers:
                        served = self._serve(self.readers)
                    if events & _POLLOUT and self.writers:
                        served = self._serve(self.writers) or served
                    if self.listeners:
                        served = self._notify(events) or served
                if not served:
                    return
                if not (self.readers or self.writers or self.listeners):
                    # Everybody was served and left: no reading is owed (the
                    # rule binds only while somebody waits), and the socket
                    # may have moved to another thread meanwhile (see claim):
                    # this pass must not touch it again.
                    return
                deliveries += 1
                if (
                    self.quiet
                    and not self.listeners
                    and not (self.readers and self.writers)
                    and not self.drain
                ):
                    # The greenlet just served came straight back to wait after
                    # its own failed DONTWAIT attempt, the last call on the
                    # socket (any other call clears `quiet`). That attempt left
                    # the mailbox as an EVENTS reading would (see the essay),
                    # and only its own direction has waiters: a confirming
                    # reading would find nothing. A request/reply loop saves
                    # one zmq call per round trip.
                    self.quiet = False
                    return
                if deliveries >= MAX_DELIVERIES_PER_PASS:
                    # let the rest of the hub run; a fresh pass continues here
                    self.loop.run_callback(self.service, sock)
                    return
        finally:
            # A re-scheduled pass keeps `pending` set: it will read EVENTS.
            if deliveries < MAX_DELIVERIES_PER_PASS or self.closed:
                self.pending = False
            self._disarm_if_idle()

    def _serve(self, queue: deque) -> bool:
        op = queue[0]
        try:
            result = op.run()
        except zmq.Again:
            return False
        except Exception as exc:
            queue.popleft()
            op.queued = False
            if op.greenlet is not None:
                op.throw(exc)
            return True
        if result is PARTIAL:
            op.committed = True  # stays at the head until the rest is sent
            return True
        queue.popleft()
        op.queued = False
        # to the parked greenlet; kept in the cell if it left (a committed
        # multipart send finished by the hub after a timeout: nobody reads it)
        op.switch(result)
        return True

    def _notify(self, events: int) -> bool:
        fired = [key for key, (mask, _) in self.listeners.items() if events & mask]
        for key in fired:
            entry = self.listeners.pop(key, None)
            if entry is not None:
                entry[1](events & entry[0])
        return bool(fired)

    def _fail_all(self, exc: BaseException) -> None:
        ops = list(self.readers) + list(self.writers)
        self.readers.clear()
        self.writers.clear()
        for op in ops:
            op.queued = False
            self.loop.run_callback(self._throw_if_waiting, op, exc)
        listeners = list(self.listeners.values())
        self.listeners.clear()
        for _, callback in listeners:
            self.loop.run_callback(callback, 0)
        self._disarm_if_idle()

    @staticmethod
    def _throw_if_waiting(op: _Op, exc: BaseException) -> None:
        if op.greenlet is not None:
            op.throw(exc)

    # -- close ---------------------------------------------------------------------

    def close(self, make_error: Callable[[], BaseException]) -> None:
        """Wake every waiter with ``make_error()`` and release the watcher.

        Called by the socket's ``close()``. From another thread (garbage
        collection, ``Context.destroy``, or a thread the socket moved to
        without a green call yet) it closes a socket nobody waits on, and its
        watcher is released by its own loop; a socket that a greenlet waits
        on raises :class:`WrongThreadError` (such a socket is referenced by
        its waiters, so garbage collection never gets here with it).
        """
        if self.closed:
            return
        if get_ident() != self.thread:
            if self._busy():
                raise WrongThreadError(
                    f"this greenzmq socket is in use by thread {self.thread}: a greenlet there is "
                    f"waiting on it; close it from that thread (thread {get_ident()} tried)"
                )
            self.close_error = make_error
            self._retire()
            return
        self.close_error = make_error
        if self.readers or self.writers or self.listeners:
            self._fail_all(make_error())
        self.closed = True
        self._stop_watching()
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        self.armed = False

    def _unusable(self) -> BaseException:
        # why this object cannot take a waiter
        if self.closed and self.close_error is None:
            return WrongThreadError(
                "this greenzmq socket moved to another thread (which called it while this one "
                "was about to wait on it): two threads used it at the same time"
            )
        if self.closed:
            return zmq.ZMQError(zmq.ENOTSOCK)
        return WrongThreadError("greenzmq: a socket's waiters used outside its own thread")

    def movable(self) -> bool:
        """True if no greenlet of the owning thread waits on the socket: another thread may take it."""
        return not self._busy()

    def _busy(self) -> bool:
        # A greenlet of the owning thread waits or listens on the socket.
        # (Not `armed`: the hub disarms when its pass resumes after serving the
        # last waiter, which a thread that ends right after never lets it do.)
        # A thread that exited with a greenlet still parked here can never serve
        # it again: its queues no longer hold the socket (see _ThreadExit).
        return self.thread != _EXITED and bool(self.readers or self.writers or self.listeners)

    def _retire(self) -> None:
        """Stop serving the socket, from a thread that is not the owner.

        Only the former owner's hub may still run this object's code (a lazily
        kept watcher firing, a service pass queued before the last waiter
        left); closed, it only stops its watcher there. The
        watcher is closed by its own loop soon after (a libev watcher may only
        be touched by its loop's thread); if that loop ended with its thread,
        the watcher goes with it.
        """
        self.closed = True
        if self.watcher is not None:
            try:
                self.loop.run_callback_threadsafe(self._release_watcher)
            except Exception:  # the loop was destroyed with its thread
                pass
