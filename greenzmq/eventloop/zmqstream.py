""":class:`ZMQStream`: pyzmq's callback-style socket wrapper, on the hub-native :class:`IOLoop`.

Code written for ``zmq.eventloop.zmqstream.ZMQStream`` ports by changing the
import. The stream registers one handler for its green socket with the
:class:`IOLoop`, which waits on the socket's ``EVENTS`` through the socket's
own waiter (never a second watcher on the edge-triggered ``ZMQ_FD``). On each
readiness it receives with ``DONTWAIT`` until ``EAGAIN`` and sends its queue
with ``DONTWAIT`` until ``EAGAIN``; the handler is re-armed with a fresh
``EVENTS`` check afterwards, so a message that arrives at any moment is seen.
"""

from __future__ import annotations

import logging
import pickle
from collections import deque
from collections.abc import Sequence
from typing import Any, Callable, Optional, Union

import zmq
from gevent import Timeout as _GeventTimeout
from gevent import getcurrent
from gevent.hub import Hub
from zmq.backend import Socket as _RawSocket
from zmq.utils import jsonapi

from greenzmq._frames import checked_parts, recv_message
from greenzmq._native import get_ident
from greenzmq._waiter import Waiters, waiters_of
from greenzmq.eventloop.ioloop import IOLoop
from greenzmq.socket import Socket as _GreenSocket

_raw_send = _RawSocket.send

__all__ = ["ZMQStream"]

logger = logging.getLogger("greenzmq.eventloop")

_DONTWAIT = int(zmq.DONTWAIT)
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_READ = IOLoop.READ
_WRITE = IOLoop.WRITE
_ERROR = IOLoop.ERROR
#: recv errors that mean "nothing to receive now": EAGAIN, and EFSM from a
#: REQ/REP socket whose turn is to send (pyzmq's stream receives one message
#: per event and never sees it; draining until EAGAIN does).
_NOT_NOW = (zmq.EAGAIN, zmq.EFSM)

#: How many messages one readiness event receives (or sends) before the stream
#: gives the loop back to other callbacks. The handler is re-armed with a fresh
#: EVENTS check, so the rest is handled on the next turn: nothing is missed,
#: and one busy socket cannot starve the others.
MAX_MESSAGES_PER_EVENT = 1024

SendCallback = Callable[[list, Any], Any]
#: One queued message: ``(parts, flags, copy, track, callback)``, or just the
#: bytes of a one-frame message sent with the defaults (the common case: no
#: tuple or list to allocate, nothing for the garbage collector to track).
_Queued = Union[tuple[list, int, bool, bool, Optional[SendCallback]], bytes]


def _discard(msg: list) -> None:
    """The receive callback of :meth:`ZMQStream.flush` when none is set: the message is dropped."""


def _expand(entry: Any) -> tuple[list, int, bool, bool, SendCallback | None]:
    if type(entry) is bytes:
        return [entry], 0, True, False, None
    return entry


