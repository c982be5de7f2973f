"""How objects travel on a green socket: codec methods, numpy arrays, checked text.

:class:`SerializingSocketMixin` and :class:`SerializingContextMixin` give the
green Socket and Context ``send_obj``/``recv_obj`` (a codec chosen on the
context, see :mod:`greenzmq.codec`), ``send_array``/``recv_array`` (numpy,
zero-copy), and pyzmq's ``recv_string``/``recv_json``/``recv_pyobj`` with one
documented error. The numpy frame format (:func:`array_to_frames`,
:func:`frames_to_array`) lives here beside the two methods that use it; it
works on frames, so a ``ZMQStream`` callback can use it too.

Every malformed payload (invalid JSON or msgpack, a truncated pickle, bad
UTF-8, array metadata that does not match the data, a pickle while pickle is
refused) raises :class:`DeserializationError`, after the message was taken
off the socket: the socket stays usable and the next message is unaffected.

The codec registry is :mod:`greenzmq.codec`; its public names (:class:`Codec`,
:class:`DeserializationError`, :data:`DEFAULT_CODEC`, :func:`register_codec`,
:func:`get_codec`, :func:`dumps`, :func:`loads`) are exported here too, so
either import works.
"""

from __future__ import annotations

import codecs
import json
import pickle
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import zmq
from zmq.utils import jsonapi

from greenzmq.codec import (
    DEFAULT_CODEC,
    Codec,
    DeserializationError,
    Guard,
    dumps,
    get_codec,
    guarded_loads,
    loads,
    register_codec,
)

if TYPE_CHECKING:
    from typing_extensions import TypeAlias

    #: What ``recv_json`` returns, as pyzmq types it (``zmq.sugar.socket._JSON``).
    _JSON: TypeAlias = dict[str, Any] | list[Any] | str | float

    #: For type checkers, the socket mixin is the socket it is mixed into (its methods
    #: call the socket's context, send and recv); at run time it is a plain mixin.
    _SocketMixinBase: TypeAlias = zmq.Socket[Any]
else:
    _SocketMixinBase = object

__all__ = [
    "Codec",
    "DeserializationError",
    "DEFAULT_CODEC",
    "register_codec",
    "get_codec",
    "dumps",
    "loads",
    "array_to_frames",
    "frames_to_array",
    "SerializingSocketMixin",
    "SerializingContextMixin",
]

#: numpy's limit on array dimensions (``np.MAXDIMS`` in numpy 2); metadata
#: claiming more is malformed.
MAX_ARRAY_DIMS = 64
_ARRAY = "array"  # the codec name array errors carry


# -- numpy --------------------------------------------------------------------------


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as exc:
        raise ImportError(
            "greenzmq send_array/recv_array need numpy, which is not installed (pip install numpy)"
        ) from exc
    return numpy


def array_to_frames(A: Any) -> list[Any]:
    """``[metadata, data]`` frames of array ``A``; ``data`` shares ``A``'s memory.

    The metadata is JSON ``{"dtype": ..., "shape": [...], "order": "C"|"F"}``
    (``dtype`` as numpy's ``.npy`` descr, so structured dtypes travel too; for
    plain dtypes it is the ``dtype.str`` pyzmq's ``send_array`` recipe reads).
    C- and Fortran-contiguous arrays are sent as they are; any other array is
    copied once into a C-contiguous one. Object arrays raise :class:`TypeError`.
    """
    np = _numpy()
    A = np.asarray(A)
    if A.dtype.hasobject:
        raise TypeError("arrays holding Python objects cannot be sent as raw memory; use send_obj")
    if A.flags.c_contiguous:
        order = "C"
    elif A.flags.f_contiguous:
        order = "F"
    else:
        A, order = np.ascontiguousarray(A), "C"  # the one documented copy
    md = {"dtype": np.lib.format.dtype_to_descr(A.dtype), "shape": list(A.shape), "order": order}
    # a flat byte view: works for every dtype (memoryview refuses datetime64)
    data = A.ravel(order="K").view(np.uint8) if A.nbytes else b""
    return [jsonapi.dumps(md), data]


