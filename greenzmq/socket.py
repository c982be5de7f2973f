"""The green :class:`Socket`: pyzmq's socket, blocking only the calling greenlet.

The blocking edge is overridden: ``send``, ``recv``, ``send_multipart``,
``recv_multipart``, ``recv_into`` and ``close``. So are the calls that change
the socket in libzmq without blocking (``get`` of ``EVENTS``, ``set``,
``bind``, ``connect``, ``unbind``, ``disconnect``, ``monitor``, ``join``,
``leave``): they keep the waiting rule and the thread rule (ownership follows
use; nothing is touched on a socket a device holds). Every serializer pyzmq
builds on them (``send_string``, ``send_json``, ``send_pyobj``,
``send_serialized`` and their ``recv_*`` twins, ``poll``) is inherited
unchanged and therefore green too. ``get`` of any other option is pyzmq's, for
any thread: reading an option does not process libzmq's commands.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Literal, TypeVar, overload

import zmq
from zmq.backend import Socket as _RawSocket

from greenzmq._frames import MultipartSend, checked_parts, recv_message
from greenzmq._native import get_ident
from greenzmq._waiter import PARTIAL, Waiters, socket_fd
from greenzmq.poll import Poller
from greenzmq.serialize import SerializingSocketMixin
from greenzmq.tracker import green_tracker

if TYPE_CHECKING:
    from typing_extensions import Buffer, Self
    from zmq.sugar.socket import _SocketContext

__all__ = ["Socket"]

_raw_send = _RawSocket.send
_raw_recv = _RawSocket.recv
_raw_recv_into = _RawSocket.recv_into
#: pyzmq types every option's value as ``int | bytes``; the options read
#: through this one (RCVTIMEO, SNDTIMEO, RCVMORE, EVENTS) are ints.
_raw_get: Callable[[_RawSocket, int], Any] = _RawSocket.get
_raw_set = _RawSocket.set
_sugar_send = zmq.Socket.send

_DONTWAIT = int(zmq.DONTWAIT)
_RCVMORE = int(zmq.RCVMORE)
_RCVTIMEO = int(zmq.RCVTIMEO)
_SNDTIMEO = int(zmq.SNDTIMEO)
_EVENTS = int(zmq.EVENTS)


#: What the socket's ``recv`` returns, for type checkers: ``Socket[bytes]`` as
#: in pyzmq (``zmq.Socket`` is generic in it).
_SocketReturnT_co = TypeVar("_SocketReturnT_co", covariant=True)
_CallResultT = TypeVar("_CallResultT")


def _again() -> zmq.Again:
    return zmq.Again(zmq.EAGAIN)


class Socket(SerializingSocketMixin, zmq.Socket[_SocketReturnT_co]):
    """A :class:`zmq.Socket` whose blocking calls block only the calling greenlet.

    Green behaviour
    ---------------
    * A call that would block (EAGAIN) parks the calling greenlet on the
      socket's FIFO read or write queue and yields to the gevent hub; other
      greenlets keep running. ``RCVTIMEO``/``SNDTIMEO`` are honoured: the wait
      raises :class:`zmq.Again` when they expire and the socket stays usable.
    * An explicit ``DONTWAIT``/``NOBLOCK`` raises :class:`zmq.Again` as in
      pyzmq, and never overtakes greenlets already waiting in that direction.
    * Any number of greenlets may send and receive on one socket at once; they
      are served first come, first served. ``send_multipart`` and
      ``recv_multipart`` move a whole message at once, so frames of two
      greenlets never interleave. (Frames sent one by one with ``SNDMORE`` are
      only safe from interleaving if the greenlet does not block between them:
      prefer ``send_multipart``.)
    * ``gevent.Timeout`` and ``Greenlet.kill()`` may interrupt any wait: the
      interrupted call took nothing off the socket, so no message is lost or
      received twice, and the socket stays usable.
    * ``close()`` wakes every greenlet waiting on the socket with
      :class:`zmq.ZMQError` (``ENOTSOCK``); context termination wakes them with
      :class:`zmq.ContextTerminated`.
    * Ownership follows use: the socket belongs to the hub of the OS thread
      that uses it, and moves to another thread that calls it while no
      greenlet waits on it (libzmq allows a socket to migrate between threads).
      A call from another thread while a greenlet waits on it raises
      :class:`greenzmq.error.WrongThreadError` without touching the socket;
      any call on a socket lent to a running device raises
      :class:`greenzmq.error.SocketLentError`.
    * A green shadow of another socket (``Socket(shadow=other)``) may be used
      alongside it, but the original must not be closed while greenlets
      wait on the shadow (close the shadow first).
    """

    _repr_cls = "greenzmq.Socket"
    _poller_class = Poller
    if TYPE_CHECKING:
        # set by __init__, and never unset (close() leaves it, closed)
        _waiters: Waiters
    else:
        # the class default, seen only while pyzmq's __init__ runs (it calls set())
        _waiters = None
    # RCVTIMEO/SNDTIMEO (ms), cached: read on every wait, changed through set()
    _rcvtimeo: int = -1
    _sndtimeo: int = -1

    # The @overload signatures in this class are pyzmq's (zmq/sugar/socket.py and
    # zmq/backend/__init__.pyi), copied so that a green socket type-checks exactly as
    # a pyzmq one (copy=False gives Frames, a Frame or copy=False gives a tracker);
    # the runtime implementation under each is greenzmq's.

    @overload
    def __init__(
        self: Socket[bytes],
        ctx_or_socket: zmq.Context[Any],
        socket_type: int,
        *,
        copy_threshold: int | None = None,
    ) -> None: ...
    @overload
    def __init__(
        self: Socket[bytes],
        *,
        shadow: zmq.Socket[Any] | int,
        copy_threshold: int | None = None,
    ) -> None: ...
    @overload
    def __init__(
        self: Socket[bytes],
        ctx_or_socket: zmq.Socket[Any],
    ) -> None: ...
    def __init__(self: Socket[Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiters = Waiters(*socket_fd(self))
        if self._shadow:
            # The owner of the shadowed socket may close it directly; a watcher
            # left running on its fd would then outlive the fd (libev aborts
            # when the number is reused). Stop it as soon as nobody waits.
            self._waiters.lazy = False
        # a shadow socket may come with timeouts already set
        self._rcvtimeo = _raw_get(self, _RCVTIMEO)
        self._sndtimeo = _raw_get(self, _SNDTIMEO)

    def _timeout(self, option: int) -> int:
        return self._rcvtimeo if option == _RCVTIMEO else self._sndtimeo

    # -- sending -------------------------------------------------------------------

    @overload  # type: ignore[override]  # as pyzmq's own: its backend's send has no routing_id, group
    def send(  # data: Buffer, copy=True (default)
        self,
        data: Buffer,
        flags: int = 0,
        copy: Literal[True] = True,
        track: bool = False,
        routing_id: int | None = None,
        group: str | None = None,
    ) -> None: ...
    @overload  # data: Buffer, copy=False (keyword)
    def send(
        self,
        data: Buffer,
        flags: int = 0,
        *,
        copy: Literal[False],
        track: bool = False,
        routing_id: int | None = None,
        group: str | None = None,
    ) -> zmq.MessageTracker: ...
    @overload  # data: Buffer, copy=False (positional)
    def send(
        self,
        data: Buffer,
        flags: int,
        copy: Literal[False],
        track: bool = False,
        routing_id: int | None = None,
        group: str | None = None,
    ) -> zmq.MessageTracker: ...
    @overload  # data: Buffer, copy=True|False (pyzmq's mypy bug workaround)
    def send(
        self,
        data: Buffer,
        flags: int,
        copy: bool = True,
        track: bool = False,
        routing_id: int | None = None,
        group: str | None = None,
    ) -> zmq.MessageTracker | None: ...
    @overload  # data: Frame
    def send(
        self,
        data: zmq.Frame,
        flags: int = 0,
        copy: bool = True,
        track: bool = False,
        routing_id: int | None = None,
        group: str | None = None,
    ) -> zmq.MessageTracker: ...
    def send(
        self,
        data: Any,
        flags: int = 0,
        copy: bool = True,
        track: bool = False,
        routing_id: int | None = None,
        group: str | None = None,
    ) -> zmq.MessageTracker | None:
        """Send one frame, blocking only this greenlet while the socket is full.

        Same parameters, return value and exceptions as :meth:`zmq.Socket.send`.
        Blocks until the frame is queued, ``SNDTIMEO`` expires (:class:`zmq.Again`),
        the socket is closed (ENOTSOCK) or the context terminated.
        """
        w = self._waiters
        if w.thread != get_ident():
            w = w.claim(self)
        if track:
            # tracked sends take the general path and return the green tracker
            attempt = partial(_sugar_send, self, data, flags | _DONTWAIT, copy, True, routing_id, group)
            return green_tracker(self._blocking(w, w.writers, _SNDTIMEO, attempt, flags))
        if routing_id is None and group is None:
            if not w.writers:
                # the common case, inlined: nobody waits ahead of us
                try:
                    result = _raw_send(self, data, flags | _DONTWAIT, copy, track)
                except zmq.Again:
                    pass
                except zmq.ZMQError:
                    w.touched(self)  # a failed call may have consumed the fd's edge too
                    raise
                else:
                    if w.armed:
                        w.touched(self)
                    return result
                if w.armed:
                    w.touched(self)
                if flags & _DONTWAIT:
                    raise _again()
                attempt = partial(_raw_send, self, data, flags | _DONTWAIT, copy, track)
                return w.wait_after_attempt(self, w.writers, attempt, self._sndtimeo)
            attempt = partial(_raw_send, self, data, flags | _DONTWAIT, copy, track)
        else:
            attempt = partial(_sugar_send, self, data, flags | _DONTWAIT, copy, track, routing_id, group)
        return self._blocking(w, w.writers, _SNDTIMEO, attempt, flags)

    def _blocking(self, w: Waiters, queue: Any, timeo_option: int, attempt: Any, flags: int) -> Any:
        """The slow path of every send and receive call, for one direction's queue."""
        if queue and not (queue is w.readers and _raw_get(self, _RCVMORE)):
            # others wait first (unless this is the rest of a message being received)
            if flags & _DONTWAIT:
                raise _again()
            return w.wait_in_turn(self, queue, attempt, self._timeout(timeo_option))
        try:
            result = attempt()
        except zmq.Again:
            if w.armed:
                w.touched(self)
            if flags & _DONTWAIT:
                raise
            return w.wait_after_attempt(self, queue, attempt, self._timeout(timeo_option))
        except zmq.ZMQError:
            w.touched(self)  # a failed call may have consumed the fd's edge too
            raise
        if result is PARTIAL:
            # a multipart send stalled mid-message: finish it ahead of everybody else
            return w.finish_first(self, queue, attempt)
        if w.armed:
            w.touched(self)
        return result

    def send_multipart(
        self,
        msg_parts: Sequence[zmq.Frame | Buffer],
        flags: int = 0,
        copy: bool = True,
        track: bool = False,
        **kwargs: Any,
    ) -> zmq.MessageTracker | None:
        """Send a multipart message whole, blocking only this greenlet.

        Same parameters and return value as :meth:`zmq.Socket.send_multipart`.
        The message is one entry in the write queue: no other greenlet's frame
        can come between its frames. Once its first frame is queued the
        message is always completed (even with ``DONTWAIT``), because a
        half-sent message cannot be taken back. Raises :class:`TypeError` for a
        part without the buffer interface and :class:`IndexError` for an empty
        ``msg_parts``, before anything is sent.
        """
        parts = checked_parts(msg_parts)
        w = self._waiters
        if w.thread != get_ident():
            w = w.claim(self)
        result = self._blocking(
            w, w.writers, _SNDTIMEO, MultipartSend(self, parts, flags, copy, track), flags
        )
        return green_tracker(result) if track else result

    # -- receiving -----------------------------------------------------------------

    @overload  # copy=True (default)
    def recv(self, flags: int = 0, copy: Literal[True] = True, track: bool = False) -> bytes: ...
    @overload  # copy=False (keyword)
    def recv(self, flags: int = 0, *, copy: Literal[False], track: bool = False) -> zmq.Frame: ...
    @overload  # copy=False (positional)
    def recv(self, flags: int, copy: Literal[False], track: bool = False) -> zmq.Frame: ...
    @overload  # copy=True|False (pyzmq's mypy bug workaround)
    def recv(self, flags: int = 0, copy: bool = True, track: bool = False) -> bytes | zmq.Frame: ...
    def recv(self, flags: int = 0, copy: bool = True, track: bool = False) -> bytes | zmq.Frame:
        """Receive one frame, blocking only this greenlet until one arrives.

        Same parameters, return value and exceptions as :meth:`zmq.Socket.recv`.
        Blocks until a frame arrives, ``RCVTIMEO`` expires (:class:`zmq.Again`),
        the socket is closed (ENOTSOCK) or the context terminated.
        """
        w = self._waiters
        if w.thread != get_ident():
            w = w.claim(self)
        if not w.readers:
            # the common case, inlined: nobody waits ahead of us
            try:
                msg = _raw_recv(self, flags | _DONTWAIT, copy, track)
            except zmq.Again:
                pass
            except zmq.ZMQError:
                w.touched(self)  # a failed call may have consumed the fd's edge too
                raise
            else:
                if w.armed:
                    w.touched(self)
                return msg
            return self._wait_after_again(w, _raw_recv, flags, copy, track)
        attempt = partial(_raw_recv, self, flags | _DONTWAIT, copy, track)
        return self._blocking(w, w.readers, _RCVTIMEO, attempt, flags)

    def _wait_after_again(self, w: Waiters, receive: Any, flags: int, copy: bool, track: bool) -> Any:
        """The rest of an inlined receive whose first attempt met EAGAIN: queue and wait."""
        if w.armed:
            w.touched(self)  # that failed attempt may have consumed the fd's edge
        if flags & _DONTWAIT:
            raise _again()
        attempt = partial(receive, self, flags | _DONTWAIT, copy, track)
        return w.wait_after_attempt(self, w.readers, attempt, self._rcvtimeo)

    @overload  # copy=True (default)
    def recv_multipart(
        self, flags: int = 0, copy: Literal[True] = True, track: bool = False
    ) -> list[bytes]: ...
    @overload  # copy=False (keyword)
    def recv_multipart(
        self, flags: int = 0, *, copy: Literal[False], track: bool = False
    ) -> list[zmq.Frame]: ...
    @overload  # copy=False (positional)
    def recv_multipart(self, flags: int, copy: Literal[False], track: bool = False) -> list[zmq.Frame]: ...
    @overload  # copy=True|False (pyzmq's mypy bug workaround)
    def recv_multipart(
        self, flags: int, copy: bool, track: bool = False
    ) -> list[bytes] | list[zmq.Frame]: ...
    def recv_multipart(self, flags: int = 0, copy: bool = True, track: bool = False) -> list[Any]:
        """Receive a whole multipart message, blocking only this greenlet.

        Same parameters, return value and exceptions as
        :meth:`zmq.Socket.recv_multipart`. The message is taken in one step,
        so no other greenlet can receive one of its frames.
        """
        w = self._waiters
        if w.thread != get_ident():
            w = w.claim(self)
        if not w.readers:
            # the common case, inlined as in recv: nobody waits ahead of us
            try:
                msg = recv_message(self, flags | _DONTWAIT, copy, track)
            except zmq.Again:
                return self._wait_after_again(w, recv_message, flags, copy, track)
            except zmq.ZMQError:
                w.touched(self)  # a failed call may have consumed the fd's edge too
                raise
            if w.armed:
                w.touched(self)
            return msg
        attempt = partial(recv_message, self, flags | _DONTWAIT, copy, track)
        return self._blocking(w, w.readers, _RCVTIMEO, attempt, flags)

    def recv_into(self, buffer: Buffer, /, *, nbytes: int = 0, flags: int = 0) -> int:
        """Receive one frame into ``buffer``, blocking only this greenlet.

        Same parameters, return value and exceptions as
        :meth:`zmq.Socket.recv_into`.
        """
        w = self._waiters
        if w.thread != get_ident():
            w = w.claim(self)
        attempt = partial(_raw_recv_into, self, buffer, nbytes=nbytes, flags=flags | _DONTWAIT)
        return self._blocking(w, w.readers, _RCVTIMEO, attempt, flags)

    # -- RADIO/DISH groups ----------------------------------------------------------

    def join(self, group: str | bytes) -> None:
        """Join a RADIO/DISH group (DISH sockets, DRAFT API), as :meth:`zmq.Socket.join`.

        ``group`` is ``str`` (encoded as UTF-8) or ``bytes``, for ``join`` and
        ``leave`` alike (pyzmq's ``leave`` takes only bytes). Raises
        :class:`TypeError` for anything else and :class:`zmq.ZMQError`
        (EINVAL) for a group libzmq refuses (longer than 255 bytes, already
        joined, or not joined when leaving); the socket stays usable.
        """
        self._owned()
        super().join(_group_bytes(group))
        self._touched()

    def leave(self, group: str | bytes) -> None:
        """Leave a RADIO/DISH group; ``group`` as for :meth:`join`."""
        self._owned()
        super().leave(_group_bytes(group))
        self._touched()

    def _owned(self) -> Waiters:
        """This socket's waiters, claimed for the calling thread (see :meth:`Waiters.claim`)."""
        w = self._waiters
        return w if w.thread == get_ident() else w.claim(self)

    def _touched(self) -> None:
        # a call that may change readiness while greenlets wait: re-check EVENTS
        self._waiters.touched(self)

    # -- options and closing -----------------------------------------------------------

    def get(self, option: int) -> int | bytes:
        """Get a socket option, as :meth:`zmq.Socket.get`.

        Reading ``EVENTS`` consumes the socket's fd signal, so when greenlets
        wait on this socket it queues a check on their behalf.
        """
        if option == _EVENTS and self._waiters is not None:
            w = self._owned()
            value = _raw_get(self, option)
            w.touched(self)
            return value
        return _raw_get(self, option)

    getsockopt = get

    def set(self, option: int, optval: int | bytes) -> None:
        """Set a socket option, as :meth:`zmq.Socket.set`.

        ``RCVTIMEO`` and ``SNDTIMEO`` are honoured by the green waits (their
        values are kept on the socket, so each wait does not ask libzmq).
        Like every call that reaches libzmq, it is made by the socket's owner
        (another thread takes the socket over if nobody waits on it, see
        :class:`Socket`), and refused while a device holds the socket.
        """
        if self._waiters is not None:  # (pyzmq sets options while __init__ runs)
            self._owned()
        _raw_set(self, option, optval)
        if option == _RCVTIMEO:
            self._rcvtimeo = _raw_get(self, _RCVTIMEO)
        elif option == _SNDTIMEO:
            self._sndtimeo = _raw_get(self, _SNDTIMEO)

    setsockopt = set

    # Endpoints and monitoring change the socket in libzmq like any other call:
    # made by the owning thread, refused on a socket a device holds (they are
    # not blocking calls, but the socket must not be touched from two threads).
    # libzmq's bind, connect, unbind and disconnect process the socket's
    # pending commands first (socket_base_t calls process_commands), so they
    # can consume the ZMQ_FD signal a blocked greenlet waits for: like every
    # call, they are followed by the waiting rule's check, failed or not.

    def _endpoint_call(self, call: Callable[[Any], _CallResultT], addr: Any) -> _CallResultT:
        """``call(addr)`` (a bind, connect, unbind or disconnect), owned, then the waiting rule."""
        w = self._owned()
        try:
            return call(addr)
        finally:
            if w.armed:
                w.touched(self)

    def bind(self, addr: str) -> _SocketContext[Self]:  # type: ignore[override]  # as pyzmq's own: its backend's returns None
        """As :meth:`zmq.Socket.bind` (a context manager that unbinds)."""
        return self._endpoint_call(super().bind, addr)

    def connect(self, addr: str) -> _SocketContext[Self]:  # type: ignore[override]  # as bind
        """As :meth:`zmq.Socket.connect` (a context manager that disconnects)."""
        return self._endpoint_call(super().connect, addr)

    def unbind(self, addr: str | bytes) -> None:
        """As :meth:`zmq.Socket.unbind`."""
        self._endpoint_call(super().unbind, addr)

    def disconnect(self, addr: str | bytes) -> None:
        """As :meth:`zmq.Socket.disconnect`."""
        self._endpoint_call(super().disconnect, addr)

    def monitor(self, addr: str | bytes | None, events: int = zmq.EVENT_ALL) -> None:
        """As :meth:`zmq.Socket.monitor` (``get_monitor_socket`` goes through it)."""
        self._owned()
        super().monitor(addr, events)

    def close(self, linger: int | None = None) -> None:
        """Close the socket, waking every waiting greenlet with ENOTSOCK.

        Same as :meth:`zmq.Socket.close` otherwise. Safe to call twice.
        """
        self._close(linger, _closed_error)

    def _close(self, linger: int | None, make_error: Any) -> None:
        w = self._waiters
        deferred = None
        if w is not None and not self.closed:
            holder = w.lent_to  # read once: the device's thread may give it back meanwhile
            if holder is not None and get_ident() != holder.owner:
                # the device's hub stops it and closes the socket there, so that
                # nobody uses the socket between its return and the close, and
                # the device raises this close's error; this thread waits
                holder.close_in_owner(self, linger, make_error)
                return
            if holder is not None:
                # a device runs libzmq's loop on this socket: end it first (it
                # gives the socket back, unchanged), then close as usual, even
                # if this greenlet was interrupted while libzmq's thread ended
                deferred = holder.stop()
            w.close(make_error)
        super().close(linger=linger)
        if deferred is not None:
            raise deferred


def _group_bytes(group: Any) -> bytes:
    if isinstance(group, str):
        return group.encode("utf-8")
    if isinstance(group, bytes):
        return group
    raise TypeError(f"a RADIO/DISH group is str or bytes, not {type(group).__name__}: {group!r}")


def _closed_error() -> zmq.ZMQError:
    return zmq.ZMQError(zmq.ENOTSOCK, "Socket operation on non-socket: greenzmq socket closed while waiting")


def _terminated_error() -> zmq.ContextTerminated:
    return zmq.ContextTerminated(zmq.ETERM)
