"""Serialization on green sockets (greenzmq/serialize.py): pyzmq's serializers green, codecs on
the context, numpy zero-copy, bad payloads. The codec registry itself: tests/test_codec.py."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import gevent
import msgpack
import numpy as np
import pytest
import zmq as pyzmq
from conftest import TERM_BOUND, WAKE_BOUND, inproc_endpoint
from conftest import ReversedCodec as Reversed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import greenzmq
from greenzmq import codec, serialize
from greenzmq.serialize import (
    Codec,
    DeserializationError,
    SerializingContextMixin,
    SerializingSocketMixin,
    array_to_frames,
    frames_to_array,
)
from greenzmq.tracker import MessageTracker

# Until the lead wires the mixins into greenzmq.Socket/Context, test them on
# local subclasses; afterwards, on the real classes.
if issubclass(greenzmq.Socket, SerializingSocketMixin) and issubclass(
    greenzmq.Context, SerializingContextMixin
):
    S, C = greenzmq.Socket, greenzmq.Context
else:

    class S(SerializingSocketMixin, greenzmq.Socket):
        pass

    class C(SerializingContextMixin, greenzmq.Context):
        _socket_class = S


#: Greenlets per side in the concurrency tests, and messages each.
GREENLETS = 10
PER_GREENLET = 20
#: The "big" array of the zero-copy test (the issue asks for 100 MB).
BIG_ARRAY_BYTES = 100 * 1024 * 1024
#: Python/numpy memory allowed while moving BIG_ARRAY_BYTES without a copy.
NO_COPY_BOUND = 10 * 1024 * 1024

OBJ = {"name": "greenzmq", "n": [1, 2, 3], "f": 2.5, "ok": True, "none": None, "text": "héllo ☃"}
BASE_CODECS = ["json", "pickle", "msgpack"]
COMPRESSIONS = ["", "+zlib", "+blosc"]


@pytest.fixture
def ctx():
    """Overrides conftest's ctx: a context with the serialization mixins."""
    context = C()
    yield context
    with gevent.Timeout(TERM_BOUND, AssertionError("context did not terminate within the bound")):
        context.destroy(linger=0)


@pytest.fixture
def pair(make_pair):
    return make_pair(greenzmq.PAIR, greenzmq.PAIR)


def _codec_or_skip(name):
    try:
        serialize.get_codec(name)
    except LookupError:
        pytest.skip(f"{name}: an optional compressor is not installed")
    return name


# -- pyzmq's serializers are green ------------------------------------------------------

PYZMQ_SERIALIZERS = {
    "string": (
        lambda s, i: s.send_string(f"✓ msg {i}", encoding="utf-16"),
        lambda s: s.recv_string(encoding="utf-16"),
    ),
    "json": (lambda s, i: s.send_json({"i": i, "v": [i] * 3}), lambda s: s.recv_json()),
    "pyobj": (lambda s, i: s.send_pyobj((i, {i}, b"x")), lambda s: s.recv_pyobj()),
    "serialized": (
        lambda s, i: s.send_serialized(i, lambda m: [b"hdr", str(m).encode(), b"end"]),
        lambda s: s.recv_serialized(lambda frames: (frames[0], int(frames[1]), frames[2])),
    ),
    "obj": (lambda s, i: s.send_obj({"i": i}), lambda s: s.recv_obj()),
    "objs": (lambda s, i: s.send_objs([i, "two", [3]]), lambda s: s.recv_objs()),
}
EXPECTED = {
    "string": lambda i: f"✓ msg {i}",
    "json": lambda i: {"i": i, "v": [i] * 3},
    "pyobj": lambda i: (i, {i}, b"x"),
    "serialized": lambda i: (b"hdr", i, b"end"),
    "obj": lambda i: {"i": i},
    "objs": lambda i: [i, "two", [3]],
}


