"""Security: CURVE-encrypted traffic under load loses,
duplicates and corrupts nothing; with the green authenticator
(:class:`greenzmq.auth.GreenAuthenticator`), a CURVE server refuses a client
whose key it does not know, while its authorised clients keep exchanging
messages undisturbed.

Everything runs over tcp://127.0.0.1 (CURVE only applies to connection-based
transports), with real keys made by :func:`zmq.curve_keypair` or
:func:`greenzmq.auth.create_certificates`.
"""

from __future__ import annotations

import time

import gevent
import gevent.event
import pytest
from conftest import TERM_BOUND, WAKE_BOUND

import greenzmq as zmq
from greenzmq.auth import CURVE_ALLOW_ANY, GreenAuthenticator, create_certificates, load_certificate
from greenzmq.monitor import Monitor

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")

#: Clients (each its own DEALER, its own greenlet) and messages each sends in
#: the soak: 4 x 6,000 = 24,000 requests, echoed back, so 48,000 encrypted
#: messages in all.
CLIENTS = 4
PER_CLIENT = 6_000
#: Requests a client may have in flight: bounds the queues (HWM never
#: reached, so nothing may be dropped) while keeping the pipe full.
WINDOW = 200
#: The longest a connected client may go without a reply while an intruder
#: hammers the server's handshakes: generous for a loaded 2-core machine, yet
#: a stall (a blocked ZAP handler, a server stuck in a handshake) exceeds it.
STALL_BOUND = 5 * WAKE_BOUND
#: Intruder attempts: each is a fresh DEALER with an unknown key.
INTRUDERS = 5
#: How long the test waits for libzmq to report a refused handshake.
HANDSHAKE_BOUND = 10.0


def frame(client: int, seq: int) -> list[bytes]:
    """A sequence-numbered message whose body is checkable (no collisions)."""
    head = b"%d:%d" % (client, seq)
    return [head, head[::-1] * (1 + seq % 7), bytes([seq % 256]) * (seq % 97)]


def check(msg: list[bytes]) -> tuple[int, int]:
    client, seq = map(int, msg[0].split(b":"))
    assert msg == frame(client, seq), f"corrupted: {msg[:2]!r}"
    return client, seq


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    with gevent.Timeout(TERM_BOUND, AssertionError("context did not terminate within the bound")):
        context.destroy(linger=0)


def curve_server(ctx, public: bytes, secret: bytes):
    server = ctx.socket(zmq.ROUTER)
    server.linger = 0
    server.curve_server = True
    server.curve_publickey, server.curve_secretkey = public, secret
    server.sndhwm = server.rcvhwm = 0
    port = server.bind_to_random_port("tcp://127.0.0.1")
    return server, f"tcp://127.0.0.1:{port}"


def curve_client(ctx, endpoint: str, server_public: bytes, keys: tuple[bytes, bytes]):
    client = ctx.socket(zmq.DEALER)
    client.linger = 0
    client.curve_serverkey = server_public
    client.curve_publickey, client.curve_secretkey = keys
    client.sndhwm = client.rcvhwm = 0
    client.connect(endpoint)
    return client


def echo(server, stop: gevent.event.Event, seen: dict[bytes, int]):
    """Echo every request back to its sender; count requests per routing id."""
    while not stop.is_set():
        if not server.poll(100):
            continue
        msg = server.recv_multipart()
        seen[msg[0]] = seen.get(msg[0], 0) + 1
        server.send_multipart(msg)


class Client:
    """One CURVE DEALER that sends ``count`` numbered requests through a
    window and checks every echo: in order, once each, intact. Records the
    longest gap between two replies."""

    def __init__(self, ctx, cid: int, endpoint: str, server_public: bytes, keys):
        self.cid = cid
        self.sock = curve_client(ctx, endpoint, server_public, keys)
        self.received = 0
        self.max_gap = 0.0

    def run(
        self, count: int, started: gevent.event.Event | None = None, busy: gevent.event.Event | None = None
    ) -> int:
        """Send at least ``count`` requests, and keep sending while ``busy`` is set;
        return how many were sent (every one of them was echoed back)."""
        sent = 0
        last = time.monotonic()

        def more() -> bool:
            return sent < count or (busy is not None and busy.is_set())

        while more() or self.received < sent:
            while more() and sent - self.received < WINDOW:
                self.sock.send_multipart(frame(self.cid, sent))
                sent += 1
            with gevent.Timeout(
                STALL_BOUND * 4, AssertionError(f"client {self.cid} stalled at {self.received}")
            ):
                msg = self.sock.recv_multipart()
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last)
            last = now
            client, seq = check(msg)
            assert client == self.cid, "a reply reached the wrong client"
            assert seq == self.received, (
                f"client {self.cid}: expected {self.received}, got {seq} (lost/dup/reorder)"
            )
            self.received += 1
            if started is not None and self.received == WINDOW:
                started.set()
        return sent


