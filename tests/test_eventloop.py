"""The hub-native IOLoop and PeriodicCallback (greenzmq/eventloop/ioloop.py)."""

from __future__ import annotations

import datetime
import logging
import os
import socket as stdsocket
import time

import gevent
import gevent.event
import pytest
import zmq as pyzmq
from conftest import HUB_STALL_BOUND, WAKE_BOUND, hub_ticker, inproc_endpoint, wait_parked
from gevent.monkey import get_original

import greenzmq as zmq
from greenzmq._waiter import waiters_of
from greenzmq.error import WrongThreadError
from greenzmq.eventloop import IOLoop, PeriodicCallback, TimeoutHandle

OSThread = get_original("threading", "Thread")
_blocking_sleep = get_original("time", "sleep")
_allocate_lock = get_original("_thread", "allocate_lock")

#: How long test_start_waits_for_work... leaves the loop with nothing to do.
IDLE = 0.05
#: How long an OS thread of these tests waits for the loop before giving up.
THREAD_BOUND = 10.0
#: How often that thread looks whether the loop's runner is parked yet.
THREAD_POLL = 0.001


def run_until(loop: IOLoop, done: gevent.event.Event, bound: float = 10.0) -> None:
    """Run the loop until ``done`` is set; fail if that takes longer than ``bound``."""
    done.rawlink(lambda _: loop.stop())
    with gevent.Timeout(bound, AssertionError("the loop did not finish within the bound")):
        loop.start()


def when_parked(loop: IOLoop, action) -> OSThread:
    """An OS thread (started) that calls ``action()`` once ``loop`` runs and its runner is
    parked in the hub with nothing to do: the state a call from another thread must wake."""
    running = _allocate_lock()
    running.acquire()
    loop.add_callback(running.release)

    def run():
        if not running.acquire(timeout=THREAD_BOUND):
            return  # the loop never started: the test's own bound fails it
        deadline = time.monotonic() + THREAD_BOUND
        while not loop._sleeping and time.monotonic() < deadline:
            _blocking_sleep(THREAD_POLL)
        action()

    thread = OSThread(target=run)
    thread.start()
    return thread


# -- which loop ---------------------------------------------------------------------


def test_current_and_instance_are_one_loop_per_thread(loop):
    assert IOLoop.current() is loop
    assert IOLoop.instance() is loop
    seen = []
    t = OSThread(target=lambda: seen.append((IOLoop.current(), IOLoop.current())))
    t.start()
    t.join(10)
    other, again = seen[0]
    assert other is again
    assert other is not loop
    assert other._thread != loop._thread


def test_current_instance_false_does_not_create(loop):
    IOLoop.clear_current()
    assert IOLoop.current(instance=False) is None
    loop.make_current()
    assert IOLoop.current(instance=False) is loop


# -- start, stop, callbacks --------------------------------------------------------------


def test_callbacks_run_in_order_in_the_starting_greenlet(loop):
    order = []
    me = gevent.getcurrent()
    for i in range(5):
        loop.add_callback(lambda i=i: order.append((i, gevent.getcurrent() is me)))
    loop.add_callback(loop.stop)
    with gevent.Timeout(10):
        loop.start()
    assert order == [(i, True) for i in range(5)]
    assert not loop.is_running()


def test_callback_added_by_a_callback_runs_later_in_order(loop):
    order = []

    def first():
        order.append("first")
        loop.add_callback(lambda: order.append("added"))
        loop.add_callback(loop.stop)

    loop.add_callback(first)
    loop.add_callback(lambda: order.append("second"))
    with gevent.Timeout(10):
        loop.start()
    assert order == ["first", "second", "added"]


def test_kwargs_and_args_are_passed(loop):
    got = []
    loop.add_callback(lambda a, b=None: got.append((a, b)), 1, b=2)
    loop.add_callback(loop.stop)
    with gevent.Timeout(10):
        loop.start()
    assert got == [(1, 2)]


def test_stop_before_start_returns_at_once_and_keeps_callbacks(loop):
    ran = []
    loop.add_callback(ran.append, 1)
    loop.stop()
    with gevent.Timeout(10):
        loop.start()
    assert ran == []
    loop.add_callback(loop.stop)
    with gevent.Timeout(10):
        loop.start()
    assert ran == [1]


def test_start_waits_for_work_while_other_greenlets_run(loop, spawn):
    spawn(lambda: (gevent.sleep(IDLE), loop.add_callback(loop.stop)))  # time is the subject
    with hub_ticker() as ticker, gevent.Timeout(10):
        loop.start()  # nothing queued: parks in the hub until the greenlet posts
    assert ticker.max_gap < HUB_STALL_BOUND


