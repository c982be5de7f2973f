"""The green Socket: blocking only the greenlet, sharing, timeouts, cancellation, close."""

from __future__ import annotations

import gc
import random
import time
import warnings
import weakref

import gevent
import gevent.event
import pytest
import zmq as plainzmq
from conftest import HUB_STALL_BOUND, WAKE_BOUND, connected_pair, hub_ticker, inproc_endpoint, wait_parked

import greenzmq as zmq


def test_recv_blocks_only_the_greenlet(make_pair, spawn):
    push, pull = make_pair(zmq.PUSH, zmq.PULL)
    with hub_ticker() as ticker:
        receiver = spawn(pull.recv)
        wait_parked(pull)  # this greenlet runs on while the receiver waits
        assert not receiver.ready()
        push.send(b"hello")
        assert receiver.get(timeout=WAKE_BOUND) == b"hello"
    assert ticker.max_gap < HUB_STALL_BOUND, "the hub was blocked while a greenlet waited in recv"


def test_send_blocks_only_the_greenlet_at_hwm(ctx, spawn):
    push = ctx.socket(zmq.PUSH)
    push.sndhwm = 1
    push.linger = 0
    port = push.bind_to_random_port("tcp://127.0.0.1")
    # no peer yet: PUSH with no pipe blocks the sender
    sender = spawn(push.send, b"x")
    wait_parked(push, "writers")
    assert not sender.ready()
    pull = ctx.socket(zmq.PULL)
    pull.connect(f"tcp://127.0.0.1:{port}")
    sender.get(timeout=5)
    assert pull.recv() == b"x"


def test_dontwait_raises_again(make_pair):
    push, pull = make_pair(zmq.PUSH, zmq.PULL)
    with pytest.raises(zmq.Again):
        pull.recv(zmq.NOBLOCK)
    with pytest.raises(zmq.Again):
        pull.recv_multipart(zmq.DONTWAIT)
    push.send(b"a")
    assert pull.recv() == b"a"


def test_dontwait_does_not_overtake_waiters(make_pair, spawn):
    """A message is there, but a greenlet waited for it first: an explicit
    DONTWAIT call raises Again (recv and recv_multipart alike) and the waiting
    greenlet gets the message."""
    push, pull = make_pair(zmq.PUSH, zmq.PULL)
    waiter = spawn(pull.recv)
    wait_parked(pull)
    push.send(b"first")
    # Block the thread (no greenlet runs meanwhile) until the message is in
    # pull's queue, so the DONTWAIT calls below could take it if they overtook
    # the waiter. pyzmq's raw zmq_poll bypasses greenzmq, so the EVENTS check
    # it owes the waiter is queued with a green EVENTS query (Waiters.touched).
    assert plainzmq.zmq_poll([(pull, zmq.POLLIN)], int(WAKE_BOUND * 1000)) == [(pull, zmq.POLLIN)]
    assert pull.get(zmq.EVENTS) & zmq.POLLIN
    with pytest.raises(zmq.Again):
        pull.recv(zmq.DONTWAIT)
    with pytest.raises(zmq.Again):
        pull.recv_multipart(zmq.DONTWAIT)
    assert waiter.get(timeout=WAKE_BOUND) == b"first"


def test_recv_multipart_frames_every_message_exactly(ctx, spawn, transport):
    """recv_multipart frames messages by each Frame's more flag (not RCVMORE):
    empty, small and zero-copy-sized frames, bytes and Frames, on the fast path
    and after waiting, come back exactly as sent and never run into the next."""
    pull, push = connected_pair(ctx, zmq.PULL, zmq.PUSH, transport)
    big = bytes(range(256)) * 1024  # 256 KiB: above pyzmq's copy threshold
    messages = [[b"one"], [b"", b"a", b""], [b"head", big], [big], [b"x"] * 7, [b"last"]]
    for msg in messages:
        push.send_multipart(msg)
    got = [pull.recv_multipart() for _ in range(3)]
    frames = [pull.recv_multipart(copy=False) for _ in range(3)]
    assert got == messages[:3] and all(type(p) is bytes for m in got for p in m)
    assert [[f.bytes for f in m] for m in frames] == messages[3:]
    assert [[f.more for f in m] for m in frames] == [[False], [True] * 6 + [False], [False]]
    waiter = spawn(pull.recv_multipart)  # the slow path: nothing there yet
    wait_parked(pull)
    push.send_multipart([b"late", b""])
    assert waiter.get(timeout=WAKE_BOUND) == [b"late", b""]
    with pytest.raises(zmq.Again):
        pull.recv_multipart(zmq.DONTWAIT)


