"""Summarize a pyzmq suite run: a line per pytest process, then failures,
problems, deselections, skips and the total. Exits 1 if anything failed.

    python pyzmq_suite_summary.py RESULTS_DIR

RESULTS_DIR/runs.tsv has one line per pytest process, written by the runner:
label, exit code, seconds, leaked processes, file timeout, JSON report (from
pyzmq_suite_plugin.py; may be missing or partial after a timeout), log file.
Writes RESULTS_DIR/not-passed.txt (label, log file) for the runner to print.

"failed" in the total counts failed tests and errors, plus one for every
problem of a whole process: a timeout, an unexpected pytest exit code, a
process left running, a stale deselection or a skip not listed in
pyzmq_suite_deselect.PYZMQ_SKIPS; and one for each entry of those lists that
docs/pyzmq-suite.md does not name.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pyzmq_suite_deselect import DESELECT, PYZMQ_SKIPS

DOC = Path(__file__).resolve().parents[2] / "docs" / "pyzmq-suite.md"
TIMEOUT_CODES = {124, 137}  # timeout(1): limit reached; 128+SIGKILL after --kill-after


def main(results: Path) -> int:
    runs = [line.rstrip("\n").split("\t") for line in (results / "runs.tsv").read_text().splitlines() if line]
    totals = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    failures: list[str] = []
    problems: list[str] = []
    deselected: dict[str, str] = {}
    listed_skips_ran: list[str] = []
    logs_to_show: list[tuple[str, str]] = []
    wall = 0.0

    print(
        f"{'run':<28} {'result':<8} {'passed':>6} {'failed':>6} {'skipped':>7} {'deselected':>10} {'time':>7}"
    )
    for label, rc_s, secs_s, leaked_s, limit_s, report_path, log_path in runs:
        rc, secs, leaked = int(rc_s), float(secs_s), int(leaked_s)
        wall += secs
        try:
            report = json.loads(Path(report_path).read_text())
        except (OSError, ValueError):
            report = {"tests": {}, "deselected": {}, "stale": []}
        counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
        for nodeid, t in sorted(report["tests"].items()):
            counts[t["outcome"]] += 1
            if t["outcome"] in ("failed", "error"):
                failures.append(f"{nodeid} [{t['outcome']}] {t['detail']}")
            elif t["outcome"] == "skipped" and nodeid not in PYZMQ_SKIPS:
                problems.append(f"{label}: skip not listed in PYZMQ_SKIPS: {nodeid}: {t['detail']}")
        for nodeid in PYZMQ_SKIPS:
            t = report["tests"].get(nodeid)
            if t is not None and t["outcome"] != "skipped":
                listed_skips_ran.append(f"{nodeid} ({t['outcome']})")
        deselected.update(report["deselected"])
        for nodeid in report["stale"]:
            problems.append(f"{label}: stale deselection, no such test: {nodeid}")
        if limit_s == "0":
            problems.append(f"{label}: not run, the total time limit was used up")
            result = "NOT RUN"
        elif rc in TIMEOUT_CODES:
            where = f"while running {report['running']}" if report.get("running") else "(no test running)"
            problems.append(
                f"{label}: killed at the wall-clock limit of {limit_s} s {where}, after "
                f"{len(report['tests'])} finished tests (pytest exit {rc})"
            )
            result = "TIMEOUT"
        elif rc not in (0, 1) or (rc == 1 and not counts["failed"] + counts["error"]):
            problems.append(f"{label}: pytest exited {rc} (0 or 1 expected, 1 only with failed tests)")
            result = "ERROR"
        else:
            result = "ok" if rc == 0 else "FAILED"
        if leaked:
            problems.append(f"{label}: left {leaked} process(es) running after pytest exited (killed them)")
        n_problems = sum(1 for p in problems if p.startswith(f"{label}: "))
        if n_problems and result == "ok":
            result = "FAILED"
        if result != "ok":
            logs_to_show.append((label, log_path))
        for k in totals:
            totals[k] += counts[k]
        print(
            f"{label:<28} {result:<8} {counts['passed']:>6} {counts['failed'] + counts['error']:>6} "
            f"{counts['skipped']:>7} {len(report['deselected']):>10} {secs:>6.1f}s"
        )

    doc = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    for nodeid in [*DESELECT, *PYZMQ_SKIPS]:
        if nodeid not in doc:
            problems.append(
                f"docs/pyzmq-suite.md does not list {nodeid} (it mirrors pyzmq_suite_deselect.py)"
            )

    if failures:
        print("\nFailed tests:")
        for f in failures:
            print(f"  {f}")
    if problems:
        print("\nProblems:")
        for p in problems:
            print(f"  {p}")
    print(
        f"\nDeselected ({len(deselected)}, scripts/pyzmq_suite/pyzmq_suite_deselect.py, docs/pyzmq-suite.md):"
    )
    for nodeid, reason in deselected.items():
        print(f"  {nodeid}\n      {reason}")
    stale = {line.rsplit(": ", 1)[-1] for line in problems if "stale deselection" in line}
    missing = [n for n in DESELECT if n not in deselected and n not in stale]
    if missing:
        # the file was not run to collection (timeout, crash): not a problem of its own
        print("  not reached: " + ", ".join(missing))
    print(f"Skipped by pyzmq's own code: {totals['skipped']}, reasons in PYZMQ_SKIPS and docs/pyzmq-suite.md")
    for s in listed_skips_ran:
        print(f"  note: listed skip ran instead of skipping: {s}")
    # the runner prints these logs before this summary
    (results / "not-passed.txt").write_text("".join(f"{label}\t{log}\n" for label, log in logs_to_show))

    failed = totals["failed"] + totals["error"] + len(problems)
    print(f"\ntotal: {len(runs)} pytest processes, {wall:.0f} s of test time")
    print(f"pyzmq-suite: {totals['passed']} passed, {failed} failed, {totals['skipped']} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
