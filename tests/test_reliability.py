"""Reliability: soak with accounting, cancellation storms, peer faults, shutdown, fork.

Quick mode runs in CI. ``pytest --long`` adds the soak runs marked ``slow``
(10 million messages, memory sampled after warm-up).
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import textwrap
import time

import gevent
import gevent.event
import psutil
import pytest
from conftest import WAKE_BOUND, inproc_endpoint
from gevent.lock import BoundedSemaphore

import greenzmq as zmq

QUICK_MESSAGES = 210_000
LONG_MESSAGES = 10_000_000
BUDGET_MIN = 60.0
#: Messages a ROUTER/DEALER or PUB/SUB sender may have in flight (credit-based
#: flow control). Those patterns run with HWM 0 so that nothing is dropped, and
#: without credit their queues would grow with any lag, hiding a real leak.
FLOW_WINDOW = 2000
#: Allowed RSS growth between the end of warm-up and the end of a long soak.
LONG_RSS_GROWTH = 64 * 1024 * 1024


class Ledger:
    """Accounts for sequence-numbered multipart messages: none lost, none
    duplicated, none corrupted, order kept per (sender, receiver) stream.

    Seen messages are bits in one bytearray per sender (not a set of tuples),
    so that a 10-million-message soak measures greenzmq's memory, not ours.
    """

    def __init__(self):
        self.seen: dict[int, bytearray] = {}
        self.last: dict[tuple[int, ...], int] = {}
        self.count = 0

    @staticmethod
    def make(sender: int, seq: int) -> list[bytes]:
        head = b"%d:%d" % (sender, seq)
        return [head, head[::-1] * (1 + seq % 5), b"%d" % (sender ^ seq)]

    def check(self, msg: list[bytes], stream: tuple[int, ...] = ()) -> None:
        head = msg[0]
        sender, seq = map(int, head.split(b":"))
        assert msg == self.make(sender, seq), f"corrupted: {msg[:3]!r}"
        bits = self.seen.setdefault(sender, bytearray())
        byte, bit = divmod(seq, 8)
        if byte >= len(bits):
            bits.extend(bytes(byte + 1 - len(bits) + 4096))
        assert not bits[byte] & (1 << bit), f"duplicate {head!r}"
        bits[byte] |= 1 << bit
        key = (sender, *stream)
        assert seq > self.last.get(key, -1), f"order broken for {key}"
        self.last[key] = seq
        self.count += 1

    def complete(self, senders: int, per_sender: int) -> bool:
        """Every sequence number of every sender was seen exactly once."""
        full = sum(bin(b).count("1") for bits in self.seen.values() for b in bits)
        return len(self.seen) == senders and full == senders * per_sender == self.count


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _soak(ctx, spawn, total: int, sample_memory: bool = False) -> None:
    """PUSH/PULL, ROUTER/DEALER and XPUB/SUB at once, many greenlets per socket."""
    per_pattern = total // 3
    done = gevent.event.Event()
    rss = []

    # PUSH/PULL: 8 senders on 2 PUSH sockets -> 2 PULL sockets, 4 receivers each
    pp = Ledger()
    pulls = [ctx.socket(zmq.PULL) for _ in range(2)]
    pushes = [ctx.socket(zmq.PUSH) for _ in range(2)]
    for pull in pulls:
        addr = inproc_endpoint("soak-pull")
        pull.bind(addr)
        for push in pushes:
            push.connect(addr)
    senders = 8
    per_sender = per_pattern // senders

    def pp_send(sid):
        push = pushes[sid % 2]
        for seq in range(per_sender):
            push.send_multipart(Ledger.make(sid, seq))

    def pp_recv(pull):
        while pp.count < senders * per_sender:
            msg = pull.recv_multipart()
            pp.check(msg, (id(pull),))  # order holds per sender within one PULL
            if sample_memory and pp.count % 500_000 == 0:
                rss.append(_rss())
            if pp.count == senders * per_sender:
                done.set()

    # ROUTER/DEALER over tcp: 4 DEALERs, 2 greenlets each, ROUTER echoes
    rd = Ledger()
    router = ctx.socket(zmq.ROUTER)
    router.sndhwm = 0  # a ROUTER drops at its HWM; the credit below bounds the queue instead
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealers = [ctx.socket(zmq.DEALER) for _ in range(4)]
    for d in dealers:
        d.rcvhwm = 0
        d.connect(f"tcp://127.0.0.1:{port}")
    rd_credit = BoundedSemaphore(FLOW_WINDOW)
    rd_per = per_pattern // 8
    rd_done = gevent.event.Event()

    def echo():
        while True:
            router.send_multipart(router.recv_multipart())

    def rd_send(k):
        d = dealers[k // 2]
        for seq in range(rd_per):
            rd_credit.acquire()
            d.send_multipart(Ledger.make(k, seq))

    def rd_recv(d):
        while rd.count < 8 * rd_per:
            rd.check(d.recv_multipart(), (id(d),))
            rd_credit.release()
            if rd.count == 8 * rd_per:
                rd_done.set()

    # XPUB/SUB with a fixed subscriber set, no HWM drops
    ps = [Ledger() for _ in range(3)]
    xpub = ctx.socket(zmq.XPUB)
    xpub.sndhwm = 0
    xpub.xpub_verbose = 1  # pass every subscription up, not just the first per topic
    xpub.rcvtimeo = 10_000
    addr = inproc_endpoint("soak-pub")
    xpub.bind(addr)
    subs = []
    for _ in range(3):
        sub = ctx.socket(zmq.SUB)
        sub.rcvhwm = 0
        sub.connect(addr)
        sub.subscribe(b"")
        subs.append(sub)
    for _ in range(3):
        assert xpub.recv() == b"\x01"  # every subscription is in: no slow joiner
    ps_per = per_pattern // 2
    ps_done = gevent.event.Event()

    ps_credit = [BoundedSemaphore(FLOW_WINDOW) for _ in range(3)]

    def ps_send(sid):
        for seq in range(ps_per):
            for credit in ps_credit:
                credit.acquire()
            xpub.send_multipart(Ledger.make(sid, seq))

    def ps_recv(sub, ledger, finished, credit):
        while ledger.count < 2 * ps_per:
            ledger.check(sub.recv_multipart())
            credit.release()
        finished.append(1)
        if len(finished) == 3:
            ps_done.set()

    finished: list[int] = []
    spawn(echo)
    for pull in pulls:
        for _ in range(4):
            spawn(pp_recv, pull)
    for d in dealers:
        spawn(rd_recv, d)
        spawn(rd_recv, d)
    for sub, ledger, credit in zip(subs, ps, ps_credit):
        spawn(ps_recv, sub, ledger, finished, credit)
    if sample_memory:
        rss.append(_rss())
    for sid in range(senders):
        spawn(pp_send, sid)
    for k in range(8):
        spawn(rd_send, k)
    for sid in range(2):
        spawn(ps_send, sid)
    budget = max(BUDGET_MIN, total / 20_000)
    assert done.wait(budget), f"PUSH/PULL: {pp.count} of {senders * per_sender}"
    assert rd_done.wait(budget), f"ROUTER/DEALER: {rd.count} of {8 * rd_per}"
    assert ps_done.wait(budget), f"PUB/SUB: {[x.count for x in ps]}"
    assert pp.complete(senders, per_sender)
    assert rd.complete(8, rd_per)
    assert all(x.complete(2, ps_per) for x in ps)
    assert pp.count + rd.count + sum(x.count for x in ps) >= total * 0.95
    if sample_memory:
        warm = rss[min(2, len(rss) - 1)]
        mib = 1024 * 1024
        print(
            f"\nsoak: {pp.count + rd.count + sum(x.count for x in ps):,} messages received "
            f"(PUSH/PULL {pp.count:,}, ROUTER/DEALER {rd.count:,}, PUB/SUB {sum(x.count for x in ps):,}), "
            f"0 lost, 0 duplicated; RSS after warm-up {warm / mib:.1f} MiB, at the end {rss[-1] / mib:.1f} MiB, "
            f"peak {max(rss) / mib:.1f} MiB over {len(rss)} samples"
        )
        assert rss[-1] - warm < LONG_RSS_GROWTH, f"RSS grew {rss[-1] - warm} bytes after warm-up"


@pytest.mark.timeout(240)
def test_soak_quick(ctx, spawn):
    _soak(ctx, spawn, QUICK_MESSAGES)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_soak_long(ctx, spawn):
    _soak(ctx, spawn, LONG_MESSAGES, sample_memory=True)


@pytest.mark.timeout(240)
def test_cancellation_storm(ctx, spawn):
    """100,000 messages through send and recv calls that Timeout and kill()
    interrupt at random: each received exactly once, sockets usable after."""
    total = 100_000
    push = ctx.socket(zmq.PUSH)
    pull = ctx.socket(zmq.PULL)
    push.sndhwm = pull.rcvhwm = 50  # senders block too, so sends get interrupted
    addr = inproc_endpoint("storm")
    pull.bind(addr)
    push.connect(addr)
    rng = random.Random(1234)
    received = []
    next_seq = iter(range(total))
    retry: list[int] = []
    interrupted = {"send": 0, "recv": 0, "kill": 0}
    all_in = gevent.event.Event()

    def sender():
        while True:
            seq = retry.pop() if retry else next(next_seq, None)
            if seq is None:
                return
            if rng.random() < 0.002:
                gevent.sleep(rng.random() * 0.002)  # lulls, so receivers wait and time out
            try:
                with gevent.Timeout(rng.choice([0.00005, 0.0005, 0.005])):
                    push.send(b"%d" % seq)
            except gevent.Timeout:
                interrupted["send"] += 1
                retry.append(seq)  # an interrupted send sent nothing

    def receiver():
        while True:
            if stalled.is_set():
                gevent.sleep(0.001)  # receivers stall, so senders fill the HWM and wait
                continue
            try:
                with gevent.Timeout(rng.choice([0.00005, 0.0005, 0.005])):
                    received.append(pull.recv())
            except gevent.Timeout:
                interrupted["recv"] += 1
            except gevent.GreenletExit:
                interrupted["kill"] += 1
                raise
            if len(received) == total:
                all_in.set()

    stalled = gevent.event.Event()
    receivers = [spawn(receiver) for _ in range(6)]
    senders = [spawn(sender) for _ in range(2)]

    def killer():
        while not all_in.is_set():
            gevent.sleep(rng.random() * 0.003)
            i = rng.randrange(len(receivers))
            receivers[i].kill(block=False)
            receivers[i] = spawn(receiver)
            if rng.random() < 0.2:
                stalled.clear() if stalled.is_set() else stalled.set()
        stalled.clear()

    spawn(killer)
    assert all_in.wait(200), f"{len(received)} of {total}"
    gevent.joinall(senders, timeout=10)
    assert len(received) == total
    assert len(set(received)) == total
    assert interrupted["recv"] + interrupted["kill"] > 500 and interrupted["send"] > 500, interrupted
    for g in receivers:
        g.kill()
    push.send(b"after")
    assert pull.recv() == b"after"


_PEER = textwrap.dedent(
    """
    import sys, zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.bind(sys.argv[1])
    print('ready', flush=True)
    while True:
        ident, seq = s.recv_multipart()
        s.send_multipart([ident, b'ack', seq])
    """
)


@pytest.mark.timeout(120)
def test_peer_killed_and_restarted(ctx, tmp_path):
    """The peer is SIGKILLed mid-stream and restarted on the same port: greenzmq
    reconnects, traffic resumes without a hang, every message ends acknowledged."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    endpoint = f"tcp://127.0.0.1:{port}"
    script = tmp_path / "peer.py"
    script.write_text(_PEER)

    def start_peer():
        p = subprocess.Popen([sys.executable, str(script), endpoint], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        return p

    peer = start_peer()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.reconnect_ivl = 20
    dealer.rcvtimeo = 300  # lazy-pirate: resend what is not acknowledged in time
    dealer.connect(endpoint)
    total = 3000
    acked: set[int] = set()
    kills = 0
    try:
        for seq in range(total):
            if seq in (1000, 2000):
                peer.send_signal(signal.SIGKILL)
                peer.wait(10)
                kills += 1
                peer = start_peer()
            deadline = time.monotonic() + 30
            while seq not in acked:
                assert time.monotonic() < deadline, f"no ack for {seq}: hang after peer restart"
                dealer.send(b"%d" % seq)
                try:
                    while True:
                        kind, got = dealer.recv_multipart()
                        acked.add(int(got))
                        if int(got) == seq:
                            break
                except zmq.Again:
                    continue
    finally:
        peer.kill()
        peer.wait(10)
    assert kills == 2
    assert acked == set(range(total))


@pytest.mark.timeout(60)
def test_tcp_garbage_is_dropped_and_nothing_else_affected(ctx, spawn):
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")

    def echo():
        while True:
            router.send_multipart(router.recv_multipart())

    spawn(echo)
    rng = random.Random(5)
    for i in range(20):
        junk = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            junk.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096))))
        except OSError:
            pass  # libzmq may already have dropped us
        junk.close()
        dealer.send(b"%d" % i)
        with gevent.Timeout(5):
            assert dealer.recv() == b"%d" % i


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["term", "destroy"])
def test_shutdown_wakes_1000_blocked_greenlets(spawn, how):
    ctx = zmq.Context()
    pulls = [ctx.socket(zmq.PULL) for _ in range(500)]
    pushes = [ctx.socket(zmq.PUSH) for _ in range(500)]
    for s in pulls + pushes:
        s.bind(inproc_endpoint("shutdown"))  # pushes have no peer: send blocks
    woke = []

    def blocked(sock, op):
        try:
            op()
        except zmq.ContextTerminated:
            woke.append(time.monotonic())
            sock.close(linger=0)

    for s in pulls:
        spawn(blocked, s, s.recv)
    for s in pushes:
        spawn(blocked, s, lambda s=s: s.send(b"x"))
    gevent.sleep(0.1)
    t0 = time.monotonic()
    if how == "term":
        spawn(ctx.term).get(timeout=30)
    else:
        spawn(ctx.destroy, 0).get(timeout=30)
    gevent.sleep(0)
    assert len(woke) == 1000
    assert max(woke) - t0 < 1.0 + WAKE_BOUND
    assert ctx.closed


