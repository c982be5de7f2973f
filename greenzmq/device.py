"""Green devices: ``device``, ``proxy``, ``proxy_steerable`` and ``monitored_queue``.

Each blocks only the calling greenlet and forwards with the burst engine of
:mod:`greenzmq._relay` (its docstring explains how). The background devices
(:mod:`greenzmq.devices`) run the same engine in a greenlet on the caller's
context, or libzmq's own proxy in a thread or process.
"""

from __future__ import annotations

from typing import Any

import zmq

from greenzmq._relay import _BE_RECV, _BE_SEND, _FE_RECV, _FE_SEND, BURST, _Engine, _Relay
from greenzmq._waiter import get_ident

__all__ = [
    "BURST",
    "device",
    "proxy",
    "proxy_steerable",
    "monitored_queue",
]

_DEVICE_TYPES = (int(zmq.QUEUE), int(zmq.FORWARDER), int(zmq.STREAMER))


def _check_socket(name: str, sock: Any, optional: bool = False) -> None:
    if sock is None and optional:
        return
    if not isinstance(sock, zmq.Socket):
        raise TypeError(f"{name} must be a zmq socket, not {type(sock).__name__}")
    if sock.closed:
        raise zmq.ZMQError(zmq.ENOTSOCK, f"{name} is closed")
    w = getattr(sock, "_waiters", None)
    if w is not None and w.thread != get_ident():
        w.claim(sock)


def proxy(frontend: Any, backend: Any, capture: Any = None) -> None:
    """Forward messages both ways between ``frontend`` and ``backend``, as :func:`zmq.proxy`.

    Parameters
    ----------
    frontend, backend : zmq.Socket
        Green (or plain) sockets of this thread; they may be the same socket.
    capture : zmq.Socket, optional
        Receives a copy of every message forwarded, in either direction.

    Green behaviour
    ---------------
    Blocks only the calling greenlet, and forwards in bursts (see the module
    docstring). Never returns normally: it raises what ended it,
    :class:`zmq.ContextTerminated` when the context is terminated and
    :class:`zmq.ZMQError` (ENOTSOCK) when one of its sockets is closed, or any
    send error (such as EHOSTUNREACH from a ROUTER_MANDATORY socket). Kill the
    greenlet to stop it; use :func:`proxy_steerable` to stop it cleanly.
    Raises :class:`TypeError` if a socket argument is not a zmq socket, and
    :class:`greenzmq.error.WrongThreadError` for a green socket of another
    thread, before forwarding anything.
    """
    _run(frontend, backend, capture, None)


def proxy_steerable(frontend: Any, backend: Any, capture: Any = None, control: Any = None) -> int:
    """:func:`proxy` with a control socket, as :func:`zmq.proxy_steerable`.

    Commands (single-frame messages on ``control``, as zmq_proxy_steerable(3)):

    * ``PAUSE``: stop forwarding (messages wait in the sockets' queues);
    * ``RESUME``: forward again;
    * ``TERMINATE``: return 0;
    * ``STATISTICS``: reply with 8 frames, each a native-endian uint64: frames
      and bytes received by the frontend, sent by the frontend, received by the
      backend, sent by the backend (libzmq counts frames, not whole messages).

    A REP control socket gets an empty reply to every other command (unknown
    ones included, which are otherwise ignored); a PAIR gets none. Only the
    first frame of a multi-frame command is read. With ``control=None`` this is
    :func:`proxy`.

    Green behaviour
    ---------------
    As :func:`proxy`. Commands are handled between bursts, so TERMINATE and
    PAUSE take effect after at most :data:`BURST` messages per direction.
    """
    return _run(frontend, backend, capture, control)


def _run(frontend: Any, backend: Any, capture: Any, control: Any) -> int:
    _check_socket("frontend", frontend)
    _check_socket("backend", backend)
    _check_socket("capture", capture, optional=True)
    _check_socket("control", control, optional=True)
    stats = [0] * 8 if control is not None else None
    relays = [_Relay(frontend, backend, capture, stats, _FE_RECV, _BE_SEND)]
    if backend is not frontend:
        relays.append(_Relay(backend, frontend, capture, stats, _BE_RECV, _FE_SEND))
    return _Engine(relays, control, stats).run()


def device(device_type: int, frontend: Any, backend: Any) -> None:
    """Green :func:`zmq.device`: ``device_type`` is QUEUE, FORWARDER or STREAMER.

    All three forward both ways exactly like :func:`proxy` (as libzmq does
    since 3.2). Raises :class:`ValueError` for any other ``device_type``
    (pyzmq ignores it).

    Green behaviour
    ---------------
    As :func:`proxy`.
    """
    if device_type not in _DEVICE_TYPES:
        raise ValueError(f"device_type must be zmq.QUEUE, zmq.FORWARDER or zmq.STREAMER, not {device_type!r}")
    proxy(frontend, backend)


def monitored_queue(
    in_socket: Any, out_socket: Any, mon_socket: Any, in_prefix: bytes = b"in", out_prefix: bytes = b"out"
) -> None:
    """Green :func:`zmq.devices.monitored_queue`: a queue that copies every message to a monitor.

    Each message from ``in_socket`` goes to ``out_socket`` and, prefixed with
    the frame ``in_prefix``, to ``mon_socket`` (usually PUB); the other way
    with ``out_prefix``. When both are ROUTER sockets, the first two frames
    (the two routing ids) are swapped in the forwarded and the monitored copy,
    so that replies route back to the sender.

    Green behaviour
    ---------------
    As :func:`proxy`: blocks only the calling greenlet, raises what ended it.
    Raises :class:`TypeError` for a prefix that is not bytes.
    """
    for name, prefix in (("in_prefix", in_prefix), ("out_prefix", out_prefix)):
        if not isinstance(prefix, bytes):
            raise TypeError(f"{name} must be bytes, not {type(prefix).__name__}")
    _check_socket("in_socket", in_socket)
    _check_socket("out_socket", out_socket)
    _check_socket("mon_socket", mon_socket)
    swap = in_socket.type == zmq.ROUTER and out_socket.type == zmq.ROUTER
    relays = [_Relay(in_socket, out_socket, mon=mon_socket, prefix=in_prefix, swap=swap)]
    if out_socket is not in_socket:
        relays.append(_Relay(out_socket, in_socket, mon=mon_socket, prefix=out_prefix, swap=swap))
    _Engine(relays).run()
