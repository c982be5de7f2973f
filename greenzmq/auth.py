"""Green ZAP authentication: pyzmq's :class:`zmq.auth.Authenticator` served by a greenlet.

The equivalent of :class:`zmq.auth.thread.ThreadAuthenticator` for gevent::

    import greenzmq as zmq
    from greenzmq.auth import GreenAuthenticator

    ctx = zmq.Context()
    auth = GreenAuthenticator(ctx)
    auth.start()
    auth.allow("127.0.0.1")
    auth.configure_curve(domain="*", location="public_keys")

All the ZAP logic (address allow/deny lists, PLAIN passwords, CURVE
certificate directories, ``CURVE_ALLOW_ANY``, credentials callbacks, the
replies) is pyzmq's, inherited unchanged; this module only adds the loop that
receives ZAP requests on a green socket, and its start/stop.

Everything public in :mod:`zmq.auth` (``CURVE_ALLOW_ANY``,
``create_certificates``, ``load_certificate``, ``load_certificates``,
``Authenticator``) is re-exported here.
"""

from __future__ import annotations

import errno
from typing import Any

import gevent
import zmq
from gevent import getcurrent
from zmq.auth import CURVE_ALLOW_ANY, Authenticator, create_certificates, load_certificate, load_certificates

from greenzmq.context import Context
from greenzmq.socket import Socket

__all__ = [
    "GreenAuthenticator",
    "ThreadAuthenticator",
    "Authenticator",
    "CURVE_ALLOW_ANY",
    "create_certificates",
    "load_certificate",
    "load_certificates",
    "ZAP_ENDPOINT",
    "AwaitableCallbackError",
]

#: Where libzmq sends ZAP requests; one handler may bind it per context (RFC 27).
ZAP_ENDPOINT = "inproc://zeromq.zap.01"

#: ZAP status code for "the handler failed": RFC 27 says the client is then
#: refused, like a 400, but the failure is the server's, not the client's.
_ZAP_INTERNAL_ERROR = b"500"

#: ZAP sockets linger this long (ms) on close, as in pyzmq: long enough to
#: deliver a reply already queued, short enough never to delay ``term``.
_ZAP_LINGER_MS = 1

#: errnos that mean "the ZAP socket is gone": the loop ends quietly.
_GONE = (zmq.ENOTSOCK, zmq.ETERM)


