"""The green Poller and select: pyzmq's results, green waiting, no spinning."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import gevent
import pytest
from conftest import HUB_STALL_BOUND, WAKE_BOUND, connected_pair, hub_ticker, run_until_blocked, wait_parked

import greenzmq as zmq
from greenzmq.error import WrongThreadError
from greenzmq.monitor import Monitor

#: How long a helper thread of these tests may run.
THREAD_BOUND = 10.0


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def test_poll_returns_what_pyzmq_returns(make_pair):
    push, pull = make_pair(zmq.PUSH, zmq.PULL)
    p = zmq.Poller()
    p.register(pull, zmq.POLLIN)
    p.register(push, zmq.POLLOUT)
    assert dict(p.poll(1000)) == {push: zmq.POLLOUT}  # once connected
    push.send(b"x")
    assert pull.poll(1000) == zmq.POLLIN
    assert dict(p.poll(0)) == {push: zmq.POLLOUT, pull: zmq.POLLIN}
    p.unregister(push)
    assert p.poll(1000) == [(pull, zmq.POLLIN)]
    pull.recv()
    assert p.poll(10) == []


def test_poll_blocks_only_the_greenlet(make_pair, spawn):
    push, pull = make_pair(zmq.PUSH, zmq.PULL)
    p = zmq.Poller()
    p.register(pull, zmq.POLLIN)
    with hub_ticker() as ticker:
        g = spawn(p.poll)
        wait_parked(pull, "listeners")  # this greenlet runs on while the poll waits
        assert not g.ready()
        push.send(b"x")
        assert g.get(timeout=WAKE_BOUND) == [(pull, zmq.POLLIN)]
    assert ticker.max_gap < HUB_STALL_BOUND, "the hub was blocked while a greenlet waited in poll"


def test_poll_timeout(make_pair):
    _, pull = make_pair(zmq.PUSH, zmq.PULL)
    p = zmq.Poller()
    p.register(pull, zmq.POLLIN)
    t0 = time.monotonic()
    assert p.poll(100) == []
    assert 0.09 <= time.monotonic() - t0 < 0.1 + WAKE_BOUND
    assert p.poll(0) == []
    assert p.poll(5.5) == []  # float ms accepted, as in pyzmq


def test_poll_timeout_counts_from_when_the_call_starts(make_pair):
    """As RCVTIMEO: the loop's cached time, stale after the thread was busy, is not the start."""
    _, pull = make_pair(zmq.PUSH, zmq.PULL)
    p = zmq.Poller()
    p.register(pull, zmq.POLLIN)
    gevent.sleep(0.001)  # the loop polls and caches its time
    time.sleep(0.15)  # busy without yielding
    t0 = time.monotonic()
    assert p.poll(200) == []
    assert 0.19 <= time.monotonic() - t0 < 0.2 + WAKE_BOUND


def test_poll_sockets_and_pipes_and_fileno_objects(make_pair, pipe, spawn):
    push, pull = make_pair(zmq.PUSH, zmq.PULL)
    r, w = pipe
    a, b = socket.socketpair()
    try:
        p = zmq.Poller()
        p.register(pull, zmq.POLLIN)
        p.register(r, zmq.POLLIN)
        p.register(a, zmq.POLLIN)
        assert p.poll(0) == []
        g = spawn(p.poll, 5000)
        wait_parked(pull, "listeners")
        assert not g.ready()
        os.write(w, b"!")
        assert g.get(timeout=WAKE_BOUND) == [(r, zmq.POLLIN)]
        os.read(r, 1)
        g = spawn(p.poll, 5000)
        wait_parked(pull, "listeners")
        b.send(b"?")
        # as pyzmq: an object with fileno() is reported by its fd number
        assert g.get(timeout=WAKE_BOUND) == [(a.fileno(), zmq.POLLIN)]
        a.recv(1)
        g = spawn(p.poll, 5000)
        wait_parked(pull, "listeners")
        push.send(b"z")
        assert g.get(timeout=WAKE_BOUND) == [(pull, zmq.POLLIN)]
        p.register(w, zmq.POLLOUT)
        assert (w, zmq.POLLOUT) in p.poll(1000)
    finally:
        a.close()
        b.close()


