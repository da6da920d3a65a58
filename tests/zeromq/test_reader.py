"""
ZmqReader, the pyzmq <-> reactor adapter: a scripted fake socket for the edge-trigger
rules, then real inproc:// socket pairs on the real reactor.

The fixtures and helpers at the top (C{zctx}, C{no_zmq_readers}, L{Collector}) are
shared with the other ZeroMQ test modules.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
import zmq
from twisted.internet import defer, task
from twisted.internet.testing import MemoryReactorClock

from pushpin_tx.zeromq.reader import ZmqReader

DEADLINE = 10.0  # seconds; a test waiting longer than this has failed


# --- shared fixtures and helpers ------------------------------------------------------------


@pytest.fixture
def zctx():
    """A private zmq.Context; the test must close every socket it opened on it."""
    ctx = zmq.Context()
    yield ctx
    left_open = [s for s in list(ctx._sockets) if not s.closed]  # pyzmq tracks its sockets
    for s in left_open:
        s.close(linger=0)
    ctx.term()
    assert left_open == [], f"test left zmq sockets open: {left_open}"


@pytest.fixture(autouse=True)
def no_zmq_readers():
    """Fail a test that leaves a ZmqReader registered with the reactor."""
    from twisted.internet import reactor

    yield
    leftover = [r for r in reactor.getReaders() if isinstance(r, ZmqReader)]
    for r in leftover:
        r.stop()
    assert leftover == [], f"test left zmq readers on the reactor: {leftover}"


class Collector:
    """Records delivered messages; L{wait} fires once C{n} have arrived (or times out)."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.messages: list[list[bytes]] = []
        self._waits: list[tuple[int, defer.Deferred]] = []

    def __call__(self, frames: list[bytes]) -> None:
        self.messages.append(frames)
        self._check()

    def _check(self) -> None:
        for n, d in list(self._waits):
            if len(self.messages) >= n:
                self._waits.remove((n, d))
                d.callback(self.messages)

    def wait(self, n: int, timeout: float = DEADLINE) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self._waits.append((n, d))
        d.addTimeout(timeout, self.reactor)
        self._check()
        return d


async def turns(reactor: Any, n: int = 5) -> None:
    """Let the reactor run C{n} turns (no wall-clock waiting)."""
    for _ in range(n):
        await task.deferLater(reactor, 0, lambda: None)


def pair(ctx: zmq.Context, kind_a: int, kind_b: int, name: str) -> tuple[zmq.Socket, zmq.Socket]:
    """Two sockets connected over inproc://, C{a} bound, C{b} connected, both linger 0."""
    a = ctx.socket(kind_a)
    b = ctx.socket(kind_b)
    for s in (a, b):
        s.setsockopt(zmq.LINGER, 0)
    a.bind(f"inproc://{name}")
    b.connect(f"inproc://{name}")
    return a, b


# --- a scripted fake socket -----------------------------------------------------------------


class ScriptedSocket:
    """A stand-in for a pyzmq socket whose EVENTS answers follow a script."""

    def __init__(self, messages: list[Any], events: list[int] | None = None) -> None:
        self.messages = list(messages)
        self.events = list(events) if events is not None else None
        self.events_asked = 0
        self.closed_with: int | None = None
        self.raise_on_events: Exception | None = None

    def getsockopt(self, option: int) -> int:
        if option == zmq.FD:
            return 1234
        assert option == zmq.EVENTS
        self.events_asked += 1
        if self.raise_on_events is not None:
            raise self.raise_on_events
        if self.events is not None:
            return self.events.pop(0) if self.events else 0
        return zmq.POLLIN if self.messages else 0

    def recv_multipart(self, flags: int = 0) -> list[bytes]:
        assert flags == zmq.NOBLOCK, "the reader must never block"
        if not self.messages:
            raise zmq.Again()
        message = self.messages.pop(0)
        if isinstance(message, Exception):
            raise message
        return message

    def close(self, linger: int | None = None) -> None:
        self.closed_with = linger


