"""What the pyzmq suite run does not count, and why. docs/pyzmq-suite.md mirrors both lists.

Node ids are relative to the unpacked sdist's root (the runner's working
directory), as pytest prints them.

DESELECT: tests the runner removes before they run. Only tests whose assertion
does not apply to greenzmq by design belong here; a test that fails because
greenzmq behaves differently from pyzmq where it should not is a bug, and stays
selected until greenzmq is fixed. An entry that names no collected test (pyzmq
renamed or removed it) fails the run, so this list cannot go stale unnoticed.

PYZMQ_SKIPS: tests that pyzmq's own code skips when run this way. The runner
fails on any skip that is not listed here, so a skip cannot hide a failure (for
example every Green test skipping because gevent or zmq.green failed to
import). A listed test that runs instead is reported, not failed.
"""

DESELECT = {
    "tests/test_socket.py::TestSocketGreen::test_repr": (
        "asserts the repr names zmq.green's class, 'zmq.green.Socket(zmq.PUSH)'; greenzmq's socket "
        "is '<greenzmq.Socket(zmq.PUSH) at 0x...>' ('... closed>' once closed). The same test with "
        "greenzmq's name runs in test_skipped_greenzmq.py::TestSocketGreenzmqSkipped."
    ),
    "tests/test_socket.py::TestSocketGreen::test_warn_set_timeo": (
        "asserts that setting RCVTIMEO on a zmq.green socket warns (UserWarning) that the timeout "
        "is ignored; greenzmq honours RCVTIMEO/SNDTIMEO (a timed-out recv/send raises zmq.Again), "
        "so it correctly does not warn. greenzmq's own tests cover the timeouts."
    ),
    "tests/test_socket.py::TestSocketGreen::test_warn_get_timeo": (
        "asserts that reading SNDTIMEO on a zmq.green socket warns (UserWarning) that the timeout "
        "is ignored; greenzmq honours RCVTIMEO/SNDTIMEO, so it correctly does not warn."
    ),
}

PYZMQ_SKIPS = {
    "tests/test_socket.py::TestSocketGreen::test_bad_attr": (
        "pyzmq's TestSocketGreen skips it unconditionally (test_bad_attr = GreenTest.skip_green), a "
        "historical skip. Re-run on greenzmq by test_skipped_greenzmq.py::TestSocketGreenzmqSkipped."
    ),
    "tests/test_socket.py::TestSocketGreen::test_close_after_destroy": (
        "pyzmq's TestSocketGreen skips it unconditionally (GreenTest.skip_green). Re-run on greenzmq "
        "by test_skipped_greenzmq.py::TestSocketGreenzmqSkipped."
    ),
    "tests/test_socket.py::TestSocketGreen::test_shadow_pyczmq": (
        "needs pyczmq (an unmaintained czmq binding that the runner does not install); pyzmq skips "
        "it for plain zmq too."
    ),
    "tests/test_pubsub.py::TestPubSubGreen::test_topic": (
        "GreenTest.assertRaisesErrno skips a test at its first check for EAGAIN (here: recv(NOBLOCK) "
        "of a message the SUB filters out). Re-run on greenzmq, EAGAIN check included, by "
        "test_skipped_greenzmq.py::TestPubSubGreenzmqSkipped."
    ),
    "tests/test_context_greenzmq.py::TestContextGreenzmq::test_shadow_pyczmq": ("needs pyczmq, as above."),
}
