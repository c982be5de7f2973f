"""greenzmq's benchmarks: competitors run side by side, one worker process each.

* ``python bench/bench_core.py`` -- the core comparison (greenzmq,
  ``zmq.green``, the single-thread ceiling), under a minute.
* ``python -m bench`` -- the full suite (more workloads and competitors, a
  Markdown report and a PNG chart); ``--quick`` for a smoke run.

Modules: :mod:`bench.workloads` (the blocking-style code every green and
threaded competitor runs), :mod:`bench.ceiling` and :mod:`bench.aio` (the same
workloads for plain non-blocking pyzmq and ``zmq.asyncio``),
:mod:`bench.competitors`, :mod:`bench.worker`, :mod:`bench.driver` (processes,
interleaving, timeouts, progress) and :mod:`bench.report` (tables, targets,
chart).
"""

__all__: list[str] = []
