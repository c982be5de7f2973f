"""DRAFT sockets (CLIENT/SERVER, RADIO/DISH, ...) on a DRAFT-enabled libzmq and pyzmq.

PyPI's pyzmq and Debian's libzmq have no DRAFT API, so this module skips
there. Run it in the venv that ``scripts/build-draft.sh`` builds::

    scripts/build-draft.sh
    ~/.cache/greenzmq-draft/venv/bin/python -m pytest tests/test_draft.py -q

These sockets are thread-safe in libzmq and have no ZMQ_FD of their own;
pyzmq hands out a proxy fd that libzmq never drains (see greenzmq/_waiter.py),
so besides the DRAFT API itself these tests check that waiting on them does
not spin the event loop.
"""

from __future__ import annotations

import itertools
import os
import socket as stdsocket
import time
import warnings

import gevent
import pytest
import zmq as pyzmq
from conftest import HUB_STALL_BOUND, WAKE_BOUND, hub_ticker, inproc_endpoint, wait_parked

import greenzmq as zmq

if not pyzmq.has("draft"):
    pytest.skip(
        "needs libzmq and pyzmq built with the DRAFT API (run scripts/build-draft.sh)",
        allow_module_level=True,
    )

#: Each test here finishes in well under a second; a lost wake-up hangs.
TEST_TIMEOUT = 20
pytestmark = [pytest.mark.draft, pytest.mark.timeout(TEST_TIMEOUT)]

#: Every thread-safe DRAFT socket type, by name (pyzmq 27 exposes them all).
THREAD_SAFE_TYPES = ["SERVER", "CLIENT", "RADIO", "DISH", "SCATTER", "GATHER", "PEER", "CHANNEL"]
#: Event-loop iterations allowed while greenlets wait on an idle socket for
#: IDLE_SECONDS. An idle loop runs a handful (the sleep's own timer); an io
#: watcher on an undrained fd runs one per few microseconds, i.e. many
#: thousands.
IDLE_ITERATIONS_BOUND = 50
IDLE_SECONDS = 0.3
#: RADIO/DISH handshake (see _probe): how often the RADIO resends its probe,
#: and how long the DISH waits for each before the next.
SYNC_ATTEMPTS = 100
SYNC_INTERVAL = 0.05
PROBE = b"probe:"
#: A short RCVTIMEO/SNDTIMEO, in ms, for the timeout tests.
SHORT_TIMEOUT_MS = 100


# -- helpers -----------------------------------------------------------------------


def _bind(sock, transport: str) -> str:
    if transport == "tcp":
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        return f"tcp://127.0.0.1:{port}"
    endpoint = inproc_endpoint("draft")
    sock.bind(endpoint)
    return endpoint


def _socket(ctx, kind, **opts):
    sock = ctx.socket(kind)
    sock.linger = 0
    for name, value in opts.items():
        setattr(sock, name, value)
    return sock


def _free_udp_port() -> int:
    with stdsocket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bind_udp(dish) -> str:
    # libzmq has no random-port bind for udp://: take a port the kernel just
    # handed out, retrying if another process grabbed it in between.
    for _ in range(5):
        endpoint = f"udp://127.0.0.1:{_free_udp_port()}"
        try:
            dish.bind(endpoint)
            return endpoint
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE:
                raise
    raise AssertionError("no free udp port on 127.0.0.1 after 5 attempts")


def _loop_iterations_while_idle(seconds: float = IDLE_SECONDS) -> int:
    """How many times the hub's loop turned while this greenlet slept."""
    loop = gevent.get_hub().loop
    before = loop.iteration
    gevent.sleep(seconds)  # time is the subject: a span of idleness
    return loop.iteration - before


_probe_tokens = itertools.count()


def _probe(radio, dish, group: str) -> None:
    """Resend a probe on ``group`` until the DISH gets it.

    Then the path is up and the RADIO knows that the DISH joined ``group``.
    Over TCP a join travels to the RADIO asynchronously and what the RADIO
    sends before it has processed the join is dropped (with libzmq 4.3.4 the
    first message after a join is lost even when it is sent a while later,
    with plain blocking pyzmq too); over UDP the first datagrams may be
    dropped before the path is up. Probe copies that arrive late are skipped
    by :func:`_recv_data`.
    """
    token = PROBE + b"%d" % next(_probe_tokens)

    def until_token():
        while dish.recv() != token:
            pass

    receiver = gevent.spawn(until_token)
    try:
        for _ in range(SYNC_ATTEMPTS):
            radio.send(token, group=group)
            receiver.join(SYNC_INTERVAL)
            if receiver.ready():
                receiver.get()
                return
        raise AssertionError(f"the DISH never got a probe on group {group!r}")
    finally:
        receiver.kill()


