"""Make code written against ``zmq.green`` (or ``zmq``) use greenzmq, without editing it.

Call :func:`patch` early, before or after importing the library::

    import greenzmq.monkey
    greenzmq.monkey.patch()            # `import zmq.green` now gives greenzmq
    greenzmq.monkey.patch(zmq=True)    # ... and so does `import zmq`

How it works
============

``import zmq.green`` (and ``import zmq`` when asked) then returns a *green
alias*: a module object named like the original whose attributes are
greenzmq's (``Context``, ``Socket``, ``Poller``, ``select``, ``device``,
``proxy``, every constant and error) and whose ``__path__`` is still pyzmq's,
so submodules (``zmq.auth``, ``zmq.utils.monitor``, ``zmq.green.core``) keep
importing pyzmq's own code. greenzmq is not put in ``sys.modules['zmq']``
itself: its package path holds greenzmq's modules (``greenzmq/log``), which
``import zmq.log.handlers`` would then load a second time under the wrong
name.

Modules imported *before* :func:`patch` bound the original objects; patch
rebinds every global of an already-imported module (outside pyzmq and
greenzmq) that is one of those objects: the module itself (``import
zmq.green as zmq``, as in ``locust.rpc.zmqrpc``) and the classes and functions
greenzmq replaces (``from zmq.green import Context``). Objects *created*
before the patch (a context, a socket, a subclass of ``zmq.Socket``) stay
what they are.

Trade-offs of ``zmq=True``
==========================

* It is process-wide: every ``zmq.Context()`` in every thread and library
  becomes green. greenzmq sockets work in any thread (each thread's own gevent
  hub serves them), but a socket must stay in the thread that created it
  (:class:`greenzmq.error.WrongThreadError` otherwise), and a thread that
  blocks on one runs that thread's hub.
* pyzmq's internals and greenzmq's own modules must keep pyzmq's real
  classes: they bind ``zmq`` when first imported, so :func:`patch` first
  imports the pyzmq submodules that subclass ``zmq.Socket`` or ``zmq.Context``
  at import time (``zmq.asyncio``, ``zmq.green``, ``zmq.devices``, ...) and
  greenzmq's extensions. A pyzmq submodule imported for the first time
  afterwards sees the green names.
* ``zmq.Context.instance()`` becomes greenzmq's singleton, distinct from a
  pyzmq singleton created before the patch.

There is no ``unpatch``: patch at start-up, once per process.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from typing import Any

import zmq as _zmq

import greenzmq

__all__ = ["patch", "is_patched", "GreenAlias"]

#: The names greenzmq replaces; everything else in zmq is pyzmq's own object.
_SWAPPED = (
    "Context",
    "Socket",
    "SyncContext",
    "SyncSocket",
    "Poller",
    "select",
    "device",
    "proxy",
    "proxy_steerable",
)

#: pyzmq submodules that subclass or capture ``zmq.Socket``/``zmq.Context`` when
#: imported: imported before ``sys.modules['zmq']`` changes, so they keep the
#: real classes. Missing optional ones (tornado for eventloop) are skipped.
_PRELOAD_PYZMQ = (
    "zmq.green",
    "zmq._future",
    "zmq.asyncio",
    "zmq.devices",
    "zmq.auth",
    "zmq.auth.thread",
    "zmq.log.handlers",
    "zmq.utils.monitor",
    "zmq.eventloop.zmqstream",
)
#: greenzmq's extension modules, for the same reason (imported if present).
_PRELOAD_GREENZMQ = (
    "greenzmq.log",
    "greenzmq.monitor",
    "greenzmq.auth",
    "greenzmq.ssh",
    "greenzmq.eventloop",
)

#: Module names never rebound: pyzmq and greenzmq hold the real objects on purpose.
_OWN_PREFIXES = ("zmq.", "greenzmq.")
_OWN_NAMES = ("zmq", "greenzmq")

_MISSING = object()
_lock = threading.RLock()
_aliases: dict[str, GreenAlias] = {}


class GreenAlias(types.ModuleType):
    """What ``import zmq.green`` (or ``import zmq``) returns once patched.

    Attribute lookups go to :mod:`greenzmq` first, then to the original
    module ``real``; submodules always come from ``real`` (``zmq.auth`` is
    pyzmq's even though :mod:`greenzmq.auth` exists). ``__path__`` is
    the original's, so submodule imports find pyzmq's files. ``__all__`` is
    greenzmq's, so ``from zmq import *`` gets the green names.
    """

    _greenzmq_real: types.ModuleType

    def __init__(self, real: types.ModuleType) -> None:
        super().__init__(real.__name__, greenzmq.__doc__)
        for attr in ("__file__", "__path__", "__spec__", "__loader__", "__package__"):
            if hasattr(real, attr):
                setattr(self, attr, getattr(real, attr))
        self.__all__ = list(greenzmq.__all__)
        self.__version__ = _zmq.__version__
        self._greenzmq_real = real

    def __getattr__(self, name: str) -> Any:
        value = getattr(greenzmq, name, _MISSING)
        if value is _MISSING:
            return getattr(self._greenzmq_real, name)
        if isinstance(value, types.ModuleType):
            # submodules are the original package's (zmq.auth, not greenzmq.auth),
            # except greenzmq's exported ones (``error``) that the original lacks
            real_value = getattr(self._greenzmq_real, name, _MISSING)
            if real_value is not _MISSING:
                return real_value
            if name not in greenzmq.__all__:
                raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        return value

    def __dir__(self) -> list[str]:
        return sorted(set(dir(greenzmq)) | set(dir(self._greenzmq_real)) | set(self.__dict__))

    def __repr__(self) -> str:
        return f"<greenzmq alias of module {self.__name__!r}>"


def is_patched(module: str = "zmq.green") -> bool:
    """True if :func:`patch` made ``import <module>`` give greenzmq (``"zmq.green"`` or ``"zmq"``)."""
    return module in _aliases and sys.modules.get(module) is _aliases[module]


def patch(green: bool = True, zmq: bool = False) -> None:
    """Make ``import zmq.green`` (``green``) and ``import zmq`` (``zmq``) give greenzmq.

    Idempotent, and safe before or after the libraries using them are
    imported (already-imported modules have their bindings replaced, see the
    module docstring). Call it from the main thread at start-up, before any
    zmq context or socket the library should make green exists.

    Green behaviour
    ---------------
    Does not block or yield. ``zmq=True`` affects every thread of the process.
    """
    with _lock:
        if green and not is_patched("zmq.green"):
            real_green = importlib.import_module("zmq.green")
            if isinstance(real_green, GreenAlias):  # zmq=True was patched by hand first
                real_green = real_green._greenzmq_real
            _install("zmq.green", GreenAlias(real_green), real_green)
        if zmq and not is_patched("zmq"):
            for name in (*_PRELOAD_PYZMQ, *_PRELOAD_GREENZMQ):
                _try_import(name)
            _install("zmq", GreenAlias(_zmq), _zmq)


def _try_import(name: str) -> None:
    try:
        importlib.import_module(name)
    except ImportError:
        pass  # an optional dependency is missing: nothing to protect


def _install(name: str, alias: GreenAlias, real: types.ModuleType) -> None:
    replacements: dict[int, tuple[Any, Any]] = {id(real): (real, alias)}
    for attr in _SWAPPED:
        old, new = getattr(real, attr, None), getattr(greenzmq, attr)
        if old is not None and old is not new:
            replacements[id(old)] = (old, new)
    sys.modules[name] = alias
    _aliases[name] = alias
    parent, _, child = name.rpartition(".")
    if parent:
        # `import zmq.green as z` reads the attribute of the parent package
        # first: set it on pyzmq's package and on the zmq alias if there is one
        for holder in (_zmq, sys.modules.get(parent)):
            if holder is not None:
                setattr(holder, child, alias)
    _rebind(replacements)


def _rebind(replacements: dict[int, tuple[Any, Any]]) -> None:
    """Replace, in every imported module outside pyzmq/greenzmq, globals bound to old objects."""
    for modname, mod in list(sys.modules.items()):
        if mod is None or isinstance(mod, GreenAlias):
            continue
        if modname in _OWN_NAMES or modname.startswith(_OWN_PREFIXES):
            continue
        namespace = getattr(mod, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for key, value in list(namespace.items()):
            hit = replacements.get(id(value))
            if hit is not None and hit[0] is value:
                namespace[key] = hit[1]
