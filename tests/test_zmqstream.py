"""ZMQStream on the hub-native IOLoop (greenzmq/eventloop/zmqstream.py)."""

from __future__ import annotations

import json
import logging
import os
import resource

import gevent
import gevent.event
import gevent.pywsgi
import gevent.socket
import gevent.subprocess
import pytest
import zmq as pyzmq
from conftest import HUB_STALL_BOUND, WAKE_BOUND, hub_ticker, inproc_endpoint, run_until_blocked, wait_parked

import greenzmq as zmq
from greenzmq.eventloop import IOLoop, ZMQStream


@pytest.fixture
def streams(loop, make_pair):
    """streams(bind_type, connect_type) -> two ZMQStreams on a connected pair."""

    def _make(bind_type, connect_type, **opts):
        a, b = make_pair(bind_type, connect_type, **opts)
        return ZMQStream(a, loop), ZMQStream(b, loop)

    return _make


def run_until(loop: IOLoop, done: gevent.event.Event, bound: float = 20.0) -> None:
    """Run the loop until ``done`` is set; fail if that takes longer than ``bound``."""
    done.rawlink(lambda _: loop.stop())
    with gevent.Timeout(bound, AssertionError("the loop did not finish within the bound")):
        loop.start()


# -- echo, order, callbacks ------------------------------------------------------------


def test_echo_req_rep(loop, streams):
    server, client = streams(zmq.REP, zmq.REQ)
    server.on_recv_stream(lambda stream, msg: stream.send_multipart(msg))
    replies = []
    done = gevent.event.Event()
    n = 200

    def on_reply(msg):
        replies.append(msg)
        if len(replies) == n:
            done.set()
        else:
            client.send_multipart([b"%d" % len(replies), b"second frame"])

    client.on_recv(on_reply)
    client.send_multipart([b"0", b"second frame"])
    run_until(loop, done)
    assert replies == [[b"%d" % i, b"second frame"] for i in range(n)]


def test_router_dealer_echo_with_many_in_flight(loop, streams):
    # ROUTER_MANDATORY: a ROUTER otherwise drops replies to a peer whose pipe
    # is full (more in flight than the HWMs hold); with it, the stream waits
    server, client = streams(zmq.ROUTER, zmq.DEALER)
    server.socket.router_mandatory = 1
    server.on_recv(server.send_multipart)  # [identity, payload] back to the sender
    got = []
    done = gevent.event.Event()
    n = 2000
    client.on_recv(lambda msg: (got.append(msg[0]), len(got) == n and done.set()))
    for i in range(n):
        client.send(b"%d" % i)
    run_until(loop, done)
    assert got == [b"%d" % i for i in range(n)]


def test_on_recv_copy_false_gives_frames(loop, streams):
    pull, push = streams(zmq.PULL, zmq.PUSH)
    got = []
    done = gevent.event.Event()
    pull.on_recv(lambda msg: (got.append(msg), done.set()), copy=False)
    push.send(b"frame")
    run_until(loop, done)
    assert isinstance(got[0][0], pyzmq.Frame)
    assert got[0][0].bytes == b"frame"


def test_sends_are_queued_in_order_and_never_dropped_past_the_hwm(loop, streams):
    pull, push = streams(zmq.PULL, zmq.PUSH, sndhwm=5, rcvhwm=5)
    n = 3000
    got = []
    done = gevent.event.Event()
    pull.on_recv(lambda msg: (got.append(int(msg[0])), len(got) == n and done.set()))
    for i in range(n):
        push.send(b"%d" % i)
    assert push.sending()
    run_until(loop, done)
    assert got == list(range(n))
    assert not push.sending()


