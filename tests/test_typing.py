"""greenzmq's annotations as its users' type checkers read them (greenzmq ships py.typed).

tests/typecheck/user_program.py is an ordinary pyzmq program written for greenzmq
(``import greenzmq as zmq``). ``mypy --strict`` must pass on it as written and with
that import rewritten to ``import zmq``, and say exactly the same about both (every
``reveal_type``), greenzmq's classes standing for the pyzmq classes they replace:
a program type-checks as it does with pyzmq. Mistakes are reported as pyzmq's
types report them, and every name of the facade is known to the type checker.

mypy runs in a subprocess from the repository root (so ``greenzmq`` is this
checkout), with a configuration of its own: a user's project with ``strict``,
where greenzmq's own errors are not the user's (mypy run on the package, with
pyproject.toml's configuration, checks those). About 10 s in all.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

import greenzmq

pytest.importorskip("mypy")

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ROOT / "tests" / "typecheck" / "user_program.py"
GREEN_IMPORT = "import greenzmq as zmq\n"
PYZMQ_IMPORT = "import zmq\n"
#: Bounds one mypy run; the first one analyses pyzmq, gevent's callers and greenzmq afresh.
MYPY_TIMEOUT = 120

#: A user's project: strict for its own code; errors inside greenzmq are not the
#: user's (as for any installed package); packages without type information are Any.
MYPY_INI = """\
[mypy]
strict = True

[mypy-greenzmq,greenzmq.*]
ignore_errors = True

[mypy-gevent.*,paramiko.*,locust.*,msgpack.*,blosc.*,numpy.*,psutil.*,tornado.*,geventhttpclient.*]
ignore_missing_imports = True
"""

#: greenzmq's classes, and the pyzmq classes they replace, as mypy names them.
GREEN_FOR_PYZMQ = {
    "greenzmq.context.Context": "zmq.sugar.context.Context",
    "greenzmq.socket.Socket": "zmq.sugar.socket.Socket",
    "greenzmq.poll.Poller": "zmq.sugar.poll.Poller",
    "greenzmq.tracker.MessageTracker": "zmq.sugar.tracker.MessageTracker",
}

#: Mistakes mypy must report, with greenzmq as with pyzmq.
MISTAKES = f"""\
from __future__ import annotations

{GREEN_IMPORT}
ctx = zmq.Context()
sock = ctx.socket(zmq.PUSH)
sock.send("text is not a buffer")  # mistake
sock.send_multipart(["nor in a message"])  # mistake
sock.recv(copy=False).decode()  # mistake
sock.recv_multipart()[0].bytes  # mistake
tracker = sock.send(b"copied: no tracker")
tracker.wait()  # mistake
sock.set(zmq.SUBSCRIBE, "text")  # mistake
count: str = zmq.zmq_poll([(sock, zmq.POLLIN)])[0][1]  # mistake
zmq.Contxt()  # mistake
sock.bind(5555)  # mistake
"""


@pytest.fixture(scope="module")
def mypy(tmp_path_factory: pytest.TempPathFactory):
    """``mypy(source)``: run mypy on ``source`` as module ``user_program``; (exit status, messages).

    Messages are ``line: severity: text``, in mypy's order.
    """
    tmp = tmp_path_factory.mktemp("typing")
    config = tmp / "mypy.ini"
    config.write_text(MYPY_INI)
    runs = iter(range(1000))

    def run(source: str) -> tuple[int, list[str]]:
        folder = tmp / f"run{next(runs)}"
        folder.mkdir()
        path = folder / "user_program.py"
        path.write_text(source)
        command = [sys.executable, "-m", "mypy", "--config-file", str(config)]
        command += ["--cache-dir", str(tmp / "cache"), "--no-error-summary", "--no-pretty", str(path)]
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=MYPY_TIMEOUT)
        assert not out.stderr, out.stderr
        prefix = f"{path}:"
        messages = [line.removeprefix(prefix) for line in out.stdout.splitlines()]
        assert all(not m.startswith("/") for m in messages), messages  # all about the program
        return out.returncode, messages

    return run


def as_pyzmq(messages: list[str]) -> list[str]:
    """mypy's messages about the greenzmq program, with pyzmq's classes for greenzmq's."""
    out = []
    for message in messages:
        for green, plain in GREEN_FOR_PYZMQ.items():
            message = message.replace(green, plain)
        out.append(message)
    return out


def both(mypy, source: str) -> tuple[tuple[int, list[str]], tuple[int, list[str]]]:
    assert source.count(GREEN_IMPORT) == 1
    return mypy(source), mypy(source.replace(GREEN_IMPORT, PYZMQ_IMPORT))


def test_user_program_type_checks_as_with_pyzmq(mypy):
    source = PROGRAM.read_text()
    code = source.split('"""', 2)[2]  # after the docstring
    assert "greenzmq" not in code.replace(GREEN_IMPORT, "")  # the one line the rewrite changes
    (green_status, green), (plain_status, plain) = both(mypy, source)
    assert [m for m in green if ": error:" in m] == [] and green_status == 0
    assert [m for m in plain if ": error:" in m] == [] and plain_status == 0
    # every reveal_type was checked (none sits in code mypy thinks unreachable)
    assert len([m for m in green if "Revealed type is" in m]) == source.count("reveal_type(")
    assert as_pyzmq(green) == plain
    # greenzmq's own classes where a user's code names them
    assert any("greenzmq.context.Context[greenzmq.socket.Socket[bytes]]" in m for m in green)


def test_mistakes_are_reported_as_with_pyzmq(mypy):
    (green_status, green), (plain_status, plain) = both(mypy, MISTAKES)
    assert green_status == plain_status == 1
    errors = [m for m in green if ": error:" in m]
    mistakes = [i for i, line in enumerate(MISTAKES.splitlines(), 1) if line.endswith("# mistake")]
    assert sorted({int(m.split(":")[0]) for m in errors}) == mistakes
    assert as_pyzmq(green) == plain
    assert any('has no attribute "Contxt"' in m for m in errors)


def test_every_facade_name_is_typed(mypy):
    """Each public name of greenzmq (pyzmq's and greenzmq's own) and each submodule its
    ``__getattr__`` reaches is known to the type checker, none as Any by accident, and
    ``from greenzmq import *`` brings what ``__all__`` says."""
    names = sorted(greenzmq.__all__)
    assert set(zmq.__all__) <= set(names)
    found = pkgutil.iter_modules(greenzmq.__path__)
    submodules = sorted({m.name for m in found if m.name[0] != "_"} - {"demo"})
    submodules += ["backend", "constants", "sugar", "utils"]  # pyzmq's, reached through greenzmq
    header = [GREEN_IMPORT, "from typing_extensions import reveal_type\n"]
    attributes = [f"reveal_type(zmq.{name})\n" for name in names + submodules]
    star = ["from greenzmq import *\n", *(f"reveal_type({name})\n" for name in names)]
    for lines in (header + attributes, header + star):
        status, messages = mypy("".join(lines))
        assert [m for m in messages if ": error:" in m] == [] and status == 0
        revealed = [m for m in messages if "Revealed type is" in m]
        assert len(revealed) == "".join(lines).count("reveal_type(")
        assert [m for m in revealed if m.endswith('Revealed type is "Any"')] == []


def test_user_program_runs():
    """The program is a real one: run under greenzmq, it does what it type-checks as."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, str(PROGRAM)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
