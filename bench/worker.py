"""One competitor's worker process: ``python -m bench.worker NAME``.

Protocol (one JSON object per line): the worker first prints
``{"ready": true, "workloads": [...], "versions": {...}}`` (or
``{"ready": false, "error": ...}`` when the competitor cannot be imported),
then for each request ``{"workload": W, "params": {...}}`` read from stdin it
runs the workload once and prints ``{"ok": true, "metrics": {...}}`` or
``{"ok": false, "error": ...}``. It exits at end of input. Results go to the
original stdout; anything a library prints goes to stderr.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import traceback

__all__ = ["main"]


def main(argv: list[str]) -> int:
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # stray prints must not corrupt the protocol

    def reply(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    from bench.competitors import load, versions

    try:
        table = load(argv[0])
    except Exception as exc:
        reply({"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    reply({"ready": True, "workloads": sorted(table), "versions": versions()})
    for line in sys.stdin:
        request = json.loads(line)
        gc.collect()
        try:
            metrics = table[request["workload"]](**request["params"])
        except Exception as exc:
            traceback.print_exc()
            reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        else:
            reply({"ok": True, "metrics": metrics})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