def test_on_send_sees_every_sent_message(loop, streams):
    pull, push = streams(zmq.PULL, zmq.PUSH)
    sent, per_message = [], []
    done = gevent.event.Event()
    push.on_send(lambda msg, status: (sent.append((msg, status)), len(sent) == 4 and done.set()))
    push.send(b"a")
    push.send_multipart([b"b", b"c"], callback=lambda msg, status: per_message.append(msg))
    push.send_string("d")
    push.send_json({"e": 1})
    run_until(loop, done)
    assert [m for m, _ in sent] == [[b"a"], [b"b", b"c"], [b"d"], [json.dumps({"e": 1}).encode()]]
    assert all(status is None for _, status in sent)
    assert per_message == [[b"b", b"c"]]
    got = [pull.socket.recv_multipart() for _ in range(4)]
    assert got[1] == [b"b", b"c"]


def test_on_send_stream_and_track(loop, streams):
    pull, push = streams(zmq.PULL, zmq.PUSH)
    seen = []
    done = gevent.event.Event()
    push.on_send_stream(lambda stream, msg, status: (seen.append((stream, status)), done.set()))
    push.send(b"x" * 100_000, copy=False, track=True)
    run_until(loop, done)
    stream, status = seen[0]
    assert stream is push
    assert isinstance(status, pyzmq.MessageTracker)
    assert pull.socket.recv() == b"x" * 100_000


def test_send_pyobj_and_recv_helpers(loop, streams):
    pull, push = streams(zmq.PULL, zmq.PUSH)
    push.send_pyobj({"k": [1, 2]})
    got = []
    done = gevent.event.Event()
    pull.on_recv(lambda msg: (got.append(msg), done.set()))
    run_until(loop, done)
    import pickle

    assert pickle.loads(got[0][0]) == {"k": [1, 2]}


def test_bad_messages_raise_and_nothing_is_queued(loop, streams):
    pull, push = streams(zmq.PULL, zmq.PUSH)
    with pytest.raises(IndexError):
        push.send_multipart([])
    with pytest.raises(TypeError):
        push.send(object())
    with pytest.raises(TypeError):
        push.send_multipart([b"ok", 3.5])
    with pytest.raises(TypeError, match="str"):
        push.send_string(b"bytes")
    with pytest.raises(TypeError):
        push.send_json({1, 2})
    with pytest.raises(TypeError):
        push.on_recv("not callable")
    assert not push.sending()
    got = []
    done = gevent.event.Event()
    pull.on_recv(lambda msg: (got.append(msg), done.set()))
    push.send(b"still works")
    run_until(loop, done)
    assert got == [[b"still works"]]


def test_send_refused_by_the_socket_is_reported_and_the_rest_goes_on(loop, ctx, caplog):
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    router.router_mandatory = 1
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.identity = b"known"
    dealer.connect(f"tcp://127.0.0.1:{port}")
    dealer.send(b"hello")  # ROUTER_MANDATORY: writable once a peer is there
    assert router.recv_multipart() == [b"known", b"hello"]
    stream = ZMQStream(router, loop)
    statuses = []
    done = gevent.event.Event()
    stream.on_send(lambda msg, status: (statuses.append(status), len(statuses) == 2 and done.set()))
    stream.send_multipart([b"nobody", b"x"])
    stream.send_multipart([b"known", b"y"])
    with caplog.at_level(logging.ERROR, logger="greenzmq.eventloop"):
        run_until(loop, done)
    assert statuses[0].errno == zmq.EHOSTUNREACH
    assert statuses[1] is None
    assert dealer.recv() == b"y"
    assert "send failed" in caplog.text
    assert not stream.closed()


# -- callbacks that fail, stop, flush ------------------------------------------------------------


def test_exception_in_on_recv_is_logged_and_the_stream_keeps_working(loop, streams, caplog):
    pull, push = streams(zmq.PULL, zmq.PUSH)
    got = []
    done = gevent.event.Event()

    def on_recv(msg):
        got.append(msg[0])
        if msg[0] == b"1":
            raise ValueError("bad message handler")
        if len(got) == 3:
            done.set()

    pull.on_recv(on_recv)
    for i in range(3):
        push.send(b"%d" % i)
    with caplog.at_level(logging.ERROR, logger="greenzmq.eventloop"):
        run_until(loop, done)
    assert got == [b"0", b"1", b"2"]
    assert "bad message handler" in caplog.text
    assert any(r.exc_info and r.exc_info[0] is ValueError for r in caplog.records)