def test_poll_plain_pyzmq_socket(pipe, spawn):
    """A plain (non-green) zmq socket registered in the green poller still works."""
    import zmq as plain

    ctx = plain.Context()
    try:
        a, b = ctx.socket(plain.PAIR), ctx.socket(plain.PAIR)
        a.bind("inproc://plain-in-green-poller")
        b.connect("inproc://plain-in-green-poller")
        p = zmq.Poller()
        p.register(b, zmq.POLLIN)
        g = spawn(p.poll, 5000)
        run_until_blocked()  # only a plain socket: no green queue shows the poll parked
        assert not g.ready()
        a.send(b"x")
        assert g.get(timeout=WAKE_BOUND) == [(b, zmq.POLLIN)]
    finally:
        ctx.destroy(linger=0)  # closes a and b, also when an assertion failed (term() would hang)


def test_pollerr_only_fd_does_not_spin(pipe, spawn):
    r, w = pipe
    os.write(w, b"readable, but nobody asked for POLLIN")
    p = zmq.Poller()
    p.register(r, zmq.POLLERR)
    cpu0 = time.process_time()
    assert p.poll(300) == []
    assert time.process_time() - cpu0 < 0.1, "the poller spun on a readable POLLERR-only fd"


def test_poller_reuses_its_watchers(ctx, pipe):
    r, w = pipe
    socks = []
    for _ in range(50):
        s = ctx.socket(zmq.PULL)
        s.bind_to_random_port("tcp://127.0.0.1")
        socks.append(s)
    p = zmq.Poller()
    for s in socks:
        p.register(s, zmq.POLLIN)
    p.register(r, zmq.POLLIN)
    # The watchers are made when poll() parks, which a short timeout may skip
    # on a loaded machine (it can expire before the first wait): wake a poll
    # with a generous bound instead, from a greenlet that only runs once it parked.
    gevent.spawn(os.write, w, b"x")
    assert p.poll(10_000) == [(r, zmq.POLLIN)]
    assert os.read(r, 1) == b"x"
    fd_watchers = list(p._watchers[r][1])
    sock_watchers = [s._waiters.watcher for s in socks]
    for _ in range(5):
        assert p.poll(1) == []
    assert p._watchers[r][1] == fd_watchers
    assert [s._waiters.watcher for s in socks] == sock_watchers
    assert not any(s._waiters.armed for s in socks), "listeners left behind"


def test_poller_polled_from_another_thread_watches_its_fds_in_that_threads_loop(pipe):
    """A Poller keeps the io watchers it makes for plain fds; they belong to the
    loop of the thread that polled. Polled later from another thread, it must
    watch its fds in that thread's loop. (The watchers of the first thread's
    loop were started from the worker, where nothing ran them: the worker's
    poll slept past a readable fd until its deadline.)"""
    r, w = pipe
    poller = zmq.Poller()
    poller.register(r, zmq.POLLIN)
    gevent.spawn(os.write, w, b"x")  # runs once the poll below parked: it made its watchers here
    assert poller.poll(THREAD_BOUND * 1000) == [(r, zmq.POLLIN)]
    assert os.read(r, 1) == b"x"
    parked, out = threading.Event(), {}

    def poll_in_a_worker():
        polling = gevent.spawn(poller.poll, THREAD_BOUND * 1000 / 2)
        run_until_blocked()  # it polled once and waits for the fd
        parked.set()
        t0 = time.monotonic()
        out["events"] = polling.get(timeout=THREAD_BOUND)
        out["took"] = time.monotonic() - t0

    t = threading.Thread(target=poll_in_a_worker, daemon=True)
    t.start()
    assert parked.wait(THREAD_BOUND)
    os.write(w, b"y")
    t.join(THREAD_BOUND)
    assert not t.is_alive() and "events" in out, out
    assert out["events"] == [(r, zmq.POLLIN)]
    assert out["took"] < WAKE_BOUND, f"the worker's poll woke after {out['took']:.2f}s, not on the fd"


