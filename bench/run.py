"""The full benchmark suite: every competitor, every workload, one run.

Run from the repository root::

    python -m bench                         # full run: a few minutes on 2 cores
    python -m bench --quick                 # smoke run: every workload, tiny sizes, < 1 min
    python -m bench --out results/          # also write report.md, results.json, chart.png

Competitors (each in its own worker process, see :mod:`bench.driver`):
greenzmq, pyzmq's ``zmq.green``, eventlet's green zmq (skipped with a note
when eventlet is not installed), ``zmq.asyncio``, plain blocking pyzmq with
one OS thread per peer, and the single-thread ceiling (plain pyzmq
``DONTWAIT`` calls and ``zmq.poll`` in one thread).

Workloads: PUSH→PULL throughput (100 B and 64 KiB, tcp loopback and inproc),
REQ/REP round trips (both ends in the competitor's code, and the client alone
against a shared external peer process), fan-in (100 DEALER clients → ROUTER
echo), sharing
(10,000 tasks on 100 sockets vs 100 tasks on 100 sockets) and idle scale
(1,000 sockets waiting in recv: CPU while idle, RSS per socket, time to wake
all; each repetition in a fresh process).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.competitors import COMPETITORS, DESCRIPTIONS  # noqa: E402
from bench.driver import Case, Outcome, run_cases  # noqa: E402
from bench.report import (  # noqa: E402
    Target,
    chart,
    machine,
    metrics_table,
    rate_table,
    scale_table,
    targets_table,
)

__all__ = ["SIZES", "QUICK_SIZES", "cases", "targets", "render", "main"]

SMALL, LARGE = 100, 64 * 1024

#: Default sizes: about 3-6 minutes for all six competitors on a 2-core machine.
SIZES = {
    "reps": 5,
    "small_messages": 100_000,
    "large_messages": 5_000,
    "round_trips": 5_000,
    "clients": 100,
    "requests": 50,
    "tasks": 10_000,
    "sockets": 100,
    "shared_round_trips": 20_000,
    "idle_sockets": 1_000,
    "idle_seconds": 2.0,
}
#: --quick: every workload runs and produces numbers, in well under a minute.
QUICK_SIZES = {
    "reps": 1,
    "small_messages": 5_000,
    "large_messages": 200,
    "round_trips": 300,
    "clients": 20,
    "requests": 5,
    "tasks": 200,
    "sockets": 20,
    "shared_round_trips": 1_000,
    "idle_sockets": 100,
    "idle_seconds": 0.3,
}

SHARING_METRICS = (
    ("rate", "many tasks (round trips/s)", "{:,.0f}"),
    ("rate_one_per_socket", "one task per socket (round trips/s)", "{:,.0f}"),
    ("scaling", "many / one per socket", "{:.2f}"),
)


def cases(z: dict[str, float]) -> list[Case]:
    """Every case of the suite for the sizes ``z`` (see :data:`SIZES`)."""
    out = []
    for size, n in ((SMALL, z["small_messages"]), (LARGE, z["large_messages"])):
        for transport in ("tcp", "inproc"):
            label = "100 B" if size == SMALL else "64 KiB"
            out.append(
                Case(
                    f"push_pull/{size}/{transport}",
                    f"PUSH→PULL {label}, {transport}, {n:,} messages",
                    "push_pull",
                    {"n": n, "size": size, "transport": transport},
                )
            )
    for transport in ("tcp", "inproc"):
        out.append(
            Case(
                f"req_rep/{transport}",
                f"REQ/REP round trips, {transport}, {z['round_trips']:,}",
                "req_rep",
                {"n": z["round_trips"], "size": SMALL, "transport": transport},
                unit="round trips/s",
            )
        )
    out.append(
        Case(
            "req_rep_peer/tcp",
            f"REQ/REP round trips, client only, to a shared external peer process, tcp, {z['round_trips']:,}",
            "req_rep_peer",
            {"n": z["round_trips"], "size": SMALL},
            unit="round trips/s",
        )
    )
    out.append(
        Case(
            "fan_in/tcp",
            f"fan-in: {z['clients']} DEALER clients × {z['requests']} → ROUTER echo, tcp",
            "fan_in",
            {"clients": z["clients"], "n": z["requests"], "size": SMALL, "transport": "tcp"},
            unit="round trips/s",
        )
    )
    out.append(
        Case(
            "sharing/tcp",
            f"sharing: {z['tasks']:,} tasks on {z['sockets']} DEALERs vs {z['sockets']} tasks, "
            f"{z['shared_round_trips']:,} round trips each way, tcp",
            "sharing",
            {
                "tasks": z["tasks"],
                "sockets": z["sockets"],
                "total": z["shared_round_trips"],
                "size": SMALL,
                "transport": "tcp",
            },
            unit="round trips/s",
        )
    )
    out.append(
        Case(
            "idle_scale",
            f"idle scale: {z['idle_sockets']:,} sockets waiting in recv, {z['idle_seconds']} s idle, inproc",
            "idle_scale",
            {"sockets": z["idle_sockets"], "idle_seconds": z["idle_seconds"]},
            fresh=True,
        )
    )
    return out


def targets() -> list[Target]:
    """The suite's targets for greenzmq."""
    push = f"push_pull/{SMALL}/tcp"
    return [
        Target("one-way throughput ≥ 0.70× ceiling (100 B, tcp)", push, "greenzmq", "ceiling", 0.70),
        Target("one-way throughput ≥ 4× zmq.green (100 B, tcp)", push, "greenzmq", "zmq.green", 4.0),
        Target("round trips ≥ 0.95× ceiling (tcp)", "req_rep/tcp", "greenzmq", "ceiling", 0.95),
        Target(
            "round trips ≥ 0.95× ceiling (tcp, external peer)",
            "req_rep_peer/tcp",
            "greenzmq",
            "ceiling",
            0.95,
        ),
        Target("fan-in ≥ 1.3× zmq.green", "fan_in/tcp", "greenzmq", "zmq.green", 1.3),
        Target("fan-in ≥ 1.0× blocking threads", "fan_in/tcp", "greenzmq", "threads", 1.0),
        Target(
            "many tasks on the sockets ≥ 0.7× one task per socket",
            "sharing/tcp",
            "greenzmq",
            None,
            0.7,
            metric="scaling",
            kind="min",
        ),
        Target(
            "idle CPU < 1% of one core", "idle_scale", "greenzmq", None, 1.0, metric="cpu_percent", kind="max"
        ),
        Target(
            "RSS per idle socket ≤ 1.5× plain pyzmq (socket alone)",
            "idle_scale",
            "greenzmq",
            "ceiling",
            1.5,
            metric="rss_socket_kib",
            kind="ratio_max",
        ),
        Target(
            "RSS per idle socket ≤ 1.5× plain pyzmq (socket + its greenlet waiting in recv)",
            "idle_scale",
            "greenzmq",
            "ceiling",
            1.5,
            metric="rss_waiting_kib",
            kind="ratio_max",
        ),
    ]