def test_stop_on_recv_leaves_messages_in_the_socket(loop, streams):
    pull, push = streams(zmq.PULL, zmq.PUSH)
    got = []
    done = gevent.event.Event()

    def on_recv(msg):
        got.append(msg[0])
        if len(got) == 2:
            pull.stop_on_recv()
            done.set()

    pull.on_recv(on_recv)
    assert pull.receiving()
    for i in range(5):
        push.send(b"%d" % i)
    run_until(loop, done)
    assert not pull.receiving()
    loop.call_later(0.05, loop.stop)  # the stream must not receive any more
    with gevent.Timeout(10):
        loop.start()
    assert got == [b"0", b"1"]
    assert [pull.socket.recv() for _ in range(3)] == [b"2", b"3", b"4"]


def test_flush_with_limits(loop, streams):
    pull, push = streams(zmq.PULL, zmq.PUSH)
    for i in range(10):
        push.send(b"%d" % i)
    assert push.flush(zmq.POLLOUT, limit=3) == 3
    assert push.flush(zmq.POLLIN) == 0  # nothing to receive on a PUSH: no error
    assert push.flush(zmq.POLLOUT) == 7
    assert not push.sending()
    got = []
    pull.on_recv(lambda msg: got.append(msg[0]))
    deadline = gevent.Timeout(10, AssertionError("messages did not arrive"))
    with deadline:
        while len(got) < 4:
            pull.socket.poll()  # green: until the next message is there
            assert pull.flush(zmq.POLLIN, limit=4 - len(got)), "flush left a ready message"
    assert got == [b"0", b"1", b"2", b"3"]
    with pytest.raises(ValueError):
        pull.flush(limit=-1)


def test_flush_pollin_without_callback_discards(loop, streams):
    pull, push = streams(zmq.PULL, zmq.PUSH)
    for i in range(3):
        push.socket.send(b"%d" % i)
    with gevent.Timeout(10):
        flushed = 0
        while flushed < 3:
            pull.socket.poll()  # green: until the next message is there
            taken = pull.flush(zmq.POLLIN)
            assert taken, "flush left a ready message"
            flushed += taken
    push.socket.send(b"next")
    assert pull.socket.recv() == b"next"


# -- closing ---------------------------------------------------------------------------------


def test_close_runs_the_close_callback_once(loop, streams):
    pull, push = streams(zmq.PULL, zmq.PUSH)
    closes = []
    pull.set_close_callback(lambda: closes.append(1))
    sock = pull.socket
    pull.close()
    pull.close()
    assert closes == [1]
    assert pull.closed() and sock.closed
    with pytest.raises(OSError):
        pull.send(b"x")
    with pytest.raises(OSError):
        pull.on_recv(print)


def test_socket_closed_behind_the_stream_closes_it(loop, streams):
    pull, push = streams(zmq.PULL, zmq.PUSH)
    done = gevent.event.Event()
    pull.set_close_callback(done.set)
    pull.on_recv(print)
    loop.add_callback(pull.socket.close, 0)
    run_until(loop, done)
    assert pull.closed()


def test_context_term_closes_the_stream(loop):
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(inproc_endpoint())
    stream = ZMQStream(pull, loop)
    stream.on_recv(print)
    done = gevent.event.Event()
    stream.set_close_callback(done.set)
    terminator = gevent.spawn(ctx.term)
    run_until(loop, done)
    assert stream.closed()
    terminator.join(10)
    assert terminator.successful()


