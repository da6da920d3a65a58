"""Response and stream holds, driven on a Clock with a recording client."""

from __future__ import annotations

from pushpin_tx.protocol.grip import parse_instruct
from pushpin_tx.core.hold import ResponseHold, StreamHold
from pushpin_tx.protocol.items import parse_item

from tests.fakes import RecordingSink, hold_context


def instruct(*headers, body=b"timeout body\n", code=200):
    hs = [(b"Content-Type", b"text/plain")] + [tuple(h.encode().split(b": ", 1)) for h in headers]
    return parse_instruct(code, b"OK", hs, body, request_uri="http://example.com/x")


def publish(ctx, channel, **formats):
    return ctx.router.publish(parse_item({"channel": channel, "formats": formats}))


def test_response_hold_answers_with_the_first_publish_and_unsubscribes(clock):
    """A long-poll gets the published response, merged over the hold's headers, then leaves the channel."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = ResponseHold(ctx, sink, instruct("Grip-Hold: response", "Grip-Channel: k1", "X-Orig: 1"), "c1")
    hold.start()
    assert ctx.router.subscriber_count("k1") == 1
    publish(ctx, "k1", **{"http-response": {"code": 202, "headers": {"Content-Type": "application/json"}, "body": "{}\n"}})
    code, reason, headers, length = sink.head
    assert (code, reason, length) == (202, b"Accepted", 3)
    assert headers == [(b"X-Orig", b"1"), (b"Content-Type", b"application/json")]
    assert sink.body == b"{}\n" and sink.finished
    assert ctx.router.subscriber_count("k1") == 0
    assert clock.getDelayedCalls() == []


def test_response_hold_times_out_with_the_origin_response(clock):
    """Nothing published: after Grip-Timeout the client gets the instruct's own response."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    ResponseHold(ctx, sink, instruct("Grip-Hold: response", "Grip-Channel: k1", "Grip-Timeout: 10"), "c1").start()
    clock.advance(9.9)
    assert sink.head is None
    clock.advance(0.1)
    assert sink.head[0] == 200 and sink.body == b"timeout body\n" and sink.finished
    assert ctx.router.subscriber_count("k1") == 0


def test_response_hold_ignores_stream_only_publishes(clock):
    """An item without an http-response format leaves a long-poll waiting."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = ResponseHold(ctx, sink, instruct("Grip-Hold: response", "Grip-Channel: k1"), "c1")
    hold.start()
    publish(ctx, "k1", **{"http-stream": {"content": "x"}})
    assert sink.head is None
    hold.client_gone()
    assert clock.getDelayedCalls() == [] and ctx.router.subscriber_count("k1") == 0


def test_large_published_body_is_sent_chunked(clock):
    """Pushpin frames a held response over 8192 bytes as chunks, not with Content-Length."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    ResponseHold(ctx, sink, instruct("Grip-Hold: response", "Grip-Channel: k1"), "c1").start()
    publish(ctx, "k1", **{"http-response": {"body": "x" * 8193}})
    assert sink.head[3] is None and len(sink.body) == 8193


def test_skip_self_filter_keeps_the_hold_waiting(clock):
    """With filter=skip-self, the subscriber's own publish (meta sender == user) is not delivered."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = ResponseHold(ctx, sink, instruct("Grip-Hold: response", "Grip-Channel: m1; filter=skip-self", "Grip-Set-Meta: user=alice"), "c1")
    hold.start()
    ctx.router.publish(parse_item({"channel": "m1", "meta": {"sender": "alice"}, "formats": {"http-response": {"body": "mine"}}}))
    assert sink.head is None
    ctx.router.publish(parse_item({"channel": "m1", "meta": {"sender": "bob"}, "formats": {"http-response": {"body": "bob's"}}}))
    assert sink.body == b"bob's"


def test_stream_hold_sends_initial_response_then_chunks_and_closes(clock):
    """A stream gets the origin's response at once, each publish as a chunk, and ends on close."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Channel: s4", body=b"stream open\n"), "c1")
    hold.start()
    assert sink.head[0] == 200 and sink.head[3] is None and sink.body == b"stream open\n"
    assert sink.producer is hold.queue
    publish(ctx, "s4", **{"http-stream": {"content": "data\n"}})
    assert sink.framed == [b"5\r\ndata\n\r\n"]
    publish(ctx, "s4", **{"http-stream": {"action": "close"}})
    assert sink.finished and ctx.router.subscriber_count("s4") == 0