def test_poll_refuses_a_socket_another_thread_took_over_while_it_waited(ctx, spawn, pipe):
    """A socket registered for POLLERR only has no listener while the poll
    waits (libzmq sockets never report POLLERR), so another thread may take it
    over meanwhile. The poll's next round re-checks ownership: a greenlet of
    that thread waits on it, so the poll raises WrongThreadError and touches
    nothing. (It called zmq_poll on the other thread's socket, and that
    thread's waiters, from this thread.)"""
    r, w = pipe
    pull, push = connected_pair(ctx, zmq.PULL, zmq.PUSH)
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLERR)
    poller.register(r, zmq.POLLIN)
    polling = spawn(poller.poll, THREAD_BOUND * 1000)
    run_until_blocked()  # it polled once and waits for the pipe
    assert not polling.ready()
    b_parked, got = threading.Event(), []

    def receive_in_b():
        receiver = gevent.spawn(pull.recv)
        wait_parked(pull)  # B's greenlet waits on pull: B owns it now
        b_parked.set()
        got.append(receiver.get(timeout=THREAD_BOUND))

    b = threading.Thread(target=receive_in_b, daemon=True)
    b.start()
    assert b_parked.wait(THREAD_BOUND)
    os.write(w, b"x")  # wakes the poll for its next round
    with pytest.raises(WrongThreadError, match="waiting on it"):
        polling.get(timeout=WAKE_BOUND)
    push.send(b"for B")  # B's greenlet still gets it: nothing was touched
    b.join(THREAD_BOUND)
    assert not b.is_alive() and got == [b"for B"]


@pytest.mark.timeout(60)
def test_poller_over_1000_sockets(ctx, spawn):
    socks = []
    for _ in range(1000):
        s = ctx.socket(zmq.PULL)
        s.linger = 0
        socks.append(s)
    for i, s in enumerate(socks):
        s.bind(f"inproc://many-{i}")
    p = zmq.Poller()
    for s in socks:
        p.register(s, zmq.POLLIN)
    push = ctx.socket(zmq.PUSH)
    push.connect("inproc://many-777")
    g = spawn(p.poll, 10000)
    wait_parked(socks[-1], "listeners")  # the poll listens on every socket before it parks
    assert not g.ready()
    push.send(b"x")
    assert g.get(timeout=5) == [(socks[777], zmq.POLLIN)]
    cpu0 = time.process_time()
    g = spawn(p.poll, 500)
    assert g.get(timeout=5) == [(socks[777], zmq.POLLIN)]  # still unread: immediate
    socks[777].recv()
    assert p.poll(200) == []
    assert time.process_time() - cpu0 < 0.5


def test_poller_and_recv_waiter_on_same_socket(make_pair, spawn):
    a, b = make_pair(zmq.DEALER, zmq.DEALER)
    p = zmq.Poller()
    p.register(a, zmq.POLLIN)
    receiver = spawn(a.recv)
    wait_parked(a)
    polled = spawn(p.poll, 5000)
    wait_parked(a, "listeners")
    b.send(b"1")
    assert receiver.get(timeout=WAKE_BOUND) == b"1"  # FIFO: the waiting recv gets it
    b.send(b"2")
    assert polled.get(timeout=WAKE_BOUND) == [(a, zmq.POLLIN)]
    assert a.recv() == b"2"


def test_poll_closed_socket_raises(make_pair, spawn):
    push, pull = make_pair(zmq.PUSH, zmq.PULL)
    p = zmq.Poller()
    p.register(pull, zmq.POLLIN)
    g = spawn(p.poll, 5000)
    wait_parked(pull, "listeners")
    assert not g.ready()
    pull.close()  # wakes the waiting poll
    with pytest.raises(zmq.ZMQError) as info:
        g.get(timeout=WAKE_BOUND)
    assert info.value.errno == zmq.ENOTSOCK
    with pytest.raises(zmq.ZMQError):
        p.poll(0)
    p.unregister(pull)  # the poller is usable again
    assert p.poll(0) == []


