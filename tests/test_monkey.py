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
        # the blocking functions are greenzmq's (greenzmq.device is a callable module)
        import zmq.green
        for alias in (zmq, zmq.green):
            assert alias.device is greenzmq.device and alias.proxy is greenzmq.proxy
            assert alias.zmq_poll is greenzmq.zmq_poll and alias.select is greenzmq.select
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
    # zmq=True reaches every thread: a socket works in the thread that made it
    # (its own hub serves it), and one nobody waits on moves to the thread that
    # uses it next (ownership follows use, as libzmq allows).
    out = run_py(
        """
        import threading, greenzmq, greenzmq.monkey as m
        m.patch(zmq=True)
        import zmq
        ctx = zmq.Context.instance()
        pull = ctx.socket(zmq.PULL)
        pull.bind("inproc://t")
        made_here = ctx.socket(zmq.PUSH)
        made_here.connect("inproc://t")
        result = {}

        def worker():
            push = ctx.socket(zmq.PUSH)  # made and used in this thread
            result["type"] = type(push).__name__
            push.connect("inproc://t")
            push.send(b"from thread")
            push.close()
            made_here.send(b"moved")  # made in the main thread, idle: it moves here

        t = threading.Thread(target=worker)
        t.start()
        t.join(20)
        got = sorted([pull.recv(), pull.recv()])
        made_here.send(b"and back")
        got.append(pull.recv())
        print(result["type"], *[g.decode().replace(" ", "-") for g in got])
        for s in (pull, made_here): s.close(linger=0)
        """,
        libdir,
    )
    assert out.split() == ["Socket", "from-thread", "moved", "and-back"]


#: Run first by every test below, in its fresh interpreter: ``patch(zmq=True)``,
#: then import every public pyzmq submodule (pkgutil walk; ``_`` names are
#: private). A module may be skipped only when its ImportError names a module
#: that is not installed (an optional dependency, or the cffi backend that this
#: build of pyzmq lacks); anything else is a failure. Then pyzmq's own modules
#: must hold pyzmq's real objects, whenever they were imported: no global bound
#: to the ``zmq`` alias or to a class or function greenzmq swaps in, no class
#: built on greenzmq's Context or Socket.
PATCH_AND_IMPORT_ALL = """
import importlib, importlib.util, pkgutil, sys, warnings
import greenzmq, greenzmq.monkey as m
m.patch(zmq=True)
import zmq
assert m.is_patched("zmq") and zmq.Context is greenzmq.Context

def dependency_missing(exc):
    name = getattr(exc, "name", None)
    if not name:
        return False
    try:
        return importlib.util.find_spec(name) is None
    except ImportError:  # its parent package is missing too
        return True

imported, skipped = [], []
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # zmq.eventloop.ioloop, zmq.tests...
    for info in pkgutil.walk_packages(zmq.__path__, "zmq.", onerror=lambda name: None):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue
        try:
            importlib.import_module(info.name)
        except ImportError as exc:
            assert dependency_missing(exc), f"{info.name}: {exc!r}"
            skipped.append(info.name)
        else:
            imported.append(info.name)

# tornado is installed: its modules are covered, not skipped
needed = {"zmq.asyncio", "zmq.auth.asyncio", "zmq.auth.ioloop", "zmq.auth.thread", "zmq.devices",
          "zmq.eventloop.future", "zmq.eventloop.ioloop", "zmq.eventloop.zmqstream",
          "zmq.green.eventloop.zmqstream", "zmq.log.handlers", "zmq.ssh.tunnel", "zmq.utils.monitor"}
assert needed <= set(imported), sorted(needed - set(imported))

green_objects = {id(sys.modules["zmq"]): "the zmq alias"}
green_objects.update({id(getattr(greenzmq, name)): f"greenzmq.{name}" for name in m._SWAPPED})
for name, mod in list(sys.modules.items()):
    if not (name == "zmq" or name.startswith("zmq.")):
        continue
    mod = getattr(mod, "_greenzmq_real", mod)  # an alias: check the module behind it
    for key, value in vars(mod).items():
        assert id(value) not in green_objects, f"{name}.{key} is {green_objects[id(value)]}"
        if isinstance(value, type) and value.__module__ == name:
            assert greenzmq.Context not in value.__mro__, f"{name}.{key} subclasses greenzmq.Context"
            assert greenzmq.Socket not in value.__mro__, f"{name}.{key} subclasses greenzmq.Socket"
print("IMPORTED", len(imported), "SKIPPED", *skipped)
"""


def run_patched(code: str, cwd) -> list[str]:
    """Run PATCH_AND_IMPORT_ALL then ``code`` in a fresh interpreter; return the output lines."""
    out = run_py(PATCH_AND_IMPORT_ALL + textwrap.dedent(code), cwd)
    lines = out.splitlines()
    assert lines and lines[0].startswith("IMPORTED "), out
    return lines