def test_stream_hold_to_an_http10_client_writes_raw_content(clock):
    """HTTP/1.0 clients get published content unframed."""
    ctx = hold_context(clock)
    sink = RecordingSink(chunked=False)
    StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Channel: s"), "c1").start()
    publish(ctx, "s", **{"http-stream": {"content": "raw\n"}})
    assert sink.framed == [b"raw\n"]


def test_close_waits_for_queued_messages(clock):
    """A close published while messages are queued ends the stream only after they are written."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Channel: s"), "c1")
    hold.start()
    hold.queue.pauseProducing()
    publish(ctx, "s", **{"http-stream": {"content": "1"}})
    publish(ctx, "s", **{"http-stream": {"action": "close"}})
    assert not sink.finished
    hold.queue.resumeProducing()
    clock.advance(0)
    assert sink.framed == [b"1\r\n1\r\n"] and sink.finished


def test_slow_stream_drops_are_reported_with_connection_and_channel(clock):
    """A paused stream past its queue limit drops messages, each reported with conn id and channel."""
    drops: list = []
    ctx = hold_context(clock, queue_limit=2, drops=drops)
    sink = RecordingSink()
    hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Channel: s"), "conn-7")
    hold.start()
    hold.queue.pauseProducing()
    for n in range(4):
        publish(ctx, "s", **{"http-stream": {"content": str(n)}})
    assert drops == [("conn-7", "s", "queue full"), ("conn-7", "s", "queue full")]
    hold.client_gone()


def test_keep_alive_idle_mode_is_suppressed_by_traffic(clock):
    """Idle keep-alive: data within the timeout postpones it; silence brings it."""
    ctx = hold_context(clock, jitter=0.0)
    sink = RecordingSink()
    hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Channel: s", "Grip-Keep-Alive: \\n; format=cstring; timeout=3"), "c1")
    hold.start()
    clock.advance(2)
    publish(ctx, "s", **{"http-stream": {"content": "x"}})
    clock.advance(1)  # 3 s since start, 1 s since data: no keep-alive yet
    assert sink.framed == [b"1\r\nx\r\n"]
    clock.advance(2)  # 3 s since data
    assert sink.framed == [b"1\r\nx\r\n", b"1\r\n\n\r\n"]
    hold.client_gone()
    assert clock.getDelayedCalls() == []


def test_keep_alive_interval_mode_ignores_traffic(clock):
    """Interval keep-alive keeps its own rhythm whatever is published."""
    ctx = hold_context(clock, jitter=0.0)
    sink = RecordingSink()
    hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Channel: s", "Grip-Keep-Alive: ka; timeout=3; mode=interval"), "c1")
    hold.start()
    clock.advance(2)
    publish(ctx, "s", **{"http-stream": {"content": "x"}})
    clock.advance(1)
    assert sink.framed == [b"1\r\nx\r\n", b"2\r\nka\r\n"]
    hold.client_gone()


def test_keep_alive_delay_has_pushpins_jitter(clock):
    """Each keep-alive comes timeout minus a random part of a second after the last one."""
    ctx = hold_context(clock, jitter=0.5)
    sink = RecordingSink()
    hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Channel: s", "Grip-Keep-Alive: k; timeout=3"), "c1")
    hold.start()
    clock.advance(2.4)
    assert sink.framed == []
    clock.advance(0.1)
    assert sink.framed == [b"1\r\nk\r\n"]
    hold.client_gone()


def test_client_gone_releases_everything(clock):
    """A disconnect unsubscribes every channel and cancels every timer at once."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Channel: a, b", "Grip-Keep-Alive: k; timeout=10"), "c1")
    hold.start()
    assert ctx.router.subscriber_count("a") == ctx.router.subscriber_count("b") == 1
    hold.client_gone()
    assert ctx.router.subscriber_count("a") == ctx.router.subscriber_count("b") == 0
    assert clock.getDelayedCalls() == []


