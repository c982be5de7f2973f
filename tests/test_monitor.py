"""greenzmq.monitor: real connect/accept/handshake/disconnect events over tcp://127.0.0.1."""

from __future__ import annotations

import socket as stdsocket

import gevent
import pytest
from conftest import HUB_STALL_BOUND, WAKE_BOUND, hub_ticker, wait_parked

import greenzmq as zmq
from greenzmq.monitor import Monitor, MonitorEvent, watch

#: Upper bound on events read while waiting for one kind (a reconnecting
#: socket repeats CONNECT_DELAYED/RETRIED; a test never needs more than this).
MAX_EVENTS = 50
#: Generous bound for a handful of loopback connection events on a loaded CI box.
EVENT_BOUND = 10.0


#: A ZMTP 3.0 greeting (signature, version 3.0) naming a mechanism that does
#: not exist: libzmq rejects the peer with HANDSHAKE_FAILED_PROTOCOL.
BOGUS_GREETING = b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"BOGUS".ljust(20, b"\x00") + bytes(32)


def _until(mon: Monitor, *wanted: int) -> list[MonitorEvent]:
    """Read events until every kind in ``wanted`` was seen; return them all."""
    seen: list[MonitorEvent] = []
    missing = set(wanted)
    for _ in range(MAX_EVENTS):
        try:
            ev = mon.recv(timeout=EVENT_BOUND)
        except zmq.Again:
            raise AssertionError(f"missing events {missing}; got {seen}") from None
        assert ev is not None, f"monitor stopped early; got {seen}"
        seen.append(ev)
        missing.discard(ev.event)
        if not missing:
            return seen
    raise AssertionError(f"missing events {missing} after {MAX_EVENTS} events: {seen}")


@pytest.fixture
def server(ctx):
    s = ctx.socket(zmq.ROUTER)
    s.linger = 0
    port = s.bind_to_random_port("tcp://127.0.0.1")
    yield s, f"tcp://127.0.0.1:{port}"
    s.close()


def test_connect_handshake_disconnect_seen_by_both_sides(ctx, server):
    srv, url = server
    srv_mon = Monitor(srv)
    cli = ctx.socket(zmq.DEALER)
    cli.linger = 0
    cli_mon = Monitor(cli)
    cli.connect(url)

    got = _until(cli_mon, zmq.EVENT_CONNECTED, zmq.EVENT_HANDSHAKE_SUCCEEDED)
    connected = next(e for e in got if e.event == zmq.EVENT_CONNECTED)
    assert connected.name == "CONNECTED"
    assert connected.endpoint == url
    assert isinstance(connected.value, int) and connected.value > 0  # the fd

    got = _until(srv_mon, zmq.EVENT_ACCEPTED, zmq.EVENT_HANDSHAKE_SUCCEEDED)
    assert all(isinstance(e, MonitorEvent) for e in got)

    cli.close()  # the server sees the peer go away
    got = _until(srv_mon, zmq.EVENT_DISCONNECTED)
    assert got[-1].event == zmq.EVENT_DISCONNECTED
    srv_mon.close()
    assert srv_mon.closed and srv_mon.recv() is None


def test_iteration_ends_when_watched_socket_closes(ctx, server, spawn):
    _, url = server
    cli = ctx.socket(zmq.DEALER)
    cli.linger = 0
    mon = Monitor(cli)
    connected = gevent.event.Event()
    events: list[MonitorEvent] = []

    def reader():
        for ev in mon:
            events.append(ev)
            if ev.event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                connected.set()
        return "ended"

    g = spawn(reader)
    cli.connect(url)
    assert connected.wait(EVENT_BOUND), events
    cli.close()
    assert g.get(timeout=EVENT_BOUND) == "ended"
    assert mon.closed
    assert zmq.EVENT_MONITOR_STOPPED not in [e.event for e in events]  # not yielded


def test_close_from_another_greenlet_stops_a_blocked_reader(ctx, spawn):
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    mon = Monitor(s)
    g = spawn(lambda: list(mon))
    wait_parked(mon.monitor_socket)  # the reader is blocked in recv
    mon.close()
    assert g.get(timeout=WAKE_BOUND) == []
    mon.close()  # idempotent
    assert not s.closed


def test_other_greenlets_run_while_waiting(ctx):
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    mon = Monitor(s)
    # nothing happens on an unconnected socket: the wait lasts its whole timeout,
    # longer than the stall bound, so a recv that blocked the thread would fail
    with hub_ticker() as ticker, pytest.raises(zmq.Again):
        mon.recv(timeout=2 * HUB_STALL_BOUND)
    assert ticker.max_gap < HUB_STALL_BOUND, "the hub was blocked while mon.recv waited"
    mon.close()


