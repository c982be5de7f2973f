"""Green SSH tunnels for zmq connections, forwarded by greenlets over paramiko.

The green counterpart of :mod:`zmq.ssh` (``tunnel_connection``,
``open_tunnel``)::

    import greenzmq as zmq
    from greenzmq import ssh

    sock = zmq.Context.instance().socket(zmq.REQ)
    tunnel = ssh.tunnel_connection(sock, "tcp://10.0.0.5:5555", "me@gateway:22", keyfile="~/.ssh/id_ed25519")
    ...
    tunnel.close()

pyzmq forwards either with an external ``ssh`` process driven by pexpect, or
with paramiko in a ``multiprocessing`` child; both block the calling thread
while the tunnel comes up. Here the local listener and the byte pumps are
greenlets in the calling process, and every paramiko call that may wait runs
where it cannot freeze the hub (see :class:`Tunnel`). paramiko is an optional
dependency (``pip install paramiko``).
"""

from __future__ import annotations

import getpass
import logging
import os
import socket as _socket
from typing import Any, Callable

import gevent
from gevent.event import Event
from gevent.hub import get_hub
from gevent.monkey import get_original, is_module_patched
from gevent.pool import Pool
from gevent.server import StreamServer
from gevent.socket import wait_read

__all__ = [
    "Tunnel",
    "open_tunnel",
    "tunnel_connection",
    "paramiko_tunnel",
    "ssh_tunnel",
    "try_passwordless_ssh",
]

log = logging.getLogger("greenzmq.ssh")

#: A real OS lock even under monkey-patching: it guards state shared with a threadpool thread.
_allocate_lock = get_original("_thread", "allocate_lock")

#: SSH's well-known port, used when ``server`` names none.
SSH_PORT = 22
#: Bytes moved per read in each direction: paramiko's default max packet is
#: 32 KiB, so a larger read would only be split again.
CHUNK = 32768
#: How long (s) the SSH server may take to open one forwarded channel before
#: that local connection is dropped (zmq then reconnects on its own).
CHANNEL_OPEN_TIMEOUT = 30.0
#: How long (s) connecting to the SSH server, its banner and authentication
#: may take when a tunnel opens. pyzmq's ``timeout`` argument is the tunnel's
#: idle lifetime (``ssh -f ... sleep timeout``), a different thing: a tunnel
#: meant to live 0.2 s unused must not give its handshake only 0.2 s.
CONNECT_TIMEOUT = 30.0
#: Environment variable pyzmq reads to pick paramiko's missing-host-key
#: policy by name ("AutoAdd", "Reject", "Warning"); honoured here too.
HOST_KEY_POLICY_ENV = "PYZMQ_PARAMIKO_HOST_KEY_POLICY"


def _paramiko() -> Any:
    try:
        import paramiko
    except ImportError:
        raise ImportError("greenzmq.ssh needs paramiko: pip install paramiko") from None
    return paramiko


def _green_threads() -> bool:
    """True when gevent has patched threading and socket: paramiko is then green by itself."""
    return is_module_patched("threading") and is_module_patched("socket")


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a paramiko call that may wait, blocking only the calling greenlet.

    paramiko waits on ``threading`` primitives that its transport thread
    signals. Unpatched, those would freeze the hub, so the call runs in
    gevent's threadpool; under ``gevent.monkey.patch_all()`` they are green
    already and the call runs right here.
    """
    if _green_threads():
        return fn(*args, **kwargs)
    return get_hub().threadpool.apply(fn, args, kwargs)


def _call_owning(fn: Callable[..., Any], release: Callable[[], Any], *args: Any, **kwargs: Any) -> Any:
    """:func:`_call` for a call that leaves a resource behind, which ``release()`` frees.

    If the call fails, ``release()`` runs. If the calling greenlet is
    interrupted (``gevent.Timeout``, ``kill()``) while the call still runs in
    the threadpool (a thread cannot be interrupted), the call is left to
    finish and ``release()`` runs in that thread when it does: a connection
    made for a greenlet that is gone is closed, not leaked.
    """
    if _green_threads():
        try:
            return fn(*args, **kwargs)
        except BaseException:
            release()
            raise
    lock = _allocate_lock()
    state = {"abandoned": False, "finished": False}

    def run() -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            with lock:
                state["finished"] = True
                abandoned = state["abandoned"]
            if abandoned:
                release()

    try:
        return get_hub().threadpool.apply(run)
    except BaseException:
        with lock:
            state["abandoned"] = True
            finished = state["finished"]
        if finished:  # the call itself failed, or ended just as we were interrupted
            _call(release)
        raise


def _split_server(server: str) -> tuple[str, str, int]:
    """``[user@]host[:port]`` -> (user, host, port), as :mod:`zmq.ssh` parses it."""
    username, _, hostport = server.rpartition("@")
    host, sep, port = hostport.rpartition(":") if hostport.count(":") == 1 else ("", "", "")
    if not sep:
        host, port = hostport, str(SSH_PORT)
    if not host or not port.isdigit():
        raise ValueError(f"ssh server must be [user@]host[:port], got {server!r}")
    return username or getpass.getuser(), host, int(port)


def _split_addr(addr: str) -> tuple[str, int]:
    """``tcp://host:port`` (as seen from the SSH server) -> (host, port)."""
    scheme, sep, rest = addr.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme != "tcp" or not sep or not host or not port.isdigit():
        raise ValueError(f"only tcp://host:port endpoints can be tunnelled, got {addr!r}")
    return host.strip("[]"), int(port)


