"""The pyzmq tests that the Green classes skip, or that we deselect only for
zmq.green's name, re-run on greenzmq.

pyzmq's ``*Green`` classes skip ``test_bad_attr`` and
``test_close_after_destroy`` unconditionally, and the ``GreenTest`` mixin skips
any test at its first ``assertRaisesErrno(zmq.EAGAIN, ...)`` (test_topic).
``test_repr`` is deselected from TestSocketGreen because it expects the name
``zmq.green.Socket``. Here those exact pyzmq test functions run on greenzmq's
Context under pyzmq's plain (non-green) harness, which does check EAGAIN, with
greenzmq's repr name.

The runner copies this file into the unpacked sdist's tests/ directory and runs
it there, with pyzmq's conftest.py and zmq_test_utils.py.
"""

# Modules, not classes: pytest collects every unittest.TestCase subclass bound
# to a module-level name, whatever the name, so a TestSocket here would run
# pyzmq's whole class (on zmq.Context) again.
import test_pubsub as pyzmq_test_pubsub
import test_socket as pyzmq_test_socket
from zmq_test_utils import BaseZMQTestCase

import greenzmq


class TestSocketGreenzmqSkipped(BaseZMQTestCase):
    """pyzmq's TestSocket tests that TestSocketGreen skips or we deselect, on greenzmq."""

    _repr_cls = "greenzmq.Socket"

    @property
    def Context(self):
        return greenzmq.Context

    test_bad_attr = pyzmq_test_socket.TestSocket.test_bad_attr
    test_close_after_destroy = pyzmq_test_socket.TestSocket.test_close_after_destroy
    test_repr = pyzmq_test_socket.TestSocket.test_repr


class TestPubSubGreenzmqSkipped(BaseZMQTestCase):
    """pyzmq's TestPubSub.test_topic, which GreenTest skips at its EAGAIN check, on greenzmq."""

    @property
    def Context(self):
        return greenzmq.Context

    test_topic = pyzmq_test_pubsub.TestPubSub.test_topic
