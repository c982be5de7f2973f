"""One contract, two implementations: plain pyzmq (the reference) and greenzmq.

Each test runs on both modules; greenzmq must behave exactly like pyzmq for
everything that does not block.
"""

from __future__ import annotations

import pytest
import zmq as plainzmq

import greenzmq


@pytest.fixture(params=[plainzmq, greenzmq], ids=["pyzmq", "greenzmq"])
def mod(request):
    return request.param


@pytest.fixture
def pair(mod):
    ctx = mod.Context()
    a, b = ctx.socket(mod.PAIR), ctx.socket(mod.PAIR)
    a.linger = b.linger = 0
    addr = f"inproc://contract-{mod.__name__}"
    a.bind(addr)
    b.connect(addr)
    yield a, b
    a.close()
    b.close()
    ctx.term()


def test_round_trips_every_serializer(mod, pair):
    a, b = pair
    a.send(b"raw")
    assert b.recv() == b"raw"
    a.send_string("snowman \u2603")
    assert b.recv_string() == "snowman \u2603"
    a.send_json({"k": [1, 2]})
    assert b.recv_json() == {"k": [1, 2]}
    a.send_pyobj({1, 2})
    assert b.recv_pyobj() == {1, 2}
    a.send_multipart([b"x", memoryview(b"y"), bytearray(b"z")])
    assert b.recv_multipart() == [b"x", b"y", b"z"]
    a.send(b"frame", copy=False)
    frame = b.recv(copy=False)
    assert isinstance(frame, mod.Frame) and frame.bytes == b"frame"
    buf = bytearray(3)
    a.send(b"truncate-me")
    assert b.recv_into(buf) == len(b"truncate-me") and bytes(buf) == b"tru"
    a.send_serialized([1, 2], lambda v: [bytes(v)])
    assert b.recv_serialized(lambda frames: list(frames[0])) == [1, 2]


def test_tracked_zero_copy_send(mod, pair):
    a, b = pair
    tracker = a.send(b"x" * 100_000, copy=False, track=True)
    assert isinstance(tracker, mod.MessageTracker)
    assert b.recv() == b"x" * 100_000


def test_nonblocking_errors(mod, pair):
    a, b = pair
    with pytest.raises(mod.Again):
        b.recv(mod.NOBLOCK)
    b.rcvtimeo = 0
    with pytest.raises(mod.Again):
        b.recv()


def test_req_state_machine_error(mod):
    ctx = mod.Context()
    req = ctx.socket(mod.REQ)
    try:
        with pytest.raises(mod.ZMQError) as info:
            req.recv()
        assert info.value.errno == mod.EFSM
    finally:
        req.close(linger=0)
        ctx.term()


def test_bad_input(mod, pair):
    a, b = pair
    with pytest.raises(TypeError):
        a.send("str")
    with pytest.raises(TypeError):
        a.send_multipart([b"ok", 3])
    a.send(b"still fine")
    assert b.recv() == b"still fine"


def test_closed_socket(mod, pair):
    a, b = pair
    a.close()
    assert a.closed
    with pytest.raises(mod.ZMQError) as info:
        a.send(b"x")
    assert info.value.errno == mod.ENOTSOCK


def test_poller_results(mod, pair):
    a, b = pair
    p = mod.Poller()
    p.register(b, mod.POLLIN | mod.POLLOUT)
    assert p.poll(0) == [(b, mod.POLLOUT)]
    a.send(b"x")
    assert p.poll(1000) == [(b, mod.POLLIN | mod.POLLOUT)]
    assert mod.select([b], [], [], 0) == ([b], [], [])


def test_socket_options_as_attributes(mod, pair):
    a, _ = pair
    a.sndhwm = 42
    assert a.sndhwm == 42 == a.getsockopt(mod.SNDHWM) == a.get(mod.SNDHWM)
    assert a.type == mod.PAIR
    assert a.events & mod.POLLOUT


def test_terminated_context(mod):
    ctx = mod.Context()
    s = ctx.socket(mod.PULL)
    s.close()
    ctx.term()
    assert ctx.closed
    with pytest.raises(mod.ZMQError):
        ctx.socket(mod.PULL)