def test_var_subst_content_filter_applies_per_subscriber(clock):
    """var-subst replaces %(name)s with the subscriber's meta in its own copy of the content."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Channel: v; filter=var-subst", "Grip-Set-Meta: name=World"), "c1")
    hold.start()
    publish(ctx, "v", **{"http-stream": {"content": "Hello %(name)s 100%%"}})
    assert sink.framed == [b"10\r\nHello World 100%\r\n"]
    hold.client_gone()


# reliable delivery: per-connection gaps ------------------------------------------------------


def reliable_stream(clock, fetched):
    """A stream hold on 'fruit' at prev-id 3 with a next link; fetch_next answers from `fetched`."""
    from twisted.internet.defer import succeed

    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = StreamHold(
        ctx,
        sink,
        instruct("Grip-Hold: stream", "Grip-Channel: fruit; prev-id=3", "Grip-Link: </fruit/?after=3>; rel=next; timeout=120", body=b""),
        "c1",
    )
    calls = []

    def fetch(uri, last):
        calls.append((uri, dict(last)))
        return succeed(fetched.pop(0) if fetched else None)

    hold.fetch_next = fetch
    hold.start()
    return ctx, sink, hold, calls


def fruit(ctx, n, prev=None):
    prev = n - 1 if prev is None else prev
    ctx.router.publish(parse_item({"channel": "fruit", "id": str(n), "prev-id": str(prev), "formats": {"http-stream": {"content": f"item {n}\n"}}}))


def test_stream_follows_on_items_and_advances_its_prev_id(clock):
    """Items whose prev-id matches go out; the expected prev-id follows them."""
    ctx, sink, hold, calls = reliable_stream(clock, [])
    fruit(ctx, 4)
    fruit(ctx, 5)
    assert sink.framed == [b"7\r\nitem 4\n\r\n", b"7\r\nitem 5\n\r\n"] and calls == []
    hold.client_gone()


def test_stream_gap_fetches_next_link_with_last_ids_and_adopts_it(clock):
    """A gap fetches the next link with the last id, writes its body, adopts its prev-id; stale replays dropped."""
    page = instruct(
        "Grip-Hold: stream", "Grip-Channel: fruit; prev-id=6", "Grip-Link: </fruit/?after=6>; rel=next; timeout=120",
        body=b"item 4\nitem 5\nitem 6\n",
    )
    ctx, sink, hold, calls = reliable_stream(clock, [page])
    fruit(ctx, 5)  # prev-id 4 while 3 expected: a gap
    assert calls == [("http://example.com/fruit/?after=3", {"fruit": "3"})]
    assert sink.framed == [b"15\r\nitem 4\nitem 5\nitem 6\n\r\n"]
    fruit(ctx, 7)
    assert sink.framed[-1] == b"7\r\nitem 7\n\r\n"
    assert hold.instruct.next_link.uri.endswith("after=6")
    assert ctx.counters.recoveries == 1
    hold.client_gone()


def test_items_during_a_fetch_are_replayed_if_they_follow_on(clock):
    """While the next link is being fetched, arriving items wait; those that follow the new prev-id go out."""
    from twisted.internet.defer import Deferred

    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Channel: fruit; prev-id=3", "Grip-Link: </f>; rel=next"), "c1")
    pending = Deferred()
    hold.fetch_next = lambda uri, last: pending
    hold.start()
    fruit(ctx, 6, prev=5)  # gap
    fruit(ctx, 5)  # superseded: the page will contain it
    fruit(ctx, 7)  # follows the page
    pending.callback(instruct("Grip-Hold: stream", "Grip-Channel: fruit; prev-id=6", "Grip-Link: </f>; rel=next", body=b"4 5 6\n"))
    assert sink.framed == [b"6\r\n4 5 6\n\r\n", b"7\r\nitem 7\n\r\n"]
    hold.client_gone()


def test_failed_fetch_or_non_stream_hold_ends_the_stream(clock):
    """A next link that cannot be had, or that answers a response hold, ends the stream cleanly."""
    ctx, sink, hold, _ = reliable_stream(clock, [None])
    fruit(ctx, 9)
    assert sink.finished and ctx.router.subscriber_count("fruit") == 0
    ctx2, sink2, hold2, _ = reliable_stream(clock, [instruct("Grip-Hold: response", "Grip-Channel: fruit")])
    fruit(ctx2, 9)
    assert sink2.finished


def test_idle_link_timeout_fetches_the_next_link(clock):
    """No publish for the link's timeout: the next link is fetched anyway."""
    page = instruct("Grip-Hold: stream", "Grip-Channel: fruit; prev-id=3", "Grip-Link: </fruit/?after=3>; rel=next; timeout=120", body=b"")
    ctx, sink, hold, calls = reliable_stream(clock, [page])
    clock.advance(119)
    assert calls == []
    clock.advance(1)
    assert len(calls) == 1
    hold.client_gone()
    assert clock.getDelayedCalls() == []