def test_start_twice_and_from_the_hub_raise(loop):
    errors = []

    def nested():
        try:
            loop.start()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.add_callback(nested)
    with gevent.Timeout(10):
        loop.start()
    assert "already running" in errors[0]

    done = gevent.event.Event()

    def in_hub():
        try:
            loop.start()
        except RuntimeError as exc:
            errors.append(str(exc))
        done.set()

    gevent.get_hub().loop.run_callback(in_hub)
    done.wait(10)
    assert "hub" in errors[1]


def test_timeout_thrown_into_start_ends_it_and_loop_is_reusable(loop):
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.05):
            loop.start()
    assert not loop.is_running()
    loop.add_callback(loop.stop)
    with gevent.Timeout(10):
        loop.start()


def test_callback_exception_is_logged_and_loop_goes_on(loop, caplog):
    ran = []

    def bad():
        raise ValueError("boom in callback")

    loop.add_callback(bad)
    loop.add_callback(ran.append, "after")
    loop.add_callback(loop.stop)
    with caplog.at_level(logging.ERROR, logger="greenzmq.eventloop"), gevent.Timeout(10):
        loop.start()
    assert ran == ["after"]
    records = [r for r in caplog.records if r.name == "greenzmq.eventloop"]
    assert len(records) == 1
    assert records[0].exc_info[0] is ValueError
    assert "boom in callback" in caplog.text
    assert "Traceback" in caplog.text


def test_add_callback_from_another_os_thread_wakes_the_loop(loop):
    ran = []
    posted = []

    def from_thread():
        posted.append(time.monotonic())
        loop.add_callback(lambda: ran.append(time.monotonic()))
        loop.add_callback(loop.stop)

    t = when_parked(loop, from_thread)
    with gevent.Timeout(10, AssertionError("add_callback from a thread did not wake the loop")):
        loop.start()
    t.join(10)
    assert len(ran) == 1
    assert ran[0] - posted[0] < WAKE_BOUND


def test_stop_from_another_os_thread(loop):
    t = when_parked(loop, loop.stop)
    with gevent.Timeout(10, AssertionError("stop() from a thread did not stop the loop")):
        loop.start()
    t.join(10)


def test_many_threads_add_callbacks_none_lost(loop):
    threads_n, per_thread = 4, 250
    got = []

    def producer(k):
        for i in range(per_thread):
            loop.add_callback(got.append, (k, i))

    def check():
        if len(got) == threads_n * per_thread:
            loop.stop()
        else:
            loop.call_later(0.005, check)

    threads = [OSThread(target=producer, args=(k,)) for k in range(threads_n)]
    for t in threads:
        t.start()
    loop.add_callback(check)
    with gevent.Timeout(20):
        loop.start()
    for t in threads:
        t.join(10)
    assert len(got) == threads_n * per_thread
    for k in range(threads_n):  # each thread's callbacks in its order
        assert [i for kk, i in got if kk == k] == list(range(per_thread))


def test_other_methods_from_another_thread_raise(loop):
    errors = []

    def use():
        for call in (lambda: loop.call_later(1, print), lambda: loop.add_handler(0, print, IOLoop.READ)):
            try:
                call()
            except WrongThreadError as exc:
                errors.append(exc)

    t = OSThread(target=use)
    t.start()
    t.join(10)
    assert len(errors) == 2


def test_spawn_callback_may_block_without_holding_up_the_loop(loop):
    release = gevent.event.Event()
    order = []

    def blocker():
        order.append("blocker waits")
        release.wait(10)
        order.append("blocker done")
        loop.stop()

    def other():
        order.append("other ran")
        release.set()

    loop.spawn_callback(blocker)
    loop.add_callback(lambda: loop.add_callback(other))
    with gevent.Timeout(10):
        loop.start()
    assert order == ["blocker waits", "other ran", "blocker done"]


def test_a_callback_may_make_green_blocking_calls(loop, ctx, spawn):
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    spawn(lambda: (wait_parked(pull), push.send(b"late")))  # once the callback blocks in recv
    got = []
    loop.add_callback(lambda: (got.append(pull.recv()), loop.stop()))
    with gevent.Timeout(10):
        loop.start()
    assert got == [b"late"]
    push.close(0)
    pull.close(0)


