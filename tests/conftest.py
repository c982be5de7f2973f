"""Shared fixtures: a green context per test, socket factories, bounded teardown.

Every test runs under pytest-timeout (pyproject.toml), so a hang fails the
test instead of freezing CI. Teardown closes every socket with linger 0, kills
greenlets the test left behind, and terminates the context with a bound.
"""

from __future__ import annotations

import itertools
import os
import re
import select
import signal
import subprocess
import sys
import time

import gevent
import pytest

import greenzmq

#: Generous bounds for tests where time is the subject (never sleeps to sync).
#: A wake-up "within milliseconds" is asserted as within WAKE_BOUND seconds so
#: that a loaded 2-core CI machine does not flake, while a lost wake-up (which
#: means forever) still fails.
WAKE_BOUND = 1.0
#: How long teardown waits for a context to terminate before failing the test.
TERM_BOUND = 10.0

#: How many hub turns wait_parked() gives a greenlet to park before failing.
PARK_TURNS = 10_000
#: The longest the hub may go without running a greenlet while a test says it
#: "keeps running": a blocked hub stalls for seconds or forever, a busy 2-core
#: CI machine for tens of milliseconds.
HUB_STALL_BOUND = 0.5
#: How often the hub ticker ticks, and the most ticks it records (bounded).
TICK_INTERVAL = 0.001
MAX_TICKS = 100_000

_inproc_names = itertools.count()


#: The tests directory: scripts that run_script() starts import conftest's helpers from it.
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
#: How long run_script() lets a script run before the test fails as hung.
SCRIPT_BOUND = 50.0


def run_script(
    tmp_path, source: str, *args: str, timeout: float = SCRIPT_BOUND
) -> subprocess.CompletedProcess:
    """Run ``source`` as a script in a fresh interpreter with ``args``; return the finished process.

    The script can ``from conftest import ...`` (the tests directory is on its
    ``PYTHONPATH``). Its output is captured as text. A script still running
    after ``timeout`` seconds is killed and fails the test, with its stderr.
    """
    script = tmp_path / "script.py"
    script.write_text(source)
    path = os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")]))
    try:
        return subprocess.run(
            [sys.executable, str(script), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": path},
        )
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"the script hung for {timeout} s; its stderr: {hung.stderr!r}")


def wait_parked(sock, queue: str = "readers", n: int = 1) -> None:
    """Yield to the hub until ``n`` greenlets are parked on ``sock``'s waiter queue.

    ``queue`` is ``"readers"``, ``"writers"`` or ``"listeners"`` (pollers,
    streams). Tests use this instead of sleeping for "the greenlet is blocked
    now": it returns as soon as the waiter holds them, and fails after
    :data:`PARK_TURNS` turns of the hub (never hangs).
    """
    for _ in range(PARK_TURNS):
        if len(getattr(sock._waiters, queue)) >= n:
            return
        gevent.sleep(0)
    raise AssertionError(f"{n} greenlet(s) did not park on {sock!r}'s {queue} within {PARK_TURNS} hub turns")


def run_until_blocked() -> None:
    """Let every greenlet spawned before this call run until it blocks (or ends): one ``gevent.sleep(0)``.

    For a greenlet that parks where no green socket's queue shows it (a
    poller waiting only on plain fds or plain pyzmq sockets, a tracker's
    ``wait()``, a threadpool call), so :func:`wait_parked` cannot see it.
    One turn is deterministic, not a guess: ``gevent.spawn`` schedules the
    new greenlet's start as a hub callback, ``gevent.sleep(0)`` schedules the
    caller's resumption as a later one, and gevent runs callbacks in the
    order they were scheduled, so a greenlet spawned before runs until it
    blocks before the caller resumes.
    """
    gevent.sleep(0)


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true", default=False, help="run long soak tests (marker: slow)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long soak run: use --long")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


class ReversedCodec:
    """A custom codec for the codec tests: any object with ``dumps``/``loads`` is one."""

    @staticmethod
    def dumps(obj):
        return str(obj).encode()[::-1]

    @staticmethod
    def loads(data):
        return bytes(data)[::-1].decode()