def test_waiters_served_first_come_first_served(make_pair, spawn):
    push, pull = make_pair(zmq.PUSH, zmq.PULL)
    results = {}
    started = []

    def wait(i):
        started.append(i)
        results[i] = pull.recv()

    glets = []
    for i in range(10):
        glets.append(spawn(wait, i))
        wait_parked(pull, n=i + 1)  # greenlet i queues before i+1
    assert started == list(range(10))
    for i in range(10):
        push.send(b"%d" % i)
    gevent.joinall(glets, timeout=5, raise_error=True)
    assert results == {i: b"%d" % i for i in range(10)}


@pytest.mark.timeout(60)
def test_many_greenlets_share_one_socket_multipart_integrity_under_hwm(make_pair, spawn):
    """20 senders and 5 receivers on one PUSH/PULL pair with tiny HWMs: every
    message arrives whole, exactly once, in per-sender order."""
    push, pull = make_pair(zmq.PUSH, zmq.PULL, sndhwm=2, rcvhwm=2)
    senders, per_sender, receivers = 20, 300, 5
    total = senders * per_sender
    received = []
    done = gevent.event.Event()

    def send(sid):
        for seq in range(per_sender):
            tag = b"%d:%d" % (sid, seq)
            push.send_multipart([tag, b"a" + tag, b"b" * (seq % 7) + tag, tag])

    def recv():
        while len(received) < total:
            try:
                msg = pull.recv_multipart()
            except zmq.ZMQError:
                return
            received.append(msg)
            if len(received) == total:
                done.set()

    rs = [spawn(recv) for _ in range(receivers)]
    ss = [spawn(send, sid) for sid in range(senders)]
    assert done.wait(timeout=45), f"only {len(received)} of {total} arrived"
    gevent.joinall(ss, timeout=5, raise_error=True)
    gevent.killall(rs)
    seen = set()
    last = {}
    for msg in received:
        tag = msg[0]
        assert len(msg) == 4 and msg[1] == b"a" + tag and msg[2].endswith(tag) and msg[3] == tag, msg
        assert tag not in seen, f"duplicate {tag}"
        seen.add(tag)
        sid, seq = map(int, tag.split(b":"))
        assert seq > last.get(sid, -1), "per-sender order broken"
        last[sid] = seq
    assert len(seen) == total