def make(messages, events=None, batch=256):
    reactor = MemoryReactorClock()
    sock = ScriptedSocket(messages, events)
    got: list[list[bytes]] = []
    reader = ZmqReader(reactor, sock, got.append, name="test", batch=batch)  # type: ignore[arg-type]
    return reactor, sock, got, reader


def test_messages_queued_before_start_are_read_on_the_next_turn():
    """Messages already waiting when the reader starts are delivered without any new edge."""
    reactor, sock, got, reader = make([[b"a"], [b"b", b"c"]])
    reader.start()
    assert reader in reactor.getReaders()
    assert got == []  # nothing is delivered inside start()
    reactor.advance(0)
    assert got == [[b"a"], [b"b", b"c"]]
    reader.stop()


def test_reads_until_events_lacks_pollin_then_waits_for_the_next_edge():
    """One read pass drains the socket and schedules nothing once EVENTS says it is empty."""
    reactor, sock, got, reader = make([[b"1"], [b"2"], [b"3"]])
    reader.start()
    reactor.advance(0)
    assert len(got) == 3
    assert reactor.getDelayedCalls() == []
    sock.messages.append([b"4"])
    reader.doRead()  # the reactor saw the FD become readable
    assert got[-1] == [b"4"]
    reader.stop()


def test_a_stale_pollin_is_retried_not_fatal():
    """EVENTS may claim POLLIN when recv then says EAGAIN; the reader asks EVENTS again."""
    reactor, sock, got, reader = make([zmq.Again(), [b"late"]], events=[zmq.POLLIN, zmq.POLLIN, 0])
    reader.start()
    reactor.advance(0)
    assert got == [[b"late"]]
    assert sock.events_asked == 3
    reader.stop()


def run_one_turn(reactor: MemoryReactorClock) -> None:
    """Run the one pending delayed call (Clock.advance(0) would also run those it schedules)."""
    calls = reactor.getDelayedCalls()
    assert len(calls) == 1
    call = calls[0]
    reactor.calls.remove(call)
    call.func(*call.args, **call.kw)


@pytest.mark.parametrize("count, batch, per_turn", [
    (10, 3, [3, 3, 3, 1]),
    (6, 3, [3, 3, 0]),  # a full batch cannot know it was the last: one empty pass follows
    (1, 1, [1, 0]),
    (5, 256, [5]),
])
def test_a_backlog_is_read_in_bounded_batches_across_turns(count, batch, per_turn):
    """At most `batch` messages per reactor turn; the reader schedules its own continuation."""
    reactor, sock, got, reader = make([[b"%d" % i] for i in range(count)], batch=batch)
    reader.start()
    seen = []
    while reactor.getDelayedCalls():
        before = len(got)
        run_one_turn(reactor)
        seen.append(len(got) - before)
    assert seen == per_turn
    assert got == [[b"%d" % i] for i in range(count)]
    reader.stop()


def test_poke_schedules_one_recheck():
    """poke() after a send re-checks on the next turn, and repeated pokes share one call."""
    reactor, sock, got, reader = make([])
    reader.start()
    reactor.advance(0)
    reader.poke()
    reader.poke()
    assert len(reactor.getDelayedCalls()) == 1
    sock.messages.append([b"reply"])
    reactor.advance(0)
    assert got == [[b"reply"]]
    reader.stop()


def test_a_failing_handler_is_logged_and_reading_goes_on(no_logged_failures):
    """An exception from deliver drops that message only; the next one is still delivered."""
    reactor = MemoryReactorClock()
    sock = ScriptedSocket([[b"bad"], [b"good"]])
    got = []

    def deliver(frames):
        if frames == [b"bad"]:
            raise ValueError("boom")
        got.append(frames)

    reader = ZmqReader(reactor, sock, deliver)  # type: ignore[arg-type]
    reader.start()
    reactor.advance(0)
    assert got == [[b"good"]]
    assert [f.type for f in no_logged_failures] == [ValueError]
    no_logged_failures.clear()
    reader.stop()


