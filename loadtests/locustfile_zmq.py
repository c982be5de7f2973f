"""Load a ZeroMQ REQ/REP-style service (the ROUTER front of ``python -m greenzmq.service``) directly.

    locust -f loadtests/locustfile_zmq.py --host tcp://127.0.0.1:5555

Any service that answers a REQ socket works: each reply must echo the request
(``--echo-check off`` for services that answer something else).
"""

from __future__ import annotations

import itertools

from locust import between, events, task

import greenzmq
from greenzmq.locust import ZmqUser, write_totals_on_quit

#: ~1 request per second per user.
WAIT = between(0.5, 1.5)
#: Seconds per request before it counts as a failure and the socket is replaced.
TIMEOUT = 5.0

_seq = itertools.count()


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument(
        "--echo-check",
        choices=["on", "off"],
        default="on",
        include_in_web_ui=True,
        help="fail a request whose reply is not its payload",
    )
    parser.add_argument("--totals-json", default="", help="write the final totals (JSON) here at exit")


@events.init.add_listener
def _totals(environment, **_kwargs):
    if environment.parsed_options is not None and environment.parsed_options.totals_json:
        write_totals_on_quit(environment, environment.parsed_options.totals_json)


def _validator(user, expected):
    if user.environment.parsed_options is not None and user.environment.parsed_options.echo_check == "off":
        return None

    def validate(reply):
        if reply != expected:
            raise AssertionError(f"echo mismatch: {reply!r:.60} != {expected!r:.60}")

    return validate


class ReqUser(ZmqUser):
    """One REQ socket per user: strict send/receive lockstep."""

    host = "tcp://127.0.0.1:5555"
    weight = 2
    wait_time = WAIT
    timeout = TIMEOUT

    @task
    def echo(self):
        payload = [b"req-%d" % next(_seq)]
        self.request(payload, name="REQ echo", validate=_validator(self, payload))


class DealerUser(ZmqUser):
    """One DEALER socket per user, speaking REQ's envelope: a two-frame message."""

    host = "tcp://127.0.0.1:5555"
    weight = 1
    wait_time = WAIT
    timeout = TIMEOUT
    socket_type = greenzmq.DEALER

    @task
    def echo(self):
        payload = [b"dealer", b"%d" % next(_seq)]
        self.request(payload, name="DEALER echo", validate=_validator(self, payload))