def render(
    all_cases: list[Case],
    results: dict[str, dict[str, Outcome]],
    versions: dict[str, dict[str, str]],
    reps: int,
) -> str:
    """The whole Markdown report."""
    parts = [f"# greenzmq benchmark suite ({reps} repetitions each: median [min, max])", ""]
    parts.append("Competitors:")
    parts += [f"- **{n}**: {DESCRIPTIONS[n]}" for n in next(iter(results.values()))]
    parts.append("")
    for case in all_cases:
        if case.workload == "idle_scale":
            parts.append(scale_table(case, results[case.key]))
        elif case.workload == "sharing":
            parts.append(metrics_table(case, results[case.key], SHARING_METRICS))
        else:
            parts.append(rate_table(case, results[case.key]))
        parts.append("")
    parts.append(
        "Ratios are medians of per-round ratios: in each round every competitor ran the case "
        "once, back to back, in a rotated order.\n"
    )
    parts.append("## Targets (greenzmq)\n")
    parts.append(targets_table(targets(), results))
    parts.append("")
    parts.append(machine(versions))
    return "\n".join(parts) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repetition: a smoke run")
    for key, value in SIZES.items():
        p.add_argument("--" + key.replace("_", "-"), type=type(value), default=None, help=f"default {value}")
    p.add_argument("--competitors", default=",".join(COMPETITORS), help="comma-separated subset")
    p.add_argument(
        "--only",
        default="",
        help="comma-separated workloads to run (default: all): push_pull, req_rep, req_rep_peer, "
        "fan_in, sharing, idle_scale",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before a run counts as hung")
    p.add_argument("--out", default="", help="directory for report.md, results.json and chart.png")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    z = dict(QUICK_SIZES if args.quick else SIZES)
    for key in SIZES:
        if getattr(args, key) is not None:
            z[key] = getattr(args, key)
    all_cases = cases(z)
    if args.only:
        wanted = set(args.only.split(","))
        all_cases = [c for c in all_cases if c.workload in wanted]
    names = [n for n in args.competitors.split(",") if n]
    unknown = [n for n in names if n not in COMPETITORS]
    if unknown:
        print(f"unknown competitor(s) {unknown}; choose from {list(COMPETITORS)}", file=sys.stderr)
        return 2
    results, versions = run_cases(all_cases, names, int(z["reps"]), args.timeout, quiet=args.quiet)
    report = render(all_cases, results, versions, int(z["reps"]))
    print(report)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(report)
        raw = {
            "sizes": z,
            "versions": versions,
            "cases": [asdict(c) for c in all_cases],
            "results": {k: {n: asdict(o) for n, o in v.items()} for k, v in results.items()},
        }
        (out / "results.json").write_text(json.dumps(raw, indent=1))
        problem = chart(all_cases, results, str(out / "chart.png"))
        print(problem or f"wrote {out / 'report.md'}, {out / 'results.json'}, {out / 'chart.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