@pytest.mark.parametrize("kind", sorted(PYZMQ_SERIALIZERS))
def test_serializers_many_greenlets_each_side(make_pair, spawn, kind):
    """Receivers park first (the waiting path), many senders then share one socket."""
    send, recv = PYZMQ_SERIALIZERS[kind]
    pull, push = make_pair(greenzmq.PULL, greenzmq.PUSH)
    push.sndhwm = pull.rcvhwm = 5  # make senders block on the high-water mark too
    total = GREENLETS * PER_GREENLET
    got = []
    receivers = [
        spawn(lambda: [got.append(recv(pull)) for _ in range(PER_GREENLET)]) for _ in range(GREENLETS)
    ]
    gevent.sleep(0)
    senders = [
        spawn(lambda g=g: [send(push, g * PER_GREENLET + k) for k in range(PER_GREENLET)])
        for g in range(GREENLETS)
    ]
    gevent.joinall(senders + receivers, timeout=WAKE_BOUND * 20, raise_error=True)
    assert len(got) == total
    expected = [EXPECTED[kind](i) for i in range(total)]
    assert sorted(map(repr, got)) == sorted(map(repr, expected))


# -- codecs --------------------------------------------------------------------------


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("base", BASE_CODECS)
def test_every_codec_round_trips_single_and_multipart(pair, base, compression):
    name = _codec_or_skip(base + compression)
    a, b = pair
    a.send_obj(OBJ, codec=name)
    assert b.recv_obj(codec=name) == OBJ
    a.send_objs([OBJ, [1, "x"], 7], codec=name)
    assert b.recv_objs(codec=name) == [OBJ, [1, "x"], 7]
    b.codec = name  # the socket's default
    a.send_obj(OBJ, codec=name)
    assert b.recv_obj() == OBJ


def test_seed_recipes_are_one_line_and_interoperate_with_plain_pyzmq(pair):
    a, b = pair
    a.send_obj(OBJ, codec="pickle+zlib")  # pyzmq docs' send_zipped_pickle
    assert pickle.loads(zlib.decompress(b.recv())) == OBJ
    a.send(zlib.compress(pickle.dumps(OBJ)))
    assert b.recv_obj(codec="pickle+zlib") == OBJ
    a.send_obj(OBJ, codec="msgpack")
    assert msgpack.unpackb(b.recv()) == OBJ
    a.send_json(OBJ)  # pyzmq's send_json speaks our json codec
    assert b.recv_obj(codec="json") == OBJ


def test_sockets_inherit_the_context_codec_live_and_can_override(ctx, pair):
    a, b = pair
    assert ctx.codec == serialize.DEFAULT_CODEC == a.codec
    ctx.codec = "msgpack"
    assert a.codec == b.codec == "msgpack"
    a.send_obj([1, 2])
    assert b.recv() == msgpack.packb([1, 2])
    a.codec = "json"
    assert (a.codec, b.codec) == ("json", "msgpack")
    a.send_obj([1, 2])
    assert json.loads(b.recv()) == [1, 2]
    a.codec = None  # back to inheriting
    assert a.codec == "msgpack"
    with pytest.raises(LookupError, match="nope"):
        ctx.codec = "nope"
    with pytest.raises(LookupError, match="nope"):
        a.codec = "json+nope"
    with pytest.raises(LookupError):
        a.send_obj(1, codec="nope")
    assert ctx.codec == "msgpack"
    with pytest.raises(AttributeError):
        ctx.no_such_thing = 1  # pyzmq's AttributeSetter is intact: unknown names are not stored


def test_register_a_codec_per_context_and_globally(ctx, pair):
    a, b = pair
    entry = ctx.register_codec("rev", Reversed)
    assert isinstance(entry, Codec)
    a.send_obj("abc", codec="rev+zlib")
    assert b.recv_obj(codec="rev+zlib") == "abc"
    other = C()
    try:
        with pytest.raises(LookupError):
            other.get_codec("rev")
        try:
            serialize.register_codec("rev-global", Reversed)
            assert other.get_codec("rev-global").loads(b"cba") == "abc"
            a.send_obj("xyz", codec="rev-global")
            assert b.recv() == b"zyx"
        finally:
            codec._registry.pop("rev-global", None)
    finally:
        other.term()


