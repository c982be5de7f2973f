"""The green Context: its sockets, its singleton, and term/destroy that never freeze the hub."""

from __future__ import annotations

import textwrap
import threading
import time

import gevent
import pytest
import zmq as plainzmq
from conftest import (
    HUB_STALL_BOUND,
    TERM_BOUND,
    WAKE_BOUND,
    connected_pair,
    hub_ticker,
    inproc_endpoint,
    run_script,
    wait_parked,
)

import greenzmq as zmq


def test_makes_green_sockets_and_names_itself(ctx):
    s = ctx.socket(zmq.PUSH)
    assert type(s) is zmq.Socket
    assert repr(s).startswith("<greenzmq.Socket(zmq.PUSH)")
    assert repr(ctx).startswith("<greenzmq.Context(")
    plain = ctx.socket(zmq.PUSH, socket_class=plainzmq.Socket)
    assert type(plain) is plainzmq.Socket


def test_instance_is_greenzmqs_own_singleton():
    g1 = zmq.Context.instance()
    g2 = zmq.Context.instance()
    p = plainzmq.Context.instance()
    try:
        assert g1 is g2
        assert isinstance(g1, zmq.Context)
        assert p is not g1 and type(p) is plainzmq.Context
    finally:
        g1.term()
    g3 = zmq.Context.instance()
    assert g3 is not g1 and not g3.closed
    g3.term()


def test_default_socket_options(ctx):
    ctx.linger = 0
    ctx.sndhwm = 7
    s = ctx.socket(zmq.PUSH)
    assert s.linger == 0
    assert s.getsockopt(zmq.SNDHWM) == 7
    s.rcvhwm = 3
    assert s.rcvhwm == 3
    with pytest.raises(AttributeError):
        s.no_such_option = 1


def test_bind_to_random_port_and_monitor_socket(ctx):
    s = ctx.socket(zmq.ROUTER)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    mon = s.get_monitor_socket()
    assert isinstance(mon, zmq.Socket)
    c = ctx.socket(zmq.DEALER)
    c.connect(f"tcp://127.0.0.1:{port}")
    from zmq.utils.monitor import recv_monitor_message

    mon.rcvtimeo = 5000
    events = set()
    while zmq.EVENT_ACCEPTED not in events:
        events.add(recv_monitor_message(mon)["event"])
    s.disable_monitor()


@pytest.mark.timeout(30)
def test_term_wakes_blocked_greenlets_without_freezing_the_hub(spawn):
    ctx = zmq.Context()
    socks = [ctx.socket(zmq.PULL) for _ in range(50)]
    for s in socks:
        s.bind_to_random_port("tcp://127.0.0.1")
    sender = ctx.socket(zmq.PUSH)
    sender.bind_to_random_port("tcp://127.0.0.1")  # no peer: send blocks
    woke = []

    def blocked(sock, op):
        try:
            op()
        except zmq.ContextTerminated:
            woke.append(time.monotonic())
            sock.close()

    for s in socks:
        spawn(blocked, s, s.recv)
    spawn(blocked, sender, lambda: sender.send(b"x"))
    for s in socks:
        wait_parked(s)
    wait_parked(sender, "writers")
    sender.linger = 0
    with hub_ticker() as ticker:
        t0 = time.monotonic()
        terminator = spawn(ctx.term)
        terminator.get(timeout=10)
    assert ctx.closed
    assert len(woke) == 51
    assert max(woke) - t0 < WAKE_BOUND
    assert ticker.max_gap < HUB_STALL_BOUND, "the hub froze during term()"


@pytest.mark.timeout(30)
def test_destroy_wakes_waiters_with_context_terminated(spawn):
    ctx = zmq.Context()
    socks = [ctx.socket(zmq.PULL) for _ in range(20)]
    for s in socks:
        s.bind_to_random_port("tcp://127.0.0.1")
    errors = []

    def blocked(sock):
        try:
            sock.recv()
        except zmq.ZMQError as e:
            errors.append(e)

    glets = [spawn(blocked, s) for s in socks]
    for s in socks:
        wait_parked(s)
    ctx.destroy(linger=0)
    gevent.joinall(glets, timeout=WAKE_BOUND)
    assert len(errors) == 20
    assert all(isinstance(e, zmq.ContextTerminated) for e in errors)
    assert all(s.closed for s in socks)


def test_destroy_closes_a_socket_whose_thread_ended_with_a_greenlet_parked_on_it():
    """gevent does not join a thread's greenlets when the thread ends: one may
    be left parked in recv. Nothing can serve it any more, so its socket is
    nobody's, and destroy() from another thread closes it there and then.
    (It handed the close to the ended thread's hub and waited forever.)"""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.bind(inproc_endpoint())
    parked = []

    def leave_a_greenlet_parked():
        gevent.spawn(sock.recv)
        wait_parked(sock)  # in this thread's hub; the thread then ends
        parked.append(len(sock._waiters.readers))

    t = threading.Thread(target=leave_a_greenlet_parked)
    t.start()
    t.join(TERM_BOUND)
    assert parked == [1] and not t.is_alive()
    with gevent.Timeout(TERM_BOUND, AssertionError("destroy() waited for the ended thread")):
        ctx.destroy(linger=0)
    assert sock.closed and ctx.closed


