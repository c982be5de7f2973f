"""greenzmq's core speed vs pyzmq's zmq.green and the single-thread ceiling.

Run from the repository root::

    python bench/bench_core.py            # defaults: under a minute on 2 cores
    python bench/bench_core.py --reps 7 --messages 200000

One run prints, side by side, for greenzmq, ``zmq.green`` and plain pyzmq
non-blocking calls in one thread (the ceiling for single-threaded code):

* PUSH→PULL throughput of 100-byte messages over tcp loopback;
* REQ/REP round trips over tcp loopback (both ends in the competitor's code),
  and as a cross-check the client alone against a shared external peer
  process (:mod:`bench.peer`, plain blocking pyzmq, always tcp);
* 100 concurrent DEALER clients against one ROUTER echo over tcp loopback.

greenzmq and zmq.green run the very same blocking-style code
(:mod:`bench.workloads`); the ceiling is the fastest one-thread code for the
same pattern (:mod:`bench.ceiling`). Each competitor runs in its own worker
process, repetitions interleaved (see :mod:`bench.driver`); each number is the
median of the repetitions with min and max, and ratios are paired per round.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.driver import Case, run_cases  # noqa: E402
from bench.report import Target, machine, rate_table, targets_table  # noqa: E402

__all__ = ["COMPETITORS", "cases", "targets", "main"]

COMPETITORS = ["greenzmq", "zmq.green", "ceiling"]
#: Message size of every workload: small messages, where per-call overhead shows.
MESSAGE_SIZE = 100


def cases(messages: int, round_trips: int, clients: int, requests: int, transport: str) -> list[Case]:
    """The three core workloads (plus the external-peer round trip) with the given sizes."""
    return [
        Case(
            f"push_pull/{MESSAGE_SIZE}B/{transport}",
            f"PUSH→PULL throughput, {MESSAGE_SIZE} B, {transport}, {messages:,} messages",
            "push_pull",
            {"n": messages, "size": MESSAGE_SIZE, "transport": transport},
        ),
        Case(
            f"req_rep/{transport}",
            f"REQ/REP round trips, {transport}, {round_trips:,} round trips",
            "req_rep",
            {"n": round_trips, "size": MESSAGE_SIZE, "transport": transport},
            unit="round trips/s",
        ),
        Case(
            "req_rep_peer/tcp",
            f"REQ/REP round trips, client only, to a shared external peer process, tcp, {round_trips:,}",
            "req_rep_peer",
            {"n": round_trips, "size": MESSAGE_SIZE},
            unit="round trips/s",
        ),
        Case(
            f"fan_in/{clients}/{transport}",
            f"fan-in: {clients} DEALER clients × {requests} requests → ROUTER echo, {transport}",
            "fan_in",
            {"clients": clients, "n": requests, "size": MESSAGE_SIZE, "transport": transport},
            unit="round trips/s",
        ),
    ]


def targets(all_cases: list[Case]) -> list[Target]:
    """The core's targets for greenzmq."""
    push, rtt, peer, fan = (c.key for c in all_cases)
    return [
        Target("throughput ≥ 0.70× ceiling", push, "greenzmq", "ceiling", 0.70),
        Target("round trips ≥ 0.95× ceiling", rtt, "greenzmq", "ceiling", 0.95),
        Target("round trips ≥ 0.95× ceiling (external peer)", peer, "greenzmq", "ceiling", 0.95),
        Target("fan-in ≥ 1.3× zmq.green", fan, "greenzmq", "zmq.green", 1.3),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=7, help="repetitions per competitor (default 7)")
    p.add_argument("--messages", type=int, default=100_000, help="PUSH→PULL messages per run")
    p.add_argument("--round-trips", type=int, default=5_000, help="REQ/REP round trips per run")
    p.add_argument("--clients", type=int, default=100, help="concurrent DEALER clients in fan-in")
    p.add_argument("--requests", type=int, default=50, help="round trips per fan-in client per run")
    p.add_argument("--transport", choices=["tcp", "inproc"], default="tcp")
    p.add_argument("--competitors", default=",".join(COMPETITORS), help="comma-separated subset")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before a run counts as hung")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    all_cases = cases(args.messages, args.round_trips, args.clients, args.requests, args.transport)
    names = [n for n in args.competitors.split(",") if n]
    results, versions = run_cases(all_cases, names, args.reps, args.timeout, quiet=args.quiet)
    print(f"# greenzmq core benchmark ({args.reps} repetitions, median [min, max])\n")
    for case in all_cases:
        print(rate_table(case, results[case.key]))
        print()
    print("Ratios are medians of per-round ratios (competitors run back to back in each round).\n")
    print(targets_table(targets(all_cases), results))
    print()
    print(machine(versions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
