"""The waiter: no lost wake-ups, no timers, zero idle CPU, one hub per thread."""

from __future__ import annotations

import random
import textwrap
import threading
import time

import gevent
import gevent.event
import pytest
import zmq as plainzmq
from conftest import TERM_BOUND, WAKE_BOUND, connected_pair, run_script, run_until_blocked, wait_parked

import greenzmq as zmq
from greenzmq import _waiter
from greenzmq.error import WrongThreadError


def _echo_thread(ctx, endpoint, ready, stop):
    """A plain-pyzmq ROUTER echo in its own OS thread: an independent peer."""
    sock = ctx.socket(plainzmq.ROUTER)
    sock.linger = 0
    endpoint.append(f"tcp://127.0.0.1:{sock.bind_to_random_port('tcp://127.0.0.1')}")
    ready.set()
    poller = plainzmq.Poller()
    poller.register(sock, plainzmq.POLLIN)
    while not stop.is_set():
        if poller.poll(50):
            while True:
                try:
                    msg = sock.recv_multipart(plainzmq.DONTWAIT)
                except plainzmq.Again:
                    break
                sock.send_multipart(msg)
    sock.close()


@pytest.fixture
def echo_endpoint():
    ctx = plainzmq.Context()
    endpoint = []
    ready, stop = threading.Event(), threading.Event()
    t = threading.Thread(target=_echo_thread, args=(ctx, endpoint, ready, stop), daemon=True)
    t.start()
    assert ready.wait(5)
    yield endpoint[0]
    stop.set()
    t.join(5)
    ctx.term()


@pytest.mark.timeout(120)
def test_no_lost_wakeup_when_sender_and_waiter_share_a_socket(ctx, spawn, echo_endpoint):
    """A greenlet waits in recv while another sends on the same socket (each send
    consumes the fd edge): every reply must wake the waiter within the bound.

    Sends come in random bursts and the sender then waits for the whole burst,
    so a stranded reply cannot be rescued by a later one: a lost wake-up fails
    the burst's Event timeout instead of hiding as latency."""
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(echo_endpoint)
    rng = random.Random(11)
    total = 20000
    received = 0
    worst = 0.0
    burst_done = gevent.event.Event()
    expected = 0

    def waiter():
        nonlocal received, worst
        while received < total:
            (stamp,) = sock.recv_multipart()
            worst = max(worst, time.monotonic() - float(stamp))
            received += 1
            if received == expected:
                burst_done.set()

    spawn(waiter)
    sent = 0
    while sent < total:
        burst = min(rng.randint(1, 16), total - sent)
        expected = sent + burst
        burst_done.clear()
        for _ in range(burst):
            sock.send_multipart([repr(time.monotonic()).encode()])
            sent += 1
            if rng.random() < 0.3:
                gevent.sleep(0)  # a yield, not a wait: the waiter may run mid-burst
        assert burst_done.wait(WAKE_BOUND), (
            f"lost wake-up: {received} of {expected} replies after {WAKE_BOUND}s"
        )
    assert received == total
    assert worst < WAKE_BOUND


@pytest.mark.timeout(60)
def test_no_lost_wakeup_with_a_steady_sender_on_the_same_socket(ctx, spawn, echo_endpoint):
    """Replies arrive while the same socket keeps sending (yielding after each
    send), so sends keep consuming the fd edge that announces a reply."""
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(echo_endpoint)
    total = 20000
    got = []
    all_in = gevent.event.Event()

    def waiter():
        for _ in range(total):
            got.append(sock.recv())
        all_in.set()

    spawn(waiter)
    last_progress = (0, time.monotonic())
    for i in range(total):
        sock.send(b"%d" % i)
        gevent.sleep(0)  # a yield, not a wait: one send per hub turn
        if len(got) != last_progress[0]:
            last_progress = (len(got), time.monotonic())
        assert time.monotonic() - last_progress[1] < WAKE_BOUND, f"waiter stuck at {len(got)} of {i + 1}"
    assert all_in.wait(WAKE_BOUND * 5), f"lost wake-up: {len(got)} of {total}"
    assert got == [b"%d" % i for i in range(total)]