def _recv_data(dish):
    """The next frame that is not a late probe copy."""
    for _ in range(SYNC_ATTEMPTS + 1):
        frame = dish.recv(copy=False)
        if not frame.bytes.startswith(PROBE):
            return frame
    raise AssertionError("only probe copies arrived")


@pytest.fixture(params=["udp", "tcp"])
def radio_dish(ctx, request):
    """(radio, dish) connected over udp:// or tcp:// loopback, nothing joined."""
    radio = _socket(ctx, zmq.RADIO)
    dish = _socket(ctx, zmq.DISH)
    if request.param == "udp":
        endpoint = _bind_udp(dish)
    else:
        endpoint = _bind(dish, "tcp")
    radio.connect(endpoint)
    yield radio, dish
    radio.close()
    dish.close()


@pytest.fixture
def client_server(ctx, transport):
    """(server, connect) over tcp or inproc; connect() makes a connected CLIENT."""
    server = _socket(ctx, zmq.SERVER)
    endpoint = _bind(server, transport)
    clients = []

    def connect(**opts):
        client = _socket(ctx, zmq.CLIENT, **opts)
        client.connect(endpoint)
        clients.append(client)
        return client

    yield server, connect
    for client in clients:
        client.close()
    server.close()


def _routing_id_of(server, client, payload: bytes = b"hello") -> int:
    client.send(payload)
    frame = server.recv(copy=False)
    assert frame.bytes == payload
    return frame.routing_id


# -- the sockets and their fd ---------------------------------------------------------


@pytest.mark.parametrize("name", THREAD_SAFE_TYPES)
def test_every_thread_safe_type_is_green_without_a_draft_fd_warning(ctx, name):
    with warnings.catch_warnings(record=True) as caught:
        # appended: pyzmq's DraftFDWarning shows up here unless greenzmq's
        # own (earlier, narrower) filter silences it
        warnings.filterwarnings("always", category=pyzmq.error.DraftFDWarning, append=True)
        sock = _socket(ctx, getattr(zmq, name))
    assert isinstance(sock, zmq.Socket)
    assert sock.get(zmq.THREAD_SAFE) == 1
    assert not [w for w in caught if issubclass(w.category, pyzmq.error.DraftFDWarning)]
    sock.close()


def test_waiting_on_a_signalled_draft_socket_does_not_spin(client_server, spawn):
    server, connect = client_server
    client = connect()
    # each round raises the proxy fd (a message arrives at an idle server)
    for i in range(3):
        waiter = spawn(server.recv)
        wait_parked(server)
        client.send(b"%d" % i)
        assert waiter.get(timeout=WAKE_BOUND) == b"%d" % i
    waiters = [spawn(server.recv), spawn(client.recv)]
    wait_parked(server)
    wait_parked(client)
    cpu0 = time.process_time()
    iterations = _loop_iterations_while_idle()
    cpu = time.process_time() - cpu0
    assert iterations < IDLE_ITERATIONS_BOUND, f"the hub spun {iterations} times in {IDLE_SECONDS}s idle"
    assert cpu < IDLE_SECONDS / 2, f"{cpu:.3f}s of CPU in {IDLE_SECONDS}s idle"
    client.send(b"still awake")
    assert waiters[0].get(timeout=WAKE_BOUND) == b"still awake"


@pytest.mark.parametrize("bind_kind, connect_kind", [("GATHER", "SCATTER"), ("CHANNEL", "CHANNEL")])
def test_scatter_gather_and_channel_block_only_the_greenlet(ctx, spawn, transport, bind_kind, connect_kind):
    receiver_sock = _socket(ctx, getattr(zmq, bind_kind))
    sender_sock = _socket(ctx, getattr(zmq, connect_kind))
    sender_sock.connect(_bind(receiver_sock, transport))
    with hub_ticker() as ticker:
        receiver = spawn(receiver_sock.recv)
        wait_parked(receiver_sock)  # this greenlet runs on while the receiver waits
        assert not receiver.ready()
        sender_sock.send(b"scattered")
        assert receiver.get(timeout=WAKE_BOUND) == b"scattered"
    assert ticker.max_gap < HUB_STALL_BOUND, "the hub was blocked while a greenlet waited in recv"


N_WAITERS = 6


