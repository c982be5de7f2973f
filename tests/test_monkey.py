"""greenzmq.monkey: zmq.green / zmq code made green without edits.

Patching is process-wide, so every test runs its patched code in a fresh
Python subprocess; the pytest process itself is never patched.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap

import pytest

#: Bound for a short python -c subprocess (imports gevent, pyzmq, maybe locust).
PROC_BOUND = 30.0
#: Bound for the whole locust master + worker run (3 s of load plus start-up
#: and shutdown, on a shared 2-core machine).
LOCUST_BOUND = 60.0
#: Lines of master output read while waiting for its RPC port (start-up logs
#: are a handful of lines; bounded so a chatty master cannot loop forever).
MAX_STARTUP_LINES = 200

# find_spec, not import: importing locust would gevent-monkey-patch pytest itself
HAVE_LOCUST = importlib.util.find_spec("locust") is not None

GREEN_LIB = '''
"""A tiny library written against zmq.green, as locust's rpc is."""
import zmq.green as zmq
from zmq.green import Context, Poller

def pair():
    ctx = Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    port = a.bind_to_random_port("tcp://127.0.0.1")
    b.connect(f"tcp://127.0.0.1:{port}")
    return ctx, a, b

def classes():
    return zmq.Context, Context, Poller, zmq
'''

PLAIN_LIB = '''
"""A tiny library written against plain pyzmq."""
import zmq
from zmq import Context

def make_socket(kind):
    return Context.instance().socket(kind)
