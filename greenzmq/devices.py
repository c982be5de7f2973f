"""``greenzmq.devices``: the green twin of :mod:`zmq.devices`.

Code written against ``zmq.devices`` ports by changing the import. The names
pyzmq gives its base classes (``Device``, ``Proxy``, ``ProxySteerable``,
``MonitoredQueue``) are the green background devices here: they run in a
greenlet on the caller's context (so they can serve its ``inproc://``
endpoints). ``Thread*`` devices run libzmq's own proxy in a real OS thread
(even under monkey-patching) and ``Process*`` devices in a subprocess. See
:mod:`greenzmq.device` for the contracts.
"""

from __future__ import annotations

from greenzmq.device import (
    GreenDevice,
    GreenMonitoredQueue,
    GreenProxy,
    GreenProxySteerable,
    ProcessDevice,
    ProcessMonitoredQueue,
    ProcessProxy,
    ProcessProxySteerable,
    ThreadDevice,
    ThreadMonitoredQueue,
    ThreadProxy,
    ThreadProxySteerable,
    monitored_queue,
)

Device = GreenDevice
Proxy = GreenProxy
ProxySteerable = GreenProxySteerable
MonitoredQueue = GreenMonitoredQueue

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