def test_interrupted_draft_waiters_lose_nothing(client_server, spawn):
    # greenlets queued in recv on one SERVER; every other one is killed while
    # waiting: the rest get the messages, in order, each exactly once
    server, connect = client_server
    client = connect()
    waiters = [spawn(server.recv) for _ in range(N_WAITERS)]
    wait_parked(server, n=N_WAITERS)
    survivors = waiters[1::2]
    gevent.killall(waiters[0::2], timeout=WAKE_BOUND)
    for i in range(len(survivors)):
        client.send(b"%d" % i)
    assert [w.get(timeout=WAKE_BOUND) for w in survivors] == [b"%d" % i for i in range(len(survivors))]
    with pytest.raises(zmq.Again):
        server.recv(zmq.DONTWAIT)  # nothing left over, nothing duplicated


# -- CLIENT/SERVER ------------------------------------------------------------------------


N_CLIENTS = 20
REQUESTS_PER_CLIENT = 5
SERVER_GREENLETS = 4


@pytest.mark.timeout(30)
def test_many_clients_and_server_greenlets_reply_by_routing_id(client_server, spawn):
    server, connect = client_server
    served_by = [0] * SERVER_GREENLETS

    def serve(k):
        while True:
            frame = server.recv(copy=False)
            server.send(b"re:" + frame.bytes, routing_id=frame.routing_id)
            served_by[k] += 1

    def ask(i):
        client = connect()
        replies = []
        for r in range(REQUESTS_PER_CLIENT):
            request = b"%d-%d" % (i, r)
            client.send(request)
            replies.append(client.recv())
        return replies

    for k in range(SERVER_GREENLETS):
        spawn(serve, k)
    askers = [spawn(ask, i) for i in range(N_CLIENTS)]
    gevent.joinall(askers, timeout=20, raise_error=True)
    for i, asker in enumerate(askers):
        assert asker.get(timeout=0) == [b"re:%d-%d" % (i, r) for r in range(REQUESTS_PER_CLIENT)]
    assert sum(served_by) == N_CLIENTS * REQUESTS_PER_CLIENT
    assert sum(1 for n in served_by if n) > 1, f"one greenlet served everything: {served_by}"


def test_reply_with_frame_routing_id_send_string_and_copy_false(client_server):
    server, connect = client_server
    client = connect()
    rid = _routing_id_of(server, client)
    frame = zmq.Frame(b"by frame")
    frame.routing_id = rid
    server.send(frame)
    assert client.recv() == b"by frame"
    server.send(b"no copy", routing_id=rid, copy=False)
    assert client.recv() == b"no copy"
    server.send_string("by string", routing_id=rid)
    assert client.recv_string() == "by string"
    server.send_json({"k": 1}, routing_id=rid)
    assert client.recv_json() == {"k": 1}


def test_unknown_routing_id_raises_host_unreachable_and_server_stays_usable(client_server):
    server, connect = client_server
    client = connect()
    rid = _routing_id_of(server, client)
    with pytest.raises(zmq.ZMQError) as info:
        server.send(b"nobody", routing_id=rid + 1)
    assert info.value.errno == zmq.EHOSTUNREACH
    with pytest.raises(zmq.ZMQError) as info:
        server.send(b"no routing id")  # a SERVER must be told where to
    assert info.value.errno == zmq.EHOSTUNREACH
    server.send(b"after", routing_id=rid)
    assert client.recv() == b"after"


REPLIES_BEYOND_HWM = 6


@pytest.mark.timeout(20)
def test_zmq_green_regression_blocked_reply_keeps_its_routing_id(ctx, spawn):
    # pyzmq 27's zmq.green drops routing_id= on its blocking path: the reply
    # fails with "Host unreachable". Here the SERVER's pipe to the client is
    # full, so every reply after the first blocks and is retried by the hub.
    server = _socket(ctx, zmq.SERVER, sndhwm=1)
    # a reply lost by the hub's retry fails the receive below instead of hanging it
    client = _socket(ctx, zmq.CLIENT, rcvhwm=1, rcvtimeo=int(WAKE_BOUND * 5 * 1000))
    endpoint = inproc_endpoint("hwm")
    server.bind(endpoint)
    client.connect(endpoint)
    rid = _routing_id_of(server, client)
    senders = [spawn(server.send, b"%d" % i, routing_id=rid) for i in range(REPLIES_BEYOND_HWM)]
    wait_parked(server, "writers")  # the pipe filled: the later replies wait in the hub
    received = [client.recv() for _ in range(REPLIES_BEYOND_HWM)]
    assert received == [b"%d" % i for i in range(REPLIES_BEYOND_HWM)]  # FIFO, none lost
    gevent.joinall(senders, timeout=WAKE_BOUND, raise_error=True)


# -- RADIO/DISH ---------------------------------------------------------------------------


