"""Lending green sockets to libzmq's own proxy in a native thread.

Why lend
========

A device written in Python pays pyzmq's per-message floor (a ``recv`` and a
``send``, about 0.7 µs) and shares the GIL with everything else in the
process, so it forwards at a fraction of libzmq's ``zmq_proxy``. pyzmq's
:func:`zmq.proxy_steerable` runs libzmq's C loop with the GIL released and
accepts greenzmq's sockets (they are :class:`zmq.Socket` subclasses), and a
socket may be used by any one thread at a time (the ``_waiter`` essay,
"Threads: ownership follows use"). So :func:`greenzmq.proxy` and its kin
*lend* their sockets to that loop, running in a :class:`NativeThread` (a real
OS thread even under monkey-patching; not gevent's threadpool, whose size is
bounded), and park only the calling greenlet until it ends. The sockets stay
the caller's: same context, so ``inproc://`` endpoints keep working.

While lent (:meth:`Waiters.lend`), every green call on those sockets raises
:class:`~greenzmq.error.SocketLentError` naming the device (``str`` of the
:class:`NativeProxy`), without touching the socket: libzmq sockets are not
thread-safe, and the native thread is using them.

How it stops
============

libzmq's loop only ever stops on its own control socket (``TERMINATE``) or
on an error. Every device therefore gets a private ``inproc`` PAIR: one end
(``_ctl_native``, a plain pyzmq socket) is libzmq's control socket, the other
(``_ctl``, green) stays with the device's hub. Both come from a *shadow* of
the caller's context, so :meth:`Context.destroy` does not close them behind
the device's back (it closes only the sockets it made), and ``term()`` still
reaches them. Every way to end a device goes through that pair or through
libzmq's own errors, and always gives the sockets back *after* the native
thread has returned, never while libzmq may still touch them:

* ``kill()`` or a ``gevent.Timeout`` of the calling greenlet: its ``finally``
  sends ``TERMINATE``, waits for the thread (a second interruption during that
  wait is held back until the sockets are back), gives the sockets back, then
  the interruption propagates;
* ``close()`` of a lent socket: the green socket calls :meth:`NativeProxy.stop`
  first, which does the same from the closing greenlet (or the hub, or another
  OS thread, which hands the work to the device's hub and waits); the device
  call then raises the socket's close error (``ZMQError(ENOTSOCK)``, or
  ``ContextTerminated`` from ``Context.destroy()``);
* ``Context.term()``: libzmq's loop fails with ``ETERM`` by itself; the device
  gives the sockets back, closes its private pair (term waits for it) and
  raises :class:`zmq.ContextTerminated`;
* an error of libzmq's loop (``EHOSTUNREACH`` from a ``ROUTER_MANDATORY``
  socket...): raised by the device call once the sockets are back.

libzmq sends with blocking calls inside a burst: while a destination (or the
capture socket) is full and its peer does not read, the loop is blocked in
that send and reads ``TERMINATE`` only once the send completes. Stopping such
a device waits (green) until the destination has room or the context is
terminated; nothing else can interrupt libzmq safely.

Steering
========

The user's control socket of :func:`greenzmq.proxy_steerable` is not given to
libzmq: a *steering* greenlet reads it (green) and keeps greenzmq's documented
semantics on every libzmq version. The installed libzmq 4.3.5 differs from
zmq_proxy_steerable(3): its ``PAUSE`` and ``RESUME`` are swapped, a PAIR
control socket gets an empty reply to every command, and a paused loop with
queued input spins a core. So:

* ``PAUSE`` ends the native run (no thread, no CPU while paused; the sockets
  stay lent), and ``RESUME`` starts a new one. To keep the statistics exact
  across runs, the ending run is first paused with whichever command pauses
  the installed libzmq (probed once, see :func:`pause_command`), then asked
  for ``STATISTICS``, then terminated: nothing is forwarded between the last
  counts and the end;
* ``STATISTICS`` adds the live counts of the current run (asked on the private
  pair; libzmq answers in order) to those of the finished runs;
* ``TERMINATE`` ends the run, gives the sockets back, then replies;
* a REP control socket gets an empty reply to every other command, a PAIR
  none; only a command's first frame is read.

Replies libzmq sends on the private pair that nobody asked for (4.3.5's empty
ones) are skipped: only the steering greenlet reads the pair. While there is
no native run (paused, or ending), the device greenlet sleeps on an event
that the steering greenlet and :meth:`~NativeProxy.stop` set, and listens
for the close or termination of the private pair (a listener that fires on
nothing else), so that ``Context.term()`` ends a paused device too.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

import gevent
import zmq
from gevent import getcurrent
from gevent.event import Event
from gevent.hub import get_hub
from gevent.monkey import get_original

from greenzmq._native import NativeThread, get_ident, run_native
from greenzmq._waiter import Waiters, waiters_of
from greenzmq.error import WrongThreadError

__all__ = ["NativeProxy", "pause_command"]

_allocate_lock = get_original("_thread", "allocate_lock")

#: libzmq's device loop: zmq_proxy_steerable, with the GIL released (zmq.proxy is this with no control).
_native_proxy = zmq.proxy_steerable

_DONTWAIT = int(zmq.DONTWAIT)
_LINGER = int(zmq.LINGER)
_SNDHWM = int(zmq.SNDHWM)
_RCVHWM = int(zmq.RCVHWM)
_REP = int(zmq.REP)

# zmq_proxy_steerable(3)'s commands
_PAUSE = b"PAUSE"
_RESUME = b"RESUME"
_TERMINATE = b"TERMINATE"
_STATISTICS = b"STATISTICS"
#: Frames of a STATISTICS reply: frames and bytes received and sent by the
#: frontend, then by the backend, each a native-endian uint64.
STATISTICS_FRAMES = 8
_UINT64 = struct.Struct("=Q")

#: How long (ms) the one-time probe of the installed libzmq's pause command
#: waits for its own private proxy's STATISTICS reply. The reply takes
#: microseconds; the bound only keeps a broken libzmq from hanging a PAUSE.
PROBE_BOUND_MS = 10_000

_control_names = itertools.count()  # makes each private control endpoint unique


class _Run:
    """One native run of libzmq's loop (a device has several when paused and resumed)."""

    __slots__ = ("thread", "halting")

    def __init__(self, thread: NativeThread) -> None:
        self.thread = thread
        self.halting = False  # TERMINATE sent (or being sent): its end is expected