@pytest.mark.timeout(30)
def test_senders_return_the_tracker_the_green_send_returns(pair):
    """Green while it may be pending; pyzmq's own finished tracker when the
    send was copied anyway (below copy_threshold); None without track."""
    a, b = pair
    dealer = a.context.socket(greenzmq.DEALER)
    dealer.linger = 0
    endpoint = inproc_endpoint("later")
    dealer.connect(endpoint)  # nobody listens yet: libzmq holds the message, the tracker is pending
    tracker = dealer.send_obj(b"x" * 100_000, codec="pickle", copy=False, track=True)
    assert isinstance(tracker, MessageTracker) and not tracker.done
    router = a.context.socket(greenzmq.ROUTER)
    router.linger = 0
    router.bind(endpoint)
    assert pickle.loads(router.recv_multipart()[1]) == b"x" * 100_000
    tracker.wait(WAKE_BOUND * 10)
    assert a.send_obj(1) is None
    assert a.send_obj(1, copy=False, track=True) is pyzmq._FINISHED_TRACKER
    assert a.send_objs([1, 2], copy=False, track=True) is pyzmq._FINISHED_TRACKER
    assert a.send_array(np.arange(3), track=True) is pyzmq._FINISHED_TRACKER
    assert [b.recv_obj(), b.recv_obj(), b.recv_objs(), list(b.recv_array())] == [1, 1, [1, 2], [0, 1, 2]]


# -- bad payloads ----------------------------------------------------------------------

TRUNCATED_PICKLE = pickle.dumps(OBJ)[:-5]
BAD_PAYLOADS = [
    # (what is sent, how it is received, the codec the error names)
    ([b"{not json"], lambda s: s.recv_obj(codec="json"), "json"),
    ([b"{not json"], lambda s: s.recv_json(), "json"),
    ([b"\xc1"], lambda s: s.recv_obj(codec="msgpack"), "msgpack"),  # 0xc1: never used in msgpack
    ([msgpack.packb([1, 2]) + b"\x01"], lambda s: s.recv_obj(codec="msgpack"), "msgpack"),  # extra data
    ([TRUNCATED_PICKLE], lambda s: s.recv_obj(codec="pickle"), "pickle"),
    ([TRUNCATED_PICKLE], lambda s: s.recv_pyobj(), "pickle"),
    ([b"not zlib"], lambda s: s.recv_obj(codec="pickle+zlib"), "pickle+zlib"),
    ([b"\xff\xfe\xfa"], lambda s: s.recv_string(), "utf-8"),
    ([b"ok", b"\xff"], lambda s: s.recv_objs(codec="json"), "json"),
    ([b'{"dtype": "<f8", "shape": [3]}', bytes(16)], lambda s: s.recv_array(), "array"),  # 24 needed
    ([b'{"dtype": "|O", "shape": [2]}', bytes(16)], lambda s: s.recv_array(), "array"),  # pointers!
    ([b'{"dtype": "<f8", "shape": [-2]}', bytes(16)], lambda s: s.recv_array(), "array"),
    ([b'{"dtype": "<f8", "shape": [2], "order": "X"}', bytes(16)], lambda s: s.recv_array(), "array"),
    ([b'{"dtype": "nonsense", "shape": [2]}', bytes(16)], lambda s: s.recv_array(), "array"),
    ([b'{"shape": [2]}', bytes(16)], lambda s: s.recv_array(), "array"),
    ([b"[not json", bytes(16)], lambda s: s.recv_array(), "array"),
    ([bytes(16)], lambda s: s.recv_array(), "array"),  # no metadata frame
]


@pytest.mark.parametrize("frames,recv,codec", BAD_PAYLOADS)
def test_bad_payload_raises_one_error_and_the_next_message_is_fine(pair, frames, recv, codec):
    a, b = pair
    a.send_multipart(frames)
    a.send_string("next")
    with pytest.raises(DeserializationError) as info:
        recv(b)
    assert isinstance(info.value, ValueError)
    assert info.value.codec == codec
    assert codec in str(info.value)
    assert b.recv_string() == "next"