def frames_to_array(frames: Sequence[Any]) -> Any:
    """Rebuild the array of :func:`array_to_frames` without copying the data frame.

    Raises :class:`DeserializationError` (codec ``"array"``) when the frames
    are not two, the metadata is malformed, names an object dtype, or does
    not match the data's size.
    """
    np = _numpy()
    if len(frames) != 2:
        raise DeserializationError(_ARRAY, f"expected 2 frames (metadata, data), got {len(frames)}")
    md_frame, data = frames
    md = guarded_loads(_ARRAY, jsonapi.loads, getattr(md_frame, "bytes", md_frame))
    nbytes = memoryview(data).nbytes
    try:
        dtype = np.lib.format.descr_to_dtype(md["dtype"])
        shape = md["shape"]
        order = md.get("order", "C")
        if dtype.hasobject:
            raise ValueError("object dtypes are refused (raw memory is not Python objects)")
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_ARRAY_DIMS
            or not all(type(n) is int and n >= 0 for n in shape)
        ):
            raise ValueError(f"shape must be a list of at most {MAX_ARRAY_DIMS} non-negative ints")
        if order not in ("C", "F"):
            raise ValueError(f"order must be 'C' or 'F', not {order!r}")
        expected = dtype.itemsize
        for n in shape:
            expected *= n
        if expected != nbytes:
            raise ValueError(f"dtype {dtype} and shape {shape} need {expected} bytes, the data has {nbytes}")
        # inside the guard too: numpy refuses some empty shapes it cannot represent
        # (a zero next to a dimension past its limits)
        if not nbytes:
            return np.zeros(shape, dtype=dtype, order=order)
        return np.frombuffer(data, dtype=dtype).reshape(shape, order=order)
    except Exception as exc:
        raise DeserializationError(_ARRAY, f"{type(exc).__name__}: {exc}", nbytes) from exc


# -- the socket and context sides -------------------------------------------------------


class SerializingContextMixin:
    """The context's serialization state: default codec, codec registry, pickle policy.

    Mixed into the green :class:`greenzmq.Context`. State is declared here at
    class level because pyzmq's ``AttributeSetter`` would turn any other
    attribute into a default socket option.

    Green behaviour
    ---------------
    Nothing here blocks. The settings are plain attributes: sockets read them
    at each call, from whichever thread owns the socket, so a change applies
    to the next ``send_obj``/``recv_obj`` of every socket of the context.
    """

    _codec: str = DEFAULT_CODEC
    _allow_pickle: bool = True
    _codecs: dict[str, Codec] | None = None

    @property
    def codec(self) -> str:
        """Name of the default codec of ``send_obj``/``recv_obj`` for this context's sockets."""
        return self._codec

    @codec.setter
    def codec(self, name: str) -> None:
        self.get_codec(name)  # LookupError now rather than at the first send
        self._codec = name

    @property
    def allow_pickle(self) -> bool:
        """Whether sockets of this context unpickle received data (default True).

        Unpickling runs arbitrary code chosen by the sender: set it to False
        whenever a peer is not fully trusted. Then ``recv_pyobj`` and any
        ``recv_obj`` with an unsafe codec (``pickle``, ``pickle+zlib``, ...)
        raise :class:`DeserializationError` (the message is consumed).
        Sending pickles is unaffected.
        """
        return self._allow_pickle

    @allow_pickle.setter
    def allow_pickle(self, value: bool) -> None:
        self._allow_pickle = bool(value)

    def register_codec(self, name: str, codec: Any, unsafe: bool | None = None) -> Codec:
        """Register ``codec`` under ``name`` for this context's sockets only
        (overrides a global codec of the same name). See :func:`register_codec`."""
        if self._codecs is None:
            self._codecs = {}
        return register_codec(name, codec, unsafe, registry=self._codecs)

    def get_codec(self, name: str | None = None) -> Codec:
        """The codec called ``name`` (default: :attr:`codec`), this context's first."""
        return get_codec(self._codec if name is None else name, self._codecs)