def test_radio_dish_group_filtering_join_leave_str_and_bytes(radio_dish):
    radio, dish = radio_dish
    dish.join("weather")
    dish.join(b"news")
    _probe(radio, dish, "weather")
    _probe(radio, dish, "news")

    radio.send(b"goal!", group="sports")  # not joined: filtered out
    radio.send(b"sunny", group="weather")
    frame = _recv_data(dish)
    assert (frame.group, frame.bytes) == ("weather", b"sunny")
    radio.send(b"extra", group=b"news")
    frame = _recv_data(dish)
    assert (frame.group, frame.bytes) == ("news", b"extra")

    dish.leave(b"weather")  # bytes where join took str,
    dish.leave("news")  # and str where it took bytes
    dish.join("sports")
    _probe(radio, dish, "sports")
    radio.send(b"rain", group="weather")
    radio.send(b"old", group="news")
    radio.send(b"score", group="sports")
    frame = _recv_data(dish)
    assert (frame.group, frame.bytes) == ("sports", b"score")

    by_frame = zmq.Frame(b"by frame")
    by_frame.group = "sports"
    radio.send(by_frame)
    assert _recv_data(dish).bytes == b"by frame"


def test_radio_send_group_is_delivered_from_a_blocking_greenlet(radio_dish, spawn):
    # the zmq.green regression for group=: its blocking send dropped the group
    # and the message vanished without an error
    radio, dish = radio_dish
    dish.join("g")
    _probe(radio, dish, "g")
    receiver = spawn(_recv_data, dish)
    wait_parked(dish)
    sender = spawn(radio.send, b"payload", group="g")
    frame = receiver.get(timeout=WAKE_BOUND)
    assert (frame.group, frame.bytes) == ("g", b"payload")
    sender.get(timeout=WAKE_BOUND)


def test_bad_groups_raise_clearly_and_the_dish_stays_usable(radio_dish):
    radio, dish = radio_dish
    with pytest.raises(TypeError, match="str or bytes"):
        dish.join(5)
    with pytest.raises(TypeError, match="str or bytes"):
        dish.leave(None)
    with pytest.raises(zmq.ZMQError) as info:
        dish.join("x" * 256)  # longer than libzmq's ZMQ_GROUP_MAX_LENGTH
    assert info.value.errno == zmq.EINVAL
    with pytest.raises(zmq.ZMQError) as info:
        dish.leave("never joined")
    assert info.value.errno == zmq.EINVAL
    dish.join("ok")
    with pytest.raises(zmq.ZMQError) as info:
        dish.join(b"ok")  # the same group, as bytes: already joined
    assert info.value.errno == zmq.EINVAL
    _probe(radio, dish, "ok")
    radio.send(b"fine", group="ok")
    assert _recv_data(dish).bytes == b"fine"


# -- timeouts and closing -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["SERVER", "DISH", "GATHER"])
def test_rcvtimeo_raises_again_and_socket_stays_usable(ctx, kind):
    sock = _socket(ctx, getattr(zmq, kind), rcvtimeo=SHORT_TIMEOUT_MS)
    sock.bind_to_random_port("tcp://127.0.0.1")
    start = time.monotonic()
    with pytest.raises(zmq.Again):
        sock.recv()
    elapsed = time.monotonic() - start
    assert SHORT_TIMEOUT_MS / 1000 * 0.9 <= elapsed < SHORT_TIMEOUT_MS / 1000 + WAKE_BOUND
    with pytest.raises(zmq.Again):
        sock.recv()  # and again: the timer and queue were cleaned up


def test_timeouts_on_client_server(client_server, ctx):
    server, connect = client_server
    lonely = _socket(ctx, zmq.CLIENT, sndtimeo=SHORT_TIMEOUT_MS)  # connected to nobody: send blocks
    with pytest.raises(zmq.Again):
        lonely.send(b"lost?")
    with pytest.raises(zmq.Again), gevent.Timeout(SHORT_TIMEOUT_MS / 1000, zmq.Again()):
        server.recv()
    client = connect(rcvtimeo=SHORT_TIMEOUT_MS)
    with pytest.raises(zmq.Again):
        client.recv()
    rid = _routing_id_of(server, client, b"ping")  # everything still usable
    server.send(b"pong", routing_id=rid)
    assert client.recv() == b"pong"
    lonely.close()


@pytest.mark.parametrize("kind", ["SERVER", "DISH", "CLIENT"])
def test_close_while_waiting_wakes_the_waiter(ctx, spawn, kind):
    sock = _socket(ctx, getattr(zmq, kind))
    sock.bind_to_random_port("tcp://127.0.0.1")
    waiters = [spawn(sock.recv) for _ in range(3)]
    wait_parked(sock, n=3)
    sock.close()
    for waiter in waiters:
        waiter.join(WAKE_BOUND)
        assert isinstance(waiter.exception, zmq.ZMQError)
        assert waiter.exception.errno == zmq.ENOTSOCK


