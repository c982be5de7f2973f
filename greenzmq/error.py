"""pyzmq's exceptions, unchanged, plus greenzmq's own.

Everything pyzmq raises is re-exported as-is, so ``except zmq.ZMQError`` and
``except zmq.Again`` written against pyzmq keep matching what greenzmq raises.
"""

from __future__ import annotations

from zmq.error import (
    Again,
    ContextTerminated,
    InterruptedSystemCall,
    NotDone,
    ZMQBaseError,
    ZMQBindError,
    ZMQError,
    ZMQVersionError,
)

__all__ = [
    "Again",
    "ContextTerminated",
    "InterruptedSystemCall",
    "NotDone",
    "ZMQBaseError",
    "ZMQBindError",
    "ZMQError",
    "ZMQVersionError",
    "WrongThreadError",
    "ForkedSocketError",
]


class WrongThreadError(ZMQBaseError, RuntimeError):
    """A green socket was used from an OS thread other than the one that made it.

    A greenzmq socket belongs to the gevent hub of the thread that created it
    (libzmq sockets are not thread-safe, and a hub's watchers may only be
    touched by its own thread). Several threads may share one Context, each
    with its own sockets.
    """


class ForkedSocketError(WrongThreadError):
    """A green socket made before ``os.fork()`` was used in the child process.

    libzmq contexts and sockets do not survive a fork; the child must create
    its own :class:`greenzmq.Context` (the parent's is untouched).
    """
