"""Smoke tests for the benchmark CLIs in bench/: they run with tiny sizes and print
their tables. Nothing here asserts a speed: only that every workload runs for
every competitor and produces numbers, and that the driver's failure paths
(a hung run, a competitor that cannot load) are reported instead of hanging.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.driver import Case, Outcome, Worker, WorkerError, run_cases  # noqa: E402
from bench.report import Target, paired_ratio, summary, targets_table  # noqa: E402

#: Bound on one CLI smoke run (a few seconds normally; generous for a loaded CI box).
CLI_BOUND = 150

#: The suite's own smoke mode (--quick: every workload, small sizes, as a smoke test in CI).
QUICK_SUITE = ["--quick", "--timeout", "60", "--quiet"]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=CLI_BOUND
    )


def _rows(report: str, title_start: str) -> dict[str, list[str]]:
    """The rows of the Markdown table whose bold title starts with ``title_start``."""
    block = report.split(f"**{title_start}", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in block.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


_NUMBER = re.compile(r"^[\d,.]+")


@pytest.mark.timeout(CLI_BOUND + 10)
def test_bench_core_prints_three_tables_with_numbers_for_every_competitor():
    proc = _run(
        ["bench/bench_core.py", "--reps", "2", "--messages", "300", "--round-trips", "30",
         "--clients", "5", "--requests", "3", "--quiet"]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    titles = (
        "PUSH→PULL throughput",
        "REQ/REP round trips, tcp",
        "REQ/REP round trips, client only",
        "fan-in: 5",
    )
    for title in titles:
        rows = _rows(out, title)
        assert set(rows) == {"greenzmq", "zmq.green", "ceiling"}, rows
        for name, cells in rows.items():
            assert _NUMBER.match(cells[0]), (title, name, cells)  # a median, not "failed"
            assert cells[3].endswith("×") and cells[4].endswith("×"), (title, name, cells)
    assert "| throughput ≥ 0.70× ceiling |" in out
    assert "Machine:" in out


@pytest.mark.timeout(CLI_BOUND + 10)
def test_suite_runs_every_workload_and_writes_report_json_and_chart(tmp_path):
    proc = _run(["-m", "bench", *QUICK_SUITE, "--out", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "report.md").read_text()
    assert report.strip() in proc.stdout
    raw = json.loads((tmp_path / "results.json").read_text())
    assert {c["workload"] for c in raw["cases"]} == {
        "push_pull",
        "req_rep",
        "req_rep_peer",
        "fan_in",
        "sharing",
        "idle_scale",
    }
    for key, by_competitor in raw["results"].items():
        green = by_competitor["greenzmq"]
        assert green["error"] is None and len(green["runs"]) == 1, (key, green)
        for name in ("ceiling", "zmq.asyncio", "threads"):
            outcome = by_competitor[name]
            assert outcome["error"] in (None, "n/a"), (key, name, outcome)
    idle = raw["results"]["idle_scale"]["greenzmq"]["runs"][0]
    assert set(idle) == {"cpu_percent", "rss_socket_kib", "rss_waiting_kib", "wake_all_ms"}
    assert "## Targets (greenzmq)" in report
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "no chart" in proc.stdout
    else:
        assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(CLI_BOUND + 10)
def test_suite_rejects_an_unknown_competitor():
    proc = _run(["-m", "bench", "--quick", "--competitors", "greenzmq,nonesuch", "--quiet"])
    assert proc.returncode == 2
    assert "nonesuch" in proc.stderr


@pytest.mark.timeout(60)
def test_a_hung_run_is_killed_and_reported_not_waited_for():
    worker = Worker("greenzmq")
    try:
        with pytest.raises(WorkerError, match="no answer within"):
            # far more messages than fit in the timeout: the run is cut short
            worker.run("push_pull", {"n": 10**9, "size": 100, "transport": "inproc"}, timeout=0.5)
        assert not worker.alive
    finally:
        worker.close(kill=True)


@pytest.mark.timeout(60)
def test_a_competitor_that_cannot_load_is_reported_on_every_case():
    case = Case("push_pull/100/inproc", "t", "push_pull", {"n": 50, "size": 100, "transport": "inproc"})
    results, versions = run_cases([case], ["greenzmq", "nonesuch"], reps=1, timeout=30, quiet=True)
    assert results[case.key]["greenzmq"].error is None
    assert results[case.key]["greenzmq"].runs[0]["rate"] > 0
    assert results[case.key]["nonesuch"].error.startswith("unavailable: KeyError")
    assert "nonesuch" not in versions


def test_ratios_are_paired_per_round_and_skip_failed_rounds():
    a = Outcome(runs=[{"rate": 10.0}, {"rate": 30.0}, None, {"rate": 8.0}])
    b = Outcome(runs=[{"rate": 5.0}, {"rate": 10.0}, {"rate": 1.0}, {"rate": 8.0}])
    assert paired_ratio(a, b) == 2.0  # median of 2.0, 3.0, 1.0
    assert summary(a, "rate") == (10.0, 8.0, 30.0)
    assert summary(Outcome(runs=[None]), "rate") is None


def test_targets_table_says_met_and_missed():
    results = {
        "c": {
            "greenzmq": Outcome(runs=[{"rate": 9.0, "cpu": 0.5}]),
            "ceiling": Outcome(runs=[{"rate": 10.0, "cpu": 0.1}]),
        }
    }
    table = targets_table(
        [
            Target("fast", "c", "greenzmq", "ceiling", 0.7),
            Target("faster", "c", "greenzmq", "ceiling", 0.95),
            Target("cool", "c", "greenzmq", None, 1.0, metric="cpu", kind="max"),
            Target("absent", "missing-case", "greenzmq", "ceiling", 1.0),
        ],
        results,
    )
    assert "| fast | 0.900× | met |" in table
    assert "| faster | 0.900× | **MISSED** |" in table
    assert "| cool | 0.500 | met |" in table
    assert "absent" not in table


@pytest.mark.timeout(CLI_BOUND + 10)
def test_wait_cost_prints_its_breakdown():
    proc = _run(["bench/wait_cost.py", "--n", "200", "--reps", "1"])
    assert proc.returncode == 0, proc.stderr
    for row in (
        "| greenzmq round trip |",
        "| gevent hub round trip (pipe floor / 2) |",
        "| getsockopt(EVENTS) |",
    ):
        assert row in proc.stdout
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(row))
        assert re.search(r"\| -?[\d,]+ \|$", line), line


@pytest.mark.timeout(CLI_BOUND + 10)
def test_bench_framing_prints_every_method_for_both_transports():
    proc = _run(["bench/bench_framing.py", "--reps", "1", "--messages", "200", "--frames", "2"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("# Receiving whole messages: 2 x 100 B frames") == 2
    for row in (
        "| bytes + getsockopt(RCVMORE) |",
        "| Frame + .more + .bytes |",
        "| greenzmq recv_multipart |",
        "| pyzmq recv_multipart (plain shadow) |",
        "| recv only (no framing; floor) |",
    ):
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(row)]
        assert len(lines) == 2, (row, proc.stdout)
        assert all(re.search(r"\| [\d,]+ \[[\d,]+, [\d,]+\] \| \d+\.\d\d \|$", ln) for ln in lines), lines


@pytest.mark.timeout(CLI_BOUND + 10)
def test_bench_eventloop_prints_its_three_workloads():
    proc = _run(["bench/bench_eventloop.py", "--reps", "1", "--messages", "300", "--round-trips", "30"])
    assert proc.returncode == 0, proc.stderr
    for row in (
        "| REQ/REP echo round trips/s |",
        "| PUSH→PULL messages/s |",
        "| PUSH→PULL messages/s, green loop with recv_multipart |",
    ):
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(row))
        assert re.search(r"\| \d+\.\d\d \((met|NOT met)\) \| ", line), line
        # pyzmq's own stream as a reference: numbers, or a note when tornado is missing
        assert re.search(
            r"\|\s+([\d,]+ \[[\d,]+, [\d,]+\] \| \d+\.\d\d|\((tornado not installed|row above)\) \| ) \|$",
            line,
        ), line


@pytest.mark.timeout(CLI_BOUND + 10)
def test_bench_device_prints_medians_paired_ratios_and_wake_ups_for_both_setups():
    proc = _run(
        ["bench/bench_device.py", "-n", "2000", "--repeat", "2", "--kinds", "greenzmq,steerable,libzmq"]
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"load average at start \d+\.\d\d", out) and re.search(
        r"load average at end \d+\.\d\d", out
    )
    for setup in ("processes", "threads"):
        table = out.split(f"**{setup}**", 1)[1].split("\n\n", 2)[1]
        for kind in ("greenzmq", "steerable", "libzmq", "idle hub"):
            line = next(ln for ln in table.splitlines() if ln.startswith(f"| {kind} |"))
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert re.fullmatch(r"\d+\.\d{3}", cells[3]) and re.fullmatch(r"\d+\.\d{3}", cells[4]), line
            if kind != "idle hub":
                assert re.fullmatch(r"[\d,]+ \[[\d,]+, [\d,]+\]", cells[1]), line
        for kind in ("greenzmq", "steerable"):
            assert re.search(
                rf"^{setup} {kind}: \d+% of libzmq's proxy \(rounds: \d+% to \d+%\), "
                r"wake-up p99 [+-]\d+\.\d\d ms over the idle hub$",
                out,
                re.M,
            ), out
