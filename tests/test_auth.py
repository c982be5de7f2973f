"""greenzmq.auth: real PLAIN, CURVE and NULL handshakes over tcp://127.0.0.1.

Every verdict is read from the client's monitor socket (handshake succeeded,
or failed with the ZAP status code), never inferred from a silence.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil

import gevent
import gevent.event
import pytest
import zmq as pyzmq
from conftest import HUB_STALL_BOUND, hub_ticker, run_until_blocked
from zmq.utils.monitor import recv_monitor_message

import greenzmq as zmq
from greenzmq.auth import (
    CURVE_ALLOW_ANY,
    ZAP_ENDPOINT,
    GreenAuthenticator,
    ThreadAuthenticator,
    create_certificates,
    load_certificate,
)

#: Bound (s) on one handshake verdict: loopback handshakes take milliseconds,
#: a lost ZAP reply means forever.
HANDSHAKE_BOUND = 10.0

#: Back-to-back start/stop cycles: enough to catch an endpoint freed lazily by
#: libzmq's reaper thread (which fails within a few cycles).
RESTARTS = 50

_VERDICTS = {
    zmq.EVENT_HANDSHAKE_SUCCEEDED: "ok",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "auth",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "no-detail",
}
_HANDSHAKE_EVENTS = 0
for _ev in _VERDICTS:
    _HANDSHAKE_EVENTS |= _ev


@pytest.fixture
def auth(ctx):
    a = GreenAuthenticator(ctx)
    a.start()
    yield a
    a.stop()


@pytest.fixture
def certs(tmp_path):
    """Server and two client keypairs, plus a public-key directory holding client1 only."""
    if not zmq.has("curve"):
        pytest.skip("libzmq built without CURVE security")
    keys = tmp_path / "keys"
    public = tmp_path / "public_keys"
    keys.mkdir()
    public.mkdir()
    paths = {}
    for name in ("server", "client1", "client2"):
        pub, secret = create_certificates(str(keys), name)
        paths[name] = (pub, secret)
    shutil.copy(paths["client1"][0], public)
    return {
        "public_dir": str(public),
        **{k: load_certificate(v[1]) for k, v in paths.items()},
        "paths": paths,
    }


def _server(ctx, **opts):
    s = ctx.socket(zmq.REP)
    s.linger = 0
    for k, v in opts.items():
        setattr(s, k, v)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    return s, f"tcp://127.0.0.1:{port}"


def _client_verdict(ctx, url, **opts):
    """Connect a REQ client with ``opts``; return (verdict, event value, client)."""
    c = ctx.socket(zmq.REQ)
    c.linger = 0
    for k, v in opts.items():
        setattr(c, k, v)
    mon = c.get_monitor_socket(_HANDSHAKE_EVENTS)
    try:
        c.connect(url)
        with gevent.Timeout(HANDSHAKE_BOUND, AssertionError("no handshake verdict within the bound")):
            ev = recv_monitor_message(mon)
    finally:
        c.disable_monitor()
        mon.close()
    return _VERDICTS[ev["event"]], ev["value"], c


def _roundtrip(server, client):
    """One request/reply; returns the User-Id ZAP gave the client."""
    client.send(b"ping")
    with gevent.Timeout(HANDSHAKE_BOUND, AssertionError("no request within the bound")):
        frame = server.recv(copy=False)
    assert frame.bytes == b"ping"
    server.send(b"pong")
    with gevent.Timeout(HANDSHAKE_BOUND, AssertionError("no reply within the bound")):
        assert client.recv() == b"pong"
    return frame.get("User-Id")


def _curve_server(ctx, certs, **opts):
    pub, secret = certs["server"]
    return _server(ctx, curve_server=True, curve_publickey=pub, curve_secretkey=secret, **opts)


def _curve_client_opts(certs, name):
    pub, secret = certs[name]
    return {"curve_serverkey": certs["server"][0], "curve_publickey": pub, "curve_secretkey": secret}


# -- PLAIN -----------------------------------------------------------------------------


def test_plain_right_password_accepted_with_user_id(ctx, auth):
    auth.configure_plain("*", {"admin": "secret"})
    server, url = _server(ctx, plain_server=True)
    verdict, _, client = _client_verdict(ctx, url, plain_username=b"admin", plain_password=b"secret")
    assert verdict == "ok"
    assert _roundtrip(server, client) == "admin"


def test_plain_wrong_password_and_unknown_user_rejected(ctx, auth):
    auth.configure_plain("*", {"admin": "secret"})
    _, url = _server(ctx, plain_server=True)
    assert _client_verdict(ctx, url, plain_username=b"admin", plain_password=b"wrong")[:2] == ("auth", 400)
    assert _client_verdict(ctx, url, plain_username=b"nobody", plain_password=b"secret")[:2] == ("auth", 400)


def test_plain_per_domain(ctx, auth):
    auth.configure_plain("global", {"admin": "secret"})
    other, url_other = _server(ctx, plain_server=True, zap_domain=b"other")
    server, url = _server(ctx, plain_server=True, zap_domain=b"global")
    creds = {"plain_username": b"admin", "plain_password": b"secret"}
    assert _client_verdict(ctx, url_other, **creds)[:2] == ("auth", 400)
    verdict, _, client = _client_verdict(ctx, url, **creds)
    assert verdict == "ok"
    assert _roundtrip(server, client) == "admin"


# -- CURVE -----------------------------------------------------------------------------


def test_curve_known_key_accepted_unknown_rejected(ctx, auth, certs):
    auth.configure_curve("*", certs["public_dir"])
    server, url = _curve_server(ctx, certs)
    verdict, _, client = _client_verdict(ctx, url, **_curve_client_opts(certs, "client1"))
    assert verdict == "ok"
    # pyzmq's default curve_user_id: the client's z85 public key
    assert _roundtrip(server, client) == certs["client1"][0].decode("ascii")
    assert _client_verdict(ctx, url, **_curve_client_opts(certs, "client2"))[:2] == ("auth", 400)


def test_curve_allow_any(ctx, auth, certs):
    auth.configure_curve("*", CURVE_ALLOW_ANY)
    server, url = _curve_server(ctx, certs)
    stranger_pub, stranger_secret = zmq.curve_keypair()
    verdict, _, client = _client_verdict(
        ctx,
        url,
        curve_serverkey=certs["server"][0],
        curve_publickey=stranger_pub,
        curve_secretkey=stranger_secret,
    )
    assert verdict == "ok"
    assert _roundtrip(server, client) == stranger_pub.decode("ascii")


def test_curve_reload_certificate_directory(ctx, auth, certs):
    auth.configure_curve("*", certs["public_dir"])
    server, url = _curve_server(ctx, certs)
    assert _client_verdict(ctx, url, **_curve_client_opts(certs, "client2"))[:2] == ("auth", 400)

    # add client2's public certificate, drop client1's, reload
    shutil.copy(certs["paths"]["client2"][0], certs["public_dir"])
    os.remove(os.path.join(certs["public_dir"], "client1.key"))
    auth.configure_curve("*", certs["public_dir"])

    verdict, _, client = _client_verdict(ctx, url, **_curve_client_opts(certs, "client2"))
    assert verdict == "ok"
    assert _roundtrip(server, client) == certs["client2"][0].decode("ascii")
    assert _client_verdict(ctx, url, **_curve_client_opts(certs, "client1"))[:2] == ("auth", 400)


# -- addresses -------------------------------------------------------------------------


def test_deny_loopback_rejects_null_and_plain(ctx, auth):
    auth.deny("127.0.0.1")
    auth.configure_plain("*", {"admin": "secret"})
    # NULL goes through ZAP only when the server names a domain
    null_server, url_null = _server(ctx, zap_domain=b"test")
    plain_server, url_plain = _server(ctx, plain_server=True)
    assert _client_verdict(ctx, url_null)[:2] == ("auth", 400)
    assert _client_verdict(ctx, url_plain, plain_username=b"admin", plain_password=b"secret")[:2] == (
        "auth",
        400,
    )


def test_allow_loopback_admits_null_and_still_checks_plain(ctx, auth):
    auth.allow("127.0.0.1")
    auth.configure_plain("*", {"admin": "secret"})
    server, url_null = _server(ctx, zap_domain=b"test")
    verdict, _, client = _client_verdict(ctx, url_null)
    assert verdict == "ok"
    _roundtrip(server, client)
    _, url_plain = _server(ctx, plain_server=True)
    assert _client_verdict(ctx, url_plain, plain_username=b"admin", plain_password=b"wrong")[:2] == (
        "auth",
        400,
    )


def test_allow_other_address_rejects_loopback(ctx, auth):
    auth.allow("192.0.2.1")  # TEST-NET-1: never our address
    _, url = _server(ctx, zap_domain=b"test")
    assert _client_verdict(ctx, url)[:2] == ("auth", 400)


def test_allow_and_deny_are_exclusive(auth):
    auth.allow("127.0.0.1")
    with pytest.raises(ValueError):
        auth.deny("127.0.0.2")


# -- green behaviour -------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_blocking_callback_blocks_only_the_authenticator(ctx, auth, certs, spawn):
    """A credentials callback waiting on an Event parks the ZAP greenlet only."""
    asked = gevent.event.Event()
    release = gevent.event.Event()

    class Provider:
        def callback(self, domain, key):
            asked.set()
            release.wait()
            return key == certs["client1"][0]

    auth.configure_curve_callback("*", Provider())
    server, url = _curve_server(ctx, certs)
    with hub_ticker() as ticker:
        verdict = spawn(_client_verdict, ctx, url, **_curve_client_opts(certs, "client1"))
        assert asked.wait(HANDSHAKE_BOUND)
        # the callback waits on its Event: this greenlet runs on, the handshake is pending
        assert not verdict.ready()
        release.set()
        result, _, client = verdict.get(timeout=HANDSHAKE_BOUND)
    # and the hub ran throughout, from the client's start to its verdict
    assert ticker.max_gap < HUB_STALL_BOUND, "the hub was blocked during the ZAP handshake"
    assert result == "ok"
    _roundtrip(server, client)


def test_malformed_zap_requests_get_replies_and_loop_survives(ctx, auth, caplog):
    auth.configure_plain("*", {"admin": "secret"})
    zap = ctx.socket(zmq.REQ)
    zap.linger = 0
    zap.connect(ZAP_ENDPOINT)
    with caplog.at_level(logging.CRITICAL, logger="zmq.auth"):
        for bad, code in [
            ([b"x"], b"400"),  # too short to carry a request id: pyzmq would never reply
            ([b"1.0", b"id1", b"", b"127.0.0.1", b""], b"400"),  # not enough frames
            ([b"9.9", b"id2", b"", b"127.0.0.1", b"", b"NULL"], b"400"),  # bad version
            ([b"1.0", b"id3", b"", b"127.0.0.1", b"", b"PLAIN", b"only-user"], b"400"),
        ]:
            zap.send_multipart(bad)
            with gevent.Timeout(HANDSHAKE_BOUND, AssertionError(f"no ZAP reply to {bad!r}")):
                reply = zap.recv_multipart()
            assert reply[2] == code, (bad, reply)
    assert auth.is_alive()
    # and real clients are still served
    server, url = _server(ctx, plain_server=True)
    verdict, _, client = _client_verdict(ctx, url, plain_username=b"admin", plain_password=b"secret")
    assert verdict == "ok"
    _roundtrip(server, client)


def test_failing_or_async_callback_refuses_with_500_and_loop_survives(ctx, auth, certs, caplog):
    class Broken:
        def callback(self, domain, key):
            raise KeyError("database down")

    class Async:
        def callback(self, domain, key):
            async def check():
                await asyncio.sleep(0)  # suspends: needs an asyncio loop
                return True

            return check()

    server, url = _curve_server(ctx, certs)
    with caplog.at_level(logging.CRITICAL, logger="zmq.auth"):
        for provider in (Broken(), Async()):
            auth.configure_curve_callback("*", provider)
            verdict = _client_verdict(ctx, url, **_curve_client_opts(certs, "client1"))
            assert verdict[:2] == ("auth", 500), provider
    assert auth.is_alive()

    class AsyncNoSuspend:  # a coroutine that never suspends runs to completion
        def callback(self, domain, key):
            async def check():
                return key == certs["client1"][0]

            return check()

    auth.configure_curve_callback("*", AsyncNoSuspend())
    verdict, _, client = _client_verdict(ctx, url, **_curve_client_opts(certs, "client1"))
    assert verdict == "ok"
    _roundtrip(server, client)


# -- lifecycle ---------------------------------------------------------------------------


def test_start_stop_restart_and_is_alive(ctx):
    a = GreenAuthenticator(ctx)
    assert not a.is_alive()
    a.start()
    assert a.is_alive()
    with pytest.raises(RuntimeError):
        a.start()
    a.stop()
    assert not a.is_alive()
    assert a.zap_socket is None
    a.stop()  # twice is fine
    for _ in range(RESTARTS):  # stop() frees the ZAP endpoint at once: restart right away
        a.start()
        a.stop()
    with a:
        a.configure_plain("*", {"u": "p"})
        server, url = _server(ctx, plain_server=True)
        verdict, _, client = _client_verdict(ctx, url, plain_username=b"u", plain_password=b"p")
        assert verdict == "ok"
    assert not a.is_alive()


def test_second_handler_on_same_context_is_refused(ctx, auth):
    other = GreenAuthenticator(ctx)
    with pytest.raises(zmq.ZMQError) as info:
        other.start()
    assert info.value.errno == zmq.EADDRINUSE
    assert not other.is_alive()
    assert auth.is_alive()


def test_context_destroy_ends_the_greenlet_quietly():
    c = zmq.Context()
    a = GreenAuthenticator(c)
    a.start()
    glet = a._greenlet
    with gevent.Timeout(HANDSHAKE_BOUND, AssertionError("context did not terminate")):
        c.destroy(linger=0)
    glet.join(HANDSHAKE_BOUND)
    assert glet.successful()
    assert not a.is_alive()


def test_context_destroyed_while_a_callback_blocks(certs, spawn, caplog):
    """The callback returns after its socket is gone: the greenlet ends, nothing is logged as an error."""
    c = zmq.Context()
    a = GreenAuthenticator(c)
    a.start()
    asked, release = gevent.event.Event(), gevent.event.Event()

    class Provider:
        def callback(self, domain, key):
            asked.set()
            release.wait()
            return True

    a.configure_curve_callback("*", Provider())
    server, url = _curve_server(c, certs)
    client = c.socket(zmq.REQ)
    client.linger = 0
    for k, v in _curve_client_opts(certs, "client1").items():
        setattr(client, k, v)
    client.connect(url)
    assert asked.wait(HANDSHAKE_BOUND)
    glet = a._greenlet
    with caplog.at_level(logging.DEBUG, logger="zmq.auth"):
        with gevent.Timeout(HANDSHAKE_BOUND, AssertionError("context did not terminate")):
            destroyer = spawn(c.destroy, linger=0)
            run_until_blocked()  # destroy closes the sockets, then waits for term in a native thread
            assert server.closed and client.closed and a.zap_socket.closed
            release.set()
            glet.join()
            destroyer.join()
    assert glet.successful() and destroyer.successful()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_works_on_a_plain_pyzmq_context():
    """The ZAP socket is green even when the context is pyzmq's own."""
    c = pyzmq.Context()
    try:
        with GreenAuthenticator(c) as a:
            assert type(a.zap_socket) is zmq.Socket
            a.configure_plain("*", {"u": "p"})
            server = c.socket(zmq.REP, socket_class=zmq.Socket)
            server.linger = 0
            server.plain_server = True
            url = f"tcp://127.0.0.1:{server.bind_to_random_port('tcp://127.0.0.1')}"
            client = c.socket(zmq.REQ, socket_class=zmq.Socket)
            client.linger = 0
            client.plain_username, client.plain_password = b"u", b"p"
            client.connect(url)
            assert _roundtrip(server, client) == "u"
            client.close()
            server.close()
    finally:
        c.destroy(linger=0)


def test_thread_authenticator_alias_and_default_context():
    assert ThreadAuthenticator is GreenAuthenticator
    assert GreenAuthenticator().context is zmq.Context.instance()