class HubTicker:
    """A greenlet that ticks every :data:`TICK_INTERVAL` while the ``with`` block runs.

    ``ticks`` counts the ticks; ``max_gap`` is the longest the hub went
    without running it, from entering the block to leaving it (both ends
    included). A test that claims the hub keeps running asserts
    ``max_gap < HUB_STALL_BOUND``: a hub blocked at any point of the block
    fails it, however many ticks ran before or after.
    """

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self._glet = None
        self._start = self._end = 0.0

    def _run(self) -> None:
        for _ in range(MAX_TICKS):
            self.stamps.append(time.monotonic())
            gevent.sleep(TICK_INTERVAL)

    def __enter__(self) -> HubTicker:
        self._start = time.monotonic()
        self._glet = gevent.spawn(self._run)
        return self

    def __exit__(self, *exc) -> None:
        self._end = time.monotonic()
        self._glet.kill()

    @property
    def ticks(self) -> int:
        return len(self.stamps)

    @property
    def max_gap(self) -> float:
        points = [self._start, *self.stamps, self._end or time.monotonic()]
        return max(b - a for a, b in zip(points, points[1:]))


def hub_ticker() -> HubTicker:
    """``with hub_ticker() as t:`` ... ``assert t.max_gap < HUB_STALL_BOUND`` (see :class:`HubTicker`)."""
    return HubTicker()


@pytest.fixture
def ctx():
    """A fresh greenzmq.Context, destroyed (linger 0) after the test."""
    context = greenzmq.Context()
    yield context
    with gevent.Timeout(TERM_BOUND, AssertionError("context did not terminate within the bound")):
        context.destroy(linger=0)


@pytest.fixture
def spawn():
    """gevent.spawn that kills the test's leftover greenlets at teardown."""
    glets = []

    def _spawn(fn, *args, **kwargs):
        g = gevent.spawn(fn, *args, **kwargs)
        glets.append(g)
        return g

    yield _spawn
    gevent.killall(glets, timeout=TERM_BOUND)


def inproc_endpoint(tag: str = "t") -> str:
    return f"inproc://{tag}-{os.getpid()}-{next(_inproc_names)}"


@pytest.fixture(params=["tcp", "inproc"])
def transport(request):
    return request.param


def connected_pair(ctx, bind_type, connect_type, transport="tcp", **opts):
    """(bound, connected) sockets of ``ctx`` over tcp://127.0.0.1 (a random
    port) or inproc, with ``linger=0`` and ``opts`` set on both before binding."""
    a = ctx.socket(bind_type)
    b = ctx.socket(connect_type)
    for sock in (a, b):
        sock.linger = 0
        for name, value in opts.items():
            setattr(sock, name, value)
    if transport == "tcp":
        port = a.bind_to_random_port("tcp://127.0.0.1")
        b.connect(f"tcp://127.0.0.1:{port}")
    else:
        addr = inproc_endpoint()
        a.bind(addr)
        b.connect(addr)
    return a, b


@pytest.fixture
def make_pair(ctx, transport):
    """make_pair(bind_type, connect_type, **opts) -> (bound, connected), over the
    parametrized transport: :func:`connected_pair` on the test's context."""

    def _make(bind_type, connect_type, **opts):
        return connected_pair(ctx, bind_type, connect_type, transport, **opts)

    return _make


@pytest.fixture
def python_exe():
    return sys.executable


#: How long a started service process gets to print its banner, and to exit.
SERVICE_BOUND = 60.0
_SERVICE_BANNER = re.compile(r"zmq (?P<zmq>tcp://\S+) http (?P<http>\S+)")


@pytest.fixture
def service_proc():
    """service_proc(*args) -> (proc, zmq_endpoint, http_url): `python -m greenzmq.service`
    on ephemeral loopback ports; stopped with SIGTERM (then SIGKILL) at teardown."""
    procs = []

    def _start(*args):
        cmd = [sys.executable, "-m", "greenzmq.service", "--zmq-port", "0", "--http-port", "0", *args]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], SERVICE_BOUND)
        line = proc.stdout.readline() if ready else ""
        m = _SERVICE_BANNER.search(line)
        assert m, f"no banner: {line!r}"
        return proc, m["zmq"], m["http"]

    yield _start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=SERVICE_BOUND)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.fixture
def loop():
    """A fresh greenzmq IOLoop made current for the test, closed afterwards."""
    from greenzmq.eventloop import IOLoop

    old = IOLoop.current(instance=False)
    IOLoop.clear_current()
    io_loop = IOLoop()
    yield io_loop
    if io_loop.is_running():
        io_loop.stop()
    io_loop.close(all_fds=True)
    IOLoop.clear_current()
    if old is not None:
        old.make_current()
