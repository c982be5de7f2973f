"""The competitors, each loaded only inside its own worker process.

A competitor is a name and a function that imports what it needs and returns
``{workload name: callable(**params) -> metrics}``. Nothing is imported at
module level, so the driver never imports gevent, eventlet or asyncio code, and
eventlet (which cannot share a process with gevent) gets a clean interpreter.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable

__all__ = ["COMPETITORS", "DESCRIPTIONS", "load", "versions"]

Table = dict[str, Callable[..., dict[str, float]]]

#: Workloads that only make sense with many cheap tasks (10,000 OS threads is
#: not a competitor anyone would deploy).
_TASK_ONLY = ("sharing",)


def _bind(runtime: Any, exclude: tuple[str, ...] = ()) -> Table:
    from bench.workloads import WORKLOADS

    return {name: functools.partial(fn, runtime) for name, fn in WORKLOADS.items() if name not in exclude}


def _gevent_runtime(name: str, zmq_module: Any) -> Any:
    import gevent

    from bench.workloads import Runtime

    def join(handles: list[Any]) -> None:
        gevent.joinall(handles, raise_error=True)
        for h in handles:  # joinall raises only the first; make sure none failed
            if h.exception is not None:
                raise h.exception

    return Runtime(name, zmq_module, gevent.spawn, join, gevent.sleep)


def _greenzmq() -> Table:
    import greenzmq

    return _bind(_gevent_runtime("greenzmq", greenzmq))


def _zmq_green() -> Table:
    import zmq.green

    return _bind(_gevent_runtime("zmq.green", zmq.green))


def _eventlet() -> Table:
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import eventlet
    import eventlet.green.zmq

    from bench.workloads import Runtime

    def join(handles: list[Any]) -> None:
        for h in handles:
            h.wait()

    return _bind(Runtime("eventlet", eventlet.green.zmq, eventlet.spawn, join, eventlet.sleep))


class _Thread(threading.Thread):
    """A daemon thread that keeps its task's exception for :func:`_join_threads`."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        super().__init__(daemon=True)
        self.fn, self.fn_args, self.error = fn, args, None

    def run(self) -> None:
        try:
            self.fn(*self.fn_args)
        except BaseException as exc:  # reported by join
            self.error = exc


def _spawn_thread(fn: Callable[..., Any], *args: Any) -> _Thread:
    t = _Thread(fn, args)
    t.start()
    return t


def _join_threads(handles: list[_Thread]) -> None:
    for t in handles:
        t.join()
    for t in handles:
        if t.error is not None:
            raise t.error


def _threads() -> Table:
    import time

    import zmq

    from bench.workloads import Runtime

    return _bind(Runtime("threads", zmq, _spawn_thread, _join_threads, time.sleep), exclude=_TASK_ONLY)


def _ceiling() -> Table:
    from bench.ceiling import WORKLOADS

    return dict(WORKLOADS)


def _asyncio() -> Table:
    from bench.aio import WORKLOADS

    return dict(WORKLOADS)


#: name -> loader, in the order tables list them
COMPETITORS: dict[str, Callable[[], Table]] = {
    "greenzmq": _greenzmq,
    "zmq.green": _zmq_green,
    "eventlet": _eventlet,
    "zmq.asyncio": _asyncio,
    "threads": _threads,
    "ceiling": _ceiling,
}

DESCRIPTIONS = {
    "greenzmq": "greenzmq with gevent greenlets",
    "zmq.green": "pyzmq's zmq.green with gevent greenlets",
    "eventlet": "eventlet.green.zmq with eventlet green threads (own process)",
    "zmq.asyncio": "pyzmq's zmq.asyncio with asyncio tasks (default loop)",
    "threads": "plain blocking pyzmq, one OS thread per peer",
    "ceiling": "plain pyzmq DONTWAIT calls + zmq.poll in one thread (single-thread ceiling)",
}


def load(name: str) -> Table:
    """Import competitor ``name`` and return its workloads (KeyError if unknown)."""
    return COMPETITORS[name]()


def versions() -> dict[str, str]:
    """Versions of what the competitors stand on (only what is already imported)."""
    import sys

    out = {"python": sys.version.split()[0]}
    for mod in ("zmq", "gevent", "greenlet", "eventlet", "greenzmq"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "greenzmq_version", None) or getattr(m, "__version__", "?")
    zmq = sys.modules.get("zmq")
    if zmq is not None:
        out["libzmq"] = zmq.zmq_version()
    return out
