"""Watch a socket's connection events from a greenlet.

:class:`Monitor` turns ``socket.get_monitor_socket()`` into an iterator of
decoded :class:`MonitorEvent` tuples (event, value, endpoint); :func:`watch`
runs a callback for each event in its own greenlet::

    import greenzmq as zmq
    from greenzmq.monitor import Monitor

    with Monitor(sock) as mon:           # sock is any greenzmq socket
        for ev in mon:                   # blocks only this greenlet
            print(ev.name, ev.endpoint)  # CONNECTED tcp://127.0.0.1:5555
            if ev.event == zmq.EVENT_DISCONNECTED:
                break

Decoding is pyzmq's :func:`zmq.utils.monitor.parse_monitor_message`; the
events are libzmq's (``zmq_socket_monitor``).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any, Callable, NamedTuple

import gevent
import zmq
from zmq.utils.monitor import parse_monitor_message

__all__ = ["MonitorEvent", "Monitor", "watch"]

_STOPPED = zmq.EVENT_MONITOR_STOPPED
#: errnos that mean "the monitor PAIR socket is gone": it was closed (by
#: :meth:`Monitor.close`, possibly from another greenlet) or its context was
#: terminated. Either ends the iteration instead of raising.
_GONE_ERRNOS = (zmq.ENOTSOCK, zmq.ETERM)
_endpoint_ids = itertools.count()


class MonitorEvent(NamedTuple):
    """One decoded monitor event.

    ``event`` is the :class:`zmq.Event` flag (``zmq.EVENT_CONNECTED``...),
    ``value`` its integer argument (an fd, an errno, a reconnect interval,
    depending on the event, see ``zmq_socket_monitor(3)``), ``endpoint`` the
    endpoint it concerns, decoded as UTF-8.
    """

    event: zmq.Event
    value: int
    endpoint: str

    @property
    def name(self) -> str:
        """The event's name without the ``EVENT_`` prefix: ``"CONNECTED"``."""
        return self.event.name or str(int(self.event))


class Monitor:
    """An iterator of :class:`MonitorEvent` for one socket.

    Iteration yields events as they arrive and ends, without raising, when
    the monitor stops: the watched socket is closed or :meth:`close` /
    ``socket.disable_monitor()`` is called (libzmq sends
    ``EVENT_MONITOR_STOPPED``, which is not yielded), the monitor socket is
    closed, or the context is terminated. The monitor socket is closed when
    iteration ends. libzmq allows one monitor per socket: a second
    :class:`Monitor` on the same socket shares the first one's PAIR socket
    (pyzmq's ``get_monitor_socket`` returns it), so each event goes to one of
    them only.

    Parameters
    ----------
    socket : greenzmq.Socket
        The socket to watch. Its context makes the monitor's PAIR socket, so
        a greenzmq socket gets a green monitor socket.
    events : int
        Bitmask of ``zmq.EVENT_*`` to report (default: all).

    Green behaviour
    ---------------
    Waiting for the next event blocks only the calling greenlet. Any greenlet
    of the socket's thread may call :meth:`close`; a greenlet iterating then
    stops at once. :meth:`recv` with a ``timeout`` raises :class:`zmq.Again`
    when no event arrives in time and the monitor stays usable.
    """

    def __init__(self, socket: zmq.Socket, events: int = zmq.EVENT_ALL) -> None:
        self.socket = socket
        # A fresh endpoint each time: pyzmq's default (one name per socket fd)
        # is still taken for a while after a previous monitor stopped, since
        # libzmq releases inproc names asynchronously ("Address already in use").
        addr = f"inproc://greenzmq.monitor.{os.getpid()}.{next(_endpoint_ids)}"
        self.monitor_socket: zmq.Socket = socket.get_monitor_socket(events, addr)
        self.monitor_socket.linger = 0

    @property
    def closed(self) -> bool:
        """True once the monitor socket is closed (iteration has ended)."""
        return self.monitor_socket.closed

    def recv(self, timeout: float | None = None) -> MonitorEvent | None:
        """Wait for the next event; ``None`` once the monitor has stopped.

        ``timeout`` in seconds (``None``: wait forever) raises
        :class:`zmq.Again` if nothing arrives in time. A malformed message
        (not a libzmq event) raises :class:`RuntimeError` from pyzmq's parser;
        the monitor stays usable.
        """
        mon = self.monitor_socket
        if mon.closed:
            return None
        # gevent.Timeout rather than RCVTIMEO: the option would also apply to
        # other greenlets reading this monitor, and poll-then-recv could lose
        # a race to them and wait past the timeout.
        timer = gevent.Timeout.start_new(timeout) if timeout is not None else None
        try:
            msg = mon.recv_multipart()
        except gevent.Timeout as t:
            if t is not timer:
                raise
            raise zmq.Again(zmq.EAGAIN, "no monitor event within the timeout") from None
        except zmq.ZMQError as e:
            if e.errno in _GONE_ERRNOS:
                self._close_monitor_socket()
                return None
            raise
        finally:
            if timer is not None:
                timer.cancel()
        parsed = parse_monitor_message(msg)
        event = zmq.Event(parsed["event"])
        if event == _STOPPED:
            self._close_monitor_socket()
            return None
        return MonitorEvent(event, int(parsed["value"]), parsed["endpoint"].decode("utf-8", "replace"))

    def __iter__(self) -> Iterator[MonitorEvent]:
        while True:
            ev = self.recv()
            if ev is None:
                return
            yield ev

    def close(self) -> None:
        """Stop monitoring and close the monitor socket. Safe to call twice.

        A greenlet blocked iterating stops (its loop ends normally).
        """
        if self.monitor_socket.closed:
            return
        if not self.socket.closed and self.socket._monitor_socket is self.monitor_socket:
            self.socket.disable_monitor()
        self._close_monitor_socket()

    def _close_monitor_socket(self) -> None:
        if not self.monitor_socket.closed:
            self.monitor_socket.close(linger=0)
        if getattr(self.socket, "_monitor_socket", None) is self.monitor_socket:
            self.socket._monitor_socket = None

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def watch(
    socket: zmq.Socket,
    callback: Callable[[MonitorEvent], Any],
    events: int = zmq.EVENT_ALL,
) -> gevent.Greenlet:
    """Call ``callback(event)`` for each event of ``socket``, in a new greenlet.

    Returns the started greenlet; it finishes when the monitor stops (the
    socket closes, the context terminates, or ``socket.disable_monitor()``).
    ``greenlet.kill()`` stops it and closes the monitor socket. An exception
    raised by ``callback`` ends the greenlet with that exception (see
    ``greenlet.exception``) after closing the monitor.
    """
    mon = Monitor(socket, events)

    def _run() -> None:
        try:
            for ev in mon:
                callback(ev)
        finally:
            mon.close()

    return gevent.spawn(_run)
