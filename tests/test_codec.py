"""The codec registry (greenzmq/codec.py): names, chains, registration, the one decoding error.

No sockets here: how ``send_obj``/``recv_obj`` use these codecs on a green
socket is tests/test_serialize.py.
"""

from __future__ import annotations

import pickle
import zlib

import msgpack
import pytest
from conftest import ReversedCodec as Reversed

import greenzmq
from greenzmq import codec, serialize
from greenzmq.codec import Codec, DeserializationError, dumps, get_codec, loads, register_codec

OBJ = {"name": "greenzmq", "n": [1, 2, 3], "f": 2.5, "ok": True, "none": None, "text": "héllo ☃"}
BASE_CODECS = ["json", "pickle", "msgpack"]
COMPRESSIONS = ["", "+zlib", "+blosc"]
#: The public names of the registry, which greenzmq.serialize exports too.
REGISTRY_NAMES = [
    "Codec",
    "DeserializationError",
    "DEFAULT_CODEC",
    "register_codec",
    "get_codec",
    "dumps",
    "loads",
]


def _codec_or_skip(name):
    try:
        get_codec(name)
    except LookupError:
        pytest.skip(f"{name}: an optional compressor is not installed")
    return name


class Upper:
    """Another custom codec, to replace Reversed under the same name."""

    @staticmethod
    def dumps(obj):
        return str(obj).upper().encode()

    @staticmethod
    def loads(data):
        return bytes(data).decode().lower()


@pytest.fixture
def scratch_names():
    """Names registered globally by a test, removed afterwards (the registry is process-wide)."""
    names = []
    yield names
    for name in names:
        codec._registry.pop(name, None)


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("base", BASE_CODECS)
def test_every_builtin_codec_round_trips(base, compression):
    name = _codec_or_skip(base + compression)
    assert loads(dumps(OBJ, name), name) == OBJ


def test_chains_apply_left_to_right_out_and_right_to_left_in():
    assert dumps(OBJ, "pickle+zlib") == zlib.compress(pickle.dumps(OBJ, pickle.DEFAULT_PROTOCOL))
    assert loads(zlib.compress(msgpack.packb(OBJ)), "msgpack+zlib") == OBJ
    chained = get_codec("json+zlib")
    assert chained.name == "json+zlib" and not chained.unsafe
    assert get_codec("pickle+zlib").unsafe  # unsafe if any link is


def test_module_helpers_for_devices_and_event_loop():
    data = dumps(OBJ, "msgpack+zlib")
    assert loads(data, "msgpack+zlib") == OBJ
    with pytest.raises(DeserializationError) as info:
        loads(pickle.dumps(1), "pickle", allow_pickle=False)
    assert info.value.codec == "pickle"
    assert isinstance(get_codec("pickle+zlib"), Codec) and get_codec("pickle+zlib").unsafe
    assert loads(dumps(OBJ, get_codec("json")), get_codec("json")) == OBJ  # a Codec, not a name


def test_register_a_codec_globally_or_in_a_registry_of_its_own(scratch_names):
    scratch_names.append("rev-global")
    entry = register_codec("rev-global", Reversed)
    assert isinstance(entry, Codec) and entry.name == "rev-global" and not entry.unsafe
    assert dumps("abc", "rev-global") == b"cba"
    assert loads(dumps("abc", "rev-global+zlib"), "rev-global+zlib") == "abc"
    own: dict = {}
    register_codec("rev-local", Reversed, unsafe=True, registry=own)
    assert get_codec("rev-local", own).unsafe
    assert loads(b"cba", "rev-local", registry=own) == "abc"
    with pytest.raises(DeserializationError, match="refused"):
        loads(b"cba", "rev-local", allow_pickle=False, registry=own)
    with pytest.raises(LookupError):
        get_codec("rev-local")  # only in its own registry


def test_bad_names_raise():
    for bad in ("", "a+b"):
        with pytest.raises(ValueError):
            register_codec(bad, Reversed)
    with pytest.raises(LookupError, match=r"'nope'.*registered: \[.*'json'"):
        get_codec("json+nope")


def test_registering_a_name_again_replaces_every_lookup_of_it(scratch_names):
    """Resolved names are cached; a registration must never leave a stale codec behind."""
    scratch_names.append("case")
    register_codec("case", Reversed)
    assert dumps("abc", "case") == b"cba"
    assert dumps("abc", "case+zlib") == zlib.compress(b"cba")  # both names now cached
    register_codec("case", Upper)
    assert dumps("abc", "case") == b"ABC"
    assert dumps("abc", "case+zlib") == zlib.compress(b"ABC")


def test_every_decoding_failure_is_one_error_with_its_cause():
    with pytest.raises(DeserializationError) as info:
        loads(b"{not json", "json")
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, pickle.UnpicklingError)
    assert (err.codec, err.payload_size) == ("json", 9)
    assert "json" in str(err) and "9 bytes" in str(err)
    assert type(err.__cause__).__name__ == "JSONDecodeError"
    with pytest.raises(DeserializationError) as info:
        loads(b"not zlib", "pickle+zlib")
    assert info.value.codec == "pickle+zlib" and isinstance(info.value.__cause__, zlib.error)


def test_a_refused_codec_never_runs_its_loads():
    calls = []
    refused = Codec("spy", dumps=bytes, loads=calls.append, unsafe=True)
    with pytest.raises(DeserializationError, match="refused") as info:
        loads(b"payload", refused, allow_pickle=False)
    assert calls == [] and info.value.payload_size == len(b"payload")
    guard = codec.Guard("spy", calls.append, refuse=True)
    with pytest.raises(DeserializationError, match="refused"):
        guard(b"x")
    assert calls == []
    assert codec.Guard("spy", calls.append)(b"x") is None and calls == [b"x"]


def test_serialize_and_the_package_still_export_the_registry():
    for name in REGISTRY_NAMES:
        assert getattr(serialize, name) is getattr(codec, name), name
        assert name in serialize.__all__
    assert greenzmq.DeserializationError is DeserializationError
    assert greenzmq.register_codec is register_codec