def test_long_poll_gap_and_hint_retry_with_grip_last(clock):
    """A long-poll that sees a gap (or a hint) lets go of its channels and asks to be retried with its prev-ids."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = ResponseHold(ctx, sink, instruct("Grip-Hold: response", "Grip-Channel: news; prev-id=10"), "c1")
    retried = []
    hold.retry = retried.append
    hold.start()
    ctx.router.publish(parse_item({"channel": "news", "id": "12", "prev-id": "11", "formats": {"http-response": {"body": "x"}}}))
    assert retried == [{"news": "10"}] and sink.head is None
    assert ctx.router.subscriber_count("news") == 0 and clock.getDelayedCalls() == []
    hold2 = ResponseHold(ctx, RecordingSink(), instruct("Grip-Hold: response", "Grip-Channel: news; prev-id=10"), "c2")
    hold2.retry = retried.append
    hold2.start()
    ctx.router.publish(parse_item({"channel": "news", "formats": {"http-response": {"action": "hint"}}}))
    assert retried[-1] == {"news": "10"}


# issue 15: exactly once through recoveries, filtered items, multi-channel ids -----------------


def pending_fetches(hold):
    """Make C{hold.fetch_next} answer with Deferreds the test fires; returns the list of (uri, last, d)."""
    from twisted.internet.defer import Deferred

    calls = []

    def fetch(uri, last):
        d = Deferred()
        calls.append((uri, dict(last), d))
        return d

    hold.fetch_next = fetch
    return calls


def test_link_timeout_during_a_slow_recovery_starts_no_second_fetch(clock):
    """The idle link timer firing while a recovery is still being retried does not fetch again (no replay twice)."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Channel: fruit; prev-id=3", "Grip-Link: </f>; rel=next; timeout=5", body=b""), "c1")
    calls = pending_fetches(hold)
    hold.start()
    fruit(ctx, 5)  # gap: recovery from last-id 3
    assert [c[1] for c in calls] == [{"fruit": "3"}]
    clock.advance(30)  # the origin answers 503 for a while: the fetch is still being retried
    assert len(calls) == 1
    calls[0][2].callback(instruct("Grip-Hold: stream", "Grip-Channel: fruit; prev-id=5", "Grip-Link: </f>; rel=next; timeout=5", body=b"item 4\nitem 5\n"))
    fruit(ctx, 6)
    assert sink.framed == [b"e\r\nitem 4\nitem 5\n\r\n", b"7\r\nitem 6\n\r\n"]
    hold.client_gone()


def test_a_superseded_recovery_answer_is_never_written(clock):
    """An answer to a recovery that is no longer current (a re-sync started another) is ignored, so nothing is written twice."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Channel: fruit; prev-id=3", "Grip-Link: </f>; rel=next", body=b""), "c1")
    calls = pending_fetches(hold)
    hold.start()
    fruit(ctx, 5)
    hold._recover("test: a second recovery")  # whatever starts one, it must not overlap the first
    page = instruct("Grip-Hold: stream", "Grip-Channel: fruit; prev-id=5", "Grip-Link: </f>; rel=next", body=b"item 4\nitem 5\n")
    for _, _, d in calls:
        if not d.called:
            d.callback(page)
    assert sink.framed == [b"e\r\nitem 4\nitem 5\n\r\n"]
    hold.client_gone()


def test_a_recovery_that_raises_ends_the_stream_instead_of_stalling_it(clock, no_logged_failures):
    """A fetch that fails unexpectedly ends the stream (the client reconnects) rather than leaving it deaf."""
    from twisted.internet.defer import fail

    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Channel: fruit; prev-id=3", "Grip-Link: </f>; rel=next", body=b""), "c1")
    hold.fetch_next = lambda uri, last: fail(RuntimeError("boom"))
    hold.start()
    fruit(ctx, 5)
    assert sink.finished and ctx.router.subscriber_count("fruit") == 0
    assert [f.value.args for f in no_logged_failures] == [("boom",)]  # logged, with its traceback
    no_logged_failures.clear()


def skip_users_item(ctx, n, skip=""):
    meta = {"skip_users": skip} if skip else {}
    ctx.router.publish(parse_item({"channel": "ev", "id": str(n), "prev-id": str(n - 1), "meta": meta, "formats": {"http-stream": {"content": f"item {n}\n"}, "http-response": {"body": f"item {n}\n"}}}))


def test_a_filtered_item_still_moves_the_streams_position(clock):
    """An item skip-users withholds is not written, but the stream's last id moves on to it, so its successor is no gap."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Set-Meta: user=alice", "Grip-Channel: ev; prev-id=0; filter=skip-users", "Grip-Link: </ev>; rel=next", body=b""), "c1")
    calls = pending_fetches(hold)
    hold.start()
    skip_users_item(ctx, 1)
    skip_users_item(ctx, 2, skip="bob, alice")
    skip_users_item(ctx, 3)
    assert sink.framed == [b"7\r\nitem 1\n\r\n", b"7\r\nitem 3\n\r\n"] and calls == []
    hold.resync()
    assert calls[0][1] == {"ev": "3"}
    calls[0][2].callback(None)


