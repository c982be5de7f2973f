"""Codecs and numpy frames: how objects become ZeroMQ frames, chosen on the context.

A *codec* is any object with ``dumps(obj) -> bytes`` and ``loads(bytes) -> obj``,
registered by name. Built in: ``json``, ``pickle``, ``msgpack`` (when
installed), and the compressors ``zlib`` and ``blosc`` (when installed).
Names chain with ``+``, left to right on the way out: ``"pickle+zlib"`` pickles
then compresses (and decompresses then unpickles on the way in).

The functions here (:func:`get_codec`, :func:`dumps`, :func:`loads`,
:func:`array_to_frames`, :func:`frames_to_array`) work on frames, not sockets,
so devices and the event loop share them. :class:`SerializingSocketMixin`
and :class:`SerializingContextMixin` put them on the green Socket and Context.

Every malformed payload (invalid JSON or msgpack, a truncated pickle, bad
UTF-8, array metadata that does not match the data, a pickle while pickle is
refused) raises :class:`DeserializationError`, after the message was taken
off the socket: the socket stays usable and the next message is unaffected.
"""

from __future__ import annotations

import codecs
import json
import pickle
import zlib
from collections.abc import Sequence
from typing import Any, Callable

from zmq.utils import jsonapi

from greenzmq.tracker import MessageTracker, green_tracker

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

#: The codec of ``send_obj``/``recv_obj`` when neither socket nor context chose
#: one: pickle, like ``send_pyobj`` (any Python object). See ``allow_pickle``.
DEFAULT_CODEC = "pickle"
#: numpy's limit on array dimensions (``np.MAXDIMS`` in numpy 2); metadata
#: claiming more is malformed.
MAX_ARRAY_DIMS = 64
_ARRAY = "array"  # the codec name array errors carry


class DeserializationError(ValueError, pickle.UnpicklingError):
    """A received payload could not be decoded (or was refused) by codec :attr:`codec`.

    A :class:`ValueError` (as pyzmq's JSON and UTF-8 errors are) and, so that
    code written against pyzmq's ``recv_pyobj`` keeps matching, a
    :class:`pickle.UnpicklingError`.

    The message was consumed: the socket stays usable and the next
    ``recv*`` gets the next message. The original exception, if any, is
    ``__cause__``.
    """

    def __init__(self, codec: str, reason: str, payload_size: int | None = None) -> None:
        size = "" if payload_size is None else f" ({payload_size} bytes)"
        super().__init__(f"cannot decode {codec!r} payload{size}: {reason}")
        self.codec = codec
        self.reason = reason
        self.payload_size = payload_size


class Codec:
    """A named pair ``dumps(obj) -> bytes`` / ``loads(bytes) -> obj``.

    ``unsafe`` marks codecs that can run code while loading (pickle): a
    context with ``allow_pickle = False`` refuses to load them.
    """

    __slots__ = ("name", "dumps", "loads", "unsafe")

    def __init__(
        self, name: str, dumps: Callable[[Any], Any], loads: Callable[[Any], Any], unsafe: bool = False
    ) -> None:
        self.name = name
        self.dumps = dumps
        self.loads = loads
        self.unsafe = unsafe

    def __repr__(self) -> str:
        return f"<greenzmq Codec {self.name!r}{' (unsafe)' if self.unsafe else ''}>"


_registry: dict[str, Codec] = {}
#: Resolved names: (name, id(context registry) or 0) -> (generation, Codec). Every
#: registration bumps the generation, so no stale entry is ever returned.
_resolved: dict[tuple[str, int], tuple[int, Codec]] = {}
_generation = [0]
#: Bound on :data:`_resolved` (names are few; a flood of distinct ones just resets it).
_RESOLVED_MAX = 256


def register_codec(name: str, codec: Any, unsafe: bool | None = None, registry: dict | None = None) -> Codec:
    """Register ``codec`` (anything with ``dumps``/``loads``) under ``name`` for every context.

    ``unsafe`` defaults to ``codec.unsafe`` (else False). ``name`` may not
    contain ``+`` (that chains codecs). Returns the registered :class:`Codec`.
    """
    if not name or "+" in name:
        raise ValueError(f"codec name {name!r} must be non-empty and without '+'")
    if unsafe is None:
        unsafe = bool(getattr(codec, "unsafe", False))
    entry = Codec(name, codec.dumps, codec.loads, unsafe)
    (_registry if registry is None else registry)[name] = entry
    _generation[0] += 1
    return entry


