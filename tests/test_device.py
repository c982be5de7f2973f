"""greenzmq.device: green proxy/device/steerable proxy/monitored queue and background devices.

Real sockets over inproc and tcp://127.0.0.1; every wait is bounded (RECV_BOUND
via RCVTIMEO, gevent.Timeout, join timeouts), and synchronisation is on
messages, never on sleeps.
"""

from __future__ import annotations

import struct
import threading
import time

import gevent
import pytest
import zmq as plainzmq
from conftest import PARK_TURNS, WAKE_BOUND, inproc_endpoint, run_until_blocked, wait_parked

import greenzmq as zmq
from greenzmq.devices import (
    GreenDevice,
    GreenMonitoredQueue,
    GreenProxy,
    GreenProxySteerable,
    ProcessProxy,
    ThreadDevice,
    ThreadProxySteerable,
    monitored_queue,
)
from greenzmq.error import WrongThreadError

#: libzmq's proxy forwards at most this many messages per direction before it
#: polls again (proxy_burst_size in libzmq's proxy.cpp): tests that want
#: "several bursts" or "a backlog" size their traffic from it.
BURST = 1000
#: Bound (ms) on any single receive in these tests: a lost message fails
#: instead of hanging, and a loaded CI box still has plenty of time.
RECV_BOUND_MS = 10_000
#: Bound (s) on a device ending after its socket/context went away or it was stopped.
END_BOUND = 10.0
#: How long (ms) a paused proxy is watched to show that it forwards nothing.
#: Absence can only be shown over some time; a forwarded message would arrive
#: in microseconds on inproc, so this is generous and keeps the test fast.
QUIET_MS = 200


def _sock(ctx, kind, bind=None, connect=None, **opts):
    s = ctx.socket(kind)
    s.linger = 0
    s.rcvtimeo = RECV_BOUND_MS
    for name, value in opts.items():
        setattr(s, name, value)
    if bind:
        s.bind(bind)
    if connect:
        s.connect(connect)
    return s


def _bound(ctx, kind, transport):
    s = _sock(ctx, kind)
    if transport == "inproc":
        addr = inproc_endpoint("dev")
        s.bind(addr)
        return s, addr
    port = s.bind_to_random_port("tcp://127.0.0.1")
    return s, f"tcp://127.0.0.1:{port}"


def _stats(parts):
    assert len(parts) == 8
    return [struct.unpack("=Q", p)[0] for p in parts]


# -- proxy / device: forwarding both ways ---------------------------------------


def test_req_rep_through_router_dealer_with_capture(ctx, spawn, transport):
    fe, fe_addr = _bound(ctx, zmq.ROUTER, transport)
    be, be_addr = _bound(ctx, zmq.DEALER, transport)
    cap, cap_addr = _bound(ctx, zmq.PUSH, transport)
    tap = _sock(ctx, zmq.PULL, connect=cap_addr)
    dev = spawn(zmq.proxy, fe, be, cap)
    worker = _sock(ctx, zmq.REP, connect=be_addr)
    clients = [_sock(ctx, zmq.REQ, connect=fe_addr) for _ in range(3)]

    def serve(n):
        for _ in range(n):
            worker.send(b"re:" + worker.recv())

    server = spawn(serve, 3 * 4)
    for round_ in range(4):
        for i, c in enumerate(clients):
            c.send(b"%d.%d" % (i, round_))
        for i, c in enumerate(clients):
            assert c.recv() == b"re:%d.%d" % (i, round_)
    server.get(timeout=END_BOUND)
    # the capture socket saw every request and every reply, whole
    captured = [tap.recv_multipart() for _ in range(2 * 3 * 4)]
    bodies = sorted(m[-1] for m in captured)
    assert bodies == sorted(
        [b"%d.%d" % (i, r) for i in range(3) for r in range(4)]
        + [b"re:%d.%d" % (i, r) for i in range(3) for r in range(4)]
    )
    assert all(m[-2] == b"" for m in captured)  # the REQ envelope delimiter is kept
    assert not dev.dead


def test_pub_sub_through_xsub_xpub_forwards_subscriptions(ctx, spawn, transport):
    fe, fe_addr = _bound(ctx, zmq.XSUB, transport)
    be, be_addr = _bound(ctx, zmq.XPUB, transport)
    spawn(zmq.device, zmq.FORWARDER, fe, be)
    # an XPUB publisher sees the subscription arrive: proof it crossed the device
    pub = _sock(ctx, zmq.XPUB, connect=fe_addr)
    sub = _sock(ctx, zmq.SUB, connect=be_addr)
    sub.subscribe(b"a")
    assert pub.recv() == b"\x01a"
    for topic in (b"a1", b"b1", b"a2"):
        pub.send(topic)
    assert sub.recv() == b"a1"
    assert sub.recv() == b"a2"  # b1 was filtered upstream
    sub.unsubscribe(b"a")
    assert pub.recv() == b"\x00a"


def test_streamer_push_pull_keeps_order_and_multipart(ctx, spawn, transport):
    fe, fe_addr = _bound(ctx, zmq.PULL, transport)
    be, be_addr = _bound(ctx, zmq.PUSH, transport)
    spawn(zmq.device, zmq.STREAMER, fe, be)
    push = _sock(ctx, zmq.PUSH, connect=fe_addr)
    pull = _sock(ctx, zmq.PULL, connect=be_addr)
    n = 3 * BURST + 7  # several bursts
    for i in range(n):
        if i % 10 == 0:
            push.send_multipart([b"multi", b"%d" % i, b""])
        else:
            push.send(b"%d" % i)
    for i in range(n):
        expected = [b"multi", b"%d" % i, b""] if i % 10 == 0 else [b"%d" % i]
        assert pull.recv_multipart() == expected


@pytest.mark.timeout(30)
def test_full_destination_holds_message_nothing_lost_or_duplicated(ctx, spawn):
    # The consumer is not reading: the backend fills at its high-water mark and
    # the device must hold, then deliver everything in order once it reads.
    fe = _sock(ctx, zmq.PULL, bind=inproc_endpoint(), rcvhwm=5)
    be = _sock(ctx, zmq.PUSH, bind=inproc_endpoint(), sndhwm=5)
    dev = spawn(zmq.proxy, fe, be)
    push = _sock(ctx, zmq.PUSH, connect=fe.last_endpoint, sndhwm=5)
    pull = _sock(ctx, zmq.PULL, connect=be.last_endpoint, rcvhwm=5)
    n = 500
    sender = spawn(lambda: [push.send(b"%d" % i) for i in range(n)])
    first = pull.recv()  # by now the sender has filled every queue and blocked
    assert not sender.ready() and not dev.dead
    assert [first] + [pull.recv() for _ in range(n - 1)] == [b"%d" % i for i in range(n)]
    sender.get(timeout=END_BOUND)
    pull.rcvtimeo = QUIET_MS
    with pytest.raises(zmq.Again):
        pull.recv()


