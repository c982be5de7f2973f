"""The green Context: its sockets, its singleton, and term/destroy that never freeze the hub."""

from __future__ import annotations

import time

import gevent
import pytest
import zmq as plainzmq
from conftest import WAKE_BOUND

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
    ticks = []

    def ticker():
        while True:
            gevent.sleep(0.005)
            ticks.append(1)

    spawn(ticker)
    gevent.sleep(0.05)
    sender.linger = 0
    t0 = time.monotonic()
    terminator = spawn(ctx.term)
    terminator.get(timeout=10)
    assert ctx.closed
    assert len(woke) == 51
    assert max(woke) - t0 < WAKE_BOUND
    assert ticks, "the hub froze during term()"


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
    gevent.sleep(0.02)
    ctx.destroy(linger=0)
    gevent.joinall(glets, timeout=WAKE_BOUND)
    assert len(errors) == 20
    assert all(isinstance(e, zmq.ContextTerminated) for e in errors)
    assert all(s.closed for s in socks)


def test_term_closed_context_is_a_no_op():
    ctx = zmq.Context()
    ctx.term()
    ctx.term()
    ctx.destroy()


def test_socket_on_terminated_context_raises():
    ctx = zmq.Context()
    ctx.term()
    with pytest.raises(zmq.ZMQError):
        ctx.socket(zmq.PUSH)