def test_run_sync(loop):
    assert loop.run_sync(lambda: 42) == 42
    with pytest.raises(KeyError):
        loop.run_sync(lambda: {}["missing"])
    with pytest.raises(TimeoutError):
        loop.run_sync(lambda: gevent.sleep(10), timeout=0.05)
    assert loop.run_sync(lambda: "usable after a timeout", timeout=5) == "usable after a timeout"


def test_close(loop):
    loop.add_callback(lambda: pytest.raises(RuntimeError, loop.close) and loop.stop())
    with gevent.Timeout(10):
        loop.start()
    loop.close()
    loop.close()
    with pytest.raises(RuntimeError):
        loop.add_callback(print)
    with pytest.raises(RuntimeError):
        loop.start()
    assert IOLoop.current(instance=False) is not loop


# -- timeouts -----------------------------------------------------------------------


def test_timeouts_run_in_deadline_order_then_set_order(loop):
    order = []
    now = loop.time()
    loop.call_at(now + 0.03, order.append, "c")
    loop.call_later(0.01, order.append, "a1")
    loop.add_timeout(now + 0.02, order.append, "b")
    loop.call_at(now + 0.01, order.append, "a2")
    for i in range(5):  # same deadline: the order they were set
        loop.call_at(now + 0.04, order.append, i)
    loop.add_timeout(datetime.timedelta(seconds=0.05), loop.stop)
    with gevent.Timeout(10):
        loop.start()
    assert order[:2] in (["a1", "a2"], ["a2", "a1"])  # deadlines differ by a hair
    assert order[2:] == ["b", "c", 0, 1, 2, 3, 4]


def test_timeout_does_not_fire_early(loop):
    fired = []
    t0 = loop.time()
    loop.call_later(0.05, lambda: (fired.append(loop.time()), loop.stop()))
    with gevent.Timeout(10):
        loop.start()
    assert fired[0] - t0 >= 0.05
    assert fired[0] - t0 < 0.05 + WAKE_BOUND


def test_remove_timeout_cancels(loop):
    fired = []
    handle = loop.call_later(0.01, fired.append, "cancelled")
    assert isinstance(handle, TimeoutHandle)
    loop.remove_timeout(handle)
    loop.remove_timeout(handle)  # twice: no error
    loop.call_later(0.03, loop.stop)
    with gevent.Timeout(10):
        loop.start()
    assert fired == []


def test_cancel_from_a_callback_queued_in_the_same_batch(loop):
    fired = []
    now = loop.time()
    handles = []
    loop.call_at(now + 0.01, lambda: loop.remove_timeout(handles[0]))
    handles.append(loop.call_at(now + 0.01, fired.append, "second"))
    loop.call_at(now + 0.02, loop.stop)
    with gevent.Timeout(10):
        loop.start()
    assert fired == []


def test_many_cancelled_timeouts_are_cleaned_up(loop):
    handles = [loop.call_later(100, print) for _ in range(2000)]
    for h in handles:
        loop.remove_timeout(h)
    assert len(loop._timeouts) < 1000


def test_add_timeout_bad_deadline_raises_and_loop_is_fine(loop):
    for bad in ("soon", None, True):
        with pytest.raises(TypeError, match="deadline"):
            loop.add_timeout(bad, print)
    with pytest.raises(TypeError):
        loop.remove_timeout("not a handle")
    loop.call_later(0, loop.stop)
    with gevent.Timeout(10):
        loop.start()


def test_timeouts_queue_while_the_loop_is_stopped(loop):
    fired = []
    loop.call_later(0.01, fired.append, 1)
    gevent.sleep(0.03)  # the hub timer fires; the callback waits for start()
    assert fired == []
    loop.add_callback(loop.stop)
    with gevent.Timeout(10):
        loop.start()
    assert fired == [1]


# -- handlers ---------------------------------------------------------------------


def test_fd_handler_on_a_pipe(loop):
    r, w = os.pipe()
    try:
        got = []

        def on_read(fd, events):
            got.append((fd, events, os.read(fd, 100)))
            if len(got) == 2:
                loop.stop()

        loop.add_handler(r, on_read, IOLoop.READ)
        with pytest.raises(ValueError):
            loop.add_handler(r, on_read, IOLoop.READ)
        loop.add_callback(os.write, w, b"one")
        loop.call_later(0.02, os.write, w, b"two")
        with gevent.Timeout(10):
            loop.start()
        assert got == [(r, IOLoop.READ, b"one"), (r, IOLoop.READ, b"two")]
        loop.remove_handler(r)
        loop.remove_handler(r)  # no error
        os.write(w, b"three")
        loop.call_later(0.03, loop.stop)
        with gevent.Timeout(10):
            loop.start()
        assert len(got) == 2
    finally:
        os.close(r)
        os.close(w)