def test_full_capture_blocks_only_the_device_greenlet(ctx, spawn):
    fe = _sock(ctx, zmq.PULL, bind=inproc_endpoint())
    be = _sock(ctx, zmq.PUSH, bind=inproc_endpoint())
    cap = _sock(ctx, zmq.PUSH, bind=inproc_endpoint())  # nobody reads it yet: sends block
    dev = spawn(zmq.proxy, fe, be, cap)
    push = _sock(ctx, zmq.PUSH, connect=fe.last_endpoint)
    pull = _sock(ctx, zmq.PULL, connect=be.last_endpoint)
    push.send_multipart([b"a", b"b"])
    pull.rcvtimeo = QUIET_MS
    with pytest.raises(zmq.Again):  # the device waits on its capture socket...
        pull.recv()
    assert not dev.dead  # ...and this greenlet ran meanwhile
    tap = _sock(ctx, zmq.PULL, connect=cap.last_endpoint)
    assert tap.recv_multipart() == [b"a", b"b"]
    pull.rcvtimeo = RECV_BOUND_MS
    assert pull.recv_multipart() == [b"a", b"b"]


def test_other_greenlets_stay_responsive_while_forwarding(ctx, spawn):
    fe = _sock(ctx, zmq.PULL, bind=inproc_endpoint(), rcvhwm=0)
    be = _sock(ctx, zmq.PUSH, bind=inproc_endpoint(), sndhwm=0)
    push = _sock(ctx, zmq.PUSH, connect=fe.last_endpoint, sndhwm=0)
    pull = _sock(ctx, zmq.PULL, connect=be.last_endpoint, rcvhwm=0)
    n = 20 * BURST
    for _ in range(n):  # a backlog: the device never runs dry while we measure
        push.send(b"x" * 100)
    dev = spawn(zmq.proxy, fe, be)
    lateness = []
    tick = 0.001

    def ticker():
        while len(lateness) < 5:
            t0 = time.perf_counter()
            gevent.sleep(tick)
            lateness.append(time.perf_counter() - t0 - tick)

    ticks = spawn(ticker)
    ticks.get(timeout=END_BOUND)
    assert max(lateness) < WAKE_BOUND
    assert pull.poll(RECV_BOUND_MS)  # and it was forwarding meanwhile
    assert not dev.dead
    # Stop it while its consumer is alive. (Were `pull` closed first, by garbage
    # collection at the end of the test, in the middle of a burst, libzmq's loop
    # would wait in its blocking send for a peer of the PUSH socket, and see
    # TERMINATE only once one came: see greenzmq/_lending.py.)
    dev.kill(timeout=END_BOUND)
    assert dev.dead


def test_same_socket_frontend_and_backend(ctx, spawn):
    # libzmq allows frontend is backend: messages go back out of the same socket
    echo = _sock(ctx, zmq.ROUTER, bind=inproc_endpoint())
    spawn(zmq.proxy, echo, echo)
    client = _sock(ctx, zmq.DEALER, connect=echo.last_endpoint)
    client.send(b"ping")
    assert client.recv() == b"ping"  # routed back to its own identity


# -- ending: closed sockets, terminated context, bad input ------------------------


@pytest.mark.parametrize("which", ["frontend", "backend"])
def test_closing_a_socket_ends_the_device_with_enotsock(ctx, spawn, which):
    fe = _sock(ctx, zmq.PULL, bind=inproc_endpoint())
    be = _sock(ctx, zmq.PUSH, bind=inproc_endpoint())
    dev = spawn(zmq.proxy, fe, be)
    gevent.sleep(0)  # let it start waiting
    (fe if which == "frontend" else be).close()
    dev.join(timeout=END_BOUND)
    assert dev.dead
    assert isinstance(dev.exception, zmq.ZMQError) and dev.exception.errno == zmq.ENOTSOCK


def test_closing_a_socket_of_a_paused_device_ends_it(steered):
    push, pull, req, dev = steered
    req.send(b"PAUSE")
    assert req.recv() == b""
    push.send(b"queued while paused")  # must not make the paused device spin
    frontend = dev.args[0]
    frontend.close()
    dev.join(timeout=END_BOUND)
    assert isinstance(dev.exception, zmq.ZMQError) and dev.exception.errno == zmq.ENOTSOCK


def test_context_term_ends_the_device_with_context_terminated(spawn):
    ctx = zmq.Context()
    fe = _sock(ctx, zmq.PULL, bind=inproc_endpoint())
    be = _sock(ctx, zmq.PUSH, bind=inproc_endpoint())
    ended = gevent.event.Event()

    def run():
        try:
            zmq.proxy(fe, be)
        finally:
            fe.close()
            be.close()
            ended.set()

    dev = spawn(run)
    gevent.sleep(0)
    term = spawn(ctx.term)
    assert ended.wait(END_BOUND)
    term.get(timeout=END_BOUND)
    assert isinstance(dev.exception, zmq.ContextTerminated)


def test_bad_arguments_raise_before_forwarding(ctx):
    s = _sock(ctx, zmq.PULL, bind=inproc_endpoint())
    with pytest.raises(TypeError, match="backend must be a zmq socket"):
        zmq.proxy(s, "not a socket")
    with pytest.raises(ValueError, match="device_type"):
        zmq.device(12345, s, s)
    with pytest.raises(TypeError, match="in_prefix must be bytes"):
        monitored_queue(s, s, s, in_prefix="in")
    closed = _sock(ctx, zmq.PUSH)
    closed.close()
    with pytest.raises(zmq.ZMQError) as info:
        zmq.proxy(s, closed)
    assert info.value.errno == zmq.ENOTSOCK
    # the sockets stay usable
    p = _sock(ctx, zmq.PUSH, connect=s.last_endpoint)
    p.send(b"still fine")
    assert s.recv() == b"still fine"


def test_socket_waited_on_in_another_thread_is_refused(ctx):
    """A socket moves to the thread that uses it only while nobody waits on it:
    with a greenlet of another thread parked in its recv, the device refuses it."""
    addr = inproc_endpoint()
    made, got, parked = [], [], threading.Event()

    def other():
        s = ctx.socket(zmq.PULL)
        s.linger = 0
        s.bind(addr)
        made.append(s)
        r = gevent.spawn(s.recv)
        wait_parked(s)
        parked.set()
        got.append(r.get(timeout=END_BOUND))
        s.close()

    t = threading.Thread(target=other, daemon=True)
    t.start()
    assert parked.wait(END_BOUND)
    mine = _sock(ctx, zmq.PUSH)
    release = _sock(ctx, zmq.PUSH, connect=addr)
    with pytest.raises(WrongThreadError, match="waiting on it"):
        zmq.proxy(made[0], mine)
    release.send(b"done")
    t.join(END_BOUND)
    assert got == [b"done"]


