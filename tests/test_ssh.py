"""greenzmq.ssh: zmq connections tunnelled through a real sshd on 127.0.0.1.

The sshd is started by this module (tests/sshd_fixture.py) with generated
host and client keys; the tests skip with the reason when sshd or paramiko is
missing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import textwrap

import gevent
import pytest
from conftest import HUB_STALL_BOUND, WAKE_BOUND, hub_ticker, run_until_blocked
from gevent import socket  # green: the tunnel's greenlets must run while a probe waits
from gevent.server import StreamServer
from sshd_fixture import SSHDUnavailable, start_sshd

import greenzmq as zmq
from greenzmq import ssh  # importable without paramiko: it is needed only to open a tunnel

paramiko = pytest.importorskip("paramiko", reason="paramiko not installed (pip install paramiko)")

#: Bound (s) on anything that crosses the tunnel: milliseconds on loopback.
TUNNEL_BOUND = 20.0
BIG = 4 << 20  # larger than paramiko's 2 MiB channel window: sends must wait for window adjusts


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    try:
        server = start_sshd(str(tmp_path_factory.mktemp("sshd")))
    except SSHDUnavailable as e:
        pytest.skip(str(e))
    yield server
    server.stop()


@pytest.fixture
def opts(sshd):
    """Keyword arguments that authenticate to the test sshd and verify its host key."""
    return {
        "keyfile": sshd.client_key,
        "known_hosts": sshd.known_hosts,
        "host_key_policy": paramiko.RejectPolicy(),
    }


@pytest.fixture
def echo(ctx, spawn):
    """A REP echo server on tcp://127.0.0.1; yields its endpoint."""
    rep = ctx.socket(zmq.REP)
    rep.linger = 0
    port = rep.bind_to_random_port("tcp://127.0.0.1")

    def serve():
        while True:
            rep.send_multipart(rep.recv_multipart())

    spawn(serve)
    return f"tcp://127.0.0.1:{port}"


def _relay(sshd, tmp_path, first_reply_delay=0.0):
    """Start a TCP relay to sshd whose pumps are greenlets of this hub; return
    ``(stream_server, server, known_hosts)`` to open tunnels through it.

    ``first_reply_delay`` holds the server's first bytes (its banner) back that
    long: a slow network, with real sockets."""

    def pump(src, dst, delay=0.0):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if delay:
                    gevent.sleep(delay)  # time is the subject: a slow first reply
                    delay = 0.0
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def handle(client, _address):
        upstream = socket.create_connection((sshd.host, sshd.port))
        try:
            back = gevent.spawn(pump, upstream, client, first_reply_delay)
            pump(client, upstream)
            back.join()
        finally:
            upstream.close()

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    # the host key, as known for the relay's address
    known_hosts = tmp_path / f"relay_known_hosts_{server.server_port}"
    with open(sshd.known_hosts) as f:
        entry = f.read()
    known_hosts.write_text(entry.replace(f"[127.0.0.1]:{sshd.port}", f"[127.0.0.1]:{server.server_port}"))
    return server, f"{sshd.user}@127.0.0.1:{server.server_port}", str(known_hosts)


@pytest.fixture
def relay(sshd, tmp_path):
    """A TCP relay to sshd whose pumps are greenlets of this hub.

    Yields ``(server, known_hosts)`` to open tunnels through it: the SSH
    handshakes' bytes then travel through this hub, so an opener that blocked
    the hub while it waits for its handshake could never finish.
    """
    stream_server, server, known_hosts = _relay(sshd, tmp_path)
    yield server, known_hosts
    stream_server.stop(timeout=TUNNEL_BOUND)


#: How late the slow relay delivers sshd's banner: far past the tunnel
#: lifetime of the test below, well within CONNECT_TIMEOUT.
SLOW_BANNER = 0.2


@pytest.fixture
def slow_relay(sshd, tmp_path):
    """:func:`relay`, with sshd's first reply held back :data:`SLOW_BANNER` seconds."""
    stream_server, server, known_hosts = _relay(sshd, tmp_path, SLOW_BANNER)
    yield server, known_hosts
    stream_server.stop(timeout=TUNNEL_BOUND)


@pytest.fixture
def tunnels():
    made = []
    yield made
    for t in made:
        t.close()


