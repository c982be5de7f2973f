"""Codecs: named ``dumps``/``loads`` pairs that turn objects into frame payloads and back.

A *codec* is any object with ``dumps(obj) -> bytes`` and ``loads(bytes) -> obj``,
registered by name. Built in: ``json``, ``pickle``, ``msgpack`` (when
installed), and the compressors ``zlib`` and ``blosc`` (when installed).
Names chain with ``+``, left to right on the way out: ``"pickle+zlib"`` pickles
then compresses (and decompresses then unpickles on the way in).

This module works on payloads, not sockets: devices and event-loop callbacks
use :func:`dumps` and :func:`loads` directly, and the green socket's
``send_obj``/``recv_obj`` (:mod:`greenzmq.serialize`) look their codec up
here. Every decoding failure, and an unsafe codec refused by
``allow_pickle=False``, raises the one :class:`DeserializationError`
(:func:`guarded_loads` is the guard that makes it so).

Green behaviour
---------------
Nothing here blocks or yields; any thread may call it. The registry is
process-wide: register codecs at start-up, before other threads look them up
(a lookup racing a registration may keep the codec it found first).
"""

from __future__ import annotations

import pickle
import zlib
from typing import Any, Callable

from zmq.utils import jsonapi

__all__ = [
    "Codec",
    "DeserializationError",
    "DEFAULT_CODEC",
    "register_codec",
    "get_codec",
    "dumps",
    "loads",
    "guarded_loads",
    "Guard",
]

#: The codec of ``send_obj``/``recv_obj`` when neither socket nor context chose
#: one: pickle, like ``send_pyobj`` (any Python object). See ``allow_pickle``.
DEFAULT_CODEC = "pickle"


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

    ``registry`` (a context's own, see ``Context.register_codec``) instead of
    the global one. ``unsafe`` defaults to ``codec.unsafe`` (else False).
    ``name`` may not be empty nor contain ``+`` (that chains codecs):
    :class:`ValueError`. Returns the registered :class:`Codec`.
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
    return Codec(
        name,
        _chain([p.dumps for p in parts]),
        _chain([p.loads for p in reversed(parts)]),  # undone in the reverse order
        any(p.unsafe for p in parts),
    )


def _chain(steps: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    """One function that applies ``steps`` in order."""

    def chained(value: Any) -> Any:
        for step in steps:
            value = step(value)
        return value

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
    return guarded_loads(codec.name, codec.loads, data, codec.unsafe and not allow_pickle)


def _size(data: Any) -> int | None:
    try:
        return memoryview(data).nbytes
    except TypeError:
        return None


def guarded_loads(name: str, load: Callable[[Any], Any], data: Any, refuse: bool = False) -> Any:
    """``load(data)``, with every failure raised as :class:`DeserializationError` naming ``name``.

    ``refuse=True`` raises it without calling ``load`` (an unsafe codec on a
    context with ``allow_pickle = False``). The original error is the
    ``__cause__``.
    """
    if refuse:
        raise DeserializationError(
            name, "refused: this context does not unpickle received data (allow_pickle=False)", _size(data)
        )
    try:
        return load(data)
    except Exception as exc:
        raise DeserializationError(name, f"{type(exc).__name__}: {exc}", _size(data)) from exc


class Guard:
    """:func:`guarded_loads` with its codec bound: a ``load`` for pyzmq's ``_deserialize(data, load)``."""

    __slots__ = ("name", "load", "refuse")

    def __init__(self, name: str, load: Callable[[Any], Any], refuse: bool = False) -> None:
        self.name, self.load, self.refuse = name, load, refuse

    def __call__(self, data: Any) -> Any:
        return guarded_loads(self.name, self.load, data, self.refuse)


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