def test_socket_made_by_another_thread_moves_to_the_device(ctx, spawn):
    """Ownership follows use: a socket another thread made (and left idle) can run a device here."""
    made = []
    t = threading.Thread(target=lambda: made.append(_sock(ctx, zmq.PULL, bind=inproc_endpoint())))
    t.start()
    t.join(END_BOUND)
    fe = made[0]
    be = _sock(ctx, zmq.PUSH, bind=inproc_endpoint())
    spawn(zmq.proxy, fe, be)
    push = _sock(ctx, zmq.PUSH, connect=fe.last_endpoint)
    pull = _sock(ctx, zmq.PULL, connect=be.last_endpoint)
    pull.rcvtimeo = int(END_BOUND * 1000)
    push.send(b"through")
    assert pull.recv() == b"through"


# -- lending: libzmq's proxy runs on the caller's sockets in a native thread ------------


#: Close-while-forwarding rounds (200 closes in a loop with traffic flowing).
CLOSE_ROUNDS = 200
#: PAUSE/RESUME cycles under traffic: each has one chance for a forward to slip
#: between libzmq's last count and its end, so several make a miss likely.
PAUSE_ROUNDS = 30
#: How long (s) the gevent.Timeout around a running device waits before it fires:
#: time is the subject here, so generous (the device is forwarding long before).
TIMEOUT_FIRES = WAKE_BOUND


def _forwarding(ctx, spawn, device=None):
    """A PULL->PUSH device over inproc with one message through it (so libzmq's
    loop runs): (frontend, backend, push, pull, greenlet)."""
    fe = _sock(ctx, zmq.PULL, bind=inproc_endpoint())
    be = _sock(ctx, zmq.PUSH, bind=inproc_endpoint())
    push = _sock(ctx, zmq.PUSH, connect=fe.last_endpoint)
    pull = _sock(ctx, zmq.PULL, connect=be.last_endpoint)
    dev = spawn(device or zmq.proxy, fe, be)
    push.send(b"warm")
    assert pull.recv() == b"warm"
    return fe, be, push, pull, dev


def _assert_green_again(fe, be, push, pull):
    """The device's sockets are usable by greenlets again: a message through each arrives."""
    push.send(b"to the frontend")
    assert fe.recv() == b"to the frontend"
    be.send(b"from the backend")
    assert pull.recv() == b"from the backend"


def test_green_calls_on_lent_sockets_raise_socket_lent_error_naming_the_device(ctx, spawn):
    fe, be, push, pull, dev = _forwarding(ctx, spawn)
    buf = bytearray(8)
    calls = {
        "recv": lambda s: s.recv(),
        "recv_multipart": lambda s: s.recv_multipart(),
        "recv_into": lambda s: s.recv_into(buf),
        "send": lambda s: s.send(b"x"),
        "send_multipart": lambda s: s.send_multipart([b"x", b"y"]),
        "poll": lambda s: s.poll(0),
        "EVENTS": lambda s: s.get(zmq.EVENTS),
        "Poller": lambda s: _poll_one(s),
        "setsockopt": lambda s: s.setsockopt(zmq.SNDHWM, 10),
        "bind": lambda s: s.bind(inproc_endpoint()),
        "connect": lambda s: s.connect(inproc_endpoint()),
        "unbind": lambda s: s.unbind(s.last_endpoint),
        "disconnect": lambda s: s.disconnect("inproc://nowhere"),
        "monitor": lambda s: s.monitor(inproc_endpoint()),
    }
    for sock in (fe, be):
        for name, call in calls.items():
            with pytest.raises(zmq.SocketLentError, match=r"lent to greenzmq\.proxy\(frontend=") as info:
                call(sock)
            assert repr(fe) in str(info.value) and repr(be) in str(info.value), name
    # nothing was taken or sent: the device still forwards, in order
    push.send(b"after")
    assert pull.recv() == b"after"
    assert not dev.dead


def _poll_one(sock):
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    return poller.poll(0)


def test_a_second_device_on_a_lent_socket_is_refused(ctx, spawn):
    fe, be, push, pull, dev = _forwarding(ctx, spawn)
    other = _sock(ctx, zmq.PUSH, bind=inproc_endpoint())
    with pytest.raises(zmq.SocketLentError, match=r"lent to greenzmq\.proxy\(") as info:
        zmq.proxy(fe, other)
    assert repr(fe) in str(info.value)
    with pytest.raises(zmq.SocketLentError):
        zmq.proxy_steerable(other, be)
    push.send(b"still mine")  # the first device keeps both sockets and forwards
    assert pull.recv() == b"still mine"
    assert not dev.dead


def test_killing_the_device_greenlet_gives_the_sockets_back(ctx, spawn):
    fe, be, push, pull, dev = _forwarding(ctx, spawn)
    dev.kill(timeout=END_BOUND)
    assert dev.dead and isinstance(dev.value, gevent.GreenletExit)
    _assert_green_again(fe, be, push, pull)


def test_a_timeout_around_the_device_gives_the_sockets_back(ctx, spawn):
    fe = _sock(ctx, zmq.PULL, bind=inproc_endpoint())
    be = _sock(ctx, zmq.PUSH, bind=inproc_endpoint())
    push = _sock(ctx, zmq.PUSH, connect=fe.last_endpoint)
    pull = _sock(ctx, zmq.PULL, connect=be.last_endpoint)
    timeout = gevent.Timeout(TIMEOUT_FIRES)

    def run():
        with timeout:
            zmq.proxy(fe, be)

    dev = spawn(run)
    push.send(b"while it runs")
    assert pull.recv() == b"while it runs"
    dev.join(END_BOUND)
    assert dev.exception is timeout  # the Timeout propagated, once the sockets were back
    _assert_green_again(fe, be, push, pull)


def test_killing_a_paused_steerable_device_gives_the_sockets_back(steered):
    push, pull, req, dev = steered
    fe, be = dev.args[:2]
    req.send(b"PAUSE")
    assert req.recv() == b""
    dev.kill(timeout=END_BOUND)
    assert dev.dead
    _assert_green_again(fe, be, push, pull)


def _forever(call, *args):
    while True:
        call(*args)


def test_closing_lent_sockets_with_traffic_flowing_ends_each_device_with_enotsock(ctx, spawn):
    """Close a lent socket while libzmq forwards a stream, CLOSE_ROUNDS times:
    each device ends with ENOTSOCK, nothing crashes, the other socket is green again."""
    for round_ in range(CLOSE_ROUNDS):
        fe = _sock(ctx, zmq.PULL, bind=inproc_endpoint())
        be = _sock(ctx, zmq.PUSH, bind=inproc_endpoint())
        push = _sock(ctx, zmq.PUSH, connect=fe.last_endpoint)
        pull = _sock(ctx, zmq.PULL, connect=be.last_endpoint)
        dev = spawn(zmq.proxy, fe, be)
        feeder = spawn(_forever, push.send, b"m")  # green: waits while the queues are full
        assert pull.recv() == b"m"  # libzmq is forwarding the stream
        drain = spawn(_forever, pull.recv)  # so libzmq never waits for room
        closing, other = (fe, be) if round_ % 2 else (be, fe)
        closing.close()
        dev.join(END_BOUND)
        assert isinstance(dev.exception, zmq.ZMQError) and dev.exception.errno == zmq.ENOTSOCK, round_
        other.get(zmq.EVENTS)  # green again (SocketLentError otherwise)
        gevent.killall([feeder, drain], timeout=END_BOUND)
        for s in (other, push, pull):
            s.close()


