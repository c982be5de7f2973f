"""`import greenzmq as zmq` is a drop-in: every public name of pyzmq, green where it blocks."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import zmq as plainzmq

import greenzmq


def test_every_public_name_of_pyzmq_is_here():
    missing = [name for name in plainzmq.__all__ if not hasattr(greenzmq, name)]
    assert missing == []
    assert set(plainzmq.__all__) <= set(greenzmq.__all__)
    for name in greenzmq.__all__:
        assert hasattr(greenzmq, name), name


def test_blocking_names_are_green():
    from greenzmq import context, poll, socket

    # greenzmq.device is the module of the device functions, callable as zmq.device is
    device = importlib.import_module("greenzmq.device")

    assert greenzmq.Context is context.Context and issubclass(greenzmq.Context, plainzmq.Context)
    assert greenzmq.Socket is socket.Socket and issubclass(greenzmq.Socket, plainzmq.Socket)
    assert greenzmq.Poller is poll.Poller and issubclass(greenzmq.Poller, plainzmq.Poller)
    assert greenzmq.select is poll.select and greenzmq.zmq_poll is poll.zmq_poll
    assert greenzmq.zmq_poll is not plainzmq.zmq_poll
    assert greenzmq.SyncContext is greenzmq.Context and greenzmq.SyncSocket is greenzmq.Socket
    assert greenzmq.device is device and callable(device) and device.device is not plainzmq.device
    for name in ("proxy", "proxy_steerable"):
        assert getattr(greenzmq, name) is getattr(device, name) is not getattr(plainzmq, name)


def test_errors_constants_and_helpers_are_pyzmqs():
    assert greenzmq.ZMQError is plainzmq.ZMQError
    assert greenzmq.Again is plainzmq.Again
    assert greenzmq.ContextTerminated is plainzmq.ContextTerminated
    assert greenzmq.NotDone is plainzmq.NotDone
    assert greenzmq.error.ZMQError is plainzmq.error.ZMQError
    assert greenzmq.Frame is plainzmq.Frame
    # the green MessageTracker: wait() blocks only the greenlet
    assert issubclass(greenzmq.MessageTracker, plainzmq.MessageTracker)
    assert greenzmq.MessageTracker is not plainzmq.MessageTracker
    assert greenzmq.PUSH == plainzmq.PUSH and greenzmq.EVENTS == plainzmq.EVENTS
    assert greenzmq.has("curve") == plainzmq.has("curve")
    assert greenzmq.zmq_version_info() == plainzmq.zmq_version_info()
    assert greenzmq.__version__ == plainzmq.__version__
    public, secret = greenzmq.curve_keypair()
    assert len(public) == len(secret) == 40


def test_greenzmq_submodules_win_over_pyzmqs():
    import zmq.auth  # noqa: F401  (pyzmq's, imported first)

    code = "import zmq.auth, greenzmq; print(greenzmq.auth.__name__, greenzmq.eventloop.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["greenzmq.auth", "greenzmq.eventloop"], out.stderr


def test_devices_module_is_green():
    import zmq.devices

    from greenzmq import devices

    assert set(zmq.devices.__all__) <= set(devices.__all__)
    assert devices.Proxy is devices.GreenProxy


def test_pyzmq_submodules_reachable():
    assert greenzmq.utils is plainzmq.utils
    assert greenzmq.constants is plainzmq.constants
    assert greenzmq.constants.SocketType.PUSH == greenzmq.PUSH


_ALL_CHECK = """
import importlib, pkgutil, sys
import greenzmq
bad = []
for info in pkgutil.walk_packages(greenzmq.__path__, "greenzmq."):
    if info.name.rsplit(".", 1)[-1].startswith("_"):
        continue
    module = importlib.import_module(info.name)
    names = getattr(module, "__all__", None)
    if names is None:
        bad.append(info.name + ": no __all__")
        continue
    bad.extend(f"{info.name}.__all__: {n} missing" for n in names if not hasattr(module, n))
print("\\n".join(bad))
sys.exit(1 if bad else 0)
"""


def test_every_public_module_declares_all():
    # in a subprocess: some modules import locust, which monkey-patches the process
    out = subprocess.run([sys.executable, "-c", _ALL_CHECK], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_py_typed_ships():
    assert (Path(greenzmq.__file__).parent / "py.typed").exists()


def test_one_version_source():
    """greenzmq's version is written once (greenzmq/_version.py): the package
    exports it and the installed distribution's metadata carries the same."""
    from importlib.metadata import version

    from greenzmq._version import VERSION

    assert greenzmq.greenzmq_version == VERSION
    assert version("greenzmq") == VERSION
