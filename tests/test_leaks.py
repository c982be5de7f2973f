"""Leaks: opening and closing 10,000 green sockets and 10,000
green Pollers returns the process to its baseline of open fds, active hub
watchers and live greenlets; a closed ZMQStream and a stopped background
green device release everything they held.

What is counted, and how:

* open fds: the entries of ``/proc/self/fd``;
* active hub watchers: libev's count of started watchers,
  ``gevent.get_hub().loop.activecnt`` (gevent's libev and libuv loops both
  expose it);
* live greenlets: ``greenlet.greenlet`` objects found by ``gc.get_objects()``
  that are not dead.

libzmq closes a socket's mailbox fd in its reaper thread, a moment after
``close()`` returns: the fd count is therefore *awaited* (polled with a bound,
:data:`SETTLE_BOUND`), never slept for.
"""

from __future__ import annotations

import gc
import os
import threading
import time

import gevent
import gevent.event
import greenlet
import pytest
import zmq as pyzmq
from conftest import TERM_BOUND, inproc_endpoint, wait_parked

import greenzmq as zmq
from greenzmq.devices import GreenProxy
from greenzmq.eventloop import IOLoop, ZMQStream

#: Sockets and pollers opened and closed per test (the issue's figure).
SOCKETS = 10_000
POLLERS = 10_000
#: Sockets open at once: well under libzmq's default MAX_SOCKETS (1023), and
#: large enough that each batch waits on many watchers at the same time.
BATCH = 200
#: Every POLL_TIMEOUT_EVERY-th poll waits out its (short) timeout; the others
#: find the pipe or a socket ready. All 10,000 waiting would cost 10+ s alone.
POLL_TIMEOUT_EVERY = 20
POLL_TIMEOUT_MS = 1
#: Slack allowed over the baseline: a fd or watcher the hub or libzmq creates
#: lazily (e.g. gevent's threadpool or a resolver) must not fail the test,
#: while a per-socket leak (10,000 of them) cannot hide below it.
FD_SLACK = 4
WATCHER_SLACK = 2
GREENLET_SLACK = 2
#: How long libzmq's reaper may take to close the fds of closed sockets.
SETTLE_BOUND = 10.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def active_watchers() -> int:
    return gevent.get_hub().loop.activecnt


def live_greenlets() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead)


def snapshot() -> dict[str, int]:
    gc.collect()
    return {"fds": open_fds(), "watchers": active_watchers(), "greenlets": live_greenlets()}


SLACK = {"fds": FD_SLACK, "watchers": WATCHER_SLACK, "greenlets": GREENLET_SLACK}


def assert_back_to(baseline: dict[str, int], what: str) -> dict[str, int]:
    """Wait (bounded) until every count is within its slack of ``baseline``."""
    deadline = time.monotonic() + SETTLE_BOUND
    while True:
        now = snapshot()
        over = {k: now[k] - baseline[k] for k in baseline if now[k] - baseline[k] > SLACK[k]}
        if not over:
            return now
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: above baseline {baseline} by {over} (now {now})")
        gevent.sleep(0.05)  # polling a condition with a bound, not syncing


@pytest.fixture
def context():
    c = zmq.Context()
    c.setsockopt(zmq.LINGER, 0)
    # libzmq starts its reaper and io threads (and their fds) with the first socket
    c.socket(zmq.PAIR).close()
    yield c
    with gevent.Timeout(TERM_BOUND, AssertionError("context did not terminate within the bound")):
        c.destroy(linger=0)


def _pair(context, tcp: bool = False):
    a, b = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    if tcp:
        b.connect(f"tcp://127.0.0.1:{a.bind_to_random_port('tcp://127.0.0.1')}")
    else:
        addr = inproc_endpoint("leak")
        a.bind(addr)
        b.connect(addr)
    return a, b


#: How a batch's blocked receivers end: a message arrives, the wait is
#: cancelled (gevent.Timeout and kill), or the socket is closed under it.
ENDINGS = ("delivered", "cancelled", "closed")
#: One batch in TCP_EVERY uses tcp://127.0.0.1 (real OS sockets in libzmq's io
#: thread, closed asynchronously); the others inproc, which is faster.
TCP_EVERY = 5