'''


def run_py(code: str, cwd, extra_env: dict | None = None) -> str:
    """Run ``code`` in a fresh interpreter; return stdout, failing on any error."""
    env = {**os.environ, **(extra_env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=PROC_BOUND,
    )
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


@pytest.fixture
def libdir(tmp_path):
    (tmp_path / "greenlib.py").write_text(GREEN_LIB)
    (tmp_path / "plainlib.py").write_text(PLAIN_LIB)
    return tmp_path


@pytest.mark.parametrize("when", ["before", "after"])
def test_zmq_green_library_gets_greenzmq(libdir, when):
    out = run_py(
        f"""
        import greenzmq, greenzmq.monkey, gevent
        if {when!r} == "before":
            greenzmq.monkey.patch()
        import greenlib
        if {when!r} == "after":
            greenzmq.monkey.patch()
        zc, C, P, mod = greenlib.classes()
        assert zc is greenzmq.Context and C is greenzmq.Context and P is greenzmq.Poller, (zc, C, P)
        import zmq.green
        assert mod is zmq.green and greenzmq.monkey.is_patched("zmq.green")
        assert zmq.green.Socket is greenzmq.Socket
        # the library's sockets are greenzmq's, and block only their greenlet
        ctx, a, b = greenlib.pair()
        assert type(a) is greenzmq.Socket, type(a)
        got = gevent.spawn(a.recv)
        gevent.sleep(0)  # the receiver is parked; the hub (and we) keep running
        b.send(b"hello")
        assert got.get(timeout=10) == b"hello"
        # plain zmq is untouched unless asked
        import zmq
        assert zmq.Context is not greenzmq.Context and not greenzmq.monkey.is_patched("zmq")
        ctx.destroy(linger=0)
        print("OK", type(a).__module__)
        """,
        libdir,
    )
    assert out.split() == ["OK", "greenzmq.socket"]


def test_unpatched_control_uses_pyzmq_green(libdir):
    # the same check without patch() must see pyzmq's own zmq.green: the
    # assertions above can fail
    out = run_py(
        """
        import greenlib, greenzmq
        zc, C, P, mod = greenlib.classes()
        print(zc.__module__, zc is greenzmq.Context)
        """,
        libdir,
    )
    assert out.split() == ["zmq.green.core", "False"]


def test_patch_is_idempotent_and_submodules_stay_pyzmq(libdir):
    out = run_py(
        """
        import greenzmq.monkey as m
        m.patch(); import zmq.green as g1
        m.patch(); m.patch(green=True); import zmq.green as g2
        assert g1 is g2
        import zmq.green.core, zmq.green.poll   # pyzmq's submodules still import
        assert zmq.green.core.__file__.endswith("zmq/green/core.py")
        from zmq.green import *                 # star-import gives greenzmq's names
        import greenzmq
        assert Context is greenzmq.Context and PUB == greenzmq.PUB
        print("OK")
        """,
        libdir,
    )
    assert out.strip() == "OK"


@pytest.mark.parametrize("when", ["before", "after"])
def test_patch_zmq_makes_plain_pyzmq_code_green(libdir, when):
    out = run_py(
        f"""
        import gevent, greenzmq, greenzmq.monkey as m
        if {when!r} == "before":
            m.patch(zmq=True)
        import plainlib
        if {when!r} == "after":
            m.patch(zmq=True)
        m.patch(zmq=True)  # idempotent
        import zmq
        assert m.is_patched("zmq") and m.is_patched("zmq.green")
        assert zmq.Context is greenzmq.Context and plainlib.zmq is zmq and plainlib.Context is greenzmq.Context
        rep, req = plainlib.make_socket(zmq.REP), plainlib.make_socket(zmq.REQ)
        assert type(rep) is greenzmq.Socket
        port = rep.bind_to_random_port("tcp://127.0.0.1")
        req.connect(f"tcp://127.0.0.1:{{port}}")
        server = gevent.spawn(lambda: rep.send(rep.recv() + b"!"))
        req.send(b"ping")
        assert req.recv() == b"ping!"
        server.get(timeout=10)
        # pyzmq's submodules come from pyzmq and keep its real classes
        import zmq.auth.base, zmq.utils.monitor, zmq.asyncio, zmq.error
        assert zmq.auth.base.Authenticator.__module__ == "zmq.auth.base"
        assert greenzmq.Socket not in zmq.asyncio.Socket.__mro__
        assert zmq.error.ZMQError is greenzmq.ZMQError
        # greenzmq's own modules keep the real pyzmq
        import greenzmq.socket, greenzmq.log, greenzmq.monitor
        assert greenzmq.socket.zmq is not zmq and greenzmq.socket.zmq.Socket is zmq.sugar.socket.Socket
        assert zmq.__version__ == zmq.pyzmq_version()
        for s in (rep, req): s.close(linger=0)
        print("OK")
        """,
        libdir,
    )
    assert out.strip() == "OK"


LOCUSTFILE = """
import os
if os.environ.get("GREENZMQ_PATCH_IN_LOCUSTFILE"):
    # locust imported locust.rpc.zmqrpc already: this is the "after" path
    import greenzmq.monkey
    greenzmq.monkey.patch()
from locust import User, constant, events, task

class Fake(User):
    wait_time = constant(0.05)

    @task
    def hit(self):
        self.environment.events.request.fire(
            request_type="FAKE", name="ping", response_time=1.0,
            response_length=1, exception=None, context={})

@events.init.add_listener
def _report(environment, **kw):
    rpc = getattr(environment.runner, "server", None) or getattr(environment.runner, "client", None)
    if rpc is not None:
        sock = type(rpc.socket)
        print(f"RPC-SOCKET {sock.__module__}.{sock.__qualname__} port={getattr(rpc, 'port', '')}", flush=True)
"""

#: The worker is patched *before* locust is imported (a launcher), the master
#: *after* (from its locustfile): both paths carry the real RPC.
WORKER_LAUNCHER = (
    "import sys, greenzmq.monkey; greenzmq.monkey.patch(); from locust.main import main; sys.exit(main())"
)


@pytest.mark.skipif(not HAVE_LOCUST, reason="locust is not installed (extra: load)")
@pytest.mark.timeout(LOCUST_BOUND + 30)
def test_locust_master_and_worker_rpc_over_greenzmq(tmp_path):
    (tmp_path / "locustfile.py").write_text(LOCUSTFILE)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    master = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", "locustfile.py", "--headless", "--only-summary",
         "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", "0",
         "--expect-workers", "1", "-u", "2", "-r", "2", "-t", "3s"],
        cwd=tmp_path, env={**env, "GREENZMQ_PATCH_IN_LOCUSTFILE": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    worker = None
    try:
        head = []
        for _ in range(MAX_STARTUP_LINES):
            line = master.stdout.readline()
            if not line:
                break
            head.append(line)
            if line.startswith("RPC-SOCKET"):
                break
        m = re.match(r"RPC-SOCKET (\S+) port=(\d+)", head[-1] if head else "")
        assert m, "master did not report its RPC socket:\n" + "".join(head)
        assert m.group(1) == "greenzmq.socket.Socket"
        worker = subprocess.run(
            [sys.executable, "-c", WORKER_LAUNCHER, "-f", "locustfile.py", "--worker",
             "--master-host", "127.0.0.1", "--master-port", m.group(2)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=LOCUST_BOUND,
        )  # fmt: skip
        rest, _ = master.communicate(timeout=LOCUST_BOUND)
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()
    master_out = "".join(head) + rest
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert "RPC-SOCKET greenzmq.socket.Socket" in worker.stdout, worker.stdout + worker.stderr
    assert master.returncode == 0, master_out
    assert "1 workers connected" in master_out, master_out
    # the worker's requests reached the master's stats: the RPC carried them
    row = re.search(r"^FAKE\s+ping\s+(\d+)\s+0\(0\.00%\)", master_out, re.M)
    assert row and int(row.group(1)) > 0, master_out


def test_patch_zmq_threads_each_use_their_own_sockets(libdir):
    # zmq=True reaches every thread: sockets work in the thread that made them
    # (its own hub serves them); handing one to another thread is a clear error.
    out = run_py(
        """
        import threading, greenzmq, greenzmq.monkey as m
        m.patch(zmq=True)
        import zmq
        from greenzmq.error import WrongThreadError
        ctx = zmq.Context.instance()
        pull = ctx.socket(zmq.PULL)
        pull.bind("inproc://t")
        made_here = ctx.socket(zmq.PUSH)
        result = {}

        def worker():
            push = ctx.socket(zmq.PUSH)  # made and used in this thread
            result["type"] = type(push).__name__
            push.connect("inproc://t")
            push.send(b"from thread")
            push.close()
            try:
                made_here.send(b"x", zmq.DONTWAIT)
            except WrongThreadError:
                result["foreign"] = "WrongThreadError"

        t = threading.Thread(target=worker)
        t.start()
        t.join(20)
        assert pull.recv() == b"from thread"
        print(result["type"], result["foreign"])
        for s in (pull, made_here): s.close(linger=0)
        """,
        libdir,
    )
    assert out.split() == ["Socket", "WrongThreadError"]
