"""Whole messages on a green socket: checking, receiving and sending them frame by frame.

The green :class:`~greenzmq.socket.Socket` and the event loop's
:class:`~greenzmq.eventloop.ZMQStream` both move whole multipart messages
with pyzmq's non-blocking calls; this is the one place that knows how.
Callers keep the waiting rule of :mod:`greenzmq._waiter` (every call is
followed by :meth:`~greenzmq._waiter.Waiters.touched` while somebody waits).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zmq
from zmq.backend import Socket as _RawSocket

from greenzmq._waiter import PARTIAL

__all__ = ["checked_parts", "recv_message", "MultipartSend"]

_raw_send = _RawSocket.send
_raw_recv = _RawSocket.recv
_DONTWAIT = int(zmq.DONTWAIT)
_SNDMORE = int(zmq.SNDMORE)
#: How much of a refused frame's repr an error message quotes.
_REPR_LIMIT = 32


def checked_parts(msg_parts: Sequence[Any]) -> list[Any]:
    """``msg_parts`` as a list, if every part can be sent; else raise before anything is sent.

    Raises :class:`IndexError` for an empty message and :class:`TypeError`
    (pyzmq's wording) for a part without the buffer interface.
    """
    parts = list(msg_parts)
    if not parts:
        raise IndexError("send_multipart: msg_parts is empty; a message has at least one frame")
    for i, part in enumerate(parts):
        if isinstance(part, (zmq.Frame, bytes, memoryview)):
            continue
        try:
            memoryview(part)
        except Exception:
            rpart = repr(part)
            if len(rpart) > _REPR_LIMIT:
                rpart = rpart[:_REPR_LIMIT] + "..."
            raise TypeError(f"Frame {i} ({rpart}) does not support the buffer interface.") from None
    return parts


def recv_message(sock: Any, flags: int, copy: bool, track: bool) -> list[Any]:
    """Receive one whole message with pyzmq's raw ``recv`` (``flags`` as given:
    pass ``DONTWAIT`` for a non-blocking attempt, which raises :class:`zmq.Again`)."""
    # Frames, even when bytes are wanted: libzmq's "more" flag comes with a
    # Frame for free (pyzmq reads it in C), while asking for RCVMORE after a
    # bytes recv is a getsockopt through pyzmq's option lookup (about 0.5 us),
    # dearer than the Frame and its ``.bytes`` copy together (the same copy
    # recv(copy=True) makes): 25-35 % less per message (bench/bench_framing.py).
    # libzmq delivers multipart messages atomically: once the first frame is
    # here, the rest are too, so the later recvs never raise Again.
    frame = _raw_recv(sock, flags, False, track and not copy)
    parts: list[Any]
    if copy:
        parts = [frame.bytes]
        while frame.more:
            frame = _raw_recv(sock, flags, False, False)
            parts.append(frame.bytes)
        return parts
    parts = [frame]
    while frame.more:
        frame = _raw_recv(sock, flags, False, track)
        parts.append(frame)
    return parts


class MultipartSend:
    """The non-blocking attempt of one ``send_multipart`` call.

    Remembers how many frames went out, so that a message stalled by the
    high-water mark mid-way resumes where it stopped instead of resending.
    """

    __slots__ = ("sock", "parts", "flags", "copy", "track", "sent")

    def __init__(self, sock: Any, parts: list[Any], flags: int, copy: bool, track: bool) -> None:
        self.sock = sock
        self.parts = parts
        self.flags = flags | _DONTWAIT
        self.copy = copy
        self.track = track
        self.sent = 0

    def __call__(self) -> Any:
        parts, sock, flags, copy, track = self.parts, self.sock, self.flags, self.copy, self.track
        last = len(parts) - 1
        i = start = self.sent
        try:
            while i < last:
                _raw_send(sock, parts[i], flags | _SNDMORE, copy, track)
                i += 1
            result = _raw_send(sock, parts[last], flags, copy, track)
        except zmq.Again:
            self.sent = i
            if i == start:
                raise
            return PARTIAL
        self.sent = last + 1
        return result