def test_closing_a_lent_socket_from_the_hub_ends_the_device(ctx, spawn):
    fe, be, push, pull, dev = _forwarding(ctx, spawn)
    closed = gevent.event.Event()

    def close_in_hub():
        be.close()  # a callback of the hub: it cannot yield, it waits for libzmq's thread
        closed.set()

    gevent.get_hub().loop.run_callback(close_in_hub)
    assert closed.wait(END_BOUND)
    dev.join(END_BOUND)
    assert isinstance(dev.exception, zmq.ZMQError) and dev.exception.errno == zmq.ENOTSOCK
    push.send(b"x")
    assert fe.recv() == b"x"


@pytest.mark.parametrize("state", ["forwarding", "paused"])
def test_closing_a_lent_socket_from_another_thread_ends_the_device(ctx, spawn, state):
    """The private control pair and the device's greenlets belong to the device's
    hub, which does the stop; the closing thread waits for the sockets."""
    if state == "forwarding":
        fe, be, push, pull, dev = _forwarding(ctx, spawn)
    else:
        ctl = _sock(ctx, zmq.PAIR, bind=inproc_endpoint())
        peer = _sock(ctx, zmq.PAIR, connect=ctl.last_endpoint)
        fe, be, push, pull, dev = _forwarding(ctx, spawn, lambda f, b: zmq.proxy_steerable(f, b, None, ctl))
        peer.send(b"PAUSE")
        peer.send(b"STATISTICS")  # answered once PAUSE took effect
        assert len(peer.recv_multipart()) == 8
        # the device greenlet sleeps, listening on its private control pair
        wait_parked(fe._waiters.lent_to._ctl, "listeners")
    errors = []

    def close_elsewhere():
        try:
            fe.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    t = threading.Thread(target=close_elsewhere, daemon=True)
    t.start()
    dev.join(END_BOUND)  # this hub runs the stop that thread asked for
    assert isinstance(dev.exception, zmq.ZMQError) and dev.exception.errno == zmq.ENOTSOCK
    t.join(END_BOUND)
    assert not t.is_alive() and errors == [] and fe.closed
    be.send(b"green again")
    assert pull.recv() == b"green again"


#: Rounds in which to catch close() waiting for libzmq's thread: that thread
#: may have returned already when close() first looks (then nothing waits,
#: and no interruption can land), now and then on a busy machine.
CATCH_ROUNDS = 30


@pytest.mark.parametrize("interruption", ["kill", "Timeout"])
def test_close_of_a_lent_socket_interrupted_while_the_device_stops_still_closes_it(ctx, spawn, interruption):
    """close() of a lent socket first ends the device and waits for libzmq's
    thread to return; a kill or gevent.Timeout landing on the closing greenlet
    meanwhile must not leave the socket open: it is closed, then the
    interruption propagates. (The socket stayed open, green again.)"""
    timeout = gevent.Timeout(TIMEOUT_FIRES)  # never started: thrown in below

    def close(sock):
        try:
            sock.close()
        except gevent.Timeout as exc:
            return exc

    for round_ in range(CATCH_ROUNDS):
        fe, be, push, pull, dev = _forwarding(ctx, spawn)
        closer = spawn(close, fe)
        run_until_blocked()  # it asked the device to stop, and waits for libzmq's thread
        caught = not closer.ready()
        if not caught:
            closer.get()  # close() did not have to wait: it returned (or raises here)
        closer.kill(gevent.GreenletExit if interruption == "kill" else timeout, block=False)
        closer.join(END_BOUND)
        dev.join(END_BOUND)
        assert fe.closed, f"round {round_}: close() left the socket open"
        assert isinstance(dev.exception, zmq.ZMQError) and dev.exception.errno == zmq.ENOTSOCK
        if caught:
            break
        for s in (be, push, pull):
            s.close()
    else:
        pytest.fail(f"close() never waited for libzmq's thread in {CATCH_ROUNDS} rounds")
    if interruption == "kill":
        assert isinstance(closer.value, gevent.GreenletExit)
    else:
        assert closer.value is timeout
    with pytest.raises(zmq.ZMQError) as closed:
        fe.recv(zmq.DONTWAIT)
    assert closed.value.errno == zmq.ENOTSOCK
    be.send(b"green again")  # the other socket was given back
    assert pull.recv() == b"green again"


def test_destroying_the_context_from_another_thread_ends_a_device_with_context_terminated():
    """destroy() from another OS thread while a device runs: the device's own
    hub stops it and closes the socket, and the device ends with
    ContextTerminated, as when its own thread destroys the context, however
    slow the destroying thread is to go on. (It ended with a plain "socket
    closed" ZMQError whenever it looked before the destroying thread had
    closed the socket: nearly always, and always here, where that thread
    stands still.)"""
    ctx = zmq.Context()
    running, ended, errors = threading.Event(), threading.Event(), []

    def device(fe, be):
        try:
            zmq.proxy(fe, be)
        except BaseException as exc:
            errors.append(exc)
        finally:
            fe.close()  # as a background device does when it ends
            be.close()
            ended.set()

    def run_device_in_a():
        dev = _forwarding(ctx, gevent.spawn, device)[-1]  # one message went through it
        running.set()
        dev.join(END_BOUND)

    a = threading.Thread(target=run_device_in_a, daemon=True)
    a.start()
    assert running.wait(END_BOUND)
    destroyer = gevent.spawn(ctx.destroy, 0)
    run_until_blocked()  # it reached a lent socket, and waits for the device's thread
    assert not destroyer.ready()
    # this thread stands still now, its hub too: thread A alone ends the device
    assert ended.wait(END_BOUND)
    destroyer.get(timeout=END_BOUND)
    a.join(END_BOUND)
    assert not a.is_alive() and len(errors) == 1
    assert isinstance(errors[0], zmq.ContextTerminated), repr(errors[0])
    assert ctx.closed


def test_destroying_the_context_ends_a_running_device_with_context_terminated(spawn):
    ctx = zmq.Context()
    fe, be, push, pull, dev = _forwarding(ctx, spawn)
    with gevent.Timeout(END_BOUND):
        ctx.destroy(linger=0)
    dev.join(END_BOUND)
    assert isinstance(dev.exception, zmq.ContextTerminated)
    assert fe.closed and be.closed