def test_pause_stops_reading_and_resume_picks_up_the_backlog():
    """pause() unregisters and cancels the re-check; resume() reads what queued meanwhile."""
    reactor, sock, got, reader = make([[b"1"]])
    reader.start()
    reader.pause()
    assert reader not in reactor.getReaders()
    assert reactor.getDelayedCalls() == []
    reader.doRead()  # a stray call while paused reads nothing
    reactor.advance(0)
    assert got == []
    sock.messages.append([b"2"])
    reader.resume()
    assert reader in reactor.getReaders()
    reactor.advance(0)
    assert got == [[b"1"], [b"2"]]
    reader.stop()


def test_backpressure_holds_reading_independently_of_pause():
    """pauseProducing (deliveries behind) stops reading; reading resumes only when neither it nor pause() holds it."""
    reactor, sock, got, reader = make([[b"1"]])
    reader.start()
    reader.pauseProducing()
    assert reader.held and reader not in reactor.getReaders() and reactor.getDelayedCalls() == []
    reader.doRead()
    assert got == []
    reader.pause()
    reader.resumeProducing()  # still paused by its owner
    assert reader not in reactor.getReaders() and reactor.getDelayedCalls() == []
    reader.pauseProducing()
    reader.resume()  # still held back
    assert reader not in reactor.getReaders() and reactor.getDelayedCalls() == []
    sock.messages.append([b"2"])
    reader.resumeProducing()
    assert reader in reactor.getReaders() and not reader.held
    reactor.advance(0)
    assert got == [[b"1"], [b"2"]]
    reader.stop()


def test_a_handler_that_raises_the_backpressure_stops_the_batch_at_once():
    """When a delivery makes the proxy hold its inputs back, the rest of the batch stays in the socket."""
    reactor = MemoryReactorClock()
    sock = ScriptedSocket([[b"1"], [b"2"], [b"3"]])
    got = []
    reader = ZmqReader(reactor, sock, lambda f: (got.append(f), reader.pauseProducing()))  # type: ignore[arg-type]
    reader.start()
    reactor.advance(0)
    assert got == [[b"1"]] and reactor.getDelayedCalls() == []
    reader.resumeProducing()
    reactor.advance(0)
    assert got == [[b"1"], [b"2"]]
    reader.stop()


def test_deliver_may_pause_the_reader_mid_batch():
    """A handler that pauses the reader stops the current pass at once."""
    reactor = MemoryReactorClock()
    sock = ScriptedSocket([[b"1"], [b"2"], [b"3"]])
    got = []
    reader = ZmqReader(reactor, sock, lambda f: (got.append(f), reader.pause()))  # type: ignore[arg-type]
    reader.start()
    reactor.advance(0)
    assert got == [[b"1"]]
    reader.resume()
    reactor.advance(0)
    assert got == [[b"1"], [b"2"]]
    reader.stop()


def test_stop_removes_the_reader_cancels_the_recheck_and_closes_with_linger_zero():
    """stop() leaves nothing behind: no reader, no delayed call, the socket closed with linger 0."""
    reactor, sock, got, reader = make([[b"1"]])
    reader.start()
    assert reactor.getDelayedCalls() != []
    reader.stop()
    assert reader not in reactor.getReaders()
    assert reactor.getDelayedCalls() == []
    assert sock.closed_with == 0
    assert reader.fileno() == -1
    reader.stop()  # idempotent
    reader.poke()
    assert reactor.getDelayedCalls() == []


def test_a_socket_error_stops_the_reader():
    """A ZMQ error other than EAGAIN (say, the context was terminated) stops the reader cleanly."""
    reactor, sock, got, reader = make([[b"1"]])
    reader.start()
    sock.raise_on_events = zmq.ZMQError(zmq.ETERM)
    reactor.advance(0)
    assert reader.stopped
    assert reader not in reactor.getReaders()
    assert sock.closed_with == 0


# --- real sockets ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_real_pair_message_sent_before_start_arrives(reactor, zctx):
    """A message already in a real PULL socket when the reader starts is delivered."""
    pull, push = pair(zctx, zmq.PULL, zmq.PUSH, "before-start")
    push.send(b"early")
    got = Collector(reactor)
    reader = ZmqReader(reactor, pull, got)
    reader.start()
    try:
        messages = await got.wait(1)
        assert messages == [[b"early"]]
    finally:
        reader.stop()
        push.close(linger=0)