@pytest.mark.timeout(60)
def test_no_lost_wakeup_between_poller_and_recv_waiter(ctx, spawn, echo_endpoint):
    """A poller and a sender share a socket; the poller must see every reply."""
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(echo_endpoint)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    for i in range(2000):
        # the poll's own timeout is far beyond the bound: a lost wake-up must not
        # be rescued by the re-check at its deadline
        g = spawn(poller.poll, int(WAKE_BOUND * 1000 * 10))
        wait_parked(sock, "listeners")
        sock.send(b"%d" % i)
        assert g.get(timeout=WAKE_BOUND) == [(sock, zmq.POLLIN)], f"poller missed reply {i}"
        assert sock.recv() == b"%d" % i


def test_idle_waiters_use_no_cpu(ctx, spawn):
    socks = []
    for _ in range(200):
        s = ctx.socket(zmq.PULL)
        s.linger = 0
        s.bind_to_random_port("tcp://127.0.0.1")
        socks.append(s)
    glets = [spawn(s.recv) for s in socks]
    for s in socks:
        wait_parked(s)
    cpu0 = time.process_time()
    gevent.sleep(1.0)  # time is the subject here: a second of idleness
    used = time.process_time() - cpu0
    assert used < 0.05, f"{used:.3f}s of CPU in 1s idle with 200 waiting sockets"
    assert not any(g.ready() for g in glets)


class _Thread:
    """``fn(*args)`` in a new OS thread (its own gevent hub), started at once.

    :meth:`join` waits for it while the calling thread's hub keeps running (a
    lazily kept watcher may fire there): the thread's last act wakes this hub
    through an async watcher, libev's thread-safe wake-up, so nothing polls.
    """

    def __init__(self, fn, *args):
        self.fn = fn
        self.result = {}
        self.done = gevent.event.Event()
        self.finished = gevent.get_hub().loop.async_()
        self.finished.start(self.done.set)
        self.thread = threading.Thread(target=self._run, args=args, daemon=True)
        self.thread.start()

    def _run(self, *args):
        try:
            self.result["value"] = self.fn(*args)
        except BaseException as exc:  # handed back to the test's thread
            self.result["error"] = exc
        finally:
            self.finished.send()

    def join(self):
        """The thread's result (or its exception, raised here), within THREAD_BOUND."""
        # on failure the watcher stays open: the thread may still send() to it
        assert self.done.wait(THREAD_BOUND), f"{self.fn} did not finish within {THREAD_BOUND}s"
        self.finished.close()
        self.thread.join(THREAD_BOUND)  # it has nothing left to do but end
        if "error" in self.result:
            raise self.result["error"]
        return self.result.get("value")


def _in_thread(fn, *args):
    """Run ``fn(*args)`` in a new OS thread (its own gevent hub); return its result or raise."""
    return _Thread(fn, *args).join()


#: How long a helper thread of these tests may run.
THREAD_BOUND = 20.0


def test_idle_socket_moves_to_the_thread_that_uses_it(ctx):
    """Ownership follows use: a socket nobody waits on belongs to whichever
    thread calls it next, back and forth, blocking calls included."""
    a, b = connected_pair(ctx, zmq.PAIR, zmq.PAIR)
    b.rcvtimeo = int(THREAD_BOUND * 1000)

    def echo_once():
        b.send(b.recv())  # blocks this thread's greenlet until the message comes
        return threading.get_ident()

    for i in range(20):
        g = gevent.spawn(_in_thread, echo_once)
        a.send(b"ping %d" % i)
        assert g.get(timeout=THREAD_BOUND) != threading.get_ident()
        assert a.recv() == b"ping %d" % i
        # ...and back in this thread, with a blocking receive that parks here
        r = gevent.spawn(b.recv)
        wait_parked(b)
        a.send(b"home %d" % i)
        assert r.get(timeout=WAKE_BOUND) == b"home %d" % i