def test_term_closed_context_is_a_no_op():
    ctx = zmq.Context()
    ctx.term()
    ctx.term()
    ctx.destroy()


#: term() interrupted (a kill, a gevent.Timeout) while libzmq's zmq_ctx_term
#: waits for an open socket, then term() again: retried once the socket is
#: closed, or overlapping the first while it still waits. Every term() must
#: return with the context terminated, and libzmq's zmq_ctx_term (counted at
#: greenzmq's call of it) run once: a second one on the same context aborts
#: libzmq, fails with EFAULT or hangs. Prints "<ctx.closed> <zmq_ctx_term calls>".
_TERM_AGAIN_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import gevent
    import greenzmq as zmq
    import greenzmq.context
    from conftest import run_until_blocked, wait_parked
    BOUND = 10.0
    calls = []
    real_term = greenzmq.context._raw_term
    def counted_term(context):
        calls.append(context)
        return real_term(context)
    greenzmq.context._raw_term = counted_term
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    def read():
        try:
            sock.recv()
        except zmq.ContextTerminated:
            return 'woken'
    reader = gevent.spawn(read)
    wait_parked(sock)
    first = gevent.spawn(ctx.term)
    assert reader.get(timeout=BOUND) == 'woken'  # zmq_ctx_term has begun
    first.kill(timeout=BOUND)  # interrupted: its zmq_ctx_term still waits for sock
    if sys.argv[1] == 'retried':
        sock.close()
        with gevent.Timeout(BOUND):
            ctx.term()
    else:  # overlapping
        second = gevent.spawn(ctx.term)
        run_until_blocked()  # it waits, with the first one still under way
        sock.close()
        second.get(timeout=BOUND)
        with gevent.Timeout(BOUND):
            ctx.term()
    print(ctx.closed, len(calls))
    sys.stdout.flush()
    os._exit(0)  # whatever libzmq was left doing
    """
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("again", ["retried", "overlapping"])
def test_term_interrupted_and_called_again_terms_once(tmp_path, again):
    out = run_script(tmp_path, _TERM_AGAIN_SCRIPT, again, timeout=40)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["True", "1"], out.stdout + out.stderr[-3000:]


def test_socket_on_terminated_context_raises():
    ctx = zmq.Context()
    ctx.term()
    with pytest.raises(zmq.ZMQError):
        ctx.socket(zmq.PUSH)


#: A child forked with a plain os.fork() (gevent not monkey-patched) makes its
#: own Context, moves a message through a green socket pair and terms: it must
#: not hang, whether or not the parent termed a context (greenzmq's term runs
#: in a native thread) or ran its hub before forking. Prints the child's word.
_PLAIN_FORK_SCRIPT = """
import os, sys, gevent
import greenzmq as zmq
from conftest import wait_parked
if sys.argv[1] == "termed":
    early = zmq.Context()
    early.socket(zmq.PUSH).close()
    early.term()
parent = zmq.Context.instance()
gevent.sleep(0)  # the parent's hub has run
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    word = b"failed"
    try:
        first = zmq.Context.instance()  # pyzmq's test_fork_instance: straight to term()
        assert first is not parent and not first.closed
        first.term()
        ctx = zmq.Context.instance()
        a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        a.bind("inproc://fork"); b.connect("inproc://fork")
        reader = gevent.spawn(b.recv)
        wait_parked(b)  # the child's hub wakes it, not the fast path
        a.send(b"child")
        word = reader.get(timeout=10)
        a.close(); b.close()
        ctx.term()
    finally:
        os.write(w, word)
        os._exit(0)
os.close(w)
print(os.read(r, 100).decode())
os.waitpid(pid, 0)
parent.term()
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("before", ["termed", "fresh"])
def test_plain_fork_child_makes_and_terms_its_own_context(tmp_path, before):
    out = run_script(tmp_path, _PLAIN_FORK_SCRIPT, before)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "child"


class SerializingSocket(zmq.Socket[bytes]):
    """pyzmq's documented subclassing pattern (examples/serialization), unchanged."""

    def send_zipped_pickle(self, obj, flags=0):
        import pickle
        import zlib

        return self.send(zlib.compress(pickle.dumps(obj)), flags=flags)

    def recv_zipped_pickle(self, flags=0):
        import pickle
        import zlib

        return pickle.loads(zlib.decompress(self.recv(flags)))


class SerializingContext(zmq.Context[SerializingSocket]):
    _socket_class = SerializingSocket


def test_generic_subclasses_make_green_sockets_of_the_subclass(spawn):
    """``zmq.Context[MySocket]`` / ``zmq.Socket[bytes]`` subclass as with pyzmq,
    and the sockets they make are green (a blocked recv parks only its greenlet)."""
    assert zmq.Socket[bytes] is not None and zmq.Context[zmq.Socket] is not None
    ctx = SerializingContext()
    try:
        a, b = connected_pair(ctx, zmq.PAIR, zmq.PAIR)
        assert type(a) is SerializingSocket and isinstance(a, zmq.Socket)
        receiver = spawn(b.recv_zipped_pickle)
        wait_parked(b)  # blocked in the hub, not the thread: this greenlet still runs
        a.send_zipped_pickle({"answer": 42})
        assert receiver.get(timeout=WAKE_BOUND) == {"answer": 42}
    finally:
        with gevent.Timeout(10):
            ctx.destroy(linger=0)
