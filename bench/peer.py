"""A shared external peer: ``python -m bench.peer COUNT`` (plain blocking pyzmq).

Binds a REP socket to a random tcp loopback port, prints the endpoint on one
line of stdout, echoes exactly ``COUNT`` requests and exits. Every competitor's
``req_rep_peer`` workload talks to this same program, so the far side of the
round trip is identical for all of them and only the measured client differs.
"""

from __future__ import annotations

import sys

import zmq

__all__ = ["main"]


def main(argv: list[str]) -> int:
    count = int(argv[0])
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.linger = 0
    rep.bind("tcp://127.0.0.1:*")
    print(rep.getsockopt(zmq.LAST_ENDPOINT).decode(), flush=True)
    for _ in range(count):
        rep.send(rep.recv())
    rep.close()
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
