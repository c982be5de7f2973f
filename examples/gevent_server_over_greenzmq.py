"""A monkey-patched gevent.pywsgi server whose handlers ask ZeroMQ workers, through greenzmq.

    python examples/gevent_server_over_greenzmq.py              # http://127.0.0.1:8080 until Ctrl-C or SIGTERM
    curl -s -d hello http://127.0.0.1:8080/                     # -> HELLO
    python examples/gevent_server_over_greenzmq.py --self-test  # free port, 20 concurrent requests, exit

The pattern without greenzmq.service's machinery: each handler opens a REQ
socket over inproc, with RCVTIMEO as its deadline (greenzmq honours it, and
only the handler's greenlet waits); a green ``zmq.proxy`` moves requests to
the REP workers, whose ``time.sleep`` is gevent's after ``patch_all()``.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402  (green threads after patch_all)

import gevent  # noqa: E402
from gevent import pywsgi  # noqa: E402
from gevent.event import Event  # noqa: E402

import greenzmq as zmq  # noqa: E402

FRONT, BACK = "inproc://front", "inproc://back"
WORKERS = 4
#: Simulated work per request, seconds.
WORK_S = 0.05
#: A handler's deadline for the worker's reply, ms.
REPLY_TIMEOUT_MS = 2000
SELF_TEST_REQUESTS = 20

ctx = zmq.Context()


def worker() -> None:
    sock = ctx.socket(zmq.REP)
    sock.connect(BACK)
    while True:
        body = sock.recv()
        time.sleep(WORK_S)  # patched: blocks this greenlet only
        sock.send(body.upper())


def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) or b"empty"
    with ctx.socket(zmq.REQ) as sock:
        sock.linger = 0
        sock.rcvtimeo = REPLY_TIMEOUT_MS
        sock.connect(FRONT)
        sock.send(body)
        try:
            status, reply = "200 OK", sock.recv()
        except zmq.Again:
            status, reply = "504 Gateway Timeout", b"no reply"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(reply)))])
    return [reply]


def self_test(url: str) -> int:
    def post(i: int) -> bytes:
        with urllib.request.urlopen(url, data=b"req-%d" % i, timeout=10) as resp:
            return resp.read()

    start = time.monotonic()
    with ThreadPoolExecutor(SELF_TEST_REQUESTS) as pool:
        replies = list(pool.map(post, range(SELF_TEST_REQUESTS)))
    ok = replies == [b"REQ-%d" % i for i in range(SELF_TEST_REQUESTS)]
    print(f"{len(replies)} replies in {time.monotonic() - start:.2f} s: {'ok' if ok else replies}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    front, back = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    front.bind(FRONT)
    back.bind(BACK)
    greenlets = [gevent.spawn(zmq.proxy, front, back)] + [gevent.spawn(worker) for _ in range(WORKERS)]
    server = pywsgi.WSGIServer(("127.0.0.1", 0 if args.self_test else args.port), app, log=None)
    server.start()
    url = f"http://127.0.0.1:{server.server_port}/"
    if args.self_test:
        status = self_test(url)
    else:
        print(f"serving on {url}", flush=True)
        stop = Event()
        gevent.signal_handler(signal.SIGINT, stop.set)
        gevent.signal_handler(signal.SIGTERM, stop.set)
        stop.wait()
        status = 0
    server.stop(timeout=1)
    gevent.killall(greenlets)
    ctx.destroy(linger=0)
    return status


if __name__ == "__main__":
    sys.exit(main())