def test_close_hands_queued_messages_over_within_linger(loop, streams):
    pull, push = streams(zmq.PULL, zmq.PUSH, sndhwm=2, rcvhwm=2)
    n = 50
    for i in range(n):
        push.send(b"%d" % i)
    got = []
    reader = gevent.spawn(lambda: [got.append(pull.socket.recv()) for _ in range(n)])
    push.close(linger=5000)  # waits (this greenlet) until the socket accepted all
    reader.join(10)
    assert got == [b"%d" % i for i in range(n)]


def test_close_with_linger_0_reports_what_it_could_not_send(loop, ctx, caplog):
    push = ctx.socket(zmq.PUSH)  # no peer: never writable
    stream = ZMQStream(push, loop)
    for i in range(3):
        stream.send(b"%d" % i)
    with caplog.at_level(logging.WARNING, logger="greenzmq.eventloop"):
        stream.close(linger=0)
    assert "3 unsent" in caplog.text


def test_plain_pyzmq_socket_is_refused(loop):
    raw_ctx = pyzmq.Context()
    try:
        raw = raw_ctx.socket(pyzmq.PULL)
        with pytest.raises(TypeError, match="greenzmq socket"):
            ZMQStream(raw, loop)
        assert loop._handlers == {}
        raw.close(0)
    finally:
        raw_ctx.term()


def test_stream_and_greenlets_share_a_socket(loop, streams, spawn):
    pull, push = streams(zmq.PULL, zmq.PUSH)
    n = 500
    by_stream, by_greenlet = [], []
    done = gevent.event.Event()

    def check():
        if len(by_stream) + len(by_greenlet) == n:
            done.set()

    pull.on_recv(lambda msg: (by_stream.append(msg[0]), check()))

    def reader():
        while True:
            by_greenlet.append(pull.socket.recv())
            check()

    spawn(reader)
    for i in range(n):
        push.send(b"%d" % i)
    run_until(loop, done)
    assert sorted(by_stream + by_greenlet, key=int) == [b"%d" % i for i in range(n)]


def test_stream_sends_do_not_strand_a_greenlet_receiving_on_the_same_socket(loop, ctx, spawn):
    """The stream sends through pyzmq directly, which can consume the ZMQ_FD
    edge that a greenlet blocked in recv on the same socket waits for. The
    core's rule (an EVENTS check after such a call: scheduled by the stream,
    and by its handler's re-arming) must wake that greenlet, or it sleeps
    forever with replies waiting. (Fails with both checks removed.)"""
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(f"tcp://127.0.0.1:{port}")
    n, rounds = 200, 20
    spawn(_echo, router, n * rounds)
    stream = ZMQStream(dealer, loop)  # sends only: the greenlet receives
    got = []
    done = gevent.event.Event()

    def reader():
        for _ in range(n * rounds):
            with gevent.Timeout(WAKE_BOUND * 5, AssertionError(f"reader stranded after {len(got)}")):
                got.append(dealer.recv())
        done.set()

    def writer():
        for r in range(rounds):  # bursts, so that replies arrive while the stream sends
            for i in range(n):
                stream.send(b"%d" % (r * n + i))
            gevent.sleep(0)

    spawn(reader)
    spawn(writer)
    run_until(loop, done)
    assert got == [b"%d" % i for i in range(n * rounds)]
    stream.close()


def test_stream_recvs_do_not_strand_a_greenlet_sending_on_the_same_socket(loop, ctx, spawn):
    """As above, the other way: the stream's direct recvs can consume the edge
    that tells a greenlet blocked in send (high-water mark) that there is room."""
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    router.sndhwm = 0  # a ROUTER drops what exceeds its high-water mark: never here
    router.rcvhwm = 10
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.sndhwm = 10  # the writer blocks often: its wake-up is what is tested
    dealer.connect(f"tcp://127.0.0.1:{port}")
    n = 3000
    spawn(_echo, router, n)
    stream = ZMQStream(dealer, loop)
    got = []
    done = gevent.event.Event()

    def on_recv(msg):
        got.append(msg[0])
        if len(got) == n:
            done.set()

    stream.on_recv(on_recv)

    def writer():
        for i in range(n):
            with gevent.Timeout(WAKE_BOUND * 5, AssertionError(f"writer stranded at {i}")):
                dealer.send(b"%d" % i)

    spawn(writer)
    run_until(loop, done)
    assert got == [b"%d" % i for i in range(n)]
    stream.close()