@pytest.mark.timeout(60)
def test_curve_soak_nothing_lost_duplicated_or_corrupted(ctx):
    server_public, server_secret = zmq.curve_keypair()
    server, endpoint = curve_server(ctx, server_public, server_secret)
    stop = gevent.event.Event()
    seen: dict[bytes, int] = {}
    echoer = gevent.spawn(echo, server, stop, seen)
    clients = [Client(ctx, i, endpoint, server_public, zmq.curve_keypair()) for i in range(CLIENTS)]
    t0 = time.monotonic()
    runs = [gevent.spawn(c.run, PER_CLIENT) for c in clients]
    gevent.joinall(runs, timeout=50, raise_error=True)
    elapsed = time.monotonic() - t0
    stop.set()
    echoer.join(TERM_BOUND)
    assert all(r.successful() for r in runs), "a client did not finish"
    assert [r.value for r in runs] == [PER_CLIENT] * CLIENTS
    assert [c.received for c in clients] == [PER_CLIENT] * CLIENTS
    assert sorted(seen.values()) == [PER_CLIENT] * CLIENTS, "the server saw a request twice or not at all"
    print(f"CURVE soak: {2 * CLIENTS * PER_CLIENT} encrypted messages in {elapsed:.2f} s")


def test_curve_is_enforced_a_wrong_server_key_gets_nothing_through(ctx):
    """A client with the wrong server key cannot talk to the server at all
    (proof that CURVE is in force, not silently off): its handshake fails,
    and nothing it sent reaches the server."""
    server_public, server_secret = zmq.curve_keypair()
    server, endpoint = curve_server(ctx, server_public, server_secret)
    wrong_public, _ = zmq.curve_keypair()
    client = ctx.socket(zmq.DEALER)
    client.linger = 0
    with Monitor(
        client,
        zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | zmq.EVENT_HANDSHAKE_SUCCEEDED
        | zmq.EVENT_DISCONNECTED,
    ) as mon:
        client.curve_serverkey = wrong_public
        client.curve_publickey, client.curve_secretkey = zmq.curve_keypair()
        client.connect(endpoint)
        client.send(b"secret")
        ev = mon.recv(timeout=HANDSHAKE_BOUND)
        assert ev is not None, "no handshake outcome reported"
        assert ev.event != zmq.EVENT_HANDSHAKE_SUCCEEDED
    assert server.poll(int(WAKE_BOUND * 1000)) == 0


@pytest.fixture
def certificates(tmp_path):
    """Server and two authorised client certificates, plus one intruder whose
    public key is not in the authorised directory."""
    public = tmp_path / "authorized"
    public.mkdir()
    keys = {}
    for name in ("server", "alice", "bob", "mallory"):
        _, secret_file = create_certificates(str(tmp_path), name)
        keys[name] = load_certificate(secret_file)
    for name in ("alice", "bob"):
        (tmp_path / f"{name}.key").rename(public / f"{name}.key")
    return keys, str(public)