@pytest.mark.timeout(20)
def test_context_term_wakes_a_draft_waiter(spawn):
    context = zmq.Context()
    server = _socket(context, zmq.SERVER)
    server.bind_to_random_port("tcp://127.0.0.1")

    def waiter():
        try:
            server.recv()
        except zmq.ContextTerminated:
            server.close()
            return "terminated"

    g = spawn(waiter)
    wait_parked(server)
    term = spawn(context.term)
    assert g.get(timeout=WAKE_BOUND * 5) == "terminated"
    term.get(timeout=WAKE_BOUND * 5)


# -- Poller ---------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_poller_over_draft_classic_plain_and_fd_items(ctx, spawn):
    server = _socket(ctx, zmq.SERVER)
    endpoint = _bind(server, "tcp")
    client = _socket(ctx, zmq.CLIENT)
    client.connect(endpoint)
    dish = _socket(ctx, zmq.DISH)
    radio = _socket(ctx, zmq.RADIO)
    radio.connect(_bind_udp(dish))
    dish.join("p")
    pull = _socket(ctx, zmq.PULL)
    push = _socket(ctx, zmq.PUSH)
    push.connect(_bind(pull, "tcp"))
    plain_ctx = pyzmq.Context()  # a plain (non-green) DRAFT socket too
    plain_server = plain_ctx.socket(pyzmq.SERVER)
    plain_server.linger = 0
    plain_client = plain_ctx.socket(pyzmq.CLIENT)
    plain_client.linger = 0
    plain_client.connect(_bind(plain_server, "tcp"))
    rfd, wfd = os.pipe()
    try:
        poller = zmq.Poller()
        for item in (server, dish, pull, plain_server, rfd):
            poller.register(item, zmq.POLLIN)

        def poll_once():
            return dict(poller.poll(10_000))

        def wakes_on(item, make_ready, consume):
            polling = spawn(poll_once)
            wait_parked(server, "listeners")  # parked: then the wake-up is what is tested
            assert not polling.ready(), f"poll returned early: {polling.value}"
            assert _loop_iterations_while_idle() < IDLE_ITERATIONS_BOUND, "poller spins while idle"
            make_ready()
            ready = polling.get(timeout=WAKE_BOUND * 5)
            assert ready == {item: zmq.POLLIN}
            consume()

        wakes_on(server, lambda: client.send(b"c"), lambda: server.recv())
        wakes_on(pull, lambda: push.send(b"p"), lambda: pull.recv())
        wakes_on(plain_server, lambda: plain_client.send(b"x"), lambda: plain_server.recv())
        wakes_on(rfd, lambda: os.write(wfd, b"!"), lambda: os.read(rfd, 1))

        def radio_until_ready():
            # UDP may drop the first datagrams before the path is up
            for _ in range(SYNC_ATTEMPTS):
                radio.send(b"r", group="p")
                if dish.poll(SYNC_INTERVAL * 1000):
                    return

        polling = spawn(poll_once)
        wait_parked(server, "listeners")
        assert not polling.ready()
        spawn(radio_until_ready)
        assert polling.get(timeout=WAKE_BOUND * 5) == {dish: zmq.POLLIN}
        assert dish.recv(copy=False).group == "p"
        # second round of every draft item: the proxy fds were signalled
        # before, and the poller still neither spins nor misses the news
        wakes_on(server, lambda: client.send(b"c2"), lambda: server.recv())
        wakes_on(plain_server, lambda: plain_client.send(b"y"), lambda: plain_server.recv())
    finally:
        os.close(rfd)
        os.close(wfd)
        plain_client.close()
        plain_server.close()
        plain_ctx.term()


def test_poller_and_recv_waiter_share_a_draft_socket(client_server, spawn):
    server, connect = client_server
    client = connect()
    poller = zmq.Poller()
    poller.register(server, zmq.POLLIN)
    polling = spawn(poller.poll, 10_000)
    receiving = spawn(server.recv)
    wait_parked(server, "listeners")
    wait_parked(server)
    client.send(b"one")  # taken by the waiting recv: not news for the poller
    client.send(b"two")  # left for the poller to report
    assert receiving.get(timeout=WAKE_BOUND) == b"one"
    assert polling.get(timeout=WAKE_BOUND) == [(server, zmq.POLLIN)]
    assert server.recv() == b"two"