def test_moved_socket_keeps_no_lost_wakeups_in_its_new_thread(ctx):
    """After a move, the new thread's greenlets share the socket under the usual
    rule: a sender and a receiver on one socket, many round trips, nothing lost."""
    a, b = connected_pair(ctx, zmq.DEALER, zmq.DEALER)
    left = gevent.spawn(b.recv)
    wait_parked(b)
    left.kill()  # the old thread armed, then left: a lazily kept watcher
    n = 500

    def worker():
        import gevent as g

        got = []
        reader = g.spawn(lambda: [got.append(b.recv()) for _ in range(n)])
        for i in range(n):
            b.send(b"%d" % i)
        reader.join(THREAD_BOUND)
        return got

    def echo():
        for _ in range(n):
            a.send(a.recv())

    e = gevent.spawn(echo)
    got = _in_thread(worker)
    e.join(THREAD_BOUND)
    assert got == [b"%d" % i for i in range(n)]


def test_concurrent_use_from_two_threads_raises(ctx, spawn):
    """While a greenlet of one thread waits on a socket, every call from another
    thread raises WrongThreadError saying so, and touches nothing."""
    a, b = connected_pair(ctx, zmq.PAIR, zmq.PAIR)
    waiting = spawn(b.recv)
    wait_parked(b)
    calls = {
        "recv": b.recv,
        "send": lambda: b.send(b"x"),
        "recv_multipart": b.recv_multipart,
        "send_multipart": lambda: b.send_multipart([b"x", b"y"]),
        "EVENTS": lambda: b.get(zmq.EVENTS),
        "poll": lambda: b.poll(0),
        "close": b.close,
    }

    def other():
        errors = {}
        for name, call in calls.items():
            try:
                call()
            except WrongThreadError as e:
                errors[name] = str(e)
        return errors

    errors = _in_thread(other)
    assert sorted(errors) == sorted(calls)
    assert all("at the same time" in msg or "waiting on it" in msg for msg in errors.values()), errors
    assert not b.closed
    a.send(b"still here")
    assert waiting.get(timeout=WAKE_BOUND) == b"still here"
    a.send(b"nothing was sent by the other thread")
    b.rcvtimeo = int(WAKE_BOUND * 1000)
    assert b.recv() == b"nothing was sent by the other thread"


def test_monitor_socket_in_a_worker_thread(ctx):
    """pyzmq's monitoring pattern: get_monitor_socket() in the main thread, a
    worker thread loops on poll() and recv_monitor_message(), and term() ends."""
    from zmq.utils.monitor import recv_monitor_message

    server = ctx.socket(zmq.REP)
    server.linger = 0
    mon = server.get_monitor_socket()
    seen = []

    def watch():
        while True:
            if mon.poll(int(THREAD_BOUND * 1000)):
                event = recv_monitor_message(mon)
                seen.append(event["event"])
                if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                    break
            else:
                break
        mon.close()

    worker = _Thread(watch)
    port = server.bind_to_random_port("tcp://127.0.0.1")
    client = ctx.socket(zmq.REQ)
    client.linger = 0
    client.connect(f"tcp://127.0.0.1:{port}")
    client.send(b"hello")
    assert server.recv() == b"hello"
    server.send(b"world")
    assert client.recv() == b"world"
    server.disable_monitor()
    worker.join()
    assert zmq.EVENT_LISTENING in seen and zmq.EVENT_ACCEPTED in seen
    assert seen[-1] == zmq.EVENT_MONITOR_STOPPED
    assert mon.closed
    client.close()
    server.close()
    with gevent.Timeout(TERM_BOUND):
        ctx.term()  # nothing left open: the worker could close the monitor socket


def test_destroy_closes_a_socket_whose_last_thread_ended(ctx):
    """A socket last used (and so owned) by a thread that has ended is closed by
    destroy() from any thread; a waiting one in a live thread is handed over."""
    a, b = connected_pair(ctx, zmq.PAIR, zmq.PAIR)
    b.rcvtimeo = int(THREAD_BOUND * 1000)
    a.send(b"x")
    assert _in_thread(b.recv) == b"x"  # b now belongs to that (ended) thread
    with gevent.Timeout(TERM_BOUND):
        ctx.destroy(linger=0)
    assert a.closed and b.closed