def test_a_filtered_item_still_moves_a_long_polls_position(clock):
    """A long-poll skipping an item by filter keeps waiting at the item's id: its successor answers it, no retry."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = ResponseHold(ctx, sink, instruct("Grip-Hold: response", "Grip-Set-Meta: user=alice", "Grip-Channel: ev; prev-id=1; filter=skip-users"), "c1")
    retried = []
    hold.retry = retried.append
    hold.start()
    skip_users_item(ctx, 2, skip="alice")
    assert sink.head is None and retried == []
    skip_users_item(ctx, 3)
    assert retried == [] and sink.body == b"item 3\n"


def test_build_id_carries_every_channels_current_position(clock):
    """A stream on two channels renders each event id from both channels' current last ids, not their initial prev-ids."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = StreamHold(
        ctx,
        sink,
        instruct(
            "Grip-Hold: stream",
            "Grip-Set-Meta: id_format=a%(a)s-b%(b)s",
            "Grip-Channel: a; prev-id=0; filter=build-id",
            "Grip-Channel: b; prev-id=0; filter=build-id",
            "Grip-Link: </ab>; rel=next",
            body=b"",
        ),
        "c1",
    )
    pending_fetches(hold)
    hold.start()

    def item(channel, n):
        ctx.router.publish(parse_item({"channel": channel, "id": str(n), "prev-id": str(n - 1), "formats": {"http-stream": {"content": "id: %I\n"}}}))

    item("a", 1)
    item("b", 1)
    item("a", 2)
    item("b", 2)
    ids = [f.split(b"\r\n")[1] for f in sink.framed]
    assert ids == [b"id: a1-b0\n", b"id: a1-b1\n", b"id: a2-b1\n", b"id: a2-b2\n"]
    hold.client_gone()


def test_a_next_link_answer_with_prev_id_but_no_link_ends_the_stream_after_its_body(clock):
    """A recovery answer holding a stream with prev-ids but no next link is written, then the stream ends (as Pushpin)."""
    from dataclasses import replace

    page = instruct("Grip-Hold: stream", "Grip-Channel: fruit; prev-id=5", "Grip-Link: </f>; rel=next", body=b"item 4\nitem 5\n")
    ctx, sink, hold, calls = reliable_stream(clock, [replace(page, next_link=None)])
    fruit(ctx, 5)
    assert sink.framed == [b"e\r\nitem 4\nitem 5\n\r\n"] and sink.finished
    assert ctx.router.subscriber_count("fruit") == 0


# a slow reader (issue 15 item 2): recover or close, never a silent gap -------------------------


class ClosingSink(RecordingSink):
    """A recording sink that also records a close (the connection ended without the last chunk)."""

    closed = False

    def close(self):
        assert not self.finished
        self.closed = True