def test_fd_handler_on_a_socket_object_and_update_handler(loop):
    a, b = stdsocket.socketpair()
    try:
        events_seen = []

        def handler(sock, events):
            events_seen.append(events)
            assert sock is a
            if events & IOLoop.WRITE:
                a.send(b"ping")
                loop.update_handler(a, IOLoop.READ)
            if events & IOLoop.READ:
                assert a.recv(10) == b"pong"
                loop.stop()

        loop.add_handler(a, handler, IOLoop.WRITE)
        loop.call_later(0.02, lambda: b.send(b"pong") if b.recv(10) == b"ping" else None)
        with gevent.Timeout(10):
            loop.start()
        assert events_seen == [IOLoop.WRITE, IOLoop.READ]
        loop.remove_handler(a)
    finally:
        a.close()
        b.close()


def test_fd_handler_is_level_triggered(loop):
    r, w = os.pipe()
    try:
        calls = []

        def handler(fd, events):
            calls.append(events)
            if len(calls) == 3:
                os.read(fd, 10)
                loop.remove_handler(fd)
                loop.stop()

        loop.add_handler(r, handler, IOLoop.READ)
        os.write(w, b"x")
        with gevent.Timeout(10):
            loop.start()
        assert calls == [IOLoop.READ] * 3
    finally:
        os.close(r)
        os.close(w)


def test_bad_handler_targets_raise(loop):
    with pytest.raises(TypeError):
        loop.add_handler(object(), print, IOLoop.READ)
    raw_ctx = pyzmq.Context()
    try:
        plain = raw_ctx.socket(pyzmq.PULL)
        with pytest.raises(TypeError, match="greenzmq socket"):
            loop.add_handler(plain, print, IOLoop.READ)
        plain.close(0)
    finally:
        raw_ctx.term()
    with pytest.raises(KeyError):
        loop.update_handler(12345, IOLoop.READ)


def test_zmq_handler_and_greenlets_blocked_in_recv_share_a_socket(loop, ctx, spawn):
    """The handler listens through the socket's waiter: nothing is lost or taken twice."""
    pull = ctx.socket(zmq.PULL)
    pull.linger = 0
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    push.connect(f"tcp://127.0.0.1:{port}")
    n = 600
    by_handler, by_greenlet = [], []
    done = gevent.event.Event()

    def check_done():
        if len(by_handler) + len(by_greenlet) == n:
            done.set()

    def handler(sock, events):
        assert events == IOLoop.READ
        while True:
            try:
                by_handler.append(sock.recv(zmq.DONTWAIT))
            except zmq.Again:
                break
            check_done()

    def reader():
        while True:
            by_greenlet.append(pull.recv())
            check_done()
            gevent.sleep(0)

    loop.add_handler(pull, handler, IOLoop.READ)
    reading = spawn(reader)
    spawn(lambda: [push.send(b"%d" % i) for i in range(n)])
    run_until(loop, done)
    assert sorted(by_handler + by_greenlet, key=int) == [b"%d" % i for i in range(n)]
    assert by_handler, "the handler never got a message"
    loop.remove_handler(pull)
    reading.kill()
    push.close()
    pull.close()


def test_zmq_handler_gets_error_when_the_socket_is_closed(loop, ctx):
    pull = ctx.socket(zmq.PULL)
    got = []
    loop.add_handler(pull, lambda s, ev: (got.append(ev), loop.stop()), IOLoop.READ)
    loop.add_callback(pull.close, 0)
    with gevent.Timeout(10):
        loop.start()
    assert got == [IOLoop.ERROR]
    loop.remove_handler(pull)