def _req(ctx):
    s = ctx.socket(zmq.REQ)
    s.linger = 0
    return s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tunnel_connection_roundtrips(ctx, sshd, opts, echo, tunnels):
    req = _req(ctx)
    tunnel = ssh.tunnel_connection(req, echo, sshd.server, **opts)
    tunnels.append(tunnel)
    assert isinstance(tunnel, ssh.Tunnel) and tunnel.is_alive()
    assert tunnel.url.startswith("tcp://127.0.0.1:") and tunnel.remote_address == (
        "127.0.0.1",
        int(echo.rsplit(":")[-1]),
    )
    with gevent.Timeout(TUNNEL_BOUND, AssertionError("tunnel round trips did not finish")):
        for i in range(50):
            req.send_multipart([b"msg", b"%d" % i])
            assert req.recv_multipart() == [b"msg", b"%d" % i]


@pytest.mark.timeout(40)
def test_large_messages_both_ways(ctx, sshd, opts, echo, tunnels):
    req = _req(ctx)
    tunnels.append(ssh.tunnel_connection(req, echo, sshd.server, **opts))
    payload = os.urandom(BIG)
    with gevent.Timeout(TUNNEL_BOUND, AssertionError("large message did not cross the tunnel")):
        for _ in range(2):
            req.send(payload)
            assert req.recv() == payload


def test_hub_runs_while_tunnels_open(ctx, sshd, opts, relay, echo, tunnels, spawn):
    """Two tunnels come up concurrently, and other greenlets run meanwhile:
    the relay's, which carry the handshakes, and a ticker that sees no stall
    from the first opener's start to the last one's end."""
    server, known_hosts = relay
    socks = [_req(ctx), _req(ctx)]
    with hub_ticker() as ticker:
        openers = [
            spawn(ssh.tunnel_connection, s, echo, server, **{**opts, "known_hosts": known_hosts})
            for s in socks
        ]
        gevent.joinall(openers, timeout=TUNNEL_BOUND, raise_error=True)
    tunnels.extend(g.value for g in openers)
    assert all(g.successful() for g in openers), "the tunnels did not come up within the bound"
    assert ticker.max_gap < HUB_STALL_BOUND, "the hub was blocked while the tunnels opened"
    with gevent.Timeout(TUNNEL_BOUND, AssertionError("round trips through concurrent tunnels failed")):
        for i, s in enumerate(socks):
            s.send(b"%d" % i)
        assert [s.recv() for s in socks] == [b"0", b"1"]
    assert tunnels[0].url != tunnels[1].url


def test_wrong_key_raises_and_socket_stays_usable(ctx, sshd, opts, echo, tunnels):
    req = _req(ctx)
    with gevent.Timeout(TUNNEL_BOUND, AssertionError("authentication failure took too long")):
        with pytest.raises(paramiko.AuthenticationException):
            ssh.tunnel_connection(req, echo, sshd.server, **{**opts, "keyfile": sshd.wrong_key})
    tunnels.append(ssh.tunnel_connection(req, echo, sshd.server, **opts))
    with gevent.Timeout(TUNNEL_BOUND, AssertionError("round trip after a failed tunnel")):
        req.send(b"again")
        assert req.recv() == b"again"


def test_try_passwordless_ssh(sshd, opts):
    assert ssh.try_passwordless_ssh(sshd.server, **opts) is True
    assert ssh.try_passwordless_ssh(sshd.server, **{**opts, "keyfile": sshd.wrong_key}) is False
    assert ssh.ssh_tunnel is ssh.paramiko_tunnel


def test_unknown_host_key_rejected(sshd, tmp_path, echo):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        ssh.open_tunnel(
            echo,
            sshd.server,
            keyfile=sshd.client_key,
            known_hosts=str(empty),
            host_key_policy=paramiko.RejectPolicy(),
        )


def _connection_closed(port: str):
    def match(line: str) -> bool:
        return f"port {port}" in line and any(
            word in line
            for word in (
                "Disconnected from",
                "Connection closed by",
                "Received disconnect from",
                "Read error from remote host",  # paramiko's close() drops the TCP connection
            )
        )

    return match


@pytest.mark.parametrize("interrupt", ["kill", "timeout"])
def test_interrupted_open_leaves_no_ssh_connection(sshd, opts, echo, spawn, interrupt):
    """Killed (or timed out) while paramiko connects in a thread: the connection
    completes there and is closed, instead of living on unowned."""
    mark = len(sshd.log.lines)

    def open_with_timeout():
        with gevent.Timeout(0.000001, False):  # fires at the first wait: the SSH handshake
            ssh.open_tunnel(echo, sshd.server, **opts)
            raise AssertionError("the SSH handshake did not wait")

    if interrupt == "kill":
        opener = spawn(ssh.open_tunnel, echo, sshd.server, **opts)
        run_until_blocked()  # the opener runs until it waits for the SSH handshake
        assert not opener.ready()
        opener.kill()
    else:
        opener = spawn(open_with_timeout)
        opener.join(TUNNEL_BOUND)
    assert opener.successful()
    accepted = sshd.log.wait_for(lambda line: line.startswith("Connection from 127.0.0.1 port"), mark)
    assert accepted, "the abandoned connect never reached sshd"
    client_port = accepted.split()[4]
    assert sshd.log.wait_for(_connection_closed(client_port), mark), (
        "the abandoned SSH connection was left open"
    )