def test_term_ends_a_paused_device_with_context_terminated(spawn):
    """A paused device has no libzmq loop to see ETERM: it listens for it on its
    private control pair. (Its control socket is of another context here, so
    the steering greenlet cannot be the one that notices.)"""
    ctx, steering_ctx = zmq.Context(), zmq.Context()
    fe = _sock(ctx, zmq.PULL, bind=inproc_endpoint())
    be = _sock(ctx, zmq.PUSH, bind=inproc_endpoint())
    ctl = _sock(steering_ctx, zmq.PAIR, bind=inproc_endpoint())
    peer = _sock(steering_ctx, zmq.PAIR, connect=ctl.last_endpoint)
    ended = gevent.event.Event()

    def run():
        try:
            zmq.proxy_steerable(fe, be, None, ctl)
        finally:
            for s in (fe, be):
                s.close()
            ended.set()

    dev = spawn(run)
    peer.send(b"PAUSE")
    peer.send(b"STATISTICS")  # answered once PAUSE took effect
    assert len(peer.recv_multipart()) == 8
    term = spawn(ctx.term)
    assert ended.wait(END_BOUND)
    term.get(timeout=END_BOUND)
    assert isinstance(dev.exception, zmq.ContextTerminated)
    steering_ctx.destroy(linger=0)


def test_greenzmq_device_is_the_module_and_callable_as_zmq_device(ctx, spawn):
    import greenzmq.device as module

    assert zmq.device is module
    assert zmq.device.monitored_queue is monitored_queue
    assert zmq.device.proxy is zmq.proxy and zmq.device.proxy_steerable is zmq.proxy_steerable
    fe, be, push, pull, dev = _forwarding(ctx, spawn, lambda f, b: zmq.device.device(zmq.STREAMER, f, b))
    with pytest.raises(zmq.SocketLentError, match=r"greenzmq\.device\(zmq\.STREAMER, frontend="):
        fe.recv()
    fe2 = _sock(ctx, zmq.PULL, bind=inproc_endpoint())
    be2 = _sock(ctx, zmq.PUSH, bind=inproc_endpoint())
    spawn(zmq.device, zmq.QUEUE, fe2, be2)  # called like pyzmq's zmq.device
    push2 = _sock(ctx, zmq.PUSH, connect=fe2.last_endpoint)
    pull2 = _sock(ctx, zmq.PULL, connect=be2.last_endpoint)
    push2.send(b"q")
    assert pull2.recv() == b"q"


# -- proxy_steerable ------------------------------------------------------------------


@pytest.fixture
def steered(ctx, spawn):
    """A steerable PULL->PUSH proxy with a REP control socket: (push, pull, control, greenlet)."""
    fe = _sock(ctx, zmq.PULL, bind=inproc_endpoint())
    be = _sock(ctx, zmq.PUSH, bind=inproc_endpoint())
    ctl = _sock(ctx, zmq.REP, bind=inproc_endpoint())
    dev = spawn(zmq.proxy_steerable, fe, be, None, ctl)
    push = _sock(ctx, zmq.PUSH, connect=fe.last_endpoint)
    pull = _sock(ctx, zmq.PULL, connect=be.last_endpoint)
    req = _sock(ctx, zmq.REQ, connect=ctl.last_endpoint)
    return push, pull, req, dev


def test_pause_stops_and_resume_restarts_forwarding(steered):
    push, pull, req, _ = steered
    push.send(b"before")
    assert pull.recv() == b"before"
    req.send(b"PAUSE")
    assert req.recv_multipart() == [b""]  # REP control: an empty reply
    push.send(b"during")
    assert pull.poll(QUIET_MS) == 0
    req.send(b"RESUME")
    assert req.recv_multipart() == [b""]
    assert pull.recv() == b"during"


def test_statistics_counts_frames_and_bytes_each_way(ctx, spawn):
    fe = _sock(ctx, zmq.ROUTER, bind=inproc_endpoint())
    be = _sock(ctx, zmq.DEALER, bind=inproc_endpoint())
    ctl = _sock(ctx, zmq.REP, bind=inproc_endpoint())
    spawn(zmq.proxy_steerable, fe, be, None, ctl)
    client = _sock(ctx, zmq.DEALER, connect=fe.last_endpoint, routing_id=b"cli")
    worker = _sock(ctx, zmq.DEALER, connect=be.last_endpoint)
    req = _sock(ctx, zmq.REQ, connect=ctl.last_endpoint)
    req.send(b"STATISTICS")
    assert _stats(req.recv_multipart()) == [0] * 8
    client.send_multipart([b"0123456789", b"abcde"])
    got = worker.recv_multipart()
    assert got == [b"cli", b"0123456789", b"abcde"]
    worker.send_multipart([b"cli", b"xyz"])
    assert client.recv_multipart() == [b"xyz"]
    req.send(b"STATISTICS")
    # frontend: 3 frames/18 bytes in, 2 frames/6 bytes out; backend the mirror
    assert _stats(req.recv_multipart()) == [3, 18, 2, 6, 2, 6, 3, 18]


def test_statistics_match_libzmq_own_steerable_proxy():
    # The same traffic through libzmq's zmq_proxy_steerable (plain pyzmq, in a
    # thread) and through ours must give the same 8 counters.
    def traffic(lib, run_proxy):
        ctx = lib.Context()
        fe, be, ctl = ctx.socket(lib.ROUTER), ctx.socket(lib.DEALER), ctx.socket(lib.REP)
        names = [inproc_endpoint("lib") for _ in range(3)]
        for s, name in zip((fe, be, ctl), names):
            s.linger = 0
            s.bind(name)
        handle = run_proxy(fe, be, ctl)
        client = ctx.socket(lib.DEALER)
        client.routing_id = b"c1"
        worker = ctx.socket(lib.DEALER)
        req = ctx.socket(lib.REQ)
        for s, name in zip((client, worker, req), names):
            s.linger = 0
            s.rcvtimeo = RECV_BOUND_MS
            s.connect(name)
        for i in range(5):
            client.send_multipart([b"q" * i, b"body%d" % i])
            ident, *rest = worker.recv_multipart()
            worker.send_multipart([ident, b"r" * (2 * i + 1)])
            client.recv_multipart()
        req.send(b"STATISTICS")
        stats = _stats(req.recv_multipart())
        req.send(b"TERMINATE")
        req.recv()
        handle()
        ctx.destroy(linger=0)
        return stats

    def libzmq(fe, be, ctl):
        t = threading.Thread(target=plainzmq.proxy_steerable, args=(fe, be, None, ctl), daemon=True)
        t.start()
        return lambda: t.join(END_BOUND)

    def green(fe, be, ctl):
        g = gevent.spawn(zmq.proxy_steerable, fe, be, None, ctl)
        return lambda: g.get(timeout=END_BOUND)

    assert traffic(zmq, green) == traffic(plainzmq, libzmq)


def test_terminate_returns_zero(steered):
    push, pull, req, dev = steered
    req.send(b"TERMINATE")
    assert req.recv_multipart() == [b""]
    assert dev.get(timeout=END_BOUND) == 0


