"""``python -m greenzmq.service``: run the ZMQ and HTTP fronts until SIGINT or SIGTERM.

The process is ``gevent.monkey.patch_all()``-ed first thing, as a gevent
server in production would be. On start it prints one line::

    greenzmq service: zmq tcp://127.0.0.1:5555 http http://127.0.0.1:8080 workers 8

SIGINT or SIGTERM stops it gracefully (:meth:`greenzmq.service.Service.stop`)
and it exits 0, or 1 if some accepted request could not be answered in time.
"""

from gevent import monkey

# Before anything else imports socket, ssl or threading for good.
monkey.patch_all()

import argparse  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402

from greenzmq.service import (  # noqa: E402
    DEFAULT_HOST,
    DEFAULT_HTTP_PORT,
    DEFAULT_STOP_TIMEOUT,
    DEFAULT_WORKERS,
    DEFAULT_ZMQ_PORT,
    Service,
    echo_handler,
)

__all__ = ["main", "parser"]

#: Milliseconds per second, for --work-ms.
MS_PER_S = 1000.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m greenzmq.service", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=DEFAULT_HOST, help="interface of the ZMQ front (default %(default)s)")
    p.add_argument(
        "--zmq-port",
        type=int,
        default=DEFAULT_ZMQ_PORT,
        help="ROUTER port, 0 = any free (default %(default)s)",
    )
    p.add_argument(
        "--http-host", default=DEFAULT_HOST, help="interface of the HTTP front (default %(default)s)"
    )
    p.add_argument(
        "--http-port",
        type=int,
        default=DEFAULT_HTTP_PORT,
        help="HTTP port, 0 = any free (default %(default)s)",
    )
    p.add_argument("--no-http", action="store_true", help="run the ZMQ front only")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="green workers (default %(default)s)")
    p.add_argument(
        "--work-ms", type=float, default=0.0, help="simulated work per request, ms (default %(default)s)"
    )
    p.add_argument(
        "--stop-timeout",
        type=float,
        default=DEFAULT_STOP_TIMEOUT,
        help="seconds to drain on stop (default %(default)s)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.workers < 1:
        parser().error("--workers must be >= 1")
    service = Service(
        host=args.host,
        zmq_port=args.zmq_port,
        http_host=args.http_host,
        http_port=None if args.no_http else args.http_port,
        workers=args.workers,
        handler=echo_handler(args.work_ms / MS_PER_S),
    )
    stop = Event()
    # Handlers first: a signal right after the banner must already stop us cleanly.
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stop.set)
    service.start()
    print(
        f"greenzmq service: zmq {service.zmq_endpoint} http {service.http_url or '-'} workers {service.workers}",
        flush=True,
    )
    stop.wait()
    answered = service.stop(args.stop_timeout)
    print(f"greenzmq service: stopped, {service.stats()}", flush=True)
    return 0 if answered else 1


if __name__ == "__main__":
    sys.exit(main())
