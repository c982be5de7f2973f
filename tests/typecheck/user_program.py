"""An ordinary pyzmq program, written for greenzmq: ``import greenzmq as zmq``.

tests/test_typing.py type-checks it with ``mypy --strict`` twice, as written and
with the import line rewritten to ``import zmq``, and asserts that both pass and
that mypy says the same thing about every line (each ``reveal_type``), greenzmq's
classes standing for pyzmq's. It also runs (under greenzmq): the types it
reveals are those of a program that works.

Only the import line may name greenzmq. Not collected by pytest (no ``test_``
prefix): it is a program, run by tests/test_typing.py.
"""

from __future__ import annotations

import sys
from typing import Any

import gevent
from typing_extensions import reveal_type

import greenzmq as zmq


class MySocket(zmq.Socket[bytes]):
    """A socket subclass, made by MyContext."""

    def send_hello(self) -> None:
        self.send(b"hello")


class MyContext(zmq.Context[MySocket]):
    _socket_class = MySocket


def pair(ctx: zmq.SyncContext, kind: int = zmq.PAIR) -> tuple[zmq.SyncSocket, zmq.SyncSocket]:
    """Two connected sockets over tcp (so copy=False frames really are zero-copy)."""
    a = ctx.socket(kind)
    port = a.bind_to_random_port("tcp://127.0.0.1")
    reveal_type(port)
    b = ctx.socket(kind)
    b.connect(f"tcp://127.0.0.1:{port}")
    return a, b


def messages(ctx: zmq.SyncContext) -> None:
    a, b = pair(ctx)
    reveal_type(a)
    reveal_type(a.send(b"bytes"))
    reveal_type(b.recv())
    a.send(b"bytes", 0, True)
    reveal_type(b.recv(0, True))
    a.send_string("text")
    reveal_type(b.recv_string())
    a.send_json({"k": [1, 2]})
    reveal_type(b.recv_json())
    a.send_pyobj({"any": object.__name__})
    reveal_type(b.recv_pyobj())
    a.send_multipart([b"one", b"two", memoryview(b"three")])
    reveal_type(b.recv_multipart())
    a.send_serialized([1, 2], lambda obj: [repr(obj).encode()])
    reveal_type(b.recv_serialized(lambda frames: frames[0].decode()))

    # zero-copy: Frames and trackers
    tracker = a.send(b"x" * 100_000, copy=False, track=True)
    reveal_type(tracker)
    frame = b.recv(copy=False)
    reveal_type(frame)
    reveal_type(frame.bytes)
    reveal_type(frame.buffer)
    reveal_type(frame.more)
    del frame
    tracker.wait(5)
    reveal_type(tracker.done)
    reveal_type(a.send(zmq.Frame(b"frame")))
    reveal_type(b.recv(0, False))
    reveal_type(a.send_multipart([b"a", b"b"], copy=False, track=True))
    reveal_type(b.recv_multipart(copy=False))
    a.send_multipart([b"c", b"d"])
    reveal_type(b.recv_multipart(0, False))
    buffer = bytearray(10)
    a.send(b"into")
    reveal_type(b.recv_into(buffer))
    a.close()
    b.close()


def options_and_errors(ctx: zmq.SyncContext) -> None:
    with ctx.socket(zmq.PULL) as pull:
        reveal_type(pull)
        pull.rcvtimeo = 50
        pull.setsockopt(zmq.LINGER, 0)
        pull.set(zmq.RCVHWM, 10)
        reveal_type(pull.getsockopt(zmq.RCVTIMEO))
        reveal_type(pull.get(zmq.TYPE))
        reveal_type(pull.rcvtimeo)
        reveal_type(pull.closed)
        reveal_type(pull.poll(10))
        reveal_type(pull.context)
        try:
            pull.recv()
        except zmq.Again as exc:
            reveal_type(exc)
            reveal_type(exc.errno)
        try:
            pull.recv(zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            reveal_type(exc.strerror)
            assert exc.errno == zmq.EAGAIN
    try:
        pull.recv()
    except zmq.ContextTerminated:
        raise
    except zmq.ZMQError as exc:
        assert exc.errno == zmq.ENOTSOCK


def polling(ctx: zmq.SyncContext) -> None:
    a, b = pair(ctx)
    poller = zmq.Poller()
    reveal_type(poller)
    poller.register(b, zmq.POLLIN)
    a.send(b"ready")
    events = dict(poller.poll(1000))
    reveal_type(poller.poll(0))
    reveal_type(events)
    assert events.get(b) == zmq.POLLIN
    reveal_type(zmq.select([b], [a], [], 1.0))
    reveal_type(zmq.zmq_poll([(b, zmq.POLLIN)], 1000))
    reveal_type(zmq.zmq_poll([(sys.stdin.fileno(), zmq.POLLIN)], 0))
    b.recv()
    a.close()
    b.close()


def forward(frontend: zmq.Socket[Any], backend: zmq.Socket[Any]) -> None:
    rc = zmq.proxy(frontend, backend)
    reveal_type(rc)


def forward_queue(frontend: zmq.Socket[Any], backend: zmq.Socket[Any]) -> None:
    reveal_type(zmq.device(zmq.QUEUE, frontend, backend))


def forward_steerable(frontend: zmq.Socket[Any], backend: zmq.Socket[Any], control: zmq.Socket[Any]) -> int:
    return zmq.proxy_steerable(frontend, backend, None, control)


def devices(ctx: zmq.SyncContext) -> None:
    for run in (forward, forward_queue):
        front_in, front = pair(ctx, zmq.PAIR)
        back, back_out = pair(ctx, zmq.PAIR)
        glet = gevent.spawn(run, front, back)
        front_in.send(b"through the device")
        assert back_out.recv() == b"through the device"
        glet.kill()
        for s in (front_in, front, back, back_out):
            s.close()


def contexts() -> None:
    ctx = zmq.Context()
    reveal_type(ctx)
    reveal_type(ctx.socket(zmq.REQ))
    reveal_type(zmq.Context.instance())
    mine = MyContext()
    reveal_type(mine)
    s = mine.socket(zmq.PAIR)
    reveal_type(s)
    reveal_type(s.send_hello)
    s.close()
    mine.term()
    plain = zmq.Socket(ctx, zmq.PUB)
    reveal_type(plain)
    reveal_type(zmq.Socket(shadow=plain.underlying))
    reveal_type(zmq.Socket.shadow(plain.underlying))
    plain.close()
    ctx.destroy(linger=0)


def constants_and_helpers() -> None:
    reveal_type(zmq.PUSH)
    reveal_type(zmq.POLLIN)
    reveal_type(zmq.RCVTIMEO)
    reveal_type(zmq.QUEUE)
    reveal_type(zmq.EAGAIN)
    reveal_type(zmq.has("curve"))
    reveal_type(zmq.zmq_version_info())
    reveal_type(zmq.pyzmq_version())
    reveal_type(zmq.curve_keypair())
    reveal_type(zmq.COPY_THRESHOLD)
    reveal_type(zmq.__version__)
    reveal_type(zmq.MessageTracker)
    reveal_type(zmq.Frame)


def main() -> None:
    with zmq.Context() as ctx:
        reveal_type(ctx)
        ctx.linger = 0
        messages(ctx)
        options_and_errors(ctx)
        polling(ctx)
        devices(ctx)
    contexts()
    constants_and_helpers()


if __name__ == "__main__":
    main()