class GreenAuthenticator(Authenticator):
    """ZAP authentication served by a greenlet on the caller's context.

    Configure it exactly as pyzmq's authenticators (:meth:`allow`,
    :meth:`deny`, :meth:`configure_plain`, :meth:`configure_curve` with a
    directory made by :func:`create_certificates` or ``CURVE_ALLOW_ANY``,
    :meth:`configure_curve_callback`, :meth:`curve_user_id`), before or
    after :meth:`start`; a change applies to the next handshake. To reload a
    certificate directory after adding or removing certificates, call
    :meth:`configure_curve` again, as with pyzmq.

    ``context`` defaults to :meth:`greenzmq.Context.instance`. A plain
    :class:`zmq.Context` works too (the ZAP socket is a green socket either
    way). Usable as a context manager (``start`` on entry, ``stop`` on exit).

    Green behaviour
    ---------------
    :meth:`start` binds the ZAP socket and spawns one greenlet that receives
    ZAP requests and replies to them; it blocks only itself, so the hub and
    every other greenlet keep running, and handshakes are answered while the
    starting greenlet does anything else. A credentials callback
    (:meth:`configure_curve_callback`) runs in that greenlet and may block it
    (gevent-style: a green socket, an Event, ``gevent.sleep``); handshakes
    wait for it, nothing else does. A callback may return a coroutine that
    finishes without suspending; one that suspends (awaits an ``asyncio``
    future) cannot run here: the client is refused with status 500 and
    :class:`AwaitableCallbackError` is logged. A callback that raises refuses
    the client with status 500 too. A request that makes the handler raise, or a
    malformed request, gets a 400/500 reply and the loop goes on.

    Only one ZAP handler may exist per context: :meth:`start` raises
    :class:`zmq.ZMQError` (``EADDRINUSE``) when another one is running, and
    :class:`RuntimeError` when this one already is. :meth:`start` and
    :meth:`stop` belong to the OS thread whose hub serves the greenlet.
    Closing or terminating the context ends the greenlet quietly.
    """

    context: zmq.Context
    zap_socket: Socket
    _greenlet: gevent.Greenlet | None = None
    _replied: bool = False

    def __init__(self, context: zmq.Context | None = None, encoding: str = "utf-8", log: Any = None) -> None:
        super().__init__(context=context or Context.instance(), encoding=encoding, log=log)

    def start(self) -> None:
        """Bind the ZAP socket and start serving requests in a greenlet.

        Raises :class:`RuntimeError` if already started, and
        :class:`zmq.ZMQError` (``EADDRINUSE``) if another ZAP handler is bound
        on this context.
        """
        if self.is_alive():
            raise RuntimeError("GreenAuthenticator.start: already started; call stop() first")
        # pyzmq's start() makes a blocking zmq.Socket: ours must be green.
        zap = self.context.socket(zmq.REP, socket_class=Socket)
        zap.linger = _ZAP_LINGER_MS
        try:
            zap.bind(ZAP_ENDPOINT)
        except zmq.ZMQError:
            zap.close()
            raise
        self.zap_socket = zap
        self.log.debug("Starting")
        self._greenlet = gevent.spawn(self._serve, zap)
        self._greenlet.name = f"GreenAuthenticator({ZAP_ENDPOINT})"

    def stop(self) -> None:
        """Stop serving and close the ZAP socket. Safe to call twice.

        Blocks the caller until the greenlet has ended (it is killed: a
        handshake whose request it was answering is refused by libzmq when
        the ZAP socket closes). Called from the authenticator's own greenlet
        (inside a credentials callback), it only closes the socket.
        """
        glet, self._greenlet = self._greenlet, None
        if glet is not None and glet is not getcurrent():
            glet.kill(block=True)
        zap = self.zap_socket
        if zap is not None and not zap.closed:
            # close() frees the inproc name only when libzmq's reaper thread
            # gets to it; unbind() frees it now, so start() may follow at once.
            try:
                zap.unbind(ZAP_ENDPOINT)
            except zmq.ZMQError as e:
                if e.errno not in (*_GONE, errno.ENOENT):  # not bound (pyzmq has no zmq.ENOENT)
                    raise
        super().stop()

    def is_alive(self) -> bool:
        """True while the ZAP greenlet is serving requests."""
        return bool(self._greenlet is not None and not self._greenlet.dead)

    def __enter__(self) -> GreenAuthenticator:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # -- the loop ---------------------------------------------------------------------

    def _serve(self, zap: Socket) -> None:
        while True:
            try:
                self._handle(zap.recv_multipart())
            except zmq.ZMQError as e:
                # closed by stop(), or by ctx.destroy() (maybe while a callback ran)
                if e.errno in _GONE:
                    self.log.debug("ZAP socket closed: authenticator stops")
                    return
                raise

    def _handle(self, msg: list[bytes]) -> None:
        """Answer one request; whatever happens, the REP socket gets exactly one reply."""
        request_id = msg[1] if len(msg) >= 2 else b""
        self._replied = False
        try:
            if len(msg) < 2:
                # pyzmq logs and does not reply, which would wedge the REP socket
                self.log.error("Invalid ZAP message, not enough frames: %r", msg)
                self._send_zap_reply(request_id, b"400", b"Not enough frames")
                return
            _run_sync(self.handle_zap_message(msg))
        except zmq.ZMQError as e:
            if e.errno in _GONE:
                raise
            self._failed(request_id)
        except Exception:
            self._failed(request_id)

    def _failed(self, request_id: bytes) -> None:
        self.log.exception("ZAP handler failed on request %r", request_id)
        if not self._replied:
            self._send_zap_reply(request_id, _ZAP_INTERNAL_ERROR, b"Internal error")

    def _send_zap_reply(
        self, request_id: bytes, status_code: bytes, status_text: bytes, user_id: str = "anonymous"
    ) -> None:
        self._replied = True
        super()._send_zap_reply(request_id, status_code, status_text, user_id)


#: Drop-in name for code written against ``zmq.auth.thread.ThreadAuthenticator``
#: (there is no thread: it is the same greenlet-served class).
ThreadAuthenticator = GreenAuthenticator


class AwaitableCallbackError(TypeError):
    """A credentials callback awaited an asyncio future, which a greenlet cannot await."""


def _run_sync(coro: Any) -> None:
    """Run pyzmq's ``async def handle_zap_message`` to completion, synchronously.

    It only suspends when a credentials callback returns an awaitable that
    suspends (an asyncio future); with a green (blocking) callback it never does.
    """
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise AwaitableCallbackError(
        "credentials callback awaited an asyncio future; under gevent return a bool (blocking the greenlet is fine)"
    )