def test_zmq_handler_follows_its_socket_to_another_thread_and_back(loop, ctx):
    """A socket used by another thread while its handler is off moves there
    (its old waiters are retired); turned on again, the handler moves it back
    and listens on its current waiters, not the retired ones."""
    pull = ctx.socket(zmq.PULL)
    pull.linger = 0
    pull.bind(inproc_endpoint())
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    push.connect(pull.last_endpoint)
    got = []

    def handler(sock, events):
        got.append((events, sock.recv(zmq.DONTWAIT)))
        loop.stop()

    loop.add_handler(pull, handler, IOLoop.READ)
    push.send(b"before")
    with gevent.Timeout(10):
        loop.start()
    loop.update_handler(pull, IOLoop.NONE)  # nobody listens: the socket may move
    before = waiters_of(pull)
    outcome = []

    def use_in_another_thread():
        try:
            pull.recv(zmq.DONTWAIT)
        except zmq.Again:
            outcome.append("moved")

    t = OSThread(target=use_in_another_thread)
    t.start()
    t.join(THREAD_BOUND)
    assert outcome == ["moved"] and waiters_of(pull) is not before
    loop.update_handler(pull, IOLoop.READ)
    push.send(b"after")
    with gevent.Timeout(10, AssertionError("the handler did not follow its socket back")):
        loop.start()
    assert got == [(IOLoop.READ, b"before"), (IOLoop.READ, b"after")]
    loop.remove_handler(pull)


def test_zmq_handler_write_then_none(loop, ctx):
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    pull = ctx.socket(zmq.PULL)
    pull.linger = 0
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push.connect(f"tcp://127.0.0.1:{port}")
    calls = []

    def handler(sock, events):
        calls.append(events)
        sock.send(b"hi")
        loop.update_handler(sock, IOLoop.NONE)
        loop.call_later(0.03, loop.stop)

    loop.add_handler(push, handler, IOLoop.WRITE)
    with gevent.Timeout(10):
        loop.start()
    assert calls == [IOLoop.WRITE]
    assert pull.recv() == b"hi"
    loop.remove_handler(push)
    push.close()
    pull.close()


# -- PeriodicCallback --------------------------------------------------------------------


def test_periodic_callback_runs_until_stopped(loop):
    runs = []

    def tick():
        runs.append(loop.time())
        if len(runs) == 5:
            pc.stop()
            loop.call_later(0.05, loop.stop)

    pc = PeriodicCallback(tick, 10)
    assert not pc.is_running()
    t0 = loop.time()
    pc.start()
    assert pc.is_running()
    with gevent.Timeout(10):
        loop.start()
    assert not pc.is_running()
    assert len(runs) == 5  # none after stop()
    assert runs == sorted(runs)
    # never early: run k comes no sooner than k periods after start() (a late
    # run is followed by the next slot on the grid, which may be close)
    assert all(t - t0 >= (k + 1) * 0.010 * 0.99 for k, t in enumerate(runs))


def test_periodic_callback_skips_missed_runs(loop):
    period = 0.02
    runs = []
    deadlines = []

    def tick():
        runs.append(loop.time())
        deadlines.append(pc._next_timeout)  # the deadline this run was scheduled for
        if len(runs) == 1:
            _blocking_sleep(period * 5)  # overrun: five periods missed
        if len(runs) == 3:
            pc.stop()
            loop.stop()

    pc = PeriodicCallback(tick, datetime.timedelta(seconds=period))
    pc.start()
    with gevent.Timeout(10):
        loop.start()
    # No burst of catch-up runs: the run after the slow one is scheduled past
    # its end, and the next one a period later. (The times the runs happened
    # at can come closer than a period when the first of them ran late on a
    # loaded machine; their deadlines cannot.)
    assert all(ran >= deadline for ran, deadline in zip(runs, deadlines))
    assert deadlines[1] >= runs[0] + period * 5
    assert deadlines[2] - deadlines[1] == pytest.approx(period)


def test_periodic_callback_exception_is_logged_and_it_goes_on(loop, caplog):
    runs = []

    def tick():
        runs.append(1)
        if len(runs) == 3:
            pc.stop()
            loop.stop()
        raise RuntimeError("periodic boom")

    pc = PeriodicCallback(tick, 5)
    pc.start()
    with caplog.at_level(logging.ERROR, logger="greenzmq.eventloop"), gevent.Timeout(10):
        loop.start()
    assert len(runs) == 3
    logged = [r for r in caplog.records if r.name == "greenzmq.eventloop"]
    assert [r.exc_info[0] for r in logged] == [RuntimeError] * 3


def test_periodic_callback_jitter_stays_in_bounds(loop):
    pc = PeriodicCallback(print, 100, jitter=0.5)
    for _ in range(50):
        pc._next_timeout = 0.0
        pc._update_next(0.0)
        assert 0.075 <= pc._next_timeout <= 0.125


def test_periodic_callback_bad_arguments():
    for bad in (0, -5, datetime.timedelta(0)):
        with pytest.raises(ValueError, match="positive"):
            PeriodicCallback(print, bad)
    with pytest.raises(ValueError, match="jitter"):
        PeriodicCallback(print, 10, jitter=2)