def _batch(context, ending: str, tcp: bool) -> int:
    """Open BATCH sockets, park a greenlet in recv on half of them, end the
    waits the given way, close everything; return the watchers active at the peak."""
    pairs = [_pair(context, tcp) for _ in range(BATCH // 2)]
    waiting = [gevent.spawn(b.recv) for _, b in pairs]
    for _, b in pairs:
        wait_parked(b)
    peak = active_watchers()
    if ending == "delivered":
        for a, _ in pairs:
            a.send(b"x")
        gevent.joinall(waiting, timeout=SETTLE_BOUND, raise_error=True)
        assert all(g.value == b"x" for g in waiting)
    elif ending == "cancelled":
        half = len(waiting) // 2
        gevent.killall(waiting[:half], timeout=SETTLE_BOUND)
        for g in waiting[half:]:
            g.kill(gevent.Timeout(), block=False)
        gevent.joinall(waiting, timeout=SETTLE_BOUND)
    for a, b in pairs:
        a.close()
        b.close()
    if ending == "closed":
        gevent.joinall(waiting, timeout=SETTLE_BOUND)
        for g in waiting:
            assert isinstance(g.exception, zmq.ZMQError) and g.exception.errno == zmq.ENOTSOCK, g.exception
    assert all(g.dead for g in waiting)
    return peak


@pytest.mark.timeout(60)
def test_10000_green_sockets_return_to_baseline(context):
    # warm up: every kind of batch once, so lazily created state exists
    for i, ending in enumerate(ENDINGS):
        _batch(context, ending, tcp=i == 0)
    baseline = assert_back_to(snapshot(), "warm-up")

    peak = 0
    t0 = time.monotonic()
    for i in range(SOCKETS // BATCH):
        peak = max(peak, _batch(context, ENDINGS[i % len(ENDINGS)], tcp=i % TCP_EVERY == 0))
    elapsed = time.monotonic() - t0
    assert peak >= baseline["watchers"] + BATCH // 2, (
        "the batches did not wait on watchers: the test would be blind"
    )
    assert_back_to(baseline, f"after {SOCKETS} sockets ({elapsed:.1f} s)")


@pytest.mark.timeout(60)
def test_10000_green_pollers_return_to_baseline(context):
    a, b = _pair(context)
    r, w = os.pipe()
    plain_context = pyzmq.Context()
    try:

        def one(i):
            poller = zmq.Poller()
            poller.register(b, zmq.POLLIN)
            poller.register(r, zmq.POLLIN)
            poller.register(a, zmq.POLLOUT if i % 2 else zmq.POLLIN)
            if i % POLL_TIMEOUT_EVERY == 0:
                # nothing ready (a registered for POLLIN): waits out the timeout in the hub
                assert poller.poll(POLL_TIMEOUT_MS) == []
            elif i % 3 == 0:
                os.write(w, b"!")
                events = dict(poller.poll(POLL_TIMEOUT_MS))
                assert events.get(r) == zmq.POLLIN
                os.read(r, 1)
            else:
                events = dict(poller.poll(POLL_TIMEOUT_MS))
                assert (a in events) == bool(i % 2)
            poller.unregister(r) if i % 4 == 0 else None  # both ways of letting go

        def waiter_in_poll():
            # a poll that is woken by a message, not by its timeout
            poller = zmq.Poller()
            poller.register(b, zmq.POLLIN)
            poller.register(r, zmq.POLLIN)
            # twice the bound the caller waits: a lost wake-up must not be
            # rescued by the re-check at the poll's own deadline
            return poller.poll(2 * SETTLE_BOUND * 1000)

        def closed_under_poll():
            # a poll parked on a green socket, a plain pyzmq socket and the pipe,
            # woken by closing the green socket: ENOTSOCK, and nothing left behind
            victim = context.socket(zmq.PULL)
            victim.bind(inproc_endpoint("victim"))
            plain = plain_context.socket(pyzmq.PULL)
            plain.linger = 0
            plain.bind(inproc_endpoint("plain"))
            poller = zmq.Poller()
            for item in (victim, plain, r):
                poller.register(item, zmq.POLLIN)
            g = gevent.spawn(poller.poll, 2 * SETTLE_BOUND * 1000)  # as above
            wait_parked(victim, "listeners")
            victim.close()
            g.join(SETTLE_BOUND)
            assert isinstance(g.exception, zmq.ZMQError) and g.exception.errno == zmq.ENOTSOCK, g.exception
            plain.close()

        for i in range(POLL_TIMEOUT_EVERY):  # warm-up
            one(i + 1)
        closed_under_poll()
        baseline = assert_back_to(snapshot(), "warm-up")
        t0 = time.monotonic()
        for i in range(POLLERS):
            one(i)
            if i % BATCH == 0:
                g = gevent.spawn(waiter_in_poll)
                wait_parked(b, "listeners")
                a.send(b"wake")
                assert dict(g.get(timeout=SETTLE_BOUND)) == {b: zmq.POLLIN}
                assert b.recv() == b"wake"
                closed_under_poll()
        elapsed = time.monotonic() - t0
        assert_back_to(baseline, f"after {POLLERS} pollers ({elapsed:.1f} s)")
    finally:
        os.close(r)
        os.close(w)
        a.close()
        b.close()
        plain_context.destroy(linger=0)


@pytest.mark.timeout(30)
def test_a_closed_zmqstream_releases_everything(context):
    old = IOLoop.current(instance=False)
    IOLoop.clear_current()
    loop = IOLoop()
    try:

        def round_trip(n):
            """n streams on n pairs: each receives one message through the loop, then all close."""
            done = gevent.event.Event()
            got = []
            streams = []
            for _ in range(n):
                a, b = _pair(context)
                s = ZMQStream(b, loop)
                s.on_recv(lambda msg: (got.append(msg), len(got) == n and done.set()))
                streams.append((a, s))
            for a, _ in streams:
                a.send_multipart([b"hello", b"stream"])
            done.rawlink(lambda _: loop.stop())
            with gevent.Timeout(SETTLE_BOUND, AssertionError("the loop did not deliver within the bound")):
                loop.start()
            assert got == [[b"hello", b"stream"]] * n
            for a, s in streams:
                s.close()
                assert s.closed() and s.socket is None
                a.close()

        round_trip(1)  # warm-up: the loop's own state
        baseline = assert_back_to(snapshot(), "warm-up")
        for _ in range(10):
            round_trip(BATCH // 2)
        assert_back_to(baseline, "after closing ZMQStreams")
    finally:
        loop.close(all_fds=True)
        IOLoop.clear_current()
        if old is not None:
            old.make_current()


@pytest.mark.timeout(30)
def test_a_stopped_green_proxy_releases_everything(context):
    def run_proxy(messages):
        front, back = inproc_endpoint("front"), inproc_endpoint("back")
        proxy = GreenProxy(zmq.PULL, zmq.PUSH, context=context)
        proxy.bind_in(front)
        proxy.bind_out(back)
        proxy.start()
        push, pull = context.socket(zmq.PUSH), context.socket(zmq.PULL)
        push.connect(front)
        pull.connect(back)
        for i in range(messages):
            push.send(b"%d" % i)
        assert [pull.recv() for _ in range(messages)] == [b"%d" % i for i in range(messages)]
        # the proxy is now parked in a green poll on its sockets
        proxy.stop(timeout=SETTLE_BOUND)
        assert proxy.exception is None
        push.close()
        pull.close()

    run_proxy(10)  # warm-up
    baseline = assert_back_to(snapshot(), "warm-up")
    for _ in range(50):
        run_proxy(20)
    assert_back_to(baseline, "after stopping 50 GreenProxy devices")


#: Contexts made and ended per way of ending them (each starts libzmq threads).
CONTEXTS = 100


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ending", ["destroy", "term"])
def test_contexts_ended_under_blocked_greenlets_release_everything(ending):
    """A green context ended (destroy(linger=0), or term once its sockets are
    closed) while a greenlet is blocked in recv: the greenlet wakes with
    ContextTerminated, and the fds, watchers, greenlets and OS threads of
    CONTEXTS such contexts are all given back."""

    def one():
        c = zmq.Context()
        a, b = _pair(c)
        waiter = gevent.spawn(b.recv)
        wait_parked(b)
        if ending == "destroy":
            c.destroy(linger=0)
        else:
            term = gevent.spawn(c.term)
            waiter.join(SETTLE_BOUND)
            a.close(linger=0)
            b.close(linger=0)
            term.join(SETTLE_BOUND)
            assert term.successful(), term.exception
        waiter.join(SETTLE_BOUND)
        assert isinstance(waiter.exception, zmq.ContextTerminated), waiter.exception

    one()  # warm-up
    baseline = assert_back_to(snapshot(), "warm-up")
    threads = threading.active_count()
    for _ in range(CONTEXTS):
        one()
    assert_back_to(baseline, f"after {CONTEXTS} contexts ({ending})")
    assert threading.active_count() <= threads