class Tunnel:
    """A local TCP port on 127.0.0.1 forwarded through an SSH server to ``remote``.

    Made by :func:`open_tunnel`; :attr:`url` is the endpoint to connect zmq
    sockets to. It lives at least ``timeout`` seconds waiting for its first
    connection, then as long as forwarded connections remain (the lifetime
    of ``ssh -f -L ... sleep timeout``, pyzmq's openssh tunnel), or until
    :meth:`close`; ``timeout=None`` means until :meth:`close`. It closes
    itself when the SSH connection is lost.

    Green behaviour
    ---------------
    The listener and two byte pumps per forwarded connection are greenlets
    of the hub that opened the tunnel, so that thread must keep running its
    hub. paramiko's own transport runs its protocol in a thread of its own;
    the calls made to it that may wait (connect and authenticate, open a
    channel, read, write, close) go through gevent's threadpool and block
    only the calling greenlet. Under ``gevent.monkey.patch_all()`` (done
    before paramiko is imported) paramiko's thread is a greenlet and no OS
    thread is used at all. :meth:`close` and :meth:`join` may be called from
    any greenlet of that hub.
    """

    url: str
    local_address: tuple[str, int]
    remote_address: tuple[str, int]

    def __init__(self, client: Any, remote: tuple[str, int], timeout: float | None, lport: int = 0) -> None:
        self._client = client
        self._transport = client.get_transport()
        self.remote_address = remote
        self._closed = Event()
        self._pool = Pool()
        self._server = StreamServer(("127.0.0.1", lport), self._forward, spawn=self._pool)
        self._server.start()
        self.local_address = self._server.address[:2]
        self.url = f"tcp://127.0.0.1:{self.local_address[1]}"
        self._reaper = gevent.spawn(self._expire, timeout) if timeout is not None else None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"<greenzmq.ssh.Tunnel {self.url} -> {self.remote_address[0]}:{self.remote_address[1]} {state}>"
        )

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def is_alive(self) -> bool:
        """True until the tunnel is closed (as ``Process.is_alive`` for pyzmq's paramiko tunnel)."""
        return not self.closed

    def join(self, timeout: float | None = None) -> bool:
        """Block this greenlet until the tunnel closes; True if it did within ``timeout``."""
        return self._closed.wait(timeout)

    def close(self) -> None:
        """Stop listening, drop every forwarded connection, close the SSH connection.

        Safe to call twice and from the tunnel's own greenlets.
        """
        if self._closed.is_set():
            return
        self._closed.set()
        me = gevent.getcurrent()
        self._server.close()
        if self._reaper is not None and self._reaper is not me:
            self._reaper.kill(block=False)
        for glet in list(self._pool):
            if glet is not me:
                glet.kill(block=False)
        _call(self._client.close)
        log.debug("tunnel %s closed", self.url)

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- greenlets --------------------------------------------------------------------

    def _expire(self, timeout: float) -> None:
        """pyzmq's ``sleep timeout``: wait for a first user, then for the last to leave."""
        gevent.sleep(timeout)
        self._pool.join()
        self.close()

    def _transport_lost(self) -> bool:
        if self.closed or self._transport.is_active():
            return False
        log.warning("tunnel %s: SSH connection lost, closing", self.url)
        gevent.spawn(self.close)  # not from here: close() kills this pool
        return True

    def _forward(self, sock: _socket.socket, address: tuple[str, int]) -> None:
        """One local connection: open a channel to ``remote`` and pump both ways."""
        paramiko = _paramiko()
        try:
            try:
                chan = _call(
                    self._transport.open_channel,
                    "direct-tcpip",
                    self.remote_address,
                    address,
                    timeout=CHANNEL_OPEN_TIMEOUT,
                )
            except (paramiko.SSHException, OSError, EOFError) as e:
                # e.g. nothing listens at remote: zmq reconnects later
                log.debug("tunnel %s: channel to %s refused: %r", self.url, self.remote_address, e)
                self._transport_lost()
                return
            try:
                upstream = gevent.spawn(_pump_to_channel, sock, chan)
                try:
                    _pump_from_channel(chan, sock)
                    upstream.join()
                finally:
                    upstream.kill()
            finally:
                _call(chan.close)
        finally:
            sock.close()
        self._transport_lost()