#: How many threads, one after the other, may run before the OS gives one of
#: them the id of the thread that ended just before it (glibc: the first).
REUSE_TRIES = 20


def test_a_new_thread_with_an_ended_threads_id_waits_in_its_own_hub(ctx):
    """OS thread ids are reused as soon as a thread ends. A socket last used by
    an ended thread belongs to nobody: a new thread that the OS gave the same
    id must wait on it in its own hub. (It failed with greenlet.error, "cannot
    switch to a different thread", while the id alone said who owned it.)"""
    pull, push = connected_pair(ctx, zmq.PULL, zmq.PUSH)

    def receive_here(tag):
        receiver = gevent.spawn(pull.recv)
        run_until_blocked()  # it tried, and waits in this thread's hub (or failed)
        if receiver.dead:
            receiver.get()  # raises what ended it
        assert len(pull._waiters.readers) == 1 and pull._waiters.thread == threading.get_ident()
        push.send(tag)  # the watcher wakes it: a blocking wait, not the fast path
        return threading.get_ident(), receiver.get(timeout=THREAD_BOUND)

    previous = None
    for i in range(REUSE_TRIES):
        ident, got = _in_thread(receive_here, b"%d" % i)
        assert got == b"%d" % i
        if ident == previous:
            break  # a thread with the ended one's id received through its own hub
        previous = ident
    else:
        pytest.skip(f"the OS gave none of {REUSE_TRIES} threads the id of the one before")


def test_greenlet_parking_while_another_thread_claims_the_socket_is_woken(ctx, spawn, monkeypatch):
    """Thread B claims a socket at the moment a greenlet of its owner (this
    thread) starts waiting on it: the GIL may switch between claim()'s test
    ("nobody waits") and its retiring of the old waiters. Driven here in that
    order, with events: B stops right after the test until the greenlet has
    parked. Nothing will ever serve the waiters it parked on: it must be woken
    with WrongThreadError (both threads used the socket at the same time), not
    left waiting forever, as it was."""
    pull, push = connected_pair(ctx, zmq.PULL, zmq.PUSH)
    b_ident = []
    in_window, parked = threading.Event(), threading.Event()
    real_busy = _waiter.Waiters._busy

    def busy_then_preempted(self):
        busy = real_busy(self)
        if threading.get_ident() in b_ident:  # thread B, inside claim()
            in_window.set()
            assert parked.wait(THREAD_BOUND)
        return busy

    monkeypatch.setattr(_waiter.Waiters, "_busy", busy_then_preempted)

    def claim():
        b_ident.append(threading.get_ident())
        pull.get(zmq.EVENTS)  # any call from another thread claims the socket

    b = _Thread(claim)
    assert in_window.wait(THREAD_BOUND)  # B found nobody waiting, and stops there
    old = pull._waiters
    waiting = spawn(pull.recv)
    wait_parked(pull)  # on the old waiters: B has not replaced them yet
    parked.set()
    b.join()  # this hub runs meanwhile
    assert pull._waiters is not old
    with pytest.raises(WrongThreadError, match="at the same time"):
        waiting.get(timeout=WAKE_BOUND)
    push.send(b"for the new owner")
    pull.rcvtimeo = int(WAKE_BOUND * 1000)
    assert pull.recv() == b"for the new owner"  # nothing was taken by the woken greenlet


@pytest.mark.timeout(60)
def test_threads_with_their_own_hubs_share_one_context(ctx):
    n_threads, n_msgs = 4, 300
    results = {}

    def worker(k):
        import gevent as g  # each thread gets its own hub

        addr = f"inproc://threads-{k}"
        a = ctx.socket(zmq.PAIR)
        b = ctx.socket(zmq.PAIR)
        a.bind(addr)
        b.connect(addr)

        def echo():
            for _ in range(n_msgs):
                b.send(b.recv())

        e = g.spawn(echo)
        count = 0
        for i in range(n_msgs):
            a.send(b"%d" % i)
            if a.recv() == b"%d" % i:
                count += 1
        e.join(10)
        a.close()
        b.close()
        results[k] = count

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {k: n_msgs for k in range(n_threads)}


