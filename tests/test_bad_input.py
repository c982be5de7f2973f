"""Bad input everywhere: every decoder, fed arbitrary bytes and
frame shapes, returns a value or raises the one documented
:class:`greenzmq.DeserializationError`, never hangs or crashes, and the socket
stays usable (the next good message arrives intact). Invalid arguments raise
exactly what plain pyzmq raises.

tests/test_serialize.py already corrupts *valid* payloads of each codec
(truncation, spliced junk) for ``recv_obj``; this file covers what it does not:
arbitrary bytes for each receiver (``recv_string`` with several encodings,
``recv_json``, ``recv_obj``/``recv_objs`` with msgpack, json and zlib chains,
pickle refusal), arbitrary array metadata and frame counts for ``recv_array``,
arbitrary multipart shapes for ``recv_objs``/``recv_serialized``/
``recv_multipart``, and the argument errors.
"""

from __future__ import annotations

import json
import pickle

import gevent
import msgpack
import numpy as np
import pytest
import zmq as pyzmq
from conftest import TERM_BOUND, WAKE_BOUND, inproc_endpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import greenzmq
from greenzmq.serialize import DeserializationError

#: Examples per property: enough to hit the odd corner, small enough that the
#: whole file runs in a few seconds on a shared 2-core machine.
EXAMPLES = 200
#: Hypothesis settings shared by every property (the socket pair is module-scoped).
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: Every receive in this file is bounded: a lost message fails, never hangs.
RCVTIMEO_MS = int(WAKE_BOUND * 1000) * 5
#: Codecs whose ``loads`` is safe on arbitrary bytes (never pickle: feeding
#: random bytes to pickle.loads is the code execution allow_pickle=False stops).
SAFE_CODECS = ["json", "msgpack", "zlib", "json+zlib", "msgpack+zlib"]
#: Encodings recv_string is tried with: variable-width, fixed-width and strict
#: single-byte ones, each of which rejects some byte strings.
ENCODINGS = ["utf-8", "utf-16", "utf-32", "ascii", "utf-16-le", "shift_jis", "cp1252"]
#: The sentinel that proves the socket is still usable after each bad message.
GOOD = {"good": True, "n": [1, 2, 3]}

frames_st = st.lists(st.binary(max_size=64), min_size=1, max_size=6)


@pytest.fixture(scope="module")
def pair():
    """One PAIR/PAIR over inproc for the whole module (hypothesis runs many
    examples per test; a fresh pair each would dominate the run time)."""
    context = greenzmq.Context()
    a, b = context.socket(greenzmq.PAIR), context.socket(greenzmq.PAIR)
    for s in (a, b):
        s.linger = 0
        s.rcvtimeo = RCVTIMEO_MS
        s.sndtimeo = RCVTIMEO_MS
    addr = inproc_endpoint("bad")
    a.bind(addr)
    b.connect(addr)
    yield a, b
    with gevent.Timeout(TERM_BOUND, AssertionError("context did not terminate within the bound")):
        context.destroy(linger=0)


@pytest.fixture
def clean(pair):
    """The pair, with pickle allowed again and nothing left queued after the test."""
    a, b = pair
    yield a, b
    a.context.allow_pickle = True
    with pytest.raises(pyzmq.Again):
        b.recv(greenzmq.NOBLOCK)


def _then_good(a, b, frames, recv):
    """Send ``frames`` then GOOD; run ``recv``; return its value or the
    DeserializationError; assert GOOD arrives next, intact."""
    a.send_multipart(frames)
    a.send_json(GOOD)
    try:
        result = recv(b)
    except DeserializationError as exc:
        assert isinstance(exc, ValueError) and isinstance(exc, pickle.UnpicklingError)
        assert exc.__cause__ is not None or "refused" in exc.reason or "frames" in exc.reason
        result = exc
    assert b.recv_json() == GOOD
    return result


# -- decoders fed arbitrary bytes ----------------------------------------------------------


@pytest.mark.timeout(60)
@PROPERTY
@given(data=st.binary(max_size=200), encoding=st.sampled_from(ENCODINGS))
def test_recv_string_any_bytes_any_encoding(clean, data, encoding):
    a, b = clean
    result = _then_good(a, b, [data], lambda s: s.recv_string(encoding=encoding))
    try:
        expected = data.decode(encoding)
    except UnicodeDecodeError:
        assert isinstance(result, DeserializationError) and result.codec == encoding
        assert isinstance(result.__cause__, UnicodeDecodeError)
    else:
        assert result == expected