_OPEN_SOCKETS = textwrap.dedent(
    """
    import faulthandler, os, signal
    # A child inherits the runner's signal dispositions, and Python keeps an
    # inherited SIG_IGN for SIGINT (it installs its KeyboardInterrupt handler
    # only over SIG_DFL): under a runner started as a background job of a
    # non-interactive shell (`cmd &`, nohup, some CI runners) this child would
    # ignore SIGINT. Start from the dispositions a terminal gives a program.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the parent's stack dump on a hang
    import greenzmq as zmq, gevent
    # gevent's libev loop (the default) runs Python signal handlers only in
    # its callbacks, and on POSIX it has no periodic check: a signal that lands
    # after the last check and before epoll_wait blocks is not handled until
    # the loop wakes again, which an idle process never does. Plain gevent
    # programs lose a Ctrl-C that way too; a wakeup fd the loop watches (its
    # callback is one more check) closes the window.
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    wakeup = gevent.get_hub().loop.io(r, 1)
    wakeup.start(os.read, r, 4096)
    wakeup.ref = False
    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL); s.bind_to_random_port('tcp://127.0.0.1')
    p = ctx.socket(zmq.PUSH); p.bind_to_random_port('tcp://127.0.0.1')
    gevent.spawn(p.send, b'blocked forever')
    gevent.spawn(s.recv)
    # Announced from the hub, once the two greenlets above are parked on
    # their sockets and the main greenlet on s.recv(): the signal finds every
    # greenlet waiting, not the main one still at module level.
    gevent.spawn(print, 'ready', flush=True)
    s.recv()
    """
)