def test_unknown_command_gets_empty_reply_and_is_ignored(steered):
    push, pull, req, dev = steered
    req.send(b"pause")  # commands are case-sensitive, as in libzmq
    assert req.recv_multipart() == [b""]
    push.send(b"m")
    assert pull.recv() == b"m"
    req.send_multipart([b"STATISTICS", b"ignored extra frame"])
    assert _stats(req.recv_multipart())[0] == 1
    assert not dev.dead


def test_statistics_stay_exact_across_pause_and_resume(steered):
    """PAUSE ends libzmq's run and RESUME starts another: the counts add up across
    runs, and nothing is forwarded between the last count of a run and its end."""
    push, pull, req, dev = steered
    late = 10  # sent once paused
    for i in range(BURST):
        push.send(b"%04d" % i)
    req.send(b"PAUSE")
    assert req.recv() == b""
    got = []
    while pull.poll(0):  # what libzmq forwarded before it stopped is all here
        got.append(pull.recv())
    req.send(b"STATISTICS")
    n = len(got)
    assert _stats(req.recv_multipart()) == [n, 4 * n, 0, 0, 0, 0, n, 4 * n]
    for i in range(late):
        push.send(b"L%03d" % i)
    assert pull.poll(QUIET_MS) == 0  # paused
    req.send(b"RESUME")
    assert req.recv() == b""
    got += [pull.recv() for _ in range(BURST + late - n)]
    assert got == [b"%04d" % i for i in range(BURST)] + [b"L%03d" % i for i in range(late)]
    req.send(b"STATISTICS")
    total = BURST + late
    assert _stats(req.recv_multipart()) == [total, 4 * total, 0, 0, 0, 0, total, 4 * total]


def test_statistics_stay_exact_when_pausing_under_traffic(ctx, spawn):
    """PAUSE while messages keep coming: what libzmq forwarded before it stopped is
    exactly what STATISTICS counts (nothing slips through between the last count
    of a run and its end), over PAUSE_ROUNDS pauses."""
    # the source has a high-water mark (the feeder waits, green, when it is full);
    # the destination has none (libzmq never waits for room)
    fe = _sock(ctx, zmq.PULL, bind=inproc_endpoint())
    be = _sock(ctx, zmq.PUSH, bind=inproc_endpoint(), sndhwm=0)
    ctl = _sock(ctx, zmq.REP, bind=inproc_endpoint())
    spawn(zmq.proxy_steerable, fe, be, None, ctl)
    push = _sock(ctx, zmq.PUSH, connect=fe.last_endpoint)
    pull = _sock(ctx, zmq.PULL, connect=be.last_endpoint, rcvhwm=0)
    req = _sock(ctx, zmq.REQ, connect=ctl.last_endpoint)
    feeder = spawn(_forever, push.send, b"m")  # keeps libzmq's source busy
    received = 0
    for _ in range(PAUSE_ROUNDS):
        assert pull.recv() == b"m"  # forwarding
        received += 1
        req.send(b"PAUSE")
        assert req.recv() == b""
        while pull.poll(0):  # what libzmq forwarded before it stopped is all here
            pull.recv()
            received += 1
        req.send(b"STATISTICS")
        stats = _stats(req.recv_multipart())
        assert stats[6] == received and stats[4] == 0  # backend: frames sent, received
        req.send(b"RESUME")
        assert req.recv() == b""
    feeder.kill()


def test_pause_and_resume_many_times_lose_and_duplicate_nothing(steered):
    push, pull, req, dev = steered
    sent = 0
    received = []
    for _ in range(20):
        for _ in range(10):
            push.send(b"%d" % sent)
            sent += 1
        req.send(b"PAUSE")
        assert req.recv() == b""
        while pull.poll(0):
            received.append(pull.recv())
        req.send(b"RESUME")
        assert req.recv() == b""
    received += [pull.recv() for _ in range(sent - len(received))]
    assert received == [b"%d" % i for i in range(sent)]
    req.send(b"STATISTICS")
    assert _stats(req.recv_multipart())[0] == sent
    assert not dev.dead


def test_pair_control_gets_no_reply_except_statistics(ctx, spawn):
    fe = _sock(ctx, zmq.PULL, bind=inproc_endpoint())
    be = _sock(ctx, zmq.PUSH, bind=inproc_endpoint())
    ctl = _sock(ctx, zmq.PAIR, bind=inproc_endpoint())
    dev = spawn(zmq.proxy_steerable, fe, be, None, ctl)
    peer = _sock(ctx, zmq.PAIR, connect=ctl.last_endpoint)
    peer.send(b"PAUSE")
    peer.send(b"RESUME")
    peer.send(b"STATISTICS")
    # the first thing back is the statistics: PAUSE and RESUME sent nothing
    assert len(peer.recv_multipart()) == 8
    peer.send(b"TERMINATE")
    assert dev.get(timeout=END_BOUND) == 0
    assert peer.poll(0) == 0


# -- monitored_queue ------------------------------------------------------------------


def test_monitored_queue_router_router_swaps_ids_and_prefixes(ctx, spawn):
    ins = _sock(ctx, zmq.ROUTER, bind=inproc_endpoint())
    outs = _sock(ctx, zmq.ROUTER, bind=inproc_endpoint())
    mon = _sock(ctx, zmq.PUSH, bind=inproc_endpoint())
    tap = _sock(ctx, zmq.PULL, connect=mon.last_endpoint)
    spawn(monitored_queue, ins, outs, mon, b"IN", b"OUT")
    client = _sock(ctx, zmq.DEALER, connect=ins.last_endpoint, routing_id=b"client")
    worker = _sock(ctx, zmq.DEALER, connect=outs.last_endpoint, routing_id=b"worker")
    # the worker announces itself first, so the out ROUTER can route to it
    worker.send_multipart([b"nobody", b"ready"])
    assert tap.recv_multipart() == [b"OUT", b"nobody", b"worker", b"ready"]
    client.send_multipart([b"worker", b"hello"])
    assert worker.recv_multipart() == [b"client", b"hello"]
    assert tap.recv_multipart() == [b"IN", b"worker", b"client", b"hello"]
    worker.send_multipart([b"client", b"reply"])
    assert client.recv_multipart() == [b"worker", b"reply"]
    assert tap.recv_multipart() == [b"OUT", b"client", b"worker", b"reply"]


def test_monitored_queue_without_routers_keeps_frames(ctx, spawn):
    ins = _sock(ctx, zmq.PULL, bind=inproc_endpoint())
    outs = _sock(ctx, zmq.PUSH, bind=inproc_endpoint())
    mon = _sock(ctx, zmq.PUSH, bind=inproc_endpoint())
    tap = _sock(ctx, zmq.PULL, connect=mon.last_endpoint)
    spawn(monitored_queue, ins, outs, mon)
    push = _sock(ctx, zmq.PUSH, connect=ins.last_endpoint)
    pull = _sock(ctx, zmq.PULL, connect=outs.last_endpoint)
    push.send_multipart([b"a", b"b"])
    assert pull.recv_multipart() == [b"a", b"b"]
    assert tap.recv_multipart() == [b"in", b"a", b"b"]