def _pump_to_channel(sock: _socket.socket, chan: Any) -> None:
    """Local socket -> SSH channel, then half-close the channel."""
    try:
        while True:
            data = sock.recv(CHUNK)
            if not data:
                break
            _call(chan.sendall, data)
        _call(chan.shutdown_write)
    except OSError as e:  # reset by the local peer, or the channel closed under us
        log.debug("tunnel pump to channel ended: %r", e)


def _pump_from_channel(chan: Any, sock: _socket.socket) -> None:
    """SSH channel -> local socket, then half-close the socket.

    Waits on the channel's pipe fd (paramiko's ``fileno()``, readable
    whenever data or EOF is buffered) in the hub, so no thread is parked
    while the remote side is quiet.
    """
    fd = chan.fileno()
    try:
        while True:
            wait_read(fd)
            data = _call(chan.recv, CHUNK)
            if not data:
                break
            sock.sendall(data)
        sock.shutdown(_socket.SHUT_WR)
    except OSError as e:
        log.debug("tunnel pump from channel ended: %r", e)


def _connect(
    server: str,
    keyfile: str | None,
    password: str | None,
    timeout: float | None,
    known_hosts: str | None,
    host_key_policy: Any,
) -> Any:
    paramiko = _paramiko()
    username, host, port = _split_server(server)
    client = paramiko.SSHClient()
    client.load_system_host_keys()
    known = os.path.expanduser(known_hosts or "~/.ssh/known_hosts")
    if os.path.exists(known):
        client.load_host_keys(known)
    elif known_hosts is not None:
        raise FileNotFoundError(f"known_hosts file {known_hosts!r} does not exist")
    if host_key_policy is None:
        name = os.environ.get(HOST_KEY_POLICY_ENV)
        # pyzmq's paramiko tunnel accepts unknown hosts with a warning
        host_key_policy = getattr(paramiko, f"{name}Policy")() if name else paramiko.WarningPolicy()
    client.set_missing_host_key_policy(host_key_policy)
    _call_owning(
        client.connect,
        client.close,
        host,
        port,
        username=username,
        key_filename=os.path.expanduser(keyfile) if keyfile else None,
        password=password,
        look_for_keys=True,
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
    )
    return client


