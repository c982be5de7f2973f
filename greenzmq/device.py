"""Green devices: ``device``, ``proxy``, ``proxy_steerable`` and ``monitored_queue``.

Where things live:

* this module: the device *functions*, which block only the calling greenlet;
* :mod:`greenzmq.devices`: the *background* devices (``GreenDevice``,
  ``ThreadProxy``, ``ProcessMonitoredQueue``...), pyzmq's ``zmq.devices`` API;
* :mod:`greenzmq._lending`: how ``device``, ``proxy`` and ``proxy_steerable``
  lend their sockets to libzmq's own proxy in a native thread, and stop it;
* :mod:`greenzmq._relay`: the green forwarding engine that ``monitored_queue``
  still uses (pyzmq's C monitored queue cannot be stopped, see there).

``greenzmq.device`` is this module, and it is callable: ``greenzmq.device(
zmq.QUEUE, frontend, backend)`` calls :func:`device`, as ``zmq.device(...)``
does in pyzmq, while ``greenzmq.device.monitored_queue`` and ``from
greenzmq.device import proxy`` reach the other functions. A module and a
function cannot share the name ``greenzmq.device`` otherwise: pyzmq's
``zmq.device`` is a function, and the project's layout names this module.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

import zmq

from greenzmq._lending import NativeProxy
from greenzmq._native import get_ident
from greenzmq._relay import Engine, Relay
from greenzmq._waiter import waiters_of

__all__ = [
    "device",
    "proxy",
    "proxy_steerable",
    "monitored_queue",
]

_DEVICE_TYPES = {int(zmq.QUEUE): "QUEUE", int(zmq.FORWARDER): "FORWARDER", int(zmq.STREAMER): "STREAMER"}


def _check_socket(name: str, sock: Any, optional: bool = False) -> None:
    if sock is None and optional:
        return
    if not isinstance(sock, zmq.Socket):
        raise TypeError(f"{name} must be a zmq socket, not {type(sock).__name__}")
    if sock.closed:
        raise zmq.ZMQError(zmq.ENOTSOCK, f"{name} is closed")
    w = waiters_of(sock)
    if w is not None and w.thread != get_ident():
        w.claim(sock)  # WrongThreadError if waited on elsewhere, SocketLentError if lent


def _lent_proxy(title: str, frontend: Any, backend: Any, capture: Any, control: Any, detail: str = "") -> int:
    _check_socket("frontend", frontend)
    _check_socket("backend", backend)
    _check_socket("capture", capture, optional=True)
    _check_socket("control", control, optional=True)
    if control is not None and any(control is s for s in (frontend, backend, capture)):
        raise ValueError("the control socket must not be one of the sockets the device forwards")
    return NativeProxy(title, frontend, backend, capture, control, detail).run()


def proxy(frontend: zmq.Socket[Any], backend: zmq.Socket[Any], capture: zmq.Socket[Any] | None = None) -> int:
    """Forward messages both ways between ``frontend`` and ``backend``, as :func:`zmq.proxy`.

    Runs libzmq's own proxy on these sockets in a native OS thread (see
    :mod:`greenzmq._lending`), at libzmq's speed and without the GIL.

    Parameters
    ----------
    frontend, backend : zmq.Socket
        Green (or plain) sockets of this thread; they may be the same socket.
    capture : zmq.Socket, optional
        Receives a copy of every message forwarded, in either direction
        (libzmq sends it with a blocking send: prefer PUB).

    Green behaviour
    ---------------
    Blocks only the calling greenlet. The sockets are *lent* until the call
    ends: any other green call on them raises
    :class:`greenzmq.error.SocketLentError` naming this device, without
    touching them. Never returns normally: it raises what ended it,
    :class:`zmq.ContextTerminated` when the context is terminated (or
    destroyed), :class:`zmq.ZMQError` (ENOTSOCK) when one of its sockets is
    closed, or libzmq's error (such as EHOSTUNREACH from a ROUTER_MANDATORY
    socket). Killing the greenlet, or a ``gevent.Timeout``, stops libzmq's
    loop and gives the sockets back, unchanged, before the kill propagates;
    use :func:`proxy_steerable` to stop it with a command. libzmq sends with
    blocking calls: while a destination is full and nobody reads it, a stop
    waits for room (or for ``Context.term()``). Raises, before forwarding
    anything: :class:`TypeError` if a socket argument is not a zmq socket,
    :class:`greenzmq.error.WrongThreadError` for a socket that a greenlet
    (of this thread or another) is waiting on, and
    :class:`greenzmq.error.SocketLentError` for a socket another device holds.
    """
    return _lent_proxy("greenzmq.proxy", frontend, backend, capture, None)


def proxy_steerable(
    frontend: zmq.Socket[Any],
    backend: zmq.Socket[Any],
    capture: zmq.Socket[Any] | None = None,
    control: zmq.Socket[Any] | None = None,
) -> int:
    """:func:`proxy` with a control socket, as :func:`zmq.proxy_steerable`.

    Commands (single-frame messages on ``control``, as zmq_proxy_steerable(3)):

    * ``PAUSE``: stop forwarding (messages wait in the sockets' queues);
    * ``RESUME``: forward again;
    * ``TERMINATE``: give the sockets back and return 0;
    * ``STATISTICS``: reply with 8 frames, each a native-endian uint64: frames
      and bytes received by the frontend, sent by the frontend, received by the
      backend, sent by the backend (libzmq counts frames, not whole messages).

    A REP control socket gets an empty reply to every other command (unknown
    ones included, which are otherwise ignored), sent once the command took
    effect; a PAIR gets none. Only the first frame of a multi-frame command is
    read. With ``control=None`` this is :func:`proxy`. The same on every
    libzmq version (4.3.5's own steerable proxy differs, see
    :mod:`greenzmq._lending`).

    Green behaviour
    ---------------
    As :func:`proxy`. ``control`` stays green: a greenlet of this thread
    reads it while the device runs. A paused device runs no thread and uses
    no CPU. Raises :class:`ValueError` if ``control`` is one of the other
    sockets.
    """
    return _lent_proxy("greenzmq.proxy_steerable", frontend, backend, capture, control)


def device(device_type: int, frontend: zmq.Socket[Any], backend: zmq.Socket[Any]) -> int:
    """Green :func:`zmq.device`: ``device_type`` is QUEUE, FORWARDER or STREAMER.

    All three forward both ways exactly like :func:`proxy` (as libzmq does
    since 3.2). Raises :class:`ValueError` for any other ``device_type``
    (pyzmq ignores it).

    Green behaviour
    ---------------
    As :func:`proxy`.
    """
    name = _DEVICE_TYPES.get(device_type) if isinstance(device_type, int) else None
    if name is None:
        raise ValueError(f"device_type must be zmq.QUEUE, zmq.FORWARDER or zmq.STREAMER, not {device_type!r}")
    return _lent_proxy("greenzmq.device", frontend, backend, None, None, f"zmq.{name}")


def monitored_queue(
    in_socket: zmq.Socket[Any],
    out_socket: zmq.Socket[Any],
    mon_socket: zmq.Socket[Any],
    in_prefix: bytes = b"in",
    out_prefix: bytes = b"out",
) -> None:
    """Green :func:`zmq.devices.monitored_queue`: a queue that copies every message to a monitor.

    Each message from ``in_socket`` goes to ``out_socket`` and, prefixed with
    the frame ``in_prefix``, to ``mon_socket`` (usually PUB); the other way
    with ``out_prefix``. When both are ROUTER sockets, the first two frames
    (the two routing ids) are swapped in the forwarded and the monitored copy,
    so that replies route back to the sender.

    Green behaviour
    ---------------
    Forwards in the calling greenlet, with greenzmq's green engine
    (:mod:`greenzmq._relay`), sharing the hub's thread: pyzmq's C monitored
    queue has no control socket, so nothing could stop it cleanly in a
    native thread. The sockets are not lent. Never returns normally: raises
    what ended it (ENOTSOCK when a socket is closed, ContextTerminated, a
    send error); kill the greenlet to stop it. A full destination makes it
    hold that message while the other direction keeps flowing. Raises
    :class:`TypeError` for a prefix that is not bytes or a socket argument
    that is not a zmq socket, and :class:`greenzmq.error.WrongThreadError` for
    a green socket waited on by another thread.
    """
    for name, prefix in (("in_prefix", in_prefix), ("out_prefix", out_prefix)):
        if not isinstance(prefix, bytes):
            raise TypeError(f"{name} must be bytes, not {type(prefix).__name__}")
    _check_socket("in_socket", in_socket)
    _check_socket("out_socket", out_socket)
    _check_socket("mon_socket", mon_socket)
    swap = in_socket.type == zmq.ROUTER and out_socket.type == zmq.ROUTER
    relays = [Relay(in_socket, out_socket, mon_socket, in_prefix, swap)]
    if out_socket is not in_socket:
        relays.append(Relay(out_socket, in_socket, mon_socket, out_prefix, swap))
    Engine(relays).run()


class _CallableModule(types.ModuleType):
    """``greenzmq.device``: this module, and called, the :func:`device` function (as ``zmq.device``).

    Type checkers cannot call a module: the facade declares ``greenzmq.device``
    as an instance of this class (see ``greenzmq/__init__.py``), so that
    ``zmq.device(zmq.QUEUE, a, b)`` checks against :meth:`__call__` and
    ``zmq.device.monitored_queue`` against the functions declared below.
    """

    def __call__(self, device_type: int, frontend: zmq.Socket[Any], backend: zmq.Socket[Any]) -> int:
        return device(device_type, frontend, backend)

    if TYPE_CHECKING:
        # the module's functions, as attributes of the module object (at run time
        # they are the module's own globals)
        device = staticmethod(device)
        proxy = staticmethod(proxy)
        proxy_steerable = staticmethod(proxy_steerable)
        monitored_queue = staticmethod(monitored_queue)


sys.modules[__name__].__class__ = _CallableModule
