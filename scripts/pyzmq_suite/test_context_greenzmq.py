"""pyzmq's TestContext re-run on greenzmq's Context.

pyzmq disables its own green variant of these tests (``if False:`` around
``TestContextGreen`` in tests/test_context.py): zmq.green's Context cannot pass
them. greenzmq claims to be a drop-in Context, so we run the whole class on it,
in the spirit of that disabled class: the ``GreenTest`` mixin (green teardown:
close every socket, then ``term()`` the contexts from greenlets with a timeout),
with greenzmq's Context and its repr. Unlike the disabled class, nothing is
skipped here for using real threads: greenzmq supports several OS threads
sharing one Context, so the thread tests (test_gc, test_term_thread,
test_term_noclose, test_instance_threadsafe) must pass too. Whatever must not
run is deselected explicitly in deselect.py, with its reason.

The runner copies this file into the unpacked sdist's tests/ directory, next to
pyzmq's conftest.py, zmq_test_utils.py and test_context.py, and runs it there.
"""

# pyzmq's module (found through pytest.ini's ``pythonpath = tests``). Imported
# as a module, not ``from test_context import TestContext``: a TestContext name
# in this module's namespace would make pytest collect pyzmq's original class
# (on zmq.Context) here a second time.
import test_context as pyzmq_test_context
from zmq_test_utils import GreenTest

import greenzmq


class TestContextGreenzmq(GreenTest, pyzmq_test_context.TestContext):
    """Every test of pyzmq's TestContext, on :class:`greenzmq.Context`."""

    # repr(greenzmq.Context()) is '<greenzmq.Context(...) at 0x...>'
    _repr_cls = "greenzmq.Context"

    @property
    def Context(self):
        # explicit, so this class tests greenzmq whether or not zmq.green is
        # greenzmq in this process (sitecustomize.py makes it so)
        return greenzmq.Context