#: Messages pushed through a monitored queue whose destination is full.
HELD_MESSAGES = 200


def test_monitored_queue_holds_a_message_while_its_destination_is_full(ctx, spawn):
    """With tiny high-water marks on the way out and a reader that starts late,
    the queue holds the message it could not send and sends it once there is
    room: every message arrives whole, once, in order, at the destination and
    (prefixed) at the monitor."""
    tiny = {"sndhwm": 1, "rcvhwm": 1}
    ins = _sock(ctx, zmq.PULL, bind=inproc_endpoint(), **tiny)
    outs = _sock(ctx, zmq.PUSH, bind=inproc_endpoint(), **tiny)
    mon = _sock(ctx, zmq.PUSH, bind=inproc_endpoint())  # default HWM: room for every copy
    spawn(monitored_queue, ins, outs, mon)
    push = _sock(ctx, zmq.PUSH, connect=ins.last_endpoint, **tiny)
    pull = _sock(ctx, zmq.PULL, connect=outs.last_endpoint, **tiny)
    tap = _sock(ctx, zmq.PULL, connect=mon.last_endpoint)
    messages = [[b"%d" % i, b"x" * (i % 7), b"end"] for i in range(HELD_MESSAGES)]
    sender = spawn(lambda: [push.send_multipart(m) for m in messages])
    # until the queue holds a message it could not send: it then waits for
    # room in its destination (a listener on outs for POLLOUT)
    for _ in range(PARK_TURNS):
        if any(mask & zmq.POLLOUT for mask, _ in outs._waiters.listeners.values()):
            break
        gevent.sleep(0)
    else:
        raise AssertionError("the queue never waited for room in its destination")
    got = [pull.recv_multipart() for _ in messages]
    sender.get(timeout=END_BOUND)
    assert got == messages
    assert [tap.recv_multipart() for _ in messages] == [[b"in", *m] for m in messages]


# -- background devices -----------------------------------------------------------------


def test_green_device_serves_inproc_endpoints_of_the_callers_context(ctx):
    dev = GreenDevice(zmq.QUEUE, zmq.ROUTER, zmq.DEALER, context=ctx)
    fe, be = inproc_endpoint(), inproc_endpoint()
    dev.bind_in(fe)
    dev.bind_out(be)
    dev.setsockopt_in(zmq.LINGER, 0)
    dev.setsockopt_out(zmq.LINGER, 0)
    dev.start()  # bound on return: connecting now is safe
    worker = _sock(ctx, zmq.REP, connect=be)
    client = _sock(ctx, zmq.REQ, connect=fe)
    server = gevent.spawn(lambda: worker.send(worker.recv() + b"!"))
    client.send(b"hi")
    assert client.recv() == b"hi!"
    server.get(timeout=END_BOUND)
    dev.stop()
    dev.join(END_BOUND)
    assert dev.done and dev.exception is None
    assert all(s.closed for s in dev._sockets)