class _Closed:
    """The outcome of a device stopped because one of its sockets is being closed."""


_CLOSED = _Closed()


class NativeProxy:
    """One call of a green device: its sockets lent to libzmq's proxy in a native thread.

    ``title`` names the call (``"greenzmq.proxy"``), ``detail`` adds what
    else the call was given (``"zmq.QUEUE"``); ``str()`` of the object names
    the device and its sockets, for :class:`SocketLentError`.

    Green behaviour
    ---------------
    :meth:`run` blocks only the calling greenlet until the device ends, and
    returns 0 after a ``TERMINATE`` command or raises what ended it (see the
    module docstring); the sockets are given back before it returns or
    raises, also when the greenlet is killed. :meth:`stop` (what a lent
    socket's ``close()`` calls) may be called from any greenlet or the hub of
    the device's thread, or from another OS thread; it blocks its caller (the
    greenlet, or the thread when called from a hub) until the sockets are
    back.
    """

    def __init__(
        self,
        title: str,
        frontend: Any,
        backend: Any,
        capture: Any = None,
        control: Any = None,
        detail: str = "",
    ) -> None:
        self.title = title
        self.detail = detail  # shown first in str(), e.g. the device type
        self.frontend = frontend
        self.backend = backend
        self.capture = capture
        self.control = control
        self._lent: list[Waiters] = []
        self._owner = 0
        self._loop: Any = None
        self._ctl: Any = None  # the device's end of the private control pair (green)
        self._ctl_native: Any = None  # libzmq's end (plain), the native loop's control socket
        self._run: _Run | None = None
        self._paused = False
        self._ending = False  # no new run may start
        self._outcome: Any = None  # an int to return, a BaseException to raise, or _CLOSED
        self._base = [0] * STATISTICS_FRAMES  # statistics of finished runs
        self._steering: Any = None
        self._changed = Event()  # wakes the device greenlet while no run is going
        self._stopped = Event()  # stop() has given the sockets back (the close goes on right after)

    def __str__(self) -> str:
        parts = [self.detail] if self.detail else []
        parts += [f"frontend={self.frontend!r}", f"backend={self.backend!r}"]
        if self.capture is not None:
            parts.append(f"capture={self.capture!r}")
        if self.control is not None:
            parts.append(f"control={self.control!r}")
        return f"{self.title}({', '.join(parts)})"

    __repr__ = __str__

    # -- the device greenlet -------------------------------------------------------

    def run(self) -> int:
        """Forward until the device ends (see the class docstring); 0 after ``TERMINATE``."""
        self._owner = get_ident()
        self._loop = get_hub().loop
        self._open_control()
        try:
            self._lend()
        except BaseException:
            self._close_control()
            raise
        try:
            self._start()
            if self.control is not None:
                self._steering = gevent.spawn(self._steer)
            return self._wait()
        finally:
            self._end()

    def _lend(self) -> None:
        lent: list[Waiters] = []
        try:
            for sock in dict.fromkeys(
                s for s in (self.frontend, self.backend, self.capture) if s is not None
            ):
                w = waiters_of(sock)
                if w is None:
                    continue  # a plain pyzmq socket: nothing green to guard
                if w.thread != self._owner:
                    w = w.claim(sock)
                w.lend(sock, self)
                lent.append(w)
        except BaseException:
            for w in lent:
                w.give_back()
            raise
        self._lent = lent

    def _wait(self) -> int:
        while True:
            outcome = self._outcome
            if outcome is not None:
                if isinstance(outcome, BaseException):
                    raise outcome
                if outcome is _CLOSED:
                    # stop() may still be waiting for the thread too: let it finish,
                    # and the socket's close with it, to raise the close's own error
                    self._stopped.wait()
                    raise self._closed_error()
                return outcome
            run = self._run
            if run is not None:
                run.thread.join()  # a kill or Timeout lands here; run()'s finally ends the device
                self._ended(run)
            else:
                self._sleep()

    def _sleep(self) -> None:
        """No native run (paused, or ending): wait until the steering greenlet or stop() acts."""
        ctl = self._ctl
        if ctl.closed:
            self._settle(zmq.ZMQError(zmq.ENOTSOCK))
            return
        w = waiters_of(ctl)
        # mask 0: called (with 0) only when the pair is closed or its context terminated
        w.listen(ctl, self, 0, self._on_control_gone)
        try:
            self._changed.wait()
        finally:
            w.unlisten(self)
        self._changed.clear()

    def _on_control_gone(self, events: int) -> None:
        if not self._ctl.closed:
            self._settle(zmq.ContextTerminated(zmq.ETERM))
        self._changed.set()

    def _end(self) -> None:
        self._ending = True
        deferred = self._halt()[1]
        self._give_back()
        self._close_control()
        steering = self._steering
        if steering is not None and steering is not getcurrent():
            steering.kill()
        if deferred is not None:
            raise deferred

    # -- stop: what a lent socket's close() calls ------------------------------------

    def stop(self) -> BaseException | None:
        """End the device now and give its sockets back; the device call raises the close error.

        Called by a lent socket's ``close()`` before it closes. Returns once
        libzmq's thread has returned and every socket is green again, with the
        interruption (kill, Timeout) that landed meanwhile, if any, for the
        caller to raise once it has closed the socket.
        """
        if get_ident() != self._owner:  # another thread's close() goes through close_in_owner
            raise WrongThreadError("NativeProxy.stop() is for the device's own thread")
        self._settle(_CLOSED)
        self._ending = True
        try:
            deferred = self._halt()[1]
            self._give_back()
            # the steering greenlet may wait for a STATISTICS reply on the pair: ENOTSOCK wakes it
            self._close_control()
        finally:
            self._stopped.set()
            self._wake()
        return deferred

    @property
    def owner(self) -> int:
        """The OS thread whose hub runs the device (the lender of its sockets)."""
        return self._owner

    def close_in_owner(self, sock: Any, linger: Any, make_error: Any) -> None:
        """``sock._close(linger, make_error)`` run by the device's hub; waits (green) until done."""
        done = _allocate_lock()
        done.acquire()

        def close_there() -> None:
            try:
                sock._close(linger, make_error)
            finally:
                done.release()

        self._loop.run_callback_threadsafe(gevent.spawn, close_there)
        run_native(_wait_released, done)

    # -- native runs ---------------------------------------------------------------

    def _start(self) -> None:
        if self._ending or self._outcome is not None or self._run is not None:
            return
        _drain_plain(self._ctl_native)  # commands a former run never read
        thread = NativeThread(
            _native_proxy, self.frontend, self.backend, self.capture, self._ctl_native, name=self.title
        )
        self._run = _Run(thread)
        thread.start()

    def _ended(self, run: _Run) -> None:
        if self._run is run:
            self._run = None
        if run.thread.error is not None:
            self._settle(run.thread.error)
        elif not run.halting:
            self._settle(run.thread.value)  # returned by itself, nobody asked: end as libzmq did

    def _halt(
        self, commands: tuple[bytes, ...] = (_TERMINATE,)
    ) -> tuple[list[list[bytes]], BaseException | None]:
        """End the current native run, if any; return the replies it left and a held-back interruption."""
        run = self._run
        if run is None:
            return [], None
        if not run.halting:
            run.halting = True
            for command in commands:
                self._command(command)
        deferred = _join_fully(run.thread)
        self._ended(run)
        return _drain_green(self._ctl), deferred

    def _command(self, command: bytes) -> None:
        try:
            self._ctl.send(command, _DONTWAIT)
        except zmq.ZMQError:
            # ETERM: the loop fails by itself. (The pair has no high-water
            # mark and is closed only once no run is left, so nothing else.)
            pass

    def _settle(self, outcome: Any) -> None:
        if self._outcome is None:
            self._outcome = outcome

    def _give_back(self) -> None:
        lent, self._lent = self._lent, []
        for w in lent:
            w.give_back()

    def _closed_error(self) -> BaseException:
        for sock in (self.frontend, self.backend, self.capture):
            if sock is not None and sock.closed:
                w = waiters_of(sock)
                if w is not None and w.close_error is not None:
                    return w.close_error()
        return zmq.ZMQError(zmq.ENOTSOCK, "a socket of this greenzmq device was closed")

    # -- the private control pair ------------------------------------------------------

    def _open_control(self) -> None:
        from greenzmq.context import Context  # not at import: context imports the socket module

        address = self.frontend.context.underlying
        endpoint = f"inproc://greenzmq.device-control-{id(self):x}-{next(_control_names)}"
        native: zmq.Socket[bytes] = zmq.Context.shadow(address).socket(zmq.PAIR)
        try:
            green: zmq.Socket[bytes] = Context.shadow(address).socket(zmq.PAIR)
        except BaseException:
            native.close(linger=0)
            raise
        try:
            for sock in (native, green):
                sock.setsockopt(_LINGER, 0)
                sock.setsockopt(_SNDHWM, 0)  # commands and wake-ups never wait
                sock.setsockopt(_RCVHWM, 0)
            native.bind(endpoint)
            green.connect(endpoint)
        except BaseException:
            native.close(linger=0)
            green.close(linger=0)
            raise
        self._ctl_native, self._ctl = native, green

    def _close_control(self) -> None:
        if self._run is not None:
            return  # libzmq still polls it: closed when the run has ended
        for sock in (self._ctl, self._ctl_native):
            if sock is not None and not sock.closed:
                sock.close(linger=0)

    def _wake(self) -> None:
        """Make the device greenlet look at the state again (it may be sleeping, see _sleep)."""
        self._changed.set()

    # -- steering: the user's control socket ---------------------------------------------

    def _steer(self) -> None:
        control = self.control
        reply_empty = control.type == _REP
        try:
            while True:
                command = control.recv_multipart()[0]  # only the first frame counts
                if command == _STATISTICS:
                    control.send_multipart(self._statistics())
                    continue
                if command == _PAUSE:
                    self._pause()
                elif command == _RESUME:
                    self._resume()
                elif command == _TERMINATE:
                    self._terminate()
                if reply_empty:  # REP must answer everything (unknown commands are ignored)
                    control.send(b"")
                if command == _TERMINATE:
                    self._settle(0)
                    self._wake()
                    return
        except Exception as exc:  # the control socket closed (ENOTSOCK), its context terminated...
            self._settle(exc)
            self._ending = True
            deferred = self._halt()[1]
            self._wake()
            if deferred is not None:
                raise deferred from exc

    def _pause(self) -> None:
        if self._paused or self._ending:
            return
        command = pause_command()  # probed once per process (green)
        if self._paused or self._ending:
            return
        self._paused = True
        replies, deferred = self._halt((command, _STATISTICS, _TERMINATE))
        for parts in replies:
            if len(parts) == STATISTICS_FRAMES:
                self._base = _added(self._base, parts)
                break
        if deferred is not None:
            raise deferred

    def _resume(self) -> None:
        if not self._paused or self._ending:
            return
        self._paused = False
        self._start()
        self._wake()

    def _terminate(self) -> None:
        self._ending = True
        deferred = self._halt()[1]
        self._give_back()  # before the reply: whoever hears it may use the sockets at once
        if deferred is not None:
            raise deferred

    def _statistics(self) -> list[bytes]:
        counts = self._base
        run = self._run
        if run is not None and not run.halting:
            self._command(_STATISTICS)
            while True:
                parts = self._ctl.recv_multipart()  # ENOTSOCK if the device is stopped meanwhile
                if len(parts) == STATISTICS_FRAMES:
                    counts = _added(counts, parts)
                    break
        return [_UINT64.pack(n) for n in counts]


