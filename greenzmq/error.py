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
    "SocketLentError",
]


class WrongThreadError(ZMQBaseError, RuntimeError):
    """A green socket was used from two OS threads at the same time.

    A greenzmq socket belongs to the gevent hub of the thread that uses it.
    Ownership follows use: a socket that nobody waits on moves to whichever
    thread calls it next (libzmq allows a socket to migrate between threads
    with a full memory barrier between their uses). While a greenlet of one
    thread waits on the socket (in ``recv``, ``send``, a ``Poller``, a
    ``ZMQStream``), a call from another thread raises this error instead of
    touching the socket: libzmq sockets are not thread-safe, and a hub's
    watchers may only be touched by its own thread. The check is best effort:
    it catches a greenlet already waiting on the socket, not two threads that
    are inside libzmq calls on it at the same instant (which, as with pyzmq,
    is the program's bug).
    """


class ForkedSocketError(WrongThreadError):
    """A green socket made before ``os.fork()`` was used in the child process.

    libzmq contexts and sockets do not survive a fork; the child must create
    its own :class:`greenzmq.Context` (the parent's is untouched).
    """


class SocketLentError(WrongThreadError):
    """A green socket was used while a device runs libzmq's loop on it.

    :func:`greenzmq.proxy` and the other green devices lend their sockets to
    libzmq's own proxy in a native thread until the device ends; any other
    green call on those sockets raises this error, naming the device, without
    touching the socket.
    """
