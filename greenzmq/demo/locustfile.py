"""The demo's locustfile: users of the ZMQ front (REQ and DEALER) and of the HTTP front.

Run by ``python -m greenzmq.demo``; on its own::

    locust -f greenzmq/demo/locustfile.py --zmq-endpoint tcp://127.0.0.1:5555 \\
        --http-url http://127.0.0.1:8080

The endpoints are options of their own (not ``--host``, which locust would
give to every user class alike). ``--http-url ''`` leaves the HTTP users out.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

from locust import between, events, task
from locust.argument_parser import LocustArgumentParser
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment

import greenzmq
from greenzmq.locust import ZmqUser, write_totals_on_quit

__all__ = ["ZmqReqUser", "ZmqDealerUser", "HttpFrontUser"]

#: Each user waits 0.5-1.5 s between requests: ~1 request/s per user, so a few hundred users
#: make a few hundred requests per second, well within one locust process on a shared machine.
WAIT = between(0.5, 1.5)
#: Per-request timeout, seconds: generous, a failure here means a lost or stuck reply.
TIMEOUT = 5.0

_seq = itertools.count()


@events.init_command_line_parser.add_listener
def _options(parser: LocustArgumentParser) -> None:
    parser.add_argument(
        "--zmq-endpoint",
        default="tcp://127.0.0.1:5555",
        env_var="GREENZMQ_ZMQ_ENDPOINT",
        help="the service's ROUTER front",
    )
    parser.add_argument(
        "--http-url",
        default="http://127.0.0.1:8080",
        env_var="GREENZMQ_HTTP_URL",
        help="the service's HTTP front ('' for none)",
    )
    parser.add_argument(
        "--totals-json",
        default="",
        env_var="GREENZMQ_TOTALS_JSON",
        help="write the final totals here at exit (locust's CSVs lag up to a second)",
    )


@events.init.add_listener
def _hosts(environment: Environment, **_kwargs: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    ZmqReqUser.host = ZmqDealerUser.host = options.zmq_endpoint
    HttpFrontUser.host = options.http_url or None
    if not options.http_url:
        environment.user_classes = [c for c in environment.user_classes if c is not HttpFrontUser]
    if options.totals_json:
        write_totals_on_quit(environment, options.totals_json)


def _payload() -> bytes:
    return b"greenzmq-%d" % next(_seq)


def _echoes(expected: list[bytes]) -> Callable[[list[bytes]], None]:
    def validate(reply: list[bytes]) -> None:
        if reply != expected:
            raise AssertionError(f"echo mismatch: {reply!r:.60} != {expected!r:.60}")

    return validate


class ZmqReqUser(ZmqUser):
    """A REQ socket: the reply must echo the request."""

    weight = 2
    wait_time = WAIT
    timeout = TIMEOUT

    @task
    def echo(self) -> None:
        payload = _payload()
        self.request(payload, name="zmq REQ echo", validate=_echoes([payload]))


class ZmqDealerUser(ZmqUser):
    """A DEALER socket with REQ's envelope: two frames out, the same two back."""

    weight = 1
    wait_time = WAIT
    timeout = TIMEOUT
    socket_type = greenzmq.DEALER

    @task
    def echo(self) -> None:
        frames = [b"multi", _payload()]
        self.request(frames, name="zmq DEALER echo", validate=_echoes(frames))


class HttpFrontUser(FastHttpUser):
    """The monkey-patched pywsgi front, each request forwarded to the same workers."""

    weight = 1
    wait_time = WAIT
    network_timeout = TIMEOUT
    connection_timeout = TIMEOUT

    @task
    def echo(self) -> None:
        payload = _payload()
        with self.client.post(
            "/echo",
            data=payload,  # type: ignore[arg-type]  # locust's annotation lacks bytes, which its docs allow
            name="http POST /echo",
            catch_response=True,
        ) as resp:
            if resp.status_code == 200 and resp.content != payload:
                resp.failure(f"echo mismatch: {resp.content[:40]!r}")
