""":class:`PeriodicCallback`: a callback every N milliseconds on an :class:`IOLoop`."""

from __future__ import annotations

import datetime
import math
import random
from typing import Any, Callable

from greenzmq.eventloop.ioloop import IOLoop, TimeoutHandle

__all__ = ["PeriodicCallback"]


class PeriodicCallback:
    """Call ``callback()`` every ``callback_time`` milliseconds while started.

    ``callback_time`` may also be a :class:`datetime.timedelta`. ``jitter``
    (0 to 1) varies each period by up to ``±jitter/2`` of it. A run that
    overruns its period skips the runs it missed instead of running them late
    in a burst. Runs in ``io_loop`` (default: the current loop at
    :meth:`start`); an exception is logged and the schedule goes on.
    Raises :class:`ValueError` for a period that is not positive, or a jitter
    outside 0..1.

    Green behaviour
    ---------------
    The callback runs in the loop's greenlet like any callback (it may make
    green blocking calls, which delay the loop and, past a period, skip runs).
    Use it from the loop's thread only.
    """

    def __init__(
        self,
        callback: Callable[[], Any],
        callback_time: float | datetime.timedelta,
        jitter: float = 0,
        *,
        io_loop: IOLoop | None = None,
    ) -> None:
        if isinstance(callback_time, datetime.timedelta):
            callback_time = callback_time / datetime.timedelta(milliseconds=1)
        if not callback_time > 0:
            raise ValueError(
                f"PeriodicCallback: callback_time must be positive (milliseconds), not {callback_time!r}"
            )
        if not 0 <= jitter <= 1:
            raise ValueError(f"PeriodicCallback: jitter must be between 0 and 1, not {jitter!r}")
        self.callback = callback
        self.callback_time = float(callback_time)
        self.jitter = jitter
        self.io_loop = io_loop
        self._running = False
        self._timeout: TimeoutHandle | None = None
        self._next_timeout = 0.0

    def start(self) -> None:
        """Start calling; the first call comes one period from now."""
        if self.io_loop is None:
            self.io_loop = IOLoop.current()
        self._running = True
        self._next_timeout = self.io_loop.time()
        self._schedule_next()

    def stop(self) -> None:
        """Stop calling (a call already queued is skipped)."""
        self._running = False
        if self._timeout is not None:
            assert self.io_loop is not None  # a run is scheduled: start() set the loop
            self.io_loop.remove_timeout(self._timeout)
            self._timeout = None

    def is_running(self) -> bool:
        return self._running

    def _run(self) -> None:
        if not self._running:
            return
        try:
            self.callback()
        except Exception:
            assert self.io_loop is not None  # it runs this: start() set it
            self.io_loop.handle_callback_exception(self.callback)
        finally:
            self._schedule_next()

    def _schedule_next(self) -> None:
        if self._running:
            assert self.io_loop is not None  # running: start() set the loop
            self._update_next(self.io_loop.time())
            self._timeout = self.io_loop.call_at(self._next_timeout, self._run)

    def _update_next(self, current_time: float) -> None:
        period = self.callback_time / 1000.0
        if self.jitter:
            period *= 1 + self.jitter * (random.random() - 0.5)
        if self._next_timeout <= current_time:
            # skip every run missed while the callback (or the loop) was busy
            self._next_timeout += (math.floor((current_time - self._next_timeout) / period) + 1) * period