def _echo(router, count):
    for _ in range(count):
        router.send_multipart(router.recv_multipart())


# -- pyzmq issue 374: many processes pushing into one stream ---------------------------------

_PUSHER = """
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.PUSH)
s.connect(sys.argv[1])
for i in range(int(sys.argv[3])):
    s.send_multipart([sys.argv[2].encode(), b"%d" % i])
s.close(linger=-1)
ctx.term()
"""


@pytest.mark.timeout(120)
def test_pyzmq_374_many_processes_pushing_into_one_stream(loop, ctx, python_exe):
    """10 real processes x 200 PUSH messages into one PULL ZMQStream: every one arrives."""
    procs_n, per_proc = 10, 200
    pull = ctx.socket(zmq.PULL)
    pull.linger = 0
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    stream = ZMQStream(pull, loop)
    got: dict[bytes, list[int]] = {}
    count = [0]
    done = gevent.event.Event()

    def on_recv(msg):
        got.setdefault(msg[0], []).append(int(msg[1]))
        count[0] += 1
        if count[0] == procs_n * per_proc:
            done.set()

    stream.on_recv(on_recv)
    procs = [
        gevent.subprocess.Popen(
            [python_exe, "-c", _PUSHER, f"tcp://127.0.0.1:{port}", f"p{k}", str(per_proc)]
        )
        for k in range(procs_n)
    ]
    try:
        run_until(loop, done, bound=100)
    finally:
        for p in procs:  # the pushers exit by themselves once their messages are out
            try:
                p.wait(30)
            except gevent.subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
    assert [p.returncode for p in procs] == [0] * procs_n
    assert count[0] == procs_n * per_proc
    assert sorted(got) == sorted(f"p{k}".encode() for k in range(procs_n))
    for seq in got.values():
        assert seq == list(range(per_proc))  # each sender's messages, all, in order


# -- side by side with a gevent server and plain greenlets -----------------------------------


def test_pywsgi_server_greenlets_and_a_stream_in_one_process(loop, ctx, spawn):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello from pywsgi"]

    server = gevent.pywsgi.WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    try:
        rep = ctx.socket(zmq.REP)
        rep.linger = 0
        port = rep.bind_to_random_port("tcp://127.0.0.1")
        service = ZMQStream(rep, loop)
        service.on_recv_stream(lambda stream, msg: stream.send_multipart([b"re: " + msg[0]]))

        def http_get():
            sock = gevent.socket.create_connection(("127.0.0.1", server.server_port), timeout=10)
            with sock:
                sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
                data = b""
                while True:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return data
                    data += chunk

        def zmq_client():
            req = ctx.socket(zmq.REQ)
            req.linger = 0
            req.connect(f"tcp://127.0.0.1:{port}")
            out = []
            for i in range(20):
                req.send(b"%d" % i)
                out.append(req.recv())
            req.close()
            return out

        jobs = [spawn(http_get) for _ in range(5)] + [spawn(zmq_client)]
        done = gevent.event.Event()
        gevent.spawn(lambda: (gevent.joinall(jobs, raise_error=True), done.set()))
        with hub_ticker() as ticker:
            run_until(loop, done)
        assert ticker.max_gap < HUB_STALL_BOUND
        for job in jobs[:5]:
            assert job.value.startswith(b"HTTP/1.1 200") or job.value.startswith(b"HTTP/1.0 200")
            assert job.value.endswith(b"hello from pywsgi")
        assert jobs[5].value == [b"re: %d" % i for i in range(20)]
    finally:
        server.stop(timeout=1)


