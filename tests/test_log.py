"""greenzmq.log: PUBHandler over green sockets, and the `python -m greenzmq.log` subscriber."""

from __future__ import annotations

import logging
import os
import pty
import signal
import sys
import threading

import gevent
import gevent.subprocess
import pytest
from conftest import WAKE_BOUND, inproc_endpoint
from gevent.fileobject import FileObjectPosix

import greenzmq as zmq
from greenzmq.log import PUBHandler, TopicLogger
from greenzmq.log.__main__ import format_record, level_of

#: Bound for one record to travel over loopback, or a subprocess to print it.
RECV_BOUND = 10.0
#: Probe records sent while waiting for a plain PUB's subscriber to join
#: (slow joiner); each waits PROBE_WAIT for an answer, so the total is bounded.
MAX_PROBES = 200
PROBE_WAIT = 0.05
#: Records logged against a subscriber that never reads: far beyond any HWM.
FLOOD = 20000
#: A custom level between INFO and WARNING, with no formatter of its own.
NOTICE = 25
#: Lines of CLI output read while looking for one record (bounded loop).
MAX_LINES = 50
ANSI = "\033["


@pytest.fixture
def logger(request):
    log = logging.getLogger(f"greenzmq-test.{request.node.name}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()


@pytest.fixture
def xpub(ctx):
    """An XPUB bound on tcp loopback: its subscription messages say when a SUB has joined."""
    s = ctx.socket(zmq.XPUB)
    s.linger = 0
    port = s.bind_to_random_port("tcp://127.0.0.1")
    yield s, f"tcp://127.0.0.1:{port}"
    s.close()


def _joined_sub(ctx, xpub_sock, url, topic=b""):
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.subscribe(topic)
    sub.connect(url)
    wait_subscription(xpub_sock, topic)
    return sub


def wait_subscription(xpub_sock, topic=b""):
    with gevent.Timeout(RECV_BOUND, AssertionError("subscriber never joined")):
        assert xpub_sock.recv() == b"\x01" + topic


def recv_record(sub):
    with gevent.Timeout(RECV_BOUND, AssertionError("no record arrived")):
        topic, msg = sub.recv_multipart()
    return topic.decode(), msg.decode()


def test_topics_levels_and_subtopics(ctx, xpub, logger):
    sock, url = xpub
    sub = _joined_sub(ctx, sock, url)
    handler = PUBHandler(sock, root_topic="app")
    logger.addHandler(handler)
    logger.debug("d")
    logger.info("i")
    logger.warning("db.pool::lost %d connections", 3)
    logger.error("e")
    logger.critical("c")
    got = [recv_record(sub) for _ in range(5)]
    topics = [t for t, _ in got]
    assert topics == ["app.DEBUG", "app.INFO", "app.WARNING.db.pool", "app.ERROR", "app.CRITICAL"]
    assert got[1][1] == "i\n"  # pyzmq's INFO format: the message alone
    assert got[2][1].startswith("WARNING test_log.py:") and got[2][1].endswith("lost 3 connections\n")
    assert "::" not in got[2][1]
    handler.root_topic = b"other"  # bytes accepted, as in pyzmq
    logger.info("x")
    assert recv_record(sub)[0] == "other.INFO"


def test_per_level_formatters_and_custom_level(ctx, xpub, logger):
    sock, url = xpub
    sub = _joined_sub(ctx, sock, url)
    handler = PUBHandler(sock)
    handler.setFormatter(logging.Formatter("E! %(message)s"), logging.ERROR)
    logger.addHandler(handler)
    logger.error("bad")
    logger.info("fine")
    logger.log(NOTICE, "notice")  # no formatter for level 25: the default one, no error
    assert recv_record(sub) == ("ERROR", "E! bad")
    assert recv_record(sub) == ("INFO", "fine\n")
    assert recv_record(sub) == (f"Level {NOTICE}", "notice")
    handler.setFormatter(logging.Formatter("all: %(message)s"))
    logger.info("again")
    assert recv_record(sub) == ("INFO", "all: again")


def test_topic_logger(ctx, xpub):
    sock, url = xpub
    sub = _joined_sub(ctx, sock, url)
    log = TopicLogger("greenzmq-test-topiclogger")
    log.setLevel(logging.DEBUG)
    log.addHandler(PUBHandler(sock, root_topic="svc"))
    log.warning("auth.login", "user %s", "ann")
    topic, msg = recv_record(sub)
    assert topic == "svc.WARNING.auth.login" and msg.rstrip().endswith("user ann")
    assert msg.startswith("WARNING test_log.py:")  # the caller's line, not greenzmq's
    log.setLevel(logging.INFO)
    log.debug("quiet", "filtered")  # below the level: nothing sent
    log.info("db", "%d rows", 3)
    assert recv_record(sub) == ("svc.INFO.db", "3 rows\n")


def test_url_uses_the_callers_context_and_plain_pub(ctx, logger):
    handler = PUBHandler("tcp://127.0.0.1:*", context=ctx, root_topic="r")
    assert handler.socket.context is ctx and type(handler.socket) is zmq.Socket
    assert handler.socket.type == zmq.PUB
    url = handler.socket.last_endpoint.decode()
    logger.addHandler(handler)
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.subscribe(b"r.INFO")
    sub.connect(url)
    # plain PUB has no join signal: log probes until one arrives (bounded)
    for i in range(MAX_PROBES):
        logger.info("probe %d", i)
        if sub.poll(PROBE_WAIT * 1000):
            break
    else:
        pytest.fail("subscriber never received a probe")
    assert recv_record(sub)[0] == "r.INFO"
    handler.close()
    assert handler.socket.closed  # it made the socket, so it closes it


def test_default_context_is_greenzmq_instance(logger):
    handler = PUBHandler("inproc://greenzmq-log-default")
    try:
        assert handler.socket.context is zmq.Context.instance()
        assert type(handler.socket) is zmq.Socket
    finally:
        handler.close()


def test_bad_socket_type_and_bad_url(ctx, xpub):
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    with pytest.raises(ValueError, match="PUB or XPUB"):
        PUBHandler(push)
    assert not push.closed  # the caller's socket is untouched
    with pytest.raises(zmq.ZMQError):
        PUBHandler("nonsense://x", context=ctx)
    leftovers = [s for s in ctx._sockets if not s.closed and s is not push and s is not xpub[0]]
    assert leftovers == []  # the handler closed the socket it had made
    push.close()


def test_close_leaves_a_callers_socket_open(xpub, logger):
    sock, _ = xpub
    handler = PUBHandler(sock)
    logger.addHandler(handler)
    logger.removeHandler(handler)
    handler.close()
    assert not sock.closed


@pytest.mark.timeout(30)
def test_flood_never_blocks_and_other_greenlets_run(ctx, logger, spawn):
    # inproc: no kernel buffers behind the high-water marks (over tcp loopback
    # the whole flood fits in them, and no send ever meets a full queue)
    sock = ctx.socket(zmq.XPUB)
    sock.linger = 0
    sock.sndhwm = 1
    url = inproc_endpoint("log-flood")
    sock.bind(url)
    sub = ctx.socket(zmq.SUB)  # joins, then never reads
    sub.linger = 0
    sub.rcvhwm = 1
    sub.subscribe(b"")
    sub.connect(url)
    wait_subscription(sock)
    logger.addHandler(PUBHandler(sock))
    # Not hub_ticker(): the flood is meant never to yield, so the hub rightly
    # waits for all of it. This greenlet runs at the first yield: if it has
    # not run after the flood, no log call waited. (A Timeout, not an
    # exception the handler would swallow, bounds a log call that waits in
    # the hub; pytest-timeout one that blocks the thread.)
    ticker_done = gevent.event.Event()
    spawn(lambda: (gevent.sleep(0), ticker_done.set()))
    try:
        with gevent.Timeout(RECV_BOUND):
            for i in range(FLOOD):
                logger.info("flood %d", i)  # PUB drops at the HWM: never waits
    except gevent.Timeout:
        pytest.fail("a log call waited for the flooded subscriber")
    assert not ticker_done.is_set()  # we never yielded: nothing blocked
    assert ticker_done.wait(WAKE_BOUND)
    # the premise: the flood went far past the HWM, most records were dropped
    queued = 0
    while queued < FLOOD and sub.poll(0):
        sub.recv_multipart()
        queued += 1
    assert queued < FLOOD // 2, f"{queued} of {FLOOD} records queued: the HWM was never reached"


def test_log_from_hub_callback_and_from_another_thread(ctx, xpub, logger):
    sock, url = xpub
    sub = _joined_sub(ctx, sock, url)
    logger.addHandler(PUBHandler(sock))
    gevent.get_hub().loop.run_callback(logger.info, "from the hub")
    assert recv_record(sub) == ("INFO", "from the hub\n")

    args = ["before"]
    t = threading.Thread(target=lambda: logger.warning("thread says %s", args))
    t.start()
    t.join(RECV_BOUND)
    args[0] = "after"  # rendered in the logging thread, not when published
    topic, msg = recv_record(sub)
    assert topic == "WARNING" and msg.rstrip().endswith("thread says ['before']")


def test_level_of_and_format_record():
    assert level_of("app.web.ERROR.db") == "ERROR"
    assert level_of("INFO") == "INFO"
    assert level_of("no.level.here") == ""
    assert format_record("app.INFO", "hi\n", color=False) == "INFO     app.INFO | hi"
    coloured = format_record("app.ERROR", "boom", color=True)
    assert coloured.startswith(ANSI) and coloured.endswith("\033[0m") and "app.ERROR | boom" in coloured
    assert format_record("weird", "x", color=True) == "         weird | x"


# -- the CLI, as a real subprocess ------------------------------------------------------


def _cli(url, *args, **popen):
    return gevent.subprocess.Popen(
        [sys.executable, "-m", "greenzmq.log", url, *args],
        stderr=gevent.subprocess.PIPE,
        text=True,
        **popen,
    )


def _read_until(readline, needle):
    lines = []
    with gevent.Timeout(RECV_BOUND, AssertionError(f"{needle!r} never printed")):
        for _ in range(MAX_LINES):
            line = readline()
            assert line, f"CLI output ended; got {lines}"
            lines.append(line)
            if needle in line:
                return line
    raise AssertionError(f"{needle!r} not in {lines}")


def _interrupt(proc):
    proc.send_signal(signal.SIGINT)
    with gevent.Timeout(RECV_BOUND, AssertionError("CLI did not exit on SIGINT")):
        proc.wait()
    err = proc.stderr.read()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    return err


@pytest.mark.timeout(40)
def test_cli_prints_topic_and_level_and_exits_cleanly_on_sigint(ctx, xpub, logger):
    sock, url = xpub
    proc = _cli(url, "--topic", "app.WARNING", "--topic", "app.ERROR", stdout=gevent.subprocess.PIPE)
    try:
        with gevent.Timeout(RECV_BOUND, AssertionError("CLI never subscribed")):
            subs = {sock.recv(), sock.recv()}  # in any order
        assert subs == {b"\x01app.WARNING", b"\x01app.ERROR"}
        handler = PUBHandler(sock, root_topic="app")
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.info("filtered out")
        logger.warning("disk::almost full")
        line = _read_until(proc.stdout.readline, "almost full")
        assert line.rstrip("\n") == "WARNING  app.WARNING.disk | almost full"  # no colour: not a tty
        sock.send_multipart([b"app.ERROR", b"x", b"y"])  # not a record: skipped, CLI lives on
        logger.error("still alive")
        line = _read_until(proc.stdout.readline, "still alive")
        assert line.startswith("ERROR    app.ERROR | ")
    finally:
        if proc.poll() is None:
            err = _interrupt(proc)
        else:
            err = proc.stderr.read()
    assert "skipped a 3-frame message" in err
    assert "filtered out" not in err


@pytest.mark.timeout(40)
def test_cli_colours_by_level_on_a_tty(ctx, xpub, logger):
    sock, url = xpub
    master, slave = pty.openpty()  # a real terminal for the CLI's stdout
    proc = _cli(url, stdout=slave)
    os.close(slave)
    reader = FileObjectPosix(master, "r", errors="replace")  # cooperative: Timeout can interrupt it
    try:
        wait_subscription(sock)
        logger.addHandler(PUBHandler(sock))
        logger.error("red alert")
        line = _read_until(reader.readline, "red alert")
        assert "\033[31m" in line and "ERROR" in line
    finally:
        _interrupt(proc)
        reader.close()


@pytest.mark.timeout(40)
def test_cli_bad_url_is_a_clear_error(tmp_path):
    proc = _cli("nonsense://x", stdout=gevent.subprocess.PIPE)
    with gevent.Timeout(RECV_BOUND):
        out, err = proc.communicate()
    assert proc.returncode == 2 and "greenzmq.log:" in err and "Traceback" not in err


@pytest.mark.timeout(40)
def test_cli_bind_mode_with_handlers_connecting(ctx, logger):
    proc = _cli("tcp://127.0.0.1:*", "--bind", stdout=gevent.subprocess.PIPE)
    try:
        line = _read_until(proc.stderr.readline, "listening on")
        endpoint = line.split("listening on ", 1)[1].strip()
        assert endpoint.startswith("tcp://127.0.0.1:")
        pub = ctx.socket(zmq.XPUB)  # connects to the CLI; XPUB tells us it subscribed
        pub.linger = 0
        pub.connect(endpoint)
        wait_subscription(pub)
        logger.addHandler(PUBHandler(pub, root_topic="worker1"))
        logger.info("connected the other way")
        line = _read_until(proc.stdout.readline, "other way")
        assert line.startswith("INFO     worker1.INFO | ")
    finally:
        _interrupt(proc)


@pytest.mark.timeout(40)
def test_cli_exits_cleanly_on_sigterm(xpub):
    sock, url = xpub
    proc = _cli(url, stdout=gevent.subprocess.PIPE)
    wait_subscription(sock)
    proc.terminate()
    with gevent.Timeout(RECV_BOUND, AssertionError("CLI did not exit on SIGTERM")):
        proc.wait()
    err = proc.stderr.read()
    assert proc.returncode == 0 and "Traceback" not in err, err


def test_dictconfig_handler_construction(ctx, xpub, logger):
    # dictConfig's own handler factory; dictConfig() itself would also close
    # every handler of the process (pytest's too), so it is not called here.
    import logging.config

    sock, url = xpub
    sub = _joined_sub(ctx, sock, url)
    configurator = logging.config.DictConfigurator({"version": 1})
    handler = configurator.configure_handler(
        {
            "class": "greenzmq.log.PUBHandler",
            "interface_or_socket": sock,
            "root_topic": "cfg",
            "level": "INFO",
        }
    )
    assert isinstance(handler, PUBHandler) and handler.level == logging.INFO
    logger.addHandler(handler)
    logger.debug("below the level")
    logger.info("configured")
    assert recv_record(sub) == ("cfg.INFO", "configured\n")