def test_pickle_refused_on_receive_when_the_context_says_so(ctx, pair):
    a, b = pair
    ctx.allow_pickle = False
    for send, recv in [
        (lambda: a.send_pyobj(OBJ), b.recv_pyobj),
        (lambda: a.send_obj(OBJ, codec="pickle"), lambda: b.recv_obj(codec="pickle")),
        (lambda: a.send_obj(OBJ, codec="pickle+zlib"), lambda: b.recv_obj(codec="pickle+zlib")),
        (lambda: a.send_obj(OBJ), b.recv_obj),  # the default codec is pickle
    ]:
        send()  # sending pickles is still allowed
        a.send_obj(OBJ, codec="json")
        with pytest.raises(DeserializationError, match="refused") as info:
            recv()
        assert "pickle" in info.value.codec
        assert b.recv_obj(codec="json") == OBJ  # the refused message was consumed, not this one
    ctx.allow_pickle = True
    a.send_pyobj(OBJ)
    assert b.recv_pyobj() == OBJ


def _corrupt(data: bytes, how: int, where: int, junk: bytes) -> bytes:
    cut = where % (len(data) + 1)
    if how == 0:
        return data[:cut]
    if how == 1:
        return data[:cut] + junk + data[cut:]
    return junk


@pytest.mark.timeout(120)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    codec=st.sampled_from(["json", "msgpack", "json+zlib", "msgpack+zlib", "pickle", "pickle+zlib"]),
    obj=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=20),
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
        max_leaves=10,
    ),
    how=st.integers(0, 2),
    where=st.integers(0, 10_000),
    junk=st.binary(min_size=1, max_size=40),
)
def test_property_malformed_payload_then_good_message(pair, codec, obj, how, where, junk):
    """Whatever the corruption, recv_obj returns a value or raises
    DeserializationError, and the next message arrives intact. Pickle payloads
    are only truncated: feeding random bytes to pickle.loads is exactly the
    code execution that allow_pickle=False exists to prevent."""
    a, b = pair
    if "pickle" in codec:
        how = 0
    payload = _corrupt(serialize.dumps(obj, codec), how, where, junk)
    a.send(payload)
    a.send_obj(["good", obj], codec=codec)
    try:
        b.recv_obj(codec=codec)
    except DeserializationError as exc:
        assert exc.codec == codec
    assert b.recv_obj(codec=codec) == ["good", obj]


# -- numpy -----------------------------------------------------------------------------

DTYPES = ["u1", "<i2", ">i4", "<f8", "<c16", "?", "<M8[ms]", "<U5", [("a", "<i4"), ("b", ">f8", (2,))]]
SHAPES = [(), (0,), (5,), (3, 4), (2, 0, 3), (2, 3, 4)]


def _sample(dtype, shape):
    n = int(np.prod(shape))
    raw = np.arange(n * np.dtype(dtype).itemsize, dtype=np.uint8) % 251
    return raw.view(dtype).reshape(shape)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_arrays_round_trip(pair, dtype, shape):
    a, b = pair
    A = _sample(dtype, shape)
    a.send_array(A)
    B = b.recv_array()
    assert B.dtype == A.dtype and B.shape == A.shape
    assert A.tobytes() == B.tobytes()


@pytest.mark.parametrize(
    "make,order",
    [
        (lambda: np.arange(60.0).reshape(3, 20)[:, ::2], "C"),  # strided: copied once, to C order
        (lambda: np.arange(60.0).reshape(3, 20)[::2], "C"),  # every other row
        (lambda: np.asfortranarray(np.arange(60.0).reshape(3, 20)), "F"),  # sent as is
        (lambda: np.arange(60.0).reshape(3, 20).T, "F"),
    ],
)
def test_non_contiguous_and_fortran_arrays(pair, make, order):
    a, b = pair
    A = make()
    md, data = array_to_frames(A)
    assert json.loads(md)["order"] == order
    assert np.shares_memory(data, A) == (A.flags.c_contiguous or A.flags.f_contiguous)
    a.send_array(A)
    B = b.recv_array()
    assert np.array_equal(A, B)
    assert B.flags.f_contiguous if order == "F" else B.flags.c_contiguous