_MONKEY_PATCHED = """
from gevent import monkey
monkey.patch_all()
import threading, urllib.request
import greenzmq as zmq
from gevent.pywsgi import WSGIServer
from greenzmq.eventloop import IOLoop, ZMQStream

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"patched ok"]

server = WSGIServer(("127.0.0.1", 0), app, log=None)
server.start()
ctx = zmq.Context()
loop = IOLoop.current()
rep = ctx.socket(zmq.REP)
port = rep.bind_to_random_port("tcp://127.0.0.1")
ZMQStream(rep).on_recv_stream(lambda s, m: s.send_multipart(m))
req = ZMQStream(ctx.socket(zmq.REQ))
req.connect("tcp://127.0.0.1:%d" % port)
out = {}

def on_reply(msg):
    out["zmq"] = msg
    # urllib over the patched socket module, from a (green) thread
    def fetch():
        body = urllib.request.urlopen("http://127.0.0.1:%d/" % server.server_port, timeout=10).read()
        loop.add_callback(lambda: (out.__setitem__("http", body), loop.stop()))
    threading.Thread(target=fetch).start()

req.on_recv(on_reply)
req.send(b"ping")
loop.call_later(20, loop.stop)
loop.start()
print(out)
assert out == {"zmq": [b"ping"], "http": b"patched ok"}, out
server.stop()
ctx.destroy(linger=0)
print("OK")
"""


def test_works_monkey_patched(python_exe):
    """After gevent.monkey.patch_all(): stream, pywsgi, urllib and (green) threads together."""
    proc = gevent.subprocess.run(
        [python_exe, "-c", _MONKEY_PATCHED], capture_output=True, text=True, timeout=50
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("OK")


def test_recv_callback_may_block_on_its_own_socket_and_another(loop, ctx, spawn):
    """A callback's green blocking calls work even on the stream's own socket."""
    pull = ctx.socket(zmq.PULL)
    pull.linger = 0
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    push.connect(f"tcp://127.0.0.1:{port}")
    rep = ctx.socket(zmq.REP)
    rep.linger = 0
    rep_port = rep.bind_to_random_port("tcp://127.0.0.1")
    stream = ZMQStream(pull, loop)
    got = []
    done = gevent.event.Event()

    def on_recv(msg):
        got.append(msg[0])
        if msg[0] == b"first":
            got.append(pull.recv())  # blocks this callback until "second" comes
            req = ctx.socket(zmq.REQ)
            req.linger = 0
            req.connect(f"tcp://127.0.0.1:{rep_port}")
            req.send(b"q")
            got.append(req.recv())  # blocks on another socket, served by a greenlet
            req.close()
        else:
            done.set()

    stream.on_recv(on_recv)
    spawn(lambda: rep.send(b"a:" + rep.recv()))

    def producer():
        push.send(b"first")
        wait_parked(pull)  # the callback blocks in recv on the stream's own socket now
        push.send(b"second")  # for that recv; "third" waits in the socket for the stream
        push.send(b"third")

    spawn(producer)
    run_until(loop, done)
    assert got == [b"first", b"second", b"a:q", b"third"]
    stream.close()
    push.close()
    rep.close()


def test_ioloop_close_all_fds_closes_stream_sockets(ctx):
    IOLoop.clear_current()
    own = IOLoop()
    try:
        pull = ctx.socket(zmq.PULL)
        ZMQStream(pull, own).on_recv(print)
        own.close(all_fds=True)
        assert pull.closed
    finally:
        IOLoop.clear_current()


def test_idle_streams_do_not_spin(loop, ctx):
    """Waiting for a message, or for room to send, costs no CPU."""

    pull = ctx.socket(zmq.PULL)
    pull.linger = 0
    pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)  # no peer: never writable
    push.linger = 0
    idle_in, idle_out = ZMQStream(pull, loop), ZMQStream(push, loop)
    idle_in.on_recv(print)
    idle_out.send(b"waits for a peer")
    r, w = os.pipe()
    try:
        loop.add_handler(r, print, IOLoop.READ)  # an fd that never becomes readable
        seconds = 0.5
        loop.call_later(seconds, loop.stop)
        before = resource.getrusage(resource.RUSAGE_SELF)
        with gevent.Timeout(10):
            loop.start()
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        assert cpu < seconds * 0.2, f"idle loop used {cpu:.3f} s of CPU in {seconds} s"
        assert idle_out.sending()
    finally:
        loop.remove_handler(r)
        os.close(r)
        os.close(w)
        idle_out.close(linger=0)