@pytest.mark.parametrize(
    "addr, server, kwargs",
    [
        ("ipc:///tmp/x", None, {}),
        ("tcp://127.0.0.1", None, {}),
        ("tcp://127.0.0.1:port", None, {}),
        ("127.0.0.1:5555", None, {}),
        (None, "user@host:notaport", {}),
        (None, None, {"paramiko": False}),
    ],
)
def test_bad_arguments_raise_value_error(ctx, sshd, opts, echo, tunnels, addr, server, kwargs):
    req = _req(ctx)
    with pytest.raises(ValueError):
        ssh.tunnel_connection(req, addr or echo, server or sshd.server, **opts, **kwargs)
    tunnels.append(ssh.tunnel_connection(req, echo, sshd.server, **opts))
    with gevent.Timeout(TUNNEL_BOUND, AssertionError("socket unusable after a refused tunnel")):
        req.send(b"ok")
        assert req.recv() == b"ok"


def test_remote_endpoint_bound_later(ctx, sshd, opts, tunnels):
    """Channels refused while nothing listens; zmq reconnects once the peer binds."""
    port = _free_port()
    req = _req(ctx)
    tunnel = ssh.tunnel_connection(req, f"tcp://127.0.0.1:{port}", sshd.server, **opts)
    tunnels.append(tunnel)
    req.send(b"early")  # queued until a connection through the tunnel completes
    # a few refused channels go by (zmq retries every reconnect_ivl)
    with gevent.Timeout(TUNNEL_BOUND, AssertionError("no connection attempt reached the tunnel")):
        probe = socket.create_connection(tunnel.local_address)
        assert probe.recv(1) == b""  # the tunnel closed it: the channel was refused
        probe.close()
    assert tunnel.is_alive()
    rep = ctx.socket(zmq.REP)
    rep.linger = 0
    rep.bind(f"tcp://127.0.0.1:{port}")
    with gevent.Timeout(TUNNEL_BOUND, AssertionError("zmq did not reconnect through the tunnel")):
        assert rep.recv() == b"early"
        rep.send(b"late")
        assert req.recv() == b"late"


def test_close_stops_listening_and_is_idempotent(ctx, sshd, opts, echo):
    req = _req(ctx)
    tunnel = ssh.tunnel_connection(req, echo, sshd.server, **opts)
    with gevent.Timeout(TUNNEL_BOUND):
        req.send(b"x")
        assert req.recv() == b"x"
    tunnel.close()
    assert tunnel.closed and not tunnel.is_alive() and tunnel.join(0)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(tunnel.local_address).close()
    tunnel.close()
    assert "closed" in repr(tunnel)


def _live(tunnel) -> str:
    return f"{len(tunnel._pool)} forwarded connection(s) still open"


def test_timeout_expires_unused_tunnel(sshd, opts):
    # the remote end listens nowhere: should a stray local client (another
    # process's zmq socket retrying an old port) find our port, its channel is
    # refused at once and cannot keep the tunnel alive
    url, tunnel = ssh.open_tunnel(f"tcp://127.0.0.1:{_free_port()}", sshd.server, timeout=0.2, **opts)
    assert tunnel.join(TUNNEL_BOUND), f"an unused tunnel outlived its timeout: {_live(tunnel)}"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(tunnel.local_address).close()


def test_short_lifetime_does_not_cut_the_handshake(ctx, sshd, opts, echo, slow_relay):
    """``timeout`` is the tunnel's idle lifetime, as pyzmq's: a tunnel meant to
    live 50 ms unused still gets a whole SSH handshake over a slow network
    (bounded by CONNECT_TIMEOUT), and then serves the connection made through it."""
    server, known_hosts = slow_relay
    req = _req(ctx)
    opts = {**opts, "known_hosts": known_hosts}
    tunnel = ssh.tunnel_connection(req, echo, server, timeout=SLOW_BANNER / 4, **opts)
    with gevent.Timeout(TUNNEL_BOUND):
        req.send(b"x")
        assert req.recv() == b"x"
    req.close()
    assert tunnel.join(TUNNEL_BOUND), f"tunnel did not close after its last connection ended: {_live(tunnel)}"


