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
from typing import TYPE_CHECKING, Any

import zmq as _zmq

if TYPE_CHECKING:
    # For type checkers, pyzmq's names are gathered as pyzmq's own zmq/__init__.pyi
    # gathers them, less the ones greenzmq swaps (imported below with greenzmq's
    # types): after `from zmq import *` they would be pyzmq's, and a type checker
    # does not let an import rebind a name to a different type.
    from zmq import _FINISHED_TRACKER as _FINISHED_TRACKER
    from zmq import COPY_THRESHOLD as COPY_THRESHOLD
    from zmq import DRAFT_API as DRAFT_API
    from zmq import IPC_PATH_MAX_LEN as IPC_PATH_MAX_LEN
    from zmq import PYZMQ_DRAFT_API as PYZMQ_DRAFT_API
    from zmq import Frame as Frame
    from zmq import Message as Message
    from zmq import Stopwatch as Stopwatch
    from zmq import __revision__ as __revision__
    from zmq import __version__ as __version__
    from zmq import curve_keypair as curve_keypair
    from zmq import curve_public as curve_public
    from zmq import get_includes as get_includes
    from zmq import get_library_dirs as get_library_dirs
    from zmq import has as has
    from zmq import pyzmq_version as pyzmq_version
    from zmq import pyzmq_version_info as pyzmq_version_info
    from zmq import strerror as strerror
    from zmq import zmq_errno as zmq_errno
    from zmq import zmq_version as zmq_version
    from zmq import zmq_version_info as zmq_version_info
    from zmq.constants import *
    from zmq.error import *
else:
    from zmq import *  # noqa: F403  (every public name of pyzmq, then ours on top)

from greenzmq import error as error
from greenzmq._version import VERSION
from greenzmq.context import Context as Context
from greenzmq.device import proxy as proxy
from greenzmq.device import proxy_steerable as proxy_steerable
from greenzmq.error import ForkedSocketError as ForkedSocketError
from greenzmq.error import SocketLentError as SocketLentError
from greenzmq.error import WrongThreadError as WrongThreadError
from greenzmq.poll import Poller as Poller
from greenzmq.poll import select as select
from greenzmq.poll import zmq_poll as zmq_poll
from greenzmq.serialize import DeserializationError as DeserializationError
from greenzmq.serialize import register_codec as register_codec
from greenzmq.socket import Socket as Socket
from greenzmq.tracker import MessageTracker as MessageTracker

if TYPE_CHECKING:
    from typing_extensions import TypeAlias

    # greenzmq.device is a module that can be called (zmq.device(zmq.QUEUE, a, b));
    # a type checker cannot call a module, so it is declared as what it is at run
    # time, an instance of the module's class, whose __call__ is the device function.
    from greenzmq.device import _CallableModule

    device: _CallableModule

    # as pyzmq's aliases, with greenzmq's classes (at run time: the classes themselves)
    SyncSocket: TypeAlias = Socket[bytes]
    SyncContext: TypeAlias = Context[SyncSocket]

    # the submodules __getattr__ reaches at run time
    from zmq import backend as backend
    from zmq import constants as constants
    from zmq import sugar as sugar
    from zmq import utils as utils

    from greenzmq import auth as auth
    from greenzmq import codec as codec
    from greenzmq import devices as devices
    from greenzmq import eventloop as eventloop
    from greenzmq import locust as locust
    from greenzmq import log as log
    from greenzmq import monitor as monitor
    from greenzmq import monkey as monkey
    from greenzmq import service as service
    from greenzmq import ssh as ssh
else:
    import greenzmq.device as device  # the module of the device functions; callable, as zmq.device(...)

    SyncContext = Context
    SyncSocket = Socket

#: greenzmq's own version (``__version__`` is pyzmq's, as in :mod:`zmq`).
greenzmq_version = VERSION

_OURS = [
    "error",
    "WrongThreadError",
    "ForkedSocketError",
    "SocketLentError",
    "DeserializationError",
    "register_codec",
    "greenzmq_version",
]
if TYPE_CHECKING:
    # __all__ as a type checker can read it: pyzmq's names, then _OURS as a literal
    from zmq import __all__ as __all__

    __all__ += [
        "error",
        "WrongThreadError",
        "ForkedSocketError",
        "SocketLentError",
        "DeserializationError",
        "register_codec",
        "greenzmq_version",
    ]
else:
    __all__ = list(dict.fromkeys([*_zmq.__all__, *_OURS]))

    # Hidden from type checkers, which see the names above and no others: with a
    # module __getattr__, every misspelt name would be Any to them.
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
