"""`import greenzmq as zmq` is a drop-in: every public name of pyzmq, green where it blocks."""

from __future__ import annotations

import importlib
import pkgutil
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

    # greenzmq.device is the function (as zmq.device is); the module is in sys.modules
    device = importlib.import_module("greenzmq.device")

    assert greenzmq.Context is context.Context and issubclass(greenzmq.Context, plainzmq.Context)
    assert greenzmq.Socket is socket.Socket and issubclass(greenzmq.Socket, plainzmq.Socket)
    assert greenzmq.Poller is poll.Poller and issubclass(greenzmq.Poller, plainzmq.Poller)
    assert greenzmq.select is poll.select
    assert greenzmq.SyncContext is greenzmq.Context and greenzmq.SyncSocket is greenzmq.Socket
    for name in ("device", "proxy", "proxy_steerable"):
        assert getattr(greenzmq, name) is getattr(device, name) is not getattr(plainzmq, name)


def test_errors_constants_and_helpers_are_pyzmqs():
    assert greenzmq.ZMQError is plainzmq.ZMQError
    assert greenzmq.Again is plainzmq.Again
    assert greenzmq.ContextTerminated is plainzmq.ContextTerminated
    assert greenzmq.NotDone is plainzmq.NotDone
    assert greenzmq.error.ZMQError is plainzmq.error.ZMQError
    assert greenzmq.Frame is plainzmq.Frame and greenzmq.MessageTracker is plainzmq.MessageTracker
    assert greenzmq.PUSH == plainzmq.PUSH and greenzmq.EVENTS == plainzmq.EVENTS
    assert greenzmq.has("curve") == plainzmq.has("curve")
    assert greenzmq.zmq_version_info() == plainzmq.zmq_version_info()
    assert greenzmq.__version__ == plainzmq.__version__
    assert isinstance(greenzmq.greenzmq_version, str)
    public, secret = greenzmq.curve_keypair()
    assert len(public) == len(secret) == 40


def test_pyzmq_submodules_reachable():
    assert greenzmq.utils is plainzmq.utils
    assert greenzmq.constants is plainzmq.constants
    assert greenzmq.constants.SocketType.PUSH == greenzmq.PUSH


def test_every_public_module_declares_all():
    for info in pkgutil.walk_packages(greenzmq.__path__, "greenzmq."):
        leaf = info.name.rsplit(".", 1)[-1]
        if leaf.startswith("_"):
            continue
        module = importlib.import_module(info.name)
        assert hasattr(module, "__all__"), f"{info.name} has no __all__"
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.__all__ names missing {name}"


def test_py_typed_ships():
    assert (Path(greenzmq.__file__).parent / "py.typed").exists()