#: How long the child gets to exit after the signal (it takes milliseconds).
EXIT_BOUND = 15.0


def _signal_dispositions(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            return " ".join(line.strip() for line in f if line.startswith(("SigIgn", "SigCgt")))
    except OSError:
        return "(no /proc)"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_process_with_open_sockets_exits_on_signal(tmp_path, sig):
    """A process whose greenlets all wait on open sockets dies of SIGINT
    (KeyboardInterrupt, then Python's exit by SIGINT) or SIGTERM: nothing in
    greenzmq swallows the signal or holds up the interpreter's exit."""
    script = tmp_path / "open_sockets.py"
    script.write_text(_OPEN_SOCKETS)
    p = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = p.stdout.readline()
        if line.strip() != "ready":
            p.kill()
            _, err = p.communicate()
            pytest.fail(f"child not ready: {line!r}\n{err}")
        p.send_signal(sig)
        try:
            _, err = p.communicate(timeout=EXIT_BOUND)
        except subprocess.TimeoutExpired:
            dispositions = _signal_dispositions(p.pid)
            p.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack, to stderr
            try:
                _, err = p.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate()
            pytest.fail(f"process did not exit on {sig!r} ({dispositions}); its stderr:\n{err}")
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    # SIGTERM kills; an uncaught KeyboardInterrupt makes Python exit by SIGINT
    assert p.returncode == -sig, f"exit status {p.returncode}, stderr:\n{err}"
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in err, err


_FORK = textwrap.dedent(
    """
    import os, sys
    import gevent
    import greenzmq as zmq
    fork = {'os': os.fork, 'gevent': gevent.fork}[sys.argv[1]]
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port('tcp://127.0.0.1')
    pid = fork()
    if pid == 0:
        try:
            pull.recv()
        except zmq.ForkedSocketError as e:
            ok = 'fork' in str(e)
        else:
            ok = False
        c = zmq.Context()
        push = c.socket(zmq.PUSH)
        push.connect('tcp://127.0.0.1:%d' % port)
        push.send(b'from child' if ok else b'no clear error')
        push.close(linger=5000)
        c.term()
        os._exit(0)
    msg = pull.recv()
    _, status = os.waitpid(pid, 0)
    print(msg.decode(), status)
    pull.close(); ctx.term()
    """
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["os", "gevent"])
def test_fork(tmp_path, how):
    script = tmp_path / "fork.py"
    script.write_text(_FORK)
    out = subprocess.run([sys.executable, str(script), how], capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["from", "child", "0"], out.stdout + out.stderr
