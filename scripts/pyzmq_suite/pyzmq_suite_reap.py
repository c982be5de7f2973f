"""Kill what a finished pytest process left running in its process group.

    python pyzmq_suite_reap.py PGID

timeout(1) runs pytest in a process group of its own; a child that pytest
forked and never reaped (a test's forked child hanging in term(), say) is still
in that group after pytest exits. Prints how many live processes were found and
SIGKILLed (zombies are dead already and not counted). Reads /proc (Linux),
so it needs no procps.
"""

import os
import signal
import sys


def reap(pgid: int) -> int:
    me = os.getpid()
    killed = 0
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
        fields = stat[stat.rindex(")") + 2 :].split()
        state, group = fields[0], int(fields[2])
        if group != pgid or state in ("Z", "X"):
            continue
        try:
            os.kill(int(name), signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


if __name__ == "__main__":
    print(reap(int(sys.argv[1])))