def paramiko_tunnel(
    lport: int,
    rport: int,
    server: str,
    remoteip: str = "127.0.0.1",
    keyfile: str | None = None,
    password: str | None = None,
    timeout: float | None = 60,
    *,
    known_hosts: str | None = None,
    host_key_policy: Any = None,
) -> Tunnel:
    """Forward ``127.0.0.1:lport`` to ``remoteip:rport`` as seen from ``server``.

    Like :func:`zmq.ssh.tunnel.paramiko_tunnel` (``ssh server -L
    127.0.0.1:lport:remoteip:rport``), but the forwarding runs in greenlets of
    this process and a :class:`Tunnel` is returned. ``lport=0`` picks a free
    port (no race, unlike choosing one beforehand).

    Parameters
    ----------
    server : str
        ``[user@]host[:port]``; the user defaults to the local user, the port to 22.
    keyfile, password : str, optional
        A private key file and/or password. Keys from ``~/.ssh`` and an SSH
        agent are tried too, as pyzmq does. Unlike pyzmq, nobody is prompted:
        failed authentication raises :class:`paramiko.AuthenticationException`.
    timeout : float or None
        The tunnel's minimum lifetime (see :class:`Tunnel`), as pyzmq's;
        ``None``: no expiry. Connecting and authenticating are bounded by
        :data:`CONNECT_TIMEOUT` instead.
    known_hosts : str, optional
        A known_hosts file checked besides the system one (default
        ``~/.ssh/known_hosts`` when it exists).
    host_key_policy : paramiko.MissingHostKeyPolicy, optional
        What to do with a server whose host key is unknown. Default: the
        policy named by ``$PYZMQ_PARAMIKO_HOST_KEY_POLICY``, else pyzmq's
        ``WarningPolicy`` (accept, and log a warning). Pass
        ``paramiko.RejectPolicy()`` to refuse unknown servers.

    Green behaviour
    ---------------
    Blocks only the calling greenlet while connecting and authenticating.
    Raises what paramiko raises (``paramiko.SSHException`` and subclasses,
    ``OSError``) when the server cannot be reached or refuses; nothing is left
    listening then.
    """
    client = _connect(server, keyfile, password, CONNECT_TIMEOUT, known_hosts, host_key_policy)
    try:
        return Tunnel(client, (remoteip, rport), timeout, lport)
    except BaseException:
        _call(client.close)
        raise


#: pyzmq's name for the platform's default tunnel function; here always paramiko's.
ssh_tunnel = paramiko_tunnel


def try_passwordless_ssh(
    server: str,
    keyfile: str | None,
    paramiko: bool | None = None,
    *,
    timeout: float | None = 60,
    known_hosts: str | None = None,
    host_key_policy: Any = None,
) -> bool:
    """True if ``server`` accepts us without a password (key file, ``~/.ssh`` keys, agent).

    As :func:`zmq.ssh.tunnel.try_passwordless_ssh`, over paramiko whatever
    ``paramiko`` says; blocks only the calling greenlet. Returns False on
    :class:`paramiko.AuthenticationException`; other failures (unreachable
    server, rejected host key) raise.
    """
    auth_error = _paramiko().AuthenticationException
    try:
        client = _connect(server, keyfile, None, timeout, known_hosts, host_key_policy)
    except auth_error:
        return False
    _call(client.close)
    return True


def open_tunnel(
    addr: str,
    server: str,
    keyfile: str | None = None,
    password: str | None = None,
    paramiko: bool | None = None,
    timeout: float | None = 60,
    **kwargs: Any,
) -> tuple[str, Tunnel]:
    """Open a tunnel to the zmq endpoint ``addr`` through ``server``.

    As :func:`zmq.ssh.open_tunnel`: returns ``(url, tunnel)``, where ``url``
    is the local ``tcp://127.0.0.1:port`` to connect to. ``addr`` is a
    ``tcp://host:port`` endpoint as seen from the SSH server (other
    transports raise :class:`ValueError`). ``paramiko`` may be ``None`` or
    ``True`` (greenzmq always forwards with paramiko); ``False``, which asks
    pyzmq for an external ``ssh`` process, raises :class:`ValueError`. Other
    parameters, and the keyword-only ``known_hosts`` and ``host_key_policy``,
    are those of :func:`paramiko_tunnel`.
    """
    if paramiko is False:
        raise ValueError("greenzmq.ssh forwards with paramiko only; use zmq.ssh for an external ssh process")
    ip, rport = _split_addr(addr)
    tunnel = paramiko_tunnel(0, rport, server, ip, keyfile, password, timeout, **kwargs)
    return tunnel.url, tunnel


def tunnel_connection(
    socket: Any,
    addr: str,
    server: str,
    keyfile: str | None = None,
    password: str | None = None,
    paramiko: bool | None = None,
    timeout: float | None = 60,
    **kwargs: Any,
) -> Tunnel:
    """Connect ``socket`` to ``addr`` through an SSH tunnel; return the :class:`Tunnel`.

    As :func:`zmq.ssh.tunnel_connection`: :func:`open_tunnel`, then
    ``socket.connect(url)``. Blocks only the calling greenlet. If the
    connect fails, the tunnel is closed before the error propagates.
    """
    url, tunnel = open_tunnel(addr, server, keyfile, password, paramiko, timeout, **kwargs)
    try:
        socket.connect(url)
    except BaseException:
        tunnel.close()
        raise
    return tunnel