def slow_fruit_stream(clock, *, link=True, overflow="disconnect"):
    """A stream on 'fruit', queue limit 2: at prev-id 3 with a next link, or plain; fetches are the test's to answer."""
    drops: list = []
    ctx = hold_context(clock, queue_limit=2, overflow=overflow, drops=drops)
    sink = ClosingSink()
    if link:
        headers = ["Grip-Hold: stream", "Grip-Channel: fruit; prev-id=3", "Grip-Link: </fruit/>; rel=next; timeout=120"]
    else:
        headers = ["Grip-Hold: stream", "Grip-Channel: fruit"]
    hold = StreamHold(ctx, sink, instruct(*headers, body=b""), "slow-1")
    calls = pending_fetches(hold)
    hold.start()
    hold.queue.pauseProducing()
    return ctx, sink, hold, calls, drops


def test_slow_reader_of_a_recoverable_stream_recovers_what_it_missed_once_drained(clock):
    """Queue full: later items are dropped (reported), and once the client has read the queue the stream recovers from the last queued id."""
    ctx, sink, hold, calls, drops = slow_fruit_stream(clock)
    for n in range(4, 11):
        fruit(ctx, n)
    assert drops == [("slow-1", "fruit", "queue full, recovering")] * 5  # 6..10
    hold.queue.resumeProducing()
    assert sink.framed == [b"7\r\nitem 4\n\r\n", b"7\r\nitem 5\n\r\n"] and calls == []
    clock.advance(0)
    assert [c[1] for c in calls] == [{"fruit": "5"}]
    page = instruct("Grip-Hold: stream", "Grip-Channel: fruit; prev-id=10", "Grip-Link: </fruit/>; rel=next; timeout=120", body=b"item 6..10\n")
    calls[0][2].callback(page)
    fruit(ctx, 11)
    assert sink.framed[2:] == [b"b\r\nitem 6..10\n\r\n", b"8\r\nitem 11\n\r\n"] and not sink.finished
    assert len(drops) == 5
    hold.client_gone()


def test_slow_reader_of_a_stream_that_cannot_recover_is_closed_once_drained(clock):
    """No next link: the client reads what was queued, then the connection closes without a last chunk (an EventSource reconnects)."""
    ctx, sink, hold, calls, drops = slow_fruit_stream(clock, link=False)
    for n in range(4, 8):
        fruit(ctx, n)
    assert drops == [("slow-1", "fruit", "queue full, closing")] * 2
    assert not sink.finished
    hold.queue.resumeProducing()
    clock.advance(0)
    assert sink.framed == [b"7\r\nitem 4\n\r\n", b"7\r\nitem 5\n\r\n"]
    assert sink.closed and not sink.finished and not sink.aborted and sink.producer is None
    assert ctx.router.subscriber_count("fruit") == 0 and calls == []


def test_slow_reader_that_never_reads_again_is_dropped_after_the_drain_timeout(clock):
    """An overflowed stream whose client never reads: after OVERFLOW_DRAIN_TIMEOUT the connection is aborted, queued items reported."""
    from pushpin_tx.core.delivery import OVERFLOW_DRAIN_TIMEOUT

    ctx, sink, hold, calls, drops = slow_fruit_stream(clock)
    for n in range(4, 7):
        fruit(ctx, n)
    clock.advance(OVERFLOW_DRAIN_TIMEOUT - 1)
    assert not sink.aborted
    clock.advance(1)
    assert sink.aborted and ctx.router.subscriber_count("fruit") == 0
    assert [d[2] for d in drops] == ["queue full, recovering", "connection closed", "connection closed"]
    assert calls == []


def test_keep_alives_are_not_queued_behind_an_overflow(clock):
    """While a slow reader's queue is overflowed no keep-alive is queued or counted as a drop."""
    drops: list = []
    ctx = hold_context(clock, queue_limit=1, overflow="disconnect", drops=drops)
    sink = RecordingSink()
    hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Channel: s", "Grip-Keep-Alive: ka; timeout=20", body=b""), "c1")
    hold.start()
    hold.queue.pauseProducing()
    for n in range(2):
        publish(ctx, "s", **{"http-stream": {"content": str(n)}})
    clock.advance(45)
    assert drops == [("c1", "s", "queue full, closing")] and len(hold.queue) == 1
    hold.client_gone()


def test_drop_policy_configured_explicitly_keeps_the_old_behaviour(clock):
    """delivery_overflow=drop: a full queue drops (reported) and the connection stays, with the gap."""
    ctx, sink, hold, calls, drops = slow_fruit_stream(clock, overflow="drop")
    for n in range(4, 8):
        fruit(ctx, n)
    hold.queue.resumeProducing()
    clock.advance(0)
    assert drops == [("slow-1", "fruit", "queue full")] * 2 and not sink.finished and calls == []
    hold.client_gone()