def get_codec(name: str, registry: dict | None = None) -> Codec:
    """The codec called ``name`` (``"a+b"`` chains), looked up in ``registry`` then globally.

    Raises :class:`LookupError` for an unknown name, as :func:`codecs.lookup`.
    """
    key = (name, id(registry) if registry else 0)
    hit = _resolved.get(key)
    if hit is not None and hit[0] == _generation[0]:
        return hit[1]
    codec = _resolve(name, registry)
    if len(_resolved) >= _RESOLVED_MAX:
        _resolved.clear()
    _resolved[key] = (_generation[0], codec)
    return codec


def _resolve(name: str, registry: dict | None) -> Codec:
    parts = []
    for part in name.split("+"):
        codec = (registry or {}).get(part) or _registry.get(part)
        if codec is None:
            known = sorted({*_registry, *(registry or {})})
            raise LookupError(f"unknown greenzmq codec {part!r} in {name!r}; registered: {known}")
        parts.append(codec)
    if len(parts) == 1:
        return parts[0]
    return Codec(name, _chain_dumps(parts), _chain_loads(parts[::-1]), any(p.unsafe for p in parts))


def _chain_dumps(parts: list[Codec]) -> Callable[[Any], Any]:
    def chained(obj: Any) -> Any:
        for codec in parts:
            obj = codec.dumps(obj)
        return obj

    return chained


def _chain_loads(parts: list[Codec]) -> Callable[[Any], Any]:
    def chained(data: Any) -> Any:
        for codec in parts:
            data = codec.loads(data)
        return data

    return chained


def dumps(obj: Any, codec: str | Codec = DEFAULT_CODEC, registry: dict | None = None) -> Any:
    """Encode ``obj`` with ``codec`` (a name or a :class:`Codec`); its own errors propagate."""
    if isinstance(codec, str):
        codec = get_codec(codec, registry)
    return codec.dumps(obj)


def loads(
    data: Any, codec: str | Codec = DEFAULT_CODEC, allow_pickle: bool = True, registry: dict | None = None
) -> Any:
    """Decode ``data``; any failure, or an unsafe codec with ``allow_pickle=False``,
    raises :class:`DeserializationError`."""
    if isinstance(codec, str):
        codec = get_codec(codec, registry)
    return _guarded_loads(codec.name, codec.loads, data, codec.unsafe and not allow_pickle)


def _size(data: Any) -> int | None:
    try:
        return memoryview(data).nbytes
    except TypeError:
        return None


def _guarded_loads(name: str, load: Callable[[Any], Any], data: Any, refuse: bool = False) -> Any:
    if refuse:
        raise DeserializationError(
            name, "refused: this context does not unpickle received data (allow_pickle=False)", _size(data)
        )
    try:
        return load(data)
    except Exception as exc:
        raise DeserializationError(name, f"{type(exc).__name__}: {exc}", _size(data)) from exc


class _Guard:
    """A ``load`` for pyzmq's ``_deserialize`` that raises :class:`DeserializationError`."""

    __slots__ = ("name", "load", "refuse")

    def __init__(self, name: str, load: Callable[[Any], Any], refuse: bool = False) -> None:
        self.name, self.load, self.refuse = name, load, refuse

    def __call__(self, data: Any) -> Any:
        return _guarded_loads(self.name, self.load, data, self.refuse)


register_codec("json", Codec("json", jsonapi.dumps, jsonapi.loads))
register_codec(
    "pickle", Codec("pickle", lambda o: pickle.dumps(o, pickle.DEFAULT_PROTOCOL), pickle.loads, True)
)
register_codec("zlib", Codec("zlib", zlib.compress, zlib.decompress))
try:
    import msgpack
except ImportError:  # pragma: no cover - msgpack is optional
    pass
else:
    register_codec("msgpack", Codec("msgpack", msgpack.packb, msgpack.unpackb))
try:
    import blosc
except ImportError:
    pass
else:  # pragma: no cover - blosc is optional and not installed in CI
    register_codec("blosc", Codec("blosc", blosc.compress, blosc.decompress))


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
    md = _guarded_loads(_ARRAY, jsonapi.loads, getattr(md_frame, "bytes", md_frame))
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


