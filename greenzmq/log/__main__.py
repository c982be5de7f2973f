"""``python -m greenzmq.log URL [--topic T ...]``: print published log records.

Subscribes to a :class:`greenzmq.log.PUBHandler` (or pyzmq's) and prints one
line per record::

    12:00:01 WARNING  myapp.WARNING.db | connection lost

coloured by level when stdout is a terminal (``--color always|never`` to
force). Ctrl-C (SIGINT) or SIGTERM exits with status 0, without a traceback.
A message that is not a ``[topic, text]`` pair is reported on stderr and
skipped.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import TextIO

import gevent
import zmq

from greenzmq.context import Context

__all__ = ["main", "format_record", "level_of"]

#: ANSI colours by level (SGR codes), as most terminal log viewers use them.
COLORS = {
    "DEBUG": "\033[36m",  # cyan
    "INFO": "\033[37m",  # white
    "WARNING": "\033[33m",  # yellow
    "ERROR": "\033[31m",  # red
    "CRITICAL": "\033[1;31m",  # bold red
}
RESET = "\033[0m"
#: Width of the level column: the longest standard level name, CRITICAL.
LEVEL_WIDTH = 8
#: Frames in a PUBHandler message: topic, formatted record.
FRAMES = 2
EXIT_OK = 0
EXIT_USAGE = 2


def level_of(topic: str) -> str:
    """The log level named in ``topic`` (``"app.web.ERROR.db"`` -> ``"ERROR"``).

    The first dot-separated part that is a :mod:`logging` level name; ``""``
    if there is none. Works whatever the root topic, since pyzmq puts the
    level after it and the subtopic after the level.
    """
    for part in topic.split("."):
        if isinstance(logging.getLevelName(part), int):
            return part
    return ""


def format_record(topic: str, text: str, color: bool, timestamp: str = "") -> str:
    """One output line: ``[timestamp ]LEVEL    topic | text``."""
    level = level_of(topic)
    line = f"{timestamp}{level:<{LEVEL_WIDTH}} {topic} | {text.rstrip()}"
    code = COLORS.get(level) if color else None
    return f"{code}{line}{RESET}" if code else line


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m greenzmq.log", description="Print log records published by a zmq PUBHandler."
    )
    p.add_argument("url", nargs="+", help="endpoint(s) of the publisher, e.g. tcp://127.0.0.1:5555")
    p.add_argument(
        "-t", "--topic", action="append", default=None,
        help="only records whose topic starts with this (the handler's root_topic, "
        "or root.LEVEL); repeatable; default: everything",
    )  # fmt: skip
    p.add_argument(
        "--bind", action="store_true",
        help="bind to the URL(s) instead of connecting (handlers then connect their PUB); "
        "the bound endpoint is printed on stderr",
    )  # fmt: skip
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto", help="colour by level")
    p.add_argument("--timestamp", action="store_true", help="prefix each line with the local time")
    return p.parse_args(argv)


def _attach(sub: zmq.Socket, urls: Sequence[str], bind: bool) -> None:
    for url in urls:
        try:
            if bind:
                sub.bind(url)
                # with a wildcard port (tcp://127.0.0.1:*) this is how to find it
                print(
                    f"greenzmq.log: listening on {sub.get_string(zmq.LAST_ENDPOINT)}",
                    file=sys.stderr,
                    flush=True,
                )
            else:
                sub.connect(url)
        except zmq.ZMQError as e:
            raise zmq.ZMQError(e.errno, f"{e.strerror}: {url}") from None


def _print_records(sub: zmq.Socket, out: TextIO, color: bool, timestamp: bool) -> None:
    """Print each record until the socket is closed (by a signal) or stdout goes away."""
    while True:
        try:
            frames = sub.recv_multipart()
        except zmq.ZMQError:
            return  # closed by a signal, or the context went away
        if len(frames) != FRAMES:
            print(f"greenzmq.log: skipped a {len(frames)}-frame message (not a log record)", file=sys.stderr)
            continue
        topic, text = (f.decode("utf-8", "replace") for f in frames)
        stamp = time.strftime("%H:%M:%S ") if timestamp else ""
        try:
            print(format_record(topic, text, color, stamp), file=out, flush=True)
        except BrokenPipeError:
            # `... | head`: the reader went away. Point stdout at devnull so
            # the interpreter's final flush does not complain either.
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            return


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the subscriber until SIGINT/SIGTERM; return the exit status."""
    args = _parse(argv)
    out = out if out is not None else sys.stdout
    color = args.color == "always" or (args.color == "auto" and out.isatty())
    ctx = Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    # A signal closes the socket from the hub; the loop below then ends on
    # ENOTSOCK. Installed before connecting: once a publisher can see us, a
    # signal must already mean "exit cleanly".
    handlers = [gevent.signal_handler(sig, sub.close) for sig in (signal.SIGINT, signal.SIGTERM)]
    try:
        for topic in args.topic or [""]:
            sub.subscribe(topic.encode("utf-8"))
        try:
            _attach(sub, args.url, args.bind)
        except zmq.ZMQError as e:
            print(f"greenzmq.log: {e}", file=sys.stderr)
            return EXIT_USAGE
        _print_records(sub, out, color, args.timestamp)
    finally:
        for h in handlers:
            h.cancel()
        sub.close()
        ctx.term()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