def test_route_prefix_is_left_out_of_build_id_and_grip_last(clock):
    """With a route channel prefix, %(channel)s and Grip-Last use the origin's channel names, as Pushpin's c.name."""
    from dataclasses import replace

    ctx = hold_context(clock)
    sink = RecordingSink()
    raw = instruct("Grip-Hold: stream", "Grip-Set-Meta: id_format=%(a)s", "Grip-Channel: a; prev-id=0; filter=build-id", "Grip-Link: </a>; rel=next", body=b"")
    prefixed = replace(raw, channels=tuple(replace(c, name="ev-" + c.name) for c in raw.channels))
    hold = StreamHold(ctx, sink, prefixed, "c1")
    hold.channel_prefix = "ev-"
    calls = pending_fetches(hold)
    hold.start()
    ctx.router.publish(parse_item({"channel": "ev-a", "id": "1", "prev-id": "0", "formats": {"http-stream": {"content": "id: %I\n"}}}))
    assert sink.framed == [b"6\r\nid: 1\n\r\n"]
    hold.resync()
    assert calls[0][1] == {"a": "1"}
    calls[0][2].callback(None)


def test_no_link_timeout_recovery_while_a_slow_reader_is_behind(clock):
    """While the queue is overflowed neither the idle link timer nor /recover/ fetches: one recovery, after the drain."""
    ctx = hold_context(clock, queue_limit=2, overflow="disconnect")
    sink = ClosingSink()
    hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Channel: fruit; prev-id=3", "Grip-Link: </fruit/>; rel=next; timeout=30", body=b""), "c1")
    calls = pending_fetches(hold)
    hold.start()
    hold.queue.pauseProducing()
    for n in range(4, 8):
        fruit(ctx, n)
    clock.advance(45)  # past the link's 30 s timeout, still unread
    hold.resync()
    assert calls == []
    hold.queue.resumeProducing()
    clock.advance(0)
    assert [c[1] for c in calls] == [{"fruit": "5"}]
    calls[0][2].callback(None)
    assert sink.finished


# a next link's own instruct (Pushpin 1.41) ----------------------------------------------------


def test_a_next_link_answers_meta_is_the_sub_meta_from_then_on(clock):
    """The page's Grip-Set-Meta replaces the stream's: var-subst of later publishes reads the new meta, as Pushpin's replaced instruct does."""
    page = instruct("Grip-Hold: stream", "Grip-Set-Meta: name=bob", "Grip-Channel: fruit; prev-id=3; filter=var-subst",
                    "Grip-Link: </fruit/?after=3>; rel=next", body=b"")
    ctx, sink, hold, calls = reliable_stream(clock, [page])
    hold.meta["name"] = "alice"
    hold.resync()
    ctx.router.publish(parse_item({"channel": "fruit", "id": "4", "prev-id": "3", "formats": {"http-stream": {"content": "hi %(name)s\n"}}}))
    assert sink.framed == [b"7\r\nhi bob\n\r\n"] and hold.meta == {"name": "bob"}
    hold.client_gone()


def test_a_page_without_hold_fetches_the_following_link_at_once(clock):
    """A next link answered without a hold but with a link (a paged stream): its body goes out and the following link is fetched at once, not after the link timeout; what was published meanwhile is delivered after the page that holds again."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Channel: fruit; prev-id=3", "Grip-Link: </p1>; rel=next; timeout=120", body=b""), "c1")
    calls = pending_fetches(hold)
    hold.start()
    fruit(ctx, 5)  # a gap: recovery from /p1
    fruit(ctx, 6)  # waits for it
    calls[0][2].callback(instruct("Grip-Link: </p2>; rel=next", body=b"item 4\n"))
    assert [c[0] for c in calls] == ["http://example.com/p1", "http://example.com/p2"]
    calls[1][2].callback(instruct("Grip-Hold: stream", "Grip-Channel: fruit; prev-id=5", "Grip-Link: </p3>; rel=next", body=b"item 5\n"))
    assert sink.framed == [b"7\r\nitem 4\n\r\n", b"7\r\nitem 5\n\r\n", b"7\r\nitem 6\n\r\n"]
    assert not sink.finished and len(calls) == 2
    hold.client_gone()