class SerializingSocketMixin:
    """Object, numpy and checked-text methods of the green :class:`greenzmq.Socket`.

    Green behaviour
    ---------------
    Every method here ends in the socket's green ``send``/``send_multipart``/
    ``recv``/``recv_multipart``, so it blocks only the calling greenlet, honours
    ``RCVTIMEO``/``SNDTIMEO`` and sends a multipart message as one atomic queue
    entry. Decoding happens after the message is taken off the socket: a bad
    payload raises :class:`DeserializationError` and the next call receives
    the next message.
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
            name = self._codec or getattr(ctx, "_codec", DEFAULT_CODEC)
        return get_codec(name, getattr(ctx, "_codecs", None))

    def _refuses(self, codec: Codec) -> bool:
        return codec.unsafe and not getattr(self.context, "allow_pickle", True)

    # -- objects -----------------------------------------------------------------

    def send_obj(
        self, obj: Any, flags: int = 0, codec: str | None = None, copy: bool = True, track: bool = False
    ) -> MessageTracker | None:
        """Send ``obj`` as one frame encoded by ``codec`` (default :attr:`codec`).

        ``sock.send_obj(obj, codec="pickle+zlib")`` is pyzmq's zipped-pickle
        recipe in one line. Encoding errors (``TypeError`` from json, ...)
        propagate before anything is sent.
        """
        data = self.get_codec(codec).dumps(obj)
        return green_tracker(self.send(data, flags, copy=copy, track=track))

    def recv_obj(self, flags: int = 0, codec: str | None = None) -> Any:
        """Receive one frame and decode it with ``codec`` (default :attr:`codec`).

        Raises :class:`DeserializationError` for a malformed payload, or an
        unsafe codec on a context with ``allow_pickle = False``.
        """
        c = self.get_codec(codec)
        return self._deserialize(self.recv(flags), _Guard(c.name, c.loads, self._refuses(c)))

    def send_objs(
        self,
        objs: Sequence[Any],
        flags: int = 0,
        codec: str | None = None,
        copy: bool = True,
        track: bool = False,
    ) -> MessageTracker | None:
        """Send one multipart message, one frame per object, each encoded by ``codec``."""
        encode = self.get_codec(codec).dumps
        return green_tracker(self.send_multipart([encode(o) for o in objs], flags, copy=copy, track=track))

    def recv_objs(self, flags: int = 0, codec: str | None = None) -> list[Any]:
        """Receive a whole multipart message and decode every frame with ``codec``."""
        c = self.get_codec(codec)
        guard = _Guard(c.name, c.loads, self._refuses(c))
        return self._deserialize(self.recv_multipart(flags), lambda frames: [guard(f) for f in frames])

    # -- pyzmq's receivers, with the one documented error ----------------------------

    def recv_string(self, flags: int = 0, encoding: str = "utf-8") -> str:
        """As :meth:`zmq.Socket.recv_string`; undecodable bytes raise :class:`DeserializationError`.

        An unknown ``encoding`` is the caller's mistake, not the peer's: it
        raises :class:`LookupError` (or :class:`TypeError`) before anything is
        received, as ``codecs.lookup`` does.
        """
        codecs.lookup(encoding)
        return self._deserialize(self.recv(flags), _Guard(encoding, lambda b: b.decode(encoding)))

    recv_unicode = recv_string

    def recv_json(self, flags: int = 0, **kwargs: Any) -> Any:
        """As :meth:`zmq.Socket.recv_json`; invalid JSON raises :class:`DeserializationError`.

        Keyword arguments the JSON decoder does not take raise
        :class:`TypeError` before anything is received.
        """
        decoder_kwargs = dict(kwargs)
        (decoder_kwargs.pop("cls", None) or json.JSONDecoder)(**decoder_kwargs)
        return self._deserialize(self.recv(flags), _Guard("json", lambda b: jsonapi.loads(b, **kwargs)))

    def recv_pyobj(self, flags: int = 0) -> Any:
        """As :meth:`zmq.Socket.recv_pyobj`; a bad pickle, or any pickle on a context
        with ``allow_pickle = False``, raises :class:`DeserializationError`."""
        refuse = not getattr(self.context, "allow_pickle", True)
        return self._deserialize(self.recv(flags), _Guard("pickle", pickle.loads, refuse))

    # -- numpy -----------------------------------------------------------------------

    def send_array(
        self, A: Any, flags: int = 0, copy: bool = False, track: bool = False
    ) -> MessageTracker | None:
        """Send numpy array ``A`` as a metadata frame and a data frame, without copying.

        The data frame shares ``A``'s memory (frames under the socket's
        ``copy_threshold`` are copied by pyzmq anyway); do not modify ``A``
        until the returned tracker (``track=True``) is done. Non-contiguous
        arrays are copied once. See :func:`array_to_frames`. Raises
        :class:`ImportError` without numpy.
        """
        frames = array_to_frames(A)
        return green_tracker(self.send_multipart(frames, flags, copy=copy, track=track))

    def recv_array(self, flags: int = 0, copy: bool = False) -> Any:
        """Receive an array sent by :meth:`send_array`; with ``copy=False`` (default)
        it is a view on the received frame (no copy). Malformed frames raise
        :class:`DeserializationError`."""
        _numpy()
        return self._deserialize(self.recv_multipart(flags, copy=copy), frames_to_array)
