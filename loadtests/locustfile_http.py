"""Load the HTTP front of ``python -m greenzmq.service`` (or any HTTP echo) with locust's own user.

    locust -f loadtests/locustfile_http.py --host http://127.0.0.1:8080

Each POST goes through the monkey-patched pywsgi handler, over greenzmq to a
green worker and back; ``/healthz`` is answered by the HTTP greenlet alone.
"""

from __future__ import annotations

import itertools

from locust import between, task
from locust.contrib.fasthttp import FastHttpUser

#: ~1 request per second per user.
WAIT = between(0.5, 1.5)
#: Seconds per request before it counts as a failure.
TIMEOUT = 5.0

_seq = itertools.count()


class HttpFrontUser(FastHttpUser):
    host = "http://127.0.0.1:8080"
    wait_time = WAIT
    network_timeout = TIMEOUT
    connection_timeout = TIMEOUT

    @task(10)
    def echo(self):
        payload = b"http-%d" % next(_seq)
        with self.client.post("/echo", data=payload, name="POST /echo", catch_response=True) as resp:
            if resp.status_code == 200 and resp.content != payload:
                resp.failure(f"echo mismatch: {resp.content[:40]!r}")

    @task(1)
    def health(self):
        self.client.get("/healthz", name="GET /healthz")