def _added(counts: list[int], frames: list[bytes]) -> list[int]:
    return [n + _UINT64.unpack(f)[0] for n, f in zip(counts, frames)]


def _join_fully(thread: NativeThread) -> BaseException | None:
    """Wait (green) for the native thread; an interruption meanwhile is returned, not raised.

    Sockets may only be given back once libzmq's thread has returned, so a
    kill or Timeout that lands while a device is ending must wait its turn.
    """
    deferred: BaseException | None = None
    while True:
        try:
            thread.join()
            return deferred
        except BaseException as exc:
            if deferred is None:
                deferred = exc


def _drain_green(sock: Any) -> list[list[bytes]]:
    """Every message waiting on ``sock`` that no parked greenlet is owed."""
    replies: list[list[bytes]] = []
    while sock is not None and not sock.closed:
        try:
            replies.append(sock.recv_multipart(_DONTWAIT))
        except zmq.ZMQError:  # Again (empty, or a parked reader takes it), ETERM, ENOTSOCK
            break
    return replies


def _drain_plain(sock: Any) -> None:
    while True:
        try:
            sock.recv(_DONTWAIT)
        except zmq.ZMQError:
            return


def _wait_released(lock: Any) -> None:
    lock.acquire()
    lock.release()


# -- which command pauses the installed libzmq -------------------------------------------