def test_timeout_waits_for_last_connection(ctx, sshd, opts, echo):
    req = _req(ctx)
    tunnel = ssh.tunnel_connection(req, echo, sshd.server, timeout=0.2, **opts)
    with gevent.Timeout(TUNNEL_BOUND):
        req.send(b"x")
        assert req.recv() == b"x"
    # the connection is in use: the tunnel stays well past its timeout
    assert not tunnel.join(WAKE_BOUND)
    req.close()
    assert tunnel.join(TUNNEL_BOUND), f"tunnel did not close after its last connection ended: {_live(tunnel)}"


def _children() -> dict[int, list[int]]:
    """ppid -> pids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def _sessions(sshd) -> dict[int, list[int]]:
    """Each per-connection child of our sshd -> its whole process subtree."""
    tree = _children()
    sessions = {}
    for child in tree.get(sshd.proc.pid, []):
        subtree, todo = [], [child]
        while todo:
            pid = todo.pop()
            subtree.append(pid)
            todo.extend(tree.get(pid, []))
        sessions[child] = subtree
    return sessions


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds sshd's session processes in /proc (Linux)")
def test_tunnel_closes_itself_when_ssh_connection_dies(ctx, sshd, opts, echo):
    before = set(_sessions(sshd))
    req = _req(ctx)
    tunnel = ssh.tunnel_connection(req, echo, sshd.server, **opts)
    with gevent.Timeout(TUNNEL_BOUND):
        req.send(b"x")
        assert req.recv() == b"x"
    ours = {pid: tree for pid, tree in _sessions(sshd).items() if pid not in before}
    assert len(ours) == 1, ours
    # the session's processes descend from the sshd this module started; the
    # monitor alone may ignore SIGTERM, and a child holding the TCP connection
    # would outlive it, so all of them get SIGKILL
    for pid in next(iter(ours.values())):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert tunnel.join(TUNNEL_BOUND), "tunnel outlived its SSH connection"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(tunnel.local_address).close()


def test_without_paramiko_open_tunnel_raises_import_error(python_exe):
    script = textwrap.dedent(
        """
        import sys; sys.modules["paramiko"] = None  # as if not installed
        from greenzmq import ssh
        try:
            ssh.open_tunnel("tcp://127.0.0.1:5555", "me@127.0.0.1:22")
        except ImportError as e:
            print("ImportError:", e)
        """
    )
    out = subprocess.run([python_exe, "-c", script], capture_output=True, text=True, timeout=30)
    assert "ImportError: greenzmq.ssh needs paramiko: pip install paramiko" in out.stdout, (
        out.stdout + out.stderr
    )


_PATCHED_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey; monkey.patch_all()
    import os, sys
    import paramiko, gevent
    import greenzmq as zmq
    from greenzmq import ssh

    server, keyfile, known_hosts = sys.argv[1:4]
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP); rep.linger = 0
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    req = ctx.socket(zmq.REQ); req.linger = 0
    before = len(os.listdir("/proc/self/task"))  # main thread + libzmq's I/O and reaper threads
    tunnel = ssh.tunnel_connection(req, f"tcp://127.0.0.1:{port}", server, keyfile=keyfile,
                                   known_hosts=known_hosts, host_key_policy=paramiko.RejectPolicy())
    gevent.spawn(lambda: rep.send(rep.recv()))
    with gevent.Timeout(20):
        req.send(b"patched"); assert req.recv() == b"patched"
    print("os-threads", before, len(os.listdir("/proc/self/task")))
    tunnel.close(); ctx.destroy(linger=0)
    """
)


@pytest.mark.timeout(60)
@pytest.mark.skipif(
    not os.path.isdir("/proc/self/task"), reason="counts OS threads in /proc/self/task (Linux)"
)
def test_monkey_patched_process_forwards_without_threads(sshd, python_exe):
    env = {**os.environ, "GEVENT_RESOLVER": "block"}  # numeric host: no resolver thread needed
    out = subprocess.run(
        [python_exe, "-c", _PATCHED_SCRIPT, sshd.server, sshd.client_key, sshd.known_hosts],
        capture_output=True,
        text=True,
        timeout=50,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    before, after = out.stdout.split()[-2:]
    assert after == before, f"the tunnel started OS threads: {out.stdout}{out.stderr}"