json_text_st = st.one_of(
    st.binary(max_size=120),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
        max_leaves=8,
    ).map(lambda o: json.dumps(o).encode()),
    # deep nesting: the stdlib parser's RecursionError must still become the one error
    st.integers(1, 100_000).map(lambda n: b"[" * n),
    st.integers(1, 100_000).map(lambda n: b"9" * n),  # int-digits limit (ValueError)
)


@pytest.mark.timeout(60)
@PROPERTY
@given(data=json_text_st)
def test_recv_json_any_bytes(clean, data):
    a, b = clean
    result = _then_good(a, b, [data], lambda s: s.recv_json())
    if isinstance(result, DeserializationError):
        assert result.codec == "json"
    else:
        assert result == json.loads(data)


@pytest.mark.timeout(60)
@PROPERTY
@given(data=st.binary(max_size=200), codec=st.sampled_from(SAFE_CODECS))
def test_recv_obj_any_bytes_safe_codecs(clean, data, codec):
    a, b = clean
    result = _then_good(a, b, [data], lambda s: s.recv_obj(codec=codec))
    if isinstance(result, DeserializationError):
        assert result.codec == codec
        assert result.payload_size == len(data)


@pytest.mark.timeout(60)
@PROPERTY
@given(data=st.binary(max_size=200), codec=st.sampled_from(["pickle", "pickle+zlib", "json+pickle"]))
def test_pickle_refused_whatever_the_bytes(clean, data, codec):
    """With allow_pickle off, any payload for an unsafe codec is refused, and
    is never handed to pickle.loads (random bytes would otherwise run it)."""
    a, b = clean
    a.context.allow_pickle = False
    for recv in (lambda s: s.recv_obj(codec=codec), lambda s: s.recv_objs(codec=codec)):
        result = _then_good(a, b, [data], recv)
        assert isinstance(result, DeserializationError)
        assert result.codec == codec and "refused" in result.reason
        assert result.__cause__ is None  # refused before any decoding
    result = _then_good(a, b, [data], lambda s: s.recv_pyobj())
    assert (
        isinstance(result, DeserializationError) and result.codec == "pickle" and "refused" in result.reason
    )


@pytest.mark.timeout(60)
@PROPERTY
@given(frames=frames_st, codec=st.sampled_from(SAFE_CODECS))
def test_recv_objs_any_multipart_shape(clean, frames, codec):
    """recv_objs consumes the whole message even when a middle frame is bad."""
    a, b = clean
    result = _then_good(a, b, frames, lambda s: s.recv_objs(codec=codec))
    if not isinstance(result, DeserializationError):
        assert len(result) == len(frames)


# -- arrays: arbitrary metadata and frame counts -------------------------------------------

dtype_st = st.one_of(
    st.sampled_from(
        ["<f8", "|u1", ">i4", "<c16", "|b1", "<M8[ms]", "<U3", "|O", "|V4", "nonsense", "", "<f3"]
    ),
    st.text(max_size=6),
    st.lists(
        st.tuples(st.sampled_from(["a", "b", ""]), st.sampled_from(["<i4", "|O", ">f8", "x"])), max_size=3
    ),
    st.integers(),
    st.none(),
)
shape_st = st.one_of(
    st.lists(st.integers(-3, 40), max_size=4),
    st.lists(st.integers(0, 2), min_size=60, max_size=80),  # around the dimension limit
    st.lists(st.integers(2**31, 2**64), min_size=1, max_size=3),  # overflowing products
    st.lists(st.floats(0, 4) | st.text(max_size=2) | st.none(), min_size=1, max_size=2),
    st.integers(0, 5),
    st.text(max_size=3),
    st.none(),
)
meta_st = st.fixed_dictionaries(
    {},
    optional={
        "dtype": dtype_st,
        "shape": shape_st,
        "order": st.sampled_from(["C", "F", "K", "", None, 1]),
    },
)


@pytest.mark.timeout(60)
@PROPERTY
@given(
    meta=meta_st, nbytes=st.integers(0, 300), raw_meta=st.none() | st.binary(max_size=40), copy=st.booleans()
)
def test_recv_array_arbitrary_metadata(clean, meta, nbytes, raw_meta, copy):
    a, b = clean
    md = raw_meta if raw_meta is not None else json.dumps(meta).encode()
    data = bytes(range(256)) * 2
    result = _then_good(a, b, [md, data[:nbytes]], lambda s: s.recv_array(copy=copy))
    if isinstance(result, DeserializationError):
        assert result.codec == "array"
    else:
        assert isinstance(result, np.ndarray)
        assert not result.dtype.hasobject  # raw memory is never read as pointers
        assert result.nbytes == nbytes
        assert result.tobytes(order="A") == data[:nbytes]


