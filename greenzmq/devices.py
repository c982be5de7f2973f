"""Background devices, ``greenzmq.devices``: the green twin of :mod:`zmq.devices`.

They reuse pyzmq's :mod:`zmq.devices` classes and their configuration API
(``bind_in``/``connect_out``/``setsockopt_out``/``*_mon``/``*_ctrl``,
``start``, ``join(timeout)``), adding ``stop()``:

* ``Green*`` call the green device functions of :mod:`greenzmq.device` in a
  greenlet, on sockets of the caller's context (so they serve its
  ``inproc://`` endpoints): ``GreenDevice``, ``GreenProxy`` and
  ``GreenProxySteerable`` lend those sockets to libzmq's own proxy in a native
  thread (:mod:`greenzmq._lending`), ``GreenMonitoredQueue`` forwards with the
  green engine (:mod:`greenzmq._relay` says why). pyzmq's base-class names
  (``Device``, ``Proxy``, ``ProxySteerable``, ``MonitoredQueue``) are these,
  so code written against ``zmq.devices`` ports by changing the import.
* ``Thread*`` run libzmq's own proxy in a real OS thread (even under
  monkey-patching) on a private context: use tcp or ipc endpoints.
* ``Process*`` run it in a subprocess; ``stop()`` sends SIGTERM.

``join`` and ``stop`` block only the calling greenlet for all three kinds.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable

import gevent
import zmq
from zmq.devices import basedevice as _base
from zmq.devices import monitoredqueuedevice as _mqd
from zmq.devices import proxydevice as _pxd
from zmq.devices import proxysteerabledevice as _psd

from greenzmq._native import NativeThread, run_native
from greenzmq.context import Context
from greenzmq.device import device, monitored_queue, proxy, proxy_steerable

__all__ = [
    "Device",
    "Proxy",
    "ProxySteerable",
    "MonitoredQueue",
    "GreenDevice",
    "GreenProxy",
    "GreenProxySteerable",
    "GreenMonitoredQueue",
    "ThreadDevice",
    "ThreadProxy",
    "ThreadProxySteerable",
    "ThreadMonitoredQueue",
    "ProcessDevice",
    "ProcessProxy",
    "ProcessProxySteerable",
    "ProcessMonitoredQueue",
    "monitored_queue",
]

if TYPE_CHECKING:
    # For type checkers each mixin below is the pyzmq class it is mixed into (it calls
    # that class's methods and attributes); at run time they are plain mixins, which
    # come first in the bases of the classes that use them.
    _GreenMixinBase = _base.Device
    _ThreadMixinBase = _base.ThreadDevice
    _ProcessMixinBase = _base.ProcessDevice
else:
    _GreenMixinBase = _ThreadMixinBase = _ProcessMixinBase = object


class _GreenBackground(_GreenMixinBase):
    """Runs a pyzmq-style device in a greenlet of the caller's hub, on a green context.

    ``start()`` creates the sockets, applies the queued options, binds and
    connects them *before it returns* (errors such as EADDRINUSE raise there),
    then forwards in a new greenlet. ``join(timeout)`` waits for that greenlet,
    ``stop()`` kills it; either way the device closes its sockets once the
    device function has ended (and given them back).
    """

    _greenlet: Any = None
    if TYPE_CHECKING:
        # each Green* class calls its device function with the sockets _setup_sockets made
        _forward: Callable[..., None]

    def __init__(self, *args: Any, context: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._given_context = context

    def context_factory(self) -> Any:
        """The caller's context if one was given, else ``greenzmq.Context.instance()``."""
        return self._given_context if self._given_context is not None else Context.instance()

    def start(self) -> None:
        """Set the sockets up now, then forward in a new greenlet of this hub."""
        if self._greenlet is not None:
            raise RuntimeError("this device was already started")
        try:
            sockets = self._setup_sockets()
        except BaseException:
            self._close_sockets()
            raise
        self._greenlet = gevent.spawn(self._serve, sockets)

    def _serve(self, sockets: Any) -> None:
        try:
            self._forward(*sockets)
        except zmq.ZMQError as exc:
            if exc.errno not in (zmq.ETERM, zmq.ENOTSOCK):
                raise  # reported by the greenlet, as gevent reports any failure
        finally:
            self.done = True
            self._close_sockets()

    def run_device(self) -> None:
        """Set up and forward in the calling greenlet (pyzmq's foreground ``run``)."""
        self._forward(*self._setup_sockets())

    def join(self, timeout: float | None = None) -> None:
        """Wait (green) until the device ended, or ``timeout`` seconds passed."""
        if self._greenlet is None:
            raise RuntimeError("this device was not started")
        self._greenlet.join(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Stop forwarding and close the device's sockets; returns once it has ended.

        Messages still held by the device are dropped. Safe to call twice.
        With a ``timeout``, returns after that long even if libzmq's loop is
        still finishing a blocked send (a full destination nobody reads): the
        device's greenlet then closes the sockets when it ends.
        """
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=timeout)
            if self._greenlet.dead:
                # a greenlet killed before it first ran never reached its cleanup
                self.done = True
                self._close_sockets()

    @property
    def exception(self) -> BaseException | None:
        """What ended the device with an error (None while running or after a clean stop)."""
        return None if self._greenlet is None else self._greenlet.exception


class GreenDevice(_GreenBackground, _base.Device):
    """A QUEUE/FORWARDER/STREAMER device in a greenlet: pyzmq's ``Device`` API.

    ``GreenDevice(zmq.QUEUE, zmq.ROUTER, zmq.DEALER, context=ctx)``, then
    ``bind_in``, ``connect_out``, ``setsockopt_in``... and ``start()``. Its
    sockets belong to ``context`` (default ``greenzmq.Context.instance()``), so it
    serves ``inproc://`` endpoints of the caller's sockets.

    Green behaviour
    ---------------
    Forwards in the caller's hub; must be started, joined and stopped from the
    caller's thread.
    """

    def _forward(self, ins: Any, outs: Any) -> None:
        device(self.device_type, ins, outs)


class GreenProxy(_GreenBackground, _pxd.ProxyBase, _base.Device):
    """:func:`proxy` with a capture socket, in a greenlet; adds ``bind_mon``, ``connect_mon``...

    Green behaviour
    ---------------
    As :class:`GreenDevice`.
    """

    def _forward(self, ins: Any, outs: Any, mons: Any) -> None:
        proxy(ins, outs, mons)


class GreenProxySteerable(_GreenBackground, _psd.ProxySteerableBase, _pxd.ProxyBase, _base.Device):
    """:func:`proxy_steerable` in a greenlet; adds ``bind_ctrl``, ``connect_ctrl``...

    ``GreenProxySteerable(in_type, out_type, mon_type=zmq.PUB, ctrl_type=zmq.REP)``.

    Green behaviour
    ---------------
    As :class:`GreenDevice`. A TERMINATE command ends it cleanly.
    """

    def _forward(self, ins: Any, outs: Any, mons: Any, ctrls: Any) -> None:
        proxy_steerable(ins, outs, mons, ctrls)


class GreenMonitoredQueue(_GreenBackground, _mqd.MonitoredQueueBase, _pxd.ProxyBase, _base.Device):
    """:func:`monitored_queue` in a greenlet: ``(in_type, out_type, mon_type, in_prefix, out_prefix)``.

    Green behaviour
    ---------------
    As :class:`GreenDevice`.
    """

    def _forward(self, ins: Any, outs: Any, mons: Any) -> None:
        monitored_queue(ins, outs, mons, self._in_prefix, self._out_prefix)


class _NativeThread:
    """The part of :class:`threading.Thread` a background device uses, always on an OS thread.

    Under ``gevent.monkey.patch_all()`` a :class:`threading.Thread` is a
    greenlet, and libzmq's proxy in it would freeze the hub. This one is a
    :class:`greenzmq._native.NativeThread` (unpatched ``_thread``), so
    ``join`` blocks only the calling greenlet. A failure is printed on stderr
    by ``sys.excepthook`` (as a thread's would be) and kept in ``exception``.
    """

    def __init__(self, target: Any) -> None:
        self._target = target
        self.daemon = True  # an OS thread of _thread never blocks interpreter exit
        self.exception: BaseException | None = None
        self._thread: NativeThread | None = None

    def start(self) -> None:
        self._thread = NativeThread(self._run, name=getattr(self._target, "__qualname__", "device")).start()

    def _run(self) -> None:
        try:
            self._target()
        except BaseException as exc:
            self.exception = exc
            sys.excepthook(type(exc), exc, exc.__traceback__)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and not self._thread.done


class _ThreadBackground(_ThreadMixinBase):
    """pyzmq's thread devices (libzmq's own proxy in an OS thread), with green join and stop.

    Each device owns a private plain context (default LINGER 0: a stopped
    device drops what it still holds; override with ``setsockopt_in/out``).
    ``stop()`` terminates that context, which makes libzmq's proxy return.
    """

    _own_context: Any = None
    # Thread's stand-in, not a Thread: typed Any, as pyzmq's BackgroundDevice declares it
    _launch_class: Any = _NativeThread

    def context_factory(self) -> Any:
        return self._own_context

    def start(self) -> None:
        """Start the OS thread; sockets are created, bound and connected there."""
        if self._own_context is not None:
            raise RuntimeError("this device was already started")
        self._own_context = zmq.Context()
        self._own_context.setsockopt(zmq.LINGER, 0)
        super().start()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the thread ended or ``timeout`` passed, blocking only this greenlet."""
        if self.launcher is None:
            raise RuntimeError("this device was not started")
        self.launcher.join(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Terminate the device's context (green) and join the thread."""
        if self._own_context is None:
            return
        run_native(self._own_context.term)
        self.join(timeout)


class _ProcessBackground(_ProcessMixinBase):
    """pyzmq's process devices, with a green ``join`` and a ``stop`` (SIGTERM)."""

    def join(self, timeout: float | None = None) -> None:
        """Wait until the process exited or ``timeout`` passed, blocking only this greenlet.

        The device's failure shows as the process's non-zero ``launcher.exitcode``.
        """
        if self.launcher is None:
            raise RuntimeError("this device was not started")
        # multiprocessing's join blocks its thread: run it in a native thread of its own
        run_native(self.launcher.join, timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Terminate the process (SIGTERM) and join it."""
        if self.launcher is not None and self.launcher.exitcode is None:
            self.launcher.terminate()
            self.join(timeout)


class ThreadDevice(_ThreadBackground, _base.ThreadDevice):
    """pyzmq's :class:`zmq.devices.ThreadDevice` with green ``join`` and ``stop``."""


class ThreadProxy(_ThreadBackground, _pxd.ThreadProxy):
    """pyzmq's :class:`zmq.devices.ThreadProxy` with green ``join`` and ``stop``."""


class ThreadProxySteerable(_ThreadBackground, _psd.ThreadProxySteerable):
    """pyzmq's :class:`zmq.devices.ThreadProxySteerable` with green ``join`` and ``stop``.

    Commands are handled by the installed libzmq's own zmq_proxy_steerable.
    """


class ThreadMonitoredQueue(_ThreadBackground, _mqd.ThreadMonitoredQueue):
    """pyzmq's :class:`zmq.devices.ThreadMonitoredQueue` with green ``join`` and ``stop``."""


class ProcessDevice(_ProcessBackground, _base.ProcessDevice):
    """pyzmq's :class:`zmq.devices.ProcessDevice` with green ``join`` and ``stop``."""


class ProcessProxy(_ProcessBackground, _pxd.ProcessProxy):
    """pyzmq's :class:`zmq.devices.ProcessProxy` with green ``join`` and ``stop``."""


class ProcessProxySteerable(_ProcessBackground, _psd.ProcessProxySteerable):
    """pyzmq's :class:`zmq.devices.ProcessProxySteerable` with green ``join`` and ``stop``."""


class ProcessMonitoredQueue(_ProcessBackground, _mqd.ProcessMonitoredQueue):
    """pyzmq's :class:`zmq.devices.ProcessMonitoredQueue` with green ``join`` and ``stop``."""


Device = GreenDevice
Proxy = GreenProxy
ProxySteerable = GreenProxySteerable
MonitoredQueue = GreenMonitoredQueue