def test_patch_zmq_then_every_public_pyzmq_submodule_imports(tmp_path):
    lines = run_patched("", tmp_path)
    words = lines[0].split()
    assert int(words[1]) >= 40, lines  # pyzmq 27 has 50 public submodules with this install
    assert words[2] == "SKIPPED"
    # only the cffi backend (pyzmq here is built with the Cython one) lacks its parts
    assert all(name.startswith("zmq.backend.cffi") for name in words[3:]), words


def test_patch_zmq_then_eventloop_future_carries_a_message(tmp_path):
    # a tornado Future-based server: the case the hand-kept preload list missed
    lines = run_patched(
        """
        from tornado.ioloop import IOLoop
        import zmq.eventloop.future as zf

        async def main():
            ctx = zf.Context()
            assert greenzmq.Context not in type(ctx).__mro__, type(ctx).__mro__
            rep, req = ctx.socket(zmq.REP), ctx.socket(zmq.REQ)
            assert greenzmq.Socket not in type(rep).__mro__, type(rep).__mro__
            port = rep.bind_to_random_port("tcp://127.0.0.1")
            req.connect(f"tcp://127.0.0.1:{port}")
            await req.send(b"ping")
            got = await rep.recv()
            await rep.send(got + b"!")
            reply = await req.recv()
            ctx.destroy(linger=0)
            return reply

        print(IOLoop.current().run_sync(main, timeout=10))
        """,
        tmp_path,
    )
    assert lines[1:] == ["b'ping!'"]


def test_patch_zmq_then_asyncio_carries_a_message(tmp_path):
    lines = run_patched(
        """
        import asyncio
        import zmq.asyncio

        async def main():
            ctx = zmq.asyncio.Context()
            assert greenzmq.Context not in type(ctx).__mro__, type(ctx).__mro__
            pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
            port = pull.bind_to_random_port("tcp://127.0.0.1")
            push.connect(f"tcp://127.0.0.1:{port}")
            await push.send(b"over asyncio")
            got = await asyncio.wait_for(pull.recv(), 10)
            ctx.destroy(linger=0)
            return got

        print(asyncio.run(main()))
        """,
        tmp_path,
    )
    assert lines[1:] == ["b'over asyncio'"]


#: PLAIN over tcp://127.0.0.1 through an authenticator (allow 127.0.0.1, one
#: user): a client with a wrong password must be refused (its monitor reports
#: HANDSHAKE_FAILED_AUTH, proof that the authenticator answers), then the
#: right one's message passes. ``{async_}``/``{await_}`` are "async "/"await "
#: for asyncio sockets, empty for green ones.
AUTH_EXCHANGE = """
from zmq.utils.monitor import parse_monitor_message

def plain_client(ctx, password):
    sock = ctx.socket(zmq.PUSH)
    sock.plain_username, sock.plain_password = b"admin", password
    sock.linger = 0
    return sock

{async_}def exchange(ctx, auth):
    auth.allow("127.0.0.1")
    auth.configure_plain(domain="*", passwords={{"admin": "secret"}})
    server = ctx.socket(zmq.PULL)
    server.plain_server = True
    server.rcvtimeo = 10_000
    port = server.bind_to_random_port("tcp://127.0.0.1")

    intruder = plain_client(ctx, b"wrong")
    monitor = intruder.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED)
    monitor.rcvtimeo = 10_000
    intruder.connect(f"tcp://127.0.0.1:{{port}}")
    event = parse_monitor_message({await_}monitor.recv_multipart())["event"]
    assert event == zmq.EVENT_HANDSHAKE_FAILED_AUTH, event
    intruder.disable_monitor()
    monitor.close(linger=0)
    intruder.close()

    client = plain_client(ctx, b"secret")
    client.connect(f"tcp://127.0.0.1:{{port}}")
    {await_}client.send(b"authenticated")
    got = {await_}server.recv()
    client.close()
    server.close(linger=0)
    return got
"""


def test_patch_zmq_then_auth_thread_authenticates_a_message(tmp_path):
    lines = run_patched(
        AUTH_EXCHANGE.format(async_="", await_="")
        + """
from zmq.auth.thread import ThreadAuthenticator

ctx = zmq.Context()  # greenzmq's, as every zmq.Context() under zmq=True
assert type(ctx) is greenzmq.Context
auth = ThreadAuthenticator(ctx)
auth.start()
try:
    got = exchange(ctx, auth)  # green sockets: each call blocks only this greenlet
finally:
    auth.stop()
ctx.term()
print(got)
""",
        tmp_path,
    )
    assert lines[1:] == ["b'authenticated'"]


def test_patch_zmq_then_auth_asyncio_authenticates_a_message(tmp_path):
    lines = run_patched(
        AUTH_EXCHANGE.format(async_="async ", await_="await ")
        + """
import asyncio
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

async def main():
    ctx = zmq.asyncio.Context()
    auth = AsyncioAuthenticator(ctx)
    auth.start()
    try:
        return await asyncio.wait_for(exchange(ctx, auth), 20)
    finally:
        auth.stop()
        ctx.destroy(linger=0)

print(asyncio.run(main()))
""",
        tmp_path,
    )
    assert lines[1:] == ["b'authenticated'"]
