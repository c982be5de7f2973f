"""pytest plugin for the pyzmq suite run (loaded with ``-p pyzmq_suite_plugin``).

- refuses to run unless ``zmq.green`` is greenzmq (sitecustomize.py failing to
  import greenzmq only prints a line, and the run would test pyzmq's zmq.green);
- deselects the tests listed in pyzmq_suite_deselect.DESELECT, printing each
  with its reason, and records entries that name no collected test (stale);
- writes every test's outcome to the JSON file named by $PYZMQ_SUITE_REPORT,
  after each test, and the test it is running, so a run killed by the
  wall-clock limit still tells what it finished and where it hung. pyzmq_suite_summary.py reads these files.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from pyzmq_suite_deselect import DESELECT

_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


class _Recorder:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.tests: dict[str, dict] = {}
        self.deselected: dict[str, str] = {}
        self.stale: list[str] = []
        self.collected_files: list[str] = []
        self.running: str | None = None
        self.exitstatus: int | None = None

    def dump(self) -> None:
        if not self.path:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "tests": self.tests,
                    "deselected": self.deselected,
                    "stale": self.stale,
                    "collected_files": self.collected_files,
                    "running": self.running,
                    "exitstatus": self.exitstatus,
                },
                f,
                indent=1,
            )
        os.replace(tmp, self.path)


_rec = _Recorder(os.environ.get("PYZMQ_SUITE_REPORT"))


def pytest_configure(config: pytest.Config) -> None:
    import zmq

    import greenzmq

    if sys.modules.get("zmq.green") is not greenzmq or getattr(zmq, "green", None) is not greenzmq:
        raise pytest.UsageError(
            "zmq.green is not greenzmq: put scripts/pyzmq_suite on PYTHONPATH so that its "
            "sitecustomize.py runs (python -c 'import sitecustomize' shows why it fails)"
        )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    keep, dropped = [], []
    for item in items:
        (dropped if item.nodeid in DESELECT else keep).append(item)
    # an entry for a file this run selected tests from, that matches none of
    # them, names a test that pyzmq renamed or removed
    files = sorted({item.nodeid.split("::", 1)[0] for item in items})
    seen = {item.nodeid for item in dropped}
    _rec.collected_files = files
    _rec.stale = [n for n in DESELECT if n.split("::", 1)[0] in files and n not in seen]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    _rec.deselected = {item.nodeid: DESELECT[item.nodeid] for item in dropped}
    _rec.dump()


def _skip_reason(report: pytest.TestReport) -> str:
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2]).removeprefix("Skipped: ")
    return str(lr)


def _failure_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return f"{crash.message.splitlines()[0] if crash.message else ''} ({os.path.basename(crash.path)}:{crash.lineno})"
    return str(report.longrepr).strip().splitlines()[-1] if report.longrepr else ""


def pytest_runtest_logstart(nodeid: str, location: tuple) -> None:
    _rec.running = nodeid  # still set if the wall-clock limit kills the process
    _rec.dump()


def pytest_runtest_logfinish(nodeid: str, location: tuple) -> None:
    _rec.running = None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        if report.outcome == "failed":
            outcome = "failed" if report.when == "call" else "error"
            detail = f"{report.when}: {_failure_line(report)}"
        elif report.outcome == "skipped":
            outcome, detail = "skipped", _skip_reason(report)
        else:
            outcome, detail = "passed", ""
        old = _rec.tests.get(report.nodeid)
        if old is None or _RANK[outcome] > _RANK[old["outcome"]]:
            _rec.tests[report.nodeid] = {"outcome": outcome, "detail": detail}
        _rec.tests[report.nodeid]["duration"] = round(
            _rec.tests[report.nodeid].get("duration", 0) + report.duration, 3
        )
        _rec.dump()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _rec.exitstatus = int(exitstatus)
    _rec.dump()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    tr = terminalreporter
    if _rec.deselected:
        tr.section("deselected by scripts/pyzmq_suite/pyzmq_suite_deselect.py")
        for nodeid, reason in _rec.deselected.items():
            tr.write_line(f"{nodeid}: {reason}")
    if _rec.stale:
        tr.section("STALE deselections (no such test)", red=True)
        for nodeid in _rec.stale:
            tr.write_line(nodeid)