def test_poll_invalid_registration_raises():
    p = zmq.Poller()
    p.register(object(), zmq.POLLIN)
    with pytest.raises((TypeError, ValueError)):
        p.poll(0)


def test_select(make_pair, pipe, spawn):
    push, pull = make_pair(zmq.PUSH, zmq.PULL)
    r, w = pipe
    assert zmq.select([pull, r], [], [], 0) == ([], [], [])
    g = spawn(zmq.select, [pull, r], [push], [], 5)
    assert g.get(timeout=WAKE_BOUND) == ([], [push], [])
    g = spawn(zmq.select, [pull, r], [], [], 5)
    wait_parked(pull, "listeners")
    assert not g.ready()
    push.send(b"x")
    assert g.get(timeout=WAKE_BOUND) == ([pull], [], [])
    t0 = time.monotonic()
    pull.recv()
    assert zmq.select([pull], [], [], 0.1) == ([], [], [])
    assert time.monotonic() - t0 < 0.1 + WAKE_BOUND


_DISCONNECT_SCRIPT = """
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.connect(sys.argv[1])
s.send(b'hello')
s.close(linger=5000)
ctx.term()
"""


@pytest.mark.timeout(60)
def test_no_busy_loop_after_peers_disconnect(ctx, spawn):
    """pyzmq issue 2167: after peers leave a ROUTER, a waiting poller stays idle."""
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    p = zmq.Poller()
    p.register(router, zmq.POLLIN)
    mon = Monitor(router, zmq.EVENT_DISCONNECTED)
    for _ in range(5):
        subprocess.run(
            [sys.executable, "-c", _DISCONNECT_SCRIPT, f"tcp://127.0.0.1:{port}"], timeout=30, check=True
        )
        assert p.poll(5000)
        router.recv_multipart()
        # libzmq has handled this peer's disconnect (not 'some time later')
        assert mon.recv(timeout=WAKE_BOUND * 10).event == zmq.EVENT_DISCONNECTED
    mon.close()
    cpu0 = time.process_time()
    assert p.poll(1000) == []
    assert time.process_time() - cpu0 < 0.1


def test_poll_raises_context_terminated_when_destroy_closes_its_socket(spawn):
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind_to_random_port("tcp://127.0.0.1")
    p = zmq.Poller()
    p.register(pull, zmq.POLLIN)
    g = spawn(p.poll)
    wait_parked(pull, "listeners")
    ctx.destroy(linger=0)
    with pytest.raises(zmq.ContextTerminated):
        g.get(timeout=WAKE_BOUND)


def test_zmq_poll_is_green_and_keeps_the_waiting_rule(spawn):
    """``zmq.zmq_poll`` (pyzmq's raw call under plain pyzmq) blocks only its
    greenlet, returns what pyzmq's would, and does not strand a greenlet
    blocked in recv on a socket it polls (its EVENTS reading is followed by
    the check the waiter needs)."""
    ctx = zmq.Context()
    try:
        a, b = connected_pair(ctx, zmq.DEALER, zmq.DEALER, "inproc")
        assert zmq.zmq_poll([(a, zmq.POLLIN | zmq.POLLOUT)], 0) == [(a, zmq.POLLOUT)]
        with hub_ticker() as ticker:
            polled = spawn(zmq.zmq_poll, [(a, zmq.POLLIN)], int(WAKE_BOUND * 1000 * 10))
            wait_parked(a, "listeners")
            b.send(b"x")
            assert polled.get(timeout=WAKE_BOUND) == [(a, zmq.POLLIN)]
        assert ticker.max_gap < HUB_STALL_BOUND
        assert a.recv() == b"x"
        receiver = spawn(a.recv)
        wait_parked(a)
        b.send(b"y")  # inproc: queued at once, and a's fd raised
        assert zmq.zmq_poll([(a, zmq.POLLIN | zmq.POLLOUT)], 0) == [(a, zmq.POLLIN | zmq.POLLOUT)]
        assert receiver.get(timeout=WAKE_BOUND) == b"y"
    finally:
        ctx.destroy(linger=0)