_MONKEY_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey; monkey.patch_all()
    import sys, threading
    import gevent
    import greenzmq as zmq
    from conftest import HUB_STALL_BOUND, hub_ticker, wait_parked
    ctx = zmq.Context()
    a = ctx.socket(zmq.PAIR); port = a.bind_to_random_port('tcp://127.0.0.1')
    b = ctx.socket(zmq.PAIR); b.connect('tcp://127.0.0.1:%d' % port)
    with hub_ticker() as ticker:
        r = gevent.spawn(b.recv)
        wait_parked(b)
        a.send(b'patched')
        assert r.get(timeout=5) == b'patched'
    assert ticker.max_gap < HUB_STALL_BOUND, ticker.max_gap
    done = threading.Event()          # a patched Event: a greenlet
    def blocked():
        try:
            b.recv()
        except zmq.ContextTerminated:
            b.close(); done.set()
    gevent.spawn(blocked); wait_parked(b)
    a.close(); ctx.term()
    assert done.wait(5)
    print('OK')
    """
)


@pytest.mark.timeout(60)
def test_works_after_monkey_patch_all(tmp_path):
    out = run_script(tmp_path, _MONKEY_SCRIPT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OK"


#: A greenlet is parked in recv (its socket's watcher started in this hub) when
#: the process forks. The child's hub, re-initialised, must not serve the
#: parent's socket (their fds are shared; before d14924a it spun at 100% CPU
#: on that socket's watcher and never ran its timers again): the parked reader wakes
#: with ForkedSocketError, and the child's hub keeps running while the parent
#: goes on using the socket. Prints the child's word and the parent's count.
_FORK_PARKED_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import gevent, gevent.event, gevent.select
    import greenzmq as zmq
    from conftest import run_until_blocked, wait_parked
    BOUND, N = 10.0, 200
    fork = {'os.fork': os.fork, 'gevent.fork': gevent.fork}[sys.argv[1]]
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL); pull.linger = 0
    port = pull.bind_to_random_port('tcp://127.0.0.1')
    push = ctx.socket(zmq.PUSH); push.linger = 0
    push.connect('tcp://127.0.0.1:%d' % port)
    got, all_in = [], gevent.event.Event()
    def reader():
        while True:
            got.append(pull.recv())
            if len(got) == N:
                all_in.set()
    r = gevent.spawn(reader)
    wait_parked(pull)
    from_child, to_parent = os.pipe()
    from_parent, to_child = os.pipe()
    pid = fork()
    if pid == 0:
        word = 'child failed'
        try:
            try:
                r.get(timeout=BOUND)
                word = 'the reader returned'
            except zmq.ForkedSocketError:
                word = 'ForkedSocketError'
            except gevent.Timeout:
                word = 'the reader still waits'
            # the parent sends meanwhile: this hub keeps running (nothing of the parent's to serve)
            ready, _, _ = gevent.select.select([from_parent], [], [], BOUND)
            if not ready:
                word += ', no word from the parent'
            own = zmq.Context()
            a, b = own.socket(zmq.PAIR), own.socket(zmq.PAIR)
            a.bind('inproc://child'); b.connect('inproc://child')
            g = gevent.spawn(b.recv)
            run_until_blocked()
            a.send(b'x')
            if g.get(timeout=BOUND) != b'x':
                word += ', own context failed'
            a.close(); b.close(); own.term()
        finally:
            os.write(to_parent, word.encode())
            os._exit(0)
    for i in range(N):
        push.send(b'%d' % i)
    parent = 'parent got %d' % len(got) if not all_in.wait(BOUND) else 'parent got all'
    os.write(to_child, b'sent')
    ready, _, _ = gevent.select.select([from_child], [], [], BOUND)
    if ready:
        child = os.read(from_child, 200).decode()
    else:
        child = 'no word from the child (killed)'
        os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # gevent.fork's child watcher reaped it
        pass
    print(child + ';', parent)
    r.kill(); ctx.destroy(linger=0)
    """
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fork", ["os.fork", "gevent.fork"])
def test_forked_child_wakes_a_parked_reader_and_never_serves_the_parents_socket(tmp_path, fork):
    out = run_script(tmp_path, _FORK_PARKED_SCRIPT, fork)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ForkedSocketError; parent got all", out.stdout + out.stderr[-3000:]