#: Metadata with a zero dimension beside one numpy cannot represent: the
#: product is 0, which matches an empty data frame, so it passes the size
#: checks and only numpy itself refuses the shape (once a plain ValueError
#: escaped that way).
ZERO_BESIDE_HUGE = [[2**62, 0], [0, 2**70], [2**64, 0]]


@pytest.mark.parametrize("shape", ZERO_BESIDE_HUGE, ids=str)
def test_recv_array_zero_size_with_an_impossible_dimension(clean, shape):
    a, b = clean
    md = json.dumps({"dtype": "<f8", "shape": shape}).encode()
    a.send_multipart([md, b""])
    a.send_json(GOOD)
    try:
        with pytest.raises(DeserializationError):
            b.recv_array()
    finally:
        assert b.recv_json() == GOOD  # the message was consumed either way


@pytest.mark.timeout(60)
@PROPERTY
@given(frames=st.lists(st.binary(max_size=24), max_size=5).filter(lambda f: len(f) != 2))
def test_recv_array_wrong_frame_count(clean, frames):
    a, b = clean
    frames = frames or [b""]
    result = _then_good(a, b, frames, lambda s: s.recv_array())
    assert isinstance(result, DeserializationError) and result.codec == "array"
    assert "frames" in result.reason


# -- shapes the helpers expect ------------------------------------------------------------


@pytest.mark.timeout(60)
@PROPERTY
@given(frames=frames_st)
def test_recv_serialized_gets_the_whole_message_and_user_errors_propagate(clean, frames):
    """recv_serialized hands the deserializer the whole message, as pyzmq
    does; an error of the user's own deserializer propagates unchanged (it is
    not greenzmq's to rename) and the message is consumed all the same."""
    a, b = clean
    assert _then_good(a, b, frames, lambda s: s.recv_serialized(list)) == frames

    def picky(msg):
        if len(msg) != 3:
            raise KeyError(len(msg))
        return msg

    a.send_multipart(frames)
    a.send_json(GOOD)
    if len(frames) == 3:
        assert b.recv_serialized(picky) == frames
    else:
        with pytest.raises(KeyError):
            b.recv_serialized(picky)
    assert b.recv_json() == GOOD


@pytest.mark.timeout(60)
@PROPERTY
@given(frames=frames_st, copy=st.booleans())
def test_single_frame_receivers_on_multipart_read_frame_by_frame(clean, frames, copy):
    """As with pyzmq, a single-frame receiver (recv_string, recv_json, recv_obj)
    on a multipart message takes one frame; RCVMORE tells the rest is there,
    and recv_multipart then gets exactly the remaining frames, nothing lost."""
    a, b = clean
    a.send_multipart(frames)
    a.send_json(GOOD)
    first = b.recv(copy=copy)
    assert bytes(first) == frames[0]
    assert b.rcvmore == (len(frames) > 1)
    if len(frames) > 1:
        assert b.recv_multipart() == frames[1:]
    assert b.recv_json() == GOOD


# -- invalid arguments: the same errors as plain pyzmq -------------------------------------


def _outcome(fn):
    """(exception type, errno) of ``fn()``, or ("ok", None)."""
    try:
        fn()
    except pyzmq.ZMQError as exc:
        return type(exc), exc.errno
    except Exception as exc:  # noqa: BLE001 - we compare whatever is raised
        return type(exc), None
    return "ok", None


def _same(fn):
    """Run ``fn(module, context)`` against plain pyzmq and greenzmq; assert both
    raise the same exception type and errno (and that it is an error)."""
    results = []
    for mod in (pyzmq, greenzmq):
        context = mod.Context()
        try:
            results.append(_outcome(lambda mod=mod, context=context: fn(mod, context)))
        finally:
            context.destroy(linger=0)
    plain, green = results
    assert plain[0] != "ok", "the case should be an error in plain pyzmq"
    # greenzmq's exceptions are pyzmq's own classes (error.py re-exports them)
    assert (green[0].__name__, green[1]) == (plain[0].__name__, plain[1]), (plain, green)
    return plain


def _sock(mod, context, kind=pyzmq.PAIR):
    s = context.socket(kind)
    s.linger = 0
    return s