def test_timeout_leaves_monitor_usable(ctx, server):
    _, url = server
    cli = ctx.socket(zmq.DEALER)
    cli.linger = 0
    mon = Monitor(cli)
    with pytest.raises(zmq.Again):
        mon.recv(timeout=0.05)
    cli.connect(url)
    _until(mon, zmq.EVENT_CONNECTED)
    mon.close()


def test_handshake_failure_from_a_non_zmq_peer(ctx, server):
    srv, url = server
    mon = Monitor(srv)
    port = int(url.rsplit(":", 1)[1])
    raw = stdsocket.create_connection(("127.0.0.1", port), timeout=EVENT_BOUND)
    try:
        raw.sendall(BOGUS_GREETING)
        got = _until(mon, zmq.EVENT_ACCEPTED, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_DISCONNECTED)
    finally:
        raw.close()
    failed = next(e for e in got if e.event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
    assert failed.value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
    mon.close()


def test_malformed_message_raises_and_monitor_stays_usable(ctx, server):
    _, url = server
    cli = ctx.socket(zmq.DEALER)
    cli.linger = 0
    mon = Monitor(cli)
    # libzmq owns the real monitor pipe, so feed a Monitor bad input through a
    # PAIR of our own standing in for its monitor socket.
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.linger = b.linger = 0
    a.bind("inproc://mon-garbage")
    b.connect("inproc://mon-garbage")
    bad = Monitor.__new__(Monitor)
    bad.socket, bad.monitor_socket = cli, a
    b.send_multipart([b"not-an-event"])
    with pytest.raises(RuntimeError, match="Invalid event message"):
        bad.recv(timeout=EVENT_BOUND)
    b.send_multipart([b"\x01\x00\x07\x00\x00\x00", b"tcp://x"])  # CONNECTED(7), by hand
    assert bad.recv(timeout=EVENT_BOUND) == MonitorEvent(zmq.EVENT_CONNECTED, 7, "tcp://x")
    a.close()
    b.close()
    cli.connect(url)
    _until(mon, zmq.EVENT_CONNECTED)
    mon.close()


def test_watch_calls_back_and_ends_with_the_socket(ctx, server):
    _, url = server
    cli = ctx.socket(zmq.DEALER)
    cli.linger = 0
    seen: list[str] = []
    handshake = gevent.event.Event()

    def on_event(ev: MonitorEvent) -> None:
        seen.append(ev.name)
        if ev.event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            handshake.set()

    g = watch(cli, on_event)
    cli.connect(url)
    assert handshake.wait(EVENT_BOUND), seen
    cli.close()
    g.join(EVENT_BOUND)
    assert g.successful(), g.exception
    assert "CONNECTED" in seen


def test_watch_callback_error_ends_greenlet_and_closes_monitor(ctx, server):
    _, url = server
    cli = ctx.socket(zmq.DEALER)
    cli.linger = 0

    def boom(ev: MonitorEvent) -> None:
        raise ValueError(ev.name)

    g = watch(cli, boom)
    cli.connect(url)
    g.join(EVENT_BOUND)
    assert isinstance(g.exception, ValueError)
    assert cli._monitor_socket is None  # monitor released: a new one can start
    mon = Monitor(cli)
    mon.close()


#: Monitor restarts in a row on one socket: pyzmq's per-fd endpoint name
#: failed with "Address already in use" within a few of these.
RESTARTS = 30


def test_monitor_restarts_on_the_same_socket(ctx, server):
    _, url = server
    cli = ctx.socket(zmq.DEALER)
    cli.linger = 0
    for _ in range(RESTARTS):
        Monitor(cli).close()
    with Monitor(cli) as mon:
        cli.connect(url)
        _until(mon, zmq.EVENT_CONNECTED)
    assert mon.closed and cli._monitor_socket is None


def test_iteration_ends_when_the_context_terminates(spawn):
    own = zmq.Context()
    s = own.socket(zmq.DEALER)
    s.linger = 0
    mon = Monitor(s)
    g = spawn(lambda: list(mon))
    wait_parked(mon.monitor_socket)  # the reader is blocked in recv
    with gevent.Timeout(EVENT_BOUND, AssertionError("destroy did not finish")):
        own.destroy(linger=0)
    assert g.get(timeout=WAKE_BOUND) == []
    assert mon.closed


def test_two_readers_timeout_independently(ctx, server, spawn):
    _, url = server
    cli = ctx.socket(zmq.DEALER)
    cli.linger = 0
    mon = Monitor(cli, zmq.EVENT_CONNECTED)

    def one():
        try:
            return mon.recv(timeout=WAKE_BOUND)
        except zmq.Again:
            return "timeout"

    a, b = spawn(one), spawn(one)
    wait_parked(mon.monitor_socket, n=2)
    cli.connect(url)  # one CONNECTED event: one reader gets it, the other times out
    results = sorted([a.get(timeout=EVENT_BOUND), b.get(timeout=EVENT_BOUND)], key=str)
    assert results[1] == "timeout" and results[0].event == zmq.EVENT_CONNECTED, results
    mon.close()