def test_send_and_recv_on_one_socket_from_many_greenlets(make_pair, spawn):
    """DEALER<->DEALER echo: greenlets send and receive on the same socket at once."""
    a, b = make_pair(zmq.DEALER, zmq.DEALER)
    n = 2000

    def echo():
        for _ in range(n):
            b.send_multipart(b.recv_multipart())

    got = []
    spawn(echo)
    readers = [spawn(lambda: [got.append(a.recv_multipart()) for _ in range(n // 4)]) for _ in range(4)]
    writers = [
        spawn(lambda k=k: [a.send_multipart([b"%d" % k, b"%d" % i]) for i in range(n // 4)]) for k in range(4)
    ]
    gevent.joinall(writers + readers, timeout=30, raise_error=True)
    assert sorted(got) == sorted([b"%d" % k, b"%d" % i] for k in range(4) for i in range(n // 4))


def test_rcvtimeo_honoured_and_socket_usable(make_pair):
    push, pull = make_pair(zmq.PUSH, zmq.PULL)
    pull.rcvtimeo = 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t0 = time.monotonic()
        with pytest.raises(zmq.Again):
            pull.recv()
        elapsed = time.monotonic() - t0
    assert 0.09 <= elapsed < 0.1 + WAKE_BOUND
    with pytest.raises(zmq.Again):
        pull.recv_multipart()
    push.send(b"after")
    assert pull.recv() == b"after"


@pytest.mark.parametrize("call", ["recv", "recv_multipart"])
def test_rcvtimeo_counts_from_when_the_call_starts(make_pair, call):
    """The timeout is measured from the call, not from the loop's cached time,
    which is stale by however long the thread ran since the hub last polled."""
    push, pull = make_pair(zmq.PUSH, zmq.PULL)
    pull.rcvtimeo = 200
    gevent.sleep(0.001)  # the loop polls and caches its time...
    time.sleep(0.15)  # ...then the thread is busy for 150 ms without yielding
    t0 = time.monotonic()
    with pytest.raises(zmq.Again):
        getattr(pull, call)()
    assert 0.19 <= time.monotonic() - t0 < 0.2 + WAKE_BOUND  # was 0.05 s: early by the busy time


def test_sndtimeo_honoured_and_socket_usable(ctx):
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    push.sndtimeo = 100
    port = push.bind_to_random_port("tcp://127.0.0.1")
    t0 = time.monotonic()
    with pytest.raises(zmq.Again):
        push.send(b"nobody listens")
    assert 0.09 <= time.monotonic() - t0 < 0.1 + WAKE_BOUND
    pull = ctx.socket(zmq.PULL)
    pull.connect(f"tcp://127.0.0.1:{port}")
    push.sndtimeo = -1
    push.send(b"now")
    assert pull.recv() == b"now"


@pytest.mark.timeout(60)
def test_timeout_and_kill_storm_loses_and_duplicates_nothing(make_pair, spawn):
    push, pull = make_pair(zmq.PUSH, zmq.PULL)
    n = 5000
    rng = random.Random(7)
    got = []
    all_in = gevent.event.Event()
    stop = gevent.event.Event()

    def receiver():
        while not stop.is_set():
            with gevent.Timeout(rng.choice([0.0001, 0.001, 0.005]), False):
                got.append(pull.recv())
                if len(got) >= n:
                    all_in.set()

    def killer():
        glets = [spawn(receiver) for _ in range(3)]
        while not stop.is_set():
            gevent.sleep(rng.random() * 0.002)  # time is the subject: kills land at random points
            victim = rng.randrange(len(glets))
            glets[victim].kill(block=False)
            glets[victim] = spawn(receiver)
        gevent.killall(glets)

    k = spawn(killer)

    def sender():
        for i in range(n):
            push.send(b"%d" % i)
            if i % 50 == 0:
                gevent.sleep(0)  # a yield, not a wait: the receivers and the killer interleave

    spawn(sender).get(timeout=30)
    all_in.wait(timeout=30)
    stop.set()
    k.join(timeout=5)
    assert len(got) == n, f"{len(got)} of {n}"
    assert sorted(got, key=int) == [b"%d" % i for i in range(n)]
    assert len(set(got)) == n
    # the socket is still fine
    push.send(b"last")
    assert pull.recv() == b"last"


def test_close_wakes_every_waiter_with_enotsock(make_pair, spawn):
    push, pull = make_pair(zmq.PUSH, zmq.PULL)
    errors = []

    def wait_recv():
        try:
            pull.recv()
        except zmq.ZMQError as e:
            errors.append(e.errno)

    glets = [spawn(wait_recv) for _ in range(10)]
    wait_parked(pull, n=10)
    t0 = time.monotonic()
    pull.close()
    gevent.joinall(glets, timeout=5)
    assert time.monotonic() - t0 < WAKE_BOUND
    assert errors == [zmq.ENOTSOCK] * 10


def test_close_wakes_blocked_senders(ctx, spawn):
    push = ctx.socket(zmq.PUSH)
    push.bind_to_random_port("tcp://127.0.0.1")  # no peer: sends block
    errors = []

    def wait_send():
        try:
            push.send(b"x")
        except zmq.ZMQError as e:
            errors.append(e.errno)

    glets = [spawn(wait_send) for _ in range(5)]
    wait_parked(push, "writers", n=5)
    push.close(linger=0)
    gevent.joinall(glets, timeout=5)
    assert errors == [zmq.ENOTSOCK] * 5


def test_operations_on_closed_socket_raise(make_pair):
    push, pull = make_pair(zmq.PUSH, zmq.PULL)
    pull.close()
    with pytest.raises(zmq.ZMQError) as info:
        pull.recv()
    assert info.value.errno == zmq.ENOTSOCK
    pull.close()  # twice is fine


def test_garbage_collected_socket_releases_its_watcher(ctx):
    sock = ctx.socket(zmq.PULL)
    sock.bind_to_random_port("tcp://127.0.0.1")
    sock.rcvtimeo = 10
    with pytest.raises(zmq.Again):
        sock.recv()  # created and used the watcher
    waiters = sock._waiters
    assert waiters.watcher is not None and not waiters.armed
    ref = weakref.ref(sock)
    gevent.sleep(0)  # let the hub finish the timer callback that woke us
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del sock
        gc.collect()
    assert ref() is None
    assert waiters.watcher is None and waiters.closed


def test_bad_input_raises_clearly_and_loses_nothing(make_pair):
    push, pull = make_pair(zmq.PUSH, zmq.PULL)
    push.send(b"one")
    with pytest.raises(TypeError):
        push.send("a str is not bytes")
    with pytest.raises(TypeError):
        push.send_multipart([b"ok", object()])  # checked before any frame is sent
    with pytest.raises(IndexError):
        push.send_multipart([])
    push.send_multipart([b"two", b"2"])
    with pytest.raises((TypeError, BufferError, ValueError)):
        pull.recv_into(b"read-only buffer")
    assert pull.recv() == b"one"
    assert pull.recv_multipart() == [b"two", b"2"]
    with pytest.raises(zmq.Again):
        pull.recv(zmq.DONTWAIT)


def test_recv_into_is_green(make_pair, spawn):
    push, pull = make_pair(zmq.PUSH, zmq.PULL)
    buf = bytearray(16)
    g = spawn(pull.recv_into, buf)
    wait_parked(pull)
    assert not g.ready()
    push.send(b"12345")
    assert g.get(timeout=5) == 5
    assert bytes(buf[:5]) == b"12345"


def test_serializers_are_green(make_pair, spawn):
    a, b = make_pair(zmq.PAIR, zmq.PAIR)
    gs = [
        spawn(b.recv_string),
        spawn(b.recv_json),
        spawn(b.recv_pyobj),
        spawn(b.recv_serialized, lambda frames: frames[0] + frames[1]),
    ]
    wait_parked(b, n=len(gs))
    assert not any(g.ready() for g in gs)
    a.send_string("s")
    a.send_json({"j": 1})
    a.send_pyobj(("p", 2))
    a.send_serialized(b"z", lambda x: [x, x])
    assert [g.get(timeout=5) for g in gs] == ["s", {"j": 1}, ("p", 2), b"zz"]


def test_socket_poll_is_green(make_pair, spawn):
    push, pull = make_pair(zmq.PUSH, zmq.PULL)
    assert pull.poll(10) == 0
    g = spawn(pull.poll, 5000)
    wait_parked(pull, "listeners")
    assert not g.ready()
    push.send(b"x")
    assert g.get(timeout=5) == zmq.POLLIN


def test_user_events_query_does_not_strand_waiters(make_pair, spawn):
    """Reading EVENTS consumes the fd edge; a waiter on the same socket must still wake."""
    a, b = make_pair(zmq.DEALER, zmq.DEALER)
    stop = gevent.event.Event()

    def query():
        while not stop.is_set():
            a.getsockopt(zmq.EVENTS)
            _ = a.events
            gevent.sleep(0)  # a yield, not a wait: one query per hub turn

    spawn(query)
    for i in range(200):
        g = spawn(a.recv)
        wait_parked(a)
        b.send(b"%d" % i)
        assert g.get(timeout=WAKE_BOUND) == b"%d" % i
    stop.set()


@pytest.mark.parametrize("call", ["connect", "bind", "unbind", "disconnect", "failed bind"])
def test_endpoint_calls_consuming_the_edge_still_wake_recv_waiter(ctx, spawn, call):
    """libzmq's bind, connect, unbind and disconnect process the socket's pending
    commands before anything else (socket_base_t calls process_commands), so
    each can consume the fd signal of a message that arrived for a greenlet
    parked in recv, whether the call then succeeds or fails: that greenlet must
    still get the message. (Stranded every time before these calls kept the
    waiting rule.) All inproc: a tcp bind or connect posts a command to the
    socket's own mailbox, raising the fd again and hiding the loss."""
    pull, push = connected_pair(ctx, zmq.PULL, zmq.PUSH, "inproc")
    other = ctx.socket(zmq.PUSH)
    other.linger = 0
    other_addr = inproc_endpoint()
    other.bind(other_addr)
    own_addr = inproc_endpoint()
    if call == "unbind":
        pull.bind(own_addr)
    elif call == "disconnect":
        pull.connect(other_addr)
    receiver = spawn(pull.recv)
    wait_parked(pull)
    push.send(b"news")  # inproc: the news is in pull's mailbox now, its fd raised
    # no yield from here on: the call processes that command, taking the fd's signal
    if call == "connect":
        pull.connect(other_addr)
    elif call == "bind":
        pull.bind(own_addr)
    elif call == "unbind":
        pull.unbind(own_addr)
    elif call == "disconnect":
        pull.disconnect(other_addr)
    else:
        with pytest.raises(zmq.ZMQError) as failed:
            pull.bind(other_addr)  # taken by `other`
        assert failed.value.errno == zmq.EADDRINUSE
    assert receiver.get(timeout=WAKE_BOUND) == b"news"


_SHADOW_CLOSED_BEHIND = """
import gevent, zmq as pyzmq, greenzmq as zmq
for _ in range(30):
    rc = pyzmq.Context(); raw = rc.socket(pyzmq.PULL); raw.linger = 0
    port = raw.bind_to_random_port('tcp://127.0.0.1')
    g = zmq.Socket(shadow=raw)
    g.rcvtimeo = 1
    try:
        g.recv()            # waits on the shared fd, then times out
    except zmq.Again:
        pass
    raw.close(); rc.term()  # the owner closes it behind the shadow's back
    ctx = zmq.Context()
    for i in range(20):     # new sockets reuse the fd numbers
        s = ctx.socket(zmq.PULL); s.linger = 0; s.rcvtimeo = 0
        try:
            s.recv()
        except zmq.Again:
            pass
        gevent.sleep(0)     # a hub turn: a watcher left on a reused fd would fire here
        s.close()
    ctx.destroy(0)
print('OK')
"""


def test_shadow_socket_closed_by_its_owner_leaves_no_watcher_behind():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _SHADOW_CLOSED_BEHIND], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "OK", out.stderr[-2000:]