INVALID = {
    "unknown socket type": lambda m, c: c.socket(9999),
    "negative socket type": lambda m, c: c.socket(-1),
    "socket type not int": lambda m, c: c.socket("PAIR"),
    "bind nonsense": lambda m, c: _sock(m, c).bind("nonsense"),
    "bind unknown transport": lambda m, c: _sock(m, c).bind("carrier-pigeon://x"),
    "bind tcp no port": lambda m, c: _sock(m, c).bind("tcp://127.0.0.1"),
    "connect nonsense": lambda m, c: _sock(m, c).connect("nonsense"),
    "connect tcp no port": lambda m, c: _sock(m, c).connect("tcp://127.0.0.1"),
    "unbind never bound": lambda m, c: _sock(m, c).unbind("tcp://127.0.0.1:1"),
    "disconnect never connected": lambda m, c: _sock(m, c).disconnect("tcp://127.0.0.1:1"),
    "int option given str": lambda m, c: _sock(m, c).setsockopt(pyzmq.LINGER, "long"),
    "int option given float": lambda m, c: _sock(m, c).setsockopt(pyzmq.RCVTIMEO, 1.5),
    "bytes option given int": lambda m, c: _sock(m, c, pyzmq.SUB).setsockopt(pyzmq.SUBSCRIBE, 5),
    "bytes option given str": lambda m, c: _sock(m, c, pyzmq.DEALER).setsockopt(pyzmq.ROUTING_ID, "id"),
    "unknown option": lambda m, c: _sock(m, c).setsockopt(123456, 1),
    "get unknown option": lambda m, c: _sock(m, c).getsockopt(123456),
    "attribute option wrong type": lambda m, c: setattr(_sock(m, c), "sndhwm", "lots"),
    "subscribe on a PAIR": lambda m, c: _sock(m, c).setsockopt(pyzmq.SUBSCRIBE, b""),
    "send str": lambda m, c: _sock(m, c).send("text", pyzmq.NOBLOCK),
    "send int": lambda m, c: _sock(m, c).send(5, pyzmq.NOBLOCK),
    "send_multipart str frame": lambda m, c: _sock(m, c).send_multipart([b"a", "b"], pyzmq.NOBLOCK),
    "send_multipart not a list": lambda m, c: _sock(m, c).send_multipart(5),
    "recv REQ before send": lambda m, c: _sock(m, c, pyzmq.REQ).recv(pyzmq.NOBLOCK),
    "send REP before recv": lambda m, c: _sock(m, c, pyzmq.REP).send(b"x", pyzmq.NOBLOCK),
    "send_json not serializable": lambda m, c: _sock(m, c).send_json(object()),
    "send_string bytes": lambda m, c: _sock(m, c).send_string(b"bytes"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_arguments_raise_what_pyzmq_raises(case):
    _same(INVALID[case])


def _closed(m, c, kind=pyzmq.PAIR):
    s = _sock(m, c, kind)
    s.close()
    return s


CLOSED = {
    "send": lambda m, c: _closed(m, c).send(b"x"),
    "recv": lambda m, c: _closed(m, c).recv(),
    "send_multipart": lambda m, c: _closed(m, c).send_multipart([b"a", b"b"]),
    "recv_multipart": lambda m, c: _closed(m, c).recv_multipart(),
    "recv_string": lambda m, c: _closed(m, c).recv_string(),
    "bind": lambda m, c: _closed(m, c).bind("tcp://127.0.0.1:*"),
    "connect": lambda m, c: _closed(m, c).connect("tcp://127.0.0.1:1"),
    "setsockopt": lambda m, c: _closed(m, c).setsockopt(pyzmq.LINGER, 0),
    "getsockopt": lambda m, c: _closed(m, c).getsockopt(pyzmq.LINGER),
    "attribute": lambda m, c: _closed(m, c).rcvmore,
    "poll": lambda m, c: _closed(m, c).poll(10),
    "subscribe": lambda m, c: _closed(m, c, pyzmq.SUB).subscribe(b""),
    "send_json": lambda m, c: _closed(m, c).send_json({}),
    "recv_json": lambda m, c: _closed(m, c).recv_json(),
    "recv_pyobj": lambda m, c: _closed(m, c).recv_pyobj(),
    "recv_into": lambda m, c: _closed(m, c).recv_into(bytearray(4)),
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", list(CLOSED))
def test_operations_on_a_closed_socket_raise_what_pyzmq_raises(case):
    _same(CLOSED[case])


@pytest.mark.timeout(20)
@pytest.mark.parametrize("timeout_ms", [0, 50])
def test_polling_a_closed_socket_is_a_clear_error(timeout_ms):
    """The one deliberate difference from plain pyzmq here: pyzmq's Poller and
    select poll a closed socket as fd 0 (stdin!) and report ``(0, POLLERR)``;
    greenzmq raises ZMQError(ENOTSOCK) naming the socket (greenzmq/poll.py)."""
    context = greenzmq.Context()
    try:
        s = _closed(greenzmq, context)
        poller = greenzmq.Poller()
        poller.register(s, greenzmq.POLLIN)
        for call in (
            lambda: poller.poll(timeout_ms),
            lambda: greenzmq.select([s], [], [], timeout_ms / 1000),
        ):
            with pytest.raises(greenzmq.ZMQError) as info:
                call()
            assert info.value.errno == greenzmq.ENOTSOCK
            assert "closed" in str(info.value)
    finally:
        context.destroy(linger=0)


def _terminated(m, c):
    c.term()
    return c


TERMINATED = {
    "socket": lambda m, c: _terminated(m, c).socket(pyzmq.PAIR),
    "get option": lambda m, c: _terminated(m, c).getsockopt(pyzmq.LINGER),
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", list(TERMINATED))
def test_operations_on_a_terminated_context_raise_what_pyzmq_raises(case):
    _same(TERMINATED[case])


@pytest.mark.timeout(20)
def test_socket_of_a_context_terminated_while_open_raises_what_pyzmq_raises():
    """A socket whose context is terminating: operations raise ContextTerminated
    (ETERM), in a green context exactly as in a plain one."""

    def case(m, c):
        s = _sock(m, c)
        s.bind(inproc_endpoint("term"))
        # term blocks until the socket is closed, so it runs beside the recv:
        # in a greenlet for greenzmq (green term), in a thread for plain pyzmq.
        # Either order works: a recv already blocked is woken with ETERM too.
        ended = []
        if m is greenzmq:
            g = gevent.spawn(c.term)
            try:
                s.recv()
            except pyzmq.ZMQError as exc:
                ended.append(exc)
            s.close()
            g.join(TERM_BOUND)
            assert g.dead
        else:
            import threading

            t = threading.Thread(target=c.term)
            t.start()
            try:
                s.recv()
            except pyzmq.ZMQError as exc:
                ended.append(exc)
            s.close()
            t.join(TERM_BOUND)
            assert not t.is_alive()
        raise ended[0]

    plain = _same(case)
    assert plain == (pyzmq.ContextTerminated, pyzmq.ETERM)


@pytest.mark.timeout(20)
def test_codec_name_and_array_argument_errors():
    """greenzmq's own additions validate their arguments too: an unknown
    codec is a LookupError (as codecs.lookup), an object array a TypeError,
    before anything is sent."""
    context = greenzmq.Context()
    try:
        a, b = _sock(greenzmq, context), _sock(greenzmq, context)
        addr = inproc_endpoint("args")
        a.bind(addr)
        b.connect(addr)
        b.rcvtimeo = RCVTIMEO_MS
        with pytest.raises(LookupError):
            a.send_obj(1, codec="no-such-codec")
        with pytest.raises(LookupError):
            a.codec = "json+nope"
        with pytest.raises(LookupError):
            context.codec = "nope"
        with pytest.raises(TypeError):
            a.send_array(np.array([object()], dtype=object))
        with pytest.raises(TypeError):
            a.send_obj(object(), codec="json")
        a.send_string("still fine")
        assert b.recv_string() == "still fine"
        with pytest.raises(pyzmq.Again):
            b.recv(greenzmq.NOBLOCK)  # nothing half-sent by the failed calls
    finally:
        context.destroy(linger=0)


def test_msgpack_huge_declared_length_is_refused_without_allocating(clean):
    """msgpack headers can claim 4 GiB strings or arrays; the decoder must
    refuse against the actual frame size, not allocate."""
    a, b = clean
    for payload in (b"\xdb\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff"):
        result = _then_good(a, b, [payload], lambda s: s.recv_obj(codec="msgpack"))
        assert isinstance(result, DeserializationError) and result.codec == "msgpack"
    assert msgpack.packb(GOOD)  # the codec itself is fine


def _recv_with(call):
    """A case for _same: a PAIR pair, one message queued, then ``call(receiver)``."""

    def case(m, c):
        a, b = _sock(m, c), _sock(m, c)
        addr = inproc_endpoint("argrecv")
        a.bind(addr)
        b.connect(addr)
        a.send(b"1")
        call(b)

    return case


BAD_RECV_ARGUMENTS = {
    "recv_string unknown encoding": _recv_with(lambda s: s.recv_string(encoding="no-such-encoding")),
    "recv_string encoding not a str": _recv_with(lambda s: s.recv_string(encoding=5)),
    "recv_json unknown keyword": _recv_with(lambda s: s.recv_json(no_such_keyword=1)),
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", list(BAD_RECV_ARGUMENTS))
def test_invalid_receiver_arguments_raise_what_pyzmq_raises(case):
    _same(BAD_RECV_ARGUMENTS[case])