def test_stream_leaves_alone_a_socket_lent_to_a_device_during_its_callback(loop, ctx, caplog):
    """A recv callback may switch, and a device may borrow the stream's socket
    meanwhile (libzmq's proxy then runs on it in a native thread): the stream
    must make no more libzmq calls on it, so every later message goes through
    the device, and the stream reports that it cannot listen any more. (It
    went on receiving from the lent socket, racing libzmq's thread, then
    stopped without a word.)"""
    pull = ctx.socket(zmq.PULL)
    out = ctx.socket(zmq.PUSH)
    push = ctx.socket(zmq.PUSH)
    sink = ctx.socket(zmq.PULL)
    for s in (pull, out, push, sink):
        s.linger = 0
    pull.bind(inproc_endpoint())
    out.bind(inproc_endpoint())
    push.connect(pull.last_endpoint)
    sink.connect(out.last_endpoint)
    sink.rcvtimeo = int(WAKE_BOUND * 5 * 1000)
    stream = ZMQStream(pull, loop)
    seen, devices = [], []

    def on_recv(msg):
        seen.append(msg[0])
        if len(seen) == 2:
            devices.append(gevent.spawn(zmq.proxy, pull, out))
            run_until_blocked()  # the callback switches: the device lends pull to libzmq
            assert pull._waiters.lent_to is not None

    stream.on_recv(on_recv)
    for i in range(6):
        push.send(b"m%d" % i)
    forwarded, done = [], gevent.event.Event()

    def drain_sink():
        try:
            for _ in range(4):
                forwarded.append(sink.recv())
        finally:
            done.set()

    drainer = gevent.spawn(drain_sink)
    try:
        with caplog.at_level(logging.ERROR, logger="greenzmq.eventloop"):
            run_until(loop, done)
        assert seen == [b"m0", b"m1"]
        assert forwarded == [b"m2", b"m3", b"m4", b"m5"]
        assert "SocketLentError" in caplog.text
    finally:
        gevent.killall([drainer, *devices], timeout=WAKE_BOUND * 5)


def test_flush_from_another_thread_is_refused_before_touching_the_socket(loop, streams):
    """flush() calls pyzmq directly; from another OS thread it must raise
    WrongThreadError before it takes a message or sends one."""
    from gevent.monkey import get_original

    from greenzmq.error import WrongThreadError

    start_new_thread = get_original("_thread", "start_new_thread")
    allocate_lock = get_original("_thread", "allocate_lock")
    stream, peer = streams(zmq.PAIR, zmq.PAIR)
    stream.send(b"queued")
    peer.socket.send(b"incoming")
    got = []
    stream.on_recv(got.append)
    outcome = []
    done = allocate_lock()
    done.acquire()

    def other_thread():
        try:
            outcome.append(stream.flush())
        except Exception as exc:  # noqa: BLE001 - the test reports what it was
            outcome.append(exc)
        done.release()

    start_new_thread(other_thread, ())
    assert done.acquire(timeout=10)
    assert isinstance(outcome[0], WrongThreadError), outcome
    assert got == []  # nothing was taken in the other thread
    # both messages are still where they were, for the loop's thread
    arrived = gevent.event.Event()
    stream.on_recv(lambda msg: (got.append(msg), arrived.set()))
    run_until(loop, arrived)
    assert got == [[b"incoming"]]
    with gevent.Timeout(WAKE_BOUND * 5):
        assert peer.socket.recv() == b"queued"
