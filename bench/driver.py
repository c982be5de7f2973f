"""Run cases against competitors side by side, one worker process per competitor.

Every competitor lives in its own long-lived worker process
(:mod:`bench.worker`), so none can disturb another's imports, hub or memory,
and eventlet never meets gevent. The driver itself imports neither: it sends
one request at a time and blocks on the answer, so exactly one competitor runs
at any moment. Measurements are interleaved: for each case, repetition ``i``
runs every competitor once (in an order rotated each repetition) before
repetition ``i + 1`` starts, so slow drifts of a shared machine's load hit all
competitors alike, and ratios can be taken between runs of the same round.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

__all__ = ["Case", "Outcome", "WorkerError", "Worker", "Progress", "run_cases"]

ROOT = Path(__file__).resolve().parent.parent
#: How long a worker may take to import its competitor and say it is ready.
STARTUP_TIMEOUT = 60.0
#: How many trailing lines of a worker's stderr an error message quotes.
STDERR_TAIL_LINES = 8


@dataclass(frozen=True)
class Case:
    """One measurement: a workload with fixed parameters."""

    key: str  # unique, e.g. "push_pull/100B/tcp"
    title: str  # e.g. "PUSH→PULL 100 B, tcp"
    workload: str  # a name in bench.workloads.WORKLOADS
    params: dict[str, Any]
    unit: str = "msg/s"
    #: run each repetition in a new worker process (memory measurements need
    #: a heap that earlier workloads have not already grown)
    fresh: bool = False


@dataclass
class Outcome:
    """All repetitions of one case for one competitor (``None`` for a failed run)."""

    runs: list[dict[str, float] | None] = field(default_factory=list)
    error: str | None = None  # why it failed or was skipped ("n/a" if unsupported)


class WorkerError(RuntimeError):
    """A worker failed to start, died, or did not answer in time."""


class Worker:
    """One competitor's worker process, spoken to one request at a time."""

    def __init__(self, competitor: str) -> None:
        self.competitor = competitor
        self._stderr = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", competitor],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=str(ROOT),
            env=env,
        )
        self._buf = b""
        hello = self._read(STARTUP_TIMEOUT)
        if not hello.get("ready"):
            self.close()
            raise WorkerError(hello.get("error", "worker not ready"))
        self.workloads: set[str] = set(hello["workloads"])
        self.versions: dict[str, str] = hello["versions"]

    def _read(self, timeout: float) -> dict[str, Any]:
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.close(kill=True)
                raise WorkerError(f"no answer within {timeout:.0f} s (worker killed)")
            chunk = os.read(fd, 65536)
            if not chunk:
                tail = self.stderr_tail()
                self.close(kill=True)
                raise WorkerError(f"worker exited (code {self._proc.poll()}): {tail}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def run(self, workload: str, params: dict[str, Any], timeout: float) -> dict[str, float]:
        """Run one measurement; raise :class:`WorkerError` on failure or timeout."""
        self._proc.stdin.write(json.dumps({"workload": workload, "params": params}).encode() + b"\n")
        self._proc.stdin.flush()
        answer = self._read(timeout)
        if not answer["ok"]:
            raise WorkerError(answer["error"])
        return answer["metrics"]

    def stderr_tail(self) -> str:
        self._stderr.seek(0)
        lines = self._stderr.read().strip().splitlines()
        return " | ".join(lines[-STDERR_TAIL_LINES:])

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self, kill: bool = False) -> None:
        """End the worker: politely (end of input), or at once with ``kill``."""
        if kill and self.alive:
            self._proc.kill()
            self._proc.wait()
        if self.alive:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout, self._stderr):
            try:
                pipe.close()
            except OSError:  # a killed worker's stdin may refuse the final flush
                pass


class Progress:
    """One status line on stderr (rewritten in place on a terminal)."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, quiet: bool = False) -> None:
        self.total, self.done, self.stream, self.quiet = total, 0, stream, quiet
        self.tty = stream.isatty()
        self.t0 = time.monotonic()

    def step(self, text: str) -> None:
        self.done += 1
        if self.quiet:
            return
        elapsed = time.monotonic() - self.t0
        left = elapsed / self.done * (self.total - self.done)
        line = f"[{self.done:3d}/{self.total}] {elapsed:4.0f}s, ~{left:3.0f}s left  {text}"
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()


def _describe(case: Case, metrics: dict[str, float]) -> str:
    if "rate" in metrics:
        return f"{metrics['rate']:,.0f} {case.unit}"
    return ", ".join(f"{k}={v:,.2f}" for k, v in metrics.items())


def _run_fresh(name: str, case: Case, timeout: float) -> dict[str, float]:
    w = Worker(name)
    try:
        return w.run(case.workload, case.params, timeout)
    finally:
        w.close()


def run_cases(
    cases: list[Case],
    competitors: list[str],
    reps: int,
    timeout: float,
    quiet: bool = False,
) -> tuple[dict[str, dict[str, Outcome]], dict[str, dict[str, str]]]:
    """Run every case ``reps`` times for every competitor, interleaved.

    Returns ``(results, versions)``: ``results[case.key][competitor]`` is an
    :class:`Outcome`; ``versions[competitor]`` what that worker runs on. A
    competitor that cannot start (eventlet not installed) gets an error on every
    case; a run that fails or times out is recorded, its worker replaced by a
    fresh one, and later repetitions of that case are skipped for that
    competitor.
    """
    workers: dict[str, Worker | None] = {}
    versions: dict[str, dict[str, str]] = {}
    start_errors: dict[str, str] = {}

    def worker(name: str) -> Worker | None:
        if workers.get(name) is None and name not in start_errors:
            try:
                workers[name] = Worker(name)
                versions[name] = workers[name].versions
            except WorkerError as exc:
                start_errors[name] = f"unavailable: {exc}"
        return workers.get(name)

    results: dict[str, dict[str, Outcome]] = {c.key: {n: Outcome() for n in competitors} for c in cases}
    progress = Progress(len(cases) * reps * len(competitors), quiet=quiet)
    try:
        for case in cases:
            for rep in range(reps):
                k = rep % len(competitors)
                for name in competitors[k:] + competitors[:k]:
                    outcome = results[case.key][name]
                    w = worker(name)
                    label = f"{case.title} · {name} · rep {rep + 1}/{reps}"
                    if w is None:
                        outcome.error = start_errors[name]
                    elif case.workload not in w.workloads:
                        outcome.error = "n/a"
                    elif outcome.error is None:
                        try:
                            if case.fresh:
                                metrics = _run_fresh(name, case, timeout)
                            else:
                                metrics = w.run(case.workload, case.params, timeout)
                        except WorkerError as exc:
                            outcome.error = str(exc)
                            outcome.runs.append(None)
                            # a failed run may leave tasks behind (blocked on
                            # closed sockets, say): start the next case afresh
                            w.close(kill=True)
                            workers[name] = None
                            label += f" · FAILED: {exc}"
                        else:
                            outcome.runs.append(metrics)
                            label += f" · {_describe(case, metrics)}"
                    progress.step(label)
    finally:
        progress.finish()
        for w in workers.values():
            if w is not None:
                w.close()
    return results, versions