def test_green_device_stop_with_a_timeout_leaves_a_blocked_device_to_close_its_sockets(ctx, spawn):
    """libzmq's proxy blocks in a send to a full destination and sees TERMINATE only
    after it: stop(timeout) returns meanwhile, and the device closes its sockets
    (given back first) once the consumer reads again."""
    dev = GreenDevice(zmq.QUEUE, zmq.PULL, zmq.PUSH, context=ctx)
    fe, be = inproc_endpoint(), inproc_endpoint()
    dev.bind_in(fe)
    dev.bind_out(be)
    dev.setsockopt_out(zmq.SNDHWM, 1)
    for opt in (dev.setsockopt_in, dev.setsockopt_out):
        opt(zmq.LINGER, 0)
    dev.start()
    push = _sock(ctx, zmq.PUSH, connect=fe)
    pull = _sock(ctx, zmq.PULL, connect=be, rcvhwm=1)
    for i in range(BURST // 10):
        push.send(b"%d" % i)
    assert pull.recv() == b"0"  # libzmq forwards, and soon waits for room: pull reads no more
    dev.stop(timeout=QUIET_MS / 1000)
    assert not dev.done and not any(s.closed for s in dev._sockets)
    with pytest.raises(zmq.SocketLentError):
        dev._sockets[0].recv()  # still libzmq's
    drain = spawn(_forever, pull.recv)
    dev.join(END_BOUND)
    assert dev.done and all(s.closed for s in dev._sockets)
    drain.kill()


def test_green_device_stopped_before_it_ran_closes_its_sockets(ctx):
    dev = GreenDevice(zmq.QUEUE, zmq.PULL, zmq.PUSH, context=ctx)
    dev.bind_in(inproc_endpoint())
    dev.bind_out(inproc_endpoint())
    dev.start()
    with pytest.raises(RuntimeError, match="already started"):
        dev.start()
    dev.stop()  # its greenlet has not run yet
    dev.stop()  # twice is harmless
    assert dev.done and all(s.closed for s in dev._sockets)


def test_background_misuse_raises_runtime_error():
    for kind in (GreenDevice, ThreadDevice):
        dev = kind(zmq.QUEUE, zmq.PULL, zmq.PUSH)
        with pytest.raises(RuntimeError, match="not started"):
            dev.join()
        dev.stop()  # stopping a device never started does nothing


def test_green_device_start_raises_bind_errors_and_leaks_nothing(ctx):
    taken = _sock(ctx, zmq.PULL, bind=inproc_endpoint())
    dev = GreenDevice(zmq.QUEUE, zmq.PULL, zmq.PUSH, context=ctx)
    dev.bind_in(taken.last_endpoint.decode())
    with pytest.raises(zmq.ZMQError) as info:
        dev.start()
    assert info.value.errno == zmq.EADDRINUSE
    assert all(s.closed for s in dev._sockets)


def test_green_proxy_capture_via_mon_methods(ctx):
    dev = GreenProxy(zmq.PULL, zmq.PUSH, zmq.PUSH, context=ctx)
    fe, be, mon = inproc_endpoint(), inproc_endpoint(), inproc_endpoint()
    dev.bind_in(fe)
    dev.bind_out(be)
    dev.bind_mon(mon)
    for opt in (dev.setsockopt_in, dev.setsockopt_out, dev.setsockopt_mon):
        opt(zmq.LINGER, 0)
    dev.start()
    push = _sock(ctx, zmq.PUSH, connect=fe)
    pull = _sock(ctx, zmq.PULL, connect=be)
    tap = _sock(ctx, zmq.PULL, connect=mon)
    push.send(b"x")
    assert pull.recv() == b"x"
    assert tap.recv() == b"x"
    dev.stop()
    assert dev.done


def test_green_steerable_background_terminates_cleanly(ctx):
    dev = GreenProxySteerable(zmq.PULL, zmq.PUSH, zmq.PUB, zmq.PAIR, context=ctx)
    ctl = inproc_endpoint()
    dev.bind_in(inproc_endpoint())
    dev.bind_out(inproc_endpoint())
    dev.bind_ctrl(ctl)
    dev.setsockopt_ctrl(zmq.LINGER, 0)
    dev.start()
    peer = _sock(ctx, zmq.PAIR, connect=ctl)
    peer.send(b"TERMINATE")
    dev.join(END_BOUND)
    assert dev.done and dev.exception is None


def test_green_monitored_queue_background_with_mon_socket(ctx):
    dev = GreenMonitoredQueue(zmq.ROUTER, zmq.ROUTER, zmq.PUSH, b"<", b">", context=ctx)
    ins, outs, mon = inproc_endpoint(), inproc_endpoint(), inproc_endpoint()
    dev.bind_in(ins)
    dev.bind_out(outs)
    dev.connect_mon(mon)
    tap = _sock(ctx, zmq.PULL, bind=mon)
    dev.start()
    worker = _sock(ctx, zmq.DEALER, connect=outs, routing_id=b"w")
    client = _sock(ctx, zmq.DEALER, connect=ins, routing_id=b"c")
    worker.send_multipart([b"-", b"ready"])
    assert tap.recv_multipart() == [b">", b"-", b"w", b"ready"]
    client.send_multipart([b"w", b"job"])
    assert worker.recv_multipart() == [b"c", b"job"]
    assert tap.recv_multipart() == [b"<", b"w", b"c", b"job"]
    dev.stop()
    assert dev.done


def test_background_device_failure_is_the_greenlets_exception(ctx, capfd):
    dev = GreenDevice(zmq.QUEUE, zmq.ROUTER, zmq.ROUTER, context=ctx)
    fe, out = inproc_endpoint(), inproc_endpoint()
    dev.bind_in(fe)
    dev.bind_out(out)
    dev.setsockopt_out(zmq.ROUTER_MANDATORY, 1)
    dev.setsockopt_in(zmq.LINGER, 0)
    dev.setsockopt_out(zmq.LINGER, 0)
    dev.start()
    # libzmq's proxy forwards only to a writable destination, and a
    # ROUTER_MANDATORY socket is writable once it has a peer: give it one
    somebody = _sock(ctx, zmq.DEALER, connect=out, routing_id=b"somebody")
    client = _sock(ctx, zmq.DEALER, connect=fe)
    client.send(b"to nobody")  # routed by the client's id, unknown to the out ROUTER: EHOSTUNREACH
    dev.join(END_BOUND)
    assert dev.done
    assert isinstance(dev.exception, zmq.ZMQError) and dev.exception.errno == zmq.EHOSTUNREACH
    out, err = capfd.readouterr()
    assert out == ""  # devices print nothing; gevent reports the failure on stderr
    assert "EHOSTUNREACH" in err or "Host unreachable" in err
    assert somebody.poll(0) == 0  # nothing was routed to the wrong peer


@pytest.mark.timeout(30)
def test_thread_device_forwards_and_stops(ctx):
    dev = ThreadDevice(zmq.QUEUE, zmq.PULL, zmq.PUSH)
    fport = dev.bind_in_to_random_port("tcp://127.0.0.1")
    bport = dev.bind_out_to_random_port("tcp://127.0.0.1")
    dev.start()
    push = _sock(ctx, zmq.PUSH, connect=f"tcp://127.0.0.1:{fport}")
    pull = _sock(ctx, zmq.PULL, connect=f"tcp://127.0.0.1:{bport}")
    # while the C proxy runs in its thread, this hub keeps running
    ticks = gevent.spawn(lambda: [gevent.sleep(0.001) for _ in range(3)])
    push.send(b"via thread")
    assert pull.recv() == b"via thread"
    ticks.get(timeout=WAKE_BOUND * 5)
    with gevent.Timeout(END_BOUND):
        dev.stop()
    assert not dev.launcher.is_alive() and dev.done


MONKEY_SCRIPT = """
from gevent import monkey; monkey.patch_all()
import gevent, greenzmq as zmq
from greenzmq.devices import ThreadDevice
dev = ThreadDevice(zmq.QUEUE, zmq.PULL, zmq.PUSH)
fport = dev.bind_in_to_random_port("tcp://127.0.0.1")
bport = dev.bind_out_to_random_port("tcp://127.0.0.1")
dev.start()  # a greenlet "thread" here would freeze the hub inside zmq_proxy
ctx = zmq.Context()
push = ctx.socket(zmq.PUSH); push.connect("tcp://127.0.0.1:%d" % fport)
pull = ctx.socket(zmq.PULL); pull.connect("tcp://127.0.0.1:%d" % bport)
pull.rcvtimeo = 10000
push.send(b"patched")
assert pull.recv() == b"patched"
dev.stop()
assert not dev.launcher.is_alive()
ctx.destroy(linger=0)
print("ok")
"""


@pytest.mark.timeout(60)
def test_thread_device_runs_on_an_os_thread_under_monkey_patching(python_exe):
    import subprocess

    out = subprocess.run([python_exe, "-c", MONKEY_SCRIPT], capture_output=True, text=True, timeout=45)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "ok\n"


@pytest.mark.timeout(30)
def test_thread_steerable_terminate_and_join(ctx):
    dev = ThreadProxySteerable(zmq.PULL, zmq.PUSH, zmq.PUB, zmq.REP)
    dev.bind_in_to_random_port("tcp://127.0.0.1")
    dev.bind_out_to_random_port("tcp://127.0.0.1")
    cport = dev.bind_ctrl_to_random_port("tcp://127.0.0.1")
    dev.start()
    req = _sock(ctx, zmq.REQ, connect=f"tcp://127.0.0.1:{cport}")
    req.send(b"TERMINATE")
    assert req.recv() == b""
    dev.join(END_BOUND)
    assert not dev.launcher.is_alive()
    dev.stop()  # after the end: harmless


@pytest.mark.timeout(60)
def test_process_proxy_forwards_and_stops(ctx):
    dev = ProcessProxy(zmq.PULL, zmq.PUSH, zmq.PUB)
    fport = dev.bind_in_to_random_port("tcp://127.0.0.1")
    bport = dev.bind_out_to_random_port("tcp://127.0.0.1")
    dev.start()
    push = _sock(ctx, zmq.PUSH, connect=f"tcp://127.0.0.1:{fport}")
    pull = _sock(ctx, zmq.PULL, connect=f"tcp://127.0.0.1:{bport}")
    push.send(b"via process")
    assert pull.recv() == b"via process"
    with gevent.Timeout(END_BOUND):
        dev.stop(END_BOUND)
    assert dev.launcher.exitcode is not None
