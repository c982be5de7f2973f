"""greenzmq.service: the ROUTER front, green workers, the monkey-patched HTTP front, graceful stop.

In-process tests use the test's green context; the CLI tests run
``python -m greenzmq.service`` as a real subprocess on free loopback ports.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import gevent
import pytest
from conftest import WAKE_BOUND
from gevent.event import Event

import greenzmq
from greenzmq.service import ERROR_PREFIX, Service, echo_handler

#: Seconds a subprocess may take to start (imports) or to exit, on a loaded 2-core machine.
PROC_BOUND = 30.0
#: Polls of /stats while waiting for the service to accept requests (bounded loop).
STATS_POLLS = 200
STATS_POLL_INTERVAL = 0.05


def _req(ctx, endpoint):
    sock = ctx.socket(greenzmq.REQ)
    sock.linger = 0
    sock.rcvtimeo = int(PROC_BOUND * 1000)
    sock.connect(endpoint)
    return sock


# ---------------------------------------------------------------- in process


@pytest.fixture
def service(ctx):
    made = []

    def _make(**kwargs):
        kwargs.setdefault("zmq_port", 0)
        kwargs.setdefault("http_port", None)
        svc = Service(context=ctx, **kwargs).start()
        made.append(svc)
        return svc

    yield _make
    for svc in made:
        svc.stop(timeout=0)


def test_req_and_dealer_get_echoes(ctx, service):
    svc = service(workers=2)
    req = _req(ctx, svc.zmq_endpoint)
    req.send_multipart([b"a", b"b"])
    assert req.recv_multipart() == [b"a", b"b"]
    dealer = ctx.socket(greenzmq.DEALER)
    dealer.linger = 0
    dealer.connect(svc.zmq_endpoint)
    dealer.send_multipart([b"", b"x"])
    assert dealer.recv_multipart() == [b"", b"x"]
    assert svc.stats()["accepted"] == svc.stats()["replied"] == 2


def test_message_without_envelope_is_rejected_and_service_carries_on(ctx, service):
    svc = service(workers=1)
    dealer = ctx.socket(greenzmq.DEALER)
    dealer.linger = 0
    dealer.connect(svc.zmq_endpoint)
    dealer.send(b"no delimiter")
    reply = dealer.recv_multipart()
    assert len(reply) == 1 and reply[0].startswith(ERROR_PREFIX)
    assert svc.rejected == 1 and svc.accepted == 0
    req = _req(ctx, svc.zmq_endpoint)
    req.send(b"still here")
    assert req.recv() == b"still here"


def test_handler_exception_becomes_error_reply_and_worker_survives(ctx, service):
    def handler(frames):
        if frames == [b"boom"]:
            raise ValueError("boom")
        return frames

    svc = service(workers=1, handler=handler)
    req = _req(ctx, svc.zmq_endpoint)
    req.send(b"boom")
    assert req.recv() == ERROR_PREFIX + b"ValueError('boom')"
    req.send(b"ok")
    assert req.recv() == b"ok"


def test_bad_worker_count_and_busy_port_raise(ctx, service):
    with pytest.raises(ValueError, match="workers"):
        Service(workers=0, context=ctx)
    svc = service()
    port = int(svc.zmq_endpoint.rsplit(":", 1)[1])
    with pytest.raises(greenzmq.ZMQError):
        Service(zmq_port=port, http_port=None, context=ctx).start()
    # the first service is untouched
    req = _req(ctx, svc.zmq_endpoint)
    req.send(b"x")
    assert req.recv() == b"x"


@pytest.mark.timeout(30)
def test_stop_answers_every_accepted_request_and_accepts_no_more(ctx, spawn):
    n = 6
    gate, entered = Event(), []
    all_in = Event()

    def handler(frames):
        entered.append(frames)
        if len(entered) == n:
            all_in.set()
        gate.wait()
        return frames

    svc = Service(zmq_port=0, http_port=None, workers=n, handler=handler, context=ctx).start()
    clients = [_req(ctx, svc.zmq_endpoint) for _ in range(n)]
    for i, c in enumerate(clients):
        c.send(b"%d" % i)
    assert all_in.wait(PROC_BOUND)
    assert svc.in_flight == n
    stopper = spawn(svc.stop, PROC_BOUND)
    assert gevent.wait([svc._accepting], timeout=WAKE_BOUND)  # stop() no longer accepts...
    late = _req(ctx, svc.zmq_endpoint)
    late.send(b"late")  # ... so this one stays unread in the front
    gate.set()
    assert [c.recv() for c in clients] == [b"%d" % i for i in range(n)]
    assert stopper.get(timeout=PROC_BOUND) is True
    assert svc.accepted == svc.replied == n
    late.rcvtimeo = int(WAKE_BOUND * 1000)
    with pytest.raises(greenzmq.Again):
        late.recv()


def test_echo_handler_sleeps_green():
    handle = echo_handler(0.05)
    start = time.monotonic()
    greenlets = [gevent.spawn(handle, [b"%d" % i]) for i in range(10)]
    gevent.joinall(greenlets, timeout=WAKE_BOUND, raise_error=True)
    assert [g.value for g in greenlets] == [[b"%d" % i] for i in range(10)]
    assert time.monotonic() - start < WAKE_BOUND  # ten 50 ms sleeps overlapped


def _http_in_thread(url, data=None):
    """urllib in a real OS thread (gevent's threadpool): the in-process server's hub stays free
    whether or not this test process is monkey-patched."""

    def call():
        try:
            with urllib.request.urlopen(url, data=data, timeout=PROC_BOUND) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    return gevent.get_hub().threadpool.spawn(call).get(timeout=PROC_BOUND)


def test_http_front_answers_504_when_workers_are_too_slow_and_502_on_handler_error(ctx, service):
    release = Event()

    def handler(frames):
        if frames == [b"slow"]:
            release.wait()
        if frames == [b"boom"]:
            raise RuntimeError("boom")
        return frames

    svc = service(http_port=0, workers=2, handler=handler, request_timeout=0.2)
    assert _http_in_thread(svc.http_url + "/", b"slow") == (504, b"no reply from the workers")
    status, body = _http_in_thread(svc.http_url + "/", b"boom")
    assert status == 502 and body.startswith(ERROR_PREFIX + b"RuntimeError")
    release.set()  # the late reply to "slow" is dropped, not given to the next request
    assert _http_in_thread(svc.http_url + "/", b"next") == (200, b"next")
    assert _http_in_thread(svc.http_url + "/healthz") == (200, b"ok")


# ------------------------------------------------------------- the real CLI


def _get(url, data=None, timeout=PROC_BOUND):
    with urllib.request.urlopen(url, data=data, timeout=timeout) as resp:
        return resp.status, resp.read()


def _stats(http):
    return json.loads(_get(http + "/stats")[1])


@pytest.mark.timeout(60)
def test_http_front_is_monkey_patched_and_answers_while_workers_are_busy(service_proc):
    proc, _zmq, http = service_proc("--workers", "2", "--work-ms", "500")
    assert _stats(http)["monkey_patched"] is True
    n = 8  # four rounds of 500 ms on two workers
    with ThreadPoolExecutor(n) as pool:
        posts = [pool.submit(_get, f"{http}/echo", b"body-%d" % i) for i in range(n)]
        # While the workers are busy with the POSTs, a route that needs no worker answers at once.
        polls = 0
        while _stats(http)["accepted"] < n and polls < STATS_POLLS:
            polls += 1
            time.sleep(STATS_POLL_INTERVAL)
        assert _stats(http)["accepted"] == n
        start = time.monotonic()
        assert _get(f"{http}/healthz") == (200, b"ok")
        assert time.monotonic() - start < WAKE_BOUND
        assert _stats(http)["in_flight"] > 0  # the workers were still busy
        assert [f.result(timeout=PROC_BOUND) for f in posts] == [(200, b"body-%d" % i) for i in range(n)]
    assert _get(f"{http}/some/path")[1] == b"/some/path"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_after_answering_accepted_requests(ctx, service_proc, signum):
    proc, zmq_endpoint, http = service_proc("--workers", "2", "--work-ms", "300")
    n = 6
    clients = [_req(ctx, zmq_endpoint) for _ in range(n)]
    for i, c in enumerate(clients):
        c.send(b"%d" % i)
    polls = 0
    while _stats(http)["accepted"] < n and polls < STATS_POLLS:
        polls += 1
        time.sleep(STATS_POLL_INTERVAL)
    assert _stats(http)["accepted"] == n
    proc.send_signal(signum)
    assert [c.recv() for c in clients] == [b"%d" % i for i in range(n)]
    out, _ = proc.communicate(timeout=PROC_BOUND)
    assert proc.returncode == 0
    assert "stopped" in out and "'in_flight': 0" in out and f"'replied': {n}" in out


@pytest.mark.timeout(60)
def test_sigterm_with_an_idle_keepalive_connection_exits_promptly(service_proc):
    proc, _zmq, url = service_proc()
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=PROC_BOUND)
    try:
        conn.request("POST", "/echo", body=b"keep me open")
        assert conn.getresponse().read() == b"keep me open"
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=PROC_BOUND)
        assert proc.returncode == 0
        assert time.monotonic() - start < WAKE_BOUND * 3  # not the 5 s stop timeout
    finally:
        conn.close()


@pytest.mark.timeout(60)
def test_zmq_front_alone_serves_and_stops(ctx, service_proc):
    proc, zmq_endpoint, http = service_proc("--no-http")
    assert http == "-"
    req = _req(ctx, zmq_endpoint)
    req.send(b"ping")
    assert req.recv() == b"ping"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=PROC_BOUND)
    assert proc.returncode == 0


def test_cli_rejects_bad_arguments():
    result = subprocess.run(
        [sys.executable, "-m", "greenzmq.service", "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=PROC_BOUND,
    )
    assert result.returncode == 2 and "--workers must be >= 1" in result.stderr


def test_example_gevent_server_over_greenzmq_self_test():
    example = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
    run = subprocess.run(
        [sys.executable, os.path.join(example, "gevent_server_over_greenzmq.py"), "--self-test"],
        capture_output=True,
        text=True,
        timeout=PROC_BOUND,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("20 replies") and run.stdout.rstrip().endswith("ok")
    assert "Traceback" not in run.stderr