# -- each way an fd edge can be consumed, made to happen deterministically ---------
#
# The waiter below has already tried (nothing ready) and parked. The news
# then arrives and is consumed by another call on the same socket before the
# hub looks at the fd. Without the follow-up check those calls schedule, the
# waiter would sleep forever (verified by disabling Waiters.touched).


def _park(spawn, sock, queue, fn, *args):
    """Spawn ``fn(*args)`` and return it once it is parked on ``sock``'s ``queue``."""
    g = spawn(fn, *args)
    wait_parked(sock, queue)
    assert not g.ready()
    return g


def _busy_wait(seconds):
    # libzmq's send/recv skip command processing if they ran less than ~1 ms
    # ago (throttling); spinning past that makes the next call consume the edge.
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_edge_consumed_by_events_query_still_wakes_recv_waiter(make_pair, spawn):
    a, b = make_pair(zmq.DEALER, zmq.DEALER)
    for i in range(20):
        g = _park(spawn, a, "readers", a.recv)
        b.send(b"%d" % i)
        deadline = time.monotonic() + 5
        while not (a.getsockopt(zmq.EVENTS) & zmq.POLLIN):  # consumes the edge
            assert time.monotonic() < deadline
        assert g.get(timeout=WAKE_BOUND) == b"%d" % i


def test_edge_consumed_by_send_still_wakes_recv_waiter(ctx, spawn):
    a, b = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    addr = "inproc://edge-send"
    a.bind(addr)
    b.connect(addr)
    for i in range(20):
        g = _park(spawn, a, "readers", a.recv)
        b.send(b"%d" % i)  # inproc: the news is in a's mailbox now
        _busy_wait(0.003)
        a.send(b"noise")  # processes a's commands: consumes the edge
        assert g.get(timeout=WAKE_BOUND) == b"%d" % i
        assert b.recv() == b"noise"


def test_edge_consumed_by_send_still_wakes_a_poller(ctx, spawn):
    """As above, for a poller listening on the socket instead of a greenlet in recv."""
    a, b = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    addr = "inproc://edge-send-poller"
    a.bind(addr)
    b.connect(addr)
    poller = zmq.Poller()
    poller.register(a, zmq.POLLIN)
    for i in range(20):
        # far beyond the bound: the re-check at the poll's deadline must not rescue it
        g = _park(spawn, a, "listeners", poller.poll, int(WAKE_BOUND * 1000 * 10))
        b.send(b"%d" % i)  # inproc: the news is in a's mailbox now
        _busy_wait(0.003)
        a.send(b"noise")  # processes a's commands: consumes the edge
        assert g.get(timeout=WAKE_BOUND) == [(a, zmq.POLLIN)]
        assert a.recv() == b"%d" % i
        assert b.recv() == b"noise"


@pytest.mark.parametrize("send", ["send", "send_multipart"])
def test_edge_consumed_by_a_failing_send_still_wakes_recv_waiter(ctx, spawn, send):
    """A send that fails with an error other than EAGAIN (here EHOSTUNREACH from
    a ROUTER_MANDATORY socket) may have processed libzmq's commands first: the
    recv waiter on the same socket must still be woken. (Stranded 20 times out
    of 20 before the EVENTS check was scheduled on that path too.)"""
    router = ctx.socket(zmq.ROUTER)
    router.router_mandatory = 1
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.identity = b"d"
    dealer.connect(f"tcp://127.0.0.1:{port}")
    dealer.send(b"hello")
    assert router.recv_multipart() == [b"d", b"hello"]
    fail = {
        "send": lambda: router.send(b"nobody", zmq.SNDMORE),
        "send_multipart": lambda: router.send_multipart([b"nobody", b"x"]),
    }[send]
    for i in range(10):
        waiter = spawn(router.recv_multipart)
        wait_parked(router)
        dealer.send(b"m%d" % i)
        # The message reaches the router's mailbox while the hub does not run;
        # past libzmq's command throttle (about 1 ms) the failing send below
        # processes that command, taking the fd's edge with it.
        time.sleep(0.005)
        with pytest.raises(zmq.ZMQError) as failed:
            fail()
        assert failed.value.errno == zmq.EHOSTUNREACH
        assert waiter.get(timeout=WAKE_BOUND) == [b"d", b"m%d" % i]


