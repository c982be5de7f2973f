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

A submodule imported after the patch is hung by the import system on
``sys.modules[parent]``, the alias; the alias passes it on to the original
package, so ``zmq.asyncio`` is an attribute of both.

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
  hub serves them) and move between threads as libzmq allows (a socket nobody
  waits on belongs to whichever thread uses it next; two threads using it at
  the same time get :class:`greenzmq.error.WrongThreadError`), and a thread
  that blocks on one runs that thread's hub.
* pyzmq's own modules and greenzmq's always see the real pyzmq, whenever
  they are imported. They need it: ``zmq.eventloop.future`` runs ``class
  Context(zmq.Context[Socket])`` when imported, which must subclass pyzmq's
  Context, and greenzmq's classes are built on pyzmq's. Those imported before
  the patch bound the real ``zmq`` already. For the others, :func:`patch`
  puts a finder first on ``sys.meta_path``: every ``zmq.*`` and
  ``greenzmq.*`` module run from Python code gets its own ``__builtins__``
  whose ``__import__`` turns a green alias back into the module behind it,
  so ``import zmq``, ``from zmq import Context`` and ``from . import Socket``
  in it give pyzmq's objects, at import time and in its functions later.
  Nothing is preloaded and no list of modules is kept, so a submodule added
  by a later pyzmq, or one that needs an optional dependency such as
  tornado, is covered like the rest. What that means for you: pyzmq's
  helpers that make their own context when given none (``zmq.decorators``,
  ``zmq.log.handlers.PUBHandler(url)``, an ``Authenticator()``) make pyzmq's
  non-green one, whatever the import order; pass them
  ``zmq.Context.instance()``, greenzmq's, to get green sockets. The
  ``zmq.green`` alias stays greenzmq's inside them too.
* ``zmq.Context.instance()`` becomes greenzmq's singleton, distinct from a
  pyzmq singleton created before the patch.

There is no ``unpatch``: patch at start-up, once per process.
"""

from __future__ import annotations

import builtins
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
    "zmq_poll",
    "device",
    "proxy",
    "proxy_steerable",
)

#: pyzmq's and greenzmq's modules: never rebound, and given the real pyzmq when
#: imported after the patch (they hold the real objects on purpose).
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
        if isinstance(value, types.ModuleType) and name not in _SWAPPED:
            # submodules are the original package's (zmq.auth, not greenzmq.auth),
            # except greenzmq's exported ones (``error``) that the original lacks
            real_value = getattr(self._greenzmq_real, name, _MISSING)
            if real_value is not _MISSING:
                return real_value
            if name not in greenzmq.__all__:
                raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if isinstance(value, types.ModuleType) and not name.startswith("__"):
            # the import system hangs a new submodule on sys.modules[parent],
            # the alias: the original package must have it too, for the code
            # that sees the original (``import zmq.asyncio`` in pyzmq itself)
            setattr(self._greenzmq_real, name, value)

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
            # before the alias goes in: from here on, every pyzmq or greenzmq
            # module imported for the first time is given the real pyzmq
            if not any(isinstance(finder, _OwnModulesFinder) for finder in sys.meta_path):
                sys.meta_path.insert(0, _OwnModulesFinder())
            _install("zmq", GreenAlias(_zmq), _zmq)


class _OwnModulesFinder:
    """Finds pyzmq's and greenzmq's modules as usual, but makes them see the real pyzmq.

    On ``sys.meta_path`` once ``zmq`` is patched. It asks the other finders
    for the spec, and for a module run from Python source or bytecode wraps
    the loader in a :class:`_RealZmqLoader`.
    """

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if not fullname.startswith(_OWN_PREFIXES):
            return None
        for finder in list(sys.meta_path):
            if finder is self or isinstance(finder, _OwnModulesFinder):
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is None:
                continue
            loader, origin = spec.loader, spec.origin or ""
            if loader is not None and hasattr(loader, "exec_module") and origin.endswith((".py", ".pyc")):
                spec.loader = _RealZmqLoader(loader)
            return spec
        return None

    def invalidate_caches(self) -> None:
        pass


class _RealZmqLoader:
    """Runs the wrapped loader with ``__builtins__`` whose ``__import__`` maps green aliases back.

    The module's own globals then get the real objects while its code runs:
    ``import zmq``, ``from zmq import Context`` and ``from . import Socket``
    give pyzmq's. The module keeps these builtins, so an import inside one of
    its functions, run later, does too. Everything else is the wrapped
    loader's (``get_source``, ``get_resource_reader``, ...).
    """

    def __init__(self, loader: Any) -> None:
        self._greenzmq_loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._greenzmq_loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__dict__["__builtins__"] = {**builtins.__dict__, "__import__": _import_real_zmq}
        self._greenzmq_loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._greenzmq_loader, name)


def _import_real_zmq(
    name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
) -> Any:
    """``__import__`` for pyzmq's and greenzmq's modules: a green alias comes back as the real module."""
    module = builtins.__import__(name, globals, locals, fromlist, level)
    if isinstance(module, GreenAlias):
        return module._greenzmq_real
    return module


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
