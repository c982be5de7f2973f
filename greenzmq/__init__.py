"""greenzmq: the whole pyzmq API for gevent; blocking calls block only the greenlet.

Use it as a drop-in::

    import greenzmq as zmq

Every public name of :mod:`zmq` is here (constants, errors, ``Frame``,
``MessageTracker``, ``has``, ``curve_keypair``, ...), with the green
:class:`Context`, :class:`Socket`, :class:`Poller`, :func:`select`, :func:`zmq_poll` and the
devices swapped in. ``zmq.__version__`` stays pyzmq's version (code that checks
it keeps working); greenzmq's own is :data:`greenzmq_version`. Submodules of
pyzmq that greenzmq does not replace (``utils``, ``constants``, ``backend``,
``sugar``) are reachable as attributes.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import zmq as _zmq
from zmq import *  # noqa: F403  (every public name of pyzmq, then ours on top)

import greenzmq.device as device  # the module of the device functions; callable, as zmq.device(...)
from greenzmq import error
from greenzmq._version import VERSION
from greenzmq.context import Context
from greenzmq.device import proxy, proxy_steerable
from greenzmq.error import ForkedSocketError, SocketLentError, WrongThreadError
from greenzmq.poll import Poller, select, zmq_poll
from greenzmq.serialize import DeserializationError, register_codec
from greenzmq.socket import Socket
from greenzmq.tracker import MessageTracker

#: greenzmq's own version (``__version__`` is pyzmq's, as in :mod:`zmq`).
greenzmq_version = VERSION

SyncContext = Context
SyncSocket = Socket

_OURS = [
    "error",
    "WrongThreadError",
    "ForkedSocketError",
    "SocketLentError",
    "DeserializationError",
    "register_codec",
    "greenzmq_version",
]
__all__ = list(dict.fromkeys([*_zmq.__all__, *_OURS]))


def __getattr__(name: str) -> Any:
    """Reach submodules: greenzmq's own first (``greenzmq.auth`` is the green
    authenticator even if ``zmq.auth`` was imported), then pyzmq's
    (``greenzmq.utils``, ``greenzmq.constants``...)."""
    if name.startswith("_"):
        raise AttributeError(name)
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    try:
        return getattr(_zmq, name)
    except AttributeError:
        raise AttributeError(f"module 'greenzmq' has no attribute {name!r}") from None