def test_metadata_is_pyzmqs_recipe_and_object_arrays_are_refused(pair):
    a, b = pair
    a.send_array(np.arange(4, dtype="<i4"))
    md = b.recv_json()  # pyzmq's documented recv_array recipe reads this
    data = b.recv()
    assert np.array_equal(np.frombuffer(data, dtype=md["dtype"]).reshape(md["shape"]), np.arange(4))
    with pytest.raises(TypeError, match="send_obj"):
        a.send_array(np.array([object()]))
    with pytest.raises(DeserializationError):
        frames_to_array([b'{"dtype": [["a", "|O"]], "shape": [1]}', bytes(8)])


@pytest.mark.timeout(60)
def test_100mb_array_moves_without_a_copy_over_inproc(ctx):
    a = ctx.socket(greenzmq.PAIR)
    b = ctx.socket(greenzmq.PAIR)
    endpoint = inproc_endpoint("array")
    a.bind(endpoint)
    b.connect(endpoint)
    A = np.ones(BIG_ARRAY_BYTES // 8, dtype="<f8")
    tracemalloc.start()
    try:
        tracker = a.send_array(A, track=True)
        B = b.recv_array()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < NO_COPY_BOUND, f"{peak} bytes allocated moving a {BIG_ARRAY_BYTES} byte array"
    # inproc hands over libzmq's message itself: the receiver sees the sender's memory
    assert np.shares_memory(A, B)
    assert not tracker.done  # B still uses A's buffer
    del B
    tracker.wait(WAKE_BOUND * 10)


@pytest.mark.timeout(60)
def test_100mb_array_over_tcp_is_not_copied_by_python(make_pair, transport):
    if transport != "tcp":
        pytest.skip("the inproc case is the test above")
    b, a = make_pair(greenzmq.PAIR, greenzmq.PAIR)
    A = np.ones(BIG_ARRAY_BYTES // 8, dtype="<f8")
    tracemalloc.start()
    try:
        a.send_array(A)
        B = b.recv_array()  # data lands in libzmq's buffer (untraced); no numpy copy on top
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < NO_COPY_BOUND
    assert B.shape == A.shape and B[-1] == 1.0
    assert not B.flags.owndata  # a view on the received frame


def test_without_numpy_array_methods_raise_a_clear_import_error(python_exe):
    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "import greenzmq\n"
        "from greenzmq.serialize import SerializingSocketMixin, SerializingContextMixin\n"
        "if issubclass(greenzmq.Context, SerializingContextMixin):\n"
        "    C = greenzmq.Context\n"
        "else:\n"
        "    class S(SerializingSocketMixin, greenzmq.Socket): pass\n"
        "    class C(SerializingContextMixin, greenzmq.Context): _socket_class = S\n"
        "c = C(); s = c.socket(greenzmq.PAIR); s.linger = 0\n"
        "for call in (lambda: s.send_array([1]), lambda: s.recv_array(greenzmq.NOBLOCK)):\n"
        "    try:\n"
        "        call()\n"
        "    except ImportError as e:\n"
        "        print('IMPORT-ERROR', e)\n"
        "s.close(); c.term()\n"
    )
    out = subprocess.run([python_exe, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("IMPORT-ERROR")]
    assert len(lines) == 2
    assert all("need numpy" in line for line in lines)


def test_msgpack_refuses_non_string_map_keys_on_receive_as_documented(pair):
    a, b = pair
    a.send_obj({1: "a"}, codec="msgpack")
    with pytest.raises(DeserializationError, match="strict_map_key"):
        b.recv_obj(codec="msgpack")


@pytest.mark.timeout(60)
def test_bench_serialize_runs_and_prints_a_ratio_per_case(capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import bench_serialize

    assert bench_serialize.main(["--reps", "2", "--round-trips", "20", "--array-round-trips", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith(("json", "msgpack", "pickle", "16 MB"))]
    assert len(rows) == 5
    assert all(float(row.split()[-1]) > 0 for row in rows)
