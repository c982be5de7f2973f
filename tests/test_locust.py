"""greenzmq.locust: ZmqUser/ZmqClient in process, and real locust runs in subprocesses.

The in-process tests drive a ZmqUser against an in-process greenzmq.service on
the test's context and record locust's ``request`` events. The subprocess
tests run ``locust`` (headless, master + two workers, ``--processes 2``) and
``python -m greenzmq.demo`` against ``python -m greenzmq.service``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import gevent
import psutil
import pytest
from conftest import WAKE_BOUND
from gevent.event import Event
from gevent.pool import Group

# Importing locust would gevent.monkey.patch_all() the whole pytest process (and with it every
# other test file's threads); locust's own switch skips that for the in-process tests here. It is
# cleared at once so the locust subprocesses these tests start patch themselves as in real use.
os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
try:
    locust = pytest.importorskip("locust")
finally:
    del os.environ["LOCUST_SKIP_MONKEY_PATCH"]

from locust import constant, task  # noqa: E402
from locust.env import Environment  # noqa: E402
from locust.exception import LocustError  # noqa: E402

import greenzmq  # noqa: E402
from greenzmq.locust import REQUEST_TYPE, ZmqBadReply, ZmqClient, ZmqTimeout, ZmqUser  # noqa: E402
from greenzmq.service import Service  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZMQ_LOCUSTFILE = os.path.join(ROOT, "loadtests", "locustfile_zmq.py")
#: Per-request timeout of the in-process users: short, so a failure shows quickly.
SHORT_TIMEOUT = 0.3
#: Seconds a subprocess may take to start or finish, on a loaded 2-core machine.
PROC_BOUND = 60.0
#: Length of each real locust run: long enough for every user to make requests.
RUN_TIME = "3s"
USERS = 10
#: Polls of the web UI's stats while the run goes on (bounded loop).
WEB_POLLS = 200
WEB_POLL_INTERVAL = 0.1


# ---------------------------------------------------------------- in process


def slow_or_echo(frames):
    if frames[0] == b"slow":
        gevent.sleep(SHORT_TIMEOUT * 3)
    return frames


@pytest.fixture
def endpoint(ctx):
    svc = Service(zmq_port=0, http_port=None, workers=4, handler=slow_or_echo, context=ctx).start()
    yield svc.zmq_endpoint
    svc.stop(timeout=0)


@pytest.fixture
def env():
    environment = Environment()
    environment.recorded = []
    environment.events.request.add_listener(lambda **kw: environment.recorded.append(kw))
    return environment


def make_user(env, ctx, host, socket_type=greenzmq.REQ, timeout=SHORT_TIMEOUT):
    cls = type(
        "EchoUser",
        (ZmqUser,),
        {
            "host": host,
            "socket_type": socket_type,
            "timeout": timeout,
            "zmq_context": ctx,
            "wait_time": constant(0),
            "echo": task(lambda self: self.request(b"x", name="echo")),
        },
    )
    return cls(env)


@pytest.mark.parametrize("kind", [greenzmq.REQ, greenzmq.DEALER], ids=["REQ", "DEALER"])
def test_request_fires_a_success_event(env, ctx, endpoint, kind):
    user = make_user(env, ctx, endpoint, kind)
    assert user.request([b"ab", "cd"], name="echo") == [b"ab", b"cd"]
    (event,) = env.recorded
    assert event["request_type"] == REQUEST_TYPE == "ZMQ"
    assert event["name"] == "echo" and event["exception"] is None
    assert event["response_length"] == 4 and event["response"] == [b"ab", b"cd"]
    assert 0 < event["response_time"] < WAKE_BOUND * 1000
    assert event["context"] == {}
    user.client.request(b"y")
    assert env.recorded[1]["name"] == endpoint  # the default name


@pytest.mark.parametrize("kind", [greenzmq.REQ, greenzmq.DEALER], ids=["REQ", "DEALER"])
def test_slow_reply_is_a_failure_and_the_user_keeps_going(env, ctx, endpoint, kind):
    user = make_user(env, ctx, endpoint, kind)
    start = time.monotonic()
    assert user.request(b"slow", name="slow") is None
    elapsed = time.monotonic() - start
    assert SHORT_TIMEOUT <= elapsed < SHORT_TIMEOUT + WAKE_BOUND
    (event,) = env.recorded
    assert isinstance(event["exception"], ZmqTimeout)
    assert event["response_length"] == 0 and event["response_time"] >= SHORT_TIMEOUT * 1000
    assert user.client.replaced == 1
    # The late reply to "slow" went to the closed socket: the next request gets its own reply.
    assert user.request(b"fast", name="fast") == [b"fast"]
    assert env.recorded[1]["exception"] is None


@pytest.mark.parametrize("kind", [greenzmq.REQ, greenzmq.DEALER], ids=["REQ", "DEALER"])
def test_concurrent_requests_of_one_user_each_get_their_own_reply(env, ctx, endpoint, kind):
    user = make_user(env, ctx, endpoint, kind, timeout=WAKE_BOUND * 5)
    n = 20
    greenlets = [gevent.spawn(user.request, b"%d" % i, name="concurrent") for i in range(n)]
    gevent.joinall(greenlets, timeout=WAKE_BOUND * 10, raise_error=True)
    assert [g.value for g in greenlets] == [[b"%d" % i] for i in range(n)]
    assert len(env.recorded) == n and all(e["exception"] is None for e in env.recorded)
    assert user.client.replaced == 0


def test_service_down_records_failures_not_hangs(env, ctx):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    user = make_user(env, ctx, f"tcp://127.0.0.1:{port}")
    with gevent.Timeout(3 * (SHORT_TIMEOUT + WAKE_BOUND)):
        results = [user.request(b"x", name="down") for _ in range(3)]
    assert results == [None] * 3
    assert [type(e["exception"]) for e in env.recorded] == [ZmqTimeout] * 3
    assert user.client.replaced == 3


def test_bad_payload_raises_before_sending_and_socket_stays_usable(env, ctx, endpoint):
    user = make_user(env, ctx, endpoint)
    with pytest.raises(TypeError, match="frame 1 is int"):
        user.request([b"ok", 42])
    with pytest.raises(ValueError, match="no frames"):
        user.request([])
    with pytest.raises(TypeError, match="payload is int"):
        user.request(42)
    assert env.recorded == [] and user.client.replaced == 0
    assert user.request(b"x") == [b"x"]


def test_validate_turns_a_reply_into_a_failure_and_keeps_the_socket(env, ctx, endpoint):
    user = make_user(env, ctx, endpoint)

    def must_be_y(reply):
        assert reply == [b"y"], "not y"

    assert user.request(b"x", validate=must_be_y) is None
    assert isinstance(env.recorded[0]["exception"], AssertionError)
    assert env.recorded[0]["response_length"] == 1
    assert user.client.replaced == 0
    assert user.request(b"y", validate=must_be_y) == [b"y"]


def test_dealer_reply_without_envelope_is_a_failure(env, ctx):
    router = ctx.socket(greenzmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    client = ZmqClient(f"tcp://127.0.0.1:{port}", env.events.request, greenzmq.DEALER, SHORT_TIMEOUT, ctx)

    def answer_without_delimiter():
        ident, *_ = router.recv_multipart()
        router.send_multipart([ident, b"bare"])

    g = gevent.spawn(answer_without_delimiter)
    assert client.request(b"x") is None
    g.get(timeout=WAKE_BOUND)
    assert isinstance(env.recorded[0]["exception"], ZmqBadReply)
    client.close()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"endpoint": "127.0.0.1:5555"}, "not a ZeroMQ endpoint"),
        ({"endpoint": None}, "not a ZeroMQ endpoint"),
        ({"socket_type": greenzmq.PUB}, "REQ or zmq.DEALER"),
        ({"timeout": 0}, "timeout must be > 0"),
    ],
)
def test_bad_configuration_raises_locust_error(env, ctx, kwargs, message):
    args = {"endpoint": "tcp://127.0.0.1:5555", "socket_type": greenzmq.REQ, "timeout": 1.0, **kwargs}
    with pytest.raises(LocustError, match=message):
        ZmqClient(args["endpoint"], env.events.request, args["socket_type"], args["timeout"], ctx)


def test_user_socket_closed_when_its_greenlet_ends(env, ctx, endpoint):
    user = make_user(env, ctx, endpoint)
    made_requests = Event()
    env.events.request.add_listener(lambda **_kw: made_requests.set())
    group = Group()
    greenlet = user.start(group)
    ended = Event()
    greenlet.link(lambda _g: ended.set())  # links run in order: the user's own close runs first
    assert made_requests.wait(WAKE_BOUND * 5)
    sock = user.client.socket
    user.stop(force=True)
    assert ended.wait(WAKE_BOUND)
    assert sock.closed and user.client._socket is None
    assert all(e["exception"] is None for e in env.recorded)


# ------------------------------------------------------- real locust runs


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def locust_cmd(*args):
    return [sys.executable, "-m", "locust", "-f", ZMQ_LOCUSTFILE, *args]


def accepted(http):
    with urllib.request.urlopen(http + "/stats", timeout=PROC_BOUND) as resp:
        return json.load(resp)["accepted"]


def check_totals(path, http):
    with open(path) as f:
        totals = json.load(f)
    assert totals["requests"] > 0 and totals["failures"] == 0 and totals["exit_code"] == 0
    # Aggregation: the totals hold every worker's share. The service counts what it accepted;
    # only requests in flight when users were stopped (at most one per user) may be missing.
    assert 0 <= accepted(http) - totals["requests"] <= USERS
    return totals


@pytest.mark.timeout(90)
def test_headless_run_against_the_service(service_proc, tmp_path):
    _, zmq_endpoint, http = service_proc()
    totals = tmp_path / "totals.json"
    run = subprocess.run(
        locust_cmd("--headless", "-u", str(USERS), "-r", str(USERS), "-t", RUN_TIME, "--host", zmq_endpoint)
        + ["--only-summary", "--totals-json", str(totals), "--csv", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=PROC_BOUND,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "REQ echo" in run.stdout + run.stderr and "DEALER echo" in run.stdout + run.stderr
    check_totals(totals, http)
    assert (tmp_path / "s_stats.csv").exists()


@pytest.mark.timeout(120)
def test_master_with_two_workers_aggregates(service_proc, tmp_path):
    _, zmq_endpoint, http = service_proc()
    port = free_port()
    totals = tmp_path / "totals.json"
    worker_args = ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
    workers = [
        subprocess.Popen(
            locust_cmd(*worker_args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        master = subprocess.run(
            locust_cmd("--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port))
            + ["--expect-workers", "2", "--headless", "-u", str(USERS), "-r", str(USERS), "-t", RUN_TIME]
            + ["--host", zmq_endpoint, "--only-summary", "--totals-json", str(totals)],
            capture_output=True,
            text=True,
            timeout=PROC_BOUND,
        )
        for w in workers:
            w.communicate(timeout=PROC_BOUND)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.communicate()
    assert master.returncode == 0, master.stderr[-2000:]
    assert "2 workers connected" in master.stderr
    assert all(w.returncode == 0 for w in workers)
    check_totals(totals, http)


@pytest.mark.timeout(120)
def test_processes_2_aggregates(service_proc, tmp_path):
    _, zmq_endpoint, http = service_proc()
    port = free_port()
    totals = tmp_path / "totals.json"
    run = subprocess.run(
        locust_cmd("--processes", "2", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port))
        + ["--master-port", str(port), "--headless", "-u", str(USERS), "-r", str(USERS), "-t", RUN_TIME]
        + ["--host", zmq_endpoint, "--only-summary", "--totals-json", str(totals)],
        capture_output=True,
        text=True,
        timeout=PROC_BOUND,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "2 workers connected" in run.stderr
    check_totals(totals, http)


@pytest.mark.timeout(90)
def test_web_ui_shows_zmq_requests(service_proc, tmp_path):
    _, zmq_endpoint, http = service_proc()
    port = free_port()
    proc = subprocess.Popen(
        locust_cmd("--web-host", "127.0.0.1", "--web-port", str(port), "--autostart", "--autoquit", "0")
        + ["-u", str(USERS), "-r", str(USERS), "-t", RUN_TIME, "--host", zmq_endpoint],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        rows, polls = [], 0
        while not rows and polls < WEB_POLLS and proc.poll() is None:
            polls += 1
            time.sleep(WEB_POLL_INTERVAL)
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/stats/requests", timeout=PROC_BOUND
                ) as r:
                    stats = json.load(r)["stats"]
            except OSError:
                continue  # the web UI is not listening yet
            rows = [row for row in stats if row["method"] == "ZMQ" and row["num_requests"] > 0]
        assert {row["name"] for row in rows} <= {"REQ echo", "DEALER echo"} and rows
        assert all(row["num_failures"] == 0 for row in rows)
        _, err = proc.communicate(timeout=PROC_BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]


# ---------------------------------------------------------------- the demo


@pytest.mark.timeout(90)
def test_demo_passes_and_writes_reports(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "greenzmq.demo", "-u", "20", "-t", "3", "--report-dir", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=PROC_BOUND,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Aggregated" in run.stderr + run.stdout and "greenzmq demo: OK" in run.stdout
    for name in ("report.html", "stats_stats.csv", "stats_failures.csv", "totals.json"):
        assert (tmp_path / "r" / name).stat().st_size > 0
    assert "zmq REQ echo" in (tmp_path / "r" / "stats_stats.csv").read_text()


@pytest.mark.timeout(90)
def test_demo_exits_nonzero_when_requests_fail(tmp_path):
    # Workers slower than the users' 5 s timeout: every request fails.
    run = subprocess.run(
        [sys.executable, "-m", "greenzmq.demo", "-u", "4", "-t", "1", "--work-ms", "6000", "--no-http"]
        + ["--report-dir", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=PROC_BOUND,
    )
    assert run.returncode == 1, run.stdout[-2000:]
    assert "greenzmq demo: FAILED" in run.stdout
    totals = json.loads((tmp_path / "r" / "totals.json").read_text())
    assert totals["failures"] > 0


@pytest.mark.timeout(90)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_demo_interrupted_stops_everything_and_still_reports(tmp_path, signum):
    report = tmp_path / "r"
    # A child inherits an ignored SIGINT (pytest run as a background job of a
    # non-interactive shell: `cmd &`, nohup), and Python keeps it ignored, so
    # the demo would run its whole minute. exec resets a caught signal to the
    # default instead: catch SIGINT here while the demo starts.
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        demo = subprocess.Popen(
            [sys.executable, "-m", "greenzmq.demo", "-u", "10", "-t", "60", "--report-dir", str(report)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        deadline = time.monotonic() + PROC_BOUND
        # Raw reads, not demo.stderr.readline(): the text reader may buffer
        # the next lines with the one it returns, and select() then waits for
        # data that was already read (locust prints nothing more for a minute).
        fd = demo.stderr.fileno()
        seen = b""
        while b"All users spawned" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
        assert b"All users spawned" in seen, seen.decode(errors="replace")
        demo.send_signal(signum)
        out, _ = demo.communicate(timeout=PROC_BOUND)
    finally:
        if demo.poll() is None:
            # the demo's service and locust run in sessions of their own and
            # hold its pipes open: kill them too, or communicate() never returns
            for child in psutil.Process(demo.pid).children(recursive=True):
                child.kill()
            demo.kill()
            demo.communicate(timeout=PROC_BOUND)
    assert demo.returncode == 130, out
    assert "greenzmq demo: INTERRUPTED" in out and "greenzmq service: stopped" in out
    assert (report / "report.html").stat().st_size > 0
    assert json.loads((report / "totals.json").read_text())["failures"] == 0


@pytest.mark.parametrize(
    "text, seconds", [("15", 15), ("15s", 15), ("2m", 120), ("1h30m", 5400), ("1m5s", 65)]
)
def test_demo_run_time_syntax(text, seconds):
    from greenzmq.demo import parse_seconds

    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5x", "-3", "1.5s"])
def test_demo_run_time_rejects_garbage(text):
    from greenzmq.demo import parse_seconds

    with pytest.raises(ValueError, match="not a run time"):
        parse_seconds(text)


def test_demo_rejects_bad_arguments():
    run = subprocess.run(
        [sys.executable, "-m", "greenzmq.demo", "-t", "soon"],
        capture_output=True,
        text=True,
        timeout=PROC_BOUND,
    )
    assert run.returncode == 2 and "not a run time" in run.stderr