class SerializingSocketMixin(_SocketMixinBase):
    """Object, numpy and checked-text methods of the green :class:`greenzmq.Socket`.

    Green behaviour
    ---------------
    Every method here ends in the socket's green ``send``/``send_multipart``/
    ``recv``/``recv_multipart``, so it blocks only the calling greenlet, honours
    ``RCVTIMEO``/``SNDTIMEO`` and sends a multipart message as one atomic queue
    entry. A sender returns what the green send returned: ``None`` without
    ``track``, else a tracker (green while it may be pending, pyzmq's own
    finished tracker when the send is already done). Decoding happens after
    the message is taken off the socket: a bad payload raises
    :class:`DeserializationError` and the next call receives the next message.
    """

    _codec: str | None = None

    # -- codecs ------------------------------------------------------------------

    @property
    def codec(self) -> str:
        """This socket's default codec: its own if set, else its context's (live)."""
        if self._codec is not None:
            return self._codec
        return getattr(self.context, "codec", DEFAULT_CODEC)

    @codec.setter
    def codec(self, name: str | None) -> None:
        if name is not None:
            self.get_codec(name)
        self._codec = name

    def get_codec(self, name: str | None = None) -> Codec:
        """The codec called ``name`` (default :attr:`codec`), as this socket's context resolves it."""
        ctx = self.context
        if name is None:
            fallback: str = getattr(ctx, "_codec", DEFAULT_CODEC)  # a plain zmq.Context has none
            name = self._codec or fallback
        return get_codec(name, getattr(ctx, "_codecs", None))

    def _refuses(self, codec: Codec) -> bool:
        return codec.unsafe and not getattr(self.context, "allow_pickle", True)

    # -- objects -----------------------------------------------------------------

    def send_obj(
        self, obj: Any, flags: int = 0, codec: str | None = None, copy: bool = True, track: bool = False
    ) -> zmq.MessageTracker | None:
        """Send ``obj`` as one frame encoded by ``codec`` (default :attr:`codec`).

        ``sock.send_obj(obj, codec="pickle+zlib")`` is pyzmq's zipped-pickle
        recipe in one line. Encoding errors (``TypeError`` from json, ...)
        propagate before anything is sent.
        """
        data = self.get_codec(codec).dumps(obj)
        return self.send(data, flags, copy=copy, track=track)

    def recv_obj(self, flags: int = 0, codec: str | None = None) -> Any:
        """Receive one frame and decode it with ``codec`` (default :attr:`codec`).

        Raises :class:`DeserializationError` for a malformed payload, or an
        unsafe codec on a context with ``allow_pickle = False``.
        """
        c = self.get_codec(codec)
        return self._deserialize(self.recv(flags), Guard(c.name, c.loads, self._refuses(c)))

    def send_objs(
        self,
        objs: Sequence[Any],
        flags: int = 0,
        codec: str | None = None,
        copy: bool = True,
        track: bool = False,
    ) -> zmq.MessageTracker | None:
        """Send one multipart message, one frame per object, each encoded by ``codec``."""
        encode = self.get_codec(codec).dumps
        return self.send_multipart([encode(o) for o in objs], flags, copy=copy, track=track)

    def recv_objs(self, flags: int = 0, codec: str | None = None) -> list[Any]:
        """Receive a whole multipart message and decode every frame with ``codec``."""
        c = self.get_codec(codec)
        guard = Guard(c.name, c.loads, self._refuses(c))
        return self._deserialize(self.recv_multipart(flags), lambda frames: [guard(f) for f in frames])

    # -- pyzmq's receivers, with the one documented error ----------------------------

    def recv_string(self, flags: int = 0, encoding: str = "utf-8") -> str:
        """As :meth:`zmq.Socket.recv_string`; undecodable bytes raise :class:`DeserializationError`.

        An unknown ``encoding`` is the caller's mistake, not the peer's: it
        raises :class:`LookupError` (or :class:`TypeError`) before anything is
        received, as ``codecs.lookup`` does.
        """
        codecs.lookup(encoding)
        return self._deserialize(self.recv(flags), Guard(encoding, lambda b: b.decode(encoding)))

    recv_unicode = recv_string

    def recv_json(self, flags: int = 0, **kwargs: Any) -> _JSON:
        """As :meth:`zmq.Socket.recv_json`; invalid JSON raises :class:`DeserializationError`.

        Keyword arguments the JSON decoder does not take raise
        :class:`TypeError` before anything is received.
        """
        decoder_kwargs = dict(kwargs)
        (decoder_kwargs.pop("cls", None) or json.JSONDecoder)(**decoder_kwargs)
        return self._deserialize(self.recv(flags), Guard("json", lambda b: jsonapi.loads(b, **kwargs)))

    def recv_pyobj(self, flags: int = 0) -> Any:
        """As :meth:`zmq.Socket.recv_pyobj`; a bad pickle, or any pickle on a context
        with ``allow_pickle = False``, raises :class:`DeserializationError`."""
        refuse = not getattr(self.context, "allow_pickle", True)
        return self._deserialize(self.recv(flags), Guard("pickle", pickle.loads, refuse))

    # -- numpy -----------------------------------------------------------------------

    def send_array(
        self, A: Any, flags: int = 0, copy: bool = False, track: bool = False
    ) -> zmq.MessageTracker | None:
        """Send numpy array ``A`` as a metadata frame and a data frame, without copying.

        The data frame shares ``A``'s memory (frames under the socket's
        ``copy_threshold`` are copied by pyzmq anyway); do not modify ``A``
        until the returned tracker (``track=True``) is done. Non-contiguous
        arrays are copied once. See :func:`array_to_frames`. Raises
        :class:`ImportError` without numpy.
        """
        frames = array_to_frames(A)
        return self.send_multipart(frames, flags, copy=copy, track=track)

    def recv_array(self, flags: int = 0, copy: bool = False) -> Any:
        """Receive an array sent by :meth:`send_array`; with ``copy=False`` (default)
        it is a view on the received frame (no copy). Malformed frames raise
        :class:`DeserializationError`."""
        _numpy()
        return self._deserialize(self.recv_multipart(flags, copy=copy), frames_to_array)