class ZMQStream:
    """Callbacks when a green zmq socket receives, and a queue of sends.

    Parameters
    ----------
    socket : greenzmq.Socket
        The green socket (:class:`TypeError` for a plain :class:`zmq.Socket`).
    io_loop : IOLoop, optional
        Default :meth:`IOLoop.current`.

    Green behaviour
    ---------------
    * Callbacks run in the greenlet running ``io_loop.start()``, in order;
      an exception in one is logged and the stream keeps working.
    * ``send*`` never block: they queue the message (after checking that it
      can be sent: :class:`TypeError` for a frame without the buffer
      interface, :class:`IndexError` for an empty message, before anything is
      queued) and the loop sends the queue in order when the socket is
      writable. A message the socket refuses with an error other than EAGAIN
      is logged and handed to the send callbacks with the exception as status.
    * Every accepted message is sent or, if the stream is closed first,
      handed to libzmq by :meth:`close` within its ``linger``.
    * The socket may still be used by other greenlets at the same time; the
      stream never takes a message from a greenlet blocked in ``recv``.
    * Use it from the loop's thread only; :meth:`flush` from another thread
      raises :class:`greenzmq.error.WrongThreadError` before touching the socket.
    * For speed, the stream receives and sends (one-frame messages with the
      default arguments) through pyzmq's non-blocking calls directly, keeping
      the green socket's waiting rules: overrides of ``send``/``recv`` in a
      :class:`greenzmq.Socket` subclass are not called by the stream (pyzmq's
      own stream does not call overrides of ``recv_multipart`` either).
    """

    socket: Any

    def __init__(self, socket: zmq.Socket, io_loop: IOLoop | None = None) -> None:
        if not isinstance(socket, _GreenSocket):
            # Not shadowed silently: code that keeps the plain socket would
            # close it behind the shadow's back, leaving the shadow's io
            # watcher on a closed (soon reused) ZMQ_FD, which libev aborts on.
            raise TypeError(
                f"ZMQStream needs a greenzmq socket, not {socket!r}: create it with "
                "greenzmq.Context().socket(...), or pass greenzmq.Socket.shadow(sock) and "
                "close that shadow (or the stream), never the original behind its back."
            )
        self.socket = socket
        self.io_loop = io_loop or IOLoop.current()
        self._send_queue: deque[_Queued] = deque()
        self._recv_callback: Callable[[list], Any] | None = None
        self._recv_copy = True
        self._send_callback: SendCallback | None = None
        self._close_callback: Callable[[], Any] | None = None
        self._state = 0
        self._handling = False  # inside _handle_events: state rebuilt once at its end
        # REQ and REP alternate: never two messages to receive in a row
        self._one_per_turn = socket.type in (zmq.REQ, zmq.REP)
        self.io_loop.add_handler(socket, self._handle_events, 0)
        # shortcuts, as pyzmq's stream has them
        self.bind = socket.bind
        self.bind_to_random_port = socket.bind_to_random_port
        self.connect = socket.connect
        self.setsockopt = socket.setsockopt
        self.getsockopt = socket.getsockopt
        self.setsockopt_string = socket.setsockopt_string
        self.getsockopt_string = socket.getsockopt_string
        self.setsockopt_unicode = socket.setsockopt_string
        self.getsockopt_unicode = socket.getsockopt_string

    def __repr__(self) -> str:
        return f"<greenzmq ZMQStream {self.socket!r}>"

    # -- callbacks -------------------------------------------------------------------

    def on_recv(self, callback: Callable[[list], Any] | None, copy: bool = True) -> None:
        """Call ``callback(msg)`` with every message received (a list of frames:
        bytes, or :class:`zmq.Frame` with ``copy=False``). Replaces the
        previous callback; ``None`` stops receiving. Raises :class:`TypeError`
        for a callback that is not callable, :class:`OSError` if closed."""
        self._check_closed()
        if callback is not None and not callable(callback):
            raise TypeError(f"on_recv: callback must be callable or None, not {callback!r}")
        self._recv_callback = callback
        self._recv_copy = copy
        self._rebuild_state()

    def on_recv_stream(self, callback: Callable[[ZMQStream, list], Any] | None, copy: bool = True) -> None:
        """As :meth:`on_recv`, calling ``callback(stream, msg)``."""
        if callback is None:
            self.on_recv(None)
        else:
            self.on_recv(lambda msg: callback(self, msg), copy=copy)

    def stop_on_recv(self) -> None:
        """Stop receiving (messages stay in the socket)."""
        self.on_recv(None)

    def on_send(self, callback: SendCallback | None) -> None:
        """Call ``callback(msg, status)`` after each message is sent.

        ``msg`` is the list of frames as queued; ``status`` is what
        ``send_multipart`` returned (a :class:`zmq.MessageTracker` with
        ``track=True``, else ``None``) or the :class:`zmq.ZMQError` that
        refused it. Replaces the previous callback; ``None`` removes it.
        """
        self._check_closed()
        if callback is not None and not callable(callback):
            raise TypeError(f"on_send: callback must be callable or None, not {callback!r}")
        self._send_callback = callback

    def on_send_stream(self, callback: Callable[[ZMQStream, list, Any], Any] | None) -> None:
        """As :meth:`on_send`, calling ``callback(stream, msg, status)``."""
        if callback is None:
            self.on_send(None)
        else:
            self.on_send(lambda msg, status: callback(self, msg, status))

    def stop_on_send(self) -> None:
        """Remove the send callback (queued messages are still sent)."""
        self.on_send(None)

    def set_close_callback(self, callback: Callable[[], Any] | None) -> None:
        """Call ``callback()`` once when the stream is closed (by :meth:`close`,
        by closing its socket, or by its context being terminated)."""
        self._close_callback = callback

    # -- sending ---------------------------------------------------------------------

    def send_multipart(
        self,
        msg: Sequence[Any],
        flags: int = 0,
        copy: bool = True,
        track: bool = False,
        callback: SendCallback | None = None,
        **kwargs: Any,
    ) -> None:
        """Queue a multipart message; it is sent, in order, when the socket is writable.

        ``callback(msg, status)``, if given, is called for this message (in
        addition to the :meth:`on_send` callback; unlike pyzmq it does not
        replace it). Raises :class:`TypeError`/:class:`IndexError` for a bad
        message and :class:`OSError` if the stream is closed; nothing is queued then.
        """
        self._check_closed()
        if kwargs:
            raise TypeError(f"send_multipart: unexpected keyword arguments {sorted(kwargs)}")
        parts = checked_parts(msg)
        self._send_queue.append((parts, flags & ~_DONTWAIT, copy, track, callback))
        if not self._state & _WRITE:
            self._rebuild_state()

    def send(
        self,
        msg: Any,
        flags: int = 0,
        copy: bool = True,
        track: bool = False,
        callback: SendCallback | None = None,
        **kwargs: Any,
    ) -> None:
        """Queue a one-frame message (see :meth:`send_multipart`)."""
        if (
            self.socket is None
            or kwargs
            or type(msg) is not bytes
            or flags & ~_DONTWAIT
            or not copy
            or track
            or callback is not None
        ):
            self.send_multipart([msg], flags=flags, copy=copy, track=track, callback=callback, **kwargs)
            return
        self._send_queue.append(msg)  # the defaults: see _Queued
        if not self._state & _WRITE:
            self._rebuild_state()

    def send_string(
        self,
        u: str,
        flags: int = 0,
        encoding: str = "utf-8",
        callback: SendCallback | None = None,
        **kwargs: Any,
    ) -> None:
        """Queue ``u`` encoded; :class:`TypeError` if it is not a str."""
        if not isinstance(u, str):
            raise TypeError(f"send_string: str objects only, not {type(u).__name__}")
        self.send(u.encode(encoding), flags=flags, callback=callback, **kwargs)

    send_unicode = send_string

    def send_json(
        self, obj: Any, flags: int = 0, callback: SendCallback | None = None, **kwargs: Any
    ) -> None:
        """Queue ``obj`` serialized as JSON (errors of the encoder are raised here)."""
        self.send(jsonapi.dumps(obj), flags=flags, callback=callback, **kwargs)

    def send_pyobj(
        self,
        obj: Any,
        flags: int = 0,
        protocol: int = pickle.DEFAULT_PROTOCOL,
        callback: SendCallback | None = None,
        **kwargs: Any,
    ) -> None:
        """Queue ``obj`` pickled (errors of pickle are raised here)."""
        self.send(pickle.dumps(obj, protocol), flags=flags, callback=callback, **kwargs)

    # -- state -----------------------------------------------------------------------

    def receiving(self) -> bool:
        """True while a receive callback is registered."""
        return self._recv_callback is not None

    def sending(self) -> bool:
        """True while messages are queued to send."""
        return bool(self._send_queue)

    def closed(self) -> bool:
        """True once closed; a socket closed behind the stream's back closes the stream."""
        if self.socket is None:
            return True
        if self.socket.closed:
            self.close()
            return True
        return False

    def _check_closed(self) -> None:
        if self.socket is None:
            raise OSError("Stream is closed")

    def _rebuild_state(self) -> None:
        if self.socket is None or self._handling:
            return  # _handle_events rebuilds once at its end
        state = (_READ if self._recv_callback is not None else 0) | (_WRITE if self._send_queue else 0)
        if state != self._state:
            self._state = state
            self.io_loop.update_handler(self.socket, state)

    # -- the loop's handler ----------------------------------------------------------------

    def _handle_events(self, sock: Any, events: int) -> None:
        if self.socket is None:
            return
        if events & _ERROR:
            self.close()
            return
        self._handling = True
        try:
            w = waiters_of(sock)  # once per event: the loops below run per message
            if w.thread != get_ident():
                # lent to a device, or taken by another thread since the
                # handler fired (nobody listened meanwhile): as any call would
                w = w.claim(sock)
            if events & _READ:
                self._handle_recv(w, MAX_MESSAGES_PER_EVENT)
            # also when not reported writable: replies queued by the receive
            # callbacks usually fit right away, which saves a trip through the hub
            if self._send_queue and self.socket is not None:
                self._handle_send(w, MAX_MESSAGES_PER_EVENT)
        finally:
            self._handling = False
        self._rebuild_state()

    def _recv_failed(self, exc: zmq.ZMQError) -> None:
        if exc.errno in _NOT_NOW:
            return
        if isinstance(exc, zmq.ContextTerminated) or exc.errno == zmq.ENOTSOCK:
            logger.warning("%r: recv failed (%s); closing the stream", self, exc)
            self.close()
        else:
            logger.error("%r: recv failed: %s", self, exc)

    def _handle_recv(self, w: Waiters, limit: int, discard: bool = False) -> int:
        """Receive whole messages and hand each to the receive callback; return how many.

        The one way the stream receives: the loop's handler calls it on each
        readiness (``limit`` :data:`MAX_MESSAGES_PER_EVENT`), :meth:`flush`
        with ``limit=1`` and ``discard=True`` (without a receive callback the
        message is dropped, as in pyzmq). ``w`` is the socket's waiters,
        looked up once by the caller. Stops without receiving while a
        greenlet is blocked in ``recv`` on the socket (it goes first: the
        stream never takes its message), when the callback is removed, when
        the socket would block, or when a callback closed the stream.

        Each message is received by pyzmq's non-blocking ``recv`` directly
        (:func:`~greenzmq._frames.recv_message`, which frames the message with
        ``Frame.more`` instead of a ``getsockopt(RCVMORE)`` per frame), and is
        followed by the core's rule (:mod:`greenzmq._waiter`): that call may
        have consumed the ``ZMQ_FD`` edge, so if a greenlet waits on the
        socket its ``EVENTS`` check is scheduled, before any user code runs.
        This loop runs once per message: it is the stream's hot path.
        """
        sock = self.socket
        me = w.thread
        count = 0
        while count < limit:
            callback = self._recv_callback
            if callback is None:
                if not discard:
                    break
                callback = _discard
            if self.socket is not sock or w.readers or w.thread != me:
                # (a greenlet blocked in recv goes first; a callback may have
                # switched, and a device borrowed the socket meanwhile)
                break
            try:
                msg = recv_message(sock, _DONTWAIT, self._recv_copy, False)
            except zmq.ZMQError as exc:
                if w.armed:
                    w.touched(sock)
                self._recv_failed(exc)
                break
            if w.armed:
                w.touched(sock)  # before user code, which may switch
            count += 1
            try:
                callback(msg)
            except Exception:
                self._callback_failed(callback)
            if count == 1 and count < limit and self.socket is not None:
                # Often there was just the one: one EVENTS reading is far
                # cheaper than the failing recv that would tell (and a REQ or
                # REP socket never has a second: it must send first). After
                # that, drain until EAGAIN. Stopping early loses nothing: the
                # handler is re-armed with a fresh EVENTS check.
                if self._one_per_turn:
                    break
                try:
                    if not self.socket.get(zmq.EVENTS) & _POLLIN:
                        break
                except zmq.ZMQError as exc:
                    self._recv_failed(exc)
                    break
        return count

    def _handle_send(self, w: Waiters, limit: int) -> int:
        """Send the queue, in order, until the socket would block; return how many.

        One-frame messages queued with the defaults go out through pyzmq's
        non-blocking ``send`` directly; the core's rule is kept by scheduling
        the ``EVENTS`` check for waiting greenlets before any callback runs
        and once at the end. Anything else takes the green ``send_multipart``.
        """
        queue = self._send_queue
        sock = self.socket
        count = 0
        try:
            me = w.thread
            while queue and count < limit:
                if w.thread != me:
                    break  # a send callback switched and a device borrowed the socket
                # a _Queued: mypy cannot take bytes out of it when `type(entry) is not bytes`
                entry: Any = queue[0]
                try:
                    if type(entry) is bytes:
                        if w.writers:
                            break  # greenlets blocked in send go first
                        callback = None
                        status = _raw_send(sock, entry, _DONTWAIT, True, False)
                    else:
                        parts, flags, copy, track, callback = entry
                        if len(parts) == 1:
                            status = sock.send(parts[0], flags | _DONTWAIT, copy, track)
                        else:
                            status = sock.send_multipart(parts, flags | _DONTWAIT, copy=copy, track=track)
                except zmq.Again:
                    break
                except zmq.ZMQError as exc:
                    if not self._send_refused(exc):
                        break
                    status = exc
                queue.popleft()
                count += 1
                if callback is not None or self._send_callback is not None:
                    if w.armed:
                        w.touched(sock)  # before user code, which may switch
                    self._sent(_expand(entry)[0], status, callback)
                    if self.socket is not sock:  # a callback closed the stream
                        break
        finally:
            if w.armed:
                w.touched(sock)
        return count

    def _send_refused(self, exc: zmq.ZMQError) -> bool:
        """Handle a send error other than EAGAIN; True if only this message was refused."""
        if isinstance(exc, zmq.ContextTerminated) or exc.errno == zmq.ENOTSOCK:
            logger.warning("%r: send failed (%s); closing the stream", self, exc)
            self.close()
            return False
        # refused for this message only (EHOSTUNREACH, EFSM, ...): report, go on
        logger.error("%r: send failed: %s", self, exc)
        return True

    def _sent(self, parts: list, status: Any, callback: SendCallback | None) -> None:
        if callback is not None:
            self._run_callback(callback, parts, status)
        if self._send_callback is not None and self._send_callback is not callback:
            self._run_callback(self._send_callback, parts, status)

    def _run_callback(self, callback: Callable, *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            self._callback_failed(callback)

    def _callback_failed(self, callback: Callable) -> None:
        logger.error("Uncaught exception in ZMQStream callback %r", callback, exc_info=True)

    # -- flush and close -----------------------------------------------------------------

    def flush(self, flag: int = _POLLIN | _POLLOUT, limit: int | None = None) -> int:
        """Handle pending messages now, bypassing the loop; return how many.

        ``flag`` picks receiving (``POLLIN``) and/or sending (``POLLOUT``);
        it stops when nothing more can be done without blocking or after
        ``limit`` messages in all. As in pyzmq, with ``POLLIN`` and no
        receive callback the messages received are discarded. Raises
        :class:`OSError` if the stream is closed.
        """
        self._check_closed()
        # flush works the socket in the caller's thread: refuse another thread's
        # call before anything is taken (the stream calls pyzmq directly)
        w = waiters_of(self.socket).claim(self.socket)
        if limit is not None and limit < 0:
            raise ValueError(f"flush: limit must be None or >= 0, not {limit!r}")
        count = 0
        while (limit is None or count < limit) and self.socket is not None:
            try:
                events = self.socket.get(zmq.EVENTS)
            except zmq.ZMQError as exc:  # ETERM, ENOTSOCK
                logger.warning("%r: flush failed (%s); closing the stream", self, exc)
                self.close()
                break
            progress = False
            if flag & events & _POLLIN and self._handle_recv(w, 1, discard=True):
                progress = True
                count += 1
            if (
                flag & events & _POLLOUT
                and self._send_queue
                and self.socket is not None
                and (limit is None or count < limit)
            ):
                if self._handle_send(w, 1):
                    progress = True
                    count += 1
            if not progress:
                break
        self._rebuild_state()
        return count

    def close(self, linger: int | None = None) -> None:
        """Close the stream and its socket; run the close callback. Safe twice.

        Messages still queued are first handed to the socket: without waiting
        with ``linger=0``, else waiting up to ``linger`` ms (``None``: the
        socket's ``LINGER``; negative: as long as it takes) for it to become
        writable, in the calling greenlet (without waiting when called from
        the hub). Whatever could not be handed over is counted in a warning.
        """
        sock = self.socket
        if sock is None:
            return
        self.io_loop.remove_handler(sock)
        self._state = 0
        if self._send_queue and not sock.closed:
            self._drain_on_close(sock, linger)
        if self._send_queue:
            logger.warning("%r closed with %d unsent message(s)", self, len(self._send_queue))
            self._send_queue.clear()
        self.socket = None
        if not sock.closed:
            sock.close(linger)
        if self._close_callback is not None:
            self._run_callback(self._close_callback)

    def _drain_on_close(self, sock: Any, linger: int | None) -> None:
        if linger is None:
            try:
                linger = sock.getsockopt(zmq.LINGER)
            except zmq.ZMQError:
                linger = 0
        can_wait = linger != 0 and not isinstance(getcurrent(), Hub)  # the hub must never block
        seconds = None if linger < 0 else linger / 1000.0
        with _GeventTimeout(seconds if can_wait else None, False):
            while self._send_queue:
                parts, flags, copy, track, callback = _expand(self._send_queue[0])
                try:
                    status = sock.send_multipart(
                        parts, flags | (0 if can_wait else _DONTWAIT), copy=copy, track=track
                    )
                except zmq.ZMQError as exc:  # Again: SNDTIMEO or no room; ETERM, ...
                    if not isinstance(exc, zmq.Again):
                        logger.error("%r: send failed while closing: %s", self, exc)
                    return
                self._send_queue.popleft()
                self._sent(parts, status, callback)