#: More frames than two high-water marks of 1 can ever hold: filling stops at EAGAIN long before.
_FILL_BOUND = 100


def _full_dealer_pair(ctx, addr):
    """Two DEALERs with high-water marks of 1; ``a``'s pipe to ``b`` filled
    until a send would block. Returns ``(a, b, frames sent)``."""
    a, b = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    for s in (a, b):
        s.sndhwm = s.rcvhwm = 1
        s.linger = 0
    a.bind(addr)
    b.connect(addr)
    for sent in range(_FILL_BOUND):
        try:
            a.send(b"fill", zmq.DONTWAIT)
        except zmq.Again:
            return a, b, sent
    raise AssertionError(f"{addr}: {_FILL_BOUND} frames sent and still room")


def test_edge_consumed_by_recv_still_wakes_send_waiter(ctx, spawn):
    a, b, sent = _full_dealer_pair(ctx, "inproc://edge-recv")
    g = _park(spawn, a, "writers", a.send, b"blocked")
    for _ in range(sent):
        assert b.recv() == b"fill"  # room again: activate_write goes to a's mailbox
    _busy_wait(0.003)
    with pytest.raises(zmq.Again):
        a.recv(zmq.DONTWAIT)  # processes a's commands: consumes the edge
    g.get(timeout=WAKE_BOUND)
    assert b.recv() == b"blocked"


_IDLE_LOOP_SCRIPT = textwrap.dedent(
    """
    import sys, time, gevent, greenzmq as zmq
    from conftest import wait_parked
    ctx = zmq.Context()
    a = ctx.socket(zmq.PAIR); port = a.bind_to_random_port('tcp://127.0.0.1')
    b = ctx.socket(zmq.PAIR); b.connect('tcp://127.0.0.1:%d' % port)
    g = gevent.spawn(b.recv)
    wait_parked(b)  # the watcher is started: its fate after the wake-up is what is tested
    a.send(b'x')
    assert g.get(timeout=5) == b'x'
    t0 = time.monotonic()
    gevent.wait(timeout=5)  # returns when nothing keeps the loop alive
    print('idle-wait %.3f' % (time.monotonic() - t0))
    a.close(); b.close(); ctx.term()
    """
)


def test_idle_socket_does_not_keep_the_loop_alive(tmp_path):
    out = run_script(tmp_path, _IDLE_LOOP_SCRIPT)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.split()[1]) < 4.0, "gevent.wait() waited for an idle socket's watcher"


def test_served_reader_rewaiting_does_not_strand_a_blocked_writer(ctx, spawn):
    """A reader is served, makes room for the socket's blocked writer (by
    draining the peer), then fails a receive (which consumes that news) and
    waits again: the service pass must still read EVENTS for the writer."""
    a, b, filled = _full_dealer_pair(ctx, "inproc://quiet-pass")
    writer = _park(spawn, a, "writers", a.send, b"blocked")

    def reader():
        first = a.recv()
        for _ in range(filled):
            assert b.recv() == b"fill"  # room again: news for the writer
        _busy_wait(0.003)
        return first, a.recv()  # fails first (consuming the news), then waits

    r = _park(spawn, a, "readers", reader)
    b.send(b"1")
    writer.get(timeout=WAKE_BOUND)
    assert b.recv() == b"blocked"
    b.send(b"2")
    assert r.get(timeout=WAKE_BOUND) == (b"1", b"2")