@pytest.mark.timeout(60)
def test_unknown_key_refused_while_known_clients_run_undisturbed(ctx, certificates):
    keys, authorized = certificates
    auth = GreenAuthenticator(ctx)
    auth.start()
    try:
        auth.allow("127.0.0.1")
        auth.configure_curve(domain="*", location=authorized)
        server, endpoint = curve_server(ctx, *keys["server"])
        stop = gevent.event.Event()
        seen: dict[bytes, int] = {}
        echoer = gevent.spawn(echo, server, stop, seen)

        clients = [
            Client(ctx, i, endpoint, keys["server"][0], keys[name]) for i, name in enumerate(("alice", "bob"))
        ]
        started = [gevent.event.Event() for _ in clients]
        intrusion = gevent.event.Event()
        intrusion.set()  # the clients keep streaming until the intrusion is over
        runs = [gevent.spawn(c.run, PER_CLIENT, s, intrusion) for c, s in zip(clients, started)]
        for s in started:
            assert s.wait(HANDSHAKE_BOUND), "an authorised client got no reply"

        # while both are mid-stream, intruders with an unknown key try, one after another
        refused = 0
        for _ in range(INTRUDERS):
            intruder = ctx.socket(zmq.DEALER)
            intruder.linger = 0
            with Monitor(intruder, zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED) as mon:
                intruder.curve_serverkey = keys["server"][0]
                intruder.curve_publickey, intruder.curve_secretkey = keys["mallory"]
                intruder.connect(endpoint)
                intruder.send_multipart(frame(99, 0))
                ev = mon.recv(timeout=HANDSHAKE_BOUND)
            intruder.close()
            assert ev is not None, "the intruder's handshake outcome was never reported"
            assert ev.event == zmq.EVENT_HANDSHAKE_FAILED_AUTH, ev
            assert ev.value == 400  # ZAP "invalid credentials": refused by the authenticator
            refused += 1
            assert all(not r.ready() for r in runs), "a client ended during the intrusion"
        intrusion.clear()

        gevent.joinall(runs, timeout=50, raise_error=True)
        stop.set()
        echoer.join(TERM_BOUND)
        assert refused == INTRUDERS
        sent = [r.value for r in runs]
        assert all(n >= PER_CLIENT for n in sent)
        assert [c.received for c in clients] == sent
        assert sorted(seen.values()) == sorted(sent), "the intruder's message got through, or one was lost"
        assert len(seen) == len(clients)
        for c in clients:
            assert c.max_gap < STALL_BOUND, f"client {c.cid} stalled {c.max_gap:.2f} s during the intrusion"
        assert auth.is_alive()
    finally:
        auth.stop()


def _intruder_outcome(ctx, endpoint: str, server_public: bytes, keys) -> object:
    """Connect one DEALER with ``keys`` (None: no CURVE at all) and return the
    first handshake event libzmq reports for it."""
    intruder = ctx.socket(zmq.DEALER)
    intruder.linger = 0
    events = (
        zmq.EVENT_HANDSHAKE_FAILED_AUTH
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | zmq.EVENT_HANDSHAKE_SUCCEEDED
    )
    with Monitor(intruder, events) as mon:
        if keys is not None:
            intruder.curve_serverkey = server_public
            intruder.curve_publickey, intruder.curve_secretkey = keys
        intruder.connect(endpoint)
        ev = mon.recv(timeout=HANDSHAKE_BOUND)
    intruder.close()
    assert ev is not None, "no handshake outcome was reported"
    return ev


@pytest.mark.timeout(30)
def test_the_refusal_comes_from_the_key_directory(ctx, certificates):
    """Control for the test above: the same unknown key is accepted when the
    authenticator allows any CURVE key, and refused again once the directory
    is configured; a client without CURVE fails at the protocol level."""
    keys, authorized = certificates
    with GreenAuthenticator(ctx) as auth:
        server, endpoint = curve_server(ctx, *keys["server"])
        auth.configure_curve(domain="*", location=CURVE_ALLOW_ANY)
        ev = _intruder_outcome(ctx, endpoint, keys["server"][0], keys["mallory"])
        assert ev.event == zmq.EVENT_HANDSHAKE_SUCCEEDED
        auth.configure_curve(domain="*", location=authorized)
        ev = _intruder_outcome(ctx, endpoint, keys["server"][0], keys["mallory"])
        assert (ev.event, ev.value) == (zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400)
        ev = _intruder_outcome(ctx, endpoint, keys["server"][0], keys["alice"])
        assert ev.event == zmq.EVENT_HANDSHAKE_SUCCEEDED
        ev = _intruder_outcome(ctx, endpoint, keys["server"][0], None)
        assert ev.event != zmq.EVENT_HANDSHAKE_SUCCEEDED
        assert auth.is_alive()
