"""A real OpenSSH server on 127.0.0.1 for tests, in a temporary directory.

``start_sshd(workdir)`` generates a host key, an authorized client key and an
unauthorized one, writes an ``sshd_config`` that listens on 127.0.0.1 only and
allows TCP forwarding, and runs ``/usr/sbin/sshd -D -e -f <config>`` as a
child process, returning once sshd logged that it listens. Raises
:class:`SSHDUnavailable` (with a one-line reason to skip on) when sshd or
ssh-keygen is missing or cannot start here.

Install on Debian/Ubuntu: ``apt-get install -y openssh-server openssh-client``.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable

import gevent
from gevent import subprocess as gsubprocess
from gevent.event import Event

__all__ = ["SSHD", "SSHDLog", "SSHDUnavailable", "start_sshd"]

SSHD_PATH = "/usr/sbin/sshd"
#: sshd's privilege-separation directory (compiled in on Debian); root's sshd refuses to start without it.
PRIVSEP_DIR = "/run/sshd"
#: Bound (s) on sshd announcing "Server listening": it takes milliseconds.
START_BOUND = 20.0
#: Attempts when the free port we picked was taken before sshd bound it.
START_ATTEMPTS = 3


class SSHDUnavailable(Exception):
    """sshd cannot run here; the message is the reason to skip."""


class SSHDLog:
    """sshd's stderr, line by line, with a wait for the line one is expecting."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._news = Event()

    def _notify(self) -> None:
        news, self._news = self._news, Event()
        news.set()

    def append(self, line: str) -> None:
        self.lines.append(line)
        self._notify()

    def close(self) -> None:
        self.closed = True
        self._notify()

    def wait_for(
        self, predicate: Callable[[str], bool], start: int = 0, timeout: float = START_BOUND
    ) -> str | None:
        """The first line from index ``start`` on satisfying ``predicate``, or None
        if none came within ``timeout`` seconds or sshd exited."""
        deadline = time.monotonic() + timeout
        i = start
        while True:
            news = self._news
            while i < len(self.lines):
                if predicate(self.lines[i]):
                    return self.lines[i]
                i += 1
            remaining = deadline - time.monotonic()
            if self.closed or remaining <= 0:
                return None
            news.wait(remaining)


@dataclass
class SSHD:
    host: str
    port: int
    user: str
    client_key: str  # authorized private key file
    wrong_key: str  # a valid private key file that is NOT authorized
    known_hosts: str  # known_hosts file holding this server's host key
    proc: gsubprocess.Popen
    log: SSHDLog = field(default_factory=SSHDLog)

    @property
    def server(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=START_BOUND)
            except gsubprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _keygen(path: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "greenzmq-test", "-f", path],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sshd(workdir: str) -> SSHD:
    if not os.path.exists(SSHD_PATH):
        raise SSHDUnavailable(f"{SSHD_PATH} not installed (apt-get install -y openssh-server)")
    if shutil.which("ssh-keygen") is None:
        raise SSHDUnavailable("ssh-keygen not installed (apt-get install -y openssh-client)")
    if os.geteuid() == 0 and not os.path.isdir(PRIVSEP_DIR):
        os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)  # what the ssh service does on boot

    user = getpass.getuser()
    paths = {name: os.path.join(workdir, name) for name in ("host_key", "client_key", "wrong_key")}
    for path in paths.values():
        _keygen(path)
    authorized = os.path.join(workdir, "authorized_keys")
    shutil.copy(paths["client_key"] + ".pub", authorized)
    os.chmod(authorized, 0o600)

    last = ""
    for _ in range(START_ATTEMPTS):
        port = _free_port()
        config = os.path.join(workdir, "sshd_config")
        with open(config, "w") as f:
            f.write(
                f"Port {port}\n"
                "ListenAddress 127.0.0.1\n"
                f"HostKey {paths['host_key']}\n"
                f"PidFile {workdir}/sshd.pid\n"
                f"AuthorizedKeysFile {authorized}\n"
                f"AllowUsers {user}\n"
                "PubkeyAuthentication yes\n"
                "PasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\n"
                "PermitRootLogin prohibit-password\n"
                "StrictModes no\n"
                "UsePAM no\n"
                "AllowTcpForwarding yes\n"
                "LogLevel VERBOSE\n"
            )
        proc = gsubprocess.Popen(
            [SSHD_PATH, "-D", "-e", "-f", config],
            stdin=gsubprocess.DEVNULL,
            stdout=gsubprocess.DEVNULL,
            stderr=gsubprocess.PIPE,
            text=True,
        )
        log = SSHDLog()

        def drain(proc=proc, log=log):
            # keep reading so sshd never blocks on a full stderr pipe
            for line in proc.stderr:
                log.append(line.rstrip())
            log.close()

        gevent.spawn(drain)
        listening = log.wait_for(lambda line: "Server listening on" in line)
        if proc.poll() is None and listening:
            with open(paths["host_key"] + ".pub") as f:
                keytype, key = f.read().split()[:2]
            known_hosts = os.path.join(workdir, "known_hosts")
            with open(known_hosts, "w") as f:
                f.write(f"[127.0.0.1]:{port} {keytype} {key}\n")
            return SSHD(
                "127.0.0.1", port, user, paths["client_key"], paths["wrong_key"], known_hosts, proc, log
            )
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        last = log.lines[-1] if log.lines else f"exit status {proc.returncode}"
    raise SSHDUnavailable(f"sshd did not start: {last}")