@pytest_twisted.ensureDeferred
async def test_real_pair_ten_thousand_messages_arrive_in_order_over_several_turns(reactor, zctx):
    """10,000 queued messages all arrive, in order, spread over many reactor turns."""
    pull, push = pair(zctx, zmq.PULL, zmq.PUSH, "flood")
    for s in (pull, push):
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RCVHWM, 0)
    n = 10_000
    for i in range(n):
        push.send(b"%d" % i)
    got = Collector(reactor)
    reader = ZmqReader(reactor, pull, got, batch=256)
    other_turns = []
    ticker = task.LoopingCall(lambda: other_turns.append(len(got.messages)))
    ticker.clock = reactor
    ticker.start(0, now=False)
    reader.start()
    try:
        messages = await got.wait(n)
    finally:
        ticker.stop()
        reader.stop()
        push.close(linger=0)
    assert [m[0] for m in messages] == [b"%d" % i for i in range(n)]
    assert reader.batches >= n // 256  # more than one turn, never more than a batch per pass
    # other work ran while the backlog drained: the reactor was never starved
    assert any(0 < seen < n for seen in other_turns)


@pytest_twisted.ensureDeferred
async def test_real_rep_reply_then_next_request_is_not_missed(reactor, zctx):
    """REQ/REP ping-pong through two readers: each send's consumed edge is re-checked."""
    rep, req = pair(zctx, zmq.REP, zmq.REQ, "pingpong")
    rounds = 200
    server_reader: ZmqReader

    def serve(frames: list[bytes]) -> None:
        rep.send_multipart([b"re:" + frames[0]], zmq.NOBLOCK)
        server_reader.poke()

    replies = Collector(reactor)
    client_reader: ZmqReader

    def on_reply(frames: list[bytes]) -> None:
        replies(frames)
        if len(replies.messages) < rounds:
            req.send(b"%d" % len(replies.messages), zmq.NOBLOCK)
            client_reader.poke()

    server_reader = ZmqReader(reactor, rep, serve, name="rep")
    client_reader = ZmqReader(reactor, req, on_reply, name="req")
    server_reader.start()
    client_reader.start()
    req.send(b"0")
    client_reader.poke()
    try:
        got = await replies.wait(rounds)
    finally:
        server_reader.stop()
        client_reader.stop()
    assert [m[0] for m in got] == [b"re:%d" % i for i in range(rounds)]


@pytest_twisted.ensureDeferred
async def test_real_pause_holds_messages_and_resume_delivers_them(reactor, zctx):
    """While paused nothing is delivered (it stays queued in ZeroMQ); resume delivers it all."""
    pull, push = pair(zctx, zmq.PULL, zmq.PUSH, "pause")
    got = Collector(reactor)
    reader = ZmqReader(reactor, pull, got)
    reader.start()
    try:
        push.send(b"1")
        await got.wait(1)
        reader.pause()
        for i in range(2, 6):
            push.send(b"%d" % i)
        await turns(reactor, 10)
        assert got.messages == [[b"1"]]
        reader.resume()
        messages = await got.wait(5)
        assert [m[0] for m in messages] == [b"1", b"2", b"3", b"4", b"5"]
    finally:
        reader.stop()
        push.close(linger=0)


@pytest_twisted.ensureDeferred
async def test_real_paused_pull_pushes_back_on_the_publisher(reactor, zctx):
    """With the reader paused, a PUSH peer stops being able to send once the HWMs fill."""
    pull, push = pair(zctx, zmq.PULL, zmq.PUSH, "backpressure")
    pull.setsockopt(zmq.RCVHWM, 10)
    push.setsockopt(zmq.SNDHWM, 10)
    got = Collector(reactor)
    reader = ZmqReader(reactor, pull, got)
    reader.start()
    reader.pause()
    sent = 0
    try:
        with pytest.raises(zmq.Again):
            for _ in range(10_000):
                push.send(b"x", zmq.NOBLOCK)
                sent += 1
        assert sent < 10_000
        reader.resume()
        await got.wait(sent)
        assert len(got.messages) == sent
    finally:
        reader.stop()
        push.close(linger=0)
