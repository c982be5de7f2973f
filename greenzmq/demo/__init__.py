"""``python -m greenzmq.demo``: the main job — load-test the embedded service with locust.

Starts ``python -m greenzmq.service`` (ROUTER front, green workers,
monkey-patched pywsgi HTTP front) on free loopback ports, runs a headless
locust test of :mod:`greenzmq.demo.locustfile` against it (REQ, DEALER and
HTTP users), prints locust's stats table, writes an HTML report and CSVs,
stops the service with SIGTERM, and exits:

* 0 if requests were made and none failed, and the service stopped cleanly;
* 1 if any request failed, no request was made, or locust or the service failed;
* 2 on bad arguments;
* 130 if interrupted (Ctrl-C or SIGTERM): locust is stopped with SIGINT and
  still prints its stats and writes its reports, and the service is stopped.

Arguments after ``--`` go to locust unchanged (``-- --processes 2``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Sequence

__all__ = ["main", "parser", "LOCUSTFILE", "parse_seconds", "read_totals"]

LOCUSTFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "locustfile.py")
#: A few hundred users at ~1 request/s each (the locustfile's wait time).
DEFAULT_USERS = 300
#: Users started per second: all of them within 3 s; locust warns above 100.
DEFAULT_SPAWN_RATE = 100
DEFAULT_RUN_TIME = "15s"
DEFAULT_REPORT_DIR = "greenzmq-report"
#: Seconds the service may take to print its banner (imports included, on a loaded machine).
SERVICE_START_TIMEOUT = 30.0
#: Seconds locust may run beyond --run-time (start-up, ramp, stop-timeout, report writing).
LOCUST_GRACE = 60.0
#: Seconds locust lets running tasks finish after the run time: above the users' 5 s request
#: timeout, so a request still in flight at the end completes or fails, and is recorded.
LOCUST_STOP_TIMEOUT = 6
#: Seconds the service gets to drain and exit after SIGTERM.
SERVICE_STOP_TIMEOUT = 15.0
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: The shell's convention for "ended by SIGINT" (128 + 2).
EXIT_INTERRUPTED = 130
_BANNER = re.compile(r"zmq (?P<zmq>tcp://\S+) http (?P<http>\S+)")
_TIMESPAN = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_seconds(text: str) -> int:
    """``"15"``, ``"15s"``, ``"2m"``, ``"1h30m"`` -> seconds (locust's run-time syntax); ValueError otherwise."""
    if text.isdigit():
        return int(text)
    m = _TIMESPAN.match(text)
    if not text or m is None:
        raise ValueError(f"not a run time: {text!r} (use 15, 15s, 2m or 1h30m)")
    h, mi, s = (int(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + s


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m greenzmq.demo",
        description="Load-test the embedded greenzmq service (ZMQ REQ, DEALER and HTTP users) with a "
        "headless locust run; print the stats, write an HTML report and CSVs.",
        epilog="Exit status: 0 if requests were made and none failed, 1 otherwise, 2 for bad arguments.",
    )
    p.add_argument(
        "-u", "--users", type=int, default=DEFAULT_USERS, help="simulated users (default %(default)s)"
    )
    p.add_argument(
        "-r", "--spawn-rate", type=float, default=DEFAULT_SPAWN_RATE, help="users started per second"
    )
    p.add_argument(
        "-t", "--run-time", default=DEFAULT_RUN_TIME, help="test length: 15, 15s, 2m (default %(default)s)"
    )
    p.add_argument(
        "--report-dir", default=DEFAULT_REPORT_DIR, help="where report.html, stats_*.csv, totals.json go"
    )
    p.add_argument("--html", help="HTML report path (default REPORT_DIR/report.html)")
    p.add_argument("--csv", help="CSV prefix (default REPORT_DIR/stats)")
    p.add_argument("--workers", type=int, default=8, help="the service's green workers (default %(default)s)")
    p.add_argument(
        "--work-ms", type=float, default=1.0, help="simulated work per request, ms (default %(default)s)"
    )
    p.add_argument("--no-http", action="store_true", help="load the ZMQ front only")
    p.add_argument("locust_args", nargs="*", help="after --: extra locust arguments, e.g. -- --processes 2")
    return p


def read_totals(path: str) -> tuple[int, int, float]:
    """(requests, failures, requests/s) from the totals JSON the locustfile writes at exit.

    Not from ``<prefix>_stats.csv``: locust rewrites its CSVs once a second
    while running and not at exit, so they can miss the last second.
    """
    with open(path) as f:
        totals = json.load(f)
    return int(totals["requests"]), int(totals["failures"]), float(totals["rps"])


def _start_service(args: argparse.Namespace) -> tuple[subprocess.Popen, str, str]:
    cmd = [sys.executable, "-m", "greenzmq.service", "--zmq-port", "0", "--http-port", "0"]
    cmd += ["--workers", str(args.workers), "--work-ms", str(args.work_ms)]
    if args.no_http:
        cmd.append("--no-http")
    service = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert service.stdout is not None  # stdout=PIPE
    try:
        ready, _, _ = select.select([service.stdout], [], [], SERVICE_START_TIMEOUT)
        line = service.stdout.readline() if ready else ""
    except BaseException:
        service.kill()
        service.wait()
        raise
    m = _BANNER.search(line)
    if m is None:
        service.kill()
        service.wait()
        raise RuntimeError(f"the service did not start (output {line!r}, exit code {service.returncode})")
    print(line.rstrip(), flush=True)
    return service, m["zmq"], m["http"]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _default_sigint() -> None:
    # In locust's child process: a SIGINT ignored by our parent (a background job) must not stay
    # ignored in locust, which is stopped with SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait(proc: subprocess.Popen, name: str, timeout: float) -> int:
    """proc's exit status; killed (and EXIT_FAILED) if it runs past ``timeout`` seconds."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"greenzmq demo: {name} did not finish in time; killed", flush=True)
        proc.kill()
        proc.wait()
        return EXIT_FAILED


def _stop_service(service: subprocess.Popen) -> int:
    service.send_signal(signal.SIGTERM)
    try:
        out, _ = service.communicate(timeout=SERVICE_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        service.kill()
        out, _ = service.communicate()
        print("greenzmq demo: the service did not stop on SIGTERM in time; killed", flush=True)
    print((out or "").rstrip(), flush=True)
    return service.returncode


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if importlib.util.find_spec("locust") is None:
        p.error("locust is not installed: pip install 'greenzmq[load]' (or pip install locust)")
    try:
        run_s = parse_seconds(args.run_time)
    except ValueError as e:
        p.error(str(e))
    if args.users < 1 or run_s < 1:
        p.error("--users and --run-time must be at least 1")
    os.makedirs(args.report_dir, exist_ok=True)
    html = args.html or os.path.join(args.report_dir, "report.html")
    csv_prefix = args.csv or os.path.join(args.report_dir, "stats")
    totals_json = os.path.join(args.report_dir, "totals.json")
    for stale in (totals_json, html):  # so that a run which fails to write them cannot pass off old ones
        if os.path.exists(stale):
            os.remove(stale)
    # Ctrl-C reaches only this process (the children run in sessions of their own), and SIGTERM
    # is handled like it: locust is then asked to stop (it still prints and writes its reports),
    # and the service is always stopped, so nothing is left running.
    signal.signal(signal.SIGTERM, _interrupt)
    service, zmq_endpoint, http_url = _start_service(args)
    locust_rc = service_rc = EXIT_FAILED
    interrupted = False
    try:
        cmd = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless", "--only-summary"]
        cmd += ["-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{run_s}s"]
        cmd += ["--stop-timeout", str(LOCUST_STOP_TIMEOUT), "--exit-code-on-error", str(EXIT_FAILED)]
        cmd += ["--zmq-endpoint", zmq_endpoint, "--http-url", "" if args.no_http else http_url]
        cmd += ["--csv", csv_prefix, "--html", html, "--totals-json", totals_json, *args.locust_args]
        locust = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_default_sigint)
        try:
            locust_rc = _wait(locust, "locust", run_s + LOCUST_GRACE)
        except KeyboardInterrupt:
            interrupted = True
            print("greenzmq demo: interrupted, stopping locust", flush=True)
            # SIGINT, not SIGTERM: on SIGINT locust still writes its HTML report.
            locust.send_signal(signal.SIGINT)
            locust_rc = _wait(locust, "locust", LOCUST_GRACE)
    finally:
        service_rc = _stop_service(service)
    try:
        requests, failures, rps = read_totals(totals_json)
    except (OSError, ValueError) as e:
        print(f"greenzmq demo: FAILED, no stats ({e})", flush=True)
        return EXIT_FAILED
    ok = requests > 0 and failures == 0 and locust_rc == 0 and service_rc == 0 and not interrupted
    verdict = "INTERRUPTED" if interrupted else "OK" if ok else "FAILED"
    print(
        f"greenzmq demo: {verdict}: {requests} requests, {failures} failures, {rps:.0f} req/s; "
        f"locust exit {locust_rc}, service exit {service_rc}; report {html}, CSVs {csv_prefix}_*.csv",
        flush=True,
    )
    return EXIT_INTERRUPTED if interrupted else EXIT_OK if ok else EXIT_FAILED
