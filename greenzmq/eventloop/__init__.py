"""A gevent-native event loop: :class:`IOLoop`, :class:`PeriodicCallback`, :class:`ZMQStream`.

The loop is the gevent hub of the calling thread (no tornado, no asyncio, no
second loop), with the API of tornado's ``IOLoop`` and pyzmq's ``ZMQStream``,
so callback-style pyzmq code ports by changing its imports::

    from greenzmq.eventloop import IOLoop, ZMQStream

See ``docs/eventloop.md``.
"""

from __future__ import annotations

from greenzmq.eventloop.ioloop import IOLoop, TimeoutHandle
from greenzmq.eventloop.periodic import PeriodicCallback
from greenzmq.eventloop.zmqstream import ZMQStream

__all__ = ["IOLoop", "PeriodicCallback", "TimeoutHandle", "ZMQStream"]
