"""Green logging over ZeroMQ: pyzmq's :class:`PUBHandler` on greenzmq sockets.

Publish records::

    import logging
    import greenzmq as zmq
    from greenzmq.log import PUBHandler

    handler = PUBHandler("tcp://127.0.0.1:5555", root_topic="myapp")
    logging.getLogger().addHandler(handler)
    logging.getLogger().warning("db::connection lost")  # topic myapp.WARNING.db

and watch them in a terminal with ``python -m greenzmq.log
tcp://127.0.0.1:5555 --topic myapp`` (see :mod:`greenzmq.log.__main__`).

Topics are pyzmq's: ``<root_topic>.<LEVEL>[.<subtopic>]``, where the subtopic
is the part of the message before :data:`TOPIC_DELIM` (``"::"``), or the first
argument of a :class:`TopicLogger` call. Each record is one two-frame message,
``[topic, formatted record]``, both UTF-8.
"""

from __future__ import annotations

import logging
from copy import copy
from typing import Any

import zmq
from zmq.log.handlers import TOPIC_DELIM
from zmq.log.handlers import PUBHandler as _PyzmqPUBHandler
from zmq.log.handlers import TopicLogger as _PyzmqTopicLogger

from greenzmq._native import get_ident
from greenzmq._waiter import waiters_of
from greenzmq.context import Context

__all__ = ["PUBHandler", "TopicLogger", "TOPIC_DELIM"]

#: Socket types a handler publishes on: both drop messages at the high-water
#: mark instead of blocking (an XPUB with XPUB_NODROP set blocks instead: the
#: caller's choice, see the class docstring).
_PUBLISHING_TYPES = (zmq.PUB, zmq.XPUB)


class PUBHandler(_PyzmqPUBHandler):
    """A :class:`logging.Handler` publishing each record on a green PUB socket.

    Per-level formatters (``handler.setFormatter(fmt, logging.ERROR)``),
    ``root_topic``, ``TOPIC_DELIM`` subtopics and ``dictConfig`` use are
    pyzmq's. A level without a formatter of its own (a custom level) uses the
    handler's default formatter instead of failing. Another socket type raises
    :class:`ValueError`. :meth:`close` closes the socket only if the handler
    made it.

    Parameters
    ----------
    interface_or_socket : str or zmq.Socket
        A bound or connected PUB (or XPUB) socket, or an endpoint to bind a new
        PUB socket to.
    context : greenzmq.Context, optional
        The context for a new socket (default: ``greenzmq.Context.instance()``).
    root_topic : str
        First part of every topic (default: none, topics start with the level).

    Green behaviour
    ---------------
    A log call never blocks, neither a greenlet nor the hub (so logging from a
    hub callback is safe): PUB drops a record when a subscriber's queue is at
    its high-water mark (``SNDHWM``), as PUB always does. (An XPUB with
    ``XPUB_NODROP`` set waits for room instead: that blocks the logging
    greenlet, and a log call made from the hub then fails through
    :meth:`logging.Handler.handleError`.) A record logged from another OS thread than the socket's is
    handed to the socket's hub (``run_callback_threadsafe``) and published
    there, in that thread's order of arrival; it is lost if that hub no
    longer runs.
    """

    _owns_socket = False

    def __init__(
        self,
        interface_or_socket: str | zmq.Socket,
        context: zmq.Context | None = None,
        root_topic: str = "",
    ) -> None:
        if isinstance(interface_or_socket, zmq.Socket):
            sock = interface_or_socket
            if sock.type not in _PUBLISHING_TYPES:
                raise ValueError(f"PUBHandler needs a PUB or XPUB socket, got {sock!r}")
            owns = False
        else:
            ctx = context if context is not None else Context.instance()
            sock = ctx.socket(zmq.PUB)
            try:
                sock.bind(interface_or_socket)
            except BaseException:
                sock.close(linger=0)
                raise
            owns = True
        super().__init__(sock, root_topic=root_topic)
        self._owns_socket = owns

    def format(self, record: logging.LogRecord) -> str:
        """Format with the record level's formatter, else the handler default."""
        fmt = self.formatters.get(record.levelno)
        if fmt is None:
            return logging.Handler.format(self, record)
        return fmt.format(record)

    def emit(self, record: logging.LogRecord) -> None:
        """Publish ``record`` without blocking (see the class docstring)."""
        waiters = waiters_of(self.socket)
        if waiters is None or waiters.thread == get_ident():
            self._publish(record)
            return
        # Another OS thread: a green socket belongs to its own hub. Render the
        # message now (its arguments may change once we return), publish there.
        record = copy(record)
        try:
            record.msg = record.getMessage()
        except Exception:
            self.handleError(record)
            return
        record.args = None
        waiters.loop.run_callback_threadsafe(self._publish, record)

    def _publish(self, record: logging.LogRecord) -> None:
        if self.socket.closed:
            return  # the handler was closed meanwhile: drop, as PUB would
        try:
            super().emit(record)
        except Exception:  # ETERM, a hub-side BlockingSwitchOutError...: never raise into a log call
            self.handleError(record)

    def close(self) -> None:
        """Detach the handler; close its socket if the handler created it."""
        try:
            if self._owns_socket and not self.socket.closed:
                self.socket.close()
        finally:
            super().close()

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return f"<greenzmq.log.PUBHandler {self.socket!r} root_topic={self.root_topic!r} ({level})>"


#: Frames between the caller and ``Logger.log`` in a :class:`TopicLogger`
#: level method: the method, ``_topic_log``, then pyzmq's ``TopicLogger.log``.
#: Added to ``stacklevel`` so ``%(filename)s:%(lineno)d`` name the caller.
_TOPIC_FRAMES = 3


class TopicLogger(_PyzmqTopicLogger):
    """A :class:`logging.Logger` whose calls take a topic first: ``log.info("db", "msg %s", x)``.

    pyzmq's :class:`zmq.log.handlers.TopicLogger`, with level methods that
    work: pyzmq 27 generates them in a loop whose closures all end up calling
    ``Logger.fatal`` (and then fail with :class:`TypeError`). The record's
    message is ``topic + TOPIC_DELIM + msg``, which :class:`PUBHandler` turns
    into the subtopic.
    """

    def _topic_log(self, level: int, topic: str, msg: str, args: Any, kwargs: dict) -> None:
        if self.isEnabledFor(level):
            kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + _TOPIC_FRAMES
            self.log(level, topic, msg, *args, **kwargs)

    def debug(self, topic: str, msg: str, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]  # deliberate: the topic comes first
        self._topic_log(logging.DEBUG, topic, msg, args, kwargs)

    def info(self, topic: str, msg: str, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]  # deliberate: the topic comes first
        self._topic_log(logging.INFO, topic, msg, args, kwargs)

    def warning(self, topic: str, msg: str, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]  # deliberate: the topic comes first
        self._topic_log(logging.WARNING, topic, msg, args, kwargs)

    def error(self, topic: str, msg: str, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]  # deliberate: the topic comes first
        self._topic_log(logging.ERROR, topic, msg, args, kwargs)

    def exception(self, topic: str, msg: str, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:  # type: ignore[override]  # deliberate: the topic comes first
        self._topic_log(logging.ERROR, topic, msg, args, {"exc_info": exc_info, **kwargs})

    def critical(self, topic: str, msg: str, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]  # deliberate: the topic comes first
        self._topic_log(logging.CRITICAL, topic, msg, args, kwargs)

    warn = warning
    fatal = critical