_pause_command: bytes | None = None


def pause_command() -> bytes:
    """The command that pauses the installed libzmq's zmq_proxy_steerable.

    ``PAUSE`` as documented, but libzmq 4.3.5 swaps ``PAUSE`` and ``RESUME``
    (fixed by libzmq PR 4600, after the release). Probed once per process
    with a private proxy (a few milliseconds), blocking only the calling
    greenlet: a message and ``PAUSE`` are queued before the loop starts, so
    its first iteration sees both, handles the command first and forwards
    only if that command did not pause it; ``STATISTICS`` then tells.
    """
    global _pause_command
    if _pause_command is None:
        _pause_command = _probe_pause_command()
    return _pause_command


def _probe_pause_command() -> bytes:
    from greenzmq.context import Context

    ctx = Context()
    thread = None
    try:
        ctx.setsockopt(_LINGER, 0)
        names = [f"inproc://greenzmq.pause-probe-{i}" for i in range(3)]
        fe, be, ctl = (ctx.socket(kind) for kind in (zmq.PULL, zmq.PUSH, zmq.PAIR))
        for sock, name in zip((fe, be, ctl), names):
            sock.bind(name)
        push, pull, peer = (ctx.socket(kind) for kind in (zmq.PUSH, zmq.PULL, zmq.PAIR))
        for sock, name in zip((push, pull, peer), names):
            sock.connect(name)
        peer.rcvtimeo = PROBE_BOUND_MS
        push.send(b"probe")
        peer.send(_PAUSE)
        thread = NativeThread(_native_proxy, fe, be, None, ctl, name="greenzmq pause probe").start()
        peer.send(_STATISTICS)
        while True:
            parts = peer.recv_multipart()  # zmq.Again after PROBE_BOUND_MS: libzmq is broken
            if len(parts) == STATISTICS_FRAMES:
                break
        return _PAUSE if _UINT64.unpack(parts[0])[0] == 0 else _RESUME
    finally:
        if thread is not None:
            peer.send(_TERMINATE)
            thread.join(PROBE_BOUND_MS / 1000)
        if thread is None or thread.done:
            ctx.destroy(linger=0)
        # else: libzmq's loop did not stop, and its sockets cannot be closed under it
